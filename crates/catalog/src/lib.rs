//! The shadow catalog. Clients browse schemas with PostgreSQL's own
//! catalog queries (psql's `\d`, JDBC's `DatabaseMetaData`,
//! `information_schema`), which are too many and too varied to emulate.
//! dpgate keeps a separate database holding one *empty* table per table
//! declared in proxy.toml, with the declared columns and types, and sends
//! catalog queries there: PostgreSQL answers them exactly, and since no
//! row of data exists in that database, no answer can depend on the data.
//! What the shadow server could still reveal about the real one (activity,
//! sizes, statistics views) is refused before the query is sent
//! (`dpgate_sql::catalog`).

mod forward;
mod params;
mod shadow;

use dpgate_backend::{Backend, Pool};
use dpgate_config::Config;

pub use forward::{CatalogRows, Described, Param};

/// Catalog failures. Errors from the shadow database carry PostgreSQL's
/// own SQLSTATE and message, which reveal nothing about the data.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The shadow database could not be reached or created.
    #[error("catalog database unavailable: {0}")]
    Unavailable(String),
    /// The shadow database holds tables dpgate did not create.
    #[error("{0}")]
    NotShadow(String),
    /// PostgreSQL refused the catalog query.
    #[error("{message}")]
    Query {
        /// SQLSTATE.
        code: String,
        /// PostgreSQL's message.
        message: String,
        /// PostgreSQL's hint, if any.
        hint: Option<String>,
    },
    /// A parameter could not be passed on.
    #[error("{0}")]
    Parameter(String),
}

impl From<tokio_postgres::Error> for CatalogError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => CatalogError::Query {
                code: db.code().code().to_string(),
                message: db.message().to_string(),
                hint: db.hint().map(str::to_string),
            },
            None => CatalogError::Unavailable(db_message(&e)),
        }
    }
}

/// The shadow catalog database and its connections.
pub struct Catalog {
    pool: Pool,
    statement_timeout_ms: u64,
}

impl Catalog {
    /// Connects to the catalog database (`[catalog] url`, or a database
    /// named `<backend database>_dpgate_catalog` on the backend's server),
    /// creates it if missing, and mirrors `config`'s tables into it.
    pub async fn open(config: &Config, backend: &Backend) -> Result<Catalog, CatalogError> {
        let target = shadow::target(config, backend)?;
        let setup =
            "SET default_transaction_read_only = on; SET standard_conforming_strings = on; SET application_name = 'dpgate catalog'";
        let pool = match Pool::connect(target.clone(), setup, 4).await {
            Ok(pool) => pool,
            Err(e) if is_missing_database(&e) => {
                shadow::create_database(&target).await?;
                Pool::connect(target, setup, 4).await?
            }
            Err(e) => return Err(CatalogError::Unavailable(db_message(&e))),
        };
        let catalog = Catalog {
            pool,
            statement_timeout_ms: config.backend.statement_timeout_ms.min(10_000),
        };
        catalog.sync(config, backend).await?;
        Ok(catalog)
    }

    /// Makes the shadow tables match `config` exactly: drops what is no
    /// longer declared and creates what is, with comments that show each
    /// table's privacy unit and each column's bounds.
    pub async fn sync(&self, config: &Config, backend: &Backend) -> Result<(), CatalogError> {
        let client = self.pool.get().await?;
        shadow::sync(&client, config, backend).await
    }
}

/// PostgreSQL's own message for a database error, else the error's text.
pub(crate) fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

fn is_missing_database(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|d| d.code() == &tokio_postgres::error::SqlState::INVALID_CATALOG_NAME)
}
