//! Loading CSV sources into the embedded SQLite file.
//!
//! Each table with `csv = "file.csv"` is (re)loaded when the file, its
//! size, its modification time or its declaration changed since the last
//! load; otherwise the loaded table is kept and start is instant. A load
//! runs in one transaction: a file with a bad value leaves the previous
//! table as it was. Values of declared columns are checked against their
//! type (a bad one names its line and column); other columns are kept as
//! text, and analysts cannot name them anyway.

use std::path::Path;
use std::time::{Duration, Instant, UNIX_EPOCH};

use dpgate_config::{parse_bool, quote_ident, ColumnType, Table};
use rusqlite::types::Value;
use rusqlite::{params, Connection, Transaction};

use crate::BackendError;

/// Bookkeeping table of what was loaded from where.
const SOURCES: &str = "_dpgate_sources";

/// Rows between checks of the progress clock.
const PROGRESS_ROWS: u64 = 50_000;

/// Loads every table of `tables` (all with a `csv` source) into `path`.
pub fn load_sources(path: &Path, tables: &[Table]) -> Result<(), BackendError> {
    // The private rows themselves: owner-only (0600).
    match dpgate_config::files::owner_only(path) {
        Ok(Some(warning)) => tracing::warn!("the data file {warning}"),
        Ok(None) => {}
        Err(e) => return Err(BackendError::Connect(format!("{}: {e}", path.display()))),
    }
    let mut conn = Connection::open(path)
        .map_err(|e| BackendError::Connect(format!("{}: {e}", path.display())))?;
    let setup = format!(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         CREATE TABLE IF NOT EXISTS {SOURCES} (table_name TEXT PRIMARY KEY, csv TEXT NOT NULL, \
         size INTEGER NOT NULL, modified_ns INTEGER NOT NULL, declaration TEXT NOT NULL, rows INTEGER NOT NULL)"
    );
    conn.execute_batch(&setup).map_err(|e| storage(path, e))?;
    for table in tables {
        let Some(csv) = &table.csv else { continue };
        let stamp = Stamp::of(csv, table)?;
        let loaded: Option<Stamp> = conn
            .query_row(
                &format!(
                    "SELECT csv, size, modified_ns, declaration FROM {SOURCES} WHERE table_name = ?1"
                ),
                [&table.name],
                |r| {
                    Ok(Stamp {
                        csv: r.get(0)?,
                        size: r.get(1)?,
                        modified_ns: r.get(2)?,
                        declaration: r.get(3)?,
                    })
                },
            )
            .ok();
        if loaded.as_ref() == Some(&stamp) && table_exists(&conn, &table.name) {
            tracing::info!(table = %table.name, "{} is unchanged since it was loaded", csv.display());
            continue;
        }
        let tx = conn.transaction().map_err(|e| storage(path, e))?;
        let rows = load_table(&tx, csv, table, stamp.size)?;
        tx.execute(
            &format!("INSERT OR REPLACE INTO {SOURCES} VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
            params![
                table.name,
                stamp.csv,
                stamp.size,
                stamp.modified_ns,
                stamp.declaration,
                rows as i64
            ],
        )
        .map_err(|e| storage(path, e))?;
        tx.commit().map_err(|e| storage(path, e))?;
    }
    Ok(())
}

/// What a load depended on.
#[derive(Debug, PartialEq)]
struct Stamp {
    csv: String,
    size: i64,
    modified_ns: i64,
    declaration: String,
}

impl Stamp {
    fn of(csv: &Path, table: &Table) -> Result<Stamp, BackendError> {
        let meta = std::fs::metadata(csv).map_err(|e| {
            BackendError::Load(format!(
                "cannot read {} (tables \"{}\" csv): {e}",
                csv.display(),
                table.name
            ))
        })?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as i64);
        let declaration = table
            .columns
            .iter()
            .map(|c| format!("{}:{}", c.name, c.ty.pg_name()))
            .collect::<Vec<_>>()
            .join(",");
        Ok(Stamp {
            csv: csv.display().to_string(),
            size: meta.len() as i64,
            modified_ns,
            declaration,
        })
    }
}

fn table_exists(conn: &Connection, name: &str) -> bool {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .is_ok()
}

