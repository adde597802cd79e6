//! The embedded SQLite backend: CSV sources are loaded into the file at
//! start, then queries run on a pool of read-only connections in
//! blocking threads, interrupted at the statement timeout or when the
//! analyst cancels.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dpgate_config::Table;
use dpgate_sql::dialect::SQLITE_FUNCTIONS;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, InterruptHandle, OpenFlags};
use tokio::sync::Semaphore;

use dpgate_sql::{Dialect, GroupSink};

use crate::{parse_row, Backend, BackendError, BackendQuery};

/// Read-only connections to one SQLite file.
pub struct SqliteBackend {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
    permits: Semaphore,
    statement_timeout: Duration,
}

impl SqliteBackend {
    /// Loads the CSV sources of `tables` into `path` (created if missing),
    /// then opens up to `pool_size` read-only connections.
    pub async fn open(
        path: &Path,
        tables: &[Table],
        config: &dpgate_config::Backend,
    ) -> Result<SqliteBackend, BackendError> {
        let backend = SqliteBackend {
            path: path.to_path_buf(),
            idle: Arc::new(Mutex::new(Vec::new())),
            permits: Semaphore::new(config.pool_size.max(1)),
            statement_timeout: Duration::from_millis(config.statement_timeout_ms),
        };
        backend.load(tables).await?;
        let first = open_read_only(path)?;
        backend.idle.lock().unwrap().push(first);
        Ok(backend)
    }

    /// Loads the CSV sources of `tables` that changed since their last load.
    pub async fn load(&self, tables: &[Table]) -> Result<(), BackendError> {
        let path = self.path.clone();
        let sources: Vec<Table> = tables.iter().filter(|t| t.csv.is_some()).cloned().collect();
        tokio::task::spawn_blocking(move || crate::csv::load_sources(&path, &sources))
            .await
            .map_err(|e| BackendError::Load(format!("the CSV loader stopped: {e}")))?
    }

    /// The SQLite type declared for `column` of `table`, under its
    /// PostgreSQL name, with its collation: schema metadata only. A
    /// view's column compares in a way SQLite does not report (it may be
    /// an expression, or a UNION whose arms convert values differently,
    /// and SQLite describes only the last arm): unknown.
    pub async fn column_type(&self, table: &str, column: &str) -> Option<crate::ColumnType> {
        let (table, column) = (table.to_string(), column.to_string());
        self.with_connection(move |conn| {
            if let Some((declared, collation)) = declared_column(conn, &table, &column) {
                return Some(column_type_of(&declared, Some(&collation)));
            }
            // No metadata: a view's column, or no such column.
            let declared: String = conn
                .query_row(
                    "SELECT type FROM pragma_table_info(?1) WHERE name = ?2 COLLATE NOCASE",
                    [&table, &column],
                    |row| row.get(0),
                )
                .ok()?;
            Some(crate::ColumnType {
                name: column_type_of(&declared, None).name,
                equality: Some(dpgate_config::UNKNOWN_EQUALITY.into()),
            })
        })
        .await
        .ok()
        .flatten()
    }

