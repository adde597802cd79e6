//! Checks a parsed proxy.toml and turns it into the validated model.
//! All problems are collected, not just the first, each with its path.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

use crate::model::*;

mod tables;
mod users;

use tables::*;
use users::*;

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
    /// The same errors with every one of `secrets` replaced by `***`.
    pub fn scrubbed(self, secrets: &[String]) -> ConfigErrors {
        let scrub = |text: String| {
            secrets
                .iter()
                .fold(text, |t, s| t.replace(s.as_str(), "***"))
        };
        ConfigErrors(
            self.0
                .into_iter()
                .map(|e| ConfigError {
                    path: scrub(e.path),
                    message: scrub(e.message),
                    fix: scrub(e.fix),
                })
                .collect(),
        )
    }

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

    /// An ε setting: positive, and at most [`crate::MAX_EPSILON`].
    fn epsilon(&mut self, path: &str, value: Option<f64>, default: f64) -> f64 {
        let v = value.unwrap_or(default);
        if !(v.is_finite() && v > 0.0) {
            self.err(
                path,
                format!("{v} is not a positive number"),
                "write a number above 0, e.g. 0.1",
            );
        } else if v > crate::MAX_EPSILON {
            self.err(
                path,
                format!(
                    "{v} is above dpgate's largest ε, {:e}: the ledger counts ε in nano-ε units of 64 bits",
                    crate::MAX_EPSILON
                ),
                format!(
                    "write at most {:e} (far beyond any meaningful guarantee already)",
                    crate::MAX_EPSILON
                ),
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

    let store = match (raw.backend.url, raw.backend.sqlite, raw.backend.spark) {
        (url, sqlite, spark)
            if [url.is_some(), sqlite.is_some(), spark.is_some()]
                .iter()
                .filter(|set| **set)
                .count()
                > 1 =>
        {
            c.err(
                "backend",
                "more than one of url, sqlite and spark is set",
                "keep url for PostgreSQL, sqlite for an embedded SQLite file, or spark for a Spark Connect server",
            );
            BackendStore::Sqlite(PathBuf::new())
        }
        (None, Some(path), None) => {
            if path.trim().is_empty() {
                c.err(
                    "backend.sqlite",
                    "the SQLite file name is empty",
                    "write a file name, e.g. sqlite = \"data.db\"",
                );
            }
            BackendStore::Sqlite(path.into())
        }
        (None, None, Some(url)) => {
            if !url.starts_with("sc://") {
                c.err(
                    "backend.spark",
                    format!("{:?} is not a Spark Connect URL", redact_password(&url)),
                    "write spark = \"sc://host:15002\"",
                );
            }
            BackendStore::Spark(url)
        }
        (url, _, _) => {
            let url = url.unwrap_or_default();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                c.err(
                    "backend.url",
                    format!("{:?} is not a PostgreSQL URL", redact_password(&url)),
                    "write url = \"postgres://user@host:port/database\", sqlite = \"data.db\" for an embedded SQLite file, or spark = \"sc://host:15002\" for Spark",
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

    let default_epsilon = c.epsilon("privacy.default_epsilon", raw.privacy.default_epsilon, 0.1);
    let max_epsilon_per_query = c.epsilon(
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
    let min_epsilon_per_query = c.epsilon(
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
    // Below 1e-100, 1/δ overflows a double and no threshold can be set.
    if !(1e-100..1.0).contains(&delta) {
        c.err(
            "privacy.delta",
            format!("{delta} is not between 1e-100 and 1"),
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
            epsilon: c.epsilon("privacy.dataset_epsilon_budget", epsilon, f64::NAN),
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
    let ledger_min_free_mib = raw.ledger.min_free_mib.unwrap_or(1024);
    let ledger = validate_ledger(&mut c, raw.ledger);
    let audit_retention = c.duration("audit.retention", raw.audit.retention.as_deref());

    let http = raw.http.map(|h| validate_http(&mut c, h, &server, env));
    let users = validate_users(&mut c, raw.users, env, &privacy, &defaults);
    if let Some(metrics) = http.as_ref().and_then(|h| h.metrics_token) {
        if let Some(u) = users.iter().find(|u| u.token == Some(metrics)) {
            c.err(
                "http.metrics_token",
                format!("it is also the token of {}", u.name),
                "give the metrics their own token",
            );
        }
    }
    let tables = validate_tables(&mut c, raw.tables);
    check_sqlite_tables(&mut c, &backend.store, &tables);
    if matches!(backend.store, BackendStore::Spark(_)) {
        check_spark_tables(&mut c, &tables);
    } else if let Some(i) = tables.iter().position(|t| t.backend_name.is_some()) {
        c.err(
            format!("tables[{i}].backend_name"),
            "backend_name maps a table to its Spark name, but [backend] is not Spark",
            "remove backend_name; name the table as schema.table",
        );
    }

    if c.0.is_empty() {
        Ok(Config {
            listen,
            server,
            backend,
            catalog,
            ledger,
            privacy,
            cache,
            audit_retention,
            ledger_min_free_mib,
            http,
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
                "CSV files are loaded into the embedded SQLite backend, but [backend] is not SQLite",
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

/// What the Spark backend cannot read: a table whose rows are each one
/// person (Spark tables have no stable row identity to stand for the
/// unit when a join repeats a row), and names with `$`, which Spark's
/// variable substitution may rewrite even inside backticks.
fn check_spark_tables(c: &mut Collector, tables: &[Table]) {
    for (i, t) in tables.iter().enumerate() {
        if let crate::TablePrivacy::Private {
            privacy_unit: None, ..
        } = t.privacy
        {
            c.err(
                format!("tables[{i}].privacy_unit"),
                format!(
                    "{}: Spark tables have no row identity to stand for a row-level privacy unit",
                    t.name
                ),
                "declare the column that identifies a person, e.g. privacy_unit = \"patient_id\"",
            );
        }
        let unit = match &t.privacy {
            crate::TablePrivacy::Private {
                privacy_unit: Some(u),
                ..
            } => Some(u),
            _ => None,
        };
        let names = [&t.schema, &t.name]
            .into_iter()
            .chain(t.backend_name.iter().flatten())
            .chain(unit)
            .chain(t.columns.iter().map(|col| &col.name));
        if let Some(name) = names.into_iter().find(|n| n.contains('$')) {
            c.err(
                format!("tables[{i}]"),
                format!("{name:?}: Spark rewrites names containing $ (variable substitution)"),
                "rename the table or column in Spark, or create a view without $ in its names",
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

fn validate_http(
    c: &mut Collector,
    raw: RawHttp,
    server: &Server,
    env: &dyn Fn(&str) -> Option<String>,
) -> Http {
    let text = raw.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
    let listen: std::net::SocketAddr = text.parse().unwrap_or_else(|_| {
        c.err(
            "http.listen",
            format!("{text:?} is not an address with a port"),
            "write host:port, e.g. \"127.0.0.1:8080\"",
        );
        "127.0.0.1:8080".parse().unwrap()
    });
    if server.tls.is_none() && !listen.ip().is_loopback() {
        c.err(
            "http.listen",
            format!("{listen} is reachable from other machines, and without TLS HTTP Basic would send passwords in the clear with every request"),
            "set server.tls_cert and server.tls_key (the HTTP side then serves HTTPS), or listen on 127.0.0.1 behind a TLS-terminating proxy",
        );
    }
    let max_connections = raw.max_connections.unwrap_or(server.max_connections);
    if max_connections == 0 {
        c.err(
            "http.max_connections",
            "0 connections means nobody can connect",
            "write 1 or more (default: server.max_connections)",
        );
    }
    let max_body_kib = raw.max_body_kib.unwrap_or(1024);
    if !(1..=64 * 1024).contains(&max_body_kib) {
        c.err(
            "http.max_body_kib",
            format!("{max_body_kib} is outside 1 to 65536"),
            "write the largest request body in KiB, e.g. 1024",
        );
    }
    let seconds = |c: &mut Collector, path: &str, v: Option<u64>, default: u64| {
        let v = v.unwrap_or(default);
        if !(1..=86_400).contains(&v) {
            c.err(
                path,
                format!("{v} is outside 1 to 86400 seconds"),
                format!("write a number of seconds, e.g. {default}"),
            );
        }
        std::time::Duration::from_secs(v.clamp(1, 86_400))
    };
    Http {
        listen,
        max_connections,
        max_body_bytes: max_body_kib.saturating_mul(1024),
        header_timeout: seconds(c, "http.header_timeout_s", raw.header_timeout_s, 10),
        idle_timeout: seconds(c, "http.idle_timeout_s", raw.idle_timeout_s, 60),
        metrics_token: raw
            .metrics_token
            .as_deref()
            .and_then(|t| validate_token(c, "http.metrics_token", t, env)),
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
    let require_tls = raw.require_tls.unwrap_or(false);
    if require_tls && tls.is_none() {
        c.err(
            "server.require_tls",
            "TLS is required but not configured",
            "set server.tls_cert and server.tls_key (PEM files), or remove require_tls",
        );
    }
    let max_prepared_per_connection = raw.max_prepared_per_connection.unwrap_or(1_000);
    if !(1..=1_000_000).contains(&max_prepared_per_connection) {
        c.err(
            "server.max_prepared_per_connection",
            format!("{max_prepared_per_connection} is outside 1 to 1 000 000"),
            "write how many named prepared statements one connection may hold, e.g. 1000",
        );
    }
    Server {
        require_tls,
        max_prepared_per_connection,
        max_connections,
        idle_timeout: raw
            .idle_timeout_s
            .filter(|s| *s > 0)
            .map(std::time::Duration::from_secs),
        shutdown_grace: std::time::Duration::from_secs(raw.shutdown_grace_s.unwrap_or(30)),
        tls,
    }
}
