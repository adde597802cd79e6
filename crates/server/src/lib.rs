//! dpgate's PostgreSQL-facing shell: accepts connections, authenticates
//! users from proxy.toml with SCRAM-SHA-256, keeps session settings, and
//! drives each private query through plan → charge → backend → release.

mod audit;
mod auth;
mod browse;
pub use browse::catalog_refusal;
mod connection;
mod describe;
mod handler;
mod named;
mod params;
mod report;
mod session;
mod startup;
mod statement;
mod synthetic;
mod wire;

use std::sync::{Arc, RwLock};

use dpgate_backend::Backend;
use dpgate_config::Config;
use dpgate_ledger::Ledger;
use dpgate_service::Service;
use dpgate_sql::constant::SERVER_VERSION;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use pgwire::api::cancel::{CancelHandler, DefaultCancelHandler};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ConnectionManager, PgWireServerHandlers};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

pub use auth::UserStore;
pub use connection::{
    decoding_client_message, max_pending_logins, tls_server_config, STARTUP_TIMEOUT,
};

/// State shared by every connection: the private-answer service and the
/// users' login verifiers.
pub struct Shared {
    /// Config, ledger, backend and catalog, shared with other front ends.
    pub service: Arc<Service>,
    /// Verifiers of the configured users; replaced with the config.
    users: RwLock<Arc<UserStore>>,
    /// The ledger's secret that SCRAM salts derive from.
    salt_key: [u8; 32],
}

impl Shared {
    /// Shared state over a validated config.
    pub fn new(
        config: Config,
        ledger: Arc<Ledger>,
        backend: Arc<dyn Backend>,
        catalog: Option<dpgate_catalog::Catalog>,
        salt_key: [u8; 32],
    ) -> Result<Shared, String> {
        let users = UserStore::new(&config, salt_key)?;
        Ok(Shared {
            service: Arc::new(Service::new(config, ledger, backend, catalog)),
            users: RwLock::new(Arc::new(users)),
            salt_key,
        })
    }

    /// The config in force now. A statement keeps the one it started with.
    pub fn config(&self) -> Arc<Config> {
        self.service.config()
    }

    /// The login verifiers in force now (HTTP front ends check against
    /// the same users and secrets as the wire protocol).
    pub fn users(&self) -> Arc<UserStore> {
        self.users.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies a reloaded config to new statements and logins: users,
    /// budgets, tables and privacy settings (see [`Service::reload`]).
    /// Connections stay open and spent budget stays in the ledger; the
    /// returned list names settings that need a restart.
    pub async fn reload(&self, config: Config) -> Result<Vec<&'static str>, String> {
        let users = UserStore::new(&config, self.salt_key)?;
        // Config first: a user removed by this reload is refused at once,
        // and a user added by it can log in a moment later.
        let restart = self.service.reload(config).await?;
        *self.users.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(users);
        Ok(restart)
    }
}

struct Handlers {
    query: Arc<handler::QueryHandler>,
    startup: Arc<startup::ScramStartup>,
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
    let plain = ScramAuth::new(Arc::new(auth::ScramSource(shared.clone())));
    let bound = match &server.tls {
        // SCRAM-SHA-256-PLUS (tls-server-end-point): the proof is bound to
        // this certificate, so a relay that terminates TLS with another
        // certificate cannot pass a login on.
        Some(tls) => {
            let pem = std::fs::read(&tls.cert)?;
            let mut bound = plain.clone();
            bound
                .configure_certificate(&pem)
                .map_err(|e| std::io::Error::other(format!("channel binding: {e}")))?;
            Some(bound)
        }
        None => None,
    };
    let startup = startup::ScramStartup::new(
        Arc::new(parameters),
        plain,
        bound,
        Arc::new(auth::RandomIds),
        connections.clone(),
    );
    let handlers = Arc::new(Handlers {
        query: Arc::new(handler::QueryHandler::new(shared.clone())),
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
        require_tls: server.require_tls,
        max_prepared: server.max_prepared_per_connection,
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
                        // Out of descriptors, say: wait instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                tracing::debug!(%peer, "connection");
                // Answers leave in one coalesced write; Nagle's algorithm
                // would hold a TLS record's tail for the client's ACK.
                if let Err(e) = socket.set_nodelay(true) {
                    tracing::debug!(%peer, "TCP_NODELAY not set: {e}");
                }
                let admission = match pending_logins.clone().try_acquire_owned() {
                    Ok(permit) => connection::Admission::Serve(permit),
                    Err(_) => {
                        tracing::warn!(%peer, max = max_pending, "connection refused: too many clients logging in");
                        connection::Admission::TooMany
                    }
                };
                let (handlers, limits, stopped) = (handlers.clone(), limits.clone(), stopped.clone());
                let service = shared.service.clone();
                running.spawn(async move {
                    let _open = service.metrics.open(dpgate_service::metrics::FrontEnd::Wire);
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
