//! Checks a parsed proxy.toml and turns it into the validated model.
//! All problems are collected, not just the first, each with its path.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use crate::model::*;

/// One problem in proxy.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// Where, e.g. `tables[0].columns.age`.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub fix: String,
}

/// All problems found in one proxy.toml.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub(crate) fn single(path: String, message: String, fix: &str) -> Self {
        ConfigErrors(vec![ConfigError {
            path,
            message,
            fix: fix.to_string(),
        }])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "proxy.toml has {} problem(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "  {}: {} (fix: {})", e.path, e.message, e.fix)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

struct Collector(Vec<ConfigError>);

impl Collector {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.into(),
            message: message.into(),
            fix: fix.into(),
        });
    }

    /// A δ budget: in [0, 1), `default` if absent.
    fn delta_budget(&mut self, path: &str, value: Option<f64>, default: f64) -> f64 {
        let v = value.unwrap_or(default);
        if !(0.0..1.0).contains(&v) {
            self.err(
                path,
                format!("{v} is not at least 0 and below 1"),
                "write a small number such as 1e-4, or 0 to refuse queries that cost δ",
            );
        }
        v
    }

    /// A duration such as "30d" or "12h", if given.
    fn duration(&mut self, path: &str, value: Option<&str>) -> Option<std::time::Duration> {
        let text = value?;
        match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => Some(d),
            Ok(_) => {
                self.err(
                    path,
                    "a zero duration",
                    "write e.g. \"30d\", or remove the key",
                );
                None
            }
            Err(e) => {
                self.err(
                    path,
                    format!("{text:?} is not a duration: {e}"),
                    "write a number and a unit, e.g. \"30d\", \"12h\" or \"1week\"",
                );
                None
            }
        }
    }

    fn positive(&mut self, path: &str, value: Option<f64>, default: f64) -> f64 {
        let v = value.unwrap_or(default);
        if !(v.is_finite() && v > 0.0) {
            self.err(
                path,
                format!("{v} is not a positive number"),
                "write a number above 0, e.g. 0.1",
            );
        }
        v
    }
}

