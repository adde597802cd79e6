//! Runs one routed statement under its context and turns what it gives
//! into an [`Outcome`] for the wire: session commands here, constants
//! from session state, the shadow catalog (`browse.rs`), EXPLAIN and
//! private answers through the service. Every statement leaves one audit
//! entry (the private path writes its own inside the charge).

use std::sync::{Arc, Mutex};

use dpgate_service::Context;
use dpgate_sql::ast::SelectItem;
use dpgate_sql::constant::{evaluate_constant, SessionInfo};
use dpgate_sql::explain::fmt_eps;
use dpgate_sql::Cell;
use dpgate_sql::{sqlstate, Command, Plan, Prepared, Refusal, Routed, Statement};
use pgwire::api::results::{Response, Tag};
use pgwire::api::Type;

use crate::audit::settle;
use crate::handler::{Bound, QueryHandler};
use crate::report::private_outcome;
use crate::session::Session;
use crate::wire::{constant_type, Outcome};

/// One statement's view of its connection: the context (config snapshot,
/// user, ε) and the session's settings for constants and the catalog.
pub(crate) struct ClientSession {
    /// The statement's context.
    pub ctx: Context,
    /// The database name the client asked for.
    pub database: String,
    /// The connection's settings.
    pub session: Arc<Mutex<Session>>,
}

impl SessionInfo for ClientSession {
    fn user(&self) -> String {
        self.ctx.user.clone()
    }
    fn database(&self) -> String {
        self.database.clone()
    }
    fn setting(&self, name: &str) -> Option<String> {
        self.session.lock().unwrap().show(name).ok()
    }
    fn set_setting(&self, name: &str, value: &str) -> Result<(), Refusal> {
        self.session
            .lock()
            .unwrap()
            .set(name, Some(value), self.ctx.epsilon_range())
    }
}

impl QueryHandler {
    /// Runs one routed statement and leaves its audit entry.
    pub(crate) async fn run(
        &self,
        info: &ClientSession,
        routed: &Routed,
        bound: Bound<'_>,
    ) -> Outcome {
        let text = routed.text.as_str();
        if let Statement::Private(prepared) = &routed.statement {
            // The private path records its own entries, inside the charge.
            return match self.bind(info, prepared, bound).await {
                Ok(plan) => self.private(info, plan, text).await,
                Err(e) => {
                    let refusal = self.service().refused(info.ctx.entry(text), e).await;
                    Outcome::Error(refusal)
                }
            };
        }
        let outcome = match &routed.statement {
            Statement::Session(command) => self.session_command(info, command, bound).await,
            Statement::Constant(items) => constant(&items[..], info),
            Statement::Catalog => self.browse(info, text, bound).await,
            Statement::Explain(prepared) => self
                .bind(info, prepared, bound)
                .await
                .map(|plan| explain(&plan, &info.ctx))
                .unwrap_or_else(Outcome::Error),
            Statement::Synthetic { read, explain } => {
                self.synthetic(info, read, *explain, bound).await
            }
            Statement::Refused(e) => Outcome::Error(e.clone()),
            Statement::Private(_) => unreachable!("answered above"),
        };
        let mut entry = info.ctx.entry(text);
        settle(&mut entry, &outcome);
        self.service().record(entry).await;
        outcome
    }

    /// The plan of a prepared statement bound to this execution's values.
    async fn bind(
        &self,
        info: &ClientSession,
        prepared: &Prepared,
        bound: Bound<'_>,
    ) -> Result<Plan, Refusal> {
        let values = match bound.portal {
            Some(portal) => {
                let types = crate::params::wire_types(
                    prepared.parameter_types(),
                    &portal.statement.parameter_types,
                );
                crate::params::decode(portal, &types)?
            }
            None => Vec::new(),
        };
        self.service().plan(&info.ctx, prepared, &values).await
    }

    /// Repeat, or charge → backend → release, framed with its report.
    async fn private(&self, info: &ClientSession, plan: Plan, text: &str) -> Outcome {
        let accuracy = info.session.lock().unwrap().accuracy();
        let columns = plan.columns.clone();
        let sources = plan.column_sources();
        match self.service().answer(&info.ctx, plan, text).await {
            Ok(answer) => private_outcome(&columns, &sources, answer, accuracy),
            Err(e) => Outcome::Error(e),
        }
    }

