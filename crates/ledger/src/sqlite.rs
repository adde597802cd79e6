//! The embedded store: one SQLite file in WAL mode with `synchronous =
//! FULL`, so a commit is on disk when it returns — except a statement's
//! outcome, written without its own sync (see [`crate::group`]). `BEGIN IMMEDIATE` takes
//! the write lock before the budget is read, which serializes charges
//! between connections and between processes sharing the file.

use std::path::Path;
use std::sync::{Arc, Mutex};

use dpgate_config::Budget;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::audit::{AuditEntry, AuditFilter, AuditRecord};
use crate::sql::{self, sqlite as q};
use crate::standing::{self, Row};
use crate::units::Units;
use crate::{Adjustment, Charge, ChargeRequest, Finish, LedgerError, Standing, DATASET};

/// Tables as the first release created them; later columns are added by
/// [`ADDED_COLUMNS`], so old ledger files keep their records.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS charges (
    id INTEGER PRIMARY KEY,
    "user" TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    epsilon_nano INTEGER NOT NULL,
    statement TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS accounts (
    "user" TEXT PRIMARY KEY,
    spent_nano INTEGER NOT NULL,
    queries INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    "user" TEXT NOT NULL,
    client TEXT NOT NULL,
    statement TEXT NOT NULL,
    backend_sql TEXT,
    epsilon_nano INTEGER NOT NULL,
    delta_atto INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    code TEXT,
    detail TEXT,
    "rows" INTEGER
);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS releases (
    "user" TEXT NOT NULL,
    key TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY ("user", key)
);
"#;

/// Columns added since the first release: (table, column, definition).
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("charges", "delta_atto", "INTEGER NOT NULL DEFAULT 0"),
    ("charges", "audit_id", "INTEGER"),
    ("accounts", "spent_delta_atto", "INTEGER NOT NULL DEFAULT 0"),
    ("accounts", "granted_nano", "INTEGER NOT NULL DEFAULT 0"),
    (
        "accounts",
        "granted_delta_atto",
        "INTEGER NOT NULL DEFAULT 0",
    ),
    ("accounts", "reset_at_ms", "INTEGER NOT NULL DEFAULT 0"),
    ("audit", "rho_nano", "INTEGER NOT NULL DEFAULT 0"),
];

const INDEXES: &str = r#"
CREATE INDEX IF NOT EXISTS charges_by_user ON charges ("user", at_ms);
CREATE INDEX IF NOT EXISTS charges_by_time ON charges (at_ms);
CREATE INDEX IF NOT EXISTS audit_by_user ON audit ("user", at_ms);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (at_ms);
"#;

/// Prepared statements kept per connection: more than the ledger has.
const STATEMENT_CACHE: usize = 32;

