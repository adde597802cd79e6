//! SELECTs without FROM (`SELECT 1`, `SELECT version()`): answered by
//! dpgate from session state alone. Nothing here touches data.

use sqlparser::ast::{Expr, FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem, Value};

use crate::classify::object_name;
use crate::error::{sqlstate, Refusal};
use crate::types::Cell;

/// What a constant select may read about the session.
pub trait SessionInfo {
    /// The connected user.
    fn user(&self) -> String;
    /// The database name the client asked for.
    fn database(&self) -> String;
    /// The current value of a setting, if known.
    fn setting(&self, name: &str) -> Option<String>;
    /// Changes a setting (`set_config`); the default refuses.
    fn set_setting(&self, name: &str, _value: &str) -> Result<(), Refusal> {
        Err(Refusal::unsupported(
            format!("cannot change {name} here"),
            "use SET",
        ))
    }
}

/// The `version()` string: PostgreSQL's form, which SQLAlchemy and JDBC parse.
pub const SERVER_VERSION: &str = "15.0";

/// `version()`.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {SERVER_VERSION} (dpgate {}) on x86_64-pc-linux-gnu, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION")
    )
}

/// Evaluates each select item: (column name, value).
pub fn evaluate_constant(
    items: &[SelectItem],
    session: &dyn SessionInfo,
) -> Result<Vec<(String, Cell)>, Refusal> {
    items
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(e) => Ok((default_name(e), eval(e, session)?)),
            SelectItem::ExprWithAlias { expr, alias } => {
                Ok((alias.value.clone(), eval(expr, session)?))
            }
            _ => Err(Refusal::unsupported(
                "* needs a FROM clause",
                "select expressions",
            )),
        })
        .collect()
}

fn default_name(e: &Expr) -> String {
    match e {
        Expr::Function(f) => object_name(&f.name)
            .rsplit('.')
            .next()
            .unwrap_or("?column?")
            .to_ascii_lowercase(),
        Expr::Identifier(i) => i.value.to_ascii_lowercase(),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => default_name(expr),
        _ => "?column?".into(),
    }
}

fn eval(e: &Expr, s: &dyn SessionInfo) -> Result<Cell, Refusal> {
    Ok(match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n
                .parse::<i64>()
                .map(Cell::Int)
                .or_else(|_| n.parse::<f64>().map(Cell::Float))
                .map_err(|_| unsupported(e))?,
            Value::SingleQuotedString(t) => Cell::Text(t.clone()),
            Value::Boolean(b) => Cell::Bool(*b),
            Value::Null => Cell::Null,
            _ => return Err(unsupported(e)),
        },
        Expr::Nested(inner) => eval(inner, s)?,
        Expr::Cast { expr, .. } => eval(expr, s)?,
        Expr::UnaryOp {
            op: sqlparser::ast::UnaryOperator::Minus,
            expr,
        } => match eval(expr, s)? {
            Cell::Int(i) => Cell::Int(-i),
            Cell::Float(f) => Cell::Float(-f),
            _ => return Err(unsupported(e)),
        },
        Expr::Identifier(i) => session_function(&i.value.to_ascii_lowercase(), &[], s)?
            .ok_or_else(|| unsupported(e))?,
        Expr::Function(f) => {
            let name = object_name(&f.name).to_ascii_lowercase();
            let name = name
                .strip_prefix("pg_catalog.")
                .unwrap_or(&name)
                .to_string();
            let args = match &f.args {
                FunctionArguments::List(list) => list
                    .args
                    .iter()
                    .map(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => eval(x, s),
                        _ => Err(unsupported(e)),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => Vec::new(),
            };
            session_function(&name, &args, s)?.ok_or_else(|| unsupported(e))?
        }
        _ => return Err(unsupported(e)),
    })
}

fn session_function(
    name: &str,
    args: &[Cell],
    s: &dyn SessionInfo,
) -> Result<Option<Cell>, Refusal> {
    Ok(Some(match (name, args) {
        ("version", []) => Cell::Text(version_string()),
        ("current_schema", []) => Cell::Text("public".into()),
        ("current_database", []) => Cell::Text(s.database()),
        ("current_user" | "session_user" | "user" | "current_role", []) => Cell::Text(s.user()),
        ("current_setting", [Cell::Text(n), ..]) => s
            .setting(&n.to_ascii_lowercase())
            .map(Cell::Text)
            .unwrap_or(Cell::Null),
        ("set_config", [Cell::Text(n), Cell::Text(v), _]) => {
            s.set_setting(&n.to_ascii_lowercase(), v)?;
            Cell::Text(v.clone())
        }
        ("pg_backend_pid", []) => Cell::Int(i64::from(std::process::id() as i32)),
        // Connection-pool resets (asyncpg): dpgate holds no advisory locks.
        ("pg_advisory_unlock_all", []) => Cell::Null,
        _ => return Ok(None),
    }))
}

fn unsupported(e: &Expr) -> Refusal {
    Refusal::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        format!("dpgate cannot evaluate {e} without a table"),
        "constant SELECTs support literals, version(), current_schema(), current_database(), current_user and current_setting()",
    )
}
