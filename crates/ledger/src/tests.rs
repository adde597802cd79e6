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
