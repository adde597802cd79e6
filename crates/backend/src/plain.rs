//! Exact aggregates SQLite lacks, with PostgreSQL's meaning, for the data
//! owner's plain queries (`dpgate evaluate` compares private answers with
//! the plain query's): `variance`/`var_samp`/`var_pop`, `stddev`/
//! `stddev_samp`/`stddev_pop`, `median(x)` and `percentile_cont(x, p)`/
//! `percentile_disc(x, p)` (PostgreSQL's `percentile_cont(p) WITHIN GROUP
//! (ORDER BY x)`, which SQLite cannot parse). Planned queries never call
//! them. Each is total: non-numbers are skipped, as PostgreSQL skips NULLs.

use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::types::{Value, ValueRef};
use rusqlite::Connection;

/// Registers the aggregates on `conn`.
pub fn register_plain_aggregates(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    for (name, sample, root) in [
        ("variance", true, false),
        ("var_samp", true, false),
        ("var_pop", false, false),
        ("stddev", true, true),
        ("stddev_samp", true, true),
        ("stddev_pop", false, true),
    ] {
        conn.create_aggregate_function(name, 1, flags, Spread { sample, root })?;
    }
    conn.create_aggregate_function("median", 1, flags, Percentile::Cont(Some(0.5)))?;
    conn.create_aggregate_function("percentile_cont", 2, flags, Percentile::Cont(None))?;
    conn.create_aggregate_function("percentile_disc", 2, flags, Percentile::Disc)?;
    Ok(())
}

fn number(v: ValueRef<'_>) -> Option<f64> {
    match v {
        ValueRef::Integer(i) => Some(i as f64),
        ValueRef::Real(x) if x.is_finite() => Some(x),
        _ => None,
    }
}

/// Variance or standard deviation by Welford's update (no cancellation).
struct Spread {
    sample: bool,
    root: bool,
}

impl Aggregate<(f64, f64, f64), Value> for Spread {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<(f64, f64, f64)> {
        Ok((0.0, 0.0, 0.0))
    }

    fn step(&self, ctx: &mut Context<'_>, acc: &mut (f64, f64, f64)) -> rusqlite::Result<()> {
        if let Some(x) = number(ctx.get_raw(0)) {
            let (n, mean, m2) = acc;
            *n += 1.0;
            let d = x - *mean;
            *mean += d / *n;
            *m2 += d * (x - *mean);
        }
        Ok(())
    }

    fn finalize(
        &self,
        _: &mut Context<'_>,
        acc: Option<(f64, f64, f64)>,
    ) -> rusqlite::Result<Value> {
        let Some((n, _, m2)) = acc else {
            return Ok(Value::Null);
        };
        let dof = if self.sample { n - 1.0 } else { n };
        if dof < 1.0 {
            return Ok(Value::Null);
        }
        let v = (m2 / dof).max(0.0);
        Ok(Value::Real(if self.root { v.sqrt() } else { v }))
    }
}

/// A percentile of the non-NULL values: interpolated (`Cont`, with the
/// fraction fixed or from the second argument) or the first value whose
/// cumulative share reaches it (`Disc`).
enum Percentile {
    Cont(Option<f64>),
    Disc,
}

impl Aggregate<(Vec<f64>, f64), Value> for Percentile {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<(Vec<f64>, f64)> {
        Ok((Vec::new(), f64::NAN))
    }

    fn step(&self, ctx: &mut Context<'_>, acc: &mut (Vec<f64>, f64)) -> rusqlite::Result<()> {
        if let Some(x) = number(ctx.get_raw(0)) {
            acc.0.push(x);
        }
        acc.1 = match self {
            Percentile::Cont(Some(p)) => *p,
            _ => number(ctx.get_raw(1)).unwrap_or(f64::NAN),
        };
        Ok(())
    }

    fn finalize(
        &self,
        _: &mut Context<'_>,
        acc: Option<(Vec<f64>, f64)>,
    ) -> rusqlite::Result<Value> {
        let Some((mut xs, p)) = acc else {
            return Ok(Value::Null);
        };
        if xs.is_empty() || !(0.0..=1.0).contains(&p) {
            return Ok(Value::Null);
        }
        xs.sort_by(f64::total_cmp);
        let last = (xs.len() - 1) as f64;
        Ok(Value::Real(match self {
            Percentile::Cont(_) => {
                let at = p * last;
                let (lo, hi) = (at.floor() as usize, at.ceil() as usize);
                xs[lo] + (xs[hi] - xs[lo]) * (at - at.floor())
            }
            Percentile::Disc => {
                let rank = (p * xs.len() as f64).ceil().max(1.0) as usize;
                xs[rank - 1]
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(conn: &Connection, sql: &str) -> Option<f64> {
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn match_postgresql() {
        let conn = Connection::open_in_memory().unwrap();
        register_plain_aggregates(&conn).unwrap();
        conn.execute_batch(
            "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3), (4), (NULL), ('a');",
        )
        .unwrap();
        // PostgreSQL: var_samp(1..4) = 1.6667, var_pop = 1.25,
        // percentile_cont(0.25) = 1.75, percentile_disc(0.25) = 1.
        let close = |sql: &str, want: f64| {
            let got = one(&conn, sql).unwrap();
            assert!((got - want).abs() < 1e-12, "{sql}: {got} != {want}");
        };
        close("SELECT variance(x) FROM t", 5.0 / 3.0);
        close("SELECT var_pop(x) FROM t", 1.25);
        close("SELECT stddev_pop(x) FROM t", 1.25f64.sqrt());
        close("SELECT median(x) FROM t", 2.5);
        close("SELECT percentile_cont(x, 0.25) FROM t", 1.75);
        close("SELECT percentile_disc(x, 0.25) FROM t", 1.0);
        close("SELECT percentile_disc(x, 0.5) FROM t", 2.0);
        assert_eq!(one(&conn, "SELECT variance(x) FROM t WHERE x = 1"), None);
        assert_eq!(one(&conn, "SELECT median(x) FROM t WHERE x > 9"), None);
    }
}
