//! The budget rules, run against both ledger stores — a SQLite file and a
//! PostgreSQL database — through the ledger's own API, with the clock
//! given explicitly so that refresh windows can be crossed.

mod common;

use common::*;
use dpgate_config::{Budget, LedgerStore};
use dpgate_ledger::{
    Adjustment, Amount, AuditEntry, AuditFilter, ChargeRequest, Exhausted, Finish, Ledger,
    LedgerError, Outcome, Release, Resource,
};

const T0: i64 = 1_700_000_000_000;
const DAY: i64 = 86_400_000;
/// When only dana's charge at T0 + DAY is inside her one-day window.
const LATER: i64 = T0 + 3 * DAY / 2 + 1;

fn budget(epsilon: f64, delta: f64, refresh_days: Option<u64>) -> Budget {
    Budget {
        epsilon,
        delta,
        refresh: refresh_days.map(|d| std::time::Duration::from_secs(d * 86_400)),
    }
}

fn request(user: &str, at_ms: i64, epsilon: f64, delta: f64, b: Budget) -> ChargeRequest {
    ChargeRequest {
        budget: b,
        dataset: None,
        entry: AuditEntry {
            at_ms,
            user: user.into(),
            client: "127.0.0.1:5555".into(),
            statement: format!("SELECT COUNT(*) FROM visits -- {user} at {at_ms}"),
            backend_sql: Some("SELECT 1".into()),
            cost: Amount { epsilon, delta },
            rho: 0.0,
            outcome: Outcome::Charged,
            code: None,
            detail: None,
            rows: None,
        },
    }
}

/// Checks that `user` has spent `epsilon` at `at_ms`.
async fn assert_spent(ledger: &Ledger, user: &str, b: Budget, at_ms: i64, epsilon: f64) {
    let spent = ledger.standing(user, b, at_ms).await.unwrap().spent.epsilon;
    assert!(
        (spent - epsilon).abs() < 1e-9,
        "{user} spent {spent}, not {epsilon}"
    );
}

/// A new database of the test cluster and a PostgreSQL ledger in it.
async fn postgres_ledger(prefix: &str) -> (String, Ledger) {
    let db = empty_database(prefix).await;
    let ledger = Ledger::open(&LedgerStore::Postgres(cluster().url(&db)))
        .await
        .unwrap();
    (db, ledger)
}

fn exhausted(r: Result<dpgate_ledger::Charge, LedgerError>) -> Exhausted {
    match r {
        Err(LedgerError::Exhausted(x)) => x,
        other => panic!("expected exhaustion, got {other:?}"),
    }
}

