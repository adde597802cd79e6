//! Budgets through dpgate: racing connections and processes, kill -9,
//! free repeats, the admin CLI against a running proxy, and SIGHUP reload.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Each racer's queries differ, so none is a free repeat of another.
fn distinct_query(i: usize) -> String {
    format!("SELECT COUNT(*) FROM visits WHERE cost > {i}")
}

/// `clients` connections (round-robin over `urls`) each send `per_client`
/// distinct queries at once; returns (answered, refused for budget).
async fn race(urls: &[String], clients: usize, per_client: usize) -> (usize, usize) {
    // A client that cannot connect never reaches the barrier: fail, don't hang.
    tokio::time::timeout(
        std::time::Duration::from_secs(120),
        race_once(urls, clients, per_client),
    )
    .await
    .expect("the race did not finish within 120 s (a client could not connect?)")
}

async fn race_once(urls: &[String], clients: usize, per_client: usize) -> (usize, usize) {
    let barrier = Arc::new(tokio::sync::Barrier::new(clients));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (url, barrier) = (urls[c % urls.len()].clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            let (client, _n) = connect_collecting(&url).await.unwrap();
            barrier.wait().await;
            let (mut answered, mut refused) = (0, 0);
            for j in 0..per_client {
                match client
                    .simple_query(&distinct_query(c * per_client + j))
                    .await
                {
                    Ok(_) => answered += 1,
                    Err(e) if e.code().map(|c| c.code()) == Some("53000") => refused += 1,
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
            (answered, refused)
        }));
    }
    let mut total = (0, 0);
    for t in tasks {
        let (a, r) = t.await.unwrap();
        total = (total.0 + a, total.1 + r);
    }
    total
}

fn json(text: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(text)
        .unwrap_or_else(|e| panic!("{e}: {text}"))
        .as_array()
        .unwrap()
        .clone()
}