pub(crate) fn validate(
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut c = Collector(Vec::new());

    let listen_text = raw
        .server
        .listen
        .clone()
        .unwrap_or_else(|| "127.0.0.1:6432".into());
    let listen = listen_text.parse().unwrap_or_else(|_| {
        c.err(
            "server.listen",
            format!("{listen_text:?} is not an address with a port"),
            "write host:port, e.g. \"127.0.0.1:6432\"",
        );
        "127.0.0.1:6432".parse().unwrap()
    });

    let server = validate_server(&mut c, &raw.server);
    if raw.catalog.url.is_some() {
        // A catalog on a server that holds data (or other tenants) lets
        // catalog SQL read that server's files and statistics.
        c.err(
            "catalog.url",
            "dpgate no longer sends catalog queries to a server you name: it runs its own catalog cluster that holds nothing but empty tables",
            "remove catalog.url; set catalog.bin_dir if PostgreSQL's server binaries are not found, or catalog.enabled = false",
        );
    }
    let catalog = crate::Catalog {
        enabled: raw.catalog.enabled.unwrap_or(true),
        bin_dir: raw.catalog.bin_dir.as_deref().map(PathBuf::from),
    };

    let store = match (raw.backend.url, raw.backend.sqlite) {
        (Some(_), Some(_)) => {
            c.err(
                "backend",
                "both url and sqlite are set",
                "keep url for PostgreSQL, or sqlite for an embedded SQLite file",
            );
            BackendStore::Sqlite(PathBuf::new())
        }
        (None, Some(path)) => {
            if path.trim().is_empty() {
                c.err(
                    "backend.sqlite",
                    "the SQLite file name is empty",
                    "write a file name, e.g. sqlite = \"data.db\"",
                );
            }
            BackendStore::Sqlite(path.into())
        }
        (url, None) => {
            let url = url.unwrap_or_default();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                c.err(
                    "backend.url",
                    format!("{:?} is not a PostgreSQL URL", redact_password(&url)),
                    "write url = \"postgres://user@host:port/database\", or sqlite = \"data.db\" for an embedded SQLite file",
                );
            }
            BackendStore::Postgres(url)
        }
    };
    let pool_size = raw.backend.pool_size.unwrap_or(8);
    if pool_size == 0 {
        c.err(
            "backend.pool_size",
            "0 connections cannot run queries",
            "write 1 or more (default 8)",
        );
    }
    let backend = Backend {
        store,
        statement_timeout_ms: raw.backend.statement_timeout_ms.unwrap_or(30_000),
        pool_size,
        allow_privileged_role: raw.backend.allow_privileged_role.unwrap_or(false),
    };

    let default_epsilon = c.positive("privacy.default_epsilon", raw.privacy.default_epsilon, 0.1);
    let max_epsilon_per_query = c.positive(
        "privacy.max_epsilon_per_query",
        raw.privacy.max_epsilon_per_query,
        default_epsilon.max(1.0),
    );
    if default_epsilon > max_epsilon_per_query {
        c.err(
            "privacy.default_epsilon",
            format!(
                "{default_epsilon} is above privacy.max_epsilon_per_query {max_epsilon_per_query}"
            ),
            "lower default_epsilon or raise max_epsilon_per_query",
        );
    }
    let min_epsilon_per_query = c.positive(
        "privacy.min_epsilon_per_query",
        raw.privacy.min_epsilon_per_query,
        default_epsilon.min(0.001),
    );
    if min_epsilon_per_query < crate::MIN_EPSILON {
        c.err(
            "privacy.min_epsilon_per_query",
            format!(
                "{min_epsilon_per_query} is below {}, the smallest ε the ledger can charge",
                crate::MIN_EPSILON
            ),
            format!("write {} or more (default 0.001)", crate::MIN_EPSILON),
        );
    }
    if min_epsilon_per_query > default_epsilon {
        c.err(
            "privacy.min_epsilon_per_query",
            format!("{min_epsilon_per_query} is above privacy.default_epsilon {default_epsilon}"),
            "lower min_epsilon_per_query or raise default_epsilon",
        );
    }
    let delta = raw.privacy.delta.unwrap_or(1e-6);
    if !(delta > 0.0 && delta < 1.0) {
        c.err(
            "privacy.delta",
            format!("{delta} is not between 0 and 1"),
            "write a small number such as 1e-6",
        );
    }
    let confidence = raw.privacy.confidence.unwrap_or(0.95);
    if !(confidence > 0.0 && confidence < 1.0) {
        c.err(
            "privacy.confidence",
            format!("{confidence} is not between 0 and 1"),
            "write e.g. 0.95",
        );
    }
    let refresh = c.duration("privacy.refresh", raw.privacy.refresh.as_deref());
    let delta_budget = c.delta_budget(
        "privacy.delta_budget",
        raw.privacy.delta_budget,
        delta * DEFAULT_DELTA_QUERIES,
    );
    let dataset_budget = match (
        raw.privacy.dataset_epsilon_budget,
        raw.privacy.dataset_delta_budget,
    ) {
        (None, None) => None,
        (epsilon, dataset_delta) => Some(Budget {
            epsilon: c.positive("privacy.dataset_epsilon_budget", epsilon, f64::NAN),
            delta: c.delta_budget(
                "privacy.dataset_delta_budget",
                dataset_delta,
                delta * DEFAULT_DELTA_QUERIES,
            ),
            refresh,
        }),
    };
    let max_groups = raw.privacy.max_groups.unwrap_or(10_000);
    if !(1..=1_000_000).contains(&max_groups) {
        c.err(
            "privacy.max_groups",
            format!("{max_groups} is outside 1 to 1 000 000"),
            "write the most groups one answer may show, e.g. 10000",
        );
    }
    let privacy = Privacy {
        default_epsilon,
        min_epsilon_per_query,
        max_epsilon_per_query,
        max_groups,
        delta,
        confidence,
        dataset_budget,
    };
    let defaults = Budget {
        epsilon: f64::NAN,
        delta: delta_budget,
        refresh,
    };
    let cache = Cache {
        enabled: raw.cache.enabled.unwrap_or(true),
        max_age: c.duration("cache.max_age", raw.cache.max_age.as_deref()),
    };
    let ledger = validate_ledger(&mut c, raw.ledger);

    let users = validate_users(&mut c, raw.users, env, &privacy, &defaults);
    let tables = validate_tables(&mut c, raw.tables);
    check_sqlite_tables(&mut c, &backend.store, &tables);

    if c.0.is_empty() {
        Ok(Config {
            listen,
            server,
            backend,
            catalog,
            ledger,
            privacy,
            cache,
            users,
            tables,
        })
    } else {
        Err(ConfigErrors(c.0))
    }
}

