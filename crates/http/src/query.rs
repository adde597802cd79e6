//! `POST /v1/query` and `POST /v1/explain`: one SQL statement in, JSON
//! out, through the same front door (`sql::route`), planner, ledger,
//! cache and audit log as the wire protocol. HTTP requests are
//! stateless: what a psql session SETs (`dp.epsilon`, `dp.target_error`,
//! `dp.mechanism`, `dp.split`) comes with each request.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dpgate_config::ColumnType;
use dpgate_server::Shared;
use dpgate_service::{Context, PrivateAnswer};
use dpgate_sql::constant::{evaluate_constant, SessionInfo};
use dpgate_sql::{
    sqlstate, Ask, Cell, Mechanism, OutputType, Plan, Prepared, Refusal, Split, Statement, Target,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::auth::Caller;
use crate::error::{ApiError, BODY_TOO_LARGE};
use crate::Api;

/// Most parameters one request may bind (the wire protocol's limit).
const MAX_PARAMS: usize = 65_535;

/// A query request, as documented in `GET /v1/openapi.json`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    sql: String,
    #[serde(default, deserialize_with = "bounded_params")]
    params: Vec<Value>,
    epsilon: Option<f64>,
    target_error: Option<Value>,
    mechanism: Option<String>,
    split: Option<String>,
}

/// A JSON array of at most [`MAX_PARAMS`] values, refused as soon as it
/// grows past that (never built whole).
fn bounded_params<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "an array of at most {MAX_PARAMS} parameter values")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<Value>, A::Error> {
            let mut values = Vec::new();
            while let Some(v) = seq.next_element::<Value>()? {
                if values.len() == MAX_PARAMS {
                    return Err(serde::de::Error::custom(format!(
                        "more than {MAX_PARAMS} params"
                    )));
                }
                values.push(v);
            }
            Ok(values)
        }
    }
    d.deserialize_seq(Bounded)
}

/// `POST /v1/query`.
pub async fn query(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(run(&api, user, &headers, body, Purpose::Answer).await)
}

/// `POST /v1/explain`: the plan, without running or charging.
pub async fn explain(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    respond(run(&api, user, &headers, body, Purpose::Explain).await)
}

