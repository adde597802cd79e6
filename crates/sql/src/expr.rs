//! Row-level expressions (in WHERE, GROUP BY, aggregate arguments and FROM
//! subqueries): checked against the columns in scope, typed, bounded by
//! interval arithmetic from the declared column bounds, and rendered as
//! backend SQL that cannot fail on any row (invariant 6).
//!
//! Numeric columns used inside arithmetic or functions are read clamped to
//! their declared bounds, so every computed value has a proven range and
//! no row can make the backend overflow or divide by zero. Bare columns in
//! comparisons are read as stored.

use dpgate_config::{parse_bool, ColumnType};
use sqlparser::ast::{
    BinaryOperator, CastKind, CeilFloorKind, DataType, Expr, Function, FunctionArg,
    FunctionArgExpr, FunctionArguments, UnaryOperator, Value,
};

use crate::classify::object_name;
use crate::dialect::Dialect;
use crate::error::{sqlstate, Refusal};
use crate::scope::Scope;

/// Types of row-level values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlType {
    /// Integers (computed as bigint).
    Int,
    /// Real numbers (float8).
    Float,
    /// Text.
    Text,
    /// Booleans.
    Bool,
    /// Dates.
    Date,
    /// Timestamps.
    Timestamp,
    /// NULL, an untyped string literal, or a privacy unit of undeclared type.
    Unknown,
}

impl From<ColumnType> for SqlType {
    fn from(t: ColumnType) -> SqlType {
        match t {
            ColumnType::Int => SqlType::Int,
            ColumnType::Float => SqlType::Float,
            ColumnType::Text => SqlType::Text,
            ColumnType::Bool => SqlType::Bool,
            ColumnType::Date => SqlType::Date,
            ColumnType::Timestamp => SqlType::Timestamp,
        }
    }
}

impl SqlType {
    /// Int or Float.
    pub fn is_numeric(self) -> bool {
        matches!(self, SqlType::Int | SqlType::Float)
    }

    /// PostgreSQL's name for the type, for messages.
    pub fn pg_name(self) -> &'static str {
        match self {
            SqlType::Int => "integer",
            SqlType::Float => "double precision",
            SqlType::Text => "text",
            SqlType::Bool => "boolean",
            SqlType::Date => "date",
            SqlType::Timestamp => "timestamp",
            SqlType::Unknown => "unknown",
        }
    }
}

/// A closed numeric interval; infinite ends mean "no bound".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Range {
    /// No bound at all.
    pub const ALL: Range = Range {
        lo: f64::NEG_INFINITY,
        hi: f64::INFINITY,
    };

    /// `[lo, hi]`.
    pub fn new(lo: f64, hi: f64) -> Range {
        Range { lo, hi }
    }

    /// Both ends finite.
    pub fn is_finite(&self) -> bool {
        self.lo.is_finite() && self.hi.is_finite()
    }

    /// The smallest interval holding both.
    pub fn hull(self, other: Range) -> Range {
        Range::new(self.lo.min(other.lo), self.hi.max(other.hi))
    }

    /// The largest absolute value.
    pub fn max_abs(&self) -> f64 {
        self.lo.abs().max(self.hi.abs())
    }

    fn contains_zero(&self) -> bool {
        self.lo <= 0.0 && self.hi >= 0.0
    }
}

/// A literal as written.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// NULL.
    Null,
    /// A number.
    Number(f64),
    /// A string (untyped until compared).
    Text(String),
    /// TRUE or FALSE.
    Bool(bool),
}

/// A checked row-level expression.
#[derive(Clone, Debug)]
pub struct Typed {
    /// Backend SQL (bare columns unclamped; see [`Typed::operand`]).
    pub sql: String,
    /// Its type.
    pub ty: SqlType,
    /// Proven range of numeric values (before NULLs).
    pub range: Range,
    /// Every value it can take, when that is a public, finite list
    /// (`None` in the list is NULL). Keys with a domain are released in full.
    pub domain: Option<Vec<Option<String>>>,
    /// It is a privacy unit column.
    pub is_unit: bool,
    /// It is a bare column reference.
    pub column: bool,
    /// It is a literal.
    pub literal: Option<Literal>,
}