/// CSV sources need the embedded SQLite backend, which has one schema.
fn check_sqlite_tables(c: &mut Collector, store: &BackendStore, tables: &[Table]) {
    let sqlite = matches!(store, BackendStore::Sqlite(_));
    for (i, t) in tables.iter().enumerate() {
        if t.csv.is_some() && !sqlite {
            c.err(
                format!("tables[{i}].csv"),
                "CSV files are loaded into the embedded SQLite backend, but [backend] is PostgreSQL",
                "set [backend] sqlite = \"data.db\" instead of url, or load the CSV into PostgreSQL and remove csv",
            );
        }
        if sqlite && !t.schema.eq_ignore_ascii_case("public") {
            c.err(
                format!("tables[{i}].name"),
                format!(
                    "the SQLite backend has one schema, but {:?} names schema {:?}",
                    format!("{}.{}", t.schema, t.name),
                    t.schema
                ),
                format!("write name = {:?}", t.name),
            );
        }
    }
}

/// Without `delta_budget`, a user may run this many queries that cost
/// `privacy.delta` (those whose groups pass partition selection).
pub const DEFAULT_DELTA_QUERIES: f64 = 100.0;

fn validate_ledger(c: &mut Collector, raw: RawLedger) -> LedgerStore {
    match (raw.path, raw.url) {
        (Some(_), Some(_)) => {
            c.err(
                "ledger",
                "both path and url are set",
                "keep path for a SQLite file, or url for a PostgreSQL ledger shared by replicas",
            );
            LedgerStore::Sqlite("dpgate-ledger.sqlite".into())
        }
        (_, Some(url)) => {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                c.err(
                    "ledger.url",
                    format!("{:?} is not a PostgreSQL URL", redact_password(&url)),
                    "write postgres://user@host:port/database, or use path for a SQLite file",
                );
            }
            LedgerStore::Postgres(url)
        }
        (path, None) => {
            LedgerStore::Sqlite(path.unwrap_or_else(|| "dpgate-ledger.sqlite".into()).into())
        }
    }
}

fn validate_server(c: &mut Collector, raw: &RawServer) -> Server {
    let max_connections = raw.max_connections.unwrap_or(100);
    if max_connections == 0 {
        c.err(
            "server.max_connections",
            "0 connections means nobody can connect",
            "write 1 or more (default 100)",
        );
    }
    let tls = match (&raw.tls_cert, &raw.tls_key) {
        (Some(cert), Some(key)) => Some(Tls {
            cert: cert.into(),
            key: key.into(),
        }),
        (None, None) => None,
        _ => {
            c.err(
                "server.tls_cert",
                "TLS needs both tls_cert and tls_key",
                "set both paths (PEM files), or neither to serve without TLS",
            );
            None
        }
    };
    Server {
        max_connections,
        idle_timeout: raw
            .idle_timeout_s
            .filter(|s| *s > 0)
            .map(std::time::Duration::from_secs),
        shutdown_grace: std::time::Duration::from_secs(raw.shutdown_grace_s.unwrap_or(30)),
        tls,
    }
}

