//! The query path of one connection: classify each statement and send it
//! where it belongs — session state, the shadow catalog, or the private
//! path (plan → charge → backend → release).

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dpgate_catalog::Param;
use dpgate_sql::catalog::{
    is_catalog_query, prepare_catalog_sql, split_statements, unparsed_catalog_candidate,
};
use dpgate_sql::constant::{evaluate_constant, Constant, SessionInfo};
use dpgate_sql::params::{bind_parameters, parameter_types, ParamValue};
use dpgate_sql::{classify, plan, sqlstate, Command, Plan, Refusal};
use futures::Sink;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo, Response, Tag,
};
use pgwire::api::stmt::{NoopQueryParser, StoredStatement};
use pgwire::api::{ClientInfo, Type, METADATA_DATABASE, METADATA_USER};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use crate::audit::{settle, Who};
use crate::report::{add_interval_columns, fmt_eps, Accuracy};
use crate::session::Session;
use crate::wire::{
    constant_type, error_info, output_type, pg_type, send_notice, to_response, Fields, Outcome,
};
use crate::Shared;

/// Handles simple and extended queries for every connection.
pub struct QueryHandler {
    pub(crate) shared: Arc<Shared>,
    parser: Arc<NoopQueryParser>,
}

/// Parameters and result formats of one execution.
#[derive(Clone, Copy)]
struct Bound<'a> {
    /// The portal of an extended-protocol Execute, if any.
    portal: Option<&'a Portal<String>>,
    /// Result formats per column.
    format: &'a Format,
}

const SIMPLE: Bound<'static> = Bound {
    portal: None,
    format: &Format::UnifiedText,
};

