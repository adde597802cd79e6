//! Name resolution against the declared catalog.

use dpgate_config::{Config, Table};
use sqlparser::ast::ObjectName;

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
