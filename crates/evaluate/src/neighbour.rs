//! Neighbouring datasets without copying data. For each query the
//! evaluator asks the backend (its own queries, as the data owner) for the
//! privacy units most likely to move the answer: the unit with the most
//! rows, the units with the largest and smallest sums and the largest
//! single value of each numeric column the query names, and a unit holding
//! the rarest value of each other column it names. Each candidate's
//! neighbour D − u is the same backend query with the unit's rows filtered
//! out, in the same backend query as D ([`dpgate_sql::Prepared::bind_paired`]);
//! the candidate whose removal moves some raw measurement most, in noise
//! standard deviations, is the one tested. Row-level tables name rows by their physical
//! identity (PostgreSQL: its table and ctid; SQLite: rowid).

use std::collections::{BTreeMap, HashSet};

use dpgate_backend::{Backend, BackendQuery};
use dpgate_config::{quote_ident, ColumnType, Config, Table, TablePrivacy};
use dpgate_dp::noise::Noise;
use dpgate_dp::release::{Output, ReleasePlan};
use dpgate_sql::{Dialect, Plan, RawGroup};

use crate::truth::UnitRanking;

/// A unit to remove, and why it was picked.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The unit's value as text (never shown in reports).
    pub unit: String,
    /// Why it was picked ("the unit with the most rows in visits", …).
    pub why: String,
}

