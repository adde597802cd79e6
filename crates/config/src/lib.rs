//! proxy.toml, read and validated. Every mistake is reported with its path
//! in the file and how to fix it; a config that passes [`Config::load`] is
//! safe to plan against (bounds are ordered and finite, users have
//! secrets, names are unique).

mod model;
mod validate;

pub use model::*;
pub use validate::{ConfigError, ConfigErrors};

/// Largest `max_rows_per_unit` a table may declare, and largest per-unit
/// row bound a join of private tables may reach (the product of its
/// tables' bounds). Sensitivities grow with it; beyond it answers are
/// noise and the backend work per person grows without a useful bound.
pub const MAX_ROWS_PER_UNIT: u32 = 1_000;

/// The ledger's unit of ε (nano-ε): the smallest ε any query may cost.
/// Queries spend ε on this grid exactly (rounded down for the noise,
/// charged in whole units), so the ledger charges exactly what the noise
/// was calibrated for.
pub const MIN_EPSILON: f64 = 1e-9;

use std::path::Path;

impl Config {
    /// Reads and validates `path`, resolving `env:` secrets from the
    /// process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors::single(
                path.display().to_string(),
                format!("cannot read the file: {e}"),
                "pass the path of an existing proxy.toml with --config",
            )
        })?;
        let mut config = Config::parse(&text, &|name| std::env::var(name).ok())?;
        config.anchor_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(config)
    }

    /// Makes relative file paths (SQLite backend and ledger, CSV sources,
    /// TLS files) relative to `dir`, the directory of proxy.toml, so that
    /// dpgate reads the same files from whatever directory it starts in.
    pub fn anchor_paths(&mut self, dir: &Path) {
        let anchor = |p: &mut std::path::PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() && *p != Path::new(":memory:") {
                *p = dir.join(&*p);
            }
        };
        if let BackendStore::Sqlite(p) = &mut self.backend.store {
            anchor(p);
        }
        if let LedgerStore::Sqlite(p) = &mut self.ledger {
            anchor(p);
        }
        if let Some(tls) = &mut self.server.tls {
            anchor(&mut tls.cert);
            anchor(&mut tls.key);
        }
        for t in &mut self.tables {
            if let Some(p) = &mut t.csv {
                anchor(p);
            }
        }
        if let Some(p) = &mut self.catalog.bin_dir {
            anchor(p);
        }
    }

    /// Parses and validates config text; `env` looks up `env:NAME` secrets.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        let raw: model::RawConfig = toml::from_str(text).map_err(|e| {
            ConfigErrors::single(
                "proxy.toml".into(),
                e.message().to_string(),
                &format!(
                    "fix the TOML at {}; see the proxy.toml reference in README.md",
                    e.span()
                        .map(|s| line_col(text, s.start))
                        .unwrap_or_else(|| "the reported place".into())
                ),
            )
        })?;
        validate::validate(raw, env)
    }

    /// The declared table `name` (`schema.table`, or a bare name in schema
    /// `public`), compared case-insensitively as PostgreSQL folds identifiers.
    pub fn table(&self, schema: Option<&str>, name: &str) -> Option<&Table> {
        let schema = schema.unwrap_or("public");
        self.tables
            .iter()
            .find(|t| t.schema.eq_ignore_ascii_case(schema) && t.name.eq_ignore_ascii_case(name))
    }

    /// The user `name`, if declared.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }
}

fn line_col(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    format!("line {line}, column {col}")
}

#[cfg(test)]
mod tests;