/// A SQLite ledger file.
#[derive(Clone)]
pub(crate) struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Charges, outcomes and audit batches waiting for the connection,
    /// committed together ([`crate::group`]).
    queue: Arc<crate::group::Queue>,
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<SqliteStore, LedgerError> {
        // Budgets and every analyst's statements: owner-only (0600).
        match dpgate_config::files::owner_only(path) {
            Ok(Some(warning)) => tracing::warn!("the ledger {warning}"),
            Ok(None) => {}
            Err(e) => return Err(LedgerError::Storage(format!("{}: {e}", path.display()))),
        }
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        // Every statement of the charge path stays prepared: SQLite's
        // parsing was a third of a charge's CPU time.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(SCHEMA)?;
        for (table, column, definition) in ADDED_COLUMNS {
            let exists: bool = tx.query_row(
                &format!("SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"),
                [column],
                |r| r.get(0),
            )?;
            if !exists {
                tx.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN {column} {definition}"
                ))?;
            }
        }
        tx.execute_batch(INDEXES)?;
        tx.commit()?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
            queue: Arc::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let mut conn = self.lock();
        // Grants, resets, prunes and secrets are synced (a finish group
        // may have left the connection at NORMAL).
        self.queue.set_mode(&conn, crate::group::Sync::Disk);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// [`Self::write`] with group commit: for the writes on every
    /// statement's path (charges, outcomes, audit batches).
    fn write_grouped<T: Send + 'static>(
        &self,
        sync: crate::group::Sync,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        self.queue.write(&self.conn, sync, f)
    }

    pub fn charge(&self, request: &ChargeRequest) -> Result<Charge, LedgerError> {
        let request = request.clone();
        self.write_grouped(crate::group::Sync::Disk, move |tx| {
            let e = &request.entry;
            let cost = Units::cost(e.cost);
            let request = &request;
            let accounts = crate::standing::accounts(request);
            let (mut limit, mut remaining) = (Units::default(), Units::default());
            for (account, budget) in &accounts {
                tx.prepare_cached(&q(sql::OPEN_ACCOUNT))?
                    .execute([account])?;
                let Some(budget) = budget else { continue };
                let (row, spent) = read_standing(tx, account, budget, e.at_ms)?;
                let left = standing::check(account, budget, &row, spent, cost)?;
                if *account == e.user {
                    (limit, remaining) = (standing::limit(budget, &row), left);
                }
            }
            let audit_id = insert_audit(tx, e)?;
            tx.prepare_cached(&q(sql::INSERT_CHARGE))?.execute(params![
                e.user,
                e.at_ms,
                cost.epsilon,
                cost.delta,
                e.statement,
                audit_id
            ])?;
            for (account, _) in &accounts {
                tx.prepare_cached(&q(sql::ADD_SPENT))?.execute(params![
                    account,
                    cost.epsilon,
                    cost.delta
                ])?;
            }
            Ok(Charge {
                audit_id,
                limit: limit.amount(),
                remaining: remaining.amount(),
            })
        })
    }

    pub fn finish(&self, f: &Finish) -> Result<(), LedgerError> {
        let f = f.clone();
        self.write_grouped(crate::group::Sync::Os, move |tx| {
            let (code, detail) = f.error.clone().unzip();
            tx.prepare_cached(&q(sql::FINISH_AUDIT))?.execute(params![
                f.audit_id,
                f.outcome.as_str(),
                f.rows,
                code,
                detail
            ])?;
            if let Some(r) = &f.cache {
                tx.prepare_cached(&q(sql::PUT_RELEASE))?
                    .execute(params![r.user, r.key, r.at_ms, r.body])?;
            }
            Ok(())
        })
    }

    pub fn insert_audit(&self, entries: &[AuditEntry]) -> Result<(), LedgerError> {
        let entries = entries.to_vec();
        self.write_grouped(crate::group::Sync::Disk, move |tx| {
            entries
                .iter()
                .try_for_each(|e| insert_audit(tx, e).map(drop))
        })
    }

    pub fn cached(
        &self,
        user: &str,
        key: &str,
        not_before: i64,
    ) -> Result<Option<String>, LedgerError> {
        Ok(self
            .lock()
            .prepare_cached(&q(sql::GET_RELEASE))?
            .query_row(params![user, key, not_before], |r| r.get(0))
            .optional()?)
    }

    pub fn prune_audit(&self, before_ms: i64) -> Result<u64, LedgerError> {
        self.write(|tx| {
            Ok(tx
                .prepare_cached(&q(sql::PRUNE_AUDIT))?
                .execute(params![before_ms])? as u64)
        })
    }

    pub fn secret(&self, name: &str, fresh: &str) -> Result<String, LedgerError> {
        self.write(|tx| {
            tx.prepare_cached(&q(sql::INSERT_SECRET))?
                .execute(params![name, fresh])?;
            Ok(tx
                .prepare_cached(&q(sql::GET_SECRET))?
                .query_row(params![name], |r| r.get(0))?)
        })
    }

    pub fn standing(
        &self,
        account: &str,
        budget: &Budget,
        now_ms: i64,
    ) -> Result<Standing, LedgerError> {
        let conn = self.lock();
        let (row, spent) = read_standing(&conn, account, budget, now_ms)?;
        Ok(crate::standing::view(budget, &row, spent))
    }

    pub fn adjust(
        &self,
        account: &str,
        adjustment: Adjustment,
        entry: &AuditEntry,
    ) -> Result<(), LedgerError> {
        self.write(|tx| {
            tx.prepare_cached(&q(sql::OPEN_ACCOUNT))?
                .execute([account])?;
            match adjustment {
                Adjustment::Grant(a) => {
                    let u = Units::cost(a);
                    tx.prepare_cached(&q(sql::GRANT))?
                        .execute(params![account, u.epsilon, u.delta])?
                }
                Adjustment::Reset => tx
                    .prepare_cached(&q(sql::RESET))?
                    .execute(params![account, entry.at_ms])?,
            };
            insert_audit(tx, entry).map(drop)
        })
    }

    pub fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, LedgerError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(&q(sql::LIST_AUDIT))?;
        let rows = stmt.query_map(
            params![
                filter.user,
                filter.since_ms.unwrap_or(i64::MIN),
                crate::audit::limit(filter)
            ],
            |r| Ok(audit_record!(r.get)),
        )?;
        let mut records: Vec<AuditRecord> = rows.collect::<Result<_, _>>()?;
        records.reverse();
        Ok(records)
    }
}

/// An account's row and what counts as spent (the running total, or the
/// sum of the refresh window's charges).
fn read_standing(
    conn: &Connection,
    account: &str,
    budget: &Budget,
    now_ms: i64,
) -> Result<(Row, Units), LedgerError> {
    let row = conn
        .prepare_cached(&q(sql::READ_ACCOUNT))?
        .query_row([account], |r| Ok(account_row!(r.get)))
        .optional()?
        .unwrap_or_default();
    let spent = match standing::window_start(budget, &row, now_ms) {
        None => row.spent,
        Some(start) => {
            let sum = |r: &rusqlite::Row<'_>| {
                Ok(Units {
                    epsilon: r.get(0)?,
                    delta: r.get(1)?,
                })
            };
            if account == DATASET {
                conn.prepare_cached(&q(sql::DATASET_WINDOW))?
                    .query_row([start], sum)?
            } else {
                conn.prepare_cached(&q(sql::USER_WINDOW))?
                    .query_row(params![account, start], sum)?
            }
        }
    };
    Ok((row, spent))
}

fn insert_audit(conn: &Connection, e: &AuditEntry) -> Result<i64, LedgerError> {
    let cost = Units::cost(e.cost);
    Ok(conn.prepare_cached(&q(sql::INSERT_AUDIT))?.query_row(
        params![
            e.at_ms,
            e.user,
            e.client,
            e.statement,
            e.backend_sql,
            cost.epsilon,
            cost.delta,
            e.outcome.as_str(),
            e.code,
            e.detail,
            e.rows,
            crate::units::rho_units(e.rho)
        ],
        |r| r.get(0),
    )?)
}
