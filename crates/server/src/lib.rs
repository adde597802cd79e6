//! dpgate's PostgreSQL-facing shell: accepts connections, authenticates
//! users from proxy.toml with SCRAM-SHA-256, keeps session settings, and
//! drives each private query through plan → charge → backend → release.

mod audit;
mod auth;
mod connection;
mod explain;
mod handler;
mod private;
mod repeat;
mod report;
mod session;
mod wire;

use std::sync::{Arc, RwLock};

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
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub use auth::UserStore;
pub use connection::decoding_client_message;

/// State shared by every connection.
pub struct Shared {
    /// The validated proxy.toml; replaced whole on reload.
    config: RwLock<Arc<Config>>,
    /// Verifiers of the configured users; replaced with the config.
    users: RwLock<Arc<UserStore>>,
    /// The budget ledger and audit log.
    pub ledger: Arc<Ledger>,
    /// The database behind dpgate.
    pub backend: Backend,
    /// The shadow catalog answering schema queries, if available.
    pub catalog: Option<dpgate_catalog::Catalog>,
}

impl Shared {
    /// Shared state over a validated config.
    pub fn new(
        config: Config,
        ledger: Arc<Ledger>,
        backend: Backend,
        catalog: Option<dpgate_catalog::Catalog>,
    ) -> Result<Shared, String> {
        let users = UserStore::new(&config)?;
        Ok(Shared {
            config: RwLock::new(Arc::new(config)),
            users: RwLock::new(Arc::new(users)),
            ledger,
            backend,
            catalog,
        })
    }

    /// The config in force now. A statement keeps the one it started with.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn users(&self) -> Arc<UserStore> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies a reloaded config to new statements and logins: users,
    /// budgets, tables and privacy settings. Connections stay open and
    /// spent budget stays in the ledger. Settings that need a restart
    /// (listen address, backend, ledger, TLS, limits) keep their running
    /// values; the returned list names those that changed.
    pub async fn reload(&self, mut config: Config) -> Result<Vec<&'static str>, String> {
        let users = UserStore::new(&config)?;
        let old = self.config();
        let mut restart = Vec::new();
        if old.listen != config.listen {
            restart.push("server.listen");
        }
        if old.backend.store != config.backend.store
            || old.backend.pool_size != config.backend.pool_size
            || old.backend.statement_timeout_ms != config.backend.statement_timeout_ms
        {
            restart.push("backend");
            // Plans must keep the dialect of the backend that runs them.
            config.backend = old.backend.clone();
        }
        // New or changed CSV sources are loaded before any plan reads them.
        self.backend
            .refresh(&config.tables)
            .await
            .map_err(|e| e.to_string())?;
        if old.ledger != config.ledger {
            restart.push("ledger");
        }
        if old.catalog != config.catalog {
            restart.push("catalog.*");
        }
        if format!("{:?}", old.server) != format!("{:?}", config.server) {
            restart.push("server");
        }
        if let Some(catalog) = &self.catalog {
            if let Err(e) = catalog.sync(&config, &self.backend).await {
                tracing::warn!("the catalog could not follow the reload: {e}");
            }
        }
        // Config first: a user removed by this reload is refused at once,
        // and a user added by it can log in a moment later.
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(users);
        Ok(restart)
    }
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

/// Serves connections on `listener` until `shutdown` resolves; then stops
/// accepting, lets running statements finish (up to the configured grace),
/// and closes idle connections with a notice.
pub async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let server = shared.config().server.clone();
    let mut parameters = DefaultServerParameterProvider::default();
    parameters.server_version = SERVER_VERSION.to_string();
    parameters.is_superuser = false;
    parameters.default_transaction_read_only = true;
    let connections = Arc::new(ConnectionManager::new());
    let startup = SASLAuthStartupHandler::new(Arc::new(parameters))
        .with_scram(ScramAuth::new(Arc::new(auth::ScramSource(shared.clone()))))
        .with_connection_manager(connections.clone());
    let handlers = Arc::new(Handlers {
        query: Arc::new(handler::QueryHandler::new(shared)),
        startup: Arc::new(startup),
        cancel: Arc::new(DefaultCancelHandler::new(connections)),
    });
    let limits = Arc::new(connection::Limits {
        idle_timeout: server.idle_timeout,
        tls: server
            .tls
            .as_ref()
            .map(connection::tls_acceptor)
            .transpose()?,
        slots: Arc::new(Semaphore::new(server.max_connections)),
    });
    let max_pending = connection::max_pending_logins(server.max_connections);
    let pending_logins = Arc::new(Semaphore::new(max_pending));
    let (stop, stopped) = watch::channel(false);
    let mut running = JoinSet::new();
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
                let admission = match pending_logins.clone().try_acquire_owned() {
                    Ok(permit) => connection::Admission::Serve(permit),
                    Err(_) => {
                        tracing::warn!(%peer, max = max_pending, "connection refused: too many clients logging in");
                        connection::Admission::TooMany
                    }
                };
                let (handlers, limits, stopped) = (handlers.clone(), limits.clone(), stopped.clone());
                running.spawn(async move {
                    if let Err(e) = connection::serve_connection(socket, handlers, limits, admission, stopped).await {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                });
                // Reap finished connections so the set stays small.
                while running.try_join_next().is_some() {}
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop.send(true);
    tracing::info!(
        connections = running.len(),
        grace_s = server.shutdown_grace.as_secs(),
        "stopped accepting; waiting for running statements"
    );
    let drained = tokio::time::timeout(server.shutdown_grace, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = running.len(),
            "grace period over; closing the remaining connections"
        );
        running.shutdown().await;
    }
    Ok(())
}
