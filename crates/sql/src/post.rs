//! Post-processing, run in dpgate after noise (free under DP): the select
//! list's arithmetic over aggregates and group keys, HAVING, ORDER BY,
//! DISTINCT, LIMIT and OFFSET. None of it is ever sent to the backend,
//! where it could select rows by their true values.

use std::cmp::Ordering;

use sqlparser::ast::{BinaryOperator, Expr, Function, UnaryOperator, Value};

use crate::classify::object_name;
use crate::error::{sqlstate, Refusal};
use crate::types::{Cell, OutputType};

/// An expression over one released group.
#[derive(Clone, Debug, PartialEq)]
pub enum PostExpr {
    /// The i-th noisy aggregate.
    Agg(usize),
    /// The i-th group key.
    Key(usize),
    /// A constant.
    Const(Cell),
    /// `-x`.
    Neg(Box<PostExpr>),
    /// `NOT x`.
    Not(Box<PostExpr>),
    /// `x op y`.
    Binary(BinaryOperator, Box<PostExpr>, Box<PostExpr>),
    /// A scalar function.
    Call(String, Vec<PostExpr>),
    /// `CASE WHEN c THEN r ... ELSE e END`.
    Case(Vec<(PostExpr, PostExpr)>, Box<PostExpr>),
    /// `x IS [NOT] NULL`.
    IsNull(Box<PostExpr>, bool),
    /// `CAST(x AS t)`.
    Cast(Box<PostExpr>, OutputType),
}

/// What post-processing expressions may refer to.
pub trait PostScope {
    /// Plans an aggregate call; returns its index and type.
    fn aggregate(&mut self, f: &Function) -> Result<(usize, OutputType), Refusal>;
    /// The group key `e` names, if any.
    fn key(&self, e: &Expr) -> Option<(usize, OutputType)>;
    /// A select-list alias (for HAVING and ORDER BY).
    fn alias(&self, name: &str) -> Option<(PostExpr, OutputType)>;
}

const FUNCTIONS: [&str; 13] = [
    "round", "abs", "ceil", "ceiling", "floor", "trunc", "sqrt", "sign", "least", "greatest",
    "coalesce", "nullif", "exp",
];