async fn scenario(ledger: &Ledger) {
    // Ten charges of 0.1 spend ε = 1 exactly; the eleventh is refused.
    let ann = budget(1.0, 0.0, None);
    for i in 0..10 {
        let c = ledger
            .charge(request("ann", T0 + i, 0.1, 0.0, ann))
            .await
            .unwrap();
        assert!((c.remaining.epsilon - (0.9 - 0.1 * i as f64)).abs() < 1e-9);
    }
    let x = exhausted(ledger.charge(request("ann", T0 + 10, 0.1, 0.0, ann)).await);
    assert_eq!((x.resource, x.dataset), (Resource::Epsilon, false));
    assert_eq!((x.spent, x.budget, x.cost), (1.0, 1.0, 0.1));

    // δ is capped on its own.
    let bob = budget(5.0, 1e-6, None);
    ledger
        .charge(request("bob", T0, 0.1, 6e-7, bob))
        .await
        .unwrap();
    let x = exhausted(ledger.charge(request("bob", T0 + 1, 0.1, 6e-7, bob)).await);
    assert_eq!(x.resource, Resource::Delta);

    // The dataset budget counts every analyst's spending, from the start:
    // ann 1.0 + bob 0.1 are already in it.
    let carl = budget(5.0, 0.0, None);
    let with_dataset = |at: i64| ChargeRequest {
        dataset: Some(budget(1.5, 1e-5, None)),
        ..request("carl", at, 0.1, 0.0, carl)
    };
    for i in 0..4 {
        ledger.charge(with_dataset(T0 + 20 + i)).await.unwrap();
    }
    let x = exhausted(ledger.charge(with_dataset(T0 + 30)).await);
    assert!(x.dataset, "{x:?}");
    assert!((x.spent - 1.5).abs() < 1e-9);

    // A grant extends ann's budget for good; a reset forgets her spending.
    let admin = |at_ms, outcome| AuditEntry {
        at_ms,
        user: "ann".into(),
        client: "admin".into(),
        statement: "budget".into(),
        backend_sql: None,
        cost: Amount::default(),
        rho: 0.0,
        outcome,
        code: None,
        detail: None,
        rows: None,
    };
    let grant = Amount {
        epsilon: 0.2,
        delta: 0.0,
    };
    ledger
        .adjust(
            "ann",
            Adjustment::Grant(grant),
            admin(T0 + 40, Outcome::Granted),
        )
        .await
        .unwrap();
    for i in 0..2 {
        ledger
            .charge(request("ann", T0 + 41 + i, 0.1, 0.0, ann))
            .await
            .unwrap();
    }
    exhausted(ledger.charge(request("ann", T0 + 43, 0.1, 0.0, ann)).await);
    let s = ledger.standing("ann", ann, T0 + 44).await.unwrap();
    assert_eq!(
        (s.limit.epsilon, s.spent.epsilon, s.queries),
        (1.2, 1.2, 12)
    );
    ledger
        .adjust("ann", Adjustment::Reset, admin(T0 + 50, Outcome::Reset))
        .await
        .unwrap();
    let s = ledger.standing("ann", ann, T0 + 51).await.unwrap();
    assert_eq!((s.limit.epsilon, s.spent.epsilon), (1.2, 0.0));
    ledger
        .charge(request("ann", T0 + 52, 1.2, 0.0, ann))
        .await
        .unwrap();

    // Under a one-day refresh window, spending older than a day expires.
    let dana = budget(1.0, 0.0, Some(1));
    ledger
        .charge(request("dana", T0, 0.5, 0.0, dana))
        .await
        .unwrap();
    ledger
        .charge(request("dana", T0 + DAY / 2, 0.5, 0.0, dana))
        .await
        .unwrap();
    let x = exhausted(
        ledger
            .charge(request("dana", T0 + DAY - 1, 0.1, 0.0, dana))
            .await,
    );
    assert!(x.refresh.is_some());
    // The window is (now − 1 day, now]: at T0 + DAY the first charge has left it.
    let c = ledger
        .charge(request("dana", T0 + DAY, 0.5, 0.0, dana))
        .await
        .unwrap();
    assert_eq!(c.remaining.epsilon, 0.0);
    let s = ledger.standing("dana", dana, LATER).await.unwrap();
    assert_eq!(s.spent.epsilon, 0.5);

    // A finished charge keeps its release for the same user only.
    // eve's release used Gaussian noise: its ρ is recorded beside the
    // (ε, δ) that covers it.
    let eve = budget(1.0, 1e-5, None);
    let mut gaussian = request("eve", T0, 0.1, 1e-6, eve);
    gaussian.entry.rho = 0.000_178_3;
    let c = ledger.charge(gaussian).await.unwrap();
    ledger
        .finish(Finish {
            audit_id: c.audit_id,
            outcome: Outcome::Answered,
            rows: Some(3),
            error: None,
            cache: Some(Release {
                user: "eve".into(),
                key: "k1".into(),
                at_ms: T0,
                body: "[1,2,3]".into(),
            }),
        })
        .await
        .unwrap();
    assert_eq!(
        ledger.cached("eve", "k1", T0).await.unwrap().as_deref(),
        Some("[1,2,3]")
    );
    assert_eq!(ledger.cached("ann", "k1", 0).await.unwrap(), None);
    assert_eq!(ledger.cached("eve", "k1", T0 + 1).await.unwrap(), None);

    // Queued entries reach the log; the log lists oldest first and filters.
    let mut note = admin(T0 + 60, Outcome::Refused);
    note.code = Some("42501".into());
    ledger.record(note).await;
    ledger.flush().await;
    let all = ledger
        .audit(AuditFilter {
            user: Some("ann".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    let outcomes: Vec<&str> = all.iter().map(|r| r.entry.outcome.as_str()).collect();
    assert_eq!(outcomes.len(), 16, "{outcomes:?}");
    assert_eq!(
        &outcomes[10..],
        ["granted", "charged", "charged", "reset", "charged", "refused"]
    );
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));
    let eve_log = ledger
        .audit(AuditFilter {
            user: Some("eve".into()),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(eve_log[0].entry.outcome, Outcome::Answered);
    assert_eq!(eve_log[0].entry.rows, Some(3));
    assert_eq!(eve_log[0].entry.cost.epsilon, 0.1);
    assert_eq!(eve_log[0].entry.cost.delta, 1e-6);
    assert_eq!(eve_log[0].entry.rho, 0.000_178_3);
    let recent = ledger
        .audit(AuditFilter {
            user: None,
            since_ms: Some(T0 + 50),
            limit: Some(2),
        })
        .await
        .unwrap();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[1].entry.outcome, Outcome::Refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_rules_hold_in_the_sqlite_ledger() {
    let dir = tempdir();
    let ledger = Ledger::open(&LedgerStore::Sqlite(dir.path().join("l.sqlite")))
        .await
        .unwrap();
    scenario(&ledger).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_rules_hold_in_the_postgres_ledger() {
    let (db, ledger) = postgres_ledger("ledger_rules").await;
    scenario(&ledger).await;
    // Opening again (a second replica) finds the tables and the spending.
    let again = Ledger::open(&LedgerStore::Postgres(cluster().url(&db)))
        .await
        .unwrap();
    let s = again
        .standing("dana", budget(1.0, 0.0, Some(1)), LATER)
        .await
        .unwrap();
    assert_eq!(s.spent.epsilon, 0.5);
}

/// A charge that ends early — refused for its budget, or failing in
/// its writes — must end its transaction: the charge's first flight
/// locks the accounts, and a connection pooled with them still locked
/// would stall every replica's charges until the lock timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_that_ends_early_leaves_no_lock_behind_in_the_postgres_ledger() {
    let db = empty_database("ledger_locks").await;
    let store = LedgerStore::Postgres(cluster().url(&db));
    let (a, b) = (
        Ledger::open(&store).await.unwrap(),
        Ledger::open(&store).await.unwrap(),
    );
    let erin = budget(1.0, 0.0, None);
    let finn = budget(10.0, 0.0, None);
    // Replica b charges within a bound far below the 30 s lock timeout.
    let charge_on_b = |at_ms: i64| {
        let b = &b;
        async move {
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                b.charge(request("finn", at_ms, 0.01, 0.0, finn)),
            )
            .await
            .expect("a charge on the other replica waited for a lock left behind")
            .unwrap()
        }
    };
    a.charge(request("erin", T0, 0.9, 0.0, erin)).await.unwrap();
    // Refused after the accounts were locked and read.
    exhausted(a.charge(request("erin", T0 + 1, 0.5, 0.0, erin)).await);
    charge_on_b(T0 + 2).await;
    // Failing in the second flight: PostgreSQL text cannot hold NUL.
    let mut bad = request("erin", T0 + 3, 0.05, 0.0, erin);
    bad.entry.statement = "SELECT COUNT(*) FROM visits -- \0".into();
    match a.charge(bad).await {
        Err(LedgerError::Storage(_)) => {}
        other => panic!("expected a storage error, got {other:?}"),
    }
    charge_on_b(T0 + 4).await;
    // Neither spent anything, and replica a's connections still charge.
    assert_spent(&a, "erin", erin, T0 + 5, 0.9).await;
    for i in 0..10 {
        a.charge(request("erin", T0 + 6 + i, 0.001, 0.0, erin))
            .await
            .unwrap();
    }
    charge_on_b(T0 + 20).await;
}

/// A charge abandoned while it waits for the dataset account's lock (its
/// client gone) is cancelled in the server: its session must not stay
/// behind, waiting, outside the pool's bound — a client disconnecting
/// over and over would otherwise fill the ledger server's connections.
/// Over a plaintext connection and over TLS (`verify-full`), where the
/// cancel request must be sent over TLS too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_charge_leaves_no_session_waiting_in_the_postgres_ledger() {
    let ca = cluster().ca.display().to_string();
    for tls in ["", "?sslmode=verify-full&sslrootcert="] {
        let db = empty_database("ledger_abandoned").await;
        let url = match tls {
            "" => cluster().url(&db),
            _ => format!("{}{tls}{ca}", cluster().url(&db)),
        };
        abandoned_charges_leave_no_session_waiting(&db, &url).await;
    }
}

async fn abandoned_charges_leave_no_session_waiting(db: &str, url: &str) {
    let ledger = Ledger::open(&LedgerStore::Postgres(url.to_string()))
        .await
        .unwrap();
    let gus = budget(10.0, 0.0, None);
    ledger
        .charge(request("gus", T0, 0.1, 0.0, gus))
        .await
        .unwrap();
    // Another replica's charge holds the dataset account's lock.
    let mut holder = connect_direct(&cluster().url(db)).await;
    let held = holder.transaction().await.unwrap();
    held.batch_execute(r#"SELECT 1 FROM dpgate_ledger.accounts WHERE "user" = '' FOR UPDATE"#)
        .await
        .unwrap();
    for i in 0..12 {
        let abandoned = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            ledger.charge(request("gus", T0 + 1 + i, 0.1, 0.0, gus)),
        )
        .await;
        assert!(abandoned.is_err(), "the charge waited for the lock");
    }
    let waiting = || async {
        connect_direct(&cluster().url("postgres"))
            .await
            .query_one(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 \
                 AND application_name = 'dpgate-ledger' AND wait_event_type = 'Lock'",
                &[&db],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while waiting().await > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        waiting().await,
        0,
        "abandoned charges still wait in the server"
    );
    held.rollback().await.unwrap();
    // The ledger still charges, and no abandoned charge was half-done.
    ledger
        .charge(request("gus", T0 + 20, 0.1, 0.0, gus))
        .await
        .unwrap();
    assert_spent(&ledger, "gus", gus, T0 + 21, 0.2).await;
}

/// Statements kept prepared bind the parameter types the ledger names,
/// as when it ran them unnamed: a ledger table whose column a database
/// administrator changed (here `audit.rows` to `integer`) still takes
/// every charge and outcome, and what the accounts say was spent is what
/// the charges add up to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_ledger_statements_keep_their_parameter_types() {
    let (db, ledger) = postgres_ledger("ledger_types").await;
    connect_direct(&cluster().url(&db))
        .await
        .batch_execute(r#"ALTER TABLE dpgate_ledger.audit ALTER COLUMN "rows" TYPE integer"#)
        .await
        .unwrap();
    let hal = budget(10.0, 0.0, None);
    for i in 0..6 {
        let mut r = request("hal", T0 + i, 0.1, 0.0, hal);
        r.entry.rows = Some(i);
        let charge = ledger.charge(r).await.unwrap();
        ledger
            .finish(Finish {
                audit_id: charge.audit_id,
                outcome: Outcome::Answered,
                rows: Some(3),
                error: None,
                cache: None,
            })
            .await
            .unwrap();
    }
    let direct = connect_direct(&cluster().url(&db)).await;
    let sums = direct
        .query_one(
            r#"SELECT (SELECT spent_nano FROM dpgate_ledger.accounts WHERE "user" = 'hal'),
                      (SELECT SUM(epsilon_nano)::bigint FROM dpgate_ledger.charges WHERE "user" = 'hal')"#,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(sums.get::<_, i64>(0), 600_000_000);
    assert_eq!(sums.get::<_, i64>(1), 600_000_000);
}
