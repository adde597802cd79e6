//! The read-only routes: the user's budget and own query history, the
//! declared schema (nothing from the data), health and metrics.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use dpgate_config::TablePrivacy;
use dpgate_ledger::{AuditFilter, Outcome};
use dpgate_sql::Ask;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::Api;

/// Most audit entries one `GET /v1/queries` returns.
const MAX_HISTORY: u64 = 1000;

fn reply(result: Result<Value, ApiError>) -> Response {
    match result {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/budget`: spent, limit and remaining ε and δ, the refresh
/// window, queries charged.
pub async fn budget(State(api): State<Arc<Api>>, Caller(user): Caller) -> Response {
    reply(
        async {
            let service = &api.shared.service;
            let config = service.config();
            let ask = Ask::at(config.privacy.default_epsilon);
            let ctx = dpgate_service::Context::new(config, &user, "http", ask);
            let standing = service.standing(&ctx).await?;
            let remaining = standing.remaining();
            let account = ctx.account().cloned();
            Ok(json!({
                "user": user,
                "epsilon": {"spent": standing.spent.epsilon, "limit": standing.limit.epsilon, "remaining": remaining.epsilon},
                "delta": {"spent": standing.spent.delta, "limit": standing.limit.delta, "remaining": remaining.delta},
                "refresh": account.and_then(|a| a.budget.refresh).map(|d| humanize(d.as_secs())),
                "queries": standing.queries,
                "max_epsilon_per_query": ctx.epsilon_range().1,
                "default_epsilon": ctx.config.privacy.default_epsilon,
            }))
        }
        .await,
    )
}

fn humanize(seconds: u64) -> String {
    match seconds {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s => format!("{s}s"),
    }
}

/// `?since=<ms since the epoch>&limit=<n>`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    since: Option<i64>,
    limit: Option<u64>,
}

/// `GET /v1/queries`: this user's own audit entries, newest first.
pub async fn queries(
    State(api): State<Arc<Api>>,
    Caller(user): Caller,
    params: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    reply(
        async {
            let Query(q) = params.map_err(|e| {
                ApiError::malformed(
                    format!("the query string is not understood: {}", e.body_text()),
                    "use ?since=<milliseconds since 1970>&limit=<1 to 1000>",
                )
            })?;
            let ledger = &api.shared.service.ledger;
            // Entries of statements that spent nothing are written in
            // batches; the history should include the last one.
            ledger.flush().await;
            let filter = AuditFilter {
                user: Some(user),
                since_ms: q.since,
                limit: Some(q.limit.unwrap_or(100).clamp(1, MAX_HISTORY)),
            };
            let records = ledger
                .audit(filter)
                .await
                .map_err(|e| ApiError::from(dpgate_service::ledger_failure(&e.to_string())))?;
            // The ledger gives the newest entries oldest first.
            let entries: Vec<Value> = records
                .into_iter()
                .rev()
                .map(|r| {
                    let e = r.entry;
                    // The analyst sees what they were told: a refusal's
                    // message, and for a failure after the charge the one
                    // fixed text (the log's detail may depend on the data).
                    let detail = match e.outcome {
                        Outcome::Refused => e.detail,
                        Outcome::Failed => Some(dpgate_service::failed_after_charge().message),
                        _ => None,
                    };
                    json!({
                        "id": r.id.to_string(),
                        "at_ms": e.at_ms,
                        "statement": e.statement,
                        "outcome": e.outcome.as_str(),
                        "cost": {"epsilon": e.cost.epsilon, "delta": e.cost.delta},
                        "code": e.code,
                        "detail": detail,
                        "rows": e.rows,
                    })
                })
                .collect();
            Ok(json!({"queries": entries}))
        }
        .await,
    )
}

/// `GET /v1/tables`: what proxy.toml declares — tables, columns, types,
/// bounds, domains, privacy units. Nothing is read from the data.
pub async fn tables(State(api): State<Arc<Api>>, _caller: Caller) -> Response {
    reply(
        async {
            let config = api.shared.service.config();
            let tables: Vec<Value> = config
                .tables
                .iter()
                .map(|t| {
                    let (unit, max_rows, unique, public) = match &t.privacy {
                        TablePrivacy::Private {
                            privacy_unit,
                            max_rows_per_unit,
                            unique_unit,
                        } => (
                            privacy_unit.clone(),
                            Some(*max_rows_per_unit),
                            *unique_unit,
                            false,
                        ),
                        TablePrivacy::Public => (None, None, false, true),
                    };
                    let columns: Vec<Value> = t
                        .columns
                        .iter()
                        .map(|c| {
                            json!({
                                "name": c.name,
                                "type": c.ty.pg_name(),
                                "lower": c.bounds.map(|b| b.0),
                                "upper": c.bounds.map(|b| b.1),
                                "values": c.values,
                                "not_null": c.not_null,
                            })
                        })
                        .collect();
                    json!({
                        "schema": t.schema, "name": t.name, "public": public,
                        "privacy_unit": unit, "max_rows_per_unit": max_rows,
                        "privacy_unit_unique": unique, "columns": columns,
                    })
                })
                .collect();
            Ok(json!({"tables": tables}))
        }
        .await,
    )
}

/// `GET /healthz`: up, without a login.
pub async fn healthz() -> Response {
    (StatusCode::OK, Json(json!({"status": "ok"}))).into_response()
}

/// `GET /metrics`: Prometheus text. It counts every analyst's queries, so
/// it needs its own token (`http.metrics_token`), not an analyst's login.
pub async fn metrics(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    if !crate::auth::is_metrics_request(&api, &headers) {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            crate::error::BAD_LOGIN,
            "the metrics need the metrics token",
            "send Authorization: Bearer with the token the data owner declared as http.metrics_token",
        )
        .into_response();
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        api.shared.service.metrics.render(),
    )
        .into_response()
}