/// Largest magnitude allowed in integer arithmetic (well inside bigint).
const INT_LIMIT: f64 = 4.0e18;
/// Largest magnitude allowed in float arithmetic (far from float8 overflow).
const FLOAT_LIMIT: f64 = 1.0e100;
/// Divisors closer to zero than this give NULL, so a quotient stays finite.
const MIN_DIVISOR: f64 = 1.0e-100;
/// Float values nearer zero than about this are flushed to 0 after every
/// product and quotient (and constants that small are refused), so no
/// product or quotient of two non-zero values can round to 0 — which
/// PostgreSQL reports as an underflow error.
const MIN_MAGNITUDE: f64 = 1.0e-100;
/// Longest SQL one row-level expression may render to. Some constructs
/// repeat an operand (a NULL test and a clamp), so nesting them could grow
/// the text exponentially; checked at every level of `compile`.
pub const MAX_EXPRESSION_SQL: usize = 256 * 1024;
/// Largest integer range turned into a public domain (e.g. extract(day)).
const MAX_INT_DOMAIN: f64 = 400.0;

impl Typed {
    fn new(sql: String, ty: SqlType, range: Range) -> Typed {
        Typed {
            sql,
            ty,
            range,
            domain: None,
            is_unit: false,
            column: false,
            literal: None,
        }
    }

    fn with_domain(mut self, domain: Option<Vec<Option<String>>>) -> Typed {
        self.domain = domain;
        self
    }

    /// SQL for use inside arithmetic and functions: a bare numeric column
    /// is clamped to its (possibly narrowed) bounds and read as bigint or
    /// float8, so the computation that follows cannot fail.
    pub fn operand(&self, d: Dialect) -> Result<String, Refusal> {
        if !(self.column && self.ty.is_numeric()) {
            return Ok(self.sql.clone());
        }
        if !self.range.is_finite() {
            return Err(Refusal::unsupported(
                format!(
                    "{} has no declared bounds, so arithmetic on it could overflow",
                    self.sql
                ),
                "ask the data owner to declare lower and upper bounds for it in proxy.toml, or compare it directly",
            ));
        }
        Ok(d.clamp(&self.sql, self.ty, self.range.lo, self.range.hi))
    }

    /// The numeric range, which must be finite (for sums, means, quantiles).
    pub fn finite_range(&self, what: &str) -> Result<Range, Refusal> {
        if !self.ty.is_numeric() {
            return Err(Refusal::new(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "{what} needs a number, but {} is {}",
                    self.sql,
                    self.ty.pg_name()
                ),
                "aggregate an int or float column or expression",
            ));
        }
        if self.is_unit {
            return Err(Refusal::new(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "{} identifies a person and has no bounds to {what}",
                    self.sql
                ),
                "count it with COUNT(DISTINCT ...) instead",
            ));
        }
        if !self.range.is_finite() {
            return Err(Refusal::unsupported(
                format!("{what} of {} is unbounded: dpgate cannot prove a finite range for it", self.sql),
                "clamp it, e.g. LEAST(GREATEST(expr, 0), 100), or ask the data owner to declare bounds for its columns",
            ));
        }
        Ok(self.range)
    }
}

/// Quotes a string literal for SQL.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn unsupported(what: impl std::fmt::Display) -> Refusal {
    Refusal::unsupported(
        format!("{what} is not supported in private queries"),
        "use columns, constants, arithmetic (+ - * / %), comparisons, AND/OR/NOT, IN, BETWEEN, LIKE, IS NULL, CASE, COALESCE, NULLIF, LEAST, GREATEST, ABS, ROUND, FLOOR, CEIL, CAST, date_trunc, extract and width_bucket",
    )
}

fn mismatch(message: String, hint: impl Into<String>) -> Refusal {
    Refusal::new(sqlstate::DATATYPE_MISMATCH, message, hint)
}

/// Checks and renders a row-level expression.
pub fn compile(expr: &Expr, scope: &Scope) -> Result<Typed, Refusal> {
    let t = compile_unchecked(expr, scope)?;
    if t.sql.len() > MAX_EXPRESSION_SQL {
        return Err(Refusal::new(
            sqlstate::STATEMENT_TOO_COMPLEX,
            format!(
                "an expression would render to more than {MAX_EXPRESSION_SQL} bytes of backend SQL"
            ),
            "simplify or split the expression (nested CASE, width_bucket and clamps repeat their operands)",
        ));
    }
    Ok(t)
}

