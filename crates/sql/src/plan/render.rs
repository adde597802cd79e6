//! The backend query of a plan: keys and aggregate arguments computed per
//! row, each unit's contribution bounded as [`Bounding`] says, then
//! aggregated per group. Every value leaves as text so that no cast can
//! fail.

use super::*;
use crate::dialect::LargeUnits;
use crate::partial::Partial;
use crate::Dialect;

/// The backend query for `measures` over `source`, bounded as `bounding`
/// says (`max_rows` rows' worth per unit), one row per group, in key order
/// when `ordered`. With `paired` (a unit's value as text), the query of
/// [`crate::front::Prepared::bind_paired`] instead.
#[allow(clippy::too_many_arguments)]
pub(super) fn render(
    source: &Source,
    predicate: Option<&str>,
    keys: &[Key],
    measures: &Measures,
    bounding: Bounding,
    max_rows: u64,
    ordered: bool,
    paired: Option<&str>,
) -> String {
    let d = source.scope.dialect;
    let key_names: Vec<String> = (0..keys.len()).map(|i| format!("__dp_k{i}")).collect();
    // Keys are grouped by their text, compared byte by byte
    // (`Dialect::key_text` says why).
    // Each row column as (SQL, name).
    let mut row_columns: Vec<(String, String)> = keys
        .iter()
        .zip(&key_names)
        .map(|(k, name)| (d.key_text(&k.typed.sql, k.typed.ty), name.clone()))
        .collect();
    row_columns.extend(
        measures
            .args
            .iter()
            .enumerate()
            .map(|(i, a)| (a.to_string(), format!("__dp_a{i}"))),
    );
    let unit = || source.unit.as_deref().expect("a private source has a unit");
    if bounding == Bounding::PreAggregated || paired.is_some() {
        row_columns.push((unit().to_string(), "__dp_u".into()));
    }
    if row_columns.is_empty() {
        row_columns.push(("1".into(), "__dp_one".into()));
    }
    let selected = row_columns
        .iter()
        .map(|(sql, name)| format!("{sql} AS {name}"))
        .collect::<Vec<_>>()
        .join(", ");
    // Rows whose unit is NULL belong to no known unit, so they are left
    // out of any bounded query: pooled as one unit (GROUP BY and
    // PARTITION BY put NULLs together) they would mix several people,
    // and one person adding rows to the pool could move its cut partial
    // sum from one end of [k·lower, k·upper] to the other: twice the
    // bound the sensitivity assumes.
    let unit_known = matches!(bounding, Bounding::PreAggregated | Bounding::RowSampled)
        .then(|| format!("{} IS NOT NULL", unit()));
    let filter = match (predicate, unit_known.as_deref()) {
        (Some(p), Some(u)) => format!(" WHERE ({p}) AND {u}"),
        (Some(c), None) | (None, Some(c)) => format!(" WHERE {c}"),
        (None, None) => String::new(),
    };
    // The unit alone is read: sorted as bare values, it groups faster
    // than a hash aggregation would (see `Dialect::sorts_lone_units`).
    let sorted = if bounding == Bounding::PreAggregated
        && keys.is_empty()
        && measures.args.is_empty()
        && d.sorts_lone_units()
    {
        " ORDER BY __dp_u"
    } else {
        ""
    };
    let rows = format!(
        "(SELECT {selected} FROM {}{filter}{sorted})",
        source.from_sql
    );
    // Each measurement's aggregates, over the bounded rows or per unit.
    let specs: Vec<(String, Partial)> = measures
        .specs
        .iter()
        .flat_map(|s| {
            let sqls = if bounding == Bounding::PreAggregated {
                s.partial_sqls(d)
            } else {
                s.sqls.clone()
            };
            sqls.into_iter().map(move |sql| (sql, s.partial))
        })
        .collect();
    // The aggregated relation, and each measurement's SQL over it.
    let (from, measured): (String, Vec<String>) = match bounding {
        Bounding::None | Bounding::Tables => (
            format!("{rows} AS __dp_rows"),
            specs.iter().map(|(sql, _)| sql.to_string()).collect(),
        ),
        Bounding::RowSampled => {
            // A row is told apart by what the aggregates read of it.
            let values: Vec<String> = keys
                .iter()
                .map(|k| k.typed.sql.clone())
                .chain(measures.args.iter().map(|a| a.to_string()))
                .collect();
            let sample = crate::dialect::Sample {
                selected: &selected,
                from: &source.from_sql,
                filter: &filter,
                unit: unit(),
                order: d.bounding_order(&values),
                rank: "__dp_rn",
                max_rows,
            };
            (
                format!("{} AS __dp_rows", sample.sql(d, source.rereadable)),
                specs.iter().map(|(sql, _)| sql.to_string()).collect(),
            )
        }
        // Each unit's cut (randomized rounding included) is made in a
        // projection, once per unit, then summed: Spark allows no random
        // draw inside an aggregate's argument.
        Bounding::PreAggregated => {
            let units = pre_aggregated(
                d,
                &rows,
                &key_names,
                &specs,
                max_rows,
                paired.is_some(),
                source.rereadable,
            );
            let cuts: Vec<String> = specs
                .iter()
                .enumerate()
                .map(|(j, (_, partial))| {
                    format!("{} AS __dp_cut{j}", cut(d, &format!("__dp_p{j}"), *partial))
                })
                .collect();
            (
                format!("(SELECT *, {} FROM {units}) AS __dp_cuts", cuts.join(", ")),
                (0..specs.len())
                    .map(|j| d.sum(&format!("__dp_cut{j}")))
                    .collect(),
            )
        }
    };
    let outer = |measured: &[String]| -> String {
        let mut outer: Vec<String> = key_names
            .iter()
            .enumerate()
            .map(|(i, name)| format!("{name} AS k{i}"))
            .collect();
        // Text, not bigint: a cast that overflows would be a data-dependent
        // error; the backend crate parses and saturates instead.
        outer.extend(
            measured
                .iter()
                .enumerate()
                .map(|(i, sql)| format!("{} AS m{i}", d.measurement_text(sql))),
        );
        outer.join(", ")
    };
    let group_by = if keys.is_empty() {
        String::new()
    } else {
        format!(" GROUP BY {}", key_names.join(", "))
    };
    let Some(unit) = paired else {
        let order_by = if ordered {
            format!(
                " ORDER BY {}",
                key_names
                    .iter()
                    .map(|name| d.order_key(name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        };
        return format!(
            "SELECT {} FROM {from}{group_by}{order_by}",
            outer(&measured)
        );
    };
    paired_sql(
        d,
        &from,
        &measured,
        unit,
        &outer,
        &group_by,
        // The pair's keys are already text: order them as text.
        &(0..keys.len())
            .map(|i| d.order_key(&format!("k{i}")))
            .collect::<Vec<_>>(),
    )
}

/// The paired query: the bounded relation (every random draw of the
/// bounding step — row sampling, allowances, randomized rounding — made
/// once, in a materialized CTE) aggregated twice: over every unit (side
/// `d`) and over every unit but `unit` (side `n`). Bounding is per unit,
/// so side `n` is a release on D − u drawn with the same randomness for
/// every other unit as side `d`: the two sides are coupled.
fn paired_sql(
    d: Dialect,
    from: &str,
    measured: &[String],
    unit: &str,
    outer: &dyn Fn(&[String]) -> String,
    group_by: &str,
    order: &[String],
) -> String {
    let body = format!("SELECT * FROM {from}");
    let other = format!(
        "{} IS DISTINCT FROM {}",
        d.unit_text("__dp_u"),
        crate::types::quote_literal(unit)
    );
    let columns = outer(measured);
    let order = std::iter::once("__dp_side".to_string())
        .chain(order.iter().cloned())
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH __dp_b AS MATERIALIZED ({body}) SELECT * FROM (\
         SELECT 'd' AS __dp_side, {columns} FROM __dp_b{group_by} UNION ALL \
         SELECT 'n' AS __dp_side, {columns} FROM __dp_b WHERE {other}{group_by}) AS __dp_pair ORDER BY {order}"
    )
}

/// The (unit, group) pairs of `rows`, each with its partial aggregates
/// `__dp_p<j>`, its row count `__dp_c` and its row allowance `__dp_w`
/// (see [`Partial`] for why this bounds each unit as `max_rows` kept
/// rows would).
///
/// Without keys there is one pair per unit and `w = min(c, max_rows)`.
/// With keys, a unit whose `n` rows in all fit (`n ≤ max_rows`) keeps
/// every row (`w = c`); a larger unit shares `max_rows` over its groups
/// in proportion to their rows by largest remainders (Hamilton's
/// method: `⌊c·k/n⌋`, plus one for the groups with the largest
/// remainders, ties at random, until the shares add up to `k`), so
/// `w ≤ c`, `Σw = k`, and at most `k` pairs have `w > 0`. Pairs with
/// `w = 0` are dropped: a unit reaches at most `k` groups, as partition
/// selection assumes. Where the rows may be read again, the units with
/// at most `k` rows are found apart and skip the sharing's windows.
#[allow(clippy::too_many_arguments)]
fn pre_aggregated(
    d: Dialect,
    rows: &str,
    key_names: &[String],
    specs: &[(String, Partial)],
    max_rows: u64,
    with_unit: bool,
    rereadable: bool,
) -> String {
    // The paired query needs each unit's identity after the cut.
    let unit = if with_unit { "__dp_u, " } else { "" };
    let k = max_rows;
    let partials: Vec<String> = specs
        .iter()
        .enumerate()
        .map(|(j, (sql, _))| format!("{sql} AS __dp_p{j}"))
        .collect();
    let units: Vec<String> = std::iter::once("__dp_u".to_string())
        .chain(key_names.iter().cloned())
        .collect();
    if key_names.is_empty() {
        return format!(
            "(SELECT {unit}{}, COUNT(*) AS __dp_c, CASE WHEN COUNT(*) <= {k} THEN COUNT(*) ELSE {k} END AS __dp_w FROM {rows} AS __dp_rows GROUP BY __dp_u) AS __dp_units",
            partials.join(", ")
        );
    }
    // Where the rows may be read again, only the units with more than k
    // rows share their allowance (two windows over their pairs); the
    // others keep every row, w = c, with no window
    // ([`crate::dialect::LargeUnits`]).
    let large = rereadable
        .then(|| LargeUnits::of(d, "__dp_rows.__dp_u", &format!("{rows} AS __dp_rows"), k));
    let only = |test: String| {
        format!(
            "SELECT {}, {}, COUNT(*) AS __dp_c FROM {rows} AS __dp_rows{test} GROUP BY {}",
            units.join(", "),
            partials.join(", "),
            units.join(", ")
        )
    };
    let pairs = format!(
        "SELECT *, CAST(SUM(__dp_c) OVER (PARTITION BY __dp_u) AS BIGINT) AS __dp_n FROM ({}) AS __dp_grouped",
        only(large.as_ref().map_or(String::new(), |l| format!(" WHERE {}", l.test)))
    );
    let shares = format!(
        "SELECT *, CASE WHEN __dp_n <= {k} THEN __dp_c ELSE {} END AS __dp_f, \
         CASE WHEN __dp_n <= {k} THEN 0 ELSE (__dp_c * {k}) % __dp_n END AS __dp_r FROM ({pairs}) AS __dp_pairs",
        d.int_div(&format!("(__dp_c * {k})"), "__dp_n")
    );
    let carried: Vec<String> = key_names
        .iter()
        .cloned()
        .chain((0..specs.len()).map(|j| format!("__dp_p{j}")))
        .collect();
    let carried = carried.join(", ");
    let shared = format!(
        "SELECT {unit}{carried}, __dp_c, __dp_f + CASE WHEN __dp_n > {k} AND ROW_NUMBER() OVER (PARTITION BY __dp_u ORDER BY __dp_r DESC, {}) <= {k} - SUM(__dp_f) OVER (PARTITION BY __dp_u) THEN 1 ELSE 0 END AS __dp_w \
         FROM ({shares}) AS __dp_shares",
        d.bounding_order(key_names)
    );
    let Some(large) = large else {
        return format!("({shared}) AS __dp_units WHERE __dp_w > 0");
    };
    format!(
        "({} SELECT {unit}{carried}, __dp_c, __dp_c AS __dp_w FROM ({}) AS __dp_small \
         UNION ALL SELECT * FROM ({shared}) AS __dp_shared WHERE __dp_w > 0) AS __dp_units",
        large.with,
        only(format!(" WHERE NOT {}", large.test))
    )
}

/// A pair's partial `p` over its `__dp_c` rows scaled to its allowance
/// `__dp_w` and cut to what that many rows could contribute, in integer
/// arithmetic (see [`Partial`]).
fn cut(d: Dialect, p: &str, partial: Partial) -> String {
    match partial {
        // p = c: every row is kept in expectation, and w rows give w.
        Partial::RowCount => "__dp_w".into(),
        // p ≤ c, so ⌊p·w/c⌋ < w whenever p < c: one more stays within w.
        Partial::Count => format!(
            "CASE WHEN {p} >= __dp_c THEN __dp_w ELSE {} + CASE WHEN {} < ({p} * __dp_w) % __dp_c THEN 1 ELSE 0 END END",
            d.int_div(&format!("({p} * __dp_w)"), "__dp_c"),
            d.random_below("__dp_c")
        ),
        Partial::Presence => format!("CASE WHEN {p} > __dp_w THEN __dp_w ELSE {p} END"),
        // A pair without values (p NULL) adds 0, inside the clip bounds.
        Partial::Sum { lower, upper } => d.clip(
            &format!(
                "COALESCE(CASE WHEN __dp_c <= __dp_w THEN {p} ELSE {} END, 0)",
                d.scaled_partial(p, "__dp_w", "__dp_c")
            ),
            &format!("__dp_w * {lower}"),
            &format!("__dp_w * {upper}"),
        ),
        Partial::Rows => {
            unreachable!("a partial that needs rows is never pre-aggregated")
        }
    }
}