fn validate_users(
    c: &mut Collector,
    raw: Vec<RawUser>,
    env: &dyn Fn(&str) -> Option<String>,
    privacy: &Privacy,
    defaults: &Budget,
) -> Vec<User> {
    if raw.is_empty() {
        c.err(
            "users",
            "no users are declared, so nobody can connect",
            "add a [[users]] entry with name, password and epsilon_budget",
        );
    }
    let mut seen = HashSet::new();
    let mut users = Vec::new();
    for (i, u) in raw.into_iter().enumerate() {
        let path = format!("users[{i}]");
        if u.name.is_empty() {
            c.err(
                format!("{path}.name"),
                "the name is empty",
                "write the login name",
            );
        } else if !seen.insert(u.name.clone()) {
            c.err(
                format!("{path}.name"),
                format!("user {:?} is declared twice", u.name),
                "remove or rename one of them",
            );
        }
        let secret = match u.password.as_deref() {
            None => {
                c.err(
                    format!("{path}.password"),
                    "no password",
                    "write password = \"env:VARIABLE\" or a SCRAM-SHA-256 verifier",
                );
                Secret::Password(String::new())
            }
            Some(p) if p.starts_with("env:") => match env(&p[4..]) {
                Some(v) if !v.is_empty() => Secret::Password(v),
                _ => {
                    c.err(
                        format!("{path}.password"),
                        format!("environment variable {} is not set", &p[4..]),
                        format!("export {}=... before starting dpgate", &p[4..]),
                    );
                    Secret::Password(String::new())
                }
            },
            Some(p) if p.starts_with("SCRAM-SHA-256$") => {
                if !looks_like_verifier(p) {
                    c.err(format!("{path}.password"), "the SCRAM verifier is malformed", "copy it from pg_authid.rolpassword: SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>");
                }
                Secret::ScramVerifier(p.to_string())
            }
            Some(_) => {
                c.err(format!("{path}.password"), "cleartext passwords are not accepted in proxy.toml", "write password = \"env:VARIABLE\" and export the password in that variable, or paste a SCRAM-SHA-256 verifier");
                Secret::Password(String::new())
            }
        };
        let epsilon_budget = c.positive(
            &format!("{path}.epsilon_budget"),
            u.epsilon_budget,
            f64::NAN,
        );
        let max_epsilon_per_query = c.positive(
            &format!("{path}.max_epsilon_per_query"),
            u.max_epsilon_per_query,
            privacy.max_epsilon_per_query,
        );
        let budget = Budget {
            epsilon: epsilon_budget,
            delta: c.delta_budget(
                &format!("{path}.delta_budget"),
                u.delta_budget,
                defaults.delta,
            ),
            refresh: match u.refresh.as_deref() {
                Some("never") => None,
                Some(r) => c.duration(&format!("{path}.refresh"), Some(r)),
                None => defaults.refresh,
            },
        };
        users.push(User {
            name: u.name,
            secret,
            budget,
            max_epsilon_per_query,
        });
    }
    users
}

fn looks_like_verifier(v: &str) -> bool {
    let rest = &v["SCRAM-SHA-256$".len()..];
    let Some((iter_salt, keys)) = rest.split_once('$') else {
        return false;
    };
    let Some((iters, salt)) = iter_salt.split_once(':') else {
        return false;
    };
    iters.parse::<u32>().is_ok() && !salt.is_empty() && keys.split(':').count() == 2
}

