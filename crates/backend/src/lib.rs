//! The database behind dpgate: PostgreSQL, or an embedded SQLite file
//! into which CSV sources are loaded at start. Connections are read-only,
//! carry a statement timeout, and are pooled; the only thing asked of them
//! is the planned query, whose rows of group keys and integer
//! measurements come back.

pub mod csv;
pub mod pool;
pub mod postgres;
pub mod sqlite;

use dpgate_config::{BackendStore, Config};
use dpgate_sql::{Dialect, GroupSink, Plan, RawGroup};

pub use pool::{Pool, Pooled};
pub use postgres::PgBackend;
pub use sqlite::SqliteBackend;

/// Backend failures. Callers must not forward the detail to analysts
/// once a charge was made (it may depend on data); they log it.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Connecting (or opening the SQLite file) failed.
    #[error("cannot connect to the backend: {0}")]
    Connect(String),
    /// Loading a CSV source failed; nothing of it was kept.
    #[error("{0}")]
    Load(String),
    /// The query failed.
    #[error("backend query failed: {0}")]
    Query(String),
    /// The query returned something other than one row of integers.
    #[error("backend returned an unexpected result: {0}")]
    Shape(String),
    /// The query did not finish within the statement timeout.
    #[error("backend query timed out")]
    Timeout,
}

/// The database dpgate reads.
pub enum Backend {
    /// PostgreSQL through a pool of read-only connections (boxed: the
    /// pool's settings are large, and there is one backend per process).
    Postgres(Box<PgBackend>),
    /// An embedded SQLite file, read-only once CSV sources are loaded.
    Sqlite(SqliteBackend),
}

impl Backend {
    /// Opens the backend `config` names. For SQLite, CSV sources are
    /// loaded first (with progress lines on the log for large files).
    pub async fn connect(config: &Config) -> Result<Backend, BackendError> {
        match &config.backend.store {
            BackendStore::Postgres(url) => Ok(Backend::Postgres(Box::new(
                PgBackend::connect(url, &config.backend).await?,
            ))),
            BackendStore::Sqlite(path) => Ok(Backend::Sqlite(
                SqliteBackend::open(path, &config.tables, &config.backend).await?,
            )),
        }
    }

    /// Loads CSV sources of `tables` that are new or changed since they
    /// were loaded (SQLite; PostgreSQL has none). Queries keep running.
    pub async fn refresh(&self, tables: &[dpgate_config::Table]) -> Result<(), BackendError> {
        match self {
            Backend::Postgres(_) => Ok(()),
            Backend::Sqlite(lite) => lite.load(tables).await,
        }
    }

    /// The dialect planned queries must be written in.
    pub fn dialect(&self) -> Dialect {
        match self {
            Backend::Postgres(_) => Dialect::Postgres,
            Backend::Sqlite(_) => Dialect::Sqlite,
        }
    }

    /// The PostgreSQL backend, next to which the shadow catalog can live.
    pub fn postgres(&self) -> Option<&PgBackend> {
        match self {
            Backend::Postgres(pg) => Some(pg),
            Backend::Sqlite(_) => None,
        }
    }

    /// The PostgreSQL type name of `column` of `table` (catalog metadata
    /// only, never data), for privacy unit columns proxy.toml leaves untyped.
    pub async fn column_type(&self, schema: &str, table: &str, column: &str) -> Option<String> {
        match self {
            Backend::Postgres(pg) => pg.column_type(schema, table, column).await,
            Backend::Sqlite(lite) => lite.column_type(table, column).await,
        }
    }

    /// Runs `plan`'s backend query, which returns one row per group: the
    /// key columns as text, then the integer measurements rendered as
    /// text (so that no cast can fail in the backend). If the returned
    /// future is dropped (the analyst cancelled), the query is stopped too.
    pub async fn fetch(&self, plan: &Plan) -> Result<Vec<RawGroup>, BackendError> {
        self.fetch_into(plan, Vec::new()).await
    }

    /// [`Self::fetch`], handing each row to `sink` as it is read (so a
    /// bounded sink keeps memory bounded however many groups the data
    /// holds); once the sink breaks, the rest of the rows are not kept.
    pub async fn fetch_into<S: GroupSink + Send + 'static>(
        &self,
        plan: &Plan,
        sink: S,
    ) -> Result<S, BackendError> {
        let (sql, keys, count) = (
            plan.backend_sql.as_str(),
            plan.grouping.key_count(),
            plan.release.raw_len(),
        );
        match self {
            Backend::Postgres(pg) => pg.fetch_groups(sql, keys, count, sink).await,
            Backend::Sqlite(lite) => lite.fetch_groups(sql, keys, count, sink).await,
        }
    }
}

/// A row of `keys` key texts then measurement texts (`None` is NULL);
/// only the keys are copied.
pub(crate) fn parse_row<S: AsRef<str>>(
    cells: impl IntoIterator<Item = Option<S>>,
    keys: usize,
) -> Result<RawGroup, BackendError> {
    let mut cells = cells.into_iter();
    let key_cells = cells
        .by_ref()
        .take(keys)
        .map(|k| k.map(|k| k.as_ref().to_string()))
        .collect();
    let values = cells
        .map(|v| parse_measurement(v.as_ref().map_or("0", |v| v.as_ref())))
        .collect::<Result<_, _>>()?;
    Ok(RawGroup {
        keys: key_cells,
        values,
    })
}

/// Parses an integer measurement rendered as text (bigint, numeric or
/// float8 text), saturating at the i64 range: a saturated value only
/// means the clamped sum is beyond any useful noise scale.
pub fn parse_measurement(text: &str) -> Result<i64, BackendError> {
    let text = text.trim();
    if let Ok(v) = text.parse::<i64>() {
        return Ok(v);
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_nan() => Ok(0),
        Ok(f) => Ok(f.round().clamp(i64::MIN as f64, i64::MAX as f64) as i64),
        Err(_) => Err(BackendError::Shape(format!("not a number: {text:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_measurement;

    #[test]
    fn measurements_parse_and_saturate() {
        assert_eq!(parse_measurement("42").unwrap(), 42);
        assert_eq!(parse_measurement("-7").unwrap(), -7);
        assert_eq!(
            parse_measurement("123456789012345678901234567890").unwrap(),
            i64::MAX
        );
        assert_eq!(parse_measurement("1.5e+20").unwrap(), i64::MAX);
        assert_eq!(parse_measurement("-1e30").unwrap(), i64::MIN);
        assert_eq!(parse_measurement("12.0").unwrap(), 12);
        assert!(parse_measurement("x").is_err());
    }
}
