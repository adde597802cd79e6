//! The shapes of proxy.toml: `Raw*` as written (serde), and the validated
//! model the rest of dpgate uses.

use indexmap::IndexMap;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    pub backend: RawBackend,
    #[serde(default)]
    pub catalog: RawCatalog,
    #[serde(default)]
    pub ledger: RawLedger,
    #[serde(default)]
    pub privacy: RawPrivacy,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub audit: RawAudit,
    pub http: Option<RawHttp>,
    #[serde(default)]
    pub users: Vec<RawUser>,
    #[serde(default)]
    pub tables: Vec<RawTable>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub retention: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: Option<String>,
    pub max_connections: Option<usize>,
    pub idle_timeout_s: Option<u64>,
    pub shutdown_grace_s: Option<u64>,
    pub tls_cert: Option<String>,
    pub tls_key: Option<String>,
    pub require_tls: Option<bool>,
    pub max_prepared_per_connection: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub listen: Option<String>,
    pub max_connections: Option<usize>,
    pub max_body_kib: Option<usize>,
    pub header_timeout_s: Option<u64>,
    pub idle_timeout_s: Option<u64>,
    pub metrics_token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCatalog {
    pub url: Option<String>,
    pub enabled: Option<bool>,
    pub bin_dir: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackend {
    pub url: Option<String>,
    pub sqlite: Option<String>,
    pub spark: Option<String>,
    pub statement_timeout_ms: Option<u64>,
    pub pool_size: Option<usize>,
    pub allow_privileged_role: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLedger {
    pub path: Option<String>,
    pub url: Option<String>,
    pub min_free_mib: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCache {
    pub enabled: Option<bool>,
    pub max_age: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPrivacy {
    pub default_epsilon: Option<f64>,
    pub min_epsilon_per_query: Option<f64>,
    pub max_epsilon_per_query: Option<f64>,
    pub max_groups: Option<usize>,
    pub delta: Option<f64>,
    pub confidence: Option<f64>,
    pub delta_budget: Option<f64>,
    pub refresh: Option<String>,
    pub dataset_epsilon_budget: Option<f64>,
    pub dataset_delta_budget: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUser {
    pub name: String,
    pub password: Option<String>,
    pub token: Option<String>,
    pub epsilon_budget: Option<f64>,
    pub delta_budget: Option<f64>,
    pub max_epsilon_per_query: Option<f64>,
    pub refresh: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTable {
    pub name: String,
    pub privacy_unit: Option<String>,
    pub max_rows_per_unit: Option<u32>,
    #[serde(default)]
    pub privacy_unit_unique: bool,
    #[serde(default)]
    pub public: bool,
    pub csv: Option<String>,
    pub backend_name: Option<String>,
    #[serde(default)]
    pub columns: IndexMap<String, RawColumn>,
    pub synthetic: Option<RawSynthetic>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSynthetic {
    pub epsilon: f64,
    pub rows: Option<usize>,
    pub bins: Option<usize>,
    pub max_rows: Option<usize>,
    pub refresh: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawColumn {
    #[serde(rename = "type")]
    pub ty: String,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub values: Option<Vec<String>>,
    #[serde(default)]
    pub not_null: bool,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where dpgate listens.
    pub listen: std::net::SocketAddr,
    /// Connection handling: limits, timeouts, TLS.
    pub server: Server,
    /// The database dpgate queries.
    pub backend: Backend,
    /// The shadow catalog: a PostgreSQL cluster dpgate runs itself.
    pub catalog: Catalog,
    /// Where budgets, charges, the audit log and cached releases live.
    pub ledger: LedgerStore,
    /// Privacy defaults.
    pub privacy: Privacy,
    /// Free repeats of earlier releases.
    pub cache: Cache,
    /// How long audit entries are kept (`None`: for good). Charges, the
    /// budget records, are never pruned.
    pub audit_retention: Option<std::time::Duration>,
    /// Below this much free space (MiB) on a SQLite ledger's disk, dpgate
    /// warns at start and hourly: a full disk fails every charge.
    pub ledger_min_free_mib: u64,
    /// The HTTP/JSON front end, if `[http]` is set.
    pub http: Option<Http>,
    /// Analysts allowed to connect.
    pub users: Vec<User>,
    /// Declared tables: the only ones dpgate knows.
    pub tables: Vec<Table>,
}

/// How dpgate treats client connections.
#[derive(Clone, Debug, PartialEq)]
pub struct Server {
    /// Connections served at once; more are refused with SQLSTATE 53300.
    pub max_connections: usize,
    /// A connection idle this long between statements is closed (None: never).
    pub idle_timeout: Option<std::time::Duration>,
    /// On SIGTERM, how long running statements may take to finish.
    pub shutdown_grace: std::time::Duration,
    /// PEM certificate chain and private key for TLS, if TLS is on.
    pub tls: Option<Tls>,
    /// Logins without TLS are refused (28000).
    pub require_tls: bool,
    /// Named prepared statements, and named portals, one connection may
    /// hold at once (53400 beyond).
    pub max_prepared_per_connection: usize,
}

/// The HTTP/JSON front end (`[http]`). It serves HTTPS with the wire
/// listener's certificate whenever `[server]` has one.
#[derive(Clone, Debug, PartialEq)]
pub struct Http {
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Largest request body (bytes); larger ones get 413.
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers.
    pub header_timeout: std::time::Duration,
    /// A keep-alive connection idle this long is closed.
    pub idle_timeout: std::time::Duration,
    /// The bearer token `GET /metrics` needs (it counts every analyst's
    /// queries, so an analyst's login is not enough); no token, no metrics.
    pub metrics_token: Option<Token>,
}

/// Paths of the TLS certificate chain and key (PEM).
#[derive(Clone, Debug, PartialEq)]
pub struct Tls {
    /// Certificate chain, leaf first.
    pub cert: std::path::PathBuf,
    /// PKCS#8, PKCS#1 or SEC1 private key.
    pub key: std::path::PathBuf,
}

/// Where and how the backend database is reached.
#[derive(Clone, Debug)]
pub struct Backend {
    /// The database that holds the data.
    pub store: BackendStore,
    /// Backend statement timeout in milliseconds.
    pub statement_timeout_ms: u64,
    /// Connections kept open to the backend.
    pub pool_size: usize,
    /// Serve even when the backend role is a superuser, may touch the
    /// server's files or may write a declared table (logged loudly).
    pub allow_privileged_role: bool,
}

/// The database behind dpgate.
#[derive(Clone, Debug, PartialEq)]
pub enum BackendStore {
    /// A `postgres://` URL.
    Postgres(String),
    /// An embedded SQLite file, created if missing; tables with a `csv`
    /// source are loaded into it at start.
    Sqlite(std::path::PathBuf),
    /// An Apache Spark Connect endpoint (`sc://host:port`); dpgate's
    /// schema `public` is Spark's database `default`.
    Spark(String),
}

impl std::fmt::Display for BackendStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendStore::Postgres(url) => f.write_str(&crate::redact_password(url)),
            BackendStore::Sqlite(path) => write!(f, "SQLite file {}", path.display()),
            BackendStore::Spark(url) => write!(f, "Spark Connect {}", crate::redact_password(url)),
        }
    }
}

/// Where the ledger is kept.
#[derive(Clone, Debug, PartialEq)]
pub enum LedgerStore {
    /// An embedded SQLite file (one dpgate process, or several on one host).
    Sqlite(std::path::PathBuf),
    /// A `postgres://` URL: replicas behind a load balancer share one budget.
    Postgres(String),
}

impl std::fmt::Display for LedgerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedgerStore::Sqlite(p) => write!(f, "{}", p.display()),
            LedgerStore::Postgres(url) => write!(f, "{}", redact_password(url)),
        }
    }
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{path}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

/// A cap on privacy loss: ε and δ, optionally per sliding window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// Total ε.
    pub epsilon: f64,
    /// Total δ.
    pub delta: f64,
    /// If set, the cap holds for every window of this length, and charges
    /// older than the window no longer count.
    pub refresh: Option<std::time::Duration>,
}

/// Repeats of earlier releases, answered at no cost.
#[derive(Clone, Debug, PartialEq)]
pub struct Cache {
    /// Whether repeats are answered from the cache.
    pub enabled: bool,
    /// Releases older than this are not repeated (None: kept for ever).
    pub max_age: Option<std::time::Duration>,
}

/// The shadow catalog that answers clients' catalog queries: a private
/// PostgreSQL cluster that dpgate initialises and runs itself, holding
/// only empty tables that mirror the declared ones.
#[derive(Clone, Debug, PartialEq)]
pub struct Catalog {
    /// Whether to run it (catalog queries are refused without it).
    pub enabled: bool,
    /// Directory of PostgreSQL's server binaries (`initdb`, `postgres`);
    /// found by `pg_config --bindir` or under /usr/lib/postgresql when unset.
    pub bin_dir: Option<std::path::PathBuf>,
}

/// Privacy defaults that apply to every user.
#[derive(Clone, Debug)]
pub struct Privacy {
    /// ε spent by one query unless the session sets `dp.epsilon`.
    pub default_epsilon: f64,
    /// Smallest ε one query may spend: every answer costs at least this,
    /// so no query is free whatever the session asks for.
    pub min_epsilon_per_query: f64,
    /// Largest ε one query may spend.
    pub max_epsilon_per_query: f64,
    /// δ for mechanisms that need one.
    pub delta: f64,
    /// Most groups found by partition selection that one answer releases
    /// (the first in key order); bounds what a query holds in memory.
    pub max_groups: usize,
    /// Confidence level of reported intervals (0.95 by default).
    pub confidence: f64,
    /// A cap for all analysts together (against collusion), if set.
    pub dataset_budget: Option<Budget>,
}

/// How a user proves who they are.
#[derive(Clone, Debug, PartialEq)]
pub enum Secret {
    /// A cleartext password (from an environment variable).
    Password(String),
    /// A PostgreSQL SCRAM-SHA-256 verifier:
    /// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    ScramVerifier(String),
}

/// An analyst.
#[derive(Clone, Debug)]
pub struct User {
    /// Login name.
    pub name: String,
    /// Credential.
    pub secret: Secret,
    /// What this user may spend (ε, δ, refresh window).
    pub budget: Budget,
    /// Largest ε one query of this user may spend.
    pub max_epsilon_per_query: f64,
    /// A bearer token for the HTTP front end, if declared.
    pub token: Option<Token>,
}

/// A user's HTTP bearer token, kept only as its SHA-256 digest (from
/// `env:VARIABLE`, hashed at load, or `sha256:<hex>` as declared).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token(pub [u8; 32]);

impl Token {
    /// The token that `text` is.
    pub fn of(text: &str) -> Token {
        use sha2::Digest;
        Token(sha2::Sha256::digest(text.as_bytes()).into())
    }
}

impl std::fmt::Debug for Token {
    /// Never prints the digest.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// A declared table.
#[derive(Clone, Debug)]
pub struct Table {
    /// Schema (default `public`).
    pub schema: String,
    /// Table name.
    pub name: String,
    /// How rows map to people.
    pub privacy: TablePrivacy,
    /// Declared columns, in file order.
    pub columns: Vec<Column>,
    /// A CSV file (with a header row) loaded into the SQLite backend.
    pub csv: Option<std::path::PathBuf>,
    /// The table's name in a Spark backend, as its dotted parts
    /// (`catalog.database.table`, `database.table` or `table`); `None`
    /// reads `schema.name` (schema `public` as Spark's `default`).
    pub backend_name: Option<Vec<String>>,
    /// Synthetic sample rows for row-level SELECTs, if the data owner
    /// declared `[tables.synthetic]`.
    pub synthetic: Option<Synthetic>,
    /// The backend's type of the privacy unit column, as PostgreSQL names
    /// it (catalog metadata, never data): read at start and on every
    /// reload (`dpgate_backend::read_schema`); `None` before, and where
    /// the backend cannot say. Joins on the unit need the same kind of
    /// type on both sides.
    pub unit_type: Option<String>,
    /// How the backend's `=` compares the privacy unit column, where that
    /// is not plain equality of `unit_type` (a collation), or
    /// [`crate::UNKNOWN_EQUALITY`] where the backend cannot say: read with
    /// `unit_type`. Joins on the unit need the same on both sides, and
    /// are refused where either is unknown.
    pub unit_equality: Option<String>,
    /// Whether the backend relation holds stored rows that every read
    /// within one statement returns alike (not a view, a foreign table,
    /// or a table under row-level security policies): read with
    /// `unit_type`; `false` before and where the backend cannot say.
    /// Row sampling may then read it twice to rank only the units with
    /// more rows than their bound.
    pub stored: bool,
}

/// `[tables.synthetic]`: a differentially private model of the table
/// (MST), fitted once at `epsilon` charged to the dataset budget, whose
/// sampled rows answer row-level SELECTs for free.
#[derive(Clone, Debug, PartialEq)]
pub struct Synthetic {
    /// What one fit spends (with `privacy.delta`), on the dataset budget.
    pub epsilon: f64,
    /// Synthetic rows sampled from a fit (the table analysts see).
    pub rows: usize,
    /// Bins per numeric column (equal bins of the declared bounds).
    pub bins: usize,
    /// Rows an answer without LIMIT returns.
    pub max_rows: usize,
    /// Refit when a fit is older than this (`None`: keep it until the
    /// table's declaration changes).
    pub refresh: Option<std::time::Duration>,
}

impl Synthetic {
    /// Default number of sampled rows.
    pub const DEFAULT_ROWS: usize = 10_000;
    /// Default bins per numeric column.
    pub const DEFAULT_BINS: usize = 16;
    /// Default rows of an answer without LIMIT (DBeaver's page).
    pub const DEFAULT_MAX_ROWS: usize = 200;
    /// Most sampled rows a fit may hold.
    pub const MAX_ROWS: usize = 1_000_000;
}

impl Table {
    /// The declared column `name` (case-insensitive).
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    /// `schema.name`, quoted for SQL.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

/// Quotes an identifier for PostgreSQL and SQLite.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// How a table's rows relate to the people they describe.
#[derive(Clone, Debug, PartialEq)]
pub enum TablePrivacy {
    /// A lookup table with no private data.
    Public,
    /// Each privacy unit (person) contributes at most `max_rows_per_unit` rows.
    Private {
        /// Column identifying the person; `None` means each row is a unit.
        privacy_unit: Option<String>,
        /// Rows' worth one unit may contribute to an answer.
        max_rows_per_unit: u32,
        /// The unit column is unique and never NULL, so queries read the
        /// table without a per-unit bounding step. Set from
        /// `privacy_unit_unique = true`, and kept only where the backend's
        /// schema proves it (`dpgate_backend::confirm_unique_units`, at
        /// start and on every reload): a declaration alone enforces
        /// nothing, unlike a bound, which the backend query enforces.
        unique_unit: bool,
    },
}

/// A declared column.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// Column name as in the database.
    pub name: String,
    /// Its type.
    pub ty: ColumnType,
    /// Declared bounds for numeric columns (`lower <= upper`).
    pub bounds: Option<(f64, f64)>,
    /// A declared public domain of values.
    pub values: Option<Vec<String>>,
    /// Declared never NULL (`not_null = true`): the count of its values is
    /// the count of rows, so AVG and VARIANCE share COUNT(*)'s measurement.
    /// A wrong declaration costs accuracy (a mean pulled toward the middle
    /// of the range), never privacy.
    pub not_null: bool,
}

/// A boolean as PostgreSQL reads one from text (`t`, `true`, `y`, `yes`,
/// `on`, `1` and their opposites, any case, spaces trimmed).
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "y" | "yes" | "on" | "1" => Some(true),
        "f" | "false" | "n" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Column types dpgate understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnType {
    /// Integers (smallint, integer, bigint).
    Int,
    /// Floating point and numeric.
    Float,
    /// Text.
    Text,
    /// Booleans.
    Bool,
    /// Dates.
    Date,
    /// Timestamps.
    Timestamp,
}

impl ColumnType {
    /// One spelling per value of this type (`01` and `1` are one int,
    /// `1.0` and `1` one float, `t` and `true` one bool), or `None` when
    /// `text` is not a value of the type. Text, dates and timestamps are
    /// compared as written.
    pub fn canonical_value(self, text: &str) -> Option<String> {
        let t = text.trim();
        match self {
            ColumnType::Int => t.parse::<i64>().ok().map(|i| i.to_string()),
            ColumnType::Float => t
                .parse::<f64>()
                .ok()
                .map(|f| if f == 0.0 { 0.0 } else { f })
                .map(|f| format!("{f:?}")),
            ColumnType::Bool => match t.to_ascii_lowercase().as_str() {
                "t" | "true" | "1" | "yes" | "on" => Some("true".into()),
                "f" | "false" | "0" | "no" | "off" => Some("false".into()),
                _ => None,
            },
            ColumnType::Text | ColumnType::Date | ColumnType::Timestamp => Some(text.to_string()),
        }
    }

    /// Parses a type name as written in proxy.toml or in a CAST: SQL's
    /// names and their PostgreSQL aliases, with any type modifier
    /// (`varchar(20)`, `numeric(10, 2)`) ignored.
    pub fn parse(s: &str) -> Option<ColumnType> {
        let name = s.to_ascii_lowercase();
        let base = name.split('(').next().unwrap_or("").trim();
        Some(match base {
            "int" | "integer" | "bigint" | "smallint" | "int2" | "int4" | "int8" => ColumnType::Int,
            "float" | "float4" | "float8" | "real" | "double" | "double precision" | "numeric"
            | "decimal" => ColumnType::Float,
            "text" | "string" | "varchar" | "character varying" | "char" | "character" => {
                ColumnType::Text
            }
            "bool" | "boolean" => ColumnType::Bool,
            "date" => ColumnType::Date,
            "timestamp"
            | "timestamptz"
            | "timestamp with time zone"
            | "timestamp without time zone" => ColumnType::Timestamp,
            _ => return None,
        })
    }

    /// Whether values of this type can be summed.
    pub fn is_numeric(self) -> bool {
        matches!(self, ColumnType::Int | ColumnType::Float)
    }

    /// The PostgreSQL type name, for catalogs.
    pub fn pg_name(self) -> &'static str {
        match self {
            ColumnType::Int => "bigint",
            ColumnType::Float => "double precision",
            ColumnType::Text => "text",
            ColumnType::Bool => "boolean",
            ColumnType::Date => "date",
            ColumnType::Timestamp => "timestamp",
        }
    }
}
