//! Synthetic rows through a real dpgate over a real PostgreSQL: row-level
//! SELECTs answered from one fit charged once to the dataset, free and
//! identical for every analyst, kept across a restart; aggregates still
//! private; the refusal without the declaration; `dpgate synth`.

mod common;

use common::*;
use serde_json::Value;

const SETTINGS: &str = "epsilon = 1\nrows = 2000\nmax_rows = 50\nbins = 8";

/// The hospital with synthetic `visits` and a second analyst.
fn config(db: &str, port: u16, dir: &std::path::Path) -> String {
    with_synthetic(
        &hospital_toml(db, port, &dir.join("l.sqlite"), 5.0, 0.1),
        SETTINGS,
    ) + "[[users]]\nname = \"second\"\npassword = \"env:DPGATE_TEST_PASSWORD\"\nepsilon_budget = 1\n"
}

/// Waits until `visits`' synthetic rows answer psql (the start-up fit).
fn fitted(gate: &Dpgate) {
    wait_for_synthetic(|| {
        let (_, err, ok) = gate.psql(&["-c", "SELECT * FROM visits LIMIT 1"]);
        (ok, err)
    });
}

/// The audit log as JSON entries.
fn audit(gate: &Dpgate) -> Vec<Value> {
    let text = gate.cli(&["audit", "--format", "json", "--limit", "1000"]);
    match serde_json::from_str(&text).unwrap() {
        Value::Array(a) => a,
        other => panic!("{other}"),
    }
}

fn fits(gate: &Dpgate) -> Vec<Value> {
    audit(gate)
        .into_iter()
        .filter(|e| e["user"] == "dpgate:synthetic")
        .collect()
}

async fn rows_of(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    simple_rows(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e} {:?}", e.as_db_error()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_selects_read_one_fit_charged_once_to_the_dataset() {
    let db = hospital_database("synthetic", 400).await;
    let dir = tempdir();
    let port = free_port();
    let gate = Dpgate::start(dir.path(), &config(&db, port, dir.path()), port);
    // The fit starts with dpgate; until it is done, queries are refused.
    let (_, err, ok) = gate.psql(&["-c", "SELECT * FROM visits LIMIT 10"]);
    assert!(ok || err.contains("being fitted"), "{err}");
    fitted(&gate);

    // psql: ten rows of the declared columns, with the NOTICE.
    let (out, err, ok) = gate.psql(&["-c", "SELECT * FROM visits LIMIT 10"]);
    assert!(ok, "{err}");
    assert!(out.contains("(10 rows)"), "{out}");
    for column in ["age", "ward", "cost", "visit_date", "diagnosis"] {
        assert!(out.lines().next().unwrap().contains(column), "{out}");
    }
    assert!(!out.contains("secret"), "{out}");
    assert!(
        err.contains("these rows are synthetic") && err.contains("no row is a real person"),
        "{err}"
    );
    assert!(err.contains("ε = 1"), "{err}");
    assert!(
        !err.contains("not modelled"),
        "every column is modelled: {err}"
    );
    let fitted = fits(&gate);
    assert_eq!(fitted.len(), 1, "{fitted:?}");
    assert_eq!(fitted[0]["outcome"], "answered");
    assert_eq!(fitted[0]["epsilon"].as_f64(), Some(1.0));

    // Without LIMIT: max_rows rows (DBeaver's data tab); filters, order
    // and parameters apply to the synthetic rows, in PostgreSQL.
    let (client, _notices) = gate.connect().await;
    let all = rows_of(&client, "SELECT * FROM public.visits").await;
    assert_eq!(all.len(), 50);
    let old: Vec<i64> = client
        .query(
            "SELECT age FROM visits WHERE age >= $1 ORDER BY age DESC LIMIT 20",
            &[&80i64],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, i64>(0))
        .collect();
    assert!(!old.is_empty() && old.iter().all(|&a| a >= 80), "{old:?}");
    assert!(old.windows(2).all(|w| w[0] >= w[1]), "{old:?}");
    let (_, _, analyst_before) = standing(&gate, "analyst");

    // Aggregates stay private and cost ε; the synthetic rows cost nothing.
    let count = rows_of(&client, "SELECT COUNT(*) FROM visits").await;
    let (_, _, analyst_after) = standing(&gate, "analyst");
    assert!(
        analyst_after < analyst_before,
        "{analyst_before} {analyst_after}"
    );
    let exact: i64 = connect_direct(&cluster().url(&db))
        .await
        .query_one("SELECT COUNT(*) FROM visits", &[])
        .await
        .unwrap()
        .get(0);
    let noisy: f64 = count[0][0].as_deref().unwrap().parse().unwrap();
    // ε = 0.1, k = 5: noise of scale 50; 600 is twelve scales.
    assert!((noisy - exact as f64).abs() < 600.0, "{noisy} vs {exact}");

    // EXPLAIN says what the rows are, and runs nothing.
    let plan = rows_of(&client, "EXPLAIN SELECT * FROM visits WHERE age > 3").await;
    let text: Vec<String> = plan.into_iter().map(|r| r[0].clone().unwrap()).collect();
    assert!(text[0].contains("no row is a real person"), "{text:?}");
    assert!(
        text.iter().any(|l| l.contains("Cost to you: nothing")),
        "{text:?}"
    );

    // A second analyst sees the same rows for free; still one fit.
    let second = connect_collecting(&gate.url("second", PASSWORD))
        .await
        .unwrap()
        .0;
    let theirs = rows_of(&second, "SELECT * FROM public.visits").await;
    assert_eq!(theirs, all);
    let (_, spent, _) = standing(&gate, "second");
    assert_eq!(spent, 0.0);
    assert_eq!(fits(&gate).len(), 1);
    drop((client, second));

    // After a restart the kept fit answers: no refit, same rows.
    drop(gate);
    let gate = Dpgate::start(dir.path(), &config(&db, port, dir.path()), port);
    let (client, _n) = gate.connect().await;
    assert_eq!(rows_of(&client, "SELECT * FROM public.visits").await, all);
    assert_eq!(fits(&gate).len(), 1, "{:?}", fits(&gate));

    // The data owner's CSV and report reuse the same fit.
    let out = gate.dir.join("visits.csv");
    let report = gate.dir.join("report.html");
    let printed = gate.cli(&[
        "synth",
        "--table",
        "visits",
        "--rows",
        "3000",
        "--out",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
        "--compare-real",
    ]);
    assert_eq!(fits(&gate).len(), 1);
    let csv = std::fs::read_to_string(&out).unwrap();
    assert_eq!(csv.lines().count(), 3001);
    assert!(
        csv.starts_with("age,ward,cost,visit_date,diagnosis"),
        "{}",
        &csv[..80]
    );
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("<svg") && html.contains("TV vs real"),
        "report"
    );
    assert!(printed.contains("synthetic vs real"), "{printed}");
}