fn respond(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Purpose {
    Answer,
    Explain,
}

async fn run(
    api: &Api,
    user: String,
    headers: &HeaderMap,
    body: Body,
    purpose: Purpose,
) -> Result<Value, ApiError> {
    let bytes = read_body(body, headers, api.max_body, api.body_timeout).await?;
    let request: QueryRequest = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::malformed(
            format!("the request body is not a query request: {e}"),
            r#"send JSON such as {"sql": "SELECT COUNT(*) FROM visits", "epsilon": 0.1}; optional fields: params, target_error, mechanism, split"#,
        )
    })?;
    let service = &api.shared.service;
    let config = service.config();
    let ask = ask_of(&request, config.privacy.default_epsilon)?;
    // One config snapshot for the whole statement: the default ε above
    // and everything after come from the same one.
    let ctx = Context::new(config, &user, &client_label(headers), ask);
    let routing = service.route(&ctx.user, &request.sql, &ctx.config, false);
    let statements = match &routing.routed {
        Ok(s) => s.clone(),
        Err(e) => return Err(refuse(&api.shared, &ctx, &request.sql, e.clone()).await),
    };
    if statements.len() != 1 {
        let e = Refusal::new(
            sqlstate::SYNTAX_ERROR,
            format!(
                "the request holds {} statements; it must hold one",
                statements.len()
            ),
            "send each statement in a request of its own",
        );
        return Err(refuse(&api.shared, &ctx, &request.sql, e).await);
    }
    let routed = &statements[0];
    let text = routed.text.as_str();
    let prepared = match (&routed.statement, purpose) {
        (Statement::Private(p), _) | (Statement::Explain(p), Purpose::Explain) => p,
        (Statement::Explain(p), Purpose::Answer) => {
            let plan = plan(&api.shared, &ctx, p, &request.params, text).await?;
            api.shared.service.record(ctx.entry(text)).await;
            return Ok(explained(&plan, &ctx, true));
        }
        (Statement::Constant(items), Purpose::Answer) => {
            let session = HttpSession { ctx: &ctx };
            return match evaluate_constant(items, &session) {
                Ok(values) => {
                    api.shared.service.record(ctx.entry(text)).await;
                    let columns = values
                        .iter()
                        .map(|(n, v)| json!({"name": n, "type": cell_type(v)}))
                        .collect::<Vec<_>>();
                    let row = values.iter().map(|(_, v)| cell_json(v)).collect::<Vec<_>>();
                    Ok(json!({
                        "columns": columns, "rows": [row], "accuracy": [],
                        "cost": {"epsilon": 0.0, "delta": 0.0}, "remaining": null,
                        "repeat": false, "synthetic": false, "query_id": null,
                    }))
                }
                Err(e) => Err(refuse(&api.shared, &ctx, text, e).await),
            };
        }
        (Statement::Refused(e), _) => return Err(refuse(&api.shared, &ctx, text, e.clone()).await),
        (Statement::Session(_), _) => {
            let e = Refusal::unsupported(
                "HTTP requests keep no session, so SET, SHOW and transaction commands do nothing here",
                "pass epsilon, target_error, mechanism or split in the request body; GET /v1/budget shows the budget",
            );
            return Err(refuse(&api.shared, &ctx, text, e).await);
        }
        (Statement::Synthetic { read, .. }, Purpose::Explain)
        | (
            Statement::Synthetic {
                read,
                explain: true,
            },
            _,
        ) => {
            return match api.shared.service.explain_synthetic(&ctx, read).await {
                Ok(lines) => {
                    api.shared.service.record(ctx.entry(text)).await;
                    Ok(json!({"plan": lines, "synthetic": true}))
                }
                Err(e) => Err(refuse(&api.shared, &ctx, text, e).await),
            };
        }
        (Statement::Synthetic { read, .. }, Purpose::Answer) => {
            return synthetic(api, &ctx, read, &request.params, text).await;
        }
        (Statement::Catalog, _) => {
            let e = Refusal::unsupported(
                "catalog queries are answered over the PostgreSQL protocol only",
                "GET /v1/tables lists the declared tables and columns",
            );
            return Err(refuse(&api.shared, &ctx, text, e).await);
        }
        (Statement::Constant(_), Purpose::Explain) => {
            let e = Refusal::unsupported(
                "a SELECT without FROM reads no private data and has no private plan",
                "POST it to /v1/query, or explain a query over a declared table",
            );
            return Err(refuse(&api.shared, &ctx, text, e).await);
        }
    };
    let plan = plan(&api.shared, &ctx, prepared, &request.params, text).await?;
    if purpose == Purpose::Explain {
        api.shared.service.record(ctx.entry(text)).await;
        return Ok(explained(&plan, &ctx, false));
    }
    let columns = plan.columns.clone();
    let sources = plan.column_sources();
    match api.shared.service.answer(&ctx, plan, text).await {
        Ok(answer) => Ok(answered(&columns, &sources, answer)),
        Err(e) => Err(with_standing(&api.shared, &ctx, e).await),
    }
}

