//! The privacy budget ledger in a SQLite file (WAL, synchronous=FULL).
//!
//! A query's cost is checked against the user's budget and recorded in one
//! `BEGIN IMMEDIATE` transaction that is durable when [`Ledger::charge`]
//! returns; only then may the query touch data. Amounts are kept as
//! integers in nano-ε, rounded up when charged and budgets rounded down,
//! so float sums can never let a user overspend.

use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// Nano-ε per ε.
const NANOS: f64 = 1e9;

/// Ledger failures.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The charge would exceed the budget; nothing was recorded.
    #[error("privacy budget exhausted: {spent} of {budget} spent, the query needs {cost}")]
    Exhausted {
        /// ε already spent.
        spent: f64,
        /// The user's total ε.
        budget: f64,
        /// ε the refused query needed.
        cost: f64,
    },
    /// The ledger file could not be read or written.
    #[error("ledger storage error: {0}")]
    Storage(#[from] rusqlite::Error),
}

/// The outcome of a successful charge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Charge {
    /// ε spent by this user, this charge included.
    pub spent: f64,
    /// ε left.
    pub remaining: f64,
}

/// One user's account.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    /// User name.
    pub user: String,
    /// ε spent.
    pub spent: f64,
    /// Number of charged queries.
    pub queries: i64,
}

/// A durable per-user ledger.
pub struct Ledger {
    conn: Mutex<Connection>,
}

/// ε in nano-ε, rounded up for costs and down for budgets, so rounding
/// never lets a user spend more than the budget. Float noise within 1e-6
/// nano-ε of an integer (0.1 × 1e9) counts as that integer.
fn to_nanos(epsilon: f64, round_up: bool) -> i64 {
    let x = epsilon * NANOS;
    let r = x.round();
    if (x - r).abs() < 1e-6 {
        r as i64
    } else if round_up {
        x.ceil() as i64
    } else {
        x.floor() as i64
    }
}

/// Nano-ε spent by `user` (0 for a user with no account yet).
fn spent_nanos(conn: &Connection, user: &str) -> Result<i64, LedgerError> {
    Ok(conn
        .query_row(
            "SELECT spent_nano FROM accounts WHERE user = ?1",
            [user],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS charges (
                 id INTEGER PRIMARY KEY,
                 user TEXT NOT NULL,
                 at_ms INTEGER NOT NULL,
                 epsilon_nano INTEGER NOT NULL,
                 statement TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS accounts (
                 user TEXT PRIMARY KEY,
                 spent_nano INTEGER NOT NULL,
                 queries INTEGER NOT NULL
             );",
        )?;
        Ok(Ledger {
            conn: Mutex::new(conn),
        })
    }

    /// Checks that `user` can afford `epsilon` within `budget` and records
    /// the charge durably, or refuses without recording anything.
    pub fn charge(
        &self,
        user: &str,
        budget: f64,
        epsilon: f64,
        statement: &str,
    ) -> Result<Charge, LedgerError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let spent = spent_nanos(&tx, user)?;
        let cost = to_nanos(epsilon, true);
        let limit = to_nanos(budget, false);
        if spent.saturating_add(cost) > limit {
            return Err(LedgerError::Exhausted {
                spent: spent as f64 / NANOS,
                budget,
                cost: epsilon,
            });
        }
        tx.execute(
            "INSERT INTO charges (user, at_ms, epsilon_nano, statement) VALUES (?1, ?2, ?3, ?4)",
            params![user, now_millis(), cost, statement],
        )?;
        tx.execute(
            "INSERT INTO accounts (user, spent_nano, queries) VALUES (?1, ?2, 1)
             ON CONFLICT (user) DO UPDATE SET spent_nano = spent_nano + ?2, queries = queries + 1",
            params![user, cost],
        )?;
        tx.commit()?;
        let after = spent + cost;
        Ok(Charge {
            spent: after as f64 / NANOS,
            remaining: (limit - after).max(0) as f64 / NANOS,
        })
    }

    /// ε spent so far by `user`.
    pub fn spent(&self, user: &str) -> Result<f64, LedgerError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(spent_nanos(&conn, user)? as f64 / NANOS)
    }

    /// Every account, by user name.
    pub fn accounts(&self) -> Result<Vec<Account>, LedgerError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        let mut stmt =
            conn.prepare("SELECT user, spent_nano, queries FROM accounts ORDER BY user")?;
        let rows = stmt.query_map([], |r| {
            Ok(Account {
                user: r.get(0)?,
                spent: r.get::<_, i64>(1)? as f64 / NANOS,
                queries: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_until_the_budget_is_spent_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite");
        let ledger = Ledger::open(&path).unwrap();
        // 30 × 0.1 = 3.0 exactly, although the f64 sum is 3.0000000000000004.
        for i in 0..30 {
            let c = ledger.charge("ann", 3.0, 0.1, "q").unwrap();
            assert!((c.spent - 0.1 * (i + 1) as f64).abs() < 1e-9);
        }
        let err = ledger.charge("ann", 3.0, 0.1, "q").unwrap_err();
        assert!(matches!(err, LedgerError::Exhausted { .. }), "{err}");
        assert!(ledger.charge("bob", 3.0, 0.1, "q").is_ok());
        drop(ledger);
        let reopened = Ledger::open(&path).unwrap();
        assert!((reopened.spent("ann").unwrap() - 3.0).abs() < 1e-12);
        assert_eq!(reopened.accounts().unwrap()[0].queries, 30);
    }
}
