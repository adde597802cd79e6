//! Casts, EXTRACT, rounding and the scalar functions dpgate can prove
//! safe on every row.

use super::*;

/// The type a CAST target names, if dpgate knows it (the names proxy.toml
/// accepts for a column).
pub(super) fn target_type(dt: &DataType) -> Option<SqlType> {
    ColumnType::parse(&dt.to_string()).map(SqlType::from)
}

/// Casts that cannot fail on any row: between numbers (with a proven
/// range), anything to text, and between dates and timestamps.
pub(super) fn cast(d: Dialect, t: Typed, dt: &DataType) -> Result<Typed, Refusal> {
    let to = target_type(dt).ok_or_else(|| unsupported(format!("CAST to {dt}")))?;
    let refuse =
        || {
            Refusal::unsupported(
            format!("CAST of {} ({}) to {dt} could fail on some rows", t.sql, t.ty.pg_name()),
            "cast between numbers, to text, or between date and timestamp; compare text with text",
        )
        };
    // A date or timestamp literal casts like any date value (below).
    let untyped = !matches!(t.ty, SqlType::Date | SqlType::Timestamp);
    if let (Some(Literal::Text(s)), true) = (&t.literal, untyped) {
        // A literal is checked now: it either reads as the type or is refused.
        if !literal_fits(to, t.literal.as_ref()) {
            return Err(refuse());
        }
        let mut out = t.clone();
        if to.is_numeric() {
            let x: f64 = s.trim().parse().map_err(|_| refuse())?;
            out = literal(d, &Value::Number(s.trim().to_string(), false))?;
            out.range = Range::new(x, x);
        } else if matches!(to, SqlType::Date | SqlType::Timestamp) {
            return typed_string(d, dt, &Value::SingleQuotedString(s.clone()));
        }
        out.ty = to;
        return Ok(out);
    }
    match (t.ty, to) {
        (from, SqlType::Text) => {
            let mut out = Typed::new(d.to_text(&t.sql, from), SqlType::Text, Range::ALL);
            // Text of ints, booleans and text is what the domain lists,
            // in the backend's spelling (`01` becomes `1`, `t` becomes `true`).
            if matches!(from, SqlType::Bool | SqlType::Text | SqlType::Int) {
                let from_ty = from.output();
                out.domain = t.domain.as_ref().map(|values| {
                    let mut spelled: Vec<Option<String>> = Vec::new();
                    for v in values {
                        let v = match crate::types::key_value(v.as_deref(), from_ty) {
                            Cell::Int(i) => Some(i.to_string()),
                            Cell::Bool(b) => Some(b.to_string()),
                            _ => v.clone(),
                        };
                        if !spelled.contains(&v) {
                            spelled.push(v);
                        }
                    }
                    spelled
                });
            }
            Ok(out)
        }
        (SqlType::Int | SqlType::Float, SqlType::Float) => {
            let mut out = Typed::new(d.to_float(&t.operand(d)?), SqlType::Float, t.range);
            out.domain = None;
            Ok(out)
        }
        (SqlType::Int, SqlType::Int) => Ok(t),
        (SqlType::Float, SqlType::Int) => {
            if !t.range.is_finite() {
                return Err(refuse());
            }
            // Either rounding of a tie (PostgreSQL rounds half to even,
            // 0.5 to 0): the range holds both neighbours.
            let r = Range::new(t.range.lo.floor(), t.range.hi.ceil());
            checked(d.float_to_int(&t.operand(d)?), SqlType::Int, r)
        }
        (SqlType::Date | SqlType::Timestamp, SqlType::Date | SqlType::Timestamp) => {
            Ok(Typed::new(d.to_datetime(&t.sql, to), to, Range::ALL))
        }
        (SqlType::Bool, SqlType::Bool) => Ok(t),
        (SqlType::Unknown, _) if t.literal == Some(Literal::Null) => {
            let mut out = t.clone();
            out.ty = to;
            Ok(out)
        }
        _ => Err(refuse()),
    }
}

