//! The database behind dpgate: PostgreSQL, an embedded SQLite file into
//! which CSV sources are loaded at start, or (with the `spark` feature)
//! Apache Spark through Spark Connect. Connections are read-only,
//! carry a statement timeout, and are pooled; the only thing asked of them
//! is the planned query, whose rows of group keys and integer
//! measurements come back.

pub mod csv;
pub mod plain;
pub mod pool;
pub mod postgres;
#[cfg(feature = "spark")]
pub mod spark;
pub mod sqlite;
pub mod tls;

use dpgate_config::{BackendStore, Config};
use dpgate_sql::{Dialect, GroupSink, Plan, RawGroup};

pub use pool::{Pool, Pooled};
pub use postgres::PgBackend;
pub use sqlite::SqliteBackend;

/// A column's type as the backend's catalog declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnType {
    /// Its PostgreSQL name (`bigint`, `text`, `character varying(20)`):
    /// what the shadow catalog shows clients.
    pub name: String,
    /// What the backend's `=` on this column holds equal, where that is
    /// not byte (or numeric) equality of the type `name` says: a
    /// collation other than the default (PostgreSQL `collation ci`,
    /// SQLite `collation NOCASE`, Spark `collation UTF8_LCASE`), or
    /// [`dpgate_config::UNKNOWN_EQUALITY`] where the backend cannot tell
    /// (an SQLite view's column: it may be an expression or a UNION whose
    /// arms compare differently; SQLite's `ANY`, whose affinity depends on
    /// the table). `None`: plain equality.
    pub equality: Option<String>,
}

impl ColumnType {
    /// A type compared by plain equality.
    pub fn plain(name: impl Into<String>) -> ColumnType {
        ColumnType {
            name: name.into(),
            equality: None,
        }
    }
}

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

/// What the backend is asked to run: a planned query that returns one
/// row per group, `keys` key columns as text then `measurements` integer
/// measurements rendered as text (so that no cast can fail in the backend).
#[derive(Clone, Copy, Debug)]
pub struct BackendQuery<'a> {
    /// The SQL, in the backend's dialect.
    pub sql: &'a str,
    /// Key columns before the measurements.
    pub keys: usize,
    /// Measured values after the keys.
    pub measurements: usize,
}

impl<'a> BackendQuery<'a> {
    /// The backend query of `plan`.
    pub fn of(plan: &'a Plan) -> BackendQuery<'a> {
        BackendQuery {
            sql: &plan.backend_sql,
            keys: plan.grouping.key_count(),
            measurements: plan.release.raw_len(),
        }
    }
}

/// The database dpgate reads. A new engine is a new implementation of
/// this trait (and a [`Dialect`] its plans are written in); nothing else
/// in dpgate matches on which engine runs.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// The dialect planned queries must be written in.
    fn dialect(&self) -> Dialect;

    /// Loads sources of `tables` that are new or changed since they were
    /// loaded (engines without sources of their own do nothing).
    /// Queries keep running.
    async fn refresh(&self, _tables: &[dpgate_config::Table]) -> Result<(), BackendError> {
        Ok(())
    }

    /// The type of `column` of `table` as the backend's catalog declares
    /// it (metadata only, never data): for privacy unit columns, which
    /// proxy.toml leaves untyped, and for the check that joins on the
    /// unit compare like with like.
    async fn column_type(&self, table: &dpgate_config::Table, column: &str) -> Option<ColumnType>;

    /// Runs `query`, handing each row to `sink` as it is read (so a
    /// bounded sink keeps memory bounded however many groups the data
    /// holds); once the sink breaks, the rest of the rows are not kept. If
    /// the returned future is dropped (the analyst cancelled), the query
    /// is stopped too.
    async fn fetch_into(
        &self,
        query: BackendQuery<'_>,
        sink: &mut (dyn GroupSink + Send),
    ) -> Result<(), BackendError>;

    /// Whether the schema proves `column` of `table` unique and never NULL
    /// (a one-column primary key, or a one-column unique index without a
    /// predicate on a NOT NULL column): catalog metadata only, never data.
    async fn unit_is_unique(&self, _table: &dpgate_config::Table, _column: &str) -> bool {
        false
    }

    /// Whether `table` holds stored rows that every read within one
    /// statement returns alike (a table, not a view, whose rows could
    /// differ between two reads of one query, e.g. through `random()`
    /// or TABLESAMPLE): catalog metadata only, never data. Row sampling
    /// reads such a table more than once per query
    /// ([`dpgate_config::Table::stored`]).
    async fn is_stored(&self, _table: &dpgate_config::Table) -> bool {
        false
    }

