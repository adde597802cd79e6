//! `dpgate check --verify`: confirms the data owner's declarations against
//! the backend (units per table, unique units, bounds, NOT NULL). It runs
//! as the data owner, prints counts to the owner's terminal and releases
//! nothing to analysts.

use std::process::ExitCode;

use dpgate_backend::{Backend, BackendQuery};
use dpgate_config::{Config, Table, TablePrivacy};
use dpgate_sql::{Dialect, RawGroup};

/// One table's facts, as the backend counts them.
struct Facts {
    /// Distinct privacy units, the most rows one has, and how many have
    /// more than declared (`None` without a unit column).
    units: Option<(i64, i64, i64)>,
    /// Per declared bound or NOT NULL: what, and rows that break it.
    columns: Vec<(String, i64)>,
}

/// Verifies every private table of `config`; fails when a declaration that
/// privacy relies on (a unique unit) does not hold.
pub async fn verify(config: &Config, backend: &dyn Backend) -> Result<(), ExitCode> {
    println!("verifying the declarations against the backend (counts for the data owner; nothing is released to analysts)");
    let mut broken = 0;
    for table in &config.tables {
        let TablePrivacy::Private {
            privacy_unit,
            max_rows_per_unit,
            unique_unit,
        } = &table.privacy
        else {
            continue;
        };
        let facts = facts(backend, table, privacy_unit.as_deref(), *max_rows_per_unit)
            .await
            .map_err(|e| {
                eprintln!("{}: cannot verify: {e}", table.qualified_name());
                ExitCode::FAILURE
            })?;
        let name = table.qualified_name();
        match (facts.units, privacy_unit) {
            (Some((units, most, over)), Some(unit)) if *unique_unit => {
                if !backend.unit_is_unique(table, unit).await {
                    println!(
                        "{name}: privacy_unit_unique: the backend has no primary key or unique index on {unit} (NOT NULL), so dpgate bounds this table as max_rows_per_unit = 1; add the constraint to skip that step"
                    );
                }
                if most > 1 {
                    broken += 1;
                    println!(
                        "{name}: privacy_unit_unique is FALSE: {over} of {units} values of {unit} have more than one row (up to {most}); answers would not bound them. Remove privacy_unit_unique (and set max_rows_per_unit), or make {unit} unique"
                    );
                } else {
                    println!(
                        "{name}: {units} privacy units, each one row: privacy_unit_unique holds"
                    );
                }
            }
            (Some((units, most, over)), Some(_)) => {
                let note = if over > 0 {
                    format!(
                        "; {over} unit{} more than {max_rows_per_unit}, and answers count {max_rows_per_unit} rows' worth of each",
                        if over == 1 { " has" } else { "s have" }
                    )
                } else {
                    String::new()
                };
                println!(
                    "{name}: {units} privacy units, at most {most} rows per unit (declared {max_rows_per_unit}){note}"
                );
            }
            _ => println!("{name}: row-level privacy (each row is a unit)"),
        }
        for (what, rows) in facts.columns {
            println!("  {what}: {}", broken_rows(rows));
        }
    }
    if broken > 0 {
        eprintln!("{broken} declaration(s) that privacy relies on do not hold");
        return Err(ExitCode::FAILURE);
    }
    Ok(())
}

/// Counts, on the backend, what `table`'s declarations claim.
async fn facts(
    backend: &dyn Backend,
    table: &Table,
    unit: Option<&str>,
    max_rows: u32,
) -> Result<Facts, dpgate_backend::BackendError> {
    let d = backend.dialect();
    let from = d.table(table);
    let units = match unit {
        Some(u) => {
            let sql = format!(
                "SELECT {}, {}, {} FROM (SELECT COUNT(*) AS c FROM {from} GROUP BY {}) AS u",
                d.measurement_text("COUNT(*)"),
                d.measurement_text("MAX(c)"),
                d.measurement_text(&format!("SUM(CASE WHEN c > {max_rows} THEN 1 ELSE 0 END)")),
                dpgate_config::quote_ident(u)
            );
            let v = row(backend, &sql, 3).await?;
            Some((v[0], v[1], v[2]))
        }
        None => None,
    };
    let mut checks: Vec<(String, String)> = Vec::new();
    for c in &table.columns {
        let col = dpgate_config::quote_ident(&c.name);
        if let Some((lo, hi)) = c.bounds {
            checks.push((
                format!(
                    "{} within [{lo}, {hi}] (answers clamp values outside)",
                    c.name
                ),
                format!("{col} < {lo:e} OR {col} > {hi:e}"),
            ));
        }
        if c.not_null {
            checks.push((
                format!("{} not_null (a NULL costs accuracy, not privacy)", c.name),
                format!("{col} IS NULL"),
            ));
        }
    }
    let mut columns = Vec::new();
    if !checks.is_empty() {
        let sql = format!(
            "SELECT {} FROM {from}",
            checks
                .iter()
                .map(|(_, test)| count_where(d, test))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let v = row(backend, &sql, checks.len()).await?;
        columns = checks.into_iter().map(|(what, _)| what).zip(v).collect();
    }
    Ok(Facts { units, columns })
}

/// "holds", or how many rows break a declaration.
fn broken_rows(rows: i64) -> String {
    match rows {
        0 => "holds".into(),
        1 => "1 row does not hold".into(),
        n => format!("{n} rows do not hold"),
    }
}

fn count_where(d: Dialect, test: &str) -> String {
    d.measurement_text(&format!("SUM(CASE WHEN {test} THEN 1 ELSE 0 END)"))
}

/// The one row of integers `sql` returns.
async fn row(
    backend: &dyn Backend,
    sql: &str,
    measurements: usize,
) -> Result<Vec<i64>, dpgate_backend::BackendError> {
    let mut rows: Vec<RawGroup> = Vec::new();
    let sql = backend.dialect().finish(sql.to_string());
    backend
        .fetch_into(
            BackendQuery {
                sql: &sql,
                keys: 0,
                measurements,
            },
            &mut rows,
        )
        .await?;
    Ok(rows.pop().map(|r| r.values).unwrap_or_default())
}