/// Compiles an expression over aggregates, keys and constants.
pub fn compile_post(
    e: &Expr,
    scope: &mut dyn PostScope,
) -> Result<(PostExpr, OutputType), Refusal> {
    use OutputType::*;
    if let Some((i, ty)) = scope.key(e) {
        return Ok((PostExpr::Key(i), ty));
    }
    let bx = Box::new;
    match e {
        Expr::Function(f) => {
            let name = object_name(&f.name).to_ascii_lowercase();
            if crate::types::is_aggregate(&name) || !f.within_group.is_empty() || f.over.is_some() {
                let (i, ty) = scope.aggregate(f)?;
                return Ok((PostExpr::Agg(i), ty));
            }
            if !FUNCTIONS.contains(&name.as_str()) {
                return Err(Refusal::unsupported(
                    format!("the function {name} is not supported over aggregates"),
                    format!("use one of: {}", FUNCTIONS.join(", ")),
                ));
            }
            let args = function_args(f)?
                .iter()
                .map(|a| compile_post(a, scope))
                .collect::<Result<Vec<_>, _>>()?;
            let ty = match name.as_str() {
                "round" | "trunc" | "sqrt" | "exp" => Float,
                "ceil" | "ceiling" | "floor" | "abs" | "sign" => {
                    args.first().map_or(Float, |a| a.1)
                }
                _ => common(args.iter().map(|a| a.1)),
            };
            Ok((
                PostExpr::Call(name, args.into_iter().map(|a| a.0).collect()),
                ty,
            ))
        }
        Expr::Identifier(i) => match scope.alias(&i.value) {
            Some(found) => Ok(found),
            None => Err(not_grouped(&e.to_string())),
        },
        Expr::CompoundIdentifier(_) => Err(not_grouped(&e.to_string())),
        Expr::Value(v) => Ok(match &v.value {
            Value::Null => (PostExpr::Const(Cell::Null), Text),
            Value::Boolean(b) => (PostExpr::Const(Cell::Bool(*b)), Bool),
            Value::Number(n, _) => match n.parse::<i64>() {
                Ok(i) => (PostExpr::Const(Cell::Int(i)), Int),
                Err(_) => (
                    PostExpr::Const(Cell::Float(n.parse().map_err(|_| {
                        Refusal::unsupported(format!("the number {n}"), "write a plain number")
                    })?)),
                    Float,
                ),
            },
            Value::SingleQuotedString(s) => (PostExpr::Const(Cell::Text(s.clone())), Text),
            other => {
                return Err(Refusal::unsupported(
                    format!("the literal {other}"),
                    "use numbers, strings, TRUE, FALSE or NULL",
                ))
            }
        }),
        Expr::Nested(inner) => compile_post(inner, scope),
        Expr::UnaryOp { op, expr } => {
            let (x, ty) = compile_post(expr, scope)?;
            match op {
                UnaryOperator::Minus => Ok((PostExpr::Neg(bx(x)), ty)),
                UnaryOperator::Plus => Ok((x, ty)),
                UnaryOperator::Not => Ok((PostExpr::Not(bx(x)), Bool)),
                other => Err(unsupported_post(&other.to_string())),
            }
        }
        Expr::BinaryOp { left, op, right } => {
            let (l, lt) = compile_post(left, scope)?;
            let (r, rt) = compile_post(right, scope)?;
            use BinaryOperator as B;
            let ty = match op {
                B::Plus | B::Minus | B::Multiply | B::Divide | B::Modulo => {
                    if lt == Int && rt == Int {
                        Int
                    } else {
                        Float
                    }
                }
                B::Eq | B::NotEq | B::Lt | B::LtEq | B::Gt | B::GtEq | B::And | B::Or => Bool,
                B::StringConcat => Text,
                other => return Err(unsupported_post(&other.to_string())),
            };
            Ok((PostExpr::Binary(op.clone(), bx(l), bx(r)), ty))
        }
        Expr::Between {
            expr,
            negated,
            low,
            high,
        } => {
            let (x, _) = compile_post(expr, scope)?;
            let (lo, _) = compile_post(low, scope)?;
            let (hi, _) = compile_post(high, scope)?;
            let within = PostExpr::Binary(
                BinaryOperator::And,
                bx(PostExpr::Binary(
                    BinaryOperator::GtEq,
                    bx(x.clone()),
                    bx(lo),
                )),
                bx(PostExpr::Binary(BinaryOperator::LtEq, bx(x), bx(hi))),
            );
            Ok((
                if *negated {
                    PostExpr::Not(bx(within))
                } else {
                    within
                },
                Bool,
            ))
        }
        Expr::InList {
            expr,
            list,
            negated,
        } => {
            let (x, _) = compile_post(expr, scope)?;
            let mut any = PostExpr::Const(Cell::Bool(false));
            for item in list {
                let (v, _) = compile_post(item, scope)?;
                let eq = PostExpr::Binary(BinaryOperator::Eq, bx(x.clone()), bx(v));
                any = PostExpr::Binary(BinaryOperator::Or, bx(any), bx(eq));
            }
            Ok((
                if *negated {
                    PostExpr::Not(bx(any))
                } else {
                    any
                },
                Bool,
            ))
        }
        Expr::IsNull(x) => Ok((PostExpr::IsNull(bx(compile_post(x, scope)?.0), false), Bool)),
        Expr::IsNotNull(x) => Ok((PostExpr::IsNull(bx(compile_post(x, scope)?.0), true), Bool)),
        Expr::Case {
            operand,
            conditions,
            else_result,
            ..
        } => {
            let subject = operand
                .as_ref()
                .map(|o| compile_post(o, scope))
                .transpose()?;
            let mut whens = Vec::new();
            let mut types = Vec::new();
            for cw in conditions {
                let (c, _) = compile_post(&cw.condition, scope)?;
                let c = match &subject {
                    Some((s, _)) => PostExpr::Binary(BinaryOperator::Eq, bx(s.clone()), bx(c)),
                    None => c,
                };
                let (r, rt) = compile_post(&cw.result, scope)?;
                types.push(rt);
                whens.push((c, r));
            }
            let otherwise = match else_result {
                Some(e) => {
                    let (x, t) = compile_post(e, scope)?;
                    types.push(t);
                    x
                }
                None => PostExpr::Const(Cell::Null),
            };
            Ok((
                PostExpr::Case(whens, bx(otherwise)),
                common(types.into_iter()),
            ))
        }
        Expr::Cast {
            expr, data_type, ..
        } => {
            let (x, _) = compile_post(expr, scope)?;
            let name = data_type.to_string().to_ascii_lowercase();
            let ty = if name.contains("int") {
                Int
            } else if ["float", "double", "real", "numeric", "decimal"]
                .iter()
                .any(|t| name.starts_with(t))
            {
                Float
            } else if ["text", "varchar", "char"]
                .iter()
                .any(|t| name.starts_with(t))
            {
                Text
            } else {
                return Err(Refusal::unsupported(
                    format!("CAST to {data_type} over aggregates"),
                    "cast to int, float, numeric or text",
                ));
            };
            Ok((PostExpr::Cast(bx(x), ty), ty))
        }
        other => Err(unsupported_post(&other.to_string())),
    }
}

