//! proxy.toml, read and validated. Every mistake is reported with its path
//! in the file and how to fix it; a config that passes [`Config::load`] is
//! safe to plan against (bounds are ordered and finite, users have
//! secrets, names are unique).

pub mod files;
mod model;
mod validate;

pub use model::*;
pub use validate::{ConfigError, ConfigErrors};

/// The ledger account that synthetic-data fits are charged to (with the
/// dataset's budget): no login may take this name.
pub const SYNTHETIC_ACCOUNT: &str = "dpgate:synthetic";

/// Names that begin with this (in any case) belong to the queries dpgate
/// writes for the backend: no declared table or column, and no name in an
/// analyst's statement, may take one.
pub const RESERVED_PREFIX: &str = "__dp_";

/// Whether `name` begins with [`RESERVED_PREFIX`], in any case (checked
/// on every token of every statement, so without allocating).
pub fn is_reserved_name(name: &str) -> bool {
    name.get(..RESERVED_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(RESERVED_PREFIX))
}

/// Largest `max_rows_per_unit` a table may declare, and largest per-unit
/// row bound a join of private tables may reach (the product of its
/// tables' bounds). Sensitivities grow with it; beyond it answers are
/// noise and the backend work per person grows without a useful bound.
pub const MAX_ROWS_PER_UNIT: u32 = 1_000;

/// How a privacy unit column compares where the backend cannot say (its
/// type could not be read, an SQLite view's column, an `ANY` column):
/// [`Table::unit_equality`]. Such a unit is joined with no other, since
/// its equality might match one person with several.
pub const UNKNOWN_EQUALITY: &str = "an equality the backend does not report";

/// How a privacy unit column compares where the backend can neither
/// group nor sort by it (a PostgreSQL `json` or `point` column), or
/// groups it differently by hashing than by sorting (PostgreSQL's `name`
/// under a nondeterministic collation): [`Table::unit_equality`]. Every
/// bounding step groups or partitions by the unit, so every private
/// query on the table is refused before it is charged, rather than
/// failing in the backend after or counting one person as several.
pub const UNGROUPABLE_EQUALITY: &str = "no equality or order the backend groups by";

/// Largest ε a budget or a per-query maximum may be: 10⁹ ε is 10¹⁸ of the
/// ledger's nano-ε units, so a budget plus one query's cost stays inside
/// the ledger's 64-bit integers (beyond them the arithmetic would
/// saturate: costs would round down and a full budget would stop
/// filling). Far above any meaningful privacy guarantee.
pub const MAX_EPSILON: f64 = 1e9;

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
        Self::parse_unscrubbed(text, env).map_err(|errors| errors.scrubbed(&secrets_in(text)))
    }

    fn parse_unscrubbed(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigErrors> {
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

/// Every secret written into a proxy.toml text, wherever it sits and
/// whether or not the text parses: passwords in URLs (`user:secret@`,
/// `password=secret` parameters) and `password = "..."` values other than
/// `env:` references. Error messages are scrubbed of them, so no message
/// about a config ever shows one.
pub fn secrets_in(text: &str) -> Vec<String> {
    let mut secrets = Vec::new();
    for line in text.lines() {
        // user:secret@ in any URL on the line.
        let mut rest = line;
        while let Some(at) = rest.find("://") {
            let after = &rest[at + 3..];
            let end = after
                .find(|c: char| c == '/' || c == '"' || c == '\'' || c.is_whitespace())
                .unwrap_or(after.len());
            let authority = &after[..end];
            if let Some((userinfo, _)) = authority.rsplit_once('@') {
                if let Some((_, password)) = userinfo.split_once(':') {
                    secrets.push(password.to_string());
                }
            }
            rest = &after[end..];
        }
        // password=secret in a URL's parameters or a key=value string.
        for (i, _) in line.match_indices("password=") {
            let value: String = line[i + "password=".len()..]
                .chars()
                .take_while(|c| !matches!(c, '&' | '"' | '\'' | ' '))
                .collect();
            secrets.push(value);
        }
        // password = "secret" or token = "secret" (a user's), not env:
        // references.
        let trimmed = line.trim_start();
        for key in ["password", "token"] {
            if let Some(value) = trimmed
                .strip_prefix(key)
                .map(str::trim_start)
                .and_then(|r| r.strip_prefix('='))
            {
                let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
                if !value.starts_with("env:") {
                    secrets.push(value.to_string());
                }
            }
        }
    }
    secrets.retain(|s| s.len() >= 2);
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    secrets.dedup();
    secrets
}
