//! The shared store: tables in schema `dpgate_ledger` of a PostgreSQL
//! database that every dpgate replica points at. A charge locks the
//! accounts it touches with `SELECT … FOR UPDATE` (the dataset account
//! first, always in the same order, so replicas never deadlock) and
//! commits with `synchronous_commit = on`; a racing charge waits for the
//! lock and then sees the committed spending.

use dpgate_backend::{Pool, Pooled};
use dpgate_config::Budget;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, GenericClient};

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

/// A charge's writes in one statement: [`sql::INSERT_AUDIT`]'s entry
/// (same parameters), the charge row (which needs the entry's id), and
/// [`sql::ADD_SPENT`] on the user's account and the dataset's (`$13`).
/// One statement because the `COMMIT` after it is sent before its reply:
/// writes sent as several statements could be committed in part if one
/// of them failed before it left (a parameter tokio-postgres refuses to
/// encode). Only PostgreSQL writes in a `WITH`; SQLite runs them apart.
const WRITE_CHARGE: &str = r#"WITH entry AS (INSERT INTO audit (at_ms, "user", client, statement, backend_sql, epsilon_nano, delta_atto, outcome, code, detail, "rows", rho_nano) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id), charge AS (INSERT INTO charges ("user", at_ms, epsilon_nano, delta_atto, statement, audit_id) SELECT $2, $1, $6, $7, $4, id FROM entry RETURNING audit_id), spending AS (UPDATE accounts SET spent_nano = spent_nano + $6, spent_delta_atto = spent_delta_atto + $7, queries = queries + 1 WHERE "user" = $2 OR "user" = $13) SELECT audit_id FROM charge"#;

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

    /// Two flights of pipelined statements, each sent whole before its
    /// first reply is read: the first opens the transaction and locks and
    /// reads the accounts, the second writes the charge and commits: two
    /// round trips where a statement at a time took ten, all of them with
    /// the dataset account locked against every other charge of every
    /// replica. (A refresh window adds one: its start depends on the row.)
    pub async fn charge(&self, request: &ChargeRequest) -> Result<Charge, LedgerError> {
        let mut client = self.pool.get().await?;
        // Dropped midway (its caller gone), the connection is closed: the
        // server rolls the transaction back and releases the locks.
        client.begin();
        let charged = charge(&mut client, request).await;
        end(client, &charged).await;
        charged
    }

    /// Commits without waiting for the WAL flush: the outcome survives a
    /// crash of dpgate at once, and of the PostgreSQL server once its WAL
    /// writer or the next charge's synchronous commit has flushed it.
    /// Losing it can only leave a statement marked `charged` instead of
    /// `answered` and forget its free repeat (the next identical query is
    /// charged again), never lose a charge: as the SQLite store's
    /// unsynced outcome writes. One flight of pipelined statements.
    pub async fn finish(&self, f: &Finish) -> Result<(), LedgerError> {
        let mut client = self.pool.get().await?;
        client.begin();
        let (code, detail) = f.error.clone().unzip();
        let outcome = f.outcome.as_str();
        let mut flight: Vec<Request<'_>> = vec![
            ("BEGIN", vec![]),
            ("SET LOCAL synchronous_commit = off", vec![]),
            (
                sql::FINISH_AUDIT,
                vec![
                    (&f.audit_id, Type::INT8),
                    (&outcome, Type::TEXT),
                    (&f.rows, Type::INT8),
                    (&code, Type::TEXT),
                    (&detail, Type::TEXT),
                ],
            ),
        ];
        if let Some(r) = &f.cache {
            flight.push((
                sql::PUT_RELEASE,
                vec![
                    (&r.user, Type::TEXT),
                    (&r.key, Type::TEXT),
                    (&r.at_ms, Type::INT8),
                    (&r.body, Type::TEXT),
                ],
            ));
        }
        flight.push(("COMMIT", vec![]));
        let finished = in_one_flight(&mut client, &flight).await.map(drop);
        end(client, &finished).await;
        finished
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
        // Every query looks here first: one round trip, prepared from the
        // second use, where an untyped query prepared it every time.
        let mut client = self.pool.get().await?;
        let params: Vec<(&(dyn ToSql + Sync), Type)> = vec![
            (&user, Type::TEXT),
            (&key, Type::TEXT),
            (&not_before, Type::INT8),
        ];
        let replies = in_one_flight(&mut client, &[(sql::GET_RELEASE, params)]).await?;
        Ok(replies[0].first().map(|r| r.try_get(0)).transpose()?)
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
        let (row, spent) = read_standing(&*client, account, budget, now_ms).await?;
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

