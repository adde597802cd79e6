//! Row-level WHERE predicates: checked against the declared columns and
//! rewritten so that every column reference is the declared, quoted name.
//! Only shapes that cannot raise a data-dependent backend error are
//! accepted (comparisons, boolean logic, IN, BETWEEN, LIKE, IS NULL).

use dpgate_config::{ColumnType, Table};
use sqlparser::ast::{BinaryOperator, Expr, Ident, UnaryOperator, Value};

use crate::error::{sqlstate, Refusal};
use crate::resolve::resolve_column;

/// Checks `expr` and rewrites its column references in place.
pub fn check_predicate(expr: &mut Expr, table: &Table) -> Result<(), Refusal> {
    match expr {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
            let name = resolve_column(expr, table)?;
            *expr = Expr::Identifier(Ident::with_quote('"', name));
            Ok(())
        }
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => Err(Refusal::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("parameter {p} has no value"),
                "bind a value for every $n parameter",
            )),
            _ => Ok(()),
        },
        Expr::Nested(inner) => check_predicate(inner, table),
        Expr::UnaryOp { op, expr: inner } => match op {
            UnaryOperator::Not | UnaryOperator::Minus | UnaryOperator::Plus => {
                check_predicate(inner, table)
            }
            _ => Err(unsupported(&format!("the operator {op}"))),
        },
        Expr::BinaryOp { left, op, right } => match op {
            BinaryOperator::And
            | BinaryOperator::Or
            | BinaryOperator::Eq
            | BinaryOperator::NotEq
            | BinaryOperator::Lt
            | BinaryOperator::LtEq
            | BinaryOperator::Gt
            | BinaryOperator::GtEq => {
                check_predicate(left, table)?;
                check_predicate(right, table)?;
                check_types(left, right, table)?;
                check_types(right, left, table)
            }
            _ => Err(unsupported(&format!("the operator {op}"))),
        },
        Expr::IsNull(inner)
        | Expr::IsNotNull(inner)
        | Expr::IsTrue(inner)
        | Expr::IsFalse(inner)
        | Expr::IsNotTrue(inner)
        | Expr::IsNotFalse(inner) => check_predicate(inner, table),
        Expr::InList { expr, list, .. } => {
            check_predicate(expr, table)?;
            list.iter_mut().try_for_each(check_literal)?;
            list.iter().try_for_each(|l| check_types(expr, l, table))
        }
        Expr::Between {
            expr, low, high, ..
        } => {
            check_predicate(expr, table)?;
            check_literal(low)?;
            check_literal(high)?;
            check_types(expr, low, table)?;
            check_types(expr, high, table)
        }
        Expr::Like {
            expr,
            pattern,
            escape_char: None,
            any: false,
            ..
        }
        | Expr::ILike {
            expr,
            pattern,
            escape_char: None,
            any: false,
            ..
        } => {
            check_predicate(expr, table)?;
            check_literal(pattern)
        }
        Expr::Subquery(_) | Expr::InSubquery { .. } | Expr::Exists { .. } => Err(Refusal::unsupported(
            "subqueries in WHERE are not supported",
            "filter with comparisons on columns of the same table, e.g. WHERE age >= 18 AND ward IN ('A', 'B')",
        )),
        Expr::Function(f) => Err(unsupported(&format!("the function {}", f.name))),
        Expr::Cast { .. } => Err(unsupported("casts")),
        other => Err(unsupported(&format!("the expression {other}"))),
    }
}

/// Refuses comparisons of a column with a literal PostgreSQL would reject
/// while reading the rows (e.g. `age = 'abc'`), before anything is charged.
fn check_types(column: &Expr, literal: &Expr, table: &Table) -> Result<(), Refusal> {
    let Expr::Identifier(ident) = column else {
        return Ok(());
    };
    let Some(col) = table.column(&ident.value) else {
        return Ok(());
    };
    let value = match literal {
        Expr::Value(v) => &v.value,
        Expr::UnaryOp { expr, .. } | Expr::Nested(expr) => return check_types(column, expr, table),
        _ => return Ok(()),
    };
    let fits = match (col.ty, value) {
        (_, Value::Null) => true,
        (ColumnType::Int | ColumnType::Float, Value::Number(..)) => true,
        (ColumnType::Int | ColumnType::Float, Value::SingleQuotedString(s)) => {
            s.trim().parse::<f64>().is_ok()
        }
        (ColumnType::Text, Value::SingleQuotedString(_)) => true,
        (ColumnType::Bool, Value::Boolean(_)) => true,
        (ColumnType::Bool, Value::SingleQuotedString(s)) => {
            matches!(
                s.to_ascii_lowercase().as_str(),
                "t" | "f" | "true" | "false" | "yes" | "no" | "on" | "off" | "1" | "0"
            )
        }
        (ColumnType::Date | ColumnType::Timestamp, Value::SingleQuotedString(_)) => true,
        _ => false,
    };
    if fits {
        Ok(())
    } else {
        Err(Refusal::new(
            sqlstate::DATATYPE_MISMATCH,
            format!(
                "\"{}\" is a {} column and cannot be compared with {value}",
                col.name,
                col.ty.pg_name()
            ),
            format!("compare {} with a {} value", col.name, col.ty.pg_name()),
        ))
    }
}

/// Literals only (numbers, strings, booleans, NULL, negated numbers).
fn check_literal(expr: &mut Expr) -> Result<(), Refusal> {
    match expr {
        Expr::Value(v) if !matches!(v.value, Value::Placeholder(_)) => Ok(()),
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr: inner,
        } => check_literal(inner),
        Expr::Nested(inner) => check_literal(inner),
        Expr::Value(_) => Err(Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            "a parameter has no value",
            "bind a value for every $n parameter",
        )),
        other => Err(Refusal::unsupported(
            format!("only constants are allowed here, not {other}"),
            "compare with literal values, e.g. BETWEEN 18 AND 65 or IN ('A', 'B')",
        )),
    }
}

fn unsupported(what: &str) -> Refusal {
    Refusal::unsupported(
        format!("{what} is not supported in WHERE"),
        "filter with =, <>, <, <=, >, >=, AND, OR, NOT, IN (...), BETWEEN, LIKE and IS NULL on declared columns",
    )
}
