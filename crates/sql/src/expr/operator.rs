//! Unary and binary operators, comparisons, IS tests and LIKE, with the
//! interval arithmetic that proves each result's range, so no row can
//! overflow, divide by zero or underflow in the backend.

use super::*;

pub(super) fn unary(d: Dialect, op: UnaryOperator, t: Typed) -> Result<Typed, Refusal> {
    match op {
        UnaryOperator::Not => {
            want_bool(&t, "NOT")?;
            Ok(boolean(format!("NOT {}", t.sql)))
        }
        UnaryOperator::Minus | UnaryOperator::Plus => {
            want_numeric(&t, &op.to_string())?;
            if op == UnaryOperator::Plus {
                return Ok(t);
            }
            if let Some(Literal::Number(x)) = t.literal {
                if t.ty == SqlType::Int {
                    // Exact, from the literal's own digits; the negation of
                    // the smallest bigint does not exist.
                    let digits = int_literal_digits(&t).unwrap_or_default();
                    let v = digits
                        .parse::<i64>()
                        .ok()
                        .and_then(i64::checked_neg)
                        .ok_or_else(|| {
                            Refusal::new(
                                sqlstate::INVALID_PARAMETER_VALUE,
                                format!("-({digits}) is out of range for bigint"),
                                "use a smaller constant",
                            )
                        })?;
                    return literal(d, &Value::Number(v.to_string(), false));
                }
                return literal(d, &Value::Number(format!("{}", -x), false));
            }
            let r = Range::new(-t.range.hi, -t.range.lo);
            let mut negated = checked(format!("(- {})", t.operand(d)?), t.ty, r)?;
            negated.not_null = t.not_null;
            Ok(negated)
        }
        other => Err(unsupported(format!("the operator {other}"))),
    }
}

pub(super) fn want_bool(t: &Typed, what: &str) -> Result<(), Refusal> {
    if matches!(t.ty, SqlType::Bool | SqlType::Unknown) {
        Ok(())
    } else {
        Err(mismatch(
            format!("argument of {what} must be boolean, not {}", t.ty.pg_name()),
            "use a comparison, e.g. age > 40",
        ))
    }
}

pub(super) fn want_numeric(t: &Typed, what: &str) -> Result<(), Refusal> {
    if t.ty.is_numeric() {
        Ok(())
    } else if let Some(Literal::Text(s)) = &t.literal {
        Err(mismatch(
            format!("'{s}' is a string, not a number, in {what}"),
            "write numbers without quotes",
        ))
    } else {
        Err(mismatch(
            format!("{what} needs numbers, but {} is {}", t.sql, t.ty.pg_name()),
            "apply arithmetic to int or float columns",
        ))
    }
}

/// A numeric result, refused if its range could overflow the backend type.
pub(super) fn checked(sql: String, ty: SqlType, range: Range) -> Result<Typed, Refusal> {
    let limit = if ty == SqlType::Int {
        INT_LIMIT
    } else {
        FLOAT_LIMIT
    };
    if range.lo.is_nan() || range.hi.is_nan() || range.max_abs() > limit {
        return Err(Refusal::unsupported(
            format!("{sql} could exceed ±{limit:e} for some rows"),
            "use smaller constants, or clamp with LEAST/GREATEST first",
        ));
    }
    Ok(Typed::new(sql, ty, range))
}

pub(super) fn numeric_type(a: &Typed, b: &Typed) -> SqlType {
    if a.ty == SqlType::Int && b.ty == SqlType::Int {
        SqlType::Int
    } else {
        SqlType::Float
    }
}

pub(super) fn product(a: f64, b: f64) -> f64 {
    // 0 × ∞ counts as 0: an exact zero factor stays zero.
    if a == 0.0 || b == 0.0 {
        0.0
    } else {
        a * b
    }
}

pub(super) fn hull_of(points: [f64; 4]) -> Range {
    let lo = points.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = points.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    Range::new(lo, hi)
}

