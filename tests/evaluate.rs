//! `dpgate evaluate` against a real PostgreSQL: the neighbouring dataset
//! it forms by filtering one unit out is the dataset without that unit; a
//! correct build passes all four tests; a build whose noise understates
//! the sensitivity 4× fails the privacy test; declared bounds the data
//! breaks fail the accuracy test; usage errors exit with 2.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use dpgate_sql::{route, Ask, Statement};

/// Runs `dpgate evaluate` on `workload`; returns the exit code, the text
/// it printed and the JSON report (when written).
fn evaluate(
    dir: &Path,
    workload: &str,
    trials: usize,
    understate: Option<u64>,
) -> (i32, String, Option<serde_json::Value>) {
    let queries = dir.join("workload.sql");
    std::fs::write(&queries, workload).unwrap();
    let json = dir.join("evaluate.json");
    let _ = std::fs::remove_file(&json);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dpgate"));
    cmd.args(["evaluate", "--config"])
        .arg(dir.join("proxy.toml"))
        .arg("--queries")
        .arg(&queries)
        // A correct build fails a test with probability α: small here, so
        // that the suite does not flake (at 0.001 it did about once in
        // 3 000 runs). A build that understates ε still fails: at these
        // trials its bound stays near 2 at α = 1e-6, above the claimed 1.
        .args([
            "--trials",
            &trials.to_string(),
            "--alpha",
            "0.000001",
            "--json",
        ])
        .arg(&json)
        .arg("--report")
        .arg(dir.join("evaluate.html"))
        .env("DPGATE_TEST_PASSWORD", PASSWORD);
    if let Some(f) = understate {
        cmd.env("DPGATE_EVALUATE_UNDERSTATE_SENSITIVITY", f.to_string());
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&stdout).into_owned() + &String::from_utf8_lossy(&stderr);
    let report = std::fs::read_to_string(&json)
        .ok()
        .map(|t| serde_json::from_str(&t).unwrap());
    (status.code().unwrap_or(-1), text, report)
}

fn query<'a>(report: &'a serde_json::Value, sql: &str) -> &'a serde_json::Value {
    report["queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["sql"] == sql)
        .unwrap_or_else(|| panic!("{sql} not in the report"))
}

const WORKLOAD: &[&str] = &[
    "SELECT COUNT(*) FROM visits",
    "SELECT SUM(cost) FROM visits WHERE ward = 'A'",
    "SELECT ward, COUNT(*), AVG(age) FROM visits GROUP BY ward",
    "SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis",
    "SELECT p.region, COUNT(*) FROM visits v JOIN patients p ON v.patient_id = p.patient_id GROUP BY p.region",
    "SELECT MEDIAN(age) FROM visits",
    "SELECT COUNT(*) FROM readings WHERE level > 10",
];

fn workload_text() -> String {
    let mut text = "-- the test's workload\nSET dp.epsilon = 1;\n".to_string();
    for q in WORKLOAD {
        text.push_str(q);
        text.push_str(";\n");
    }
    text
}

async fn hospital(prefix: &str) -> (String, tempfile::TempDir) {
    let db = hospital_database(prefix, 400).await;
    connect_direct(&cluster().url(&db))
        .await
        .batch_execute(
            "CREATE TABLE readings (level int);
             INSERT INTO readings SELECT g % 40 FROM generate_series(1, 800) g;
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO PUBLIC;",
        )
        .await
        .unwrap();
    let dir = tempdir();
    let config = hospital_toml(&db, free_port(), &dir.path().join("l.sqlite"), 10.0, 0.1)
        + "[[tables]]\nname = \"public.readings\"\ncolumns.level = { type = \"int\", lower = 0, upper = 50 }\n";
    std::fs::write(dir.path().join("proxy.toml"), config).unwrap();
    (db, dir)
}

