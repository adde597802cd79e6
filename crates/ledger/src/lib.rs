//! The privacy budget ledger: every analyst's spending, the dataset's
//! spending across analysts, the audit log of every statement, and the
//! cache of earlier releases — in an embedded SQLite file or in a
//! PostgreSQL database that several dpgate processes share.
//!
//! [`Ledger::charge`] checks a query's cost against the user's (and the
//! dataset's) budget and records it in one transaction that holds the
//! accounts locked (SQLite `BEGIN IMMEDIATE`, PostgreSQL `SELECT … FOR
//! UPDATE`) and is durable when it returns; only then may the query touch
//! data. However many connections or processes race, the same budget can
//! never be spent twice.

/// Calls `$method` on whichever store is configured: SQLite off the async
/// threads, PostgreSQL directly.
macro_rules! dispatch {
    ($store:expr, $method:ident ( $($arg:expr),* )) => {
        match $store {
            Store::Sqlite(s) => {
                let s = s.clone();
                blocking(move || s.$method($($arg),*)).await
            }
            Store::Postgres(p) => p.$method($($arg),*).await,
        }
    };
}

#[macro_use]
mod sql;
mod audit;
mod group;
mod postgres;
mod sqlite;
mod standing;
mod units;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use audit::{AuditEntry, AuditFilter, AuditRecord, Outcome};
use dpgate_config::{Budget, LedgerStore};
pub use units::Amount;

/// The account name under which the whole dataset's spending is kept
/// (user names are never empty).
pub const DATASET: &str = "";

/// Ledger failures.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The charge would exceed a budget; nothing was recorded.
    #[error("{0}")]
    Exhausted(Exhausted),
    /// The ledger store could not be read or written.
    #[error("ledger storage error: {0}")]
    Storage(String),
}

impl From<rusqlite::Error> for LedgerError {
    fn from(e: rusqlite::Error) -> Self {
        LedgerError::Storage(e.to_string())
    }
}

impl From<tokio_postgres::Error> for LedgerError {
    fn from(e: tokio_postgres::Error) -> Self {
        LedgerError::Storage(match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        })
    }
}

/// Which budget a refused charge would have exceeded.
#[derive(Debug, Clone, PartialEq)]
pub struct Exhausted {
    /// The dataset-wide budget (all analysts together), not the user's.
    pub dataset: bool,
    /// ε or δ.
    pub resource: Resource,
    /// Already spent (in the refresh window, if any).
    pub spent: f64,
    /// The limit, grants included.
    pub budget: f64,
    /// What the refused query needed.
    pub cost: f64,
    /// The budget's refresh window, if it has one.
    pub refresh: Option<Duration>,
}

impl std::fmt::Display for Exhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let whose = if self.dataset {
            "the dataset's budget"
        } else {
            "the budget"
        };
        write!(
            f,
            "{whose} is exhausted: {} of {} {} spent, the query needs {}",
            self.spent,
            self.budget,
            self.resource.symbol(),
            self.cost
        )
    }
}

/// A kind of privacy loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// ε.
    Epsilon,
    /// δ.
    Delta,
}

impl Resource {
    /// `ε` or `δ`.
    pub fn symbol(self) -> &'static str {
        match self {
            Resource::Epsilon => "ε",
            Resource::Delta => "δ",
        }
    }

    /// Ledger units of this resource as a number.
    pub(crate) fn value(self, units: i64) -> f64 {
        match self {
            Resource::Epsilon => units as f64 / units::EPSILON_SCALE,
            Resource::Delta => units as f64 / units::DELTA_SCALE,
        }
    }
}

/// A query's cost, the budgets it is checked against, and its audit entry.
#[derive(Debug, Clone)]
pub struct ChargeRequest {
    /// The user's budget (from proxy.toml; grants are added from the ledger).
    pub budget: Budget,
    /// The dataset-wide budget, if the data owner set one.
    pub dataset: Option<Budget>,
    /// Who, when, what and how much (`entry.cost`); recorded as
    /// [`Outcome::Charged`] until [`Ledger::finish`] records the outcome.
    pub entry: AuditEntry,
}

/// A recorded charge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Charge {
    /// The audit entry to finish once the answer is known.
    pub audit_id: i64,
    /// The user's limit: configured budget plus grants.
    pub limit: Amount,
    /// What the user has left after this charge (refresh window included).
    pub remaining: Amount,
}

/// How a charged (or cached) statement ended.
#[derive(Debug, Clone)]
pub struct Finish {
    /// The entry [`Ledger::charge`] created.
    pub audit_id: i64,
    /// Answered or failed.
    pub outcome: Outcome,
    /// Rows released.
    pub rows: Option<i64>,
    /// SQLSTATE and reason, for failures.
    pub error: Option<(String, String)>,
    /// The release to repeat for free, if caching is on.
    pub cache: Option<Release>,
}

/// A release kept for free repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    /// The user it was released to.
    pub user: String,
    /// The normalized query's fingerprint.
    pub key: String,
    /// When it was released (ms since the epoch).
    pub at_ms: i64,
    /// The released answer, serialized by the caller.
    pub body: String,
}

/// An account as the admin CLI shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    /// The limit: configured budget plus grants.
    pub limit: Amount,
    /// Spent since the last reset, within the refresh window if any.
    pub spent: Amount,
    /// Granted by `dpgate budget grant`.
    pub granted: Amount,
    /// Charged queries since the account was opened.
    pub queries: i64,
    /// When the account was last reset (ms since the epoch; 0: never).
    pub reset_at_ms: i64,
}