    /// [`crate::Backend::fetch_into`] on SQLite. The query runs in a
    /// blocking thread and hands rows over a bounded channel to `sink`
    /// here; it is interrupted at the statement timeout and when the
    /// returned future is dropped, and stops reading once the sink breaks.
    async fn fetch_groups(
        &self,
        query: BackendQuery<'_>,
        sink: &mut (dyn GroupSink + Send),
    ) -> Result<(), BackendError> {
        let sql = query.sql.to_string();
        let keys = query.keys;
        let width = keys + query.measurements;
        let timeout = self.statement_timeout;
        let (rows_out, mut rows_in) = tokio::sync::mpsc::channel(ROWS_IN_FLIGHT);
        let read = self.with_connection(move |conn| {
            // Kept compiled on this connection (the most recent 16): a
            // repeated query skips SQLite's parsing and planning.
            let mut stmt = conn
                .prepare_cached(&sql)
                .map_err(|e| BackendError::Query(e.to_string()))?;
            if stmt.column_count() != width {
                return Err(BackendError::Shape(format!(
                    "{} columns instead of {width}",
                    stmt.column_count()
                )));
            }
            let mut rows = stmt
                .query([])
                .map_err(|e| BackendError::Query(e.to_string()))?;
            while let Some(row) = rows.next().map_err(|e| query_error(e, timeout))? {
                let cells = (0..width)
                    .map(|i| row.get_ref(i).map(text_of))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| BackendError::Shape(e.to_string()))?;
                // The receiver is gone once the sink broke: stop reading.
                if rows_out.blocking_send(parse_row(cells, keys)?).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let take = async move {
            while let Some(group) = rows_in.recv().await {
                if sink.push(group).is_break() {
                    break;
                }
            }
        };
        let (read, ()) = tokio::join!(read, take);
        read?
    }

    /// Runs `f` on a pooled connection in a blocking thread, interrupting
    /// it at the statement timeout or if this future is dropped.
    async fn with_connection<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> T + Send + 'static,
    ) -> Result<T, BackendError> {
        let _permit = self.permits.acquire().await.expect("never closed");
        let pooled = self.idle.lock().unwrap().pop();
        let conn = match pooled {
            Some(c) => c,
            None => open_read_only(&self.path)?,
        };
        let mut interrupt = InterruptOnDrop(Some(conn.get_interrupt_handle()));
        let idle = self.idle.clone();
        let work = tokio::task::spawn_blocking(move || {
            let out = f(&conn);
            idle.lock().unwrap().push(conn);
            out
        });
        let out = match tokio::time::timeout(self.statement_timeout, work).await {
            Ok(joined) => joined.map_err(|e| BackendError::Query(e.to_string()))?,
            Err(_) => return Err(BackendError::Timeout),
        };
        interrupt.0 = None;
        Ok(out)
    }
}

/// Rows read ahead of the sink: bounds memory while the blocking reader
/// and the sink run side by side.
const ROWS_IN_FLIGHT: usize = 256;

#[async_trait::async_trait]
impl Backend for SqliteBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }

    async fn refresh(&self, tables: &[Table]) -> Result<(), BackendError> {
        self.load(tables).await
    }

    async fn column_type(&self, table: &Table, column: &str) -> Option<crate::ColumnType> {
        SqliteBackend::column_type(self, &table.name, column).await
    }

    async fn is_stored(&self, table: &dpgate_config::Table) -> bool {
        let name = table.name.clone();
        // A table, not a view nor a virtual table (whose module decides
        // what each read returns).
        self.with_connection(move |conn| {
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1 COLLATE NOCASE \
                 AND sql NOT LIKE 'CREATE VIRTUAL%')",
                [&name],
                |row| row.get::<_, bool>(0),
            )
            .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }

    async fn unit_is_unique(&self, table: &dpgate_config::Table, column: &str) -> bool {
        let (table, column) = (table.name.clone(), column.to_string());
        self.with_connection(move |conn| {
            // A one-column unique index without a predicate on a NOT NULL
            // column that compares as the column does (the same
            // collation: a BINARY index lets 'Bob' and 'bob' be two rows
            // of a NOCASE column, one person to its `=`), or an INTEGER
            // PRIMARY KEY that is the rowid (never NULL; `INTEGER PRIMARY
            // KEY DESC` and WITHOUT ROWID tables have a separate 'pk'
            // index instead, and may hold NULLs).
            let Some((_, collation)) = declared_column(conn, &table, &column) else {
                return false;
            };
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM pragma_index_list(?1) AS l \
                   WHERE l.\"unique\" = 1 AND l.partial = 0 \
                   AND (SELECT COUNT(*) FROM pragma_index_info(l.name)) = 1 \
                   AND (SELECT name FROM pragma_index_info(l.name)) = ?2 COLLATE NOCASE \
                   AND (SELECT coll FROM pragma_index_xinfo(l.name) WHERE key = 1) = ?3 COLLATE NOCASE \
                   AND EXISTS (SELECT 1 FROM pragma_table_info(?1) AS t \
                     WHERE t.name = ?2 COLLATE NOCASE AND t.\"notnull\" = 1)) \
                 OR (EXISTS (SELECT 1 FROM pragma_table_info(?1) AS t \
                     WHERE t.name = ?2 COLLATE NOCASE AND t.pk = 1 AND upper(t.type) = 'INTEGER') \
                   AND (SELECT COUNT(*) FROM pragma_table_info(?1) AS t WHERE t.pk > 0) = 1 \
                   AND NOT EXISTS (SELECT 1 FROM pragma_index_list(?1) AS l WHERE l.origin = 'pk'))",
                [&table, &column, &collation],
                |row| row.get::<_, bool>(0),
            )
            .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    }

    async fn fetch_into(
        &self,
        query: BackendQuery<'_>,
        sink: &mut (dyn GroupSink + Send),
    ) -> Result<(), BackendError> {
        self.fetch_groups(query, sink).await
    }
}