/// A float product or quotient with values nearer zero than
/// [`MIN_MAGNITUDE`] flushed to 0: adding and subtracting a constant can
/// never raise (PostgreSQL checks only products and quotients for
/// underflow), references `sql` once, and leaves every value above about
/// 1e-84 exactly as it was.
fn flushed(sql: String) -> String {
    format!("(({sql} + {MIN_MAGNITUDE:e}) - {MIN_MAGNITUDE:e})")
}

/// The range of a [`flushed`] value: values nearer zero than the flush
/// threshold (below about 1e-116 they become exactly 0) may be 0, so a
/// later division by it must be guarded.
fn flushed_range(r: Range) -> Range {
    const FLUSH: f64 = 1.0e-110;
    Range::new(
        if r.lo > 0.0 && r.lo < FLUSH {
            0.0
        } else {
            r.lo
        },
        if r.hi < 0.0 && r.hi > -FLUSH {
            0.0
        } else {
            r.hi
        },
    )
}

fn compile_unchecked(expr: &Expr, scope: &Scope) -> Result<Typed, Refusal> {
    let d = scope.dialect;
    match expr {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => Ok(scope.lookup(expr)?.typed.clone()),
        Expr::Value(v) => literal(&v.value),
        Expr::TypedString(ts) => typed_string(d, &ts.data_type, &ts.value.value),
        Expr::Nested(inner) => {
            let mut t = compile(inner, scope)?;
            if !t.column {
                t.sql = format!("({})", t.sql);
            }
            Ok(t)
        }
        Expr::UnaryOp { op, expr: inner } => unary(d, *op, compile(inner, scope)?),
        Expr::BinaryOp { left, op, right } => {
            binary(d, compile(left, scope)?, op, compile(right, scope)?)
        }
        Expr::IsNull(e) => is_check(e, "IS NULL", false, scope),
        Expr::IsNotNull(e) => is_check(e, "IS NOT NULL", false, scope),
        Expr::IsTrue(e) => is_check(e, "IS TRUE", true, scope),
        Expr::IsFalse(e) => is_check(e, "IS FALSE", true, scope),
        Expr::IsNotTrue(e) => is_check(e, "IS NOT TRUE", true, scope),
        Expr::IsNotFalse(e) => is_check(e, "IS NOT FALSE", true, scope),
        Expr::InList {
            expr,
            list,
            negated,
        } => {
            let subject = compile(expr, scope)?;
            let typed = list
                .iter()
                .map(|e| compile(e, scope))
                .collect::<Result<Vec<_>, Refusal>>()?;
            // With the privacy unit on either side, everything compares as text.
            let unit = subject.is_unit || typed.iter().any(|t| t.is_unit);
            let items = typed
                .iter()
                .map(|item| {
                    if unit {
                        return Ok(as_text(d, item));
                    }
                    comparable(&subject, item)?;
                    Ok(coerced(d, item, subject.ty))
                })
                .collect::<Result<Vec<_>, Refusal>>()?;
            let not = if *negated { "NOT " } else { "" };
            let subject_sql = if unit {
                as_text(d, &subject)
            } else {
                subject.sql.clone()
            };
            Ok(boolean(format!(
                "{subject_sql} {not}IN ({})",
                items.join(", ")
            )))
        }
        Expr::Between {
            expr,
            negated,
            low,
            high,
        } => {
            let subject = compile(expr, scope)?;
            let (low, high) = (compile(low, scope)?, compile(high, scope)?);
            comparable(&subject, &low)?;
            comparable(&subject, &high)?;
            let not = if *negated { "NOT " } else { "" };
            Ok(boolean(format!(
                "{} {not}BETWEEN {} AND {}",
                subject.sql,
                coerced(d, &low, subject.ty),
                coerced(d, &high, subject.ty)
            )))
        }
        Expr::Like {
            negated,
            any: false,
            expr,
            pattern,
            escape_char: None,
        } => like(expr, pattern, *negated, false, scope),
        Expr::ILike {
            negated,
            any: false,
            expr,
            pattern,
            escape_char: None,
        } => like(expr, pattern, *negated, true, scope),
        Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => case(
            operand.as_deref(),
            conditions,
            else_result.as_deref(),
            scope,
        ),
        Expr::Cast {
            kind: CastKind::Cast | CastKind::DoubleColon,
            expr,
            data_type,
            format: None,
        } => cast(d, compile(expr, scope)?, data_type),
        Expr::Extract { field, expr, .. } => extract(d, &field.to_string(), compile(expr, scope)?),
        Expr::Ceil { expr, field } => ceil_floor("ceil", expr, field, scope),
        Expr::Floor { expr, field } => ceil_floor("floor", expr, field, scope),
        Expr::Function(f) => function(f, scope),
        Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. } => {
            Err(Refusal::unsupported(
                "subqueries in expressions are not supported",
                "join the table instead, or filter with comparisons on columns in FROM",
            ))
        }
        other => Err(unsupported(format!("the expression {other}"))),
    }
}

