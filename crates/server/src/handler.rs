//! pgwire glue: each string or prepared statement goes through the front
//! door (`dpgate_sql::route`) once, and each routed statement runs under
//! one [`Context`] (`statement.rs`); this module only adapts pgwire's
//! simple and extended protocols to that and frames the outcomes.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dpgate_service::{Context, Routing, Service};
use dpgate_sql::{Refusal, Routed};
use futures::Sink;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo, Response,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::{ClientInfo, Type, METADATA_DATABASE, METADATA_USER};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;

use crate::session::Session;
use crate::statement::ClientSession;
use crate::wire::{error_info, send_notice, to_response, Fields, Outcome};
use crate::Shared;

/// Handles simple and extended queries for every connection.
pub struct QueryHandler {
    pub(crate) shared: Arc<Shared>,
    parser: Arc<RoutingParser>,
}

/// A statement string routed once, as the extended protocol keeps it
/// from Parse to Describe and Execute.
#[derive(Debug)]
pub struct Parsed {
    /// The string as the client sent it.
    pub(crate) text: String,
    /// Its statements under the config it was routed under (shared with
    /// every other use of the same string by the same user).
    routing: Arc<Routing>,
}

impl Parsed {
    fn new(service: &Service, user: &str, text: &str) -> Parsed {
        let routing = service.route(user, text, &service.config(), service.catalog.is_some());
        Parsed {
            text: text.to_string(),
            routing,
        }
    }

    /// The routed statements under `ctx`'s config: as parsed, or routed
    /// again if a reload came in between (a statement never mixes two
    /// configs).
    fn under(&self, ctx: &Context, service: &Service) -> Result<Arc<[Routed]>, Refusal> {
        if Arc::ptr_eq(&self.routing.config, &ctx.config) {
            return self.routing.routed.clone();
        }
        let catalog = service.catalog.is_some();
        service
            .route(&ctx.user, &self.text, &ctx.config, catalog)
            .routed
            .clone()
    }
}

/// The logged-in user of `client`.
fn user_of(client: &impl ClientInfo) -> &str {
    client
        .metadata()
        .get(METADATA_USER)
        .map_or("", |u| u.as_str())
}

/// pgwire's Parse: routes and prepares the statement once. Refusals are
/// kept and reported at Describe or Execute, as before.
pub struct RoutingParser(Arc<Service>);

#[async_trait]
impl QueryParser for RoutingParser {
    type Statement = Arc<Parsed>;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        Ok(Some(Arc::new(Parsed::new(&self.0, user_of(client), sql))))
    }

    fn get_parameter_types(&self, _stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(vec![])
    }

    fn get_result_schema(
        &self,
        _stmt: &Self::Statement,
        _column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(vec![])
    }
}

/// Parameters and result formats of one execution.
#[derive(Clone, Copy)]
pub(crate) struct Bound<'a> {
    /// The portal of an extended-protocol Execute, if any.
    pub portal: Option<&'a Portal<Arc<Parsed>>>,
    /// Result formats per column.
    pub format: &'a Format,
}

const SIMPLE: Bound<'static> = Bound {
    portal: None,
    format: &Format::UnifiedText,
};

impl QueryHandler {
    /// A handler over the shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        let parser = Arc::new(RoutingParser(shared.service.clone()));
        QueryHandler { shared, parser }
    }

    pub(crate) fn service(&self) -> &Service {
        &self.shared.service
    }

    fn session<C: ClientInfo>(&self, client: &C) -> Arc<Mutex<Session>> {
        let config = self.shared.config();
        client
            .session_extensions()
            .get_or_insert_with(|| Mutex::new(Session::new(&config)))
    }

    /// One statement's context and what constants and the catalog may read
    /// about this connection, taken once when the statement starts.
    pub(crate) fn client_session<C: ClientInfo>(&self, client: &C) -> ClientSession {
        let meta = |key| client.metadata().get(key).cloned().unwrap_or_default();
        let session = self.session(client);
        let ask = session.lock().unwrap().ask();
        let ctx =
            self.service()
                .context(&meta(METADATA_USER), &client.socket_addr().to_string(), ask);
        ClientSession {
            database: meta(METADATA_DATABASE),
            session,
            ctx,
        }
    }

    /// Runs every statement of `parsed` in order, stopping at the first error.
    async fn execute<C: ClientInfo>(
        &self,
        client: &C,
        parsed: &Parsed,
        bound: Bound<'_>,
    ) -> Vec<Outcome> {
        let first = self.client_session(client);
        let mut statements = match parsed.under(&first.ctx, self.service()) {
            Ok(s) => s,
            Err(e) => {
                // Unreadable text is refused and recorded like any other
                // refusal (the entry keeps at most the text's start).
                let entry = first.ctx.entry(&parsed.text);
                return vec![Outcome::Error(self.service().refused(entry, e).await)];
            }
        };
        if bound.portal.is_some() && statements.len() > 1 {
            return vec![Outcome::Error(several_prepared())];
        }
        let mut routed_under = first.ctx.config.clone();
        let mut out = Vec::with_capacity(statements.len());
        let mut info = Some(first);
        for i in 0..statements.len() {
            // Each statement takes its own snapshot (a SET before it counts).
            let info = info.take().unwrap_or_else(|| self.client_session(client));
            // A reload between two statements of one string: the rest are
            // routed again under the config they run under, so no
            // statement mixes two configs.
            if !Arc::ptr_eq(&routed_under, &info.ctx.config) {
                match parsed.under(&info.ctx, self.service()) {
                    Ok(again) if again.len() == statements.len() => statements = again,
                    Ok(_) => {
                        out.push(Outcome::Error(changed_by_reload()));
                        break;
                    }
                    Err(e) => {
                        out.push(Outcome::Error(e));
                        break;
                    }
                }
                routed_under = info.ctx.config.clone();
            }
            let outcome = self.run(&info, &statements[i], bound).await;
            let failed = matches!(outcome, Outcome::Error(_));
            out.push(outcome);
            if failed {
                break;
            }
        }
        out
    }

    /// Parameter types and result columns of a statement, without running it.
    async fn describe(
        &self,
        client: &impl ClientInfo,
        parsed: &Parsed,
        declared: &[Option<Type>],
    ) -> Result<(Vec<Type>, Fields), Refusal> {
        let info = self.client_session(client);
        let statements = parsed.under(&info.ctx, self.service())?;
        if statements.len() != 1 {
            return Ok((vec![], vec![]));
        }
        self.describe_one(&info, &statements[0], declared).await
    }
}

fn changed_by_reload() -> Refusal {
    Refusal::new(
        dpgate_sql::sqlstate::INVALID_PARAMETER_VALUE,
        "proxy.toml was reloaded while these statements ran, and they no longer split the same way",
        "send the remaining statements again",
    )
}

fn several_prepared() -> Refusal {
    Refusal::unsupported(
        "several statements cannot be sent in one prepared statement",
        "prepare one statement at a time",
    )
}

fn user_error(e: &Refusal) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e, "ERROR")))
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
        let parsed = Parsed::new(self.service(), user_of(client), query);
        let outcomes = self.execute(client, &parsed, SIMPLE).await;
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
    type Statement = Arc<Parsed>;
    type QueryParser = RoutingParser;

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
        let bound = Bound {
            portal: Some(portal),
            format: &portal.result_column_format,
        };
        let parsed = portal.statement.statement.clone();
        let Some(outcome) = self.execute(client, &parsed, bound).await.pop() else {
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
            .map_err(|e| user_error(&e))?;
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
            .map_err(|e| user_error(&e))?;
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
