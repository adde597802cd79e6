//! The shadow catalog. Clients browse schemas with PostgreSQL's own
//! catalog queries (psql's `\d`, JDBC's `DatabaseMetaData`,
//! `information_schema`), which are too many and too varied to emulate.
//! dpgate runs its own PostgreSQL cluster (`cluster`), holding one
//! database with one *empty* table per table declared in proxy.toml
//! (`shadow`), and sends catalog queries there as an unprivileged role,
//! read-only and rolled back (`forward`): PostgreSQL answers them exactly,
//! and since that server holds no row of data and nothing of anyone else,
//! no answer — whatever the query reads — can depend on the data.

mod cluster;
mod forward;
mod params;
mod shadow;
mod synthetic;

use dpgate_backend::{Backend, Pool};
use dpgate_config::Config;
use tokio_postgres::NoTls;

pub use cluster::Cluster;

pub use forward::{CatalogRows, Database, Described, Param};

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

/// The shadow catalog: its private cluster and the reader's connections.
pub struct Catalog {
    pool: Pool,
    cluster: Cluster,
    statement_timeout_ms: u64,
    /// The reader's connections to the synthetic database.
    synthetic: Pool,
    /// Which fit each table's synthetic rows were loaded from.
    loaded: tokio::sync::Mutex<std::collections::HashMap<(String, String), String>>,
}

impl Catalog {
    /// Starts the private cluster, creates the shadow database, the
    /// synthetic database and the unprivileged reader role, and mirrors
    /// `config`'s tables into the shadow database.
    pub async fn open(config: &Config, backend: &dyn Backend) -> Result<Catalog, CatalogError> {
        let bin_dir = config.catalog.bin_dir.clone();
        let cluster = tokio::task::spawn_blocking(move || Cluster::start(bin_dir.as_deref()))
            .await
            .map_err(|e| CatalogError::Unavailable(e.to_string()))??;
        let admin = connect(&cluster.config(cluster::ADMIN_ROLE, "postgres")).await?;
        // The reader may log in to the shadow and synthetic databases
        // only, can never write (not even temporary tables, which pooled
        // sessions would carry from one analyst to the next), cannot
        // signal other sessions, and gets the catalog's short statement
        // timeout. The cluster tracks no activity, so pg_stat_activity
        // shows no one's SQL.
        // CREATE DATABASE cannot share a batch (an implicit transaction).
        for db in [cluster::DATABASE, cluster::SYNTHETIC_DATABASE] {
            admin
                .batch_execute(&format!("CREATE DATABASE {db} TEMPLATE template0"))
                .await?;
        }
        admin
            .batch_execute(&format!(
                "CREATE ROLE {reader} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION CONNECTION LIMIT 16; \
                 REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC; \
                 REVOKE TEMPORARY ON DATABASE {db}, {synthetic} FROM PUBLIC; \
                 REVOKE EXECUTE ON FUNCTION pg_catalog.pg_cancel_backend(integer), \
                   pg_catalog.pg_terminate_backend(integer, bigint) FROM PUBLIC; \
                 ALTER ROLE {reader} SET default_transaction_read_only = on; \
                 ALTER ROLE {reader} SET statement_timeout = '5s'; \
                 ALTER ROLE {reader} SET standard_conforming_strings = on",
                db = cluster::DATABASE,
                synthetic = cluster::SYNTHETIC_DATABASE,
                reader = cluster::READER_ROLE
            ))
            .await?;
        for db in [cluster::DATABASE, cluster::SYNTHETIC_DATABASE] {
            connect(&cluster.config(cluster::ADMIN_ROLE, db))
                .await?
                .batch_execute(REVOKE_LASTING_FUNCTIONS)
                .await?;
        }
        // Quoting in `forward` relies on standard_conforming_strings; set
        // per session as well as on the role, so no role setting decides it.
        let setup = "SET application_name = 'dpgate catalog'; SET standard_conforming_strings = on";
        let reader = |db: &'static str| {
            Pool::connect(
                dpgate_backend::tls::Outbound::plain(cluster.config(cluster::READER_ROLE, db)),
                setup,
                4,
            )
        };
        let unavailable = |e: tokio_postgres::Error| CatalogError::Unavailable(db_message(&e));
        let pool = reader(cluster::DATABASE).await.map_err(unavailable)?;
        let synthetic = reader(cluster::SYNTHETIC_DATABASE)
            .await
            .map_err(unavailable)?;
        let catalog = Catalog {
            pool,
            synthetic,
            loaded: Default::default(),
            cluster,
            statement_timeout_ms: config.backend.statement_timeout_ms.min(5_000),
        };
        catalog.sync(config, backend).await?;
        Ok(catalog)
    }

    /// Makes the shadow tables match `config` exactly: drops what is no
    /// longer declared and creates what is, with comments that show each
    /// table's privacy unit and each column's bounds.
    pub async fn sync(&self, config: &Config, backend: &dyn Backend) -> Result<(), CatalogError> {
        let admin = connect(&self.cluster.config(cluster::ADMIN_ROLE, cluster::DATABASE)).await?;
        shadow::sync(&admin, config, backend).await
    }
}

/// Functions whose effects outlive the rolled-back transaction, or
/// reach other sessions, are not the reader's: advisory locks (held by a
/// pooled session, they could block the next analyst and the sync), large
/// objects, notifications, signals and statistics resets. Nor are the XML
/// functions that run SQL given as a string (query_to_xml, table_to_xml,
/// cursor_to_xml, schema_to_xml, database_to_xml and their schema
/// variants): dpgate cannot see the tables such a string names. A
/// privilege holds however the call is spelled.
const REVOKE_LASTING_FUNCTIONS: &str = r"DO $$ DECLARE f regprocedure; BEGIN
                   FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
                     JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                     WHERE n.nspname = 'pg_catalog' AND (
                       p.proname LIKE 'pg\_advisory%' OR p.proname LIKE 'pg\_try\_advisory%'
                       OR p.proname LIKE 'lo\_%' OR p.proname LIKE 'pg\_stat\_reset%'
                       OR p.proname LIKE '%\_to\_xml%'
                       OR p.proname IN ('pg_notify', 'pg_cancel_backend', 'pg_terminate_backend',
                                        'pg_log_backend_memory_contexts', 'pg_create_restore_point'))
                   LOOP EXECUTE pg_catalog.format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
                   END LOOP; END $$";

/// One connection as the cluster's administrator (for setup and syncs).
async fn connect(config: &tokio_postgres::Config) -> Result<tokio_postgres::Client, CatalogError> {
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| CatalogError::Unavailable(db_message(&e)))?;
    tokio::spawn(connection);
    Ok(client)
}

/// PostgreSQL's own message for a database error, else the error's text.
pub(crate) fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}
