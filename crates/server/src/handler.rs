//! The query path of one connection: classify, answer session statements,
//! and for private queries plan → charge → backend → release → notice.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dpgate_dp::release::NoiseDraw;
use dpgate_sql::constant::{evaluate_constant, Constant, SessionInfo};
use dpgate_sql::params::{bind_parameters, parameter_types, ParamValue};
use dpgate_sql::{
    classify, plan, sqlstate, Command, Grouping, OutputType, Plan, RawGroup, Refusal,
};
use futures::{stream, Sink, SinkExt};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo,
    QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{NoopQueryParser, StoredStatement};
use pgwire::api::{ClientInfo, Type, METADATA_DATABASE, METADATA_USER};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use crate::session::Session;
use crate::Shared;

/// Handles simple and extended queries for every connection.
pub struct QueryHandler {
    shared: Arc<Shared>,
    parser: Arc<NoopQueryParser>,
}

/// Result columns: name and type.
type Fields = Vec<(String, Type)>;

/// What one statement produced, before it is framed for the wire.
enum Outcome {
    Rows {
        fields: Fields,
        rows: Vec<Vec<Constant>>,
        notice: Option<String>,
    },
    Tag(Response),
    Error(Refusal),
}

impl QueryHandler {
    /// A handler over the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        QueryHandler {
            shared,
            parser: Arc::new(NoopQueryParser::new()),
        }
    }

    fn session<C: ClientInfo>(&self, client: &C) -> Arc<Mutex<Session>> {
        let config = self.shared.config.clone();
        client
            .session_extensions()
            .get_or_insert_with(|| Mutex::new(Session::new(&config)))
    }

    /// What constant SELECTs may read about this connection.
    fn client_session<C: ClientInfo>(&self, client: &C) -> ClientSession {
        let meta = |key| client.metadata().get(key).cloned().unwrap_or_default();
        ClientSession {
            user: meta(METADATA_USER),
            database: meta(METADATA_DATABASE),
            session: self.session(client),
        }
    }

    /// Runs the classified statements of `sql` in order, stopping at the
    /// first error, with `params` bound.
    async fn execute<C: ClientInfo>(
        &self,
        client: &C,
        commands: Vec<Command>,
        sql: &str,
        params: &[ParamValue],
    ) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(commands.len());
        for command in commands {
            let outcome = self.execute_one(client, command, sql, params).await;
            let failed = matches!(outcome, Outcome::Error(_));
            out.push(outcome);
            if failed {
                break;
            }
        }
        out
    }

    async fn execute_one<C: ClientInfo>(
        &self,
        client: &C,
        command: Command,
        sql: &str,
        params: &[ParamValue],
    ) -> Outcome {
        let user = client
            .metadata()
            .get(METADATA_USER)
            .cloned()
            .unwrap_or_default();
        let session = self.session(client);
        let config = &self.shared.config;
        let max_eps = config
            .user(&user)
            .map(|u| u.max_epsilon_per_query)
            .unwrap_or(0.0);
        let result: Result<Outcome, Refusal> = match command {
            Command::Set { name, value } => session
                .lock()
                .unwrap()
                .set(&name, value.as_deref(), max_eps)
                .map(|_| Outcome::Tag(Response::Execution(Tag::new("SET")))),
            Command::IgnoredSet => Ok(Outcome::Tag(Response::Execution(Tag::new("SET")))),
            Command::Reset(name) => {
                session.lock().unwrap().reset(name.as_deref(), config);
                Ok(Outcome::Tag(Response::Execution(Tag::new("RESET"))))
            }
            Command::Show(name) => self.show(&session, &user, &name).await,
            Command::Begin => Ok(Outcome::Tag(Response::TransactionStart(Tag::new("BEGIN")))),
            Command::Commit => Ok(Outcome::Tag(Response::TransactionEnd(Tag::new("COMMIT")))),
            Command::Rollback => Ok(Outcome::Tag(Response::TransactionEnd(Tag::new("ROLLBACK")))),
            Command::Savepoint(tag) => Ok(Outcome::Tag(Response::Execution(Tag::new(tag)))),
            Command::Constant(items) => {
                let info = self.client_session(client);
                evaluate_constant(&items, &info).map(|values| {
                    let fields = values
                        .iter()
                        .map(|(n, v)| (n.clone(), constant_type(v)))
                        .collect();
                    Outcome::Rows {
                        fields,
                        rows: vec![values.into_iter().map(|(_, v)| v).collect()],
                        notice: None,
                    }
                })
            }
            Command::Private(mut query) => {
                let epsilon = session.lock().unwrap().epsilon();
                match bind_parameters(&mut query, params)
                    .and_then(|_| plan(&query, config, epsilon))
                {
                    Ok(plan) => self.answer(&user, plan, sql).await,
                    Err(e) => Err(e),
                }
            }
        };
        result.unwrap_or_else(Outcome::Error)
    }

    async fn show(
        &self,
        session: &Arc<Mutex<Session>>,
        user: &str,
        name: &str,
    ) -> Result<Outcome, Refusal> {
        let rows: Vec<(String, String)> = match name {
            "all" => session.lock().unwrap().all(),
            "dp.budget" => {
                let spent = self.spent(user).await?;
                let budget = self
                    .shared
                    .config
                    .user(user)
                    .map(|u| u.epsilon_budget)
                    .unwrap_or(0.0);
                vec![(name.into(), format!("{}", (budget - spent).max(0.0)))]
            }
            _ => vec![(name.to_string(), session.lock().unwrap().show(name)?)],
        };
        let header = if name == "all" {
            vec![("name", Type::TEXT), ("setting", Type::TEXT)]
        } else {
            vec![(name, Type::TEXT)]
        };
        Ok(Outcome::Rows {
            fields: header
                .into_iter()
                .map(|(n, t)| (n.to_string(), t))
                .collect(),
            rows: rows
                .into_iter()
                .map(|(k, v)| {
                    if name == "all" {
                        vec![Constant::Text(k), Constant::Text(v)]
                    } else {
                        vec![Constant::Text(v)]
                    }
                })
                .collect(),
            notice: None,
        })
    }

    async fn spent(&self, user: &str) -> Result<f64, Refusal> {
        let ledger = self.shared.ledger.clone();
        let user = user.to_string();
        tokio::task::spawn_blocking(move || ledger.spent(&user))
            .await
            .map_err(|e| ledger_failure(&e.to_string()))?
            .map_err(|e| ledger_failure(&e.to_string()))
    }

    /// Charge, query, release. Nothing reaches the backend unless the
    /// charge is durable; after the charge, failures are uninformative.
    async fn answer(&self, user: &str, plan: Plan, sql: &str) -> Result<Outcome, Refusal> {
        let config = &self.shared.config;
        let budget = config.user(user).map(|u| u.epsilon_budget).unwrap_or(0.0);
        // Noise is drawn off the request path, while the charge and the
        // backend query run: sampling time grows with the magnitude drawn.
        // Only partition selection, whose group count is known after the
        // query, draws afterwards.
        let early_noise = plan
            .groups_before_data()
            .map(|n| draw_noise(plan.release.clone(), n));
        let ledger = self.shared.ledger.clone();
        let (u, s, eps) = (user.to_string(), sql.to_string(), plan.epsilon);
        let charge = tokio::task::spawn_blocking(move || ledger.charge(&u, budget, eps, &s))
            .await
            .map_err(|e| ledger_failure(&e.to_string()))?
            .map_err(|e| match e {
                dpgate_ledger::LedgerError::Exhausted { spent, budget, cost } => Refusal::new(
                    sqlstate::BUDGET_EXHAUSTED,
                    format!("privacy budget exhausted: this query costs ε = {cost}, but only {} of {budget} remain", fmt_eps((budget - spent).max(0.0))),
                    "lower the cost with SET dp.epsilon = <smaller value>, or ask the data owner for more budget",
                ),
                other => ledger_failure(&other.to_string()),
            })?;
        tracing::info!(
            user,
            epsilon = plan.epsilon,
            delta = plan.delta,
            spent = charge.spent,
            "charged"
        );

        let keys = match &plan.grouping {
            Grouping::None => 0,
            Grouping::Domain { keys, .. } | Grouping::Selection { keys, .. } => keys.len(),
        };
        let raw = self
            .shared
            .backend
            .fetch_groups(&plan.backend_sql, keys, plan.release.raw_len())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, sql = %plan.backend_sql, "backend query failed after charge");
                failed_after_charge()
            })?;
        let groups = plan.arrange(
            raw.into_iter()
                .map(|g| RawGroup {
                    keys: g.keys,
                    values: g.values,
                })
                .collect(),
        );
        let draws = match early_noise {
            Some(draws) => draws,
            None => draw_noise(plan.release.clone(), groups.len()),
        }
        .await
        .map_err(|e| {
            tracing::error!("noise sampling failed: {e}");
            failed_after_charge()
        })?;
        let confidence = config.privacy.confidence;
        let answer = plan.finish(&groups, &draws, confidence);
        let widths: Vec<String> = plan
            .columns
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let w: Vec<f64> = answer.half_widths.iter().filter_map(|r| r[i]).collect();
                let lo = w.iter().cloned().fold(f64::INFINITY, f64::min);
                let hi = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                match w.len() {
                    0 => None,
                    _ if hi - lo <= 1e-9 * hi.abs().max(1.0) => {
                        Some(format!("{} ±{}", c.name, fmt_width(hi)))
                    }
                    _ => Some(format!("{} ±{}…{}", c.name, fmt_width(lo), fmt_width(hi))),
                }
            })
            .collect();
        let cost = if plan.delta > 0.0 {
            format!("ε = {}, δ = {:e}", fmt_eps(plan.epsilon), plan.delta)
        } else {
            format!("ε = {}", fmt_eps(plan.epsilon))
        };
        let accuracy = if widths.is_empty() {
            String::new()
        } else {
            format!(
                " {}% confidence half-widths: {}",
                confidence * 100.0,
                widths.join(", ")
            )
        };
        let notice = format!(
            "dpgate: this answer cost {cost}; {} of ε = {} remain.{accuracy}",
            fmt_eps(charge.remaining),
            fmt_eps(budget),
        );
        Ok(Outcome::Rows {
            fields: plan
                .columns
                .iter()
                .map(|c| (c.name.clone(), output_type(c.ty)))
                .collect(),
            rows: answer.rows,
            notice: Some(notice),
        })
    }

    /// Parameter types of a single private statement: what the client
    /// declared, else inferred from the compared column, else text.
    fn parameter_types(&self, commands: &[Command], declared: &[Option<Type>]) -> Vec<Type> {
        let [Command::Private(query)] = commands else {
            return Vec::new();
        };
        parameter_types(query, &self.shared.config)
            .iter()
            .enumerate()
            .map(|(i, t)| {
                declared_type(declared, i).unwrap_or_else(|| t.map(pg_type).unwrap_or(Type::TEXT))
            })
            .collect()
    }

    /// Result columns and parameter types of a statement, without running it.
    fn describe(
        &self,
        client: &impl ClientInfo,
        sql: &str,
        declared: &[Option<Type>],
    ) -> Result<(Vec<Type>, Fields), Refusal> {
        let mut commands = classify(sql)?;
        if commands.len() != 1 {
            return Ok((vec![], vec![]));
        }
        let types = self.parameter_types(&commands, declared);
        match commands.remove(0) {
            Command::Private(mut query) => {
                bind_parameters(&mut query, &vec![ParamValue::Null; types.len()])?;
                let epsilon = self.session(client).lock().unwrap().epsilon();
                let plan = plan(&query, &self.shared.config, epsilon)?;
                let fields = plan
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), output_type(c.ty)))
                    .collect();
                Ok((types, fields))
            }
            Command::Constant(items) => {
                let info = self.client_session(client);
                let values = evaluate_constant(&items, &info)?;
                Ok((
                    vec![],
                    values
                        .iter()
                        .map(|(n, v)| (n.clone(), constant_type(v)))
                        .collect(),
                ))
            }
            Command::Show(name) if name == "all" => Ok((
                vec![],
                vec![("name".into(), Type::TEXT), ("setting".into(), Type::TEXT)],
            )),
            Command::Show(name) => Ok((vec![], vec![(name, Type::TEXT)])),
            _ => Ok((vec![], vec![])),
        }
    }
}