fn boolean(sql: String) -> Typed {
    Typed::new(sql, SqlType::Bool, Range::ALL).with_domain(Some(vec![
        Some("true".into()),
        Some("false".into()),
        None,
    ]))
}

fn literal(value: &Value) -> Result<Typed, Refusal> {
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
        Literal::Number(_) => Some(vec![Some(sql.clone())]),
    };
    let mut t = Typed::new(sql, ty, range).with_domain(domain);
    t.literal = Some(lit);
    Ok(t)
}

/// `DATE '2024-01-31'`, `TIMESTAMP '2024-01-31 10:00'`: checked here so a
/// malformed literal is refused before the charge.
fn typed_string(d: Dialect, data_type: &DataType, value: &Value) -> Result<Typed, Refusal> {
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
    check_date_text(&text, ty)?;
    let mut t = Typed::new(d.datetime_literal(&text, ty), ty, Range::ALL);
    t.literal = Some(Literal::Text(text));
    Ok(t)
}

/// A date (`YYYY-MM-DD`) or timestamp (date, then an optional time).
/// Whether float8 input reads `s` without an error: a finite number that
/// does not underflow to zero, or one of the special values.
fn float_text_fits(s: &str) -> bool {
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
fn calendar_date(y: u32, m: u32, d: u32) -> bool {
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

/// Whether `t` is `HH:MM`, `HH:MM:SS` or `HH:MM:SS.ffffff` of a real time.
fn clock_time(t: &str) -> bool {
    let (hms, frac) = t.split_once('.').unwrap_or((t, "0"));
    let parts: Vec<&str> = hms.split(':').collect();
    let number = |p: &str, max: u32| {
        p.len() == 2
            && p.chars().all(|c| c.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|v| v <= max)
    };
    (2..=3).contains(&parts.len())
        && number(parts[0], 23)
        && number(parts[1], 59)
        && parts.get(2).is_none_or(|s| number(s, 59))
        && (1..=6).contains(&frac.len())
        && frac.chars().all(|c| c.is_ascii_digit())
}

fn check_date_text(text: &str, ty: SqlType) -> Result<(), Refusal> {
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
        Ok(())
    } else {
        Err(mismatch(
            format!("'{text}' is not a valid {}", ty.pg_name()),
            "write dates as 'YYYY-MM-DD' and timestamps as 'YYYY-MM-DD HH:MM:SS'",
        ))
    }
}

fn unary(d: Dialect, op: UnaryOperator, t: Typed) -> Result<Typed, Refusal> {
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
                    let v = t
                        .sql
                        .trim()
                        .parse::<i64>()
                        .ok()
                        .and_then(i64::checked_neg)
                        .ok_or_else(|| {
                            Refusal::new(
                                sqlstate::INVALID_PARAMETER_VALUE,
                                format!("-({}) is out of range for bigint", t.sql),
                                "use a smaller constant",
                            )
                        })?;
                    return literal(&Value::Number(v.to_string(), false));
                }
                return literal(&Value::Number(format!("{}", -x), false));
            }
            let r = Range::new(-t.range.hi, -t.range.lo);
            checked(format!("(- {})", t.operand(d)?), t.ty, r)
        }
        other => Err(unsupported(format!("the operator {other}"))),
    }
}

