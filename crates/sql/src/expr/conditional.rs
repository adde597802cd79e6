//! CASE, COALESCE, NULLIF, GREATEST and LEAST: one type for every branch,
//! the hull of the branches' ranges, and the union of their domains.

use super::*;

/// The common type of CASE branches, COALESCE and LEAST/GREATEST arguments.
pub(super) fn unify(parts: &[&Typed], what: &str) -> Result<SqlType, Refusal> {
    let mut ty = SqlType::Unknown;
    for t in parts {
        ty = match (ty, t.ty) {
            (SqlType::Unknown, x) | (x, SqlType::Unknown) => x,
            (x, y) if x == y => x,
            (SqlType::Int | SqlType::Float, SqlType::Int | SqlType::Float) => SqlType::Float,
            (SqlType::Date | SqlType::Timestamp, SqlType::Date | SqlType::Timestamp) => {
                SqlType::Timestamp
            }
            (x, y) => {
                return Err(mismatch(
                    format!("{what} mixes {} and {}", x.pg_name(), y.pg_name()),
                    "give every branch the same type, e.g. with CAST",
                ))
            }
        };
    }
    if ty == SqlType::Unknown
        && parts
            .iter()
            .any(|t| matches!(t.literal, Some(Literal::Text(_))))
    {
        ty = SqlType::Text;
    }
    Ok(ty)
}

/// Range and domain over alternatives (NULL alternatives add no range).
pub(super) fn merge(parts: &[&Typed]) -> (Range, Option<Vec<Option<String>>>) {
    let mut range: Option<Range> = None;
    let mut domain: Option<Vec<Option<String>>> = Some(Vec::new());
    for t in parts {
        if t.literal != Some(Literal::Null) {
            range = Some(range.map_or(t.range, |r| r.hull(t.range)));
        }
        domain = match (domain, &t.domain) {
            (Some(mut d), Some(more)) => {
                for v in more {
                    if !d.contains(v) {
                        d.push(v.clone());
                    }
                }
                Some(d)
            }
            _ => None,
        };
    }
    (range.unwrap_or(Range::ALL), domain)
}

/// Operand SQL cast to the unified type (int literals in a float CASE etc.).
pub(super) fn branch_sql(d: Dialect, t: &Typed, ty: SqlType) -> Result<String, Refusal> {
    // An untyped string among typed branches takes their type: it must read
    // as a value of it now (`'infinity'` or `'abc'` would fail in the
    // backend, on the rows that reach that branch).
    if let (Some(Literal::Text(s)), SqlType::Unknown) = (&t.literal, t.ty) {
        if !matches!(ty, SqlType::Text | SqlType::Unknown) {
            if !literal_fits(ty, t.literal.as_ref()) {
                return Err(mismatch(
                    format!("'{s}' is not a valid {}", ty.pg_name()),
                    format!("give every branch a {} value", ty.pg_name()),
                ));
            }
            return Ok(coerced(d, t, ty));
        }
    }
    let sql = t.operand(d)?;
    Ok(if t.ty == SqlType::Int && ty == SqlType::Float {
        d.to_float(&sql)
    } else {
        sql
    })
}

/// SQL of `t` for comparison with a value of type `with`: an untyped
/// string literal is written as a literal of that type, as PostgreSQL
/// would read it (SQLite would otherwise compare it as text).
pub(super) fn coerced(d: Dialect, t: &Typed, with: SqlType) -> String {
    let Some(Literal::Text(s)) = &t.literal else {
        return t.sql.clone();
    };
    if t.ty != SqlType::Unknown {
        return t.sql.clone();
    }
    match with {
        SqlType::Int | SqlType::Float => match s.trim().parse::<f64>() {
            Ok(x) if s.trim().parse::<i64>().is_ok() => d.int_literal(&(x as i64).to_string()),
            Ok(x) if x.is_finite() => format!("{x:e}"),
            // NaN and infinities in a spelling the cast reads (the text
            // may hold Unicode space PostgreSQL and Spark do not trim);
            // SQLite compares the text as text, as before.
            Ok(x) if d != Dialect::Sqlite => d.to_float(if x.is_nan() {
                "'NaN'"
            } else if x < 0.0 {
                "'-Infinity'"
            } else {
                "'Infinity'"
            }),
            _ => t.sql.clone(),
        },
        SqlType::Bool => match parse_bool(s) {
            Some(b) => d.bool_literal(b),
            None => t.sql.clone(),
        },
        // Checked by `comparable` first; the canonical spelling is sent.
        SqlType::Date | SqlType::Timestamp => match check_date_text(s, with) {
            Ok(canonical) => d.datetime_literal(&canonical, with),
            Err(_) => t.sql.clone(),
        },
        SqlType::Text | SqlType::Unknown => t.sql.clone(),
    }
}

pub(super) fn case(
    operand: Option<&Expr>,
    conditions: &[sqlparser::ast::CaseWhen],
    else_result: Option<&Expr>,
    scope: &Scope,
) -> Result<Typed, Refusal> {
    let d = scope.dialect;
    let subject = operand.map(|o| compile(o, scope)).transpose()?;
    let mut whens = Vec::new();
    let mut results = Vec::new();
    for cw in conditions {
        let cond = compile(&cw.condition, scope)?;
        match &subject {
            Some(s) => {
                comparable(s, &cond)?;
                whens.push(coerced(d, &cond, s.ty));
            }
            None => {
                want_bool(&cond, "CASE WHEN")?;
                whens.push(cond.sql);
            }
        }
        results.push(compile(&cw.result, scope)?);
    }
    let else_t = match else_result {
        Some(e) => compile(e, scope)?,
        None => literal(d, &Value::Null)?,
    };
    results.push(else_t);
    let refs: Vec<&Typed> = results.iter().collect();
    let ty = unify(&refs, "CASE")?;
    let (range, domain) = merge(&refs);
    let mut sql = String::from("CASE");
    if let Some(s) = &subject {
        sql.push_str(&format!(" {}", s.sql));
    }
    for (w, r) in whens.iter().zip(&results) {
        sql.push_str(&format!(" WHEN {w} THEN {}", branch_sql(d, r, ty)?));
    }
    let last = results.last().expect("else branch");
    sql.push_str(&format!(" ELSE {} END", branch_sql(d, last, ty)?));
    if ty == SqlType::Text && results.iter().all(|r| r.literal.is_some()) {
        // Untyped string literals: make the result text, as PostgreSQL does.
        sql = d.to_text(&sql, SqlType::Text);
    }
    let bounded = if ty.is_numeric() { range } else { Range::ALL };
    Ok(Typed::new(sql, ty, bounded).with_domain(domain))
}