/// Interrupts the running statement unless disarmed: a dropped or timed
/// out query would otherwise keep its thread busy to the end.
struct InterruptOnDrop(Option<InterruptHandle>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            tracing::info!("interrupting the SQLite query");
            handle.interrupt();
        }
    }
}

fn query_error(e: rusqlite::Error, timeout: Duration) -> BackendError {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == rusqlite::ErrorCode::OperationInterrupted =>
        {
            tracing::debug!("SQLite query interrupted after at most {timeout:?}");
            BackendError::Timeout
        }
        other => BackendError::Query(other.to_string()),
    }
}

/// A read-only connection with the functions the SQLite dialect uses.
fn open_read_only(path: &Path) -> Result<Connection, BackendError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| BackendError::Connect(format!("{}: {e}", path.display())))?;
    conn.execute_batch("PRAGMA query_only = ON")
        .and_then(|()| register_functions(&conn))
        .and_then(|()| crate::plain::register_plain_aggregates(&conn))
        .map_err(|e| BackendError::Connect(format!("{}: {e}", path.display())))?;
    Ok(conn)
}

/// The functions [`SQLITE_FUNCTIONS`] names, with PostgreSQL's meaning.
/// Each is total: a non-number gives NULL, never an error. (`round` with
/// two arguments stays SQLite's own.)
pub fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    for name in SQLITE_FUNCTIONS {
        let f: fn(f64) -> f64 = match name {
            "floor" => f64::floor,
            "ceil" | "ceiling" => f64::ceil,
            "trunc" => f64::trunc,
            "sqrt" => f64::sqrt,
            "sign" => |x: f64| if x == 0.0 { 0.0 } else { x.signum() },
            "round" => f64::round_ties_even,
            other => unreachable!("no implementation of {other}"),
        };
        conn.create_scalar_function(name, 1, flags, move |ctx: &Context<'_>| {
            Ok(match ctx.get_raw(0) {
                // An integer stays an integer (sign(int), floor(int)).
                ValueRef::Integer(i) => Value::Integer(f(i as f64) as i64),
                ValueRef::Real(x) => match f(x) {
                    y if y.is_nan() => Value::Null,
                    y => Value::Real(y),
                },
                _ => Value::Null,
            })
        })?;
    }
    for (name, away) in [("round", true), ("trunc", false)] {
        conn.create_scalar_function(name, 2, flags, move |ctx: &Context<'_>| {
            let digits = match ctx.get_raw(1) {
                ValueRef::Integer(d) => d.clamp(-300, 300) as i32,
                _ => return Ok(Value::Null),
            };
            Ok(match ctx.get_raw(0) {
                ValueRef::Integer(i) => Value::Real(decimal_round(i as f64, digits, away)),
                ValueRef::Real(x) if x.is_finite() => Value::Real(decimal_round(x, digits, away)),
                _ => Value::Null,
            })
        })?;
    }
    Ok(())
}

