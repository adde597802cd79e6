//! Name resolution against the declared catalog.

use dpgate_config::{Config, Table, TablePrivacy};
use sqlparser::ast::{Expr, ObjectName};

use crate::classify::object_name;
use crate::error::{sqlstate, Refusal};

/// Resolves a FROM name (`t` or `schema.t`) to a declared table.
pub fn resolve_table<'c>(config: &'c Config, name: &ObjectName) -> Result<&'c Table, Refusal> {
    let text = object_name(name);
    let parts: Vec<&str> = text.split('.').collect();
    let found = match parts.as_slice() {
        [t] => config.table(None, t),
        [s, t] => config.table(Some(s), t),
        [_db, s, t] => config.table(Some(s), t),
        _ => None,
    };
    found.ok_or_else(|| {
        let known: Vec<String> = config
            .tables
            .iter()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect();
        Refusal::new(
            sqlstate::UNDEFINED_TABLE,
            format!("relation \"{text}\" does not exist or is not declared in proxy.toml"),
            format!("query one of the declared tables: {}", known.join(", ")),
        )
    })
}

/// Resolves a column reference (`col` or `table.col`) to its declared name.
/// The privacy unit column resolves too (it may be counted or filtered on).
pub fn resolve_column(expr: &Expr, table: &Table) -> Result<String, Refusal> {
    let name = match expr {
        Expr::Identifier(i) => i.value.clone(),
        Expr::CompoundIdentifier(parts) => {
            let last = parts.last().map(|i| i.value.clone()).unwrap_or_default();
            let qualifier = parts[..parts.len().saturating_sub(1)]
                .last()
                .map(|i| i.value.clone())
                .unwrap_or_default();
            if !qualifier.eq_ignore_ascii_case(&table.name) {
                return Err(Refusal::new(
                    sqlstate::UNDEFINED_COLUMN,
                    format!("\"{qualifier}\" does not name the table in FROM"),
                    format!(
                        "qualify columns with {} or leave them unqualified",
                        table.name
                    ),
                ));
            }
            last
        }
        other => {
            return Err(Refusal::unsupported(
                format!("{other} is not a column"),
                "name a declared column",
            ))
        }
    };
    if let Some(c) = table.column(&name) {
        return Ok(c.name.clone());
    }
    if let TablePrivacy::Private {
        privacy_unit: Some(unit),
        ..
    } = &table.privacy
    {
        if unit.eq_ignore_ascii_case(&name) {
            return Ok(unit.clone());
        }
    }
    let known: Vec<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
    Err(Refusal::new(
        sqlstate::UNDEFINED_COLUMN,
        format!(
            "column \"{name}\" of \"{}\" is not declared in proxy.toml",
            table.name
        ),
        format!("use one of the declared columns: {}", known.join(", ")),
    ))
}