    async fn session_command(
        &self,
        info: &ClientSession,
        command: &Command,
        bound: Bound<'_>,
    ) -> Outcome {
        let session = &info.session;
        let tag = |t: &str| Outcome::Tag(Response::Execution(Tag::new(t)));
        let result = match command {
            Command::Set { name, value } => session
                .lock()
                .unwrap()
                .set(name, value.as_deref(), info.ctx.epsilon_range())
                .map(|_| tag("SET")),
            Command::IgnoredSet => Ok(tag("SET")),
            Command::Reset(name) => {
                session
                    .lock()
                    .unwrap()
                    .reset(name.as_deref(), &info.ctx.config);
                Ok(tag("RESET"))
            }
            Command::Discard => {
                session.lock().unwrap().reset(None, &info.ctx.config);
                Ok(tag("DISCARD ALL"))
            }
            Command::Show(name) => match self.show(info, name).await {
                // A setting dpgate does not keep may be the catalog's.
                Err(e)
                    if e.code == sqlstate::UNDEFINED_OBJECT
                        && self.service().catalog.is_some()
                        && !name.starts_with("dp.") =>
                {
                    Ok(self.browse(info, &format!("SHOW {name}"), bound).await)
                }
                other => other,
            },
            Command::Begin => Ok(Outcome::Tag(Response::TransactionStart(Tag::new("BEGIN")))),
            Command::Commit => Ok(Outcome::Tag(Response::TransactionEnd(Tag::new("COMMIT")))),
            Command::Rollback => Ok(Outcome::Tag(Response::TransactionEnd(Tag::new("ROLLBACK")))),
            Command::Ack(t) => Ok(tag(t)),
            other => Err(Refusal::new(
                "XX000",
                format!(
                    "internal error: {other:?} was routed as a session command and was not run"
                ),
                "report this to the dpgate developers",
            )),
        };
        result.unwrap_or_else(Outcome::Error)
    }

    async fn show(&self, info: &ClientSession, name: &str) -> Result<Outcome, Refusal> {
        let session = &info.session;
        let rows: Vec<(String, String)> = match name {
            "all" => session.lock().unwrap().all(),
            "dp.budget" => {
                let standing = self.service().standing(&info.ctx).await?;
                vec![(name.into(), fmt_eps(standing.remaining().epsilon))]
            }
            _ => vec![(name.to_string(), session.lock().unwrap().show(name)?)],
        };
        let (fields, rows) = if name == "all" {
            (
                vec![("name".into(), Type::TEXT), ("setting".into(), Type::TEXT)],
                rows.into_iter()
                    .map(|(k, v)| vec![Cell::Text(k), Cell::Text(v)])
                    .collect(),
            )
        } else {
            (
                vec![(name.to_string(), Type::TEXT)],
                rows.into_iter().map(|(_, v)| vec![Cell::Text(v)]).collect(),
            )
        };
        Ok(Outcome::Rows {
            fields,
            rows,
            notice: None,
        })
    }
}

/// A SELECT without FROM, evaluated from session state.
fn constant(items: &[SelectItem], info: &ClientSession) -> Outcome {
    match evaluate_constant(items, info) {
        Ok(values) => Outcome::Rows {
            fields: values
                .iter()
                .map(|(n, v)| (n.clone(), constant_type(v)))
                .collect(),
            rows: vec![values.into_iter().map(|(_, v)| v).collect()],
            notice: None,
        },
        Err(e) => Outcome::Error(e),
    }
}

/// `EXPLAIN`: the plan's lines, without running or charging.
fn explain(plan: &Plan, ctx: &Context) -> Outcome {
    Outcome::Rows {
        fields: vec![("QUERY PLAN".into(), Type::TEXT)],
        rows: plan
            .explain_lines(ctx.config.privacy.confidence)
            .into_iter()
            .map(|l| vec![Cell::Text(l)])
            .collect(),
        notice: None,
    }
}