/// Rows of text cells from a query the evaluator writes itself (with
/// standard quoting, finished here for the backend).
pub async fn fetch_text(
    backend: &dyn Backend,
    sql: &str,
    columns: usize,
) -> Result<Vec<Vec<Option<String>>>, String> {
    let mut rows: Vec<RawGroup> = Vec::new();
    let sql = backend.dialect().finish(sql.to_string());
    backend
        .fetch_into(
            BackendQuery {
                sql: &sql,
                keys: columns,
                measurements: 0,
            },
            &mut rows,
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(rows.into_iter().map(|r| r.keys).collect())
}

/// The candidate units of a query that reads `tables` and names the
/// identifiers `words` (lower-cased), at most `limit`, most promising
/// first: those of the rows the query keeps (`ranking`, its own FROM and
/// WHERE), then those of whole tables.
pub async fn candidates(
    backend: &dyn Backend,
    config: &Config,
    tables: &[&Table],
    ranking: Option<&UnitRanking>,
    words: &HashSet<String>,
    limit: usize,
) -> Result<Vec<Candidate>, String> {
    let dialect = Dialect::of(&config.backend.store);
    let mut asks: Vec<(String, String)> = Vec::new();
    let named = |t: &Table| -> Vec<(String, ColumnType)> {
        t.columns
            .iter()
            .filter(|c| words.contains(&c.name.to_ascii_lowercase()))
            .map(|c| (c.name.clone(), c.ty))
            .collect()
    };
    if let Some(r) = ranking {
        let ranked = |order: String| r.template.replace("{order}", &order);
        asks.push((
            ranked("COUNT(*) DESC".into()),
            "the unit with the most rows the query keeps".into(),
        ));
        if let Some(t) = tables.iter().find(|t| t.name == r.table) {
            for (c, ty) in named(t) {
                if matches!(ty, ColumnType::Int | ColumnType::Float) {
                    asks.push((
                        ranked(format!(
                            "COALESCE(SUM({}.{}), 0) DESC",
                            r.qualifier,
                            quote_ident(&c)
                        )),
                        format!(
                            "the unit with the largest total {c} among the rows the query keeps"
                        ),
                    ));
                }
            }
        }
    }
    for t in tables {
        let TablePrivacy::Private {
            privacy_unit,
            unique_unit,
            max_rows_per_unit,
        } = &t.privacy
        else {
            continue;
        };
        let from = format!("{} AS \"__t\"", dialect.table(t));
        let unit = match privacy_unit {
            Some(u) => format!("\"__t\".{}", quote_ident(u)),
            None => dialect.row_id("__t"),
        };
        let text = dialect.unit_text(&unit);
        let name = &t.name;
        let per_unit = |order: &str| {
            format!("SELECT {text} FROM {from} WHERE {unit} IS NOT NULL GROUP BY {unit} ORDER BY {order}, 1 LIMIT 1")
        };
        if privacy_unit.is_some() && !unique_unit && *max_rows_per_unit > 1 {
            asks.push((
                per_unit("COUNT(*) DESC"),
                format!("the unit with the most rows in {name}"),
            ));
        }
        for c in t
            .columns
            .iter()
            .filter(|c| words.contains(&c.name.to_ascii_lowercase()))
        {
            let col = format!("\"__t\".{}", quote_ident(&c.name));
            let cname = &c.name;
            match c.ty {
                ColumnType::Int | ColumnType::Float => {
                    let sum = format!("COALESCE(SUM({col}), 0)");
                    asks.push((per_unit(&format!("{sum} DESC")), format!("the unit with the largest total {cname} in {name}")));
                    if c.bounds.is_none_or(|(lo, _)| lo < 0.0) {
                        asks.push((per_unit(&format!("{sum} ASC")), format!("the unit with the smallest total {cname} in {name}")));
                    }
                    asks.push((
                        format!("SELECT {text} FROM {from} WHERE {col} IS NOT NULL AND {unit} IS NOT NULL ORDER BY ABS({col}) DESC, 1 LIMIT 1"),
                        format!("the unit with the most extreme {cname} in {name}"),
                    ));
                }
                _ => asks.push((
                    format!("SELECT {text} FROM {from} WHERE {unit} IS NOT NULL AND {col} IN (SELECT {c2} FROM {t2} AS \"__r\" WHERE {c2} IS NOT NULL GROUP BY {c2} ORDER BY COUNT(*), 1 LIMIT 1) ORDER BY 1 LIMIT 1",
                        c2 = format!("\"__r\".{}", quote_ident(&c.name)),
                        t2 = dialect.table(t)),
                    format!("a unit holding the rarest {cname} in {name}"),
                )),
            }
        }
    }
    // Whatever the query names, some unit of each table is a neighbour.
    for t in tables {
        if let TablePrivacy::Private { privacy_unit, .. } = &t.privacy {
            let unit = match privacy_unit {
                Some(u) => format!("\"__t\".{}", quote_ident(u)),
                None => dialect.row_id("__t"),
            };
            asks.push((
                format!(
                    "SELECT {} FROM {} AS \"__t\" WHERE {unit} IS NOT NULL ORDER BY 1 LIMIT 1",
                    dialect.unit_text(&unit),
                    dialect.table(t)
                ),
                format!("a unit of {}", t.name),
            ));
        }
    }
    let mut found: Vec<Candidate> = Vec::new();
    for (sql, why) in asks {
        if found.len() >= limit {
            break;
        }
        // A ranking the backend cannot run (a query spelled for
        // PostgreSQL on SQLite) only loses that candidate.
        let Ok(rows) = fetch_text(backend, &sql, 1).await else {
            continue;
        };
        for row in rows {
            if let Some(Some(unit)) = row.into_iter().next() {
                if !found.iter().any(|c| c.unit == unit) {
                    found.push(Candidate {
                        unit,
                        why: why.clone(),
                    });
                }
            }
        }
    }
    Ok(found)
}

/// How far removing a unit moves `plan`'s raw measurements: the largest
/// change of any measured value of a group present on both sides, in
/// standard deviations of that measurement's noise and as a share of the
/// sensitivity it is calibrated for; and whether the set of groups changed.
pub fn movement(plan: &Plan, d: &[RawGroup], neighbour: &[RawGroup]) -> (f64, f64, bool) {
    // Per measured value: its noise's standard deviation, and the largest
    // change one unit may make to it (L1 sensitivity, or the square root
    // of the squared L2 one).
    let scales: Vec<(f64, f64)> = plan
        .release
        .measurements
        .iter()
        .flat_map(|m| {
            let sensitivity = match &m.noise {
                dpgate_dp::Noise::Laplace(l) => l.sensitivity() as f64,
                dpgate_dp::Noise::Gaussian(g) => (g.l2_squared() as f64).sqrt(),
            };
            std::iter::repeat_n(
                (m.noise.variance().sqrt().max(1e-300), sensitivity.max(1.0)),
                m.len,
            )
        })
        .collect();
    let by_key = |raw: &[RawGroup]| -> BTreeMap<Vec<Option<String>>, Vec<i64>> {
        plan.arrange(raw.to_vec())
            .into_iter()
            .map(|g| (g.keys, g.values))
            .collect()
    };
    let (a, b) = (by_key(d), by_key(neighbour));
    let (mut moved, mut reach): (f64, f64) = (0.0, 0.0);
    for (k, va) in &a {
        if let Some(vb) = b.get(k) {
            for ((x, y), (sd, sensitivity)) in va.iter().zip(vb).zip(&scales) {
                let change = (*x as f64 - *y as f64).abs();
                moved = moved.max(change / sd);
                reach = reach.max(change / sensitivity);
            }
        }
    }
    let keys_changed = a.len() != b.len() || a.keys().any(|k| !b.contains_key(k));
    (moved, reach, keys_changed)
}

/// The privacy loss the noise of output `output` admits on one pair of
/// neighbours whose raw values are `d` and `neighbour`, when the output is
/// a count or sum released as measured (`None` for derived values, whose
/// loss mixes several measurements): for discrete Laplace noise at ε for
/// sensitivity Δ, ε·change/Δ; for Gaussian noise, the exact (ε, `delta`)
/// profile of a shift of change/σ. An honest build keeps it at or below
/// the measurement's share of the charge; noise calibrated for a smaller
/// sensitivity than the true one exceeds it, and the privacy test must
/// then fail.
pub fn pair_loss(
    release: &ReleasePlan,
    output: usize,
    d: &[i64],
    neighbour: &[i64],
    delta: f64,
) -> Option<f64> {
    let m = match release.outputs.get(output)? {
        Output::Count { measurement } | Output::Sum { measurement, .. } => *measurement,
        _ => return None,
    };
    let start = release.offset(m);
    let range = start..start + release.measurements.get(m)?.len;
    let changes = d.get(range.clone())?.iter().zip(neighbour.get(range)?);
    let noise = &release.measurements[m].noise;
    Some(match noise {
        Noise::Laplace(l) => {
            let change: f64 = changes.map(|(a, b)| (a - b).unsigned_abs() as f64).sum();
            l.epsilon().to_f64() * change / l.sensitivity().max(1) as f64
        }
        Noise::Gaussian(_) => {
            let squared: f64 = changes.map(|(a, b)| ((a - b) as f64).powi(2)).sum();
            let sigma = noise.variance().sqrt().max(1e-300);
            crate::stats::gaussian_epsilon(squared.sqrt() / sigma, delta)
        }
    })
}

/// The lower-cased identifiers of a statement's text.
pub fn words(sql: &str) -> HashSet<String> {
    sql.split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}
