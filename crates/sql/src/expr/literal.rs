//! Literals as written: numbers, strings, booleans and typed strings
//! (`DATE '2024-01-31'`), checked so the backend can never fail to read them.

use super::*;

pub(super) fn literal(d: Dialect, value: &Value) -> Result<Typed, Refusal> {
    // The literal as the domain spells it (an integer's digits).
    let mut spelled = None;
    let (sql, ty, lit) = match value {
        Value::Null => ("NULL".to_string(), SqlType::Unknown, Literal::Null),
        Value::Boolean(b) => (
            b.to_string().to_uppercase(),
            SqlType::Bool,
            Literal::Bool(*b),
        ),
        Value::Number(n, _) => {
            let x: f64 = n
                .parse()
                .map_err(|_| unsupported(format!("the number {n}")))?;
            let int = n.parse::<i64>().is_ok();
            // Every float value dpgate computes with is 0 or at least
            // MIN_MAGNITUDE in size, and at most FLOAT_LIMIT (see `flushed`).
            if !int
                && (!x.is_finite()
                    || x.abs() > FLOAT_LIMIT
                    || (x != 0.0 && x.abs() < MIN_MAGNITUDE))
            {
                return Err(Refusal::unsupported(
                    format!("the constant {n} is outside the magnitudes dpgate computes with (0, or {MIN_MAGNITUDE:e} to {FLOAT_LIMIT:e})"),
                    "scale the expression instead, e.g. SUM(x) * 1e-200 after the aggregate",
                ));
            }
            let sql = if int { n.clone() } else { format!("{x:e}") };
            spelled = Some(sql.clone());
            let sql = if int { d.int_literal(&sql) } else { sql };
            let ty = if int { SqlType::Int } else { SqlType::Float };
            (sql, ty, Literal::Number(x))
        }
        Value::SingleQuotedString(s)
        | Value::DollarQuotedString(sqlparser::ast::DollarQuotedString { value: s, .. }) => {
            (quote_literal(s), SqlType::Unknown, Literal::Text(s.clone()))
        }
        Value::Placeholder(p) => {
            return Err(Refusal::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("parameter {p} has no value"),
                "bind a value for every $n parameter",
            ))
        }
        other => return Err(unsupported(format!("the literal {other}"))),
    };
    let range = match lit {
        Literal::Number(x) => Range::new(x, x),
        _ => Range::ALL,
    };
    let domain = match &lit {
        Literal::Null => Some(vec![None]),
        Literal::Text(s) => Some(vec![Some(s.clone())]),
        Literal::Bool(b) => Some(vec![Some(b.to_string())]),
        Literal::Number(_) => Some(vec![spelled]),
    };
    let mut t = Typed::new(sql, ty, range).with_domain(domain);
    t.not_null = lit != Literal::Null;
    t.literal = Some(lit);
    Ok(t)
}

/// `DATE '2024-01-31'`, `TIMESTAMP '2024-01-31 10:00'`: checked here so a
/// malformed literal is refused before the charge.
pub(super) fn typed_string(
    d: Dialect,
    data_type: &DataType,
    value: &Value,
) -> Result<Typed, Refusal> {
    let text = match value {
        Value::SingleQuotedString(s) => s.clone(),
        other => return Err(unsupported(format!("the literal {other}"))),
    };
    let ty = match target_type(data_type) {
        Some(t @ (SqlType::Date | SqlType::Timestamp)) => t,
        _ => {
            return Err(unsupported(format!(
                "the typed literal {data_type} '{text}'"
            )))
        }
    };
    let canonical = check_date_text(&text, ty)?;
    let mut t = Typed::new(d.datetime_literal(&canonical, ty), ty, Range::ALL);
    t.literal = Some(Literal::Text(text));
    Ok(t)
}

/// A date (`YYYY-MM-DD`) or timestamp (date, then an optional time).
/// Whether float8 input reads `s` without an error: a finite number that
/// does not underflow to zero, or one of the special values.
pub(super) fn float_text_fits(s: &str) -> bool {
    let t = s.trim();
    let special = [
        "nan",
        "infinity",
        "+infinity",
        "-infinity",
        "inf",
        "+inf",
        "-inf",
    ];
    if special.contains(&t.to_ascii_lowercase().as_str()) {
        return true;
    }
    let Ok(x) = t.parse::<f64>() else {
        return false;
    };
    let zero_text = !t
        .split(['e', 'E'])
        .next()
        .unwrap_or("")
        .chars()
        .any(|c| ('1'..='9').contains(&c));
    x.is_finite() && (x.abs() >= f64::MIN_POSITIVE || (x == 0.0 && zero_text))
}

/// Whether `y-m-d` is a calendar date of years 1–9999.
pub(super) fn calendar_date(y: u32, m: u32, d: u32) -> bool {
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=9999).contains(&y) && (1..=days).contains(&d)
}

/// Whether `t` is `HH:MM`, `HH:MM:SS` or `HH:MM:SS.ffffff` of a real time
/// (a fraction only after the seconds: PostgreSQL reads `10:00.5` as
/// minutes and seconds, Spark refuses it).
pub(super) fn clock_time(t: &str) -> bool {
    let (hms, frac) = t.split_once('.').unwrap_or((t, "0"));
    let parts: Vec<&str> = hms.split(':').collect();
    let number = |p: &str, max: u32| {
        p.len() == 2
            && p.chars().all(|c| c.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|v| v <= max)
    };
    (2..=3).contains(&parts.len())
        && (parts.len() == 3 || !t.contains('.'))
        && number(parts[0], 23)
        && number(parts[1], 59)
        && parts.get(2).is_none_or(|s| number(s, 59))
        && (1..=6).contains(&frac.len())
        && frac.chars().all(|c| c.is_ascii_digit())
}

/// `text` as a date or timestamp of years 1–9999, in the one spelling
/// every backend reads (`YYYY-MM-DD` or `YYYY-MM-DD HH:MM[:SS[.f]]`, no
/// surrounding space of any kind: Spark trims only ASCII), or a refusal.
pub(super) fn check_date_text(text: &str, ty: SqlType) -> Result<String, Refusal> {
    let t = text.trim();
    let date = t.get(..10).unwrap_or("");
    let rest = t.get(10..).unwrap_or("");
    let parts: Vec<&str> = date.split('-').collect();
    let ok_date = parts.len() == 3
        && parts[0].len() == 4
        && parts[1].len() == 2
        && parts[2].len() == 2
        && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit()))
        && calendar_date(
            parts[0].parse().unwrap_or(0),
            parts[1].parse().unwrap_or(0),
            parts[2].parse().unwrap_or(0),
        );
    let ok_rest = match ty {
        SqlType::Date => rest.is_empty(),
        _ => rest.is_empty() || (rest.starts_with([' ', 'T']) && clock_time(&rest[1..])),
    };
    if ok_date && ok_rest {
        Ok(match rest.get(1..) {
            Some(time) => format!("{date} {time}"),
            None => date.to_string(),
        })
    } else {
        Err(mismatch(
            format!("'{text}' is not a valid {}", ty.pg_name()),
            "write dates as 'YYYY-MM-DD' and timestamps as 'YYYY-MM-DD HH:MM:SS'",
        ))
    }
}