impl QueryHandler {
    /// A handler over the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        QueryHandler {
            shared,
            parser: Arc::new(NoopQueryParser::new()),
        }
    }

    fn session<C: ClientInfo>(&self, client: &C) -> Arc<Mutex<Session>> {
        let config = self.shared.config();
        client
            .session_extensions()
            .get_or_insert_with(|| Mutex::new(Session::new(&config)))
    }

    /// What constant SELECTs and catalog queries may read about this connection.
    fn client_session<C: ClientInfo>(&self, client: &C) -> ClientSession {
        let meta = |key| client.metadata().get(key).cloned().unwrap_or_default();
        let user = meta(METADATA_USER);
        let epsilon_range = self.epsilon_range(&user);
        ClientSession {
            who: Who {
                user,
                client: client.socket_addr().to_string(),
            },
            database: meta(METADATA_DATABASE),
            session: self.session(client),
            epsilon_range,
        }
    }

    /// The smallest and largest ε one query of `user` may spend, from the
    /// config in force now (a reload that lowers the maximum applies to
    /// sessions that set a higher ε before it).
    pub(crate) fn epsilon_range(&self, user: &str) -> (f64, f64) {
        let config = self.shared.config();
        let max = config.user(user).map_or(0.0, |u| u.max_epsilon_per_query);
        (config.privacy.min_epsilon_per_query, max)
    }

    /// Runs every statement of `sql` in order, stopping at the first error.
    async fn execute<C: ClientInfo>(
        &self,
        client: &C,
        sql: &str,
        bound: Bound<'_>,
    ) -> Vec<Outcome> {
        let commands = match classify(sql) {
            Ok(c) => c,
            Err(e) if e.code != sqlstate::STATEMENT_TOO_COMPLEX && self.catalog_can_take(sql) => {
                tracing::debug!(error = %e.message, "unparsed statement sent to the catalog");
                return vec![self.browse(client, sql, bound).await];
            }
            Err(e) => return vec![Outcome::Error(e)],
        };
        if bound.portal.is_some() && commands.len() > 1 {
            return vec![Outcome::Error(Refusal::unsupported(
                "several statements cannot be sent in one prepared statement",
                "prepare one statement at a time",
            ))];
        }
        // Each statement's own text, for the ledger and the catalog; a
        // single statement is the whole string and needs no split.
        let texts = match commands.len() {
            1 => vec![sql.to_string()],
            _ => split_statements(sql),
        };
        let aligned = texts.len() == commands.len();
        let mut out = Vec::with_capacity(commands.len());
        for (i, command) in commands.into_iter().enumerate() {
            let text = if aligned { texts[i].as_str() } else { sql };
            let outcome = self.execute_one(client, command, text, bound).await;
            let failed = matches!(outcome, Outcome::Error(_));
            out.push(outcome);
            if failed {
                break;
            }
        }
        out
    }

    fn catalog_can_take(&self, sql: &str) -> bool {
        self.shared.catalog.is_some() && unparsed_catalog_candidate(sql, &self.shared.config())
    }

    /// Runs one statement and leaves its audit entry.
    async fn execute_one<C: ClientInfo>(
        &self,
        client: &C,
        command: Command,
        sql: &str,
        bound: Bound<'_>,
    ) -> Outcome {
        let info = self.client_session(client);
        let config = self.shared.config();
        let mut entry = info.who.entry(sql);
        let command = match command {
            // The private path records its own entries, inside the charge.
            Command::Private(query) if !is_catalog_query(&query, &config) => {
                return match self.private_plan(&info, *query, bound) {
                    Ok(plan) => {
                        let accuracy = info.session.lock().unwrap().accuracy();
                        self.answer(&info.who, plan, sql, accuracy).await
                    }
                    Err(e) => {
                        let outcome = Outcome::Error(e);
                        settle(&mut entry, &outcome);
                        self.shared.ledger.record(entry).await;
                        outcome
                    }
                };
            }
            other => other,
        };
        let outcome = self.run_public(client, &info, command, sql, bound).await;
        settle(&mut entry, &outcome);
        self.shared.ledger.record(entry).await;
        outcome
    }

    /// Everything but a private query: session commands, constants,
    /// EXPLAIN and catalog queries.
    async fn run_public<C: ClientInfo>(
        &self,
        client: &C,
        info: &ClientSession,
        command: Command,
        sql: &str,
        bound: Bound<'_>,
    ) -> Outcome {
        let session = info.session.clone();
        let config = self.shared.config();
        let tag = |t: &str| Ok(Outcome::Tag(Response::Execution(Tag::new(t))));
        let result: Result<Outcome, Refusal> = match command {
            Command::Set { name, value } => session
                .lock()
                .unwrap()
                .set(&name, value.as_deref(), info.epsilon_range)
                .and_then(|_| tag("SET")),
            Command::IgnoredSet => tag("SET"),
            Command::Reset(name) => {
                session.lock().unwrap().reset(name.as_deref(), &config);
                tag("RESET")
            }
            Command::Discard => {
                session.lock().unwrap().reset(None, &config);
                tag("DISCARD ALL")
            }
            Command::Show(name) => match self.show(&session, &info.who.user, &name).await {
                Err(e)
                    if e.code == sqlstate::UNDEFINED_OBJECT
                        && self.shared.catalog.is_some()
                        && !name.starts_with("dp.") =>
                {
                    Ok(self.browse(client, &format!("SHOW {name}"), bound).await)
                }
                other => other,
            },
            Command::Begin => Ok(Outcome::Tag(Response::TransactionStart(Tag::new("BEGIN")))),
            Command::Commit => Ok(Outcome::Tag(Response::TransactionEnd(Tag::new("COMMIT")))),
            Command::Rollback => Ok(Outcome::Tag(Response::TransactionEnd(Tag::new("ROLLBACK")))),
            Command::Ack(t) => tag(t),
            Command::Constant(items) => match evaluate_constant(&items, info) {
                Err(e)
                    if e.code == sqlstate::FEATURE_NOT_SUPPORTED
                        && self.shared.catalog.is_some() =>
                {
                    Ok(self.browse(client, sql, bound).await)
                }
                result => result.map(|values| Outcome::Rows {
                    fields: values
                        .iter()
                        .map(|(n, v)| (n.clone(), constant_type(v)))
                        .collect(),
                    rows: vec![values.into_iter().map(|(_, v)| v).collect()],
                    notice: None,
                }),
            },
            Command::Explain(query) | Command::Private(query)
                if is_catalog_query(&query, &config) =>
            {
                Ok(self.browse(client, sql, bound).await)
            }
            Command::Explain(query) => self
                .private_plan(info, *query, bound)
                .map(|plan| self.explain(&plan)),
            // execute_one sends these to the private path; never answer one here.
            Command::Private(_) => Err(Refusal::new(
                "XX000",
                "internal error: a private query was routed as a public one and was not run",
                "report this to the dpgate developers",
            )),
        };
        result.unwrap_or_else(Outcome::Error)
    }

    /// Binds the execution's parameters into `query` and plans it at the
    /// session's ε, which must lie in the user's range under the config in
    /// force now.
    fn private_plan(
        &self,
        info: &ClientSession,
        mut query: dpgate_sql::ast::Query,
        bound: Bound<'_>,
    ) -> Result<Plan, Refusal> {
        let values = match bound.portal {
            Some(portal) => {
                let types = self.private_parameter_types(&query, &portal.statement.parameter_types);
                decode_params(portal, &types)?
            }
            None => Vec::new(),
        };
        bind_parameters(&mut query, &values)?;
        let epsilon = info.session.lock().unwrap().epsilon();
        check_epsilon(epsilon, self.epsilon_range(&info.who.user))?;
        plan(&query, &self.shared.config(), epsilon)
    }

    /// Sends a catalog query to the shadow catalog.
    async fn browse<C: ClientInfo>(&self, client: &C, sql: &str, bound: Bound<'_>) -> Outcome {
        let Some(catalog) = &self.shared.catalog else {
            return Outcome::Error(catalog_off());
        };
        let info = self.client_session(client);
        let sql = match prepare_catalog_sql(sql, &info) {
            Ok(s) => s,
            Err(e) => return Outcome::Error(e),
        };
        let params: Vec<Param> = bound
            .portal
            .map(|p| {
                p.parameters
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Param {
                        binary: p.parameter_format.is_binary(i),
                        value: v.as_ref().map(|b| b.to_vec()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let declared = bound
            .portal
            .map(|p| p.statement.parameter_types.clone())
            .unwrap_or_default();
        let search_path = info.session.lock().unwrap().search_path();
        let binary = |i: usize| bound.format.is_binary(i);
        match catalog
            .query(&sql, &declared, &params, &binary, &search_path)
            .await
        {
            Ok(rows) if rows.columns.is_empty() => {
                Outcome::Tag(Response::Execution(Tag::new(&rows.tag)))
            }
            Ok(rows) => Outcome::Encoded {
                fields: rows.columns,
                rows: rows.rows,
            },
            Err(e) => Outcome::Error(catalog_refusal(e)),
        }
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
                let standing = self.standing(user).await?;
                vec![(name.into(), fmt_eps(standing.remaining().epsilon))]
            }
            _ => vec![(name.to_string(), session.lock().unwrap().show(name)?)],
        };
        let (fields, rows) = if name == "all" {
            (
                vec![("name".into(), Type::TEXT), ("setting".into(), Type::TEXT)],
                rows.into_iter()
                    .map(|(k, v)| vec![Constant::Text(k), Constant::Text(v)])
                    .collect(),
            )
        } else {
            (
                vec![(name.to_string(), Type::TEXT)],
                rows.into_iter()
                    .map(|(_, v)| vec![Constant::Text(v)])
                    .collect(),
            )
        };
        Ok(Outcome::Rows {
            fields,
            rows,
            notice: None,
        })
    }

    /// Parameter types of a private statement: what the client declared,
    /// else inferred from the compared column, else text.
    fn private_parameter_types(
        &self,
        query: &dpgate_sql::ast::Query,
        declared: &[Option<Type>],
    ) -> Vec<Type> {
        parameter_types(query, &self.shared.config())
            .iter()
            .enumerate()
            .map(|(i, t)| {
                declared_type(declared, i).unwrap_or_else(|| t.map(pg_type).unwrap_or(Type::TEXT))
            })
            .collect()
    }

    /// Parameter types and result columns of a statement, without running it.
    async fn describe(
        &self,
        client: &impl ClientInfo,
        sql: &str,
        declared: &[Option<Type>],
    ) -> Result<(Vec<Type>, Fields), Refusal> {
        let mut commands = match classify(sql) {
            Ok(c) => c,
            Err(e) if e.code != sqlstate::STATEMENT_TOO_COMPLEX && self.catalog_can_take(sql) => {
                return self.describe_catalog(client, sql, declared).await
            }
            Err(e) => return Err(e),
        };
        if commands.len() != 1 {
            return Ok((vec![], vec![]));
        }
        let config = &self.shared.config();
        match commands.remove(0) {
            Command::Private(query) | Command::Explain(query)
                if is_catalog_query(&query, config) =>
            {
                self.describe_catalog(client, sql, declared).await
            }
            Command::Private(mut query) => {
                let types = self.private_parameter_types(&query, declared);
                bind_parameters(&mut query, &vec![ParamValue::Null; types.len()])?;
                let session = self.session(client);
                let (epsilon, accuracy) = {
                    let s = session.lock().unwrap();
                    (s.epsilon(), s.accuracy())
                };
                let plan = plan(&query, config, epsilon)?;
                let mut fields: Fields = plan
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), output_type(c.ty)))
                    .collect();
                if accuracy == Accuracy::Columns {
                    add_interval_columns(&plan, &mut fields, &mut [], &[]);
                }
                Ok((types, fields))
            }
            Command::Explain(query) => Ok((
                self.private_parameter_types(&query, declared),
                vec![("QUERY PLAN".into(), Type::TEXT)],
            )),
            Command::Constant(items) => {
                let info = self.client_session(client);
                match evaluate_constant(&items, &info) {
                    Ok(values) => Ok((
                        vec![],
                        values
                            .iter()
                            .map(|(n, v)| (n.clone(), constant_type(v)))
                            .collect(),
                    )),
                    Err(e)
                        if e.code == sqlstate::FEATURE_NOT_SUPPORTED
                            && self.shared.catalog.is_some() =>
                    {
                        self.describe_catalog(client, sql, declared).await
                    }
                    Err(e) => Err(e),
                }
            }
            Command::Show(name) if name == "all" => Ok((
                vec![],
                vec![("name".into(), Type::TEXT), ("setting".into(), Type::TEXT)],
            )),
            Command::Show(name) => Ok((vec![], vec![(name, Type::TEXT)])),
            _ => Ok((vec![], vec![])),
        }
    }

    async fn describe_catalog(
        &self,
        client: &impl ClientInfo,
        sql: &str,
        declared: &[Option<Type>],
    ) -> Result<(Vec<Type>, Fields), Refusal> {
        let catalog = self.shared.catalog.as_ref().ok_or_else(catalog_off)?;
        let info = self.client_session(client);
        let sql = prepare_catalog_sql(sql, &info)?;
        let search_path = info.session.lock().unwrap().search_path();
        let d = catalog
            .describe(&sql, declared, &search_path)
            .await
            .map_err(catalog_refusal)?;
        Ok((d.params, d.columns))
    }
}