pub(super) fn binary(
    d: Dialect,
    a: Typed,
    op: &BinaryOperator,
    b: Typed,
) -> Result<Typed, Refusal> {
    use BinaryOperator::*;
    match op {
        And | Or => {
            want_bool(&a, &op.to_string())?;
            want_bool(&b, &op.to_string())?;
            Ok(boolean(format!("{} {op} {}", a.sql, b.sql)))
        }
        Eq | NotEq if a.is_unit != b.is_unit => Ok(boolean(format!(
            "{} {op} {}",
            as_text(d, &a),
            as_text(d, &b)
        ))),
        Lt | LtEq | Gt | GtEq if a.is_unit || b.is_unit => Err(Refusal::unsupported(
            "the privacy unit can only be compared with = or <>",
            "compare it for equality, e.g. WHERE patient_id = '42', or join on it",
        )),
        Eq | NotEq | Lt | LtEq | Gt | GtEq => {
            comparable(&a, &b)?;
            Ok(boolean(format!(
                "{} {op} {}",
                coerced(d, &a, b.ty),
                coerced(d, &b, a.ty)
            )))
        }
        StringConcat => {
            for t in [&a, &b] {
                if !matches!(t.ty, SqlType::Text | SqlType::Unknown) {
                    return Err(mismatch(
                        format!("|| joins text, but {} is {}", t.sql, t.ty.pg_name()),
                        "cast it first: CAST(x AS text)",
                    ));
                }
            }
            Ok(Typed::new(
                format!("({} || {})", a.sql, b.sql),
                SqlType::Text,
                Range::ALL,
            ))
        }
        Plus | Minus | Multiply | Divide | Modulo => {
            want_numeric(&a, &op.to_string())?;
            want_numeric(&b, &op.to_string())?;
            // Integer constants are folded here, in 64 bits: a backend
            // reads small ones as 32-bit integers, whose arithmetic could
            // overflow, and Spark would raise that per row inside CASE.
            if let (Some(p), Some(q)) = (int_literal_digits(&a), int_literal_digits(&b)) {
                let (p, q) = (p.parse::<i64>(), q.parse::<i64>());
                if let (Ok(p), Ok(q), Plus | Minus | Multiply) = (p, q, op) {
                    let folded = match op {
                        Plus => p.checked_add(q),
                        Minus => p.checked_sub(q),
                        _ => p.checked_mul(q),
                    }
                    .filter(|v| (*v as f64).abs() <= INT_LIMIT)
                    .ok_or_else(|| {
                        Refusal::unsupported(
                            format!("{p} {op} {q} is out of the range dpgate computes with (±{INT_LIMIT:e})"),
                            "use smaller constants",
                        )
                    })?;
                    return literal(d, &Value::Number(folded.to_string(), false));
                }
            }
            let ty = numeric_type(&a, &b);
            let (x, y) = (a.operand(d)?, b.operand(d)?);
            let (ra, rb) = (a.range, b.range);
            // +, - and * of values are values; / and % may give NULL.
            let not_null = a.not_null && b.not_null && matches!(op, Plus | Minus | Multiply);
            let result = match op {
                Plus => checked(
                    format!("({x} + {y})"),
                    ty,
                    Range::new(ra.lo + rb.lo, ra.hi + rb.hi),
                ),
                Minus => checked(
                    format!("({x} - {y})"),
                    ty,
                    Range::new(ra.lo - rb.hi, ra.hi - rb.lo),
                ),
                Multiply if ty == SqlType::Float => checked(
                    flushed(format!("({x} * {y})")),
                    ty,
                    flushed_range(hull_of([
                        product(ra.lo, rb.lo),
                        product(ra.lo, rb.hi),
                        product(ra.hi, rb.lo),
                        product(ra.hi, rb.hi),
                    ])),
                ),
                Multiply => checked(
                    format!("({x} * {y})"),
                    ty,
                    hull_of([
                        product(ra.lo, rb.lo),
                        product(ra.lo, rb.hi),
                        product(ra.hi, rb.lo),
                        product(ra.hi, rb.hi),
                    ]),
                ),
                Divide => divide(d, &x, ra, &y, rb, ty),
                _ => {
                    if ty != SqlType::Int {
                        return Err(mismatch(
                            "% needs integers".into(),
                            "apply % to int columns, or use FLOOR for real numbers",
                        ));
                    }
                    let m = rb.max_abs();
                    let r = Range::new(
                        if ra.lo < 0.0 { -m } else { 0.0 },
                        if ra.hi > 0.0 { m } else { 0.0 },
                    );
                    checked(format!("({x} % NULLIF({y}, 0))"), ty, r)
                }
            };
            result.map(|mut t| {
                t.not_null = not_null;
                t
            })
        }
        other => Err(unsupported(format!("the operator {other}"))),
    }
}

/// The digits of an integer literal (its domain's one value), if `t` is one.
fn int_literal_digits(t: &Typed) -> Option<String> {
    match (&t.literal, t.ty) {
        (Some(Literal::Number(_)), SqlType::Int) => t
            .domain
            .as_ref()
            .and_then(|values| values.first().cloned().flatten())
            .map(|d| d.trim().to_string()),
        _ => None,
    }
}

