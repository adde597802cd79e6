//! The shared store: tables in schema `dpgate_ledger` of a PostgreSQL
//! database that every dpgate replica points at. A charge locks the
//! accounts it touches with `SELECT … FOR UPDATE` (the dataset account
//! first, always in the same order, so replicas never deadlock) and
//! commits with `synchronous_commit = on`; a racing charge waits for the
//! lock and then sees the committed spending.

use dpgate_backend::Pool;
use dpgate_config::Budget;
use tokio_postgres::types::Type;
use tokio_postgres::GenericClient;

use crate::audit::{AuditEntry, AuditFilter, AuditRecord};
use crate::sql;
use crate::standing::{self, Row};
use crate::units::Units;
use crate::{Adjustment, Charge, ChargeRequest, Finish, LedgerError, Standing, DATASET};

const SCHEMA: &str = r#"
CREATE SCHEMA IF NOT EXISTS dpgate_ledger;
CREATE TABLE IF NOT EXISTS dpgate_ledger.accounts (
    "user" text PRIMARY KEY,
    spent_nano bigint NOT NULL,
    queries bigint NOT NULL,
    spent_delta_atto bigint NOT NULL DEFAULT 0,
    granted_nano bigint NOT NULL DEFAULT 0,
    granted_delta_atto bigint NOT NULL DEFAULT 0,
    reset_at_ms bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS dpgate_ledger.charges (
    id bigserial PRIMARY KEY,
    "user" text NOT NULL,
    at_ms bigint NOT NULL,
    epsilon_nano bigint NOT NULL,
    statement text NOT NULL,
    delta_atto bigint NOT NULL DEFAULT 0,
    audit_id bigint
);
CREATE TABLE IF NOT EXISTS dpgate_ledger.audit (
    id bigserial PRIMARY KEY,
    at_ms bigint NOT NULL,
    "user" text NOT NULL,
    client text NOT NULL,
    statement text NOT NULL,
    backend_sql text,
    epsilon_nano bigint NOT NULL,
    delta_atto bigint NOT NULL,
    outcome text NOT NULL,
    code text,
    detail text,
    "rows" bigint
);
ALTER TABLE dpgate_ledger.audit ADD COLUMN IF NOT EXISTS rho_nano bigint NOT NULL DEFAULT 0;
CREATE TABLE IF NOT EXISTS dpgate_ledger.secrets (
    name text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE IF NOT EXISTS dpgate_ledger.releases (
    "user" text NOT NULL,
    key text NOT NULL,
    at_ms bigint NOT NULL,
    body text NOT NULL,
    PRIMARY KEY ("user", key)
);
CREATE INDEX IF NOT EXISTS charges_by_user ON dpgate_ledger.charges ("user", at_ms);
CREATE INDEX IF NOT EXISTS charges_by_time ON dpgate_ledger.charges (at_ms);
CREATE INDEX IF NOT EXISTS audit_by_user ON dpgate_ledger.audit ("user", at_ms);
CREATE INDEX IF NOT EXISTS audit_by_time ON dpgate_ledger.audit (at_ms);
"#;

/// Every ledger connection: durable commits, the ledger's schema, and a
/// bound on how long a charge may wait for a lock.
const SETUP: &str = "SET synchronous_commit = on; SET default_transaction_read_only = off; \
     SET search_path = dpgate_ledger; SET statement_timeout = '30s'; \
     SET application_name = 'dpgate-ledger'";

/// Connections kept to the ledger database.
const POOL_SIZE: usize = 8;

/// A PostgreSQL ledger.
pub(crate) struct PgStore {
    pool: Pool,
}

impl PgStore {
    pub async fn open(url: &str) -> Result<PgStore, LedgerError> {
        let outbound = dpgate_backend::tls::Outbound::parse(url).map_err(LedgerError::Storage)?;
        let pool = Pool::connect(outbound, SETUP, POOL_SIZE).await?;
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        // Replicas starting together must not race to create the tables.
        tx.batch_execute("SELECT pg_advisory_xact_lock(7306284711)")
            .await?;
        tx.batch_execute(SCHEMA).await?;
        tx.commit().await?;
        drop(client);
        Ok(PgStore { pool })
    }

    pub async fn charge(&self, request: &ChargeRequest) -> Result<Charge, LedgerError> {
        let e = &request.entry;
        let cost = Units::cost(e.cost);
        let accounts = standing::accounts(request);
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let (mut limit, mut remaining) = (Units::default(), Units::default());
        for (account, budget) in &accounts {
            tx.execute_typed(sql::OPEN_ACCOUNT, &[(account, Type::TEXT)])
                .await?;
            let Some(budget) = budget else {
                tx.execute_typed(&read_account(true), &[(account, Type::TEXT)])
                    .await?;
                continue;
            };
            let (row, spent) = read_standing(&tx, account, budget, e.at_ms, true).await?;
            let left = standing::check(account, budget, &row, spent, cost)?;
            if *account == e.user {
                (limit, remaining) = (standing::limit(budget, &row), left);
            }
        }
        let audit_id = insert_audit(&tx, e).await?;
        tx.execute_typed(
            sql::INSERT_CHARGE,
            &[
                (&e.user, Type::TEXT),
                (&e.at_ms, Type::INT8),
                (&cost.epsilon, Type::INT8),
                (&cost.delta, Type::INT8),
                (&e.statement, Type::TEXT),
                (&audit_id, Type::INT8),
            ],
        )
        .await?;
        for (account, _) in &accounts {
            tx.execute_typed(
                sql::ADD_SPENT,
                &[
                    (account, Type::TEXT),
                    (&cost.epsilon, Type::INT8),
                    (&cost.delta, Type::INT8),
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Charge {
            audit_id,
            limit: limit.amount(),
            remaining: remaining.amount(),
        })
    }

    /// Commits without waiting for the WAL flush: the outcome survives a
    /// crash of dpgate at once, and of the PostgreSQL server once its WAL
    /// writer or the next charge's synchronous commit has flushed it.
    /// Losing it can only leave a statement marked `charged` instead of
    /// `answered` and forget its free repeat (the next identical query is
    /// charged again), never lose a charge: as the SQLite store's
    /// unsynced outcome writes.
    pub async fn finish(&self, f: &Finish) -> Result<(), LedgerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.batch_execute("SET LOCAL synchronous_commit = off")
            .await?;
        let (code, detail) = f.error.clone().unzip();
        tx.execute_typed(
            sql::FINISH_AUDIT,
            &[
                (&f.audit_id, Type::INT8),
                (&f.outcome.as_str(), Type::TEXT),
                (&f.rows, Type::INT8),
                (&code, Type::TEXT),
                (&detail, Type::TEXT),
            ],
        )
        .await?;
        if let Some(r) = &f.cache {
            tx.execute_typed(
                sql::PUT_RELEASE,
                &[
                    (&r.user, Type::TEXT),
                    (&r.key, Type::TEXT),
                    (&r.at_ms, Type::INT8),
                    (&r.body, Type::TEXT),
                ],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn insert_audit(&self, entries: &[AuditEntry]) -> Result<(), LedgerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        for e in entries {
            insert_audit(&tx, e).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn cached(
        &self,
        user: &str,
        key: &str,
        not_before: i64,
    ) -> Result<Option<String>, LedgerError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(sql::GET_RELEASE, &[&user, &key, &not_before])
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn prune_audit(&self, before_ms: i64) -> Result<u64, LedgerError> {
        let client = self.pool.get().await?;
        Ok(client.execute(sql::PRUNE_AUDIT, &[&before_ms]).await?)
    }

    pub async fn secret(&self, name: &str, fresh: &str) -> Result<String, LedgerError> {
        let client = self.pool.get().await?;
        client.execute(sql::INSERT_SECRET, &[&name, &fresh]).await?;
        Ok(client
            .query_one(sql::GET_SECRET, &[&name])
            .await?
            .try_get(0)?)
    }

    pub async fn standing(
        &self,
        account: &str,
        budget: &Budget,
        now_ms: i64,
    ) -> Result<Standing, LedgerError> {
        let client = self.pool.get().await?;
        let (row, spent) = read_standing(&*client, account, budget, now_ms, false).await?;
        Ok(standing::view(budget, &row, spent))
    }

    pub async fn adjust(
        &self,
        account: &str,
        adjustment: Adjustment,
        entry: &AuditEntry,
    ) -> Result<(), LedgerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(sql::OPEN_ACCOUNT, &[&account]).await?;
        match adjustment {
            Adjustment::Grant(a) => {
                let u = Units::cost(a);
                tx.execute(sql::GRANT, &[&account, &u.epsilon, &u.delta])
                    .await?
            }
            Adjustment::Reset => tx.execute(sql::RESET, &[&account, &entry.at_ms]).await?,
        };
        insert_audit(&tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, LedgerError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                sql::LIST_AUDIT,
                &[
                    &filter.user,
                    &filter.since_ms.unwrap_or(i64::MIN),
                    &crate::audit::limit(filter),
                ],
            )
            .await?;
        let mut records = rows
            .iter()
            .map(|r| Ok(audit_record!(r.try_get)))
            .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
        records.reverse();
        Ok(records)
    }
}

/// The statement that reads an account's row, locking it if `lock`.
fn read_account(lock: bool) -> String {
    match lock {
        true => format!("{} FOR UPDATE", sql::READ_ACCOUNT),
        false => sql::READ_ACCOUNT.to_string(),
    }
}

// The statements on a charge's path run with their parameter types
// given (`*_typed`): parse, bind and execute in one round trip, where an
// untyped call first prepares the statement (a round trip more each).

/// An account's row (locked if `lock`) and what counts as spent.
async fn read_standing(
    client: &impl GenericClient,
    account: &str,
    budget: &Budget,
    now_ms: i64,
    lock: bool,
) -> Result<(Row, Units), LedgerError> {
    let row = match client
        .query_typed_opt(&read_account(lock), &[(&account, Type::TEXT)])
        .await?
    {
        Some(r) => account_row!(r.try_get),
        None => Row::default(),
    };
    let spent = match standing::window_start(budget, &row, now_ms) {
        None => row.spent,
        Some(start) => {
            let r = if account == DATASET {
                client
                    .query_typed_one(sql::DATASET_WINDOW, &[(&start, Type::INT8)])
                    .await?
            } else {
                client
                    .query_typed_one(
                        sql::USER_WINDOW,
                        &[(&account, Type::TEXT), (&start, Type::INT8)],
                    )
                    .await?
            };
            Units {
                epsilon: r.try_get(0)?,
                delta: r.try_get(1)?,
            }
        }
    };
    Ok((row, spent))
}

async fn insert_audit(client: &impl GenericClient, e: &AuditEntry) -> Result<i64, LedgerError> {
    let cost = Units::cost(e.cost);
    let row = client
        .query_typed_one(
            sql::INSERT_AUDIT,
            &[
                (&e.at_ms, Type::INT8),
                (&e.user, Type::TEXT),
                (&e.client, Type::TEXT),
                (&e.statement, Type::TEXT),
                (&e.backend_sql, Type::TEXT),
                (&cost.epsilon, Type::INT8),
                (&cost.delta, Type::INT8),
                (&e.outcome.as_str(), Type::TEXT),
                (&e.code, Type::TEXT),
                (&e.detail, Type::TEXT),
                (&e.rows, Type::INT8),
                (&crate::units::rho_units(e.rho), Type::INT8),
            ],
        )
        .await?;
    Ok(row.try_get(0)?)
}
