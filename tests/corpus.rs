//! The analyst query corpus through a running dpgate, in front of real
//! PostgreSQL, on the embedded SQLite backend loaded from the same data
//! as CSV and (with the `spark` feature) on Spark, in local mode and on a
//! two-worker cluster: each query is answered with its number of rows, or
//! refused with a SQLSTATE and a hint, the same on all.

mod common;

use common::corpus::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_query_gets_its_expected_outcome_on_postgres() {
    let db = hospital_database("corpus", 2000).await;
    let dir = tempdir();
    let port = free_port();
    let config = hospital_toml(&db, port, &dir.path().join("l.sqlite"), 1e6, 1.0);
    let gate = Dpgate::start(dir.path(), &config, port);
    run_corpus(gate).await;
    charges_are_compositions(&config, &dir.path().join("l.sqlite")).await;
}

/// Every charge the ledger holds for the corpus equals the sequential
/// composition of the measurements of the statement's plan (Σ ε of its
/// noise, plus the δ of its key selection), computed here independently
/// of the release's own `cost()`.
async fn charges_are_compositions(config_text: &str, ledger_path: &std::path::Path) {
    use dpgate_dp::accounting::{compose, PrivacyLoss};
    let config = dpgate_config::Config::parse(config_text, &|_| Some("x".into())).unwrap();
    let ledger = dpgate_ledger::Ledger::open(&dpgate_config::LedgerStore::Sqlite(
        ledger_path.to_path_buf(),
    ))
    .await
    .unwrap();
    let records = ledger
        .audit(dpgate_ledger::AuditFilter::default())
        .await
        .unwrap();
    let mut checked = 0;
    for r in records.iter().filter(|r| r.entry.cost.epsilon > 0.0) {
        let statement = &r.entry.statement;
        let routed = dpgate_sql::route(statement, &config, false).unwrap();
        let dpgate_sql::Statement::Private(prepared) = &routed[0].statement else {
            panic!("charged but not private: {statement}")
        };
        let plan = prepared
            .bind(
                &[],
                &dpgate_sql::Ask::at(config.privacy.default_epsilon),
                &config,
            )
            .unwrap();
        let losses: Vec<PrivacyLoss> = plan
            .release
            .measurements
            .iter()
            .map(|m| m.noise.loss())
            .collect();
        let PrivacyLoss::Pure { epsilon } = compose(&losses, 0.0) else {
            panic!("{statement}: not pure")
        };
        let delta = plan
            .release
            .selection
            .as_ref()
            .map_or(0.0, |s| s.selection.delta());
        assert!(
            (r.entry.cost.epsilon - epsilon).abs() <= 1e-9 * epsilon,
            "{statement}: charged ε {} but its measurements compose to {epsilon}",
            r.entry.cost.epsilon
        );
        assert_eq!(r.entry.cost.delta, delta, "{statement}: δ");
        checked += 1;
    }
    assert!(checked >= 40, "only {checked} charged corpus queries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_query_gets_its_expected_outcome_on_sqlite() {
    let db = hospital_database("corpus_lite", 2000).await;
    let dir = tempdir();
    let port = free_port();
    let config = hospital_sqlite_toml(&db, port, dir.path(), 1e6, 1.0).await;
    run_corpus(Dpgate::start(dir.path(), &config, port)).await;
}

/// The corpus on Spark: the test server (local mode), then a standalone
/// cluster of two workers, whose executors must both have run tasks.
#[cfg(feature = "spark")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_query_gets_its_expected_outcome_on_spark() {
    let db = hospital_database("corpus_spark", 2000).await;
    let dir = tempdir();
    let port = free_port();
    let toml = hospital_toml(&db, port, &dir.path().join("l.sqlite"), 1e6, 1.0);
    let config = spark::spark_toml(&toml, &db, &HOSPITAL_TABLES, "corpus").await;
    run_corpus(Dpgate::start(dir.path(), &config, port)).await;

    let cluster = spark::SparkCluster::start();
    let dir = tempdir();
    let port = free_port();
    let toml = hospital_toml(&db, port, &dir.path().join("l.sqlite"), 1e6, 1.0);
    let config = spark::spark_toml_at(&cluster.url, &toml, &db, &HOSPITAL_TABLES, "corpus").await;
    run_corpus(Dpgate::start(dir.path(), &config, port)).await;
    let tasks = cluster.executor_tasks();
    println!("tasks per executor on the cluster: {tasks:?}");
    assert!(
        tasks.len() >= 2 && tasks.iter().all(|(_, n)| *n > 0),
        "the work did not spread over two executors: {tasks:?}"
    );
}

/// Runs every corpus query through `gate` and checks its outcome.
async fn run_corpus(gate: Dpgate) {
    assert!(
        CORPUS.len() >= 80,
        "the corpus has {} queries",
        CORPUS.len()
    );
    let (client, _notices) = gate.connect().await;
    let mut failures = Vec::new();
    for &(sql, expect) in CORPUS {
        let got = simple_rows(&client, sql).await;
        let ok = match (&got, expect) {
            (Ok(rows), Rows(n)) => rows.len() == n,
            (Ok(rows), RowsIn(lo, hi)) => (lo..=hi).contains(&rows.len()),
            (Err(e), Refused(code)) => e.as_db_error().is_some_and(|d| {
                d.code().code() == code
                    && !d.message().is_empty()
                    && d.hint().is_some_and(|h| !h.is_empty())
            }),
            _ => false,
        };
        if !ok {
            let got = match got {
                Ok(rows) => format!("{} rows: {rows:?}", rows.len()),
                Err(e) => match e.as_db_error() {
                    Some(d) => {
                        format!("{} {} (hint: {:?})", d.code().code(), d.message(), d.hint())
                    }
                    None => e.to_string(),
                },
            };
            failures.push(format!("{sql}\n    expected {expect:?}, got {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus queries failed:\n{}",
        failures.len(),
        CORPUS.len(),
        failures.join("\n")
    );
}
