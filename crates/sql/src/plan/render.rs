//! The backend query of a plan: keys and aggregate arguments computed per
//! row, at most `max_rows` rows kept per unit, then aggregated per group.

use super::*;

/// The backend query: compute keys and aggregate arguments per row, keep
/// at most `max_rows` rows per unit chosen at random, then aggregate per
/// group. Every value leaves as text so that no cast can fail.
pub(super) fn render(
    source: &Source,
    predicate: Option<&str>,
    keys: &[Key],
    measures: &Measures,
    bound: Bound,
    ordered: bool,
) -> String {
    let mut inner: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{} AS __dp_k{i}", k.typed.sql))
        .collect();
    inner.extend(
        measures
            .args
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{a} AS __dp_a{i}")),
    );
    let bounding = !source.one_row_per_unit;
    if bounding {
        let unit = source.unit.as_deref().expect("a private source has a unit");
        inner.push(format!(
            "ROW_NUMBER() OVER (PARTITION BY {unit} ORDER BY random()) AS __dp_rn"
        ));
    }
    if inner.is_empty() {
        inner.push("1 AS __dp_one".into());
    }
    let d = source.scope.dialect;
    let mut outer: Vec<String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| format!("{} AS k{i}", d.key_text(&format!("__dp_k{i}"), k.typed.ty)))
        .collect();
    outer.extend(
        measures
            .specs
            .iter()
            .flat_map(|s| &s.sqls)
            .enumerate()
            // Text, not bigint: a cast that overflows would be a data-dependent
            // error; the backend crate parses and saturates instead.
            .map(|(i, sql)| format!("{} AS m{i}", d.measurement_text(sql))),
    );
    let filter = predicate.map(|p| format!(" WHERE {p}")).unwrap_or_default();
    let keep = if bounding {
        format!(" WHERE __dp_rn <= {}", bound.max_rows)
    } else {
        String::new()
    };
    let group_by = if keys.is_empty() {
        String::new()
    } else {
        format!(
            " GROUP BY {}",
            (0..keys.len())
                .map(|i| format!("__dp_k{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let order_by = if ordered {
        format!(
            " ORDER BY {}",
            keys.iter()
                .enumerate()
                .map(|(i, k)| d.order_key(&d.key_text(&format!("__dp_k{i}"), k.typed.ty)))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    format!(
        "SELECT {} FROM (SELECT {} FROM {}{filter}) AS __dp_bounded{keep}{group_by}{order_by}",
        outer.join(", "),
        inner.join(", "),
        source.from_sql
    )
}