/// A row-level SELECT answered from synthetic rows: text cells from the
/// synthetic database as JSON numbers, booleans or strings.
async fn synthetic(
    api: &Api,
    ctx: &Context,
    read: &dpgate_sql::synth::SyntheticRead,
    params: &[Value],
    text: &str,
) -> Result<Value, ApiError> {
    let service = &api.shared.service;
    if !params.is_empty() {
        let e = Refusal::unsupported(
            "parameters of row-level queries over synthetic rows are not taken over HTTP",
            "write the values into the statement, or use the PostgreSQL protocol",
        );
        return Err(refuse(&api.shared, ctx, text, e).await);
    }
    let notices = match service.load_synthetic(ctx, read).await {
        Ok(n) => n,
        Err(e) => return Err(refuse(&api.shared, ctx, text, e).await),
    };
    let catalog = service.catalog.as_ref().expect("load_synthetic checked it");
    let session = HttpSession { ctx };
    let result = match dpgate_sql::catalog::prepare_catalog_sql(&read.sql, &session) {
        Ok(sql) => catalog
            .query(
                dpgate_catalog::Database::Synthetic,
                &sql,
                &[],
                &[],
                &|_| false,
                "public",
            )
            .await
            .map_err(dpgate_server::catalog_refusal),
        Err(e) => Err(e),
    };
    let rows = match result {
        Ok(r) => r,
        Err(e) => return Err(refuse(&api.shared, ctx, text, e).await),
    };
    let mut entry = ctx.entry(text);
    entry.outcome = dpgate_ledger::Outcome::Answered;
    entry.rows = Some(rows.rows.len() as i64);
    service.record(entry).await;
    let columns: Vec<Value> = rows
        .columns
        .iter()
        .map(|(n, t)| json!({"name": n, "type": t.name()}))
        .collect();
    let cells: Vec<Value> = rows
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .zip(&rows.columns)
                .map(|(cell, (_, ty))| text_cell_json(cell.as_deref(), ty.name()))
                .collect()
        })
        .collect();
    Ok(json!({
        "columns": columns, "rows": cells, "accuracy": [],
        "cost": {"epsilon": 0.0, "delta": 0.0}, "remaining": null,
        "repeat": false, "synthetic": true, "query_id": null,
        "notice": notices.join("\n"),
    }))
}

/// A text-format cell of PostgreSQL type `ty` as JSON.
fn text_cell_json(cell: Option<&[u8]>, ty: &str) -> Value {
    let Some(bytes) = cell else {
        return Value::Null;
    };
    let text = String::from_utf8_lossy(bytes);
    match ty {
        "int2" | "int4" | "int8" => text.parse::<i64>().map_or(json!(text), |i| json!(i)),
        "float4" | "float8" | "numeric" => text.parse::<f64>().map_or(json!(text), |f| json!(f)),
        "bool" => json!(text == "t"),
        _ => json!(text),
    }
}

/// Reads the body up to `limit` bytes; more is a 413.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<axum::body::Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            BODY_TOO_LARGE,
            format!("the request body is over {} KiB", limit / 1024),
            "send a shorter statement (the data owner sets http.max_body_kib)",
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    // A body must arrive in time, as headers must: a client that sends
    // part of one and stops would otherwise hold its connection for good.
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            crate::error::MALFORMED_REQUEST,
            format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ),
            "send the whole body at once, with a Content-Length that matches it",
        )),
    }
}

/// The request's ask: ε (or an accuracy target), noise and split.
fn ask_of(request: &QueryRequest, default_epsilon: f64) -> Result<Ask, ApiError> {
    let mut ask = Ask::at(request.epsilon.unwrap_or(default_epsilon));
    if let Some(m) = &request.mechanism {
        ask.mechanism = Mechanism::parse(m)?;
    }
    if let Some(s) = &request.split {
        ask.split = Split::parse(s)?;
    }
    ask.target = match &request.target_error {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(Target::parse(&n.to_string())?),
        Some(Value::String(s)) => Some(Target::parse(s)?),
        Some(other) => {
            return Err(ApiError::malformed(
                format!("target_error must be a number or a string, not {other}"),
                r#"write "target_error": 50 (the first aggregate's half-width) or "target_error": "count:50, avg:2""#,
            ))
        }
    };
    Ok(ask)
}

/// Where a request came from, for the audit log.
fn client_label(headers: &HeaderMap) -> String {
    let agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown client");
    let agent: String = agent.chars().take(64).filter(|c| !c.is_control()).collect();
    format!("http ({agent})")
}

/// The plan of a private statement bound to the request's parameters.
async fn plan(
    shared: &Shared,
    ctx: &Context,
    prepared: &Prepared,
    params: &[Value],
    text: &str,
) -> Result<Plan, ApiError> {
    let values = match cells(params, prepared.parameter_types()) {
        Ok(v) => v,
        Err(e) => return Err(refuse(shared, ctx, text, e).await),
    };
    match shared.service.plan(ctx, prepared, &values).await {
        Ok(plan) => Ok(plan),
        Err(e) => {
            let e = shared.service.refused(ctx.entry(text), e).await;
            Err(with_standing(shared, ctx, e).await)
        }
    }
}

