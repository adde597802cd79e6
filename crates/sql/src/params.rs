//! Extended-protocol parameters: their types are inferred from the declared
//! columns they are compared with, and their values are bound into the
//! query as literals before planning, so a prepared statement is planned
//! exactly like the same query written out.

use std::ops::ControlFlow;

use dpgate_config::{ColumnType, Config};
use sqlparser::ast::{
    visit_expressions, visit_expressions_mut, Expr, Query, Value, ValueWithSpan, Visit,
};

use crate::error::{sqlstate, Refusal};
use crate::expr::compile;
use crate::scope::Scope;
use crate::types::{Cell, SqlType};

fn placeholder_index(expr: &Expr) -> Option<usize> {
    match expr {
        Expr::Value(ValueWithSpan {
            value: Value::Placeholder(p),
            ..
        }) => p
            .strip_prefix('$')?
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= MAX_PARAMETERS)?
            .checked_sub(1),
        _ => None,
    }
}

/// The protocol carries at most 65 535 parameter values (an int16 count),
/// so no `$n` beyond is a parameter; it stays a placeholder without a value
/// (refused when planned) and no per-parameter list is ever longer.
pub const MAX_PARAMETERS: usize = 65_535;

/// The number of `$n` parameters (the largest n) in a statement or part.
pub fn parameter_count<V: Visit>(node: &V) -> usize {
    let mut n = 0;
    let _ = visit_expressions(node, |e| {
        if let Some(i) = placeholder_index(e) {
            n = n.max(i + 1);
        }
        ControlFlow::<()>::Continue(())
    });
    n
}

/// Infers each parameter's type from the column or expression it is
/// compared with (resolved against the query's FROM, aliases and joins
/// included); `None` where nothing says (clients then send text).
pub fn parameter_types(query: &Query, config: &Config) -> Vec<Option<ColumnType>> {
    let source = crate::source::top_source(query, config);
    parameter_types_in(query, source.as_ref().map(|s| &s.scope))
}

/// [`parameter_types`] against the columns the top-level SELECT can name
/// (`None` when its FROM does not resolve).
pub(crate) fn parameter_types_in(query: &Query, scope: Option<&Scope>) -> Vec<Option<ColumnType>> {
    let mut types = vec![None; parameter_count(query)];
    let column_type = |e: &Expr| -> Option<ColumnType> {
        if placeholder_index(e).is_some() {
            return None;
        }
        Some(match compile(e, scope?).ok()?.ty {
            SqlType::Int => ColumnType::Int,
            SqlType::Float => ColumnType::Float,
            SqlType::Bool => ColumnType::Bool,
            SqlType::Date => ColumnType::Date,
            SqlType::Timestamp => ColumnType::Timestamp,
            SqlType::Text | SqlType::Unknown => ColumnType::Text,
        })
    };
    let _ = visit_expressions(query, |e| {
        let mut note = |col: &Expr, others: &[&Expr]| {
            if let Some(ty) = column_type(col) {
                for o in others {
                    if let Some(i) = placeholder_index(o) {
                        types[i].get_or_insert(ty);
                    }
                }
            }
        };
        match e {
            Expr::BinaryOp { left, right, .. } => {
                note(left, &[right]);
                note(right, &[left]);
            }
            Expr::InList { expr, list, .. } => note(expr, &list.iter().collect::<Vec<_>>()),
            Expr::Between {
                expr, low, high, ..
            } => note(expr, &[low, high]),
            Expr::Like { expr, pattern, .. } | Expr::ILike { expr, pattern, .. } => {
                note(expr, &[pattern])
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    types
}

/// Replaces every `$n` with the literal of `values[n-1]`.
pub fn bind_parameters(query: &mut Query, values: &[Cell]) -> Result<(), Refusal> {
    let mut missing = None;
    let _ = visit_expressions_mut(query, |e| {
        if let Some(i) = placeholder_index(e) {
            match values.get(i) {
                Some(v) => *e = literal(v),
                None => missing = Some(i + 1),
            }
        }
        ControlFlow::<()>::Continue(())
    });
    match missing {
        Some(n) => Err(Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("no value was bound for parameter ${n}"),
            "bind one value per $n parameter",
        )),
        None => Ok(()),
    }
}

fn literal(v: &Cell) -> Expr {
    let value = match v {
        Cell::Null => Value::Null,
        Cell::Int(i) => Value::Number(i.to_string(), false),
        Cell::Float(f) if f.is_finite() => Value::Number(format!("{f:e}"), false),
        Cell::Float(f) => Value::SingleQuotedString(f.to_string()),
        Cell::Text(s) => Value::SingleQuotedString(s.clone()),
        Cell::Bool(b) => Value::Boolean(*b),
    };
    let lit = Expr::value(value);
    // Negative numbers render as "-5"; keep them one token in any context.
    match v {
        Cell::Int(i) if *i < 0 => Expr::Nested(Box::new(lit)),
        Cell::Float(f) if *f < 0.0 => Expr::Nested(Box::new(lit)),
        _ => lit,
    }
}
