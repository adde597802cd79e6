//! The select list, LIMIT and OFFSET of a private query: what each output
//! column is and is called, and how many rows the analyst asked for.

use super::*;

pub(super) fn raw_rows() -> Refusal {
    Refusal::new(
        sqlstate::INSUFFICIENT_PRIVILEGE,
        "dpgate does not release individual rows or column values",
        "ask for aggregates instead, e.g. SELECT COUNT(*), AVG(age) FROM visits, or group them: SELECT ward, COUNT(*) FROM visits GROUP BY ward; to look at sample rows, the data owner can declare [tables.synthetic] (epsilon = 1) for the table, and such queries return synthetic rows",
    )
}

pub(super) fn select_items(
    projection: &[SelectItem],
) -> Result<Vec<(Expr, Option<String>)>, Refusal> {
    projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) => Ok((e.clone(), None)),
            SelectItem::ExprWithAlias { expr, alias } => {
                Ok((expr.clone(), Some(alias.value.clone())))
            }
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => Err(raw_rows()),
            other => Err(Refusal::unsupported(
                format!("{other} is not supported"),
                "name each output column with one alias",
            )),
        })
        .collect()
}

pub(super) fn limit_offset(clause: Option<&LimitClause>) -> Result<(Option<u64>, u64), Refusal> {
    let constant = |e: &Expr, what: &str| -> Result<Option<u64>, Refusal> {
        match e {
            Expr::Value(v) => match &v.value {
                Value::Null => Ok(None),
                Value::Number(n, _) => n.parse::<u64>().map(Some).map_err(|_| bad(what)),
                _ => Err(bad(what)),
            },
            _ => Err(bad(what)),
        }
    };
    fn bad(what: &str) -> Refusal {
        Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("{what} must be a non-negative integer constant"),
            format!("write e.g. {what} 10"),
        )
    }
    Ok(match clause {
        None => (None, 0),
        Some(LimitClause::LimitOffset {
            limit,
            offset,
            limit_by,
        }) if limit_by.is_empty() => (
            limit
                .as_ref()
                .map(|l| constant(l, "LIMIT"))
                .transpose()?
                .flatten(),
            offset
                .as_ref()
                .map(|o| constant(&o.value, "OFFSET"))
                .transpose()?
                .flatten()
                .unwrap_or(0),
        ),
        Some(LimitClause::OffsetCommaLimit { offset, limit }) => (
            constant(limit, "LIMIT")?,
            constant(offset, "OFFSET")?.unwrap_or(0),
        ),
        Some(_) => return Err(bad("LIMIT")),
    })
}

/// PostgreSQL's default output name for a select item.
pub(super) fn default_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => i.value.clone(),
        Expr::CompoundIdentifier(p) => p.last().map(|i| i.value.clone()).unwrap_or_default(),
        Expr::Function(f) => crate::classify::object_name(&f.name)
            .rsplit('.')
            .next()
            .unwrap_or("?column?")
            .to_ascii_lowercase(),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => default_name(expr),
        Expr::Case { .. } => "case".into(),
        Expr::Extract { .. } => "extract".into(),
        Expr::Ceil { .. } => "ceil".into(),
        Expr::Floor { .. } => "floor".into(),
        _ => "?column?".into(),
    }
}
