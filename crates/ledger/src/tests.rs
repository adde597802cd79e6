//! SQLite-specific behaviour; the budget scenarios run against both stores
//! in the workspace's `tests/ledger.rs`.

use super::*;

#[tokio::test]
async fn a_first_release_ledger_file_keeps_its_spending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE charges (id INTEGER PRIMARY KEY, user TEXT NOT NULL, at_ms INTEGER NOT NULL, epsilon_nano INTEGER NOT NULL, statement TEXT NOT NULL);
             CREATE TABLE accounts (user TEXT PRIMARY KEY, spent_nano INTEGER NOT NULL, queries INTEGER NOT NULL);
             INSERT INTO charges (user, at_ms, epsilon_nano, statement) VALUES ('ann', 1, 2500000000, 'q');
             INSERT INTO accounts VALUES ('ann', 2500000000, 1);",
        )
        .unwrap();
    }
    let ledger = Ledger::open(&LedgerStore::Sqlite(path)).await.unwrap();
    let budget = Budget {
        epsilon: 3.0,
        delta: 0.0,
        refresh: None,
    };
    let standing = ledger.standing("ann", budget, now_ms()).await.unwrap();
    assert_eq!(standing.spent.epsilon, 2.5);
    assert_eq!(standing.queries, 1);
    let entry = AuditEntry {
        at_ms: now_ms(),
        user: "ann".into(),
        client: "test".into(),
        statement: "q".into(),
        backend_sql: None,
        cost: Amount {
            epsilon: 1.0,
            delta: 0.0,
        },
        rho: 0.0,
        outcome: Outcome::Charged,
        code: None,
        detail: None,
        rows: None,
    };
    let request = ChargeRequest {
        budget,
        dataset: None,
        entry,
    };
    assert!(matches!(
        ledger.charge(request.clone()).await,
        Err(LedgerError::Exhausted(_))
    ));
    let mut cheaper = request;
    cheaper.entry.cost.epsilon = 0.5;
    let charge = ledger.charge(cheaper).await.unwrap();
    assert_eq!(charge.remaining.epsilon, 0.0);
}

/// A ledger file from before Gaussian noise: its audit log gains the ρ
/// column in place, old entries read as ρ = 0, new ones keep theirs.
#[tokio::test]
async fn an_audit_log_without_rho_gains_it_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pre_rho.sqlite");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            r#"CREATE TABLE audit (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, "user" TEXT NOT NULL, client TEXT NOT NULL, statement TEXT NOT NULL, backend_sql TEXT, epsilon_nano INTEGER NOT NULL, delta_atto INTEGER NOT NULL, outcome TEXT NOT NULL, code TEXT, detail TEXT, "rows" INTEGER);
               INSERT INTO audit (at_ms, "user", client, statement, epsilon_nano, delta_atto, outcome) VALUES (1, 'ann', 'c', 'SELECT 1', 100000000, 0, 'answered');"#,
        )
        .unwrap();
    }
    let ledger = Ledger::open(&LedgerStore::Sqlite(path)).await.unwrap();
    let mut entry = AuditEntry {
        at_ms: 2,
        user: "ann".into(),
        client: "c".into(),
        statement: "SELECT 2".into(),
        backend_sql: None,
        cost: Amount::default(),
        rho: 0.5,
        outcome: Outcome::Ok,
        code: None,
        detail: None,
        rows: None,
    };
    ledger.record(entry.clone()).await;
    ledger.flush().await;
    let log = ledger.audit(AuditFilter::default()).await.unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!((log[0].entry.rho, log[0].entry.cost.epsilon), (0.0, 0.1));
    entry.rho = 0.5;
    assert_eq!(log[1].entry, entry);
}