/// A statement's text and its parameters with their types.
type Request<'a> = (&'a str, Vec<(&'a (dyn ToSql + Sync), Type)>);

/// Runs `flight` pipelined: every statement is sent before the first
/// reply is read (tokio-postgres sends a request when its future is
/// first polled, and `join_all` polls them all, in order), and the
/// server runs them in order. A statement this connection ran before is
/// bound to the form prepared then, skipping the server's parsing.
/// Returns each one's rows, or the first error (after an error the
/// server fails the rest of a transaction, and answers a `COMMIT` in it
/// with a rollback).
async fn in_one_flight(
    client: &mut Pooled<'_>,
    flight: &[Request<'_>],
) -> Result<Vec<Vec<tokio_postgres::Row>>, LedgerError> {
    let mut prepared = Vec::with_capacity(flight.len());
    for (sql, params) in flight {
        let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
        prepared.push(client.prepared(sql, &types).await?);
    }
    let client: &Client = client;
    let replies = futures::future::join_all(flight.iter().zip(&prepared).map(
        |((sql, params), statement)| async move {
            match statement {
                Some(statement) => {
                    let values: Vec<_> = params.iter().map(|(value, _)| *value).collect();
                    client.query(statement, &values).await
                }
                None => client.query_typed(sql, params).await,
            }
        },
    ))
    .await;
    Ok(replies.into_iter().collect::<Result<_, _>>()?)
}

/// Ends a request begun on `client`. Refused by the budget rule, the
/// charge's transaction is rolled back (releasing its locks) and the
/// connection serves on; after any other failure the connection is in a
/// state not worth trusting (a statement the server may no longer hold
/// as prepared), so it is closed and the server rolls back.
async fn end<T>(mut client: Pooled<'_>, outcome: &Result<T, LedgerError>) {
    match outcome {
        Ok(_) => client.finished(),
        Err(LedgerError::Exhausted(_)) => match client.batch_execute("ROLLBACK").await {
            Ok(()) => client.finished(),
            Err(_) => client.close(),
        },
        Err(_) => client.close(),
    }
}

/// [`PgStore::charge`] on a connection of its own.
async fn charge(client: &mut Pooled<'_>, request: &ChargeRequest) -> Result<Charge, LedgerError> {
    let e = &request.entry;
    let cost = Units::cost(e.cost);
    let accounts = standing::accounts(request);
    // First flight: open the transaction, then open, lock and read each
    // account in locking order.
    let mut flight: Vec<Request<'_>> = vec![("BEGIN", vec![])];
    for (account, _) in &accounts {
        flight.push((sql::OPEN_ACCOUNT, vec![(account, Type::TEXT)]));
        flight.push((&READ_ACCOUNT_LOCKED, vec![(account, Type::TEXT)]));
    }
    let replies = in_one_flight(client, &flight).await?;
    let (mut limit, mut remaining) = (Units::default(), Units::default());
    for (i, (account, budget)) in accounts.iter().enumerate() {
        let Some(budget) = budget else { continue };
        let row = match replies[2 + 2 * i].first() {
            Some(r) => account_row!(r.try_get),
            None => Row::default(),
        };
        let spent = spent(&**client, account, budget, &row, e.at_ms).await?;
        let left = standing::check(account, budget, &row, spent, cost)?;
        if *account == e.user {
            (limit, remaining) = (standing::limit(budget, &row), left);
        }
    }
    // Second flight: the audit entry, the charge and both accounts'
    // spending, then the commit.
    let audit = AuditValues::of(e);
    let mut params = audit.params();
    params.push((&DATASET, Type::TEXT));
    let replies = in_one_flight(client, &[(WRITE_CHARGE, params), ("COMMIT", vec![])]).await?;
    let audit_id = match replies[0].first() {
        Some(row) => row.try_get(0)?,
        None => return Err(LedgerError::Storage("the charge wrote no row".into())),
    };
    Ok(Charge {
        audit_id,
        limit: limit.amount(),
        remaining: remaining.amount(),
    })
}

/// [`sql::READ_ACCOUNT`] locking the row, written once.
static READ_ACCOUNT_LOCKED: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{} FOR UPDATE", sql::READ_ACCOUNT));

// Statements outside a flight run with their parameter types given
// (`*_typed`): parse, bind and execute in one round trip, where an
// untyped call first prepares the statement (a round trip more each).

/// An account's row and what counts as spent.
async fn read_standing(
    client: &impl GenericClient,
    account: &str,
    budget: &Budget,
    now_ms: i64,
) -> Result<(Row, Units), LedgerError> {
    let row = match client
        .query_typed_opt(sql::READ_ACCOUNT, &[(&account, Type::TEXT)])
        .await?
    {
        Some(r) => account_row!(r.try_get),
        None => Row::default(),
    };
    let spent = spent(client, account, budget, &row, now_ms).await?;
    Ok((row, spent))
}

/// What counts as spent from `account`'s `row`: its running total, or
/// under a refresh window the sum of the window's charges (a round trip).
async fn spent(
    client: &impl GenericClient,
    account: &str,
    budget: &Budget,
    row: &Row,
    now_ms: i64,
) -> Result<Units, LedgerError> {
    let Some(start) = standing::window_start(budget, row, now_ms) else {
        return Ok(row.spent);
    };
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
    Ok(Units {
        epsilon: r.try_get(0)?,
        delta: r.try_get(1)?,
    })
}

/// An audit entry's parameters for [`sql::INSERT_AUDIT`] (and
/// [`WRITE_CHARGE`]), with the values computed from it.
struct AuditValues<'a> {
    entry: &'a AuditEntry,
    cost: Units,
    outcome: &'static str,
    rho: i64,
}

impl<'a> AuditValues<'a> {
    fn of(entry: &'a AuditEntry) -> AuditValues<'a> {
        AuditValues {
            entry,
            cost: Units::cost(entry.cost),
            outcome: entry.outcome.as_str(),
            rho: crate::units::rho_units(entry.rho),
        }
    }

    fn params(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        let e = self.entry;
        vec![
            (&e.at_ms, Type::INT8),
            (&e.user, Type::TEXT),
            (&e.client, Type::TEXT),
            (&e.statement, Type::TEXT),
            (&e.backend_sql, Type::TEXT),
            (&self.cost.epsilon, Type::INT8),
            (&self.cost.delta, Type::INT8),
            (&self.outcome, Type::TEXT),
            (&e.code, Type::TEXT),
            (&e.detail, Type::TEXT),
            (&e.rows, Type::INT8),
            (&self.rho, Type::INT8),
        ]
    }
}

async fn insert_audit(client: &impl GenericClient, e: &AuditEntry) -> Result<i64, LedgerError> {
    let values = AuditValues::of(e);
    let row = client
        .query_typed_one(sql::INSERT_AUDIT, &values.params())
        .await?;
    Ok(row.try_get(0)?)
}