fn declared_type(declared: &[Option<Type>], i: usize) -> Option<Type> {
    declared
        .get(i)
        .cloned()
        .flatten()
        .filter(|t| *t != Type::UNKNOWN)
}

fn pg_type(t: dpgate_config::ColumnType) -> Type {
    use dpgate_config::ColumnType::*;
    match t {
        Int => Type::INT8,
        Float => Type::FLOAT8,
        Text => Type::TEXT,
        Bool => Type::BOOL,
        Date => Type::DATE,
        Timestamp => Type::TIMESTAMP,
    }
}

fn constant_type(v: &Constant) -> Type {
    match v {
        Constant::Int(_) => Type::INT4,
        Constant::Float(_) => Type::FLOAT8,
        Constant::Bool(_) => Type::BOOL,
        Constant::Text(_) | Constant::Null => Type::TEXT,
    }
}

fn fmt_eps(x: f64) -> String {
    let s = format!("{x:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn fmt_width(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn output_type(ty: OutputType) -> Type {
    match ty {
        OutputType::Int => Type::INT8,
        OutputType::Float => Type::FLOAT8,
        OutputType::Text => Type::TEXT,
        OutputType::Bool => Type::BOOL,
    }
}

/// Draws noise for `groups` groups in a blocking task.
fn draw_noise(
    release: dpgate_dp::release::ReleasePlan,
    groups: usize,
) -> tokio::task::JoinHandle<Vec<NoiseDraw>> {
    tokio::task::spawn_blocking(move || {
        let mut rng = dpgate_dp::secure_rng();
        (0..groups).map(|_| release.draw_noise(&mut rng)).collect()
    })
}

/// The one error every failure after the charge gets: it must not depend
/// on the data, so it carries no detail (the log has it).
fn failed_after_charge() -> Refusal {
    Refusal::new(
        sqlstate::BACKEND_FAILED,
        "the private query could not be completed; its cost has been charged",
        "retry later; if it keeps failing, ask the data owner to check the backend",
    )
}

fn ledger_failure(detail: &str) -> Refusal {
    tracing::error!(detail, "ledger failure");
    Refusal::new(
        "58030",
        "the privacy ledger could not record the charge, so the query was not run",
        "retry later; the data owner should check the ledger file",
    )
}

struct ClientSession {
    user: String,
    database: String,
    session: Arc<Mutex<Session>>,
}

impl SessionInfo for ClientSession {
    fn user(&self) -> String {
        self.user.clone()
    }
    fn database(&self) -> String {
        self.database.clone()
    }
    fn setting(&self, name: &str) -> Option<String> {
        self.session.lock().unwrap().show(name).ok()
    }
}

fn error_info(r: &Refusal, severity: &str) -> ErrorInfo {
    let mut info = ErrorInfo::new(severity.to_string(), r.code.to_string(), r.message.clone());
    info.hint = Some(r.hint.clone());
    info
}

fn notice(text: String) -> PgWireBackendMessage {
    PgWireBackendMessage::NoticeResponse(
        ErrorInfo::new("NOTICE".into(), "00000".into(), text).into(),
    )
}

/// Frames an outcome for the wire with per-column formats.
fn to_response(outcome: Outcome, format: &Format) -> (Response, Option<String>) {
    match outcome {
        Outcome::Tag(r) => (r, None),
        Outcome::Error(e) => (Response::Error(Box::new(error_info(&e, "ERROR"))), None),
        Outcome::Rows {
            fields,
            rows,
            notice,
        } => {
            let schema = Arc::new(
                fields
                    .into_iter()
                    .enumerate()
                    .map(|(i, (name, ty))| {
                        FieldInfo::new(name, None, None, ty, format.format_for(i))
                    })
                    .collect::<Vec<_>>(),
            );
            let encoded: Vec<PgWireResult<_>> = rows
                .into_iter()
                .map(|row| {
                    let mut enc = DataRowEncoder::new(schema.clone());
                    for (value, field) in row.iter().zip(schema.iter()) {
                        encode(&mut enc, value, field.datatype())?;
                    }
                    Ok(enc.take_row())
                })
                .collect();
            (
                Response::Query(QueryResponse::new(schema, stream::iter(encoded))),
                notice,
            )
        }
    }
}

fn encode(enc: &mut DataRowEncoder, value: &Constant, ty: &Type) -> PgWireResult<()> {
    match value {
        Constant::Null => enc.encode_field(&None::<String>),
        Constant::Int(i) if *ty == Type::INT4 => {
            enc.encode_field(&i32::try_from(*i).unwrap_or(i32::MAX))
        }
        Constant::Int(i) => enc.encode_field(i),
        Constant::Float(f) => enc.encode_field(f),
        Constant::Bool(b) => enc.encode_field(b),
        Constant::Text(t) => enc.encode_field(t),
    }
}

/// Decodes bound parameters by their declared or inferred types.
fn decode_params(portal: &Portal<String>, inferred: &[Type]) -> PgWireResult<Vec<ParamValue>> {
    (0..portal.parameter_len())
        .map(|i| {
            let ty = declared_type(&portal.statement.parameter_types, i)
                .or_else(|| inferred.get(i).cloned())
                .unwrap_or(Type::TEXT);
            let v = match ty {
                Type::INT2 => portal
                    .parameter::<i16>(i, &ty)?
                    .map(|v| ParamValue::Int(v.into())),
                Type::INT4 => portal
                    .parameter::<i32>(i, &ty)?
                    .map(|v| ParamValue::Int(v.into())),
                Type::INT8 => portal.parameter::<i64>(i, &ty)?.map(ParamValue::Int),
                Type::FLOAT4 => portal
                    .parameter::<f32>(i, &ty)?
                    .map(|v| ParamValue::Float(v.into())),
                Type::FLOAT8 => portal.parameter::<f64>(i, &ty)?.map(ParamValue::Float),
                Type::BOOL => portal.parameter::<bool>(i, &ty)?.map(ParamValue::Bool),
                _ => portal
                    .parameter::<String>(i, &Type::TEXT)?
                    .map(ParamValue::Text),
            };
            Ok(v.unwrap_or(ParamValue::Null))
        })
        .collect()
}

async fn send_notice<C>(client: &mut C, text: Option<String>) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    if let Some(text) = text {
        client.feed(notice(text)).await?;
    }
    Ok(())
}