/// Division that cannot fail: a zero divisor gives NULL (PostgreSQL would
/// raise an error that reveals a row), and a float divisor nearer zero than
/// [`MIN_DIVISOR`] too, so the quotient cannot overflow.
pub(super) fn divide(
    d: Dialect,
    x: &str,
    ra: Range,
    y: &str,
    rb: Range,
    ty: SqlType,
) -> Result<Typed, Refusal> {
    // An unbounded operand (a quotient whose divisor could be near zero)
    // must be clamped before it is divided again: chained quotients of
    // near-zero divisors would otherwise overflow on some rows.
    if !ra.is_finite() || !rb.is_finite() {
        return Err(Refusal::unsupported(
            format!("{x} / {y} divides an expression without a proven bound"),
            "clamp the operand first, e.g. LEAST(GREATEST(a / b, -1000), 1000) / c",
        ));
    }
    if !rb.contains_zero() {
        let r = hull_of([ra.lo / rb.lo, ra.lo / rb.hi, ra.hi / rb.lo, ra.hi / rb.hi]);
        return match ty {
            SqlType::Int => checked(d.int_div(x, y), ty, Range::new(r.lo.trunc(), r.hi.trunc())),
            _ => checked(flushed(format!("({x} / {y})")), ty, flushed_range(r)),
        };
    }
    if ty == SqlType::Int {
        // |y| ≥ 1 whenever it is not zero, so |x / y| ≤ |x|.
        let m = ra.max_abs();
        return checked(
            d.int_div(x, &format!("NULLIF({y}, 0)")),
            ty,
            Range::new(-m, m),
        );
    }
    Ok(Typed::new(
        flushed(format!(
            "(CASE WHEN abs({y}) >= {MIN_DIVISOR:e} THEN {x} / {y} END)"
        )),
        ty,
        Range::ALL,
    ))
}

/// A value as text, for comparisons with the privacy unit, whose backend
/// type dpgate does not know: text against text never fails, whatever the
/// unit's type (`patient_id = 'abc'` is false, not an error).
pub(super) fn as_text(d: Dialect, t: &Typed) -> String {
    match &t.literal {
        Some(Literal::Null) => "NULL".into(),
        Some(Literal::Text(s)) => quote_literal(s),
        Some(Literal::Number(x)) if t.ty == SqlType::Int => quote_literal(&(*x as i64).to_string()),
        Some(Literal::Number(x)) => quote_literal(&x.to_string()),
        Some(Literal::Bool(b)) => quote_literal(&b.to_string()),
        None => d.to_text(&t.sql, t.ty),
    }
}

/// Refuses comparisons PostgreSQL would reject while reading rows (e.g.
/// `age = 'abc'`), before anything is charged.
pub(super) fn comparable(a: &Typed, b: &Typed) -> Result<(), Refusal> {
    use SqlType::*;
    let ok = match (a.ty, b.ty) {
        (x, y) if x == y => true,
        (Int | Float, Int | Float) => true,
        (Date | Timestamp, Date | Timestamp) => true,
        (Unknown, _) | (_, Unknown) => {
            let (typed, other) = if a.ty == Unknown { (b, a) } else { (a, b) };
            literal_fits(typed.ty, other.literal.as_ref())
        }
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let (col, other) = if a.literal.is_some() { (b, a) } else { (a, b) };
    Err(mismatch(
        format!(
            "{} is {} and cannot be compared with {}",
            col.sql,
            col.ty.pg_name(),
            other.sql
        ),
        format!("compare it with a {} value", col.ty.pg_name()),
    ))
}

/// Whether a literal of unknown type reads as a value of `ty`.
pub(super) fn literal_fits(ty: SqlType, lit: Option<&Literal>) -> bool {
    let Some(Literal::Text(s)) = lit else {
        // NULL, or an expression of unknown type (a privacy unit).
        return true;
    };
    match ty {
        SqlType::Int => s.trim().parse::<i64>().is_ok(),
        SqlType::Float => float_text_fits(s),
        SqlType::Bool => parse_bool(s).is_some(),
        SqlType::Date | SqlType::Timestamp => check_date_text(s, ty).is_ok(),
        SqlType::Text | SqlType::Unknown => true,
    }
}

pub(super) fn is_check(e: &Expr, what: &str, want: bool, scope: &Scope) -> Result<Typed, Refusal> {
    let t = compile(e, scope)?;
    if want {
        want_bool(&t, what)?;
    }
    Ok(
        Typed::new(format!("{} {what}", t.sql), SqlType::Bool, Range::ALL)
            .with_domain(Some(vec![Some("true".into()), Some("false".into())])),
    )
}

pub(super) fn like(
    expr: &Expr,
    pattern: &Expr,
    negated: bool,
    ilike: bool,
    scope: &Scope,
) -> Result<Typed, Refusal> {
    let op = if ilike { "ILIKE" } else { "LIKE" };
    let subject = compile(expr, scope)?;
    if !matches!(subject.ty, SqlType::Text | SqlType::Unknown) {
        return Err(mismatch(
            format!(
                "{op} matches text, but {} is {}",
                subject.sql,
                subject.ty.pg_name()
            ),
            "apply LIKE to text columns",
        ));
    }
    let pattern = compile(pattern, scope)?;
    let Some(Literal::Text(p)) = &pattern.literal else {
        return Err(Refusal::unsupported(
            format!("{op} needs a constant pattern"),
            "write the pattern as a string, e.g. LIKE 'A%'",
        ));
    };
    // A pattern ending in a lone escape character is a backend error.
    let trailing = p.chars().rev().take_while(|c| *c == '\\').count();
    if trailing % 2 == 1 {
        return Err(Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            "LIKE pattern must not end with the escape character",
            "double the trailing backslash",
        ));
    }
    Ok(boolean(scope.dialect.like(&subject.sql, p, negated, ilike)))
}