/// Replaces `table` with the rows of `csv`; returns the row count.
fn load_table(
    tx: &Transaction<'_>,
    csv: &Path,
    table: &Table,
    size: i64,
) -> Result<u64, BackendError> {
    let fail = |what: String| BackendError::Load(format!("{}: {what}", csv.display()));
    let mut reader = ::csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(csv)
        .map_err(|e| fail(e.to_string()))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| fail(e.to_string()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let types: Vec<Option<ColumnType>> = header
        .iter()
        .map(|h| table.column(h).map(|c| c.ty))
        .collect();
    for column in &table.columns {
        if !header.iter().any(|h| h.eq_ignore_ascii_case(&column.name)) {
            return Err(fail(format!(
                "no column \"{}\", which proxy.toml declares for table \"{}\" (the header has: {}); add it to the file or remove it from proxy.toml",
                column.name,
                table.name,
                header.join(", ")
            )));
        }
    }
    if let dpgate_config::TablePrivacy::Private {
        privacy_unit: Some(unit),
        ..
    } = &table.privacy
    {
        if !header.iter().any(|h| h.eq_ignore_ascii_case(unit)) {
            return Err(fail(format!(
                "no privacy unit column \"{unit}\" (the header has: {}); add it, or name the right column in privacy_unit",
                header.join(", ")
            )));
        }
    }
    let staging = quote_ident(&format!("_dpgate_load_{}", table.name));
    // A unit declared unique is loaded under the constraint, so that the
    // loaded table proves it (see `confirm_unique_units`) and a file that
    // breaks it is refused.
    let unique_unit = match &table.privacy {
        dpgate_config::TablePrivacy::Private {
            privacy_unit: Some(unit),
            unique_unit: true,
            ..
        } => Some(unit.as_str()),
        _ => None,
    };
    let columns: Vec<String> = header
        .iter()
        .zip(&types)
        .map(|(h, ty)| {
            let constraint = match unique_unit {
                Some(u) if u.eq_ignore_ascii_case(h) => " NOT NULL UNIQUE",
                _ => "",
            };
            format!(
                "{} {}{constraint}",
                quote_ident(h),
                ty.map_or("", sqlite_type)
            )
        })
        .collect();
    let db = |e: rusqlite::Error| fail(e.to_string());
    tx.execute_batch(&format!(
        "DROP TABLE IF EXISTS {staging}; CREATE TABLE {staging} ({})",
        columns.join(", ")
    ))
    .map_err(db)?;
    let placeholders = vec!["?"; header.len()].join(", ");
    let mut insert = tx
        .prepare(&format!("INSERT INTO {staging} VALUES ({placeholders})"))
        .map_err(db)?;
    let started = Instant::now();
    let mut reported = started;
    let mut rows = 0u64;
    let mut record = ::csv::StringRecord::new();
    while reader
        .read_record(&mut record)
        .map_err(|e| fail(e.to_string()))?
    {
        let line = record.position().map_or(0, |p| p.line());
        let values = record
            .iter()
            .zip(&types)
            .zip(&header)
            .map(|((text, ty), name)| {
                parse_value(text, *ty).map_err(|why| {
                    fail(format!(
                        "line {line}, column \"{name}\": {why}; fix the value, or declare the column with another type"
                    ))
                })
            })
            .collect::<Result<Vec<Value>, _>>()?;
        insert
            .execute(rusqlite::params_from_iter(values))
            .map_err(|e| match unique_unit {
                Some(unit) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => fail(format!(
                    "line {line}: the privacy unit \"{unit}\" is empty or repeats an earlier line, but privacy_unit_unique = true says each value appears once; fix the file, or remove privacy_unit_unique and set max_rows_per_unit"
                )),
                _ => db(e),
            })?;
        rows += 1;
        if rows.is_multiple_of(PROGRESS_ROWS) && reported.elapsed() >= Duration::from_secs(1) {
            reported = Instant::now();
            let done = reader.position().byte() as f64 / size.max(1) as f64;
            tracing::info!(
                table = %table.name,
                "loading {}: {rows} rows, {:.0}% after {:.1} s",
                csv.display(),
                done * 100.0,
                started.elapsed().as_secs_f64()
            );
        }
    }
    drop(insert);
    let target = quote_ident(&table.name);
    tx.execute_batch(&format!(
        "DROP TABLE IF EXISTS {target}; ALTER TABLE {staging} RENAME TO {target}"
    ))
    .map_err(db)?;
    tracing::info!(
        table = %table.name,
        "loaded {rows} rows from {} in {:.1} s",
        csv.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(rows)
}

fn sqlite_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Int | ColumnType::Bool => "INTEGER",
        ColumnType::Float => "REAL",
        ColumnType::Text | ColumnType::Date | ColumnType::Timestamp => "TEXT",
    }
}