    /// The PostgreSQL backend, next to which the shadow catalog can live.
    fn postgres(&self) -> Option<&PgBackend> {
        None
    }

    /// Runs `plan`'s backend query and returns every row.
    async fn fetch(&self, plan: &Plan) -> Result<Vec<RawGroup>, BackendError> {
        let mut rows = Vec::new();
        self.fetch_into(BackendQuery::of(plan), &mut rows).await?;
        Ok(rows)
    }
}

/// Opens the backend `config` names. For SQLite, CSV sources are loaded
/// first (with progress lines on the log for large files).
pub async fn connect(config: &Config) -> Result<std::sync::Arc<dyn Backend>, BackendError> {
    Ok(match &config.backend.store {
        BackendStore::Postgres(url) => {
            std::sync::Arc::new(PgBackend::connect(url, &config.backend).await?)
        }
        BackendStore::Sqlite(path) => {
            std::sync::Arc::new(SqliteBackend::open(path, &config.tables, &config.backend).await?)
        }
        #[cfg(feature = "spark")]
        BackendStore::Spark(url) => {
            std::sync::Arc::new(spark::SparkBackend::connect(url, &config.backend).await?)
        }
        #[cfg(not(feature = "spark"))]
        BackendStore::Spark(_) => {
            return Err(BackendError::Connect(
                "this dpgate was built without Spark support; build it with `cargo build --release --features spark` (needs protoc: apt-get install protobuf-compiler libprotobuf-dev)".into(),
            ))
        }
    })
}

/// What the backend's schema says that planning needs, at start and on
/// every reload: [`confirm_unique_units`], and each private table's unit
/// type ([`dpgate_config::Table::unit_type`]) and how it is compared
/// ([`dpgate_config::Table::unit_equality`]).
pub async fn read_schema(config: &mut Config, backend: &dyn Backend) {
    confirm_unique_units(config, backend).await;
    for table in &mut config.tables {
        if let dpgate_config::TablePrivacy::Private {
            privacy_unit: Some(unit),
            ..
        } = &table.privacy
        {
            let unit = unit.clone();
            table.stored = backend.is_stored(table).await;
            let read = backend.column_type(table, &unit).await;
            (table.unit_type, table.unit_equality) = match read {
                Some(t) => (Some(t.name), t.equality),
                None => (None, Some(dpgate_config::UNKNOWN_EQUALITY.into())),
            };
            if table.unit_equality.as_deref() == Some(dpgate_config::UNGROUPABLE_EQUALITY) {
                tracing::warn!(
                    "{}: the backend cannot group reliably by the privacy unit column {unit} ({}): it can neither group nor sort by it, or hashes apart values its collation calls equal; every private query on this table is refused. Declare a privacy unit of a comparable type (text, an integer, uuid), e.g. through a view that casts it",
                    table.qualified_name(),
                    table.unit_type.as_deref().unwrap_or("unknown type")
                );
            }
            if table.unit_equality.as_deref() == Some(dpgate_config::UNKNOWN_EQUALITY) {
                tracing::warn!(
                    "{}: the backend does not say how it compares the privacy unit column {unit} (its type could not be read, or it is an SQLite view's or ANY column); joins of this table with other private tables are refused",
                    table.qualified_name()
                );
            }
        }
    }
}

/// Keeps `privacy_unit_unique` only where the backend's schema proves the
/// unit unique and NOT NULL: a table read without a bounding step must
/// really have one row per unit, and a declaration alone (unlike a
/// declared bound, which the backend query enforces) enforces nothing.
/// Elsewhere the table is bounded as `max_rows_per_unit = 1` (the same
/// answers when the declaration holds), with a warning that says why.
pub async fn confirm_unique_units(config: &mut Config, backend: &dyn Backend) {
    for table in &mut config.tables {
        let name = table.qualified_name();
        let proven = match &table.privacy {
            dpgate_config::TablePrivacy::Private {
                privacy_unit: Some(unit),
                unique_unit: true,
                ..
            } => backend.unit_is_unique(table, unit).await,
            _ => continue,
        };
        if let dpgate_config::TablePrivacy::Private {
            privacy_unit: Some(unit),
            unique_unit,
            ..
        } = &mut table.privacy
        {
            if !proven {
                tracing::warn!(
                    "{name}: privacy_unit_unique is set, but the backend has no primary key or unique index on {unit} (NOT NULL) to prove it; the table is bounded as max_rows_per_unit = 1 instead. Add the constraint to skip the bounding step"
                );
                *unique_unit = false;
            }
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