/// `extract(field FROM d)` as an integer where the field is one, with the
/// field's calendar range as its public domain.
pub(super) fn extract(d: Dialect, field: &str, t: Typed) -> Result<Typed, Refusal> {
    if !matches!(t.ty, SqlType::Date | SqlType::Timestamp) {
        return Err(mismatch(
            format!(
                "extract needs a date or timestamp, but {} is {}",
                t.sql,
                t.ty.pg_name()
            ),
            "extract from a date or timestamp column",
        ));
    }
    let f = field.to_ascii_lowercase();
    let range =
        match f.as_str() {
            "year" | "isoyear" | "decade" | "century" | "millennium" => Range::ALL,
            "quarter" => Range::new(1.0, 4.0),
            "month" => Range::new(1.0, 12.0),
            "week" => Range::new(1.0, 53.0),
            "day" => Range::new(1.0, 31.0),
            "doy" => Range::new(1.0, 366.0),
            "dow" => Range::new(0.0, 6.0),
            "isodow" => Range::new(1.0, 7.0),
            "hour" => Range::new(0.0, 23.0),
            "minute" => Range::new(0.0, 59.0),
            "epoch" => return Ok(Typed::new(d.epoch(&t.sql), SqlType::Float, Range::ALL)),
            _ => return Err(Refusal::unsupported(
                format!("extract({field} ...) is not supported"),
                "extract year, quarter, month, week, day, doy, dow, isodow, hour, minute or epoch",
            )),
        };
    Ok(Typed::new(d.extract(&f, &t.sql), SqlType::Int, range).with_domain(int_domain(range)))
}

/// Every integer of a small finite range, as text.
pub(super) fn int_domain(r: Range) -> Option<Vec<Option<String>>> {
    (r.is_finite() && r.hi - r.lo <= MAX_INT_DOMAIN).then(|| {
        (r.lo as i64..=r.hi as i64)
            .map(|i| Some(i.to_string()))
            .collect()
    })
}

pub(super) fn ceil_floor(
    name: &str,
    expr: &Expr,
    field: &CeilFloorKind,
    scope: &Scope,
) -> Result<Typed, Refusal> {
    match field {
        CeilFloorKind::DateTimeField(sqlparser::ast::DateTimeField::NoDateTime) => {
            rounding(scope.dialect, name, compile(expr, scope)?, None)
        }
        _ => Err(unsupported(format!(
            "{} with a field or scale",
            name.to_uppercase()
        ))),
    }
}

/// ROUND/FLOOR/CEIL/TRUNC: integers stay integers; reals widen by one.
pub(super) fn rounding(
    d: Dialect,
    name: &str,
    t: Typed,
    digits: Option<i64>,
) -> Result<Typed, Refusal> {
    want_numeric(&t, name)?;
    // An integer rounded to a whole digit or finer is itself; to tens or
    // hundreds it is rounded as a float (with its range widened below).
    let x = match (t.ty, digits) {
        (SqlType::Int, Some(k)) if k < 0 => d.to_float(&t.operand(d)?),
        (SqlType::Int, _) => return Ok(t),
        _ => t.operand(d)?,
    };
    // Rounding moves a value by less than one unit of the last kept digit
    // (100 for round(x, -2), which can make 49 a 0).
    let unit = 10f64.powi(-(digits.unwrap_or(0).min(0) as i32)).max(1.0);
    let r = Range::new(t.range.lo - unit, t.range.hi + unit);
    let sql = match digits {
        Some(digits) => d.round_digits(name, &x, digits),
        None => d.round_whole(name, &x),
    };
    checked(sql, SqlType::Float, r)
}

pub(super) fn args(f: &Function) -> Result<Vec<&Expr>, Refusal> {
    let name = object_name(&f.name);
    match &f.args {
        FunctionArguments::List(list)
            if list.duplicate_treatment.is_none() && list.clauses.is_empty() =>
        {
            list.args
                .iter()
                .map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
                    _ => Err(unsupported(format!("this argument form of {name}"))),
                })
                .collect()
        }
        FunctionArguments::None => Ok(vec![]),
        _ => Err(unsupported(format!("this call of {name}"))),
    }
}

pub(super) fn constant_int(t: &Typed, what: &str) -> Result<i64, Refusal> {
    match t.literal {
        Some(Literal::Number(x)) if x.fract() == 0.0 && x.abs() < 1e9 => Ok(x as i64),
        _ => Err(Refusal::unsupported(
            format!("{what} must be a constant integer"),
            format!("write {what} as a number"),
        )),
    }
}

pub(super) fn constant_number(t: &Typed, what: &str) -> Result<f64, Refusal> {
    match t.literal {
        Some(Literal::Number(x)) => Ok(x),
        _ => Err(Refusal::unsupported(
            format!("{what} must be a constant number"),
            format!("write {what} as a number"),
        )),
    }
}

pub(super) fn constant_text(t: &Typed, what: &str) -> Result<String, Refusal> {
    match &t.literal {
        Some(Literal::Text(s)) => Ok(s.to_ascii_lowercase()),
        _ => Err(Refusal::unsupported(
            format!("{what} must be a constant string"),
            format!("write {what} as a string, e.g. 'month'"),
        )),
    }
}