/// One CSV cell as the value stored for a column of type `ty` (`None`:
/// undeclared, kept as text). An empty cell is NULL, as in PostgreSQL's
/// COPY ... CSV (which writes NULL as an empty field).
fn parse_value(text: &str, ty: Option<ColumnType>) -> Result<Value, String> {
    let t = text.trim();
    if text.is_empty() || (t.is_empty() && ty != Some(ColumnType::Text)) {
        return Ok(Value::Null);
    }
    let bad = |what: &str| format!("{text:?} is not {what}");
    Ok(match ty {
        None | Some(ColumnType::Text) => Value::Text(text.to_string()),
        Some(ColumnType::Int) => Value::Integer(t.parse().map_err(|_| bad("an integer"))?),
        Some(ColumnType::Float) => {
            let x: f64 = t.parse().map_err(|_| bad("a number"))?;
            if x.is_nan() {
                Value::Null
            } else {
                Value::Real(x)
            }
        }
        Some(ColumnType::Bool) => match parse_bool(t) {
            Some(b) => Value::Integer(i64::from(b)),
            None => return Err(bad("a boolean (true/false)")),
        },
        Some(ColumnType::Date) => Value::Text(date(t).ok_or_else(|| bad("a date (YYYY-MM-DD)"))?),
        Some(ColumnType::Timestamp) => {
            Value::Text(timestamp(t).ok_or_else(|| bad("a timestamp (YYYY-MM-DD HH:MM:SS)"))?)
        }
    })
}

/// `YYYY-MM-DD`, checked.
fn date(t: &str) -> Option<String> {
    let b = t.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    let ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && digits(0..4)
        && digits(5..7)
        && digits(8..10)
        && (1..=12).contains(&t[5..7].parse::<u32>().ok()?)
        && (1..=31).contains(&t[8..10].parse::<u32>().ok()?);
    ok.then(|| t.to_string())
}

/// `YYYY-MM-DD[ HH:MM[:SS[.fff]]]` (or with `T`), written as SQLite's
/// datetime() and PostgreSQL print it: `YYYY-MM-DD HH:MM:SS[.fff]`.
fn timestamp(t: &str) -> Option<String> {
    let day = date(t.get(..10)?)?;
    let rest = t[10..].trim_start_matches([' ', 'T']);
    if rest.is_empty() {
        return Some(format!("{day} 00:00:00"));
    }
    let (time, fraction) = rest.split_once('.').unwrap_or((rest, ""));
    let parts: Vec<&str> = time.split(':').collect();
    let ok = (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|c| c.is_ascii_digit()))
        && parts[0] < "24"
        && parts[1] < "60"
        && parts.get(2).is_none_or(|s| *s < "61")
        && fraction.bytes().all(|c| c.is_ascii_digit());
    if !ok {
        return None;
    }
    let seconds = parts.get(2).copied().unwrap_or("00");
    Some(if fraction.is_empty() {
        format!("{day} {}:{}:{seconds}", parts[0], parts[1])
    } else {
        format!("{day} {}:{}:{seconds}.{fraction}", parts[0], parts[1])
    })
}

fn storage(path: &Path, e: rusqlite::Error) -> BackendError {
    BackendError::Load(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked_against_their_declared_type() {
        assert_eq!(
            parse_value(" 42 ", Some(ColumnType::Int)),
            Ok(Value::Integer(42))
        );
        assert_eq!(parse_value("", Some(ColumnType::Int)), Ok(Value::Null));
        assert_eq!(parse_value("", Some(ColumnType::Text)), Ok(Value::Null));
        assert_eq!(
            parse_value(" ", Some(ColumnType::Text)),
            Ok(Value::Text(" ".into()))
        );
        assert!(parse_value("4x", Some(ColumnType::Int))
            .unwrap_err()
            .contains("not an integer"));
        assert_eq!(
            parse_value("yes", Some(ColumnType::Bool)),
            Ok(Value::Integer(1))
        );
        assert_eq!(
            parse_value("2024-02-29", Some(ColumnType::Date)),
            Ok(Value::Text("2024-02-29".into()))
        );
        assert!(parse_value("2024-13-01", Some(ColumnType::Date)).is_err());
        assert_eq!(
            parse_value("2024-02-29T08:15", Some(ColumnType::Timestamp)),
            Ok(Value::Text("2024-02-29 08:15:00".into()))
        );
        assert_eq!(
            parse_value("2024-02-29", Some(ColumnType::Timestamp)),
            Ok(Value::Text("2024-02-29 00:00:00".into()))
        );
        assert!(parse_value("2024-02-29 25:00", Some(ColumnType::Timestamp)).is_err());
    }
}
