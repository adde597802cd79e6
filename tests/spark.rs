//! dpgate in front of Apache Spark (feature `spark`; a Spark Connect
//! server named in `DPGATE_SPARK_URL`, which `.ci/run` starts): psql gets
//! the README's grouped query from a Spark table with noise, intervals and
//! cost, charged to the same budget as every other front end; a query
//! that outlives the statement timeout, or that the client cancels, is
//! interrupted on the Spark server.
#![cfg(feature = "spark")]

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_reads_a_spark_table_through_dpgate() {
    let db = hospital_database("spark_psql", 300).await;
    let dir = tempdir();
    let port = free_port();
    let toml = hospital_toml(&db, port, &dir.path().join("l.sqlite"), 3.0, 1.0);
    let toml = spark::spark_toml(&toml, &db, &HOSPITAL_TABLES, "spark_psql").await;
    let gate = Dpgate::start(dir.path(), &toml, port);

    let (stdout, stderr, ok) = gate.psql(&[
        "-A",
        "-t",
        "-c",
        "SELECT ward, COUNT(*), AVG(cost) FROM visits GROUP BY ward ORDER BY ward",
    ]);
    assert!(ok, "{stderr}\n{}", gate.log.lock().unwrap());
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split('|').collect::<Vec<_>>())
        .collect();
    assert_eq!(
        rows.iter().map(|r| r[0]).collect::<Vec<_>>(),
        ["A", "B", "C"],
        "{stdout}"
    );
    // 300 patients with 1-5 visits each: about 300 a ward, noised.
    for r in &rows {
        let count: i64 = r[1].parse().unwrap();
        let avg: f64 = r[2].parse().unwrap();
        assert!((100..=600).contains(&count), "{stdout}");
        assert!((0.0..=5000.0).contains(&avg), "{stdout}");
    }
    assert!(
        stderr.contains("this answer cost ε = 1") && stderr.contains("2 of ε = 3 remain"),
        "{stderr}"
    );
    assert!(stderr.contains("half-widths"), "{stderr}");

    // The same budget: what psql spent is gone for every front end.
    let (stdout, stderr, ok) = gate.psql(&["-A", "-t", "-c", "SHOW dp.budget"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), "2", "{stdout}");

    // Refusals are the same as on any backend, before Spark is asked.
    let (_, stderr, ok) = gate.psql(&["-c", "SELECT age FROM visits"]);
    assert!(!ok && stderr.contains("HINT:"), "{stderr}");

    // A join with the public wards table, and a patients table without
    // row sampling, run on Spark too.
    let (stdout, stderr, ok) = gate.psql(&[
        "-A",
        "-t",
        "-c",
        "SELECT w.floor, COUNT(*) FROM visits v JOIN wards w ON v.ward = w.ward GROUP BY w.floor",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
}

/// A view (`spark_slow.<name>`) whose every read generates a billion
/// rows: any private query over it runs far longer than the timeouts
/// below. Declared as table `slow`.
async fn slow_view(name: &str) -> String {
    spark::spark_session()
        .await
        .execute(&[
            "CREATE DATABASE IF NOT EXISTS spark_slow".into(),
            format!("CREATE OR REPLACE VIEW spark_slow.{name} AS SELECT id % 1000000 AS patient_id, CAST(id % 100 AS INT) AS age FROM range(1000000000)"),
        ])
        .await
        .unwrap();
    format!(
        r#"
[[tables]]
name = "slow"
backend_name = "spark_slow.{name}"
privacy_unit = "patient_id"
max_rows_per_unit = 5
columns.age = {{ type = "int", lower = 0, upper = 100 }}
"#
    )
}

fn slow_toml(port: u16, dir: &std::path::Path, timeout_ms: u64, table: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[backend]\nspark = \"{}\"\nstatement_timeout_ms = {timeout_ms}\n[ledger]\npath = \"{}\"\n[privacy]\ndelta = 1e-6\n[[users]]\nname = \"analyst\"\npassword = \"env:DPGATE_TEST_PASSWORD\"\nepsilon_budget = 10\n{table}",
        spark::spark_url(),
        dir.join("l.sqlite").display()
    )
}

/// Waits up to 20 s for dpgate's log to say the operation was interrupted.
fn wait_for_interrupt(gate: &Dpgate) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !gate
        .log
        .lock()
        .unwrap()
        .contains("interrupted the Spark operation")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no interrupt confirmed by Spark: {}",
            gate.log.lock().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_the_statement_timeout_is_interrupted_on_spark() {
    let table = slow_view("timeout").await;
    let dir = tempdir();
    let port = free_port();
    let gate = Dpgate::start(dir.path(), &slow_toml(port, dir.path(), 2000, &table), port);
    let started = std::time::Instant::now();
    let (_, stderr, ok) = gate.psql(&["-c", "SELECT COUNT(*) FROM slow"]);
    // The one uniform error after a charge: nothing about the data.
    assert!(!ok && stderr.contains("ERROR:"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    wait_for_interrupt(&gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_query_is_interrupted_on_spark() {
    let table = slow_view("cancel").await;
    let dir = tempdir();
    let port = free_port();
    let gate = Dpgate::start(
        dir.path(),
        &slow_toml(port, dir.path(), 600_000, &table),
        port,
    );
    let (client, _notices) = gate.connect().await;
    let cancel = client.cancel_token();
    let query = tokio::spawn(async move { client.simple_query("SELECT COUNT(*) FROM slow").await });
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    cancel.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = tokio::time::timeout(std::time::Duration::from_secs(30), query)
        .await
        .expect("the cancel ends the query")
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.as_db_error().map(|e| e.code().code()),
        Some("57014"),
        "{err}"
    );
    wait_for_interrupt(&gate);
}

/// A session the server ended (after its idle timeout, or a restart) is
/// opened anew, and the new one has dpgate's settings again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_server_ended_is_opened_anew_with_its_settings() {
    let session = spark::spark_session().await;
    session.close_session().await.unwrap();
    let rows = session
        .rows("SELECT current_timezone(), CAST(7 AS STRING)")
        .await
        .unwrap();
    assert_eq!(rows[0], [Some("UTC".to_string()), Some("7".to_string())]);
    for (key, value) in [
        ("spark.sql.variable.substitute", "false"),
        ("spark.sql.ansi.enabled", "true"),
    ] {
        let rows = session.rows(&format!("SET {key}")).await.unwrap();
        assert_eq!(rows[0][1].as_deref(), Some(value), "{key}");
    }
}
