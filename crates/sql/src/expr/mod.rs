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
use crate::types::{quote_literal, Cell, Literal, Range, SqlType, Typed};

mod conditional;
mod function;
mod literal;
mod operator;

use conditional::*;
use function::*;
use literal::*;
use operator::*;

impl Typed {
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

    /// `a`, this value's operand (under a FILTER, if any), clamped into
    /// `range` and read as `ty`. A bare column's operand already is that
    /// clamp when type and range match, and clamping twice gives what
    /// clamping once does, so it is not written again: one CASE per row
    /// less for the backend.
    pub fn clamp_operand(&self, d: Dialect, a: &str, ty: SqlType, range: Range) -> String {
        let operand_clamps = self.column && self.ty.is_numeric() && self.range.is_finite();
        if operand_clamps && (self.ty, self.range) == (ty, range) {
            a.to_string()
        } else {
            d.clamp(a, ty, range.lo, range.hi)
        }
    }
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
        Expr::Value(v) => literal(d, &v.value),
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