fn want_bool(t: &Typed, what: &str) -> Result<(), Refusal> {
    if matches!(t.ty, SqlType::Bool | SqlType::Unknown) {
        Ok(())
    } else {
        Err(mismatch(
            format!("argument of {what} must be boolean, not {}", t.ty.pg_name()),
            "use a comparison, e.g. age > 40",
        ))
    }
}

fn want_numeric(t: &Typed, what: &str) -> Result<(), Refusal> {
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
fn checked(sql: String, ty: SqlType, range: Range) -> Result<Typed, Refusal> {
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

fn numeric_type(a: &Typed, b: &Typed) -> SqlType {
    if a.ty == SqlType::Int && b.ty == SqlType::Int {
        SqlType::Int
    } else {
        SqlType::Float
    }
}

fn product(a: f64, b: f64) -> f64 {
    // 0 × ∞ counts as 0: an exact zero factor stays zero.
    if a == 0.0 || b == 0.0 {
        0.0
    } else {
        a * b
    }
}

fn hull_of(points: [f64; 4]) -> Range {
    let lo = points.iter().cloned().fold(f64::INFINITY, f64::min);
    let hi = points.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    Range::new(lo, hi)
}

fn binary(d: Dialect, a: Typed, op: &BinaryOperator, b: Typed) -> Result<Typed, Refusal> {
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
            let ty = numeric_type(&a, &b);
            let (x, y) = (a.operand(d)?, b.operand(d)?);
            let (ra, rb) = (a.range, b.range);
            match op {
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
                Divide => divide(&x, ra, &y, rb, ty),
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
            }
        }
        other => Err(unsupported(format!("the operator {other}"))),
    }
}