#[async_trait]
impl SimpleQueryHandler for QueryHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo
            + pgwire::api::ClientPortalStore
            + Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: pgwire::api::store::PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let outcomes = match classify(query) {
            Ok(commands) => self.execute(client, commands, query, &[]).await,
            Err(e) => vec![Outcome::Error(e)],
        };
        let mut responses = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            let (response, text) = to_response(outcome, &Format::UnifiedText);
            send_notice(client, text).await?;
            responses.push(response);
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for QueryHandler {
    type Statement = String;
    type QueryParser = NoopQueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo
            + pgwire::api::ClientPortalStore
            + Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: pgwire::api::store::PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let sql = &portal.statement.statement;
        let commands = match classify(sql) {
            Ok(c) if c.len() > 1 => {
                let e = Refusal::unsupported(
                    "several statements cannot be sent in one prepared statement",
                    "prepare one statement at a time",
                );
                return Ok(to_response(Outcome::Error(e), &Format::UnifiedText).0);
            }
            Ok(c) => c,
            Err(e) => return Ok(to_response(Outcome::Error(e), &Format::UnifiedText).0),
        };
        let types = self.parameter_types(&commands, &portal.statement.parameter_types);
        let params = decode_params(portal, &types)?;
        let Some(outcome) = self.execute(client, commands, sql, &params).await.pop() else {
            return Ok(Response::EmptyQuery);
        };
        let (response, text) = to_response(outcome, &portal.result_column_format);
        send_notice(client, text).await?;
        Ok(response)
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        stmt: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo
            + pgwire::api::ClientPortalStore
            + Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: pgwire::api::store::PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (params, fields) = self
            .describe(client, &stmt.statement, &stmt.parameter_types)
            .map_err(|e| PgWireError::UserError(Box::new(error_info(&e, "ERROR"))))?;
        let fields = fields
            .into_iter()
            .map(|(n, t)| FieldInfo::new(n, None, None, t, FieldFormat::Text))
            .collect();
        Ok(DescribeStatementResponse::new(params, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo
            + pgwire::api::ClientPortalStore
            + Sink<PgWireBackendMessage>
            + Unpin
            + Send
            + Sync,
        C::PortalStore: pgwire::api::store::PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (_, fields) = self
            .describe(
                client,
                &portal.statement.statement,
                &portal.statement.parameter_types,
            )
            .map_err(|e| PgWireError::UserError(Box::new(error_info(&e, "ERROR"))))?;
        let fields = fields
            .into_iter()
            .enumerate()
            .map(|(i, (n, t))| {
                FieldInfo::new(n, None, None, t, portal.result_column_format.format_for(i))
            })
            .collect();
        Ok(DescribePortalResponse::new(fields))
    }
}
