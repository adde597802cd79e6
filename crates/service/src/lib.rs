//! dpgate's private-answer service, independent of any wire protocol: a
//! statement's [`Context`] (one snapshot of the config, the user and the
//! session's settings), and [`Service::answer`] — a free repeat of a kept
//! release, or charge → backend → release — with the ledger and a
//! [`Backend`] behind it. The pgwire server frames what it returns; the
//! HTTP API and other front ends call the same functions.

mod answer;
mod context;
pub mod kept;
pub mod metrics;
mod refusals;
mod routes;
pub mod synthetic;

use std::sync::{Arc, RwLock};

use dpgate_backend::Backend;
use dpgate_config::Config;
use dpgate_ledger::{AuditEntry, Ledger};
use dpgate_sql::Ask;

pub use answer::{Charged, PrivateAnswer};
pub use context::Context;
pub use refusals::{check_epsilon, failed_after_charge, ledger_failure};
pub use routes::Routing;

/// What every front end shares: the config in force, the ledger, the
/// backend and the shadow catalog.
pub struct Service {
    /// The validated proxy.toml; replaced whole on reload.
    config: RwLock<Arc<Config>>,
    /// The budget ledger and audit log.
    pub ledger: Arc<Ledger>,
    /// The database behind dpgate.
    pub backend: Arc<dyn Backend>,
    /// The shadow catalog answering schema queries, if available.
    pub catalog: Option<dpgate_catalog::Catalog>,
    /// Counters of queries and connections for `GET /metrics`.
    pub metrics: metrics::Metrics,
    /// Synthetic-data fits held by this process.
    fits: synthetic::Fits,
    /// Statement strings already routed.
    routes: routes::Routes,
}

impl Service {
    /// The service over a validated config.
    pub fn new(
        config: Config,
        ledger: Arc<Ledger>,
        backend: Arc<dyn Backend>,
        catalog: Option<dpgate_catalog::Catalog>,
    ) -> Service {
        Service {
            config: RwLock::new(Arc::new(config)),
            ledger,
            backend,
            catalog,
            metrics: metrics::Metrics::default(),
            fits: synthetic::Fits::default(),
            routes: routes::Routes::default(),
        }
    }

    /// The config in force now. A statement takes it once, in its
    /// [`Context`], and keeps it to the end.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A statement's context: the config in force now, `user` at `client`,
    /// asking each query for `ask`.
    pub fn context(&self, user: &str, client: &str, ask: Ask) -> Context {
        Context::new(self.config(), user, client, ask)
    }

    /// `text`, sent by `user`, routed under `config` ([`dpgate_sql::route`],
    /// with the shadow catalog when `catalog`): kept from an earlier use
    /// under the same config, or routed now.
    pub fn route(
        &self,
        user: &str,
        text: &str,
        config: &Arc<Config>,
        catalog: bool,
    ) -> Arc<Routing> {
        self.routes.get(user, text, config, catalog)
    }

    /// Records the audit entry of a statement that spent nothing (batched).
    pub async fn record(&self, entry: AuditEntry) {
        self.ledger.record(entry).await;
    }

    /// Applies a reloaded config to new statements: users, budgets, tables
    /// and privacy settings. Settings that need a restart (listen address,
    /// backend, ledger, TLS, limits) keep their running values; the
    /// returned list names those that changed.
    pub async fn reload(&self, mut config: Config) -> Result<Vec<&'static str>, String> {
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
        dpgate_backend::read_schema(&mut config, self.backend.as_ref()).await;
        if old.ledger != config.ledger {
            restart.push("ledger");
        }
        if old.catalog != config.catalog {
            restart.push("catalog.*");
        }
        if old.server != config.server {
            restart.push("server");
        }
        // The metrics token is read per request; the rest needs a restart.
        let listener = |h: &Option<dpgate_config::Http>| {
            h.clone().map(|h| dpgate_config::Http {
                metrics_token: None,
                ..h
            })
        };
        if listener(&old.http) != listener(&config.http) {
            restart.push("http");
        }
        if let Some(catalog) = &self.catalog {
            if let Err(e) = catalog.sync(&config, self.backend.as_ref()).await {
                tracing::warn!("the catalog could not follow the reload: {e}");
            }
        }
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(restart)
    }
}