/// The neighbour's backend query (one unit filtered out) returns exactly
/// what the planned query returns on a copy of the data without that unit,
/// for every bounding rewrite and for a row-level table's row identity.
/// (Every patient is within the declared bound, so row sampling keeps
/// every row and the answers are deterministic.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_neighbour_query_runs_on_the_data_without_the_unit() {
    let (db, dir) = hospital("eval_neighbour").await;
    let copy = format!("{db}_without");
    // The copy is a physical clone (same ctids), made while nothing is
    // connected to the original.
    let postgres = connect_direct(&cluster().url("postgres")).await;
    let mut cloned = false;
    for _ in 0..50 {
        if postgres
            .batch_execute(&format!("CREATE DATABASE {copy} TEMPLATE {db}"))
            .await
            .is_ok()
        {
            cloned = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(cloned, "could not clone {db}");
    connect_direct(&cluster().url(&copy))
        .await
        .batch_execute(
            "DELETE FROM visits WHERE patient_id = 7;
             DELETE FROM patients WHERE patient_id = 7;
             DELETE FROM readings WHERE ctid = '(0,15)';",
        )
        .await
        .unwrap();
    // A row-level table's unit is its row's table and ctid, as text.
    let reading: String = connect_direct(&cluster().url(&db))
        .await
        .query_one(
            "SELECT CAST(ROW(tableoid, ctid) AS text) FROM readings WHERE ctid = '(0,15)'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let text = std::fs::read_to_string(dir.path().join("proxy.toml")).unwrap();
    let env = |k: &str| (k == "DPGATE_TEST_PASSWORD").then(|| PASSWORD.to_string());
    let config = dpgate_config::Config::parse(&text, &env).unwrap();
    let without =
        dpgate_config::Config::parse(&text.replace(&format!("/{db}"), &format!("/{copy}")), &env)
            .unwrap();
    let on_d = dpgate_backend::connect(&config).await.unwrap();
    let on_copy = dpgate_backend::connect(&without).await.unwrap();
    // Planned as the server and `dpgate evaluate` plan, after the schema
    // is read (so the bounding step treats large units apart).
    let mut config = config;
    dpgate_backend::read_schema(&mut config, on_d.as_ref()).await;
    let ask = Ask::at(1.0);
    for sql in WORKLOAD {
        let Statement::Private(prepared) = route(sql, &config, false).unwrap().remove(0).statement
        else {
            panic!("{sql} is not private");
        };
        let unit = if sql.contains("readings") {
            reading.as_str()
        } else {
            "7"
        };
        let plan = prepared.bind(&[], &ask, &config).unwrap();
        let paired = prepared.bind_paired(&ask, &config, unit).unwrap();
        let mut rows = Vec::new();
        on_d.fetch_into(
            dpgate_backend::BackendQuery {
                sql: &paired.backend_sql,
                keys: plan.grouping.key_count() + 1,
                measurements: plan.release.raw_len(),
            },
            &mut rows,
        )
        .await
        .unwrap();
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for mut r in rows {
            match r.keys.remove(0).as_deref() {
                Some("d") => with.push(r),
                Some("n") => without.push(r),
                other => panic!("{sql}: side {other:?}"),
            }
        }
        let mut removed = on_copy.fetch(&plan).await.unwrap();
        let mut whole = on_d.fetch(&plan).await.unwrap();
        for rows in [&mut with, &mut without, &mut removed, &mut whole] {
            rows.sort_by(|a, b| a.keys.cmp(&b.keys));
        }
        assert_eq!(without, removed, "{sql}");
        assert_eq!(with, whole, "{sql}");
        assert_ne!(without, whole, "{sql}: removing the unit changed nothing");
    }
}

/// A correct build passes every test on a hospital (counts, sums, means,
/// declared domains, partition selection, a join, a quantile, a row-level
/// table), writes both reports and one audit entry; the same workload with
/// every noise calibrated for a sensitivity 4× too small fails the privacy
/// test where the neighbour moves the value by its whole sensitivity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_passes_a_correct_build_and_fails_a_broken_one() {
    let (_db, dir) = hospital("eval_pass").await;
    let (code, text, report) = evaluate(dir.path(), &workload_text(), 600, None);
    let report = report.unwrap_or_else(|| panic!("no JSON report: {text}"));
    let failed: Vec<&serde_json::Value> = report["queries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|q| !q["bias_pass"].as_bool().unwrap())
        .map(|q| &q["bias"])
        .collect();
    assert_eq!(code, 0, "{text}\nbias of failing queries: {failed:?}");
    for sql in WORKLOAD {
        let q = query(&report, sql);
        assert!(q["error"].is_null(), "{sql}: {q}");
        let p = &q["privacy"];
        assert!(p["pass"].as_bool().unwrap(), "{sql}: {p}");
        assert!(p["epsilon_lower"].as_f64().unwrap() <= 1.0, "{sql}: {p}");
        assert!(q["accuracy"]["pass"].as_bool().unwrap(), "{sql}: {q}");
        assert!(
            q["accuracy"]["coverage"].as_f64().is_some(),
            "{sql}: no plain answer: {q}"
        );
        assert!(
            q["neighbour"][1].as_f64().unwrap() > 0.0,
            "{sql}: the neighbour moved nothing"
        );
    }
    // The count's neighbour is the patient with the most visits (5, the
    // bound): removing them moves the count by its whole sensitivity.
    let count = query(&report, WORKLOAD[0]);
    assert!(
        count["neighbour"][0]
            .as_str()
            .unwrap()
            .contains("most rows"),
        "{count}"
    );
    let html = std::fs::read_to_string(dir.path().join("evaluate.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains("PASS"),
        "report without charts"
    );
    let ledger = dir.path().join("l.sqlite");
    let audit = rusqlite::Connection::open(&ledger)
        .unwrap()
        .query_row(
            "SELECT COUNT(*) FROM audit WHERE statement LIKE 'evaluate %' AND detail = 'every test passed'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap();
    assert_eq!(audit, 1);

    // The self-check succeeds (exit 0) when the privacy test fails on
    // every query where the broken noise admits a loss of 1.5× the charge
    // on its pair: the counts (the patient with the most visits moves them
    // by 5, the bound; a reading by 1, its bound), at 4× the charge.
    let (code, text, report) = evaluate(dir.path(), &workload_text(), 600, Some(4));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("SELF-CHECK"), "{text}");
    let report = report.unwrap();
    for sql in [WORKLOAD[0], WORKLOAD[4], WORKLOAD[6]] {
        let q = query(&report, sql);
        let p = &q["privacy"];
        assert!(q["reach"].as_f64().unwrap() >= 0.9, "{sql}: {q}");
        assert!(q["pair_loss"].as_f64().unwrap() >= 3.9, "{sql}: {q}");
        assert!(
            !p["pass"].as_bool().unwrap(),
            "{sql}: the broken build passed: {p}"
        );
        assert!(p["epsilon_lower"].as_f64().unwrap() > 1.0, "{sql}: {p}");
    }
}

/// Declared bounds the data breaks (one patient with 14 visits where 5
/// are declared) bias the bounded answer: the plain count falls outside
/// the intervals and the accuracy test fails, naming the bounding error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_fails_accuracy_where_declared_bounds_do_not_hold() {
    let (db, dir) = hospital("eval_bounds").await;
    connect_direct(&cluster().url(&db))
        .await
        .batch_execute(
            "INSERT INTO visits (patient_id, age, cost, ward, secret)
             SELECT p, 50, 100, 'A', 'x' FROM generate_series(1, 60) p, generate_series(1, 9);",
        )
        .await
        .unwrap();
    let workload = "SET dp.epsilon = 1;
SELECT COUNT(*) FROM visits;
";
    let (code, text, report) = evaluate(dir.path(), workload, 300, None);
    assert_eq!(code, 1, "{text}");
    let q = query(report.as_ref().unwrap(), "SELECT COUNT(*) FROM visits");
    let a = &q["accuracy"];
    assert!(!a["pass"].as_bool().unwrap(), "{a}");
    assert!(a["coverage"].as_f64().unwrap() < 0.5, "{a}");
    assert!(a["coverage_bounded"].as_f64().unwrap() > 0.9, "{a}");
    assert!(a["bounding_error"].as_f64().unwrap() > 1.0, "{a}");
    assert!(q["privacy"]["pass"].as_bool().unwrap(), "{q}");
}

/// A workload dpgate would refuse, a statement that is not a query, or a
/// missing file is a usage error (exit 2) naming the line; nothing runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_usage_errors_exit_2() {
    let (_db, dir) = hospital("eval_usage").await;
    for (workload, says) in [
        (
            "SELECT COUNT(*) FROM visits;
SELECT * FROM visits;
",
            "line 2",
        ),
        (
            "\n-- comment
SELECT secret, COUNT(*) FROM visits GROUP BY secret;",
            "line 3",
        ),
        (
            "SET dp.epsilon = 50;
SELECT COUNT(*) FROM visits;",
            "dp.epsilon must be",
        ),
        (
            "SET search_path = x;
SELECT COUNT(*) FROM visits;",
            "SET search_path",
        ),
        (
            "-- nothing
",
            "no private query",
        ),
    ] {
        let (code, text, report) = evaluate(dir.path(), workload, 100, None);
        assert_eq!(code, 2, "{workload}: {text}");
        assert!(text.contains(says), "{workload}: {text}");
        assert!(report.is_none());
    }
    let out = Command::new(env!("CARGO_BIN_EXE_dpgate"))
        .args(["evaluate", "--config"])
        .arg(dir.path().join("proxy.toml"))
        .args(["--queries", "/nonexistent/workload.sql"])
        .env("DPGATE_TEST_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