/// Records a refusal in the audit log and turns it into an error.
async fn refuse(shared: &Shared, ctx: &Context, text: &str, e: Refusal) -> ApiError {
    shared.service.refused(ctx.entry(text), e).await.into()
}

/// A refusal; for an exhausted budget, with what remains.
async fn with_standing(shared: &Shared, ctx: &Context, e: Refusal) -> ApiError {
    let exhausted = e.code == sqlstate::BUDGET_EXHAUSTED;
    let mut error = ApiError::from(e);
    if exhausted {
        if let Ok(standing) = shared.service.standing(ctx).await {
            let r = standing.remaining();
            error.extra = Some(json!({"remaining": {"epsilon": r.epsilon, "delta": r.delta}}));
        }
    }
    error
}

/// JSON parameters as cells, read by the type the statement infers for
/// each `$n` where it knows one.
fn cells(params: &[Value], types: &[Option<ColumnType>]) -> Result<Vec<Cell>, Refusal> {
    if params.len() > types.len() {
        return Err(Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!(
                "params has {} values but the statement uses {} ($1 to ${})",
                params.len(),
                types.len(),
                types.len()
            ),
            "send one value per $n placeholder, in order",
        ));
    }
    params
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let ty = types.get(i).copied().flatten();
            let bad = |what: &str| {
                Refusal::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!("params[{i}] (${}) {what}", i + 1),
                    "send numbers as JSON numbers, text, dates and timestamps as strings, booleans as true/false, and null",
                )
            };
            Ok(match v {
                Value::Null => Cell::Null,
                Value::Bool(b) => Cell::Bool(*b),
                Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                    (Some(i), _) if ty != Some(ColumnType::Float) => Cell::Int(i),
                    (_, Some(f)) if f.is_finite() => Cell::Float(f),
                    _ => return Err(bad("is not a finite number")),
                },
                Value::String(s) => match ty {
                    Some(ColumnType::Int) => s
                        .trim()
                        .parse()
                        .map(Cell::Int)
                        .map_err(|_| bad("is compared with an integer column but is not an integer"))?,
                    Some(ColumnType::Float) => s
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|f| f.is_finite())
                        .map(Cell::Float)
                        .ok_or_else(|| bad("is compared with a numeric column but is not a finite number"))?,
                    _ => Cell::Text(s.clone()),
                },
                Value::Array(_) | Value::Object(_) => {
                    return Err(bad("is an array or object; parameters are single values"))
                }
            })
        })
        .collect()
}

/// A cell as JSON: numbers as numbers, NULL as null, text (dates and
/// timestamps in ISO form) as strings.
pub fn cell_json(cell: &Cell) -> Value {
    match cell {
        Cell::Null => Value::Null,
        Cell::Int(i) => json!(i),
        Cell::Float(f) if f.is_finite() => json!(f),
        Cell::Float(_) => Value::Null,
        Cell::Text(t) => json!(t),
        Cell::Bool(b) => json!(b),
    }
}

fn cell_type(cell: &Cell) -> &'static str {
    match cell {
        Cell::Int(_) => OutputType::Int,
        Cell::Float(_) => OutputType::Float,
        Cell::Bool(_) => OutputType::Bool,
        Cell::Text(_) | Cell::Null => OutputType::Text,
    }
    .pg_name()
}

