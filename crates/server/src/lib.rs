//! dpgate's PostgreSQL-facing shell: accepts connections, authenticates
//! users from proxy.toml with SCRAM-SHA-256, keeps session settings, and
//! drives each private query through plan → charge → backend → release.

mod auth;
mod handler;
mod private;
mod session;
mod wire;

use std::sync::Arc;

use dpgate_backend::Backend;
use dpgate_config::Config;
use dpgate_ledger::Ledger;
use dpgate_sql::constant::SERVER_VERSION;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ConnectionManager, PgWireServerHandlers};
use tokio::net::TcpListener;

pub use auth::UserStore;

/// State shared by every connection.
pub struct Shared {
    /// The validated proxy.toml.
    pub config: Arc<Config>,
    /// The budget ledger.
    pub ledger: Arc<Ledger>,
    /// The database behind dpgate.
    pub backend: Backend,
    /// The shadow catalog answering schema queries, if available.
    pub catalog: Option<dpgate_catalog::Catalog>,
}

struct Handlers {
    query: Arc<handler::QueryHandler>,
    startup: Arc<SASLAuthStartupHandler<DefaultServerParameterProvider>>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.query.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.query.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancel.clone()
    }
}

/// Serves connections on `listener` until `shutdown` resolves.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let users = Arc::new(UserStore::new(&shared.config).map_err(std::io::Error::other)?);
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = SERVER_VERSION.to_string();
    parameters.is_superuser = false;
    parameters.default_transaction_read_only = true;
    let connections = Arc::new(ConnectionManager::new());
    let startup = SASLAuthStartupHandler::new(Arc::new(parameters))
        .with_scram(ScramAuth::new(Arc::new(auth::ScramSource(users))))
        .with_connection_manager(connections.clone());
    let handlers = Arc::new(Handlers {
        query: Arc::new(handler::QueryHandler::new(shared)),
        startup: Arc::new(startup),
        cancel: Arc::new(DefaultCancelHandler::new(connections)),
    });
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        continue;
                    }
                };
                tracing::debug!(%peer, "connection");
                let handlers = handlers.clone();
                tokio::spawn(async move {
                    if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                });
            }
            _ = &mut shutdown => return Ok(()),
        }
    }
}
