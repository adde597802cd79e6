//! Spark SQL spellings that take more than a line, and the quoting
//! conversion every Spark statement goes through.
//!
//! Spark runs in ANSI mode: an overflowing integer, an invalid cast or a
//! division by zero raises an error, and an error that depends on a row
//! reveals that row. Each spelling here is total on every value its
//! input can hold.

/// `sql`, written with standard quoting, as Spark must read it.
///
/// The planner writes identifiers as `"name"` (`""` for a quote) and text
/// as `'text'` (`''` for a quote). Spark reads `"name"` as a string
/// unless the server sets `spark.sql.ansi.doubleQuotedIdentifiers`, reads
/// backslash escapes inside strings, and joins adjacent strings
/// (`'it''s'` would read as `its`). So identifiers become backticked
/// (`` ` `` doubled), and in strings a quote becomes `\'`, a backslash
/// `\\`, and `$` becomes `\u0024` (Spark substitutes `${var}` in the
/// statement text before parsing it). Everything outside quotes is the
/// planner's own text (keywords, numbers, operators) and is kept. The
/// conversion is exact because every quoted token in a planned statement
/// was written by `quote_ident` or `quote_literal`.
pub(super) fn requote(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + sql.len() / 8);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push('`');
                while let Some(c) = chars.next() {
                    match c {
                        '"' if chars.peek() == Some(&'"') => {
                            chars.next();
                            out.push('"');
                        }
                        '"' => break,
                        '`' => out.push_str("``"),
                        c => out.push(c),
                    }
                }
                out.push('`');
            }
            '\'' => {
                out.push('\'');
                while let Some(c) = chars.next() {
                    match c {
                        '\'' if chars.peek() == Some(&'\'') => {
                            chars.next();
                            out.push_str("\\'");
                        }
                        '\'' => break,
                        '\\' => out.push_str("\\\\"),
                        '$' => out.push_str("\\u0024"),
                        c => out.push(c),
                    }
                }
                out.push('\'');
            }
            c => out.push(c),
        }
    }
    out
}

/// A LIKE pattern (PostgreSQL's: a backslash makes the next character
/// literal) as Spark reads it, which refuses a backslash before anything
/// but `%`, `_` and a backslash: `\b` becomes `b`.
pub(super) fn like_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(next @ ('%' | '_' | '\\')) => {
                out.push('\\');
                out.push(next);
            }
            Some(next) => out.push(next),
            // A trailing backslash is refused by the planner.
            None => out.push_str("\\\\"),
        }
    }
    out
}

/// `sql` clamped into `[lo, hi]` (already spelled as SQL numbers) as a
/// bigint (`int`) or a double; NULL stays NULL. The value is read with
/// TRY_CAST first, so a column whose Spark type is wider than declared
/// (a decimal beyond the double range, text) gives NULL rather than an
/// error. DECIMAL(38, 0) holds every bigint exactly. LEAST and GREATEST
/// skip NULLs, so NULL is tested first; NaN sorts above every number in
/// Spark, so it lands on `hi` as in PostgreSQL. Floats nearer zero than
/// 1e-100 read as `zero` (0 clamped), so later products cannot underflow.
pub(super) fn clamp(sql: &str, int: bool, lo: &str, hi: &str, zero: f64) -> String {
    if int {
        let v = format!("TRY_CAST({sql} AS DECIMAL(38, 0))");
        format!(
            "CASE WHEN {v} IS NULL THEN NULL ELSE CAST(LEAST(GREATEST({v}, {lo}), {hi}) AS BIGINT) END"
        )
    } else {
        let v = format!("TRY_CAST({sql} AS DOUBLE)");
        format!(
            "CASE WHEN {v} IS NULL THEN NULL WHEN {v} > -1e-100 AND {v} < 1e-100 THEN {zero:e} ELSE LEAST(GREATEST({v}, {lo}), {hi}) END"
        )
    }
}

/// Doubles this large are whole numbers already, and smaller ones fit a
/// bigint exactly: floor and ceil (which return bigints in Spark) are
/// applied only below it.
const WHOLE: &str = "4.5e15";

/// `round`, `trunc`, `floor`, `ceil` or `ceiling` of a double, as a
/// double. `round` rounds ties to even, as PostgreSQL's float8 `round`.
pub(super) fn round_whole(name: &str, x: &str) -> String {
    let whole = |f: &str| format!("CAST({f}({x}) AS DOUBLE)");
    let below = match name {
        "round" => return format!("BROUND({x})"),
        "floor" => whole("floor"),
        "ceil" | "ceiling" => whole("ceil"),
        _ => format!(
            "CASE WHEN {x} >= 0 THEN {} ELSE {} END",
            whole("floor"),
            whole("ceil")
        ),
    };
    // NaN compares above every number, so it is kept as it is.
    format!("(CASE WHEN abs({x}) >= {WHOLE} THEN {x} ELSE {below} END)")
}