fn catalog_off() -> Refusal {
    Refusal::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "catalog browsing is off: dpgate could not start its catalog cluster (see its log) or catalog.enabled is false",
        "the data owner can install PostgreSQL's server binaries (Debian: apt install postgresql) or set catalog.bin_dir in proxy.toml; `dpgate check` lists the declared tables and columns",
    )
}

fn catalog_refusal(e: dpgate_catalog::CatalogError) -> Refusal {
    match e {
        dpgate_catalog::CatalogError::Query {
            code,
            message,
            hint,
        } => Refusal::new(code, message, hint.unwrap_or_default()),
        other => {
            tracing::warn!(error = %other, "catalog query failed");
            Refusal::new(
                "58000",
                format!("the catalog query failed: {other}"),
                "retry; if it keeps failing, the data owner should check the catalog database",
            )
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

/// Decodes bound parameters by their declared or inferred types.
fn decode_params(portal: &Portal<String>, inferred: &[Type]) -> Result<Vec<ParamValue>, Refusal> {
    let bad = |e: PgWireError| {
        Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("a parameter could not be read: {e}"),
            "bind values of the parameter types the statement describes",
        )
    };
    (0..portal.parameter_len())
        .map(|i| {
            let ty = declared_type(&portal.statement.parameter_types, i)
                .or_else(|| inferred.get(i).cloned())
                .unwrap_or(Type::TEXT);
            let v = match ty {
                Type::INT2 => portal
                    .parameter::<i16>(i, &ty)
                    .map(|v| v.map(|v| ParamValue::Int(v.into()))),
                Type::INT4 => portal
                    .parameter::<i32>(i, &ty)
                    .map(|v| v.map(|v| ParamValue::Int(v.into()))),
                Type::INT8 => portal
                    .parameter::<i64>(i, &ty)
                    .map(|v| v.map(ParamValue::Int)),
                Type::FLOAT4 => portal
                    .parameter::<f32>(i, &ty)
                    .map(|v| v.map(|v| ParamValue::Float(v.into()))),
                Type::FLOAT8 => portal
                    .parameter::<f64>(i, &ty)
                    .map(|v| v.map(ParamValue::Float)),
                Type::BOOL => portal
                    .parameter::<bool>(i, &ty)
                    .map(|v| v.map(ParamValue::Bool)),
                _ => portal
                    .parameter::<String>(i, &Type::TEXT)
                    .map(|v| v.map(ParamValue::Text)),
            };
            Ok(v.map_err(bad)?.unwrap_or(ParamValue::Null))
        })
        .collect()
}

/// Refuses a session ε outside the user's current range (a reload may have
/// lowered the maximum since the session set it).
pub(crate) fn check_epsilon(epsilon: f64, (min, max): (f64, f64)) -> Result<(), Refusal> {
    if epsilon >= min && epsilon <= max {
        return Ok(());
    }
    Err(Refusal::new(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!("this session's dp.epsilon {epsilon} is outside the range one query may spend now, [{min}, {max}]; nothing was charged"),
        format!("SET dp.epsilon to a value in [{min}, {max}], or RESET dp.epsilon"),
    ))
}

struct ClientSession {
    who: Who,
    database: String,
    session: Arc<Mutex<Session>>,
    epsilon_range: (f64, f64),
}

impl SessionInfo for ClientSession {
    fn user(&self) -> String {
        self.who.user.clone()
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
            .set(name, Some(value), self.epsilon_range)
    }
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
        let outcomes = self.execute(client, query, SIMPLE).await;
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
        let bound = Bound {
            portal: Some(portal),
            format: &portal.result_column_format,
        };
        let Some(outcome) = self.execute(client, sql, bound).await.pop() else {
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
            .await
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
            .await
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
