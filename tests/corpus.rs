//! The analyst query corpus through a running dpgate, once in front of
//! real PostgreSQL and once on the embedded SQLite backend loaded from the
//! same data as CSV: each query is answered with its number of rows, or
//! refused with a SQLSTATE and a hint, the same on both.

mod common;

use common::corpus::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_query_gets_its_expected_outcome_on_postgres() {
    let db = hospital_database("corpus", 2000).await;
    let dir = tempdir();
    let port = free_port();
    let config = hospital_toml(&db, port, &dir.path().join("l.sqlite"), 1e6, 1.0);
    run_corpus(Dpgate::start(dir.path(), &config, port)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_query_gets_its_expected_outcome_on_sqlite() {
    let db = hospital_database("corpus_lite", 2000).await;
    let dir = tempdir();
    let port = free_port();
    let config = hospital_sqlite_toml(&db, port, dir.path(), 1e6, 1.0).await;
    run_corpus(Dpgate::start(dir.path(), &config, port)).await;
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