fn function_args(f: &Function) -> Result<Vec<&Expr>, Refusal> {
    use sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments};
    match &f.args {
        FunctionArguments::List(l) if l.duplicate_treatment.is_none() && l.clauses.is_empty() => l
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
                other => Err(unsupported_post(&other.to_string())),
            })
            .collect(),
        _ => Err(unsupported_post(&f.to_string())),
    }
}

fn common(types: impl Iterator<Item = OutputType>) -> OutputType {
    types
        .reduce(|a, b| match (a, b) {
            (x, y) if x == y => x,
            (OutputType::Int | OutputType::Float, OutputType::Int | OutputType::Float) => {
                OutputType::Float
            }
            (x, _) => x,
        })
        .unwrap_or(OutputType::Text)
}

/// PostgreSQL's own words for a column that is neither grouped nor aggregated.
pub fn not_grouped(name: &str) -> Refusal {
    Refusal::new(
        sqlstate::GROUPING_ERROR,
        format!("column {name} must appear in the GROUP BY clause or be used in an aggregate function"),
        "add it to GROUP BY (keys are released from a declared domain or by partition selection), or aggregate it, e.g. AVG(col)",
    )
}

fn unsupported_post(what: &str) -> Refusal {
    Refusal::unsupported(
        format!("{what} is not supported over aggregates"),
        "combine aggregates with + - * /, comparisons, AND/OR/NOT, CASE, CAST, ROUND, ABS, FLOOR, CEIL, LEAST, GREATEST, COALESCE or NULLIF",
    )
}

fn num(c: &Cell) -> Option<f64> {
    match c {
        Cell::Int(i) => Some(*i as f64),
        Cell::Float(f) => Some(*f),
        Cell::Text(t) => t.trim().parse().ok(),
        Cell::Bool(_) | Cell::Null => None,
    }
}

fn truth(c: &Cell) -> Option<bool> {
    match c {
        Cell::Bool(b) => Some(*b),
        Cell::Null => None,
        other => num(other).map(|x| x != 0.0),
    }
}

/// Compares two values as PostgreSQL would (numbers numerically).
pub fn compare(a: &Cell, b: &Cell) -> Option<Ordering> {
    match (a, b) {
        (Cell::Null, _) | (_, Cell::Null) => None,
        (Cell::Text(x), Cell::Text(y)) => Some(x.cmp(y)),
        (Cell::Bool(x), Cell::Bool(y)) => Some(x.cmp(y)),
        _ => num(a)?.partial_cmp(&num(b)?),
    }
}

impl PostExpr {
    /// Evaluates over one group's noisy aggregates and keys. Arithmetic
    /// that PostgreSQL would reject (division by zero, overflow) gives NULL:
    /// the inputs are already private, and an error would waste the charge.
    pub fn eval(&self, aggs: &[Cell], keys: &[Cell]) -> Cell {
        use Cell as C;
        match self {
            PostExpr::Agg(i) => aggs[*i].clone(),
            PostExpr::Key(i) => keys[*i].clone(),
            PostExpr::Const(c) => c.clone(),
            PostExpr::Neg(x) => match x.eval(aggs, keys) {
                C::Int(i) => i.checked_neg().map_or(C::Null, C::Int),
                C::Float(f) => C::Float(-f),
                _ => C::Null,
            },
            PostExpr::Not(x) => truth(&x.eval(aggs, keys)).map_or(C::Null, |b| C::Bool(!b)),
            PostExpr::IsNull(x, negated) => C::Bool((x.eval(aggs, keys) == C::Null) != *negated),
            PostExpr::Binary(op, l, r) => binary(op, l.eval(aggs, keys), r.eval(aggs, keys)),
            PostExpr::Case(whens, otherwise) => whens
                .iter()
                .find(|(c, _)| truth(&c.eval(aggs, keys)) == Some(true))
                .map_or_else(|| otherwise.eval(aggs, keys), |(_, r)| r.eval(aggs, keys)),
            PostExpr::Cast(x, ty) => cast(x.eval(aggs, keys), *ty),
            PostExpr::Call(name, args) => {
                let v: Vec<Cell> = args.iter().map(|a| a.eval(aggs, keys)).collect();
                call(name, &v)
            }
        }
    }
}