/// The `budget show --format json` entry of `account`.
fn account(gate: &Dpgate, account: &str) -> Value {
    json(&gate.cli(&["budget", "show", "--format", "json"]))
        .into_iter()
        .find(|a| a["account"] == account)
        .unwrap_or_else(|| panic!("no account {account}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_connections_cannot_overspend_one_budget() {
    // Budget 1.0 at ε = 0.1: exactly ten answers, however the race goes.
    let (db, _dir, gate) = gate_over_visits("race_sqlite", 300, 1.0, 0.1).await;
    let url = gate.url("analyst", PASSWORD);
    let (answered, refused) = race(&[url], 64, 2).await;
    assert_eq!((answered, refused), (10, 118));
    let a = account(&gate, "analyst");
    assert_eq!(
        (a["epsilon_spent"].as_f64(), a["queries"].as_i64()),
        (Some(1.0), Some(10))
    );
    // Only the ten charged queries reached the data.
    assert_eq!(cluster().logged(&db, "__dp_rows"), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dpgate_processes_share_one_postgres_ledger() {
    let (db, _) = visits_database("race_pg", 300).await;
    let ledger_db = empty_database("race_ledger").await;
    let (dir_a, dir_b) = (tempdir(), tempdir());
    let (port_a, port_b) = (free_port(), free_port());
    let config = |port: u16, dir: &tempfile::TempDir| {
        proxy_toml(&db, port, &dir.path().join("unused.sqlite"), 1.0, 0.1).replace(
            &format!("path = \"{}\"", dir.path().join("unused.sqlite").display()),
            &format!("url = \"{}\"", cluster().url(&ledger_db)),
        )
    };
    let gate_a = Dpgate::start(dir_a.path(), &config(port_a, &dir_a), port_a);
    let gate_b = Dpgate::start(dir_b.path(), &config(port_b, &dir_b), port_b);
    let urls = [
        gate_a.url("analyst", PASSWORD),
        gate_b.url("analyst", PASSWORD),
    ];
    let (answered, refused) = race(&urls, 64, 2).await;
    assert_eq!((answered, refused), (10, 118));
    assert!(!dir_a.path().join("unused.sqlite").exists());
    // Either process's CLI sees the one shared ledger.
    for gate in [&gate_a, &gate_b] {
        let a = account(gate, "analyst");
        assert_eq!(
            (a["epsilon_spent"].as_f64(), a["queries"].as_i64()),
            (Some(1.0), Some(10))
        );
    }
    assert_eq!(cluster().logged(&db, "__dp_rows"), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_answer() {
    let (db, _) = visits_database("kill9", 300).await;
    let dir = tempdir();
    let port = free_port();
    let config = proxy_toml(&db, port, &dir.path().join("l.sqlite"), 1000.0, 0.01);
    let mut gate = Dpgate::start(dir.path(), &config, port);
    let url = gate.url("analyst", PASSWORD);
    let mut tasks = Vec::new();
    for c in 0..6usize {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let (client, _n) = connect_collecting(&url).await.unwrap();
            let mut received = Vec::new();
            // Bounded: at most 2000 queries per client, or until dpgate dies.
            for n in 0..2000usize {
                let sql = distinct_query(10_000 * (c + 1) + n);
                match client.simple_query(&sql).await {
                    Ok(_) => received.push(sql),
                    Err(_) => break,
                }
            }
            received
        }));
    }
    // Let the load run, then kill -9 while queries are in flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    gate.kill9();
    let mut received = Vec::new();
    for t in tasks {
        received.extend(t.await.unwrap());
    }
    assert!(
        received.len() >= 20,
        "only {} answers under load",
        received.len()
    );
    assert!(received.len() < 12_000, "dpgate was not killed under load");

    let gate = Dpgate::start(dir.path(), &config, port);
    let log = json(&gate.cli(&["audit", "--user", "analyst", "--format", "json"]));
    let answered: HashSet<&str> = log
        .iter()
        .filter(|e| e["outcome"] == "answered" && e["epsilon"].as_f64() == Some(0.01))
        .map(|e| e["statement"].as_str().unwrap())
        .collect();
    for sql in &received {
        assert!(
            answered.contains(sql.as_str()),
            "{sql} was answered but is not in the audit log"
        );
    }
    // The ledger's total is exactly its charges: those answered plus any
    // charged in flight when dpgate died.
    let charged = log
        .iter()
        .filter(|e| e["epsilon"].as_f64() == Some(0.01))
        .count();
    let a = account(&gate, "analyst");
    assert_eq!(a["queries"].as_i64(), Some(charged as i64));
    assert!(charged >= received.len() && charged <= received.len() + 6);
    let spent = a["epsilon_spent"].as_f64().unwrap();
    assert!(
        (spent - 0.01 * charged as f64).abs() < 1e-9,
        "{spent} vs {charged}"
    );
}

/// The `dp.budget` left, as SHOW reports it.
async fn left(client: &Client) -> String {
    simple_row(client, "SHOW dp.budget").await[0]
        .clone()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_is_free_and_a_changed_parameter_or_epsilon_is_charged() {
    let (db, _dir, gate) = gate_over_visits("cache", 300, 5.0, 0.1).await;
    let (client, mut notices) = gate.connect().await;
    let sql = "SELECT ward, COUNT(*) AS n, AVG(cost) FROM visits WHERE age > 30 GROUP BY ward";
    let first = simple_rows(&client, sql).await.unwrap();
    assert!(notices.recv().await.unwrap().contains("cost ε = 0.1"));
    assert_eq!(left(&client).await, "4.9");
    let backend = cluster().logged(&db, "__dp_rows");

    // The same query, spelled differently: the same rows, no charge, no backend query.
    let respelled =
        "select ward, count(*) as n,  avg(cost)\n  from VISITS where AGE > 30 group by WARD";
    for q in [sql, respelled] {
        assert_eq!(simple_rows(&client, q).await.unwrap(), first);
        let notice = notices.recv().await.unwrap();
        assert!(
            notice.contains("repeats an earlier release") && notice.contains("4.9 of ε = 5"),
            "{notice}"
        );
    }
    assert_eq!(left(&client).await, "4.9");
    assert_eq!(cluster().logged(&db, "__dp_rows"), backend);

    // A bound parameter: the same value repeats, a new value is charged.
    let stmt = "SELECT COUNT(*) FROM visits WHERE age > $1";
    let a: i64 = client.query_one(stmt, &[&40i64]).await.unwrap().get(0);
    assert_eq!(left(&client).await, "4.8");
    let again: i64 = client.query_one(stmt, &[&40i64]).await.unwrap().get(0);
    assert_eq!((a, left(&client).await.as_str()), (again, "4.8"));
    client.query_one(stmt, &[&41i64]).await.unwrap();
    assert_eq!(left(&client).await, "4.7");

    // A different ε is a different release.
    client.batch_execute("SET dp.epsilon = 0.2").await.unwrap();
    simple_rows(&client, sql).await.unwrap();
    assert_eq!(left(&client).await, "4.5");
    client.batch_execute("RESET dp.epsilon").await.unwrap();
    simple_rows(&client, sql).await.unwrap();
    assert_eq!(left(&client).await, "4.5");

    // Releases are per analyst: the audit shows them as cached, at no cost.
    let log = json(&gate.cli(&["audit", "--format", "json"]));
    let cached: Vec<&Value> = log.iter().filter(|e| e["outcome"] == "cached").collect();
    assert_eq!(cached.len(), 4);
    assert!(cached
        .iter()
        .all(|e| e["epsilon"].as_f64() == Some(0.0) && e["rows"].as_i64() >= Some(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_cli_grants_resets_and_audits_a_running_dpgate() {
    let (db, _) = visits_database("admin", 300).await;
    let dir = tempdir();
    let port = free_port();
    let config = proxy_toml(&db, port, &dir.path().join("l.sqlite"), 1.0, 0.1)
        .replace("delta = 1e-6", "delta = 1e-6\ndataset_epsilon_budget = 1.5")
        + r#"[[users]]
name = "bob"
password = "env:DPGATE_TEST_PASSWORD"
epsilon_budget = 1.0
"#;
    // [[users]] after [[tables]] is still a users entry in TOML.
    let gate = Dpgate::start(dir.path(), &config, port);
    let (analyst, _n) = gate.connect().await;
    let (bob, _m) = connect_collecting(&gate.url("bob", PASSWORD))
        .await
        .unwrap();
    for i in 0..10 {
        simple_rows(&analyst, &distinct_query(i)).await.unwrap();
    }
    let (code, message, _) = refusal(&analyst, &distinct_query(10)).await;
    assert_eq!(code, "53000", "{message}");
    // Bob has his own budget, but the dataset's 1.5 is shared.
    for i in 0..5 {
        simple_rows(&bob, &distinct_query(100 + i)).await.unwrap();
    }
    let (code, message, hint) = refusal(&bob, &distinct_query(105)).await;
    assert_eq!(code, "53000");
    assert!(
        message.contains("dataset") && hint.contains("data owner"),
        "{message}"
    );
    // What the other analysts left is not Bob's to know.
    assert!(
        !message.contains("remain") && !message.contains("1.5"),
        "{message}"
    );
    let shown = gate.cli(&["budget", "show"]);
    assert!(
        shown.contains("analyst") && shown.contains("(dataset)"),
        "{shown}"
    );
    assert_eq!(
        account(&gate, "(dataset)")["epsilon_spent"].as_f64(),
        Some(1.5)
    );

    // Grants apply to the next query without a restart.
    gate.cli(&["budget", "grant", "--dataset", "--epsilon", "1"]);
    let out = gate.cli(&["budget", "grant", "--user", "analyst", "--epsilon", "0.3"]);
    assert!(out.contains("ε 0.3 of 1.3 left"), "{out}");
    for i in 11..14 {
        simple_rows(&analyst, &distinct_query(i)).await.unwrap();
    }
    assert_eq!(refusal(&analyst, &distinct_query(14)).await.0, "53000");
    gate.cli(&["budget", "reset", "--user", "analyst"]);
    assert_eq!(left(&analyst).await, "1.3");
    simple_rows(&analyst, &distinct_query(15)).await.unwrap();

    // The audit log has every statement: answers, refusals, admin changes.
    let log = json(&gate.cli(&["audit", "--user", "analyst", "--format", "json"]));
    let count = |outcome: &str| log.iter().filter(|e| e["outcome"] == outcome).count();
    let charged = log
        .iter()
        .filter(|e| e["epsilon"].as_f64() == Some(0.1))
        .count();
    assert_eq!(charged, 14);
    assert!(count("answered") >= 14);
    assert_eq!((count("granted"), count("reset")), (1, 1));
    assert!(count("refused") >= 2);
    let refused = log.iter().find(|e| e["outcome"] == "refused").unwrap();
    assert_eq!(refused["sqlstate"], "53000");
    assert!(refused["detail"].as_str().unwrap().contains("budget"));
    let answered = log
        .iter()
        .find(|e| e["outcome"] == "answered" && e["epsilon"].as_f64() == Some(0.1))
        .unwrap();
    assert!(answered["client"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(answered["backend_sql"]
        .as_str()
        .unwrap()
        .contains("__dp_rows"));
    assert_eq!(answered["epsilon"].as_f64(), Some(0.1));
    assert_eq!(answered["rows"].as_i64(), Some(1));
    assert_eq!(
        json(&gate.cli(&["audit", "--limit", "3", "--format", "json"])).len(),
        3
    );
    let table = gate.cli(&["audit", "--since", "1h", "--user", "bob"]);
    assert!(
        table.contains("refused") && table.contains("53000"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .skip(1)
            .all(|l| l.split_whitespace().nth(2) == Some("bob")),
        "{table}"
    );
    assert_eq!(
        json(&gate.cli(&[
            "audit",
            "--since",
            "2099-01-01T00:00:00Z",
            "--format",
            "json"
        ]))
        .len(),
        0
    );
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spending_expires_after_the_refresh_window() {
    let (db, _) = visits_database("refresh", 300).await;
    let dir = tempdir();
    let port = free_port();
    let config = proxy_toml(&db, port, &dir.path().join("l.sqlite"), 0.2, 0.1).replace(
        "epsilon_budget = 0.2",
        "epsilon_budget = 0.2\nrefresh = \"3s\"",
    );
    let gate = Dpgate::start(dir.path(), &config, port);
    let (client, _n) = gate.connect().await;
    let start = Instant::now();
    simple_rows(&client, &distinct_query(1)).await.unwrap();
    simple_rows(&client, &distinct_query(2)).await.unwrap();
    let (code, message, _) = refusal(&client, &distinct_query(3)).await;
    assert_eq!(code, "53000");
    assert!(message.contains("in the last 3s"), "{message}");
    tokio::time::sleep(
        Duration::from_secs(3).saturating_sub(start.elapsed()) + Duration::from_millis(200),
    )
    .await;
    simple_rows(&client, &distinct_query(3)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_users_tables_and_budgets_without_dropping_connections() {
    let db = hospital_database("reload", 300).await;
    let dir = tempdir();
    let port = free_port();
    let ledger = dir.path().join("l.sqlite");
    let gate = Dpgate::start(dir.path(), &proxy_toml(&db, port, &ledger, 1.0, 0.1), port);
    let (client, _n) = gate.connect().await;
    simple_rows(&client, &distinct_query(1)).await.unwrap();
    assert_eq!(
        refusal(&client, "SELECT COUNT(*) FROM patients").await.0,
        "42P01"
    );
    assert!(connect_collecting(&gate.url("bob", PASSWORD))
        .await
        .is_err());

    // New tables, a new user, a bigger budget.
    let grown = hospital_toml(&db, port, &ledger, 3.0, 0.1)
        + "[[users]]\nname = \"bob\"\npassword = \"env:DPGATE_TEST_PASSWORD\"\nepsilon_budget = 1.0\n";
    std::fs::write(gate.config_path(), &grown).unwrap();
    gate.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .simple_query("SELECT COUNT(*) FROM patients")
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the reload did not apply: {}",
            gate.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same connection sees the new budget, with what it spent kept.
    assert_eq!(left(&client).await, "2.8");
    let (bob, _m) = connect_collecting(&gate.url("bob", PASSWORD))
        .await
        .unwrap();
    simple_rows(&bob, "SELECT COUNT(*) FROM visits")
        .await
        .unwrap();
    let tables = simple_rows(
        &client,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    )
    .await
    .unwrap();
    assert_eq!(
        tables.concat(),
        [
            Some("patients".into()),
            Some("visits".into()),
            Some("wards".into())
        ]
    );

    // An invalid file is logged and ignored: the running config stays.
    std::fs::write(gate.config_path(), "[[users]\nname = ").unwrap();
    gate.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gate.log.lock().unwrap().contains("was not reloaded") {
        assert!(
            Instant::now() < deadline,
            "no log line for the invalid file"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    simple_rows(&client, "SELECT COUNT(*) FROM patients")
        .await
        .unwrap();
    assert!(connect_collecting(&gate.url("bob", PASSWORD)).await.is_ok());
    // That was a repeat of the first COUNT over patients: free.
    assert_eq!(left(&client).await, "2.8");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_is_budgeted_apart_from_epsilon() {
    let db = hospital_database("delta", 300).await;
    let dir = tempdir();
    let port = free_port();
    // δ = 1e-6 per query whose keys pass partition selection; 1.5e-6 in all.
    let config = hospital_toml(&db, port, &dir.path().join("l.sqlite"), 5.0, 0.1).replace(
        "epsilon_budget = 5",
        "epsilon_budget = 5\ndelta_budget = 1.5e-6",
    );
    let gate = Dpgate::start(dir.path(), &config, port);
    let (client, mut notices) = gate.connect().await;
    simple_rows(
        &client,
        "SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis",
    )
    .await
    .unwrap();
    let notice = notices.recv().await.unwrap();
    assert!(
        notice.contains("δ = 1e-6") && notice.contains("5e-7 of δ = 1.5e-6"),
        "{notice}"
    );
    let (code, message, hint) = refusal(
        &client,
        "SELECT diagnosis, AVG(age) FROM visits GROUP BY diagnosis",
    )
    .await;
    assert_eq!(code, "53000");
    assert!(
        message.contains("costs δ = 1e-6") && hint.contains("declare"),
        "{message} / {hint}"
    );
    // Keys from a declared domain cost no δ.
    simple_rows(&client, "SELECT ward, AVG(age) FROM visits GROUP BY ward")
        .await
        .unwrap();
    let a = account(&gate, "analyst");
    assert_eq!(a["queries"].as_i64(), Some(2));
    assert_eq!(a["delta_spent"].as_f64(), Some(1e-6));
    // Session commands and catalog queries are audited too, at no cost.
    client
        .batch_execute("SET application_name = 'audit-me'")
        .await
        .unwrap();
    simple_rows(&client, "SELECT relname FROM pg_class LIMIT 1")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = json(&gate.cli(&["audit", "--format", "json"]));
        let seen = |outcome: &str, text: &str| {
            log.iter()
                .any(|e| e["outcome"] == outcome && e["statement"].as_str().unwrap().contains(text))
        };
        if seen("ok", "audit-me") && seen("answered", "pg_class") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "session and catalog statements not audited"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `SET dp.target_error`: the answer is charged the least ε that makes its
/// interval that narrow, and says so; a target the budget cannot buy is
/// refused before anything is charged, saying what it would take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accuracy_first_queries_spend_the_least_epsilon() {
    let (_db, _dir, gate) = gate_over_visits("target", 300, 1.0, 0.1).await;
    let (client, mut notices) = gate.connect().await;
    client
        .batch_execute("SET dp.target_error = 50")
        .await
        .unwrap();
    let shown = client.simple_query("SHOW dp.target_error").await.unwrap();
    let SimpleQueryMessage::Row(row) = &shown[1] else {
        panic!("{shown:?}")
    };
    assert_eq!(row.get(0), Some("50"));
    let explain = client
        .simple_query("EXPLAIN SELECT COUNT(*) FROM visits")
        .await
        .unwrap();
    let lines: Vec<String> = explain
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Target: ε = ") && l.contains("'50'")),
        "{lines:?}"
    );
    client
        .simple_query("SELECT COUNT(*) FROM visits")
        .await
        .unwrap();
    let notice = notices.recv().await.unwrap();
    assert!(
        notice.contains("is the least that meets dp.target_error = '50'"),
        "{notice}"
    );
    let width: f64 = notice
        .split("count ±")
        .nth(1)
        .and_then(|t| t.split(|c: char| !(c.is_ascii_digit() || c == '.')).next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{notice}"));
    assert!(width <= 50.0, "{notice}");
    // ε ≈ 5 · ln 20 / 50 ≈ 0.3 of the budget of 1 is spent; a target
    // ten times tighter needs about 3, more than is left.
    client
        .batch_execute("SET dp.target_error = 5")
        .await
        .unwrap();
    let err = client
        .simple_query("SELECT COUNT(*) FROM visits")
        .await
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "22023");
    assert!(
        db.message().contains("needs about ε =") && db.message().contains("left in your budget"),
        "{}",
        db.message()
    );
    client.batch_execute("RESET dp.target_error").await.unwrap();
    let err = client
        .batch_execute("SET dp.target_error = 'count:'")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22023");
}

/// The SQLite ledger (budgets, every statement) and the embedded SQLite
/// copy of the CSV data (the private rows) are readable by dpgate's user
/// only, WAL files included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_and_data_files_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let (db, _) = visits_database("owneronly", 50).await;
    let dir = tempdir();
    let port = free_port();
    let ledger = dir.path().join("l.sqlite");
    let text = sqlite_toml(
        &proxy_toml(&db, port, &ledger, 5.0, 0.1),
        &db,
        &["visits"],
        dir.path(),
    )
    .await;
    let gate = Dpgate::start(dir.path(), &text, port);
    let (client, _notices) = gate.connect().await;
    client
        .simple_query("SELECT COUNT(*) FROM visits")
        .await
        .unwrap();
    for file in ["l.sqlite", "l.sqlite-wal", "data.db"] {
        let path = dir.path().join(file);
        assert_eq!(mode(&path), 0o600, "{}", path.display());
    }
}

/// The audit log cannot be flooded or forged on screen: a statement far
/// over the size limit is refused (54001, nothing charged) and recorded by
/// its first 16 KiB and its length, and `dpgate audit` prints control
/// characters escaped, so a query cannot clear the data owner's terminal
/// or overwrite the lines above it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_bounded_and_printed_safely() {
    let (_db, _dir, gate) = gate_over_visits("auditsafe", 30, 5.0, 0.1).await;
    let (client, _notices) = gate.connect().await;
    let huge = format!("SELECT COUNT(*) FROM visits -- {}", "x".repeat(3 << 20));
    let err = client.simple_query(&huge).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "54001");
    client
        .simple_query("SELECT COUNT(*) FROM visits /* \u{1b}[2J\u{1b}[1A\u{202e} hidden */")
        .await
        .unwrap();
    // Refusals are written in batches: wait until both entries are in.
    let mut log = Vec::new();
    for _ in 0..50 {
        log = json(&gate.cli(&["audit", "--format", "json"]));
        if log.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = log
        .iter()
        .find(|e| e["sqlstate"] == "54001")
        .unwrap_or_else(|| {
            panic!(
                "the refusal is recorded: {:?}",
                log.iter()
                    .map(|e| (&e["sqlstate"], &e["outcome"]))
                    .collect::<Vec<_>>()
            )
        });
    let text = refused["statement"].as_str().unwrap();
    assert!(text.len() < 17 * 1024, "{} bytes kept", text.len());
    assert!(
        text.contains(&format!("{} bytes in all", huge.len())),
        "{}",
        &text[text.len() - 80..]
    );
    // JSON stays exact; the table escapes.
    assert!(log
        .iter()
        .any(|e| e["statement"].as_str().unwrap().contains('\u{1b}')));
    let table = gate.cli(&["audit"]);
    assert!(
        !table.contains('\u{1b}') && !table.contains('\u{202e}'),
        "{table:?}"
    );
    assert!(table.contains("\\u{1b}[2J"), "{table}");
}

/// The audit log can be pruned (`dpgate audit prune --before`, or
/// `[audit] retention` at start and hourly); charges — what was spent —
/// are never pruned, and each prune is itself recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_is_pruned_but_spending_is_not() {
    let (db, _) = visits_database("prune", 30).await;
    let dir = tempdir();
    let port = free_port();
    let text = proxy_toml(&db, port, &dir.path().join("l.sqlite"), 5.0, 0.1)
        + "[cache]\nenabled = false\n";
    let gate = Dpgate::start(dir.path(), &text, port);
    let (client, _notices) = gate.connect().await;
    for _ in 0..3 {
        client
            .simple_query("SELECT COUNT(*) FROM visits")
            .await
            .unwrap();
    }
    let out = gate.cli(&["audit", "prune", "--before", "0s"]);
    assert!(out.contains("pruned 3 audit entries"), "{out}");
    let log = json(&gate.cli(&["audit", "--format", "json"]));
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0]["user"], "(dpgate)");
    let spent = json(&gate.cli(&["budget", "show", "--format", "json"]));
    let analyst = spent.iter().find(|a| a["account"] == "analyst").unwrap();
    assert!(
        (analyst["epsilon_spent"].as_f64().unwrap() - 0.3).abs() < 1e-9,
        "{analyst}"
    );

    // A retention of one second prunes at the next start.
    drop(client);
    let mut gate = gate;
    gate.kill9();
    let config =
        std::fs::read_to_string(gate.config_path()).unwrap() + "[audit]\nretention = \"1s\"\n";
    std::fs::write(gate.config_path(), config).unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let path = gate.config_path();
    let restarted = Dpgate::run(
        &gate.dir,
        &["serve", "--config", path.to_str().unwrap()],
        port,
    );
    let mut log = Vec::new();
    for _ in 0..50 {
        log = json(&restarted.cli(&["audit", "--format", "json"]));
        if log.iter().any(|e| {
            e["client"]
                .as_str()
                .unwrap_or("")
                .starts_with("audit.retention")
        }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        log.iter().all(|e| e["user"] == "(dpgate)"),
        "only prune records remain: {log:?}"
    );
    let spent = json(&restarted.cli(&["budget", "show", "--format", "json"]));
    let analyst = spent.iter().find(|a| a["account"] == "analyst").unwrap();
    assert!((analyst["epsilon_spent"].as_f64().unwrap() - 0.3).abs() < 1e-9);
}

/// A SQLite ledger on a disk with less free space than
/// `ledger.min_free_mib` draws a warning at start (and hourly): a full
/// disk would fail every charge. Here the threshold is set above any disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_disk_running_low_is_reported() {
    let (db, _) = visits_database("lowdisk", 10).await;
    let dir = tempdir();
    let port = free_port();
    let ledger = dir.path().join("l.sqlite");
    let text = proxy_toml(&db, port, &ledger, 5.0, 0.1).replace(
        &format!("path = \"{}\"", ledger.display()),
        &format!(
            "path = \"{}\"\nmin_free_mib = 1000000000000",
            ledger.display()
        ),
    );
    assert!(text.contains("min_free_mib"));
    let gate = Dpgate::start(dir.path(), &text, port);
    let mut seen = String::new();
    for _ in 0..50 {
        seen = gate.log.lock().unwrap().clone();
        if seen.contains("less than ledger.min_free_mib") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(seen.contains("less than ledger.min_free_mib"), "{seen}");
}