/// PostgreSQL's `round(x::numeric, digits)::float8` (ties away from zero)
/// or `trunc`: float8 becomes numeric with 15 significant digits, which
/// are then rounded or cut at `digits` after the point.
fn decimal_round(x: f64, digits: i32, away: bool) -> f64 {
    if x == 0.0 {
        return x;
    }
    // "d.dddddddddddddde±x": 15 significant digits and the exponent.
    let text = format!("{:.14e}", x.abs());
    let (mantissa, exponent) = text.split_once('e').expect("exponent");
    let exponent: i32 = exponent.parse().expect("integer exponent");
    let mut digits_of: Vec<u8> = mantissa
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    // Digits kept: those before the point (exponent + 1) and `digits` after.
    let keep = exponent + 1 + digits;
    if keep < 0 {
        return 0.0;
    }
    let keep = keep as usize;
    if keep >= digits_of.len() {
        // Nothing to cut within the 15 significant digits (and no digit
        // string long enough to overflow the integer below).
        return text.parse::<f64>().unwrap_or(x.abs()).copysign(x);
    }
    let round_up = away && digits_of.get(keep).is_some_and(|d| *d >= 5);
    digits_of.truncate(keep);
    digits_of.resize(keep, 0);
    // The kept digits as an integer, scaled by 10^(exponent + 1 - keep).
    let mut value: u128 = digits_of.iter().fold(0, |v, d| v * 10 + u128::from(*d));
    if round_up {
        value += 1;
    }
    let scale = exponent + 1 - keep as i32;
    let magnitude: f64 = format!("{value}e{scale}").parse().unwrap_or(f64::NAN);
    magnitude.copysign(x)
}

/// A result cell as text (`None` is NULL), as PostgreSQL would print it.
fn text_of(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(x) => Some(x.to_string()),
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(String::from_utf8_lossy(t).into_owned()),
    }
}

/// The declared type and collation (BINARY unless another is declared)
/// of `column` of the table `table`, from SQLite's schema; `None` for a
/// view (SQLite keeps no such metadata for views) or a missing column.
fn declared_column(conn: &Connection, table: &str, column: &str) -> Option<(String, String)> {
    let (declared, collation, ..) = conn.column_metadata(None, table, column).ok()?;
    let text = |c: Option<&std::ffi::CStr>| c.map(|c| c.to_string_lossy().into_owned());
    Some((
        text(declared).unwrap_or_default(),
        text(collation).unwrap_or_else(|| "BINARY".into()),
    ))
}

/// A declared SQLite column type and collation, by SQLite's affinity
/// rules in their order: INTEGER (`bigint`), TEXT, BLOB (for an empty or
/// BLOB type: shown as `text`), REAL (`double precision`), and NUMERIC
/// for the rest (`NUMERIC`, `DECIMAL`, `BOOLEAN`, `DATE`, `STRING`…:
/// `numeric`). NUMERIC affinity turns text such as `'01'` into the
/// number 1 when compared, so it must not pass for text where unit types
/// are compared. TEXT and BLOB columns compare without converting either
/// side (1 and '1' stay apart), so they share a kind. How an `ANY`
/// column compares depends on its table (no affinity in a STRICT table,
/// NUMERIC elsewhere): unknown. A collation other than BINARY (NOCASE,
/// RTRIM, an application's own) changes which values are equal.
fn column_type_of(declared: &str, collation: Option<&str>) -> crate::ColumnType {
    let d = declared.to_ascii_uppercase();
    let (name, affinity) = if d.trim() == "ANY" {
        ("text", Some(dpgate_config::UNKNOWN_EQUALITY))
    } else if d.contains("INT") {
        ("bigint", None)
    } else if ["CHAR", "CLOB", "TEXT", "BLOB"]
        .iter()
        .any(|t| d.contains(t))
        || d.trim().is_empty()
    {
        ("text", None)
    } else if d.contains("REAL") || d.contains("FLOA") || d.contains("DOUB") {
        ("double precision", None)
    } else {
        ("numeric", None)
    };
    let collation = collation
        .filter(|c| !c.eq_ignore_ascii_case("BINARY"))
        .map(|c| format!("collation {c}"));
    let equality = affinity.map(str::to_string).or(collation);
    crate::ColumnType {
        name: name.into(),
        equality,
    }
}