impl Standing {
    /// What is left.
    pub fn remaining(&self) -> Amount {
        Amount {
            epsilon: (self.limit.epsilon - self.spent.epsilon).max(0.0),
            delta: (self.limit.delta - self.spent.delta).max(0.0),
        }
    }
}

/// An administrator's change to an account.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Adjustment {
    /// Adds to the account's budget for good.
    Grant(Amount),
    /// Forgets what the account spent so far: charges up to now no longer count.
    Reset,
}

/// The durable ledger, behind one of its two stores.
pub struct Ledger {
    store: Store,
    audit: audit::Writer,
}

#[derive(Clone)]
enum Store {
    Sqlite(sqlite::SqliteStore),
    Postgres(Arc<postgres::PgStore>),
}

/// Milliseconds since the Unix epoch, the ledger's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs a SQLite operation where blocking is allowed. On a multi-threaded
/// runtime it runs right here, with the thread's other tasks moved to
/// another worker meanwhile ([`tokio::task::block_in_place`]): the query
/// waiting on its charge then resumes as soon as the commit returns,
/// instead of after two thread wake-ups (to a blocking thread and back),
/// each of which cost tens of microseconds. Elsewhere (a current-thread
/// runtime) it runs on a blocking thread. A panic is an error either way.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, LedgerError> {
    let failed =
        |e: &dyn std::fmt::Display| LedgerError::Storage(format!("ledger task failed: {e}"));
    match tokio::runtime::Handle::current().runtime_flavor() {
        tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .unwrap_or_else(|_| Err(failed(&"panicked")))
        }),
        _ => tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| failed(&e))?,
    }
}

impl Ledger {
    /// Opens (creating tables if needed) the ledger `location` names, and
    /// starts the audit writer. Must run inside a tokio runtime.
    pub async fn open(location: &LedgerStore) -> Result<Ledger, LedgerError> {
        let store = match location {
            LedgerStore::Sqlite(path) => {
                let path = path.clone();
                Store::Sqlite(blocking(move || sqlite::SqliteStore::open(&path)).await?)
            }
            LedgerStore::Postgres(url) => {
                Store::Postgres(Arc::new(postgres::PgStore::open(url).await?))
            }
        };
        Ok(Ledger {
            audit: audit::Writer::start(store.clone()),
            store,
        })
    }

    /// Checks the request's cost against the user's and the dataset's
    /// budgets and records it durably with its audit entry, or refuses
    /// without recording anything.
    pub async fn charge(&self, request: ChargeRequest) -> Result<Charge, LedgerError> {
        dispatch!(&self.store, charge(&request))
    }

    /// Records how a charged statement ended (and keeps its release for
    /// free repeats), durably.
    pub async fn finish(&self, finish: Finish) -> Result<(), LedgerError> {
        dispatch!(&self.store, finish(&finish))
    }

    /// Queues an audit entry for a statement that spent nothing; entries
    /// are written in batches by a background task.
    pub async fn record(&self, entry: AuditEntry) {
        self.audit.record(entry).await;
    }

    /// Writes an audit entry durably before returning (for answers that
    /// repeat a release: no answer leaves without its entry).
    pub async fn append(&self, entry: AuditEntry) -> Result<(), LedgerError> {
        let batch = vec![entry];
        dispatch!(&self.store, insert_audit(&batch))
    }

    /// Waits until every queued audit entry is written.
    pub async fn flush(&self) {
        self.audit.flush().await;
    }

    /// The release of `key` to `user` made at or after `not_before_ms`.
    pub async fn cached(
        &self,
        user: &str,
        key: &str,
        not_before_ms: i64,
    ) -> Result<Option<String>, LedgerError> {
        let (user, key) = (user.to_string(), key.to_string());
        dispatch!(&self.store, cached(&user, &key, not_before_ms))
    }

    /// Deletes the audit entries older than `before_ms` and returns how
    /// many. Charges (the budget records) are never touched: what was
    /// spent stays spent.
    pub async fn prune_audit(&self, before_ms: i64) -> Result<u64, LedgerError> {
        self.flush().await;
        dispatch!(&self.store, prune_audit(before_ms))
    }

    /// The server secret `name`: 32 random bytes made by the first dpgate
    /// that asked and kept in the ledger, so every restart and every
    /// replica sharing the ledger derives the same values from it.
    pub async fn secret(&self, name: &str) -> Result<[u8; 32], LedgerError> {
        let fresh: String = rand::random::<[u8; 32]>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let key = name.to_string();
        let hex: String = dispatch!(&self.store, secret(&key, &fresh))?;
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = hex
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    LedgerError::Storage(format!("the secret {name} is not 32 hex bytes"))
                })?;
        }
        Ok(out)
    }

    /// `account`'s standing under `budget` at `now_ms` (an account that
    /// never spent has spent nothing).
    pub async fn standing(
        &self,
        account: &str,
        budget: Budget,
        now_ms: i64,
    ) -> Result<Standing, LedgerError> {
        let account = account.to_string();
        dispatch!(&self.store, standing(&account, &budget, now_ms))
    }

    /// Grants or resets `account`, recording `entry` in the audit log in
    /// the same transaction.
    pub async fn adjust(
        &self,
        account: &str,
        adjustment: Adjustment,
        entry: AuditEntry,
    ) -> Result<(), LedgerError> {
        let account = account.to_string();
        dispatch!(&self.store, adjust(&account, adjustment, &entry))
    }

    /// Audit entries matching `filter`, oldest first.
    pub async fn audit(&self, filter: AuditFilter) -> Result<Vec<AuditRecord>, LedgerError> {
        dispatch!(&self.store, audit(&filter))
    }
}

#[cfg(test)]
mod tests;