/// `round(x, digits)` or `trunc(x, digits)` of a double, as a double.
/// `round` rounds ties away from zero, as PostgreSQL's numeric `round`.
/// `floor(x, d)` and `ceil(x, d)` work on decimals, and would cast a
/// double to DECIMAL(30, 15), which overflows from 1e15 on; below
/// [`WHOLE`] the value is cast to DECIMAL(38, 18) first (20 integer
/// digits), which holds it.
pub(super) fn round_digits(trunc: bool, x: &str, digits: i64) -> String {
    if !trunc {
        return format!("ROUND({x}, {digits})");
    }
    let exact = format!("CAST({x} AS DECIMAL(38, 18))");
    format!(
        "(CASE WHEN abs({x}) >= {WHOLE} THEN {x} WHEN {x} >= 0 THEN CAST(floor({exact}, {digits}) AS DOUBLE) ELSE CAST(ceil({exact}, {digits}) AS DOUBLE) END)"
    )
}

/// `extract(field FROM sql)` with PostgreSQL's numbering, as a bigint.
pub(super) fn extract(field: &str, sql: &str) -> String {
    let ts = format!("CAST({sql} AS TIMESTAMP)");
    let value = match field {
        "year" => format!("year({ts})"),
        "isoyear" => format!("EXTRACT(YEAROFWEEK FROM {ts})"),
        "quarter" => format!("quarter({ts})"),
        "month" => format!("month({ts})"),
        "week" => format!("weekofyear({ts})"),
        "day" => format!("day({ts})"),
        "doy" => format!("dayofyear({ts})"),
        // Spark's dayofweek counts Sunday as 1; PostgreSQL's dow as 0.
        "dow" => format!("(dayofweek({ts}) - 1)"),
        // weekday counts Monday as 0; isodow counts it as 1.
        "isodow" => format!("(weekday({ts}) + 1)"),
        "hour" => format!("hour({ts})"),
        "minute" => format!("minute({ts})"),
        // Years are 1 to 9999 (dates are guarded), so these stay positive.
        "decade" => format!("(year({ts}) div 10)"),
        "century" => format!("((year({ts}) + 99) div 100)"),
        "millennium" => format!("((year({ts}) + 999) div 1000)"),
        other => unreachable!("extract field {other} is checked by the planner"),
    };
    format!("CAST({value} AS BIGINT)")
}

/// `date_trunc(unit, sql)` as a timestamp, as PostgreSQL truncates
/// (weeks start on Monday; a century starts in a year ending in 01).
pub(super) fn date_trunc(unit: &str, sql: &str) -> String {
    let ts = format!("CAST({sql} AS TIMESTAMP)");
    let years_back = |years: String| {
        format!(
            "CAST(add_months(CAST(date_trunc('YEAR', {ts}) AS DATE), -12 * {years}) AS TIMESTAMP)"
        )
    };
    match unit {
        "year" | "quarter" | "month" | "week" | "day" | "hour" | "minute" => {
            format!("date_trunc('{}', {ts})", unit.to_uppercase())
        }
        "decade" => years_back(format!("(year({ts}) % 10)")),
        "century" => years_back(format!("((year({ts}) - 1) % 100)")),
        other => unreachable!("date_trunc unit {other} is checked by the planner"),
    }
}

#[cfg(test)]
mod tests {
    use super::requote;

    #[test]
    fn identifiers_become_backticked() {
        assert_eq!(
            requote(r#"SELECT "a" FROM "s"."t""#),
            "SELECT `a` FROM `s`.`t`"
        );
        assert_eq!(requote(r#""we""ird`x""#), "`we\"ird``x`");
    }

    #[test]
    fn strings_escape_quotes_backslashes_and_dollars() {
        assert_eq!(requote("x = 'it''s'"), r"x = 'it\'s'");
        assert_eq!(requote(r"x LIKE 'a\%'"), r"x LIKE 'a\\%'");
        assert_eq!(requote("'${env:HOME}'"), r"'\u0024{env:HOME}'");
        // Quotes of the other kind are plain characters inside each.
        assert_eq!(
            requote(r#"'say "hi"' AND "it's""#),
            r#"'say "hi"' AND `it's`"#
        );
    }

    #[test]
    fn like_patterns_escape_only_what_spark_allows() {
        assert_eq!(super::like_pattern(r"a\b\%c\_\\d%"), r"ab\%c\_\\d%");
    }

    #[test]
    fn text_outside_quotes_is_kept() {
        let sql = "SELECT COUNT(*) AS m0 FROM t WHERE (a div 2) >= 1e-100";
        assert_eq!(requote(sql), sql);
    }
}
