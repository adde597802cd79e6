//! GROUP BY keys: resolved from positions and aliases, and, where every
//! key has a public domain, the full list of groups to release.

use super::*;

/// A GROUP BY key.
pub(super) struct Key {
    pub(super) expr: Expr,
    pub(super) typed: Typed,
}

/// `GROUP BY 1` and `GROUP BY alias` refer to select items, as in PostgreSQL.
pub(super) fn resolve_group_expr(
    g: &Expr,
    items: &[(Expr, Option<String>)],
    scope: &Scope,
) -> Result<Expr, Refusal> {
    if let Some(i) = position(g) {
        return items
            .get(i.wrapping_sub(1))
            .map(|(e, _)| e.clone())
            .ok_or_else(|| {
                Refusal::new(
                    sqlstate::INVALID_COLUMN_REFERENCE,
                    format!("GROUP BY position {i} is not in select list"),
                    format!("group by a position from 1 to {}", items.len()),
                )
            });
    }
    if let Expr::Identifier(id) = g {
        if scope.lookup(g).is_err() {
            if let Some((e, _)) = items.iter().find(|(_, a)| {
                a.as_ref()
                    .is_some_and(|a| a.eq_ignore_ascii_case(&id.value))
            }) {
                return Ok(e.clone());
            }
        }
    }
    if contains_aggregate(g) {
        return Err(Refusal::new(
            sqlstate::GROUPING_ERROR,
            "aggregate functions are not allowed in GROUP BY",
            "group by columns or row-level expressions",
        ));
    }
    Ok(g.clone())
}

pub(super) fn position(e: &Expr) -> Option<usize> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

/// Every key tuple when every key has a declared domain small enough.
/// Each key's values are deduplicated by their canonical spelling first
/// (NULL included), so no backend group is released twice, however a CASE,
/// NULLIF or literal spells it.
pub(super) fn domain_groups(keys: &[Key]) -> Option<Vec<Vec<Option<String>>>> {
    if keys.is_empty() {
        return None;
    }
    let mut groups: Vec<Vec<Option<String>>> = vec![vec![]];
    for k in keys {
        let ty = k.typed.ty.output();
        let mut seen = std::collections::HashSet::new();
        let values: Vec<Option<String>> = k
            .typed
            .domain
            .as_ref()?
            .iter()
            .filter(|v| seen.insert(canonical_key(v.as_deref(), ty)))
            .cloned()
            .collect();
        if groups.len().saturating_mul(values.len()) > MAX_DOMAIN_GROUPS {
            return None;
        }
        groups = groups
            .iter()
            .flat_map(|g| {
                values.iter().map(move |v| {
                    let mut g = g.clone();
                    g.push(v.clone());
                    g
                })
            })
            .collect();
    }
    Some(groups)
}