/// A private answer as JSON.
fn answered(
    columns: &[dpgate_sql::OutputColumn],
    sources: &[Option<usize>],
    answer: PrivateAnswer,
) -> Value {
    let accuracy: Vec<Value> = columns
        .iter()
        .enumerate()
        .filter(|(i, _)| sources.get(*i).copied().flatten().is_some())
        .filter_map(|(i, c)| {
            let widths: Vec<Option<f64>> = answer
                .half_widths
                .iter()
                .map(|r| r.get(i).copied().flatten())
                .collect();
            let widest = widths
                .iter()
                .flatten()
                .cloned()
                .fold(None, |m: Option<f64>, w| Some(m.map_or(w, |m| m.max(w))));
            widest.map(|w| {
                json!({
                    "column": c.name, "half_width": w, "half_widths": widths,
                    "confidence": answer.confidence,
                })
            })
        })
        .collect();
    let cost = match &answer.cost {
        Some(c) => json!({"epsilon": c.epsilon_f64(), "delta": c.delta, "rho": c.rho.to_f64()}),
        None => json!({"epsilon": 0.0, "delta": 0.0, "rho": 0.0}),
    };
    let remaining = answer.standing.map(|(r, limit)| {
        json!({"epsilon": r.epsilon, "delta": r.delta, "limit": {"epsilon": limit.epsilon, "delta": limit.delta}})
    });
    let mut body = Map::new();
    body.insert(
        "columns".into(),
        columns
            .iter()
            .map(|c| json!({"name": c.name, "type": c.ty.pg_name()}))
            .collect(),
    );
    body.insert(
        "rows".into(),
        answer
            .rows
            .iter()
            .map(|r| r.iter().map(cell_json).collect::<Value>())
            .collect(),
    );
    body.insert("accuracy".into(), accuracy.into());
    body.insert("cost".into(), cost);
    body.insert("remaining".into(), remaining.unwrap_or(Value::Null));
    body.insert("repeat".into(), answer.cost.is_none().into());
    body.insert("synthetic".into(), false.into());
    body.insert(
        "query_id".into(),
        answer.query_id.map(|id| id.to_string()).into(),
    );
    if let Some(t) = &answer.target {
        body.insert(
            "target".into(),
            dpgate_sql::explain::target_met_text(t).into(),
        );
    }
    Value::Object(body)
}

/// A plan as JSON: cost, noise, bounding, each column's interval, and
/// EXPLAIN's lines. The backend SQL is left out (the data owner reads it
/// in the audit log); `as_rows` frames the lines as a one-column result
/// for `EXPLAIN …` sent to /v1/query.
fn explained(plan: &Plan, ctx: &Context, as_rows: bool) -> Value {
    let confidence = ctx.config.privacy.confidence;
    let mut lines = plan.explain_lines(confidence);
    if let Some(at) = lines.iter().position(|l| l.trim() == "Backend SQL:") {
        lines.truncate(at);
    }
    if as_rows {
        return json!({
            "columns": [{"name": "QUERY PLAN", "type": "text"}],
            "rows": lines.iter().map(|l| vec![l]).collect::<Vec<_>>(),
            "accuracy": [], "cost": {"epsilon": 0.0, "delta": 0.0}, "remaining": null,
            "repeat": false, "synthetic": false, "query_id": null,
        });
    }
    let cost = plan.cost();
    let cost =
        json!({"epsilon": cost.epsilon_f64(), "delta": cost.delta, "rho": cost.rho.to_f64()});
    let widths = plan.release.half_widths(confidence);
    let sources = plan.column_sources();
    let columns: Vec<Value> = plan
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let width = sources
                .get(i)
                .copied()
                .flatten()
                .and_then(|j| widths.get(j).copied().flatten());
            json!({"name": c.name, "type": c.ty.pg_name(), "half_width": width})
        })
        .collect();
    json!({
        "cost": cost,
        "mechanism": if plan.mechanism.gaussian { "gaussian" } else { "laplace" },
        "bounding": plan.bounding.describe(plan.max_rows),
        "columns": columns,
        "confidence": confidence,
        "target": plan.target.as_ref().map(dpgate_sql::explain::target_met_text),
        "lines": lines,
    })
}

/// What a constant SELECT may read of the "session": the user, and no
/// settings (HTTP requests keep none).
struct HttpSession<'a> {
    ctx: &'a Context,
}

impl SessionInfo for HttpSession<'_> {
    fn user(&self) -> String {
        self.ctx.user.clone()
    }
    fn database(&self) -> String {
        "dpgate".into()
    }
    fn setting(&self, name: &str) -> Option<String> {
        (name == "dp.epsilon").then(|| self.ctx.ask.epsilon.to_string())
    }
}