/// Division that cannot fail: a zero divisor gives NULL (PostgreSQL would
/// raise an error that reveals a row), and a float divisor nearer zero than
/// [`MIN_DIVISOR`] too, so the quotient cannot overflow.
fn divide(x: &str, ra: Range, y: &str, rb: Range, ty: SqlType) -> Result<Typed, Refusal> {
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
        let r = if ty == SqlType::Int {
            Range::new(r.lo.trunc(), r.hi.trunc())
        } else {
            r
        };
        let sql = format!("({x} / {y})");
        if ty == SqlType::Float {
            return checked(flushed(sql), ty, flushed_range(r));
        }
        return checked(sql, ty, r);
    }
    if ty == SqlType::Int {
        // |y| ≥ 1 whenever it is not zero, so |x / y| ≤ |x|.
        let m = ra.max_abs();
        return checked(format!("({x} / NULLIF({y}, 0))"), ty, Range::new(-m, m));
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
fn as_text(d: Dialect, t: &Typed) -> String {
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
fn comparable(a: &Typed, b: &Typed) -> Result<(), Refusal> {
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
fn literal_fits(ty: SqlType, lit: Option<&Literal>) -> bool {
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

fn is_check(e: &Expr, what: &str, want: bool, scope: &Scope) -> Result<Typed, Refusal> {
    let t = compile(e, scope)?;
    if want {
        want_bool(&t, what)?;
    }
    Ok(
        Typed::new(format!("{} {what}", t.sql), SqlType::Bool, Range::ALL)
            .with_domain(Some(vec![Some("true".into()), Some("false".into())])),
    )
}

fn like(
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

/// The common type of CASE branches, COALESCE and LEAST/GREATEST arguments.
fn unify(parts: &[&Typed], what: &str) -> Result<SqlType, Refusal> {
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
fn merge(parts: &[&Typed]) -> (Range, Option<Vec<Option<String>>>) {
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
fn branch_sql(d: Dialect, t: &Typed, ty: SqlType) -> Result<String, Refusal> {
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
fn coerced(d: Dialect, t: &Typed, with: SqlType) -> String {
    let Some(Literal::Text(s)) = &t.literal else {
        return t.sql.clone();
    };
    if t.ty != SqlType::Unknown {
        return t.sql.clone();
    }
    match with {
        SqlType::Int | SqlType::Float => match s.trim().parse::<f64>() {
            Ok(x) if s.trim().parse::<i64>().is_ok() => (x as i64).to_string(),
            Ok(x) if x.is_finite() => format!("{x:e}"),
            _ => t.sql.clone(),
        },
        SqlType::Bool => match parse_bool(s) {
            Some(b) => d.bool_literal(b),
            None => t.sql.clone(),
        },
        SqlType::Date | SqlType::Timestamp => d.datetime_literal(s, with),
        SqlType::Text | SqlType::Unknown => t.sql.clone(),
    }
}

fn case(
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
        None => literal(&Value::Null)?,
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

/// The type a CAST target names, if dpgate knows it.
fn target_type(dt: &DataType) -> Option<SqlType> {
    let name = dt.to_string().to_ascii_lowercase();
    let base = name.split('(').next().unwrap_or("").trim();
    Some(match base {
        "int" | "integer" | "bigint" | "smallint" | "int2" | "int4" | "int8" => SqlType::Int,
        "float" | "float4" | "float8" | "real" | "double" | "double precision" | "numeric"
        | "decimal" => SqlType::Float,
        "text" | "varchar" | "character varying" | "char" | "character" | "string" => SqlType::Text,
        "bool" | "boolean" => SqlType::Bool,
        "date" => SqlType::Date,
        "timestamp"
        | "timestamptz"
        | "timestamp with time zone"
        | "timestamp without time zone" => SqlType::Timestamp,
        _ => return None,
    })
}

/// Casts that cannot fail on any row: between numbers (with a proven
/// range), anything to text, and between dates and timestamps.
fn cast(d: Dialect, t: Typed, dt: &DataType) -> Result<Typed, Refusal> {
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
            out = literal(&Value::Number(s.trim().to_string(), false))?;
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
                let from_ty = crate::plan::output_type(from);
                out.domain = t.domain.as_ref().map(|values| {
                    let mut spelled: Vec<Option<String>> = Vec::new();
                    for v in values {
                        let v = match crate::answer::key_value(v.as_deref(), from_ty) {
                            crate::constant::Constant::Int(i) => Some(i.to_string()),
                            crate::constant::Constant::Bool(b) => Some(b.to_string()),
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
fn extract(d: Dialect, field: &str, t: Typed) -> Result<Typed, Refusal> {
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
fn int_domain(r: Range) -> Option<Vec<Option<String>>> {
    (r.is_finite() && r.hi - r.lo <= MAX_INT_DOMAIN).then(|| {
        (r.lo as i64..=r.hi as i64)
            .map(|i| Some(i.to_string()))
            .collect()
    })
}

fn ceil_floor(
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
fn rounding(d: Dialect, name: &str, t: Typed, digits: Option<i64>) -> Result<Typed, Refusal> {
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
        None => format!("{}({x})", name.to_uppercase()),
    };
    checked(sql, SqlType::Float, r)
}

fn args(f: &Function) -> Result<Vec<&Expr>, Refusal> {
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

fn constant_int(t: &Typed, what: &str) -> Result<i64, Refusal> {
    match t.literal {
        Some(Literal::Number(x)) if x.fract() == 0.0 && x.abs() < 1e9 => Ok(x as i64),
        _ => Err(Refusal::unsupported(
            format!("{what} must be a constant integer"),
            format!("write {what} as a number"),
        )),
    }
}

fn constant_number(t: &Typed, what: &str) -> Result<f64, Refusal> {
    match t.literal {
        Some(Literal::Number(x)) => Ok(x),
        _ => Err(Refusal::unsupported(
            format!("{what} must be a constant number"),
            format!("write {what} as a number"),
        )),
    }
}

fn constant_text(t: &Typed, what: &str) -> Result<String, Refusal> {
    match &t.literal {
        Some(Literal::Text(s)) => Ok(s.to_ascii_lowercase()),
        _ => Err(Refusal::unsupported(
            format!("{what} must be a constant string"),
            format!("write {what} as a string, e.g. 'month'"),
        )),
    }
}

fn function(f: &Function, scope: &Scope) -> Result<Typed, Refusal> {
    let name = object_name(&f.name).to_ascii_lowercase();
    let d = scope.dialect;
    if f.over.is_some() || f.filter.is_some() || !f.within_group.is_empty() {
        return Err(unsupported(format!(
            "{name}(...) with OVER, FILTER or WITHIN GROUP here"
        )));
    }
    if crate::aggregate::is_aggregate(&name) {
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