pub(super) fn function(f: &Function, scope: &Scope) -> Result<Typed, Refusal> {
    let name = object_name(&f.name).to_ascii_lowercase();
    let d = scope.dialect;
    if f.over.is_some() || f.filter.is_some() || !f.within_group.is_empty() {
        return Err(unsupported(format!(
            "{name}(...) with OVER, FILTER or WITHIN GROUP here"
        )));
    }
    if crate::types::is_aggregate(&name) {
        return Err(Refusal::new(
            sqlstate::GROUPING_ERROR,
            format!("aggregate function {name} is not allowed here"),
            "aggregates belong in the select list, HAVING or ORDER BY, not inside row expressions",
        ));
    }
    let a: Vec<Typed> = args(f)?
        .into_iter()
        .map(|e| compile(e, scope))
        .collect::<Result<_, _>>()?;
    let arity = |n: usize| -> Result<(), Refusal> {
        if a.len() == n {
            Ok(())
        } else {
            Err(mismatch(
                format!("{name} takes {n} argument(s), not {}", a.len()),
                format!("call {name} with {n} argument(s)"),
            ))
        }
    };
    match name.as_str() {
        "abs" => {
            arity(1)?;
            want_numeric(&a[0], "abs")?;
            let r = a[0].range;
            let lo = if r.contains_zero() {
                0.0
            } else {
                r.lo.abs().min(r.hi.abs())
            };
            checked(
                format!("abs({})", a[0].operand(d)?),
                a[0].ty,
                Range::new(lo, r.max_abs()),
            )
        }
        "sign" => {
            arity(1)?;
            want_numeric(&a[0], "sign")?;
            // PostgreSQL's sign() of a bigint is a double: cast it back.
            let sql = match a[0].ty {
                SqlType::Int => d.float_to_int(&format!("sign({})", a[0].operand(d)?)),
                _ => format!("sign({})", a[0].operand(d)?),
            };
            checked(sql, a[0].ty, Range::new(-1.0, 1.0))
        }
        "round" | "trunc" if a.len() == 2 => {
            let digits = constant_int(&a[1], "the number of digits")?;
            rounding(d, &name, a[0].clone(), Some(digits.clamp(-20, 20)))
        }
        "round" | "trunc" | "floor" | "ceil" | "ceiling" => {
            arity(1)?;
            rounding(d, &name, a[0].clone(), None)
        }
        "sqrt" => {
            arity(1)?;
            want_numeric(&a[0], "sqrt")?;
            let r = a[0].range;
            checked(
                format!(
                    "sqrt(CASE WHEN {x} < 0 THEN 0 ELSE {x} END)",
                    x = d.to_float(&a[0].operand(d)?)
                ),
                SqlType::Float,
                Range::new(r.lo.max(0.0).sqrt(), r.hi.max(0.0).sqrt()),
            )
        }
        "least" | "greatest" => {
            if a.is_empty() {
                return Err(mismatch(
                    format!("{name} needs arguments"),
                    "pass two or more values",
                ));
            }
            let refs: Vec<&Typed> = a.iter().collect();
            let ty = unify(&refs, &name)?;
            let parts: Vec<&Typed> = a
                .iter()
                .filter(|t| t.literal != Some(Literal::Null))
                .collect();
            let pick = |f: fn(f64, f64) -> f64, g: fn(&Range) -> f64| {
                parts
                    .iter()
                    .map(|t| g(&t.range))
                    .reduce(f)
                    .unwrap_or(f64::NAN)
            };
            let range = if name == "least" {
                Range::new(pick(f64::min, |r| r.lo), pick(f64::min, |r| r.hi))
            } else {
                Range::new(pick(f64::max, |r| r.lo), pick(f64::max, |r| r.hi))
            };
            let sqls = a
                .iter()
                .map(|t| branch_sql(d, t, ty))
                .collect::<Result<Vec<_>, _>>()?;
            let sql = d.least_greatest(name == "greatest", &sqls);
            // No arithmetic happens here, so nothing can overflow: an
            // unbounded argument stays unbounded on its open side.
            let range = if ty.is_numeric() { range } else { Range::ALL };
            Ok(Typed::new(sql, ty, range))
        }
        "coalesce" => {
            if a.is_empty() {
                return Err(mismatch(
                    "coalesce needs arguments".into(),
                    "pass two or more values",
                ));
            }
            let refs: Vec<&Typed> = a.iter().collect();
            let ty = unify(&refs, "COALESCE")?;
            let (range, domain) = merge(&refs);
            let sqls = a
                .iter()
                .map(|t| branch_sql(d, t, ty))
                .collect::<Result<Vec<_>, _>>()?;
            let range = if ty.is_numeric() { range } else { Range::ALL };
            // The last argument decides whether NULL remains possible.
            let domain = domain.map(|mut d| {
                if a.last()
                    .and_then(|t| t.domain.as_ref())
                    .is_some_and(|d| !d.contains(&None))
                {
                    d.retain(|v| v.is_some());
                }
                d
            });
            Ok(Typed::new(format!("COALESCE({})", sqls.join(", ")), ty, range).with_domain(domain))
        }
        "nullif" => {
            arity(2)?;
            comparable(&a[0], &a[1])?;
            let mut domain = a[0].domain.clone();
            if let Some(d) = domain.as_mut() {
                d.push(None);
            }
            // NULLIF(int, float) is a float in PostgreSQL.
            let (first, ty) = if a[0].ty == SqlType::Int && a[1].ty == SqlType::Float {
                (d.to_float(&a[0].operand(d)?), SqlType::Float)
            } else {
                (a[0].operand(d)?, a[0].ty)
            };
            Ok(Typed::new(
                format!("NULLIF({first}, {})", coerced(d, &a[1], ty)),
                ty,
                a[0].range,
            )
            .with_domain(domain))
        }
        "lower" | "upper" => {
            arity(1)?;
            if !matches!(a[0].ty, SqlType::Text | SqlType::Unknown) {
                return Err(mismatch(
                    format!("{name} needs text"),
                    "apply it to a text column",
                ));
            }
            let domain = a[0].domain.as_ref().map(|d| {
                let mut out: Vec<Option<String>> = Vec::new();
                for v in d {
                    let m = v.as_ref().map(|s| {
                        if name == "lower" {
                            s.to_lowercase()
                        } else {
                            s.to_uppercase()
                        }
                    });
                    if !out.contains(&m) {
                        out.push(m);
                    }
                }
                out
            });
            Ok(
                Typed::new(format!("{name}({})", a[0].sql), SqlType::Text, Range::ALL)
                    .with_domain(domain),
            )
        }
        "length" | "char_length" => {
            arity(1)?;
            if !matches!(a[0].ty, SqlType::Text | SqlType::Unknown) {
                return Err(mismatch(
                    format!("{name} needs text"),
                    "apply it to a text column",
                ));
            }
            Ok(Typed::new(
                d.int(&format!("length({})", a[0].sql)),
                SqlType::Int,
                Range::new(0.0, f64::INFINITY),
            ))
        }
        "date_trunc" => {
            arity(2)?;
            let unit = constant_text(&a[0], "the date_trunc unit")?;
            const UNITS: [&str; 9] = [
                "year", "quarter", "month", "week", "day", "hour", "minute", "decade", "century",
            ];
            if !UNITS.contains(&unit.as_str()) {
                return Err(Refusal::unsupported(
                    format!("date_trunc('{unit}', ...) is not supported"),
                    format!("truncate to one of: {}", UNITS.join(", ")),
                ));
            }
            if !matches!(a[1].ty, SqlType::Date | SqlType::Timestamp) {
                return Err(mismatch(
                    format!(
                        "date_trunc needs a date or timestamp, but {} is {}",
                        a[1].sql,
                        a[1].ty.pg_name()
                    ),
                    "truncate a date or timestamp column",
                ));
            }
            Ok(Typed::new(
                d.date_trunc(&unit, &a[1].sql),
                SqlType::Timestamp,
                Range::ALL,
            ))
        }
        "date_part" => {
            arity(2)?;
            let field = constant_text(&a[0], "the date_part field")?;
            extract(d, &field, a[1].clone())
        }
        "width_bucket" => {
            arity(4)?;
            want_numeric(&a[0], "width_bucket")?;
            let lo = constant_number(&a[1], "the lower edge")?;
            let hi = constant_number(&a[2], "the upper edge")?;
            let n = constant_int(&a[3], "the bucket count")?;
            if lo == hi || !(1..=10_000).contains(&n) {
                return Err(Refusal::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    "width_bucket needs distinct edges and between 1 and 10000 buckets",
                    "e.g. width_bucket(age, 0, 100, 10)",
                ));
            }
            // The operand is read as a finite float: NaN or ±Infinity
            // would make PostgreSQL raise an error.
            let x = if a[0].column && a[0].range.is_finite() {
                d.clamp(&a[0].sql, SqlType::Float, a[0].range.lo, a[0].range.hi)
            } else {
                d.clamp(&a[0].operand(d)?, SqlType::Float, -1e300, 1e300)
            };
            let range = Range::new(0.0, (n + 1) as f64);
            Ok(
                Typed::new(d.width_bucket(&x, lo, hi, n), SqlType::Int, range).with_domain(
                    int_domain(range)
                        .or_else(|| Some((0..=n + 1).map(|i| Some(i.to_string())).collect())),
                ),
            )
        }
        _ => Err(unsupported(format!("the function {name}"))),
    }
}