/// A fit is refitted when the declaration changes (a new key), and a
/// table without `[tables.synthetic]` keeps the refusal, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_declaration_refits_and_undeclared_tables_refuse() {
    let db = hospital_database("synthetic_refit", 200).await;
    let dir = tempdir();
    let port = free_port();
    let gate = Dpgate::start(dir.path(), &config(&db, port, dir.path()), port);
    fitted(&gate);
    let (client, _n) = gate.connect().await;
    let (code, _, hint) = refusal(&client, "SELECT * FROM patients LIMIT 3").await;
    assert_eq!(code, "42501");
    assert!(hint.contains("[tables.synthetic]"), "{hint}");
    // Mixed with a public table: refused with what to do instead.
    let (code, message, _) = refusal(
        &client,
        "SELECT * FROM visits v JOIN wards w ON v.ward = w.ward LIMIT 3",
    )
    .await;
    assert_eq!(code, "0A000", "{message}");
    drop(client);
    drop(gate);
    let changed = config(&db, port, dir.path()).replace("bins = 8", "bins = 4");
    let gate = Dpgate::start(dir.path(), &changed, port);
    fitted(&gate);
    let (client, _n) = gate.connect().await;
    assert_eq!(
        rows_of(&client, "SELECT * FROM visits LIMIT 2").await.len(),
        2
    );
    assert_eq!(fits(&gate).len(), 2);
}

/// (limit, spent, remaining) ε of `user`.
fn standing(gate: &Dpgate, user: &str) -> (f64, f64, f64) {
    let text = gate.cli(&["budget", "show", "--user", user, "--format", "json"]);
    let v: Value = serde_json::from_str(&text).unwrap();
    let a = &v[0];
    (
        a["epsilon_budget"].as_f64().unwrap(),
        a["epsilon_spent"].as_f64().unwrap(),
        a["epsilon_remaining"].as_f64().unwrap(),
    )
}

/// Analysts cannot make the dataset pay twice: queries that arrive while
/// the fit runs (and connections dropped at once, as a cancelled query
/// is) are refused with 55000 and never start a second fit; a fit that
/// fails after its charge is not retried (and charged) again for ten
/// minutes, however many queries ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_during_or_after_a_failed_fit_never_charge_again() {
    let db = hospital_database("synthetic_once", 300).await;
    let dir = tempdir();
    let port = free_port();
    let gate = Dpgate::start(dir.path(), &config(&db, port, dir.path()), port);
    let url = gate.url("analyst", PASSWORD);
    for _ in 0..3 {
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move {
                    if let Ok((client, _n)) = connect_collecting(&url).await {
                        // Sent, then the connection is dropped unanswered.
                        let query = client.simple_query("SELECT * FROM visits LIMIT 1");
                        let _ =
                            tokio::time::timeout(std::time::Duration::from_millis(5), query).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }
    fitted(&gate);
    assert_eq!(fits(&gate).len(), 1, "{:?}", fits(&gate));
    drop(gate);

    // A backend whose table lost a declared column: every marginal query
    // over it fails, after the charge; the fit fails once.
    let db = hospital_database("synthetic_fails", 300).await;
    connect_direct(&cluster().url(&db))
        .await
        .batch_execute("ALTER TABLE visits RENAME COLUMN age TO years")
        .await
        .unwrap();
    let dir = tempdir();
    let failing = config(&db, port, dir.path());
    let gate = Dpgate::start(dir.path(), &failing, port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let err = loop {
        let (_, err, ok) = gate.psql(&["-c", "SELECT * FROM visits LIMIT 1"]);
        assert!(!ok);
        if !err.contains("being fitted") {
            break err;
        }
        assert!(std::time::Instant::now() < deadline, "{err}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(err.contains("failed after its charge"), "{err}");
    for _ in 0..5 {
        let (_, err, _) = gate.psql(&["-c", "SELECT * FROM visits LIMIT 1"]);
        assert!(err.contains("tries again in"), "{err}");
    }
    let charged = fits(&gate);
    assert_eq!(charged.len(), 1, "{charged:?}");
    assert_eq!(charged[0]["outcome"], "failed");
}