fn validate_tables(c: &mut Collector, raw: Vec<RawTable>) -> Vec<Table> {
    let mut seen = HashSet::new();
    let mut tables = Vec::new();
    for (i, t) in raw.into_iter().enumerate() {
        let path = format!("tables[{i}]");
        let (schema, name) = match t.name.split_once('.') {
            Some((s, n)) => (s.to_string(), n.to_string()),
            None => ("public".to_string(), t.name.clone()),
        };
        if name.is_empty() || schema.is_empty() || name.contains('.') {
            c.err(
                format!("{path}.name"),
                format!("{:?} is not a table name", t.name),
                "write schema.table or table",
            );
        }
        if !seen.insert((schema.to_lowercase(), name.to_lowercase())) {
            c.err(
                format!("{path}.name"),
                format!("table {:?} is declared twice", t.name),
                "keep one declaration per table",
            );
        }
        let privacy = if t.public {
            if t.privacy_unit.is_some() || t.max_rows_per_unit.is_some() {
                c.err(
                    format!("{path}.public"),
                    "a public table has no privacy unit",
                    "remove privacy_unit and max_rows_per_unit, or public = true",
                );
            }
            TablePrivacy::Public
        } else {
            let k = t.max_rows_per_unit.unwrap_or(1);
            if k == 0 {
                c.err(
                    format!("{path}.max_rows_per_unit"),
                    "0 rows per unit would drop all data",
                    "write 1 or more",
                );
            } else if k > crate::MAX_ROWS_PER_UNIT {
                c.err(
                    format!("{path}.max_rows_per_unit"),
                    format!(
                        "{k} rows per unit is above dpgate's limit of {}: the noise would drown every answer",
                        crate::MAX_ROWS_PER_UNIT
                    ),
                    format!("write at most {}", crate::MAX_ROWS_PER_UNIT),
                );
            }
            if t.privacy_unit.as_deref() == Some("") {
                c.err(
                    format!("{path}.privacy_unit"),
                    "the privacy unit column is empty",
                    "name the column that identifies a person, or omit it for row-level privacy",
                );
            }
            TablePrivacy::Private {
                privacy_unit: t.privacy_unit.clone(),
                max_rows_per_unit: k.max(1),
            }
        };
        let mut columns = Vec::new();
        for (col_name, col) in t.columns {
            let cpath = format!("{path}.columns.{col_name}");
            let Some(ty) = ColumnType::parse(&col.ty) else {
                c.err(
                    format!("{cpath}.type"),
                    format!("unknown type {:?}", col.ty),
                    "write int, float, text, bool, date or timestamp",
                );
                continue;
            };
            let bounds = match (col.lower, col.upper) {
                (Some(l), Some(u)) => {
                    if !ty.is_numeric() {
                        c.err(
                            &cpath,
                            format!("bounds are given for a {} column", col.ty),
                            "remove lower/upper; bounds apply to int and float columns",
                        );
                    } else if !(l.is_finite() && u.is_finite()) {
                        c.err(
                            &cpath,
                            "bounds must be finite numbers",
                            "write finite lower and upper values",
                        );
                    } else if l > u {
                        c.err(
                            &cpath,
                            format!("lower {l} is above upper {u}"),
                            "swap them or correct one of them",
                        );
                    }
                    Some((l, u))
                }
                (None, None) => None,
                _ => {
                    c.err(
                        &cpath,
                        "only one of lower and upper is given",
                        "give both lower and upper",
                    );
                    None
                }
            };
            if let Some(values) = &col.values {
                if values.is_empty() {
                    c.err(
                        format!("{cpath}.values"),
                        "the domain is empty",
                        "list the possible values, or remove values",
                    );
                }
                // Each group is released once per query: two spellings of
                // one value would release the same group twice.
                let mut seen: Vec<(String, usize)> = Vec::new();
                for (i, v) in values.iter().enumerate() {
                    let Some(canon) = ty.canonical_value(v) else {
                        c.err(
                            format!("{cpath}.values[{i}]"),
                            format!("{v:?} is not a {} value", col.ty),
                            format!("write values of the column's type ({})", col.ty),
                        );
                        continue;
                    };
                    match seen.iter().find(|(s, _)| *s == canon) {
                        Some((_, first)) => c.err(
                            format!("{cpath}.values[{i}]"),
                            format!(
                                "{v:?} is the same value as values[{first}] ({:?})",
                                values[*first]
                            ),
                            "list each value once",
                        ),
                        None => seen.push((canon, i)),
                    }
                }
            }
            let is_unit = t
                .privacy_unit
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(&col_name));
            if is_unit && (bounds.is_some() || col.values.is_some()) {
                // Bounds or a value list on the column that names people
                // would be public facts about who is in the data.
                c.err(
                    &cpath,
                    format!("\"{col_name}\" is the privacy unit; it may declare a type, but not bounds or values"),
                    "keep only `type` on the privacy unit column (or remove it from columns)",
                );
            }
            columns.push(Column {
                name: col_name,
                ty,
                bounds,
                values: col.values,
            });
        }
        if t.csv.as_deref().is_some_and(|p| p.trim().is_empty()) {
            c.err(
                format!("{path}.csv"),
                "the CSV file name is empty",
                "write the path of a CSV file with a header row, or remove csv",
            );
        }
        tables.push(Table {
            schema,
            name,
            privacy,
            columns,
            csv: t.csv.map(PathBuf::from),
        });
    }
    tables
}
