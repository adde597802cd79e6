//! WHERE narrowing: a top-level conjunct such as `age < 40`,
//! `age BETWEEN 18 AND 65` or `ward IN ('A', 'B')` proves a tighter range or
//! domain for the rows that reach the aggregates, so `SUM(age)` under
//! `WHERE age < 40` is clamped to 39 instead of the declared 110.
//!
//! A conjunct that compares a column with a value (or `col IS NOT NULL`)
//! also proves the column holds a value on every row that passes.
//!
//! Privacy never depends on this: the backend still clamps every value to
//! whatever range is used, and a count of rows is as private as a count of
//! values, so a wrong narrowing could only hurt accuracy.

use sqlparser::ast::{BinaryOperator, Expr};

use crate::expr::compile;
use crate::scope::Scope;
use crate::types::{Literal, Range, SqlType};

/// Narrows the columns of `scope` by the conjuncts of `predicate`.
pub fn narrow(scope: &mut Scope, predicate: &Expr) {
    match predicate {
        Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            narrow(scope, left);
            narrow(scope, right);
        }
        Expr::Nested(inner) => narrow(scope, inner),
        Expr::BinaryOp { left, op, right } => {
            if let Some((col, x)) = column_and_number(scope, left, right) {
                bound(scope, &col, op, x);
            } else if let Some((col, x)) = column_and_number(scope, right, left) {
                bound(scope, &col, &flip(op), x);
            }
            if *op == BinaryOperator::Eq {
                for (c, v) in [(left, right), (right, left)] {
                    keep_values(scope, c, std::slice::from_ref(v.as_ref()));
                }
            }
        }
        Expr::Between {
            expr,
            negated: false,
            low,
            high,
        } => {
            if let Some((col, lo)) = column_and_number(scope, expr, low) {
                bound(scope, &col, &BinaryOperator::GtEq, lo);
            }
            if let Some((col, hi)) = column_and_number(scope, expr, high) {
                bound(scope, &col, &BinaryOperator::LtEq, hi);
            }
        }
        Expr::InList {
            expr,
            list,
            negated: false,
        } => {
            keep_values(scope, expr, list);
            let numbers: Option<Vec<f64>> = list
                .iter()
                .map(|e| column_and_number(scope, expr, e).map(|(_, x)| x))
                .collect();
            if let (Some(xs), Some((col, _))) = (
                numbers,
                list.first().and_then(|e| column_and_number(scope, expr, e)),
            ) {
                let lo = xs.iter().cloned().fold(f64::INFINITY, f64::min);
                let hi = xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                bound(scope, &col, &BinaryOperator::GtEq, lo);
                bound(scope, &col, &BinaryOperator::LtEq, hi);
            }
        }
        Expr::IsNotNull(inner) => {
            if let Ok(c) = compile(inner, scope) {
                if let Some(col) = scope.by_sql_mut(&c.sql).filter(|_| c.column) {
                    col.typed.not_null = true;
                }
            }
        }
        _ => {}
    }
}

fn flip(op: &BinaryOperator) -> BinaryOperator {
    match op {
        BinaryOperator::Lt => BinaryOperator::Gt,
        BinaryOperator::LtEq => BinaryOperator::GtEq,
        BinaryOperator::Gt => BinaryOperator::Lt,
        BinaryOperator::GtEq => BinaryOperator::LtEq,
        other => other.clone(),
    }
}

/// `(column SQL, number)` when `col` is a bare numeric column and `value` a
/// numeric constant.
fn column_and_number(scope: &Scope, col: &Expr, value: &Expr) -> Option<(String, f64)> {
    let c = compile(col, scope).ok()?;
    let v = compile(value, scope).ok()?;
    if !(c.column && c.ty.is_numeric()) {
        return None;
    }
    let x = match v.literal? {
        Literal::Number(x) => x,
        Literal::Text(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    Some((c.sql, x))
}

fn bound(scope: &mut Scope, col: &str, op: &BinaryOperator, x: f64) {
    let Some(c) = scope.by_sql_mut(col) else {
        return;
    };
    let int = c.typed.ty == SqlType::Int;
    let r = c.typed.range;
    let narrowed = match op {
        BinaryOperator::Eq => Range::new(x, x),
        BinaryOperator::Lt if int => Range::new(r.lo, r.hi.min((x - 1.0).ceil())),
        BinaryOperator::Lt | BinaryOperator::LtEq if !int => Range::new(r.lo, r.hi.min(x)),
        BinaryOperator::LtEq => Range::new(r.lo, r.hi.min(x.floor())),
        BinaryOperator::Gt if int => Range::new(r.lo.max((x + 1.0).floor()), r.hi),
        BinaryOperator::Gt | BinaryOperator::GtEq if !int => Range::new(r.lo.max(x), r.hi),
        BinaryOperator::GtEq => Range::new(r.lo.max(x.ceil()), r.hi),
        _ => return,
    };
    // Only a value compares true with a number: the rows that pass hold one.
    c.typed.not_null = true;
    // An empty range means rows outside the declared bounds: keep the
    // declared range rather than clamp to nothing.
    if narrowed.lo <= narrowed.hi && !(int && narrowed.lo.fract() != 0.0) {
        c.typed.range = narrowed;
    }
}

/// `col = 'A'` or `col IN ('A', 'B')` narrows a public domain.
fn keep_values(scope: &mut Scope, col: &Expr, values: &[Expr]) {
    let Ok(c) = compile(col, scope) else { return };
    if !c.column || c.domain.is_none() {
        return;
    }
    let wanted: Option<Vec<String>> = values
        .iter()
        .map(|v| match compile(v, scope).ok()?.literal? {
            Literal::Text(s) => Some(s),
            Literal::Bool(b) => Some(b.to_string()),
            Literal::Number(x) => Some(format!("{x}")),
            Literal::Null => None,
        })
        .collect();
    let Some(wanted) = wanted else { return };
    let Some(col) = scope.by_sql_mut(&c.sql) else {
        return;
    };
    if let Some(domain) = col.typed.domain.as_mut() {
        let kept: Vec<Option<String>> = domain
            .iter()
            .filter(|v| v.as_ref().is_some_and(|v| wanted.contains(v)))
            .cloned()
            .collect();
        if !kept.is_empty() {
            *domain = kept;
        }
    }
}