#[cfg(test)]
mod tests {
    use super::{column_type_of, decimal_round};

    /// Declared types map by SQLite's affinity rules, NUMERIC included;
    /// collations other than BINARY are part of how a column compares,
    /// and ANY compares in a way only its table knows.
    #[test]
    fn declared_types_map_by_affinity() {
        for (declared, collation, name, equality) in [
            ("INTEGER", None, "bigint", None),
            ("BIGINT", Some("BINARY"), "bigint", None),
            ("VARCHAR(20)", None, "text", None),
            ("TEXT", Some("binary"), "text", None),
            ("TEXT", Some("NOCASE"), "text", Some("collation NOCASE")),
            ("", None, "text", None),
            ("BLOB", None, "text", None),
            ("", Some("RTRIM"), "text", Some("collation RTRIM")),
            (
                "ANY",
                Some("NOCASE"),
                "text",
                Some(dpgate_config::UNKNOWN_EQUALITY),
            ),
            ("REAL", None, "double precision", None),
            ("DOUBLE PRECISION", None, "double precision", None),
            ("NUMERIC", None, "numeric", None),
            ("DECIMAL(10,2)", None, "numeric", None),
            ("BOOLEAN", None, "numeric", None),
            ("STRING", None, "numeric", None),
            ("ANY", None, "text", Some(dpgate_config::UNKNOWN_EQUALITY)),
        ] {
            let t = column_type_of(declared, collation);
            assert_eq!(t.name, name, "{declared}");
            assert_eq!(t.equality.as_deref(), equality, "{declared} {collation:?}");
        }
    }

    /// Read from a real file: a table's columns, and a view's, whose
    /// equality is unknown (an expression, or a UNION whose arms
    /// compare differently, may stand behind it).
    #[tokio::test]
    async fn column_types_are_read_from_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("types.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE t (a INTEGER, b TEXT COLLATE NOCASE, c);
                 CREATE VIEW v AS SELECT b, a + 1 AS e FROM t;",
            )
            .unwrap();
        let config = dpgate_config::Backend {
            store: dpgate_config::BackendStore::Sqlite(path.clone()),
            statement_timeout_ms: 1000,
            pool_size: 1,
            allow_privileged_role: false,
        };
        let backend = super::SqliteBackend::open(&path, &[], &config)
            .await
            .unwrap();
        let read = |table: &'static str, column: &'static str| {
            let backend = &backend;
            async move { backend.column_type(table, column).await }
        };
        let plain = crate::ColumnType::plain;
        assert_eq!(read("t", "a").await, Some(plain("bigint")));
        assert_eq!(read("t", "c").await, Some(plain("text")));
        let nocase = crate::ColumnType {
            name: "text".into(),
            equality: Some("collation NOCASE".into()),
        };
        assert_eq!(read("t", "b").await, Some(nocase));
        for column in ["b", "e"] {
            assert_eq!(
                read("v", column).await.and_then(|t| t.equality).as_deref(),
                Some(dpgate_config::UNKNOWN_EQUALITY)
            );
        }
        assert_eq!(read("t", "missing").await, None);
    }

    #[test]
    fn decimal_rounding_matches_postgresql_numeric() {
        // 1234.55 is 1234.5499999… in binary; as numeric it is 1234.55.
        assert_eq!(decimal_round(1234.55, 1, true), 1234.6);
        assert_eq!(decimal_round(-1234.55, 1, true), -1234.6);
        assert_eq!(decimal_round(1234.55, 1, false), 1234.5);
        assert_eq!(decimal_round(2.5, 0, true), 3.0);
        assert_eq!(decimal_round(1250.0, -2, true), 1300.0);
        assert_eq!(decimal_round(1249.0, -2, false), 1200.0);
        assert_eq!(decimal_round(0.004, 2, true), 0.0);
        assert_eq!(decimal_round(0.005, 2, true), 0.01);
        assert_eq!(decimal_round(999.96, 1, true), 1000.0);
        assert_eq!(decimal_round(42.0, -5, true), 0.0);
    }
}