fn binary(op: &BinaryOperator, a: Cell, b: Cell) -> Cell {
    use BinaryOperator as B;
    use Cell as C;
    match op {
        B::And => match (truth(&a), truth(&b)) {
            (Some(false), _) | (_, Some(false)) => C::Bool(false),
            (Some(true), Some(true)) => C::Bool(true),
            _ => C::Null,
        },
        B::Or => match (truth(&a), truth(&b)) {
            (Some(true), _) | (_, Some(true)) => C::Bool(true),
            (Some(false), Some(false)) => C::Bool(false),
            _ => C::Null,
        },
        B::Eq | B::NotEq | B::Lt | B::LtEq | B::Gt | B::GtEq => match compare(&a, &b) {
            None => C::Null,
            Some(o) => C::Bool(match op {
                B::Eq => o == Ordering::Equal,
                B::NotEq => o != Ordering::Equal,
                B::Lt => o == Ordering::Less,
                B::LtEq => o != Ordering::Greater,
                B::Gt => o == Ordering::Greater,
                _ => o != Ordering::Less,
            }),
        },
        B::StringConcat => match (&a, &b) {
            (C::Null, _) | (_, C::Null) => C::Null,
            _ => C::Text(format!("{}{}", text(&a), text(&b))),
        },
        _ => match (&a, &b) {
            (C::Int(x), C::Int(y)) => match op {
                B::Plus => x.checked_add(*y),
                B::Minus => x.checked_sub(*y),
                B::Multiply => x.checked_mul(*y),
                B::Divide => x.checked_div(*y),
                _ => x.checked_rem(*y),
            }
            .map_or(C::Null, C::Int),
            _ => match (num(&a), num(&b)) {
                (Some(x), Some(y)) => {
                    let v = match op {
                        B::Plus => x + y,
                        B::Minus => x - y,
                        B::Multiply => x * y,
                        B::Divide if y == 0.0 => return C::Null,
                        B::Divide => x / y,
                        _ if y == 0.0 => return C::Null,
                        _ => x % y,
                    };
                    if v.is_finite() {
                        C::Float(v)
                    } else {
                        C::Null
                    }
                }
                _ => C::Null,
            },
        },
    }
}

fn text(c: &Cell) -> String {
    match c {
        Cell::Null => String::new(),
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) => f.to_string(),
        Cell::Text(t) => t.clone(),
        Cell::Bool(b) => if *b { "true" } else { "false" }.into(),
    }
}

fn cast(v: Cell, ty: OutputType) -> Cell {
    match (v, ty) {
        (Cell::Null, _) => Cell::Null,
        (v, OutputType::Text) => Cell::Text(text(&v)),
        (Cell::Int(i), OutputType::Int) => Cell::Int(i),
        (v, OutputType::Int) => num(&v)
            .map(f64::round)
            .filter(|f| f.abs() < 9.2e18)
            .map_or(Cell::Null, |f| Cell::Int(f as i64)),
        (v, OutputType::Float) => num(&v).map_or(Cell::Null, Cell::Float),
        (v, OutputType::Bool) => truth(&v).map_or(Cell::Null, Cell::Bool),
    }
}

fn call(name: &str, v: &[Cell]) -> Cell {
    use Cell as C;
    let x = v.first().and_then(num);
    let float = |f: Option<f64>| f.filter(|f| f.is_finite()).map_or(C::Null, C::Float);
    let same = |f: fn(f64) -> f64| match v.first() {
        Some(C::Int(i)) => C::Int(*i),
        _ => float(x.map(f)),
    };
    match name {
        "round" | "trunc" => {
            let digits = v.get(1).and_then(num).unwrap_or(0.0).clamp(-15.0, 15.0) as i32;
            let scale = 10f64.powi(digits);
            let f = if name == "round" {
                f64::round
            } else {
                f64::trunc
            };
            float(x.map(|x| f(x * scale) / scale))
        }
        "abs" => match v.first() {
            Some(C::Int(i)) => i.checked_abs().map_or(C::Null, C::Int),
            _ => float(x.map(f64::abs)),
        },
        "ceil" | "ceiling" => same(f64::ceil),
        "floor" => same(f64::floor),
        "sign" => same(f64::signum),
        "sqrt" => float(x.filter(|x| *x >= 0.0).map(f64::sqrt)),
        "exp" => float(x.map(f64::exp)),
        "coalesce" => v
            .iter()
            .find(|c| **c != C::Null)
            .cloned()
            .unwrap_or(C::Null),
        "nullif" => match (v.first(), v.get(1)) {
            (Some(a), Some(b)) if compare(a, b) == Some(Ordering::Equal) => C::Null,
            (Some(a), _) => a.clone(),
            _ => C::Null,
        },
        "least" | "greatest" => v
            .iter()
            .filter(|c| **c != C::Null)
            .cloned()
            .reduce(|a, b| {
                let o = compare(&a, &b).unwrap_or(Ordering::Equal);
                if (name == "least") == (o == Ordering::Greater) {
                    b
                } else {
                    a
                }
            })
            .unwrap_or(C::Null),
        _ => C::Null,
    }
}
