//! Sensitivity tests: for every query shape dpgate answers, run the
//! rewritten backend query on a dataset and on its neighbour (one privacy
//! unit added with maximal, out-of-bounds contributions) in real
//! PostgreSQL, and check that every pre-noise measurement changes by at
//! most the sensitivity the plan declared.

mod common;

use common::*;
use dpgate_backend::parse_measurement;
use dpgate_config::Config;
use dpgate_sql::params::{bind_parameters, ParamValue};
use dpgate_sql::{classify, plan, Command};
use tokio_postgres::{Client, SimpleQueryMessage};

/// Two databases: `visits` as generated, and the same plus one patient
/// with 40 extreme rows (ages and costs far outside the declared bounds).
async fn neighbours() -> (Client, Client, Config) {
    let (small, _) = visits_database("sens_d", 400).await;
    let (large, _) = visits_database("sens_dprime", 400).await;
    let c = cluster();
    let d = connect_direct(&c.url(&small)).await;
    let d_prime = connect_direct(&c.url(&large)).await;
    d_prime
        .batch_execute(
            "INSERT INTO visits SELECT 999999, CASE WHEN v % 2 = 0 THEN 100000 ELSE -100000 END,
                    CASE WHEN v % 2 = 0 THEN 1e12 ELSE -1e12 END, 'A', 'x'
             FROM generate_series(1, 40) AS v;
             CREATE TABLE events (score int);
             INSERT INTO events SELECT (g % 7) - 3 FROM generate_series(1, 500) g;",
        )
        .await
        .unwrap();
    d.batch_execute(
        "CREATE TABLE events (score int);
         INSERT INTO events SELECT (g % 7) - 3 FROM generate_series(1, 500) g;",
    )
    .await
    .unwrap();
    // events in D' has one more row (row-level privacy: one row is one unit).
    d_prime
        .batch_execute("INSERT INTO events VALUES (1000000)")
        .await
        .unwrap();
    let config = Config::parse(
        &(proxy_toml(&small, 1, std::path::Path::new("/tmp/unused"), 1.0, 0.1)
            + r#"
[[tables]]
name = "events"
columns.score = { type = "int", lower = -10, upper = 3 }
"#),
        &|_| Some("x".into()),
    )
    .unwrap();
    (d, d_prime, config)
}

async fn measurements(client: &Client, sql: &str) -> Vec<i64> {
    for m in client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    {
        if let SimpleQueryMessage::Row(r) = m {
            return (0..r.len())
                .map(|i| parse_measurement(r.get(i).unwrap()).unwrap())
                .collect();
        }
    }
    panic!("{sql}: no row")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_shape_stays_within_its_declared_sensitivity() {
    let (d, d_prime, config) = neighbours().await;
    let shapes: &[(&str, &[ParamValue])] = &[
        ("SELECT COUNT(*) FROM visits", &[]),
        (
            "SELECT COUNT(age), COUNT(ward), COUNT(patient_id) FROM visits",
            &[],
        ),
        ("SELECT SUM(age) FROM visits", &[]),
        ("SELECT SUM(cost) FROM visits", &[]),
        ("SELECT AVG(age), AVG(cost) FROM visits", &[]),
        (
            "SELECT COUNT(*), SUM(cost) FROM visits WHERE ward = 'A'",
            &[],
        ),
        (
            "SELECT AVG(cost) FROM visits WHERE age BETWEEN 0 AND 200 OR age < -5",
            &[],
        ),
        (
            "SELECT SUM(age) FROM visits WHERE ward IN ('A', 'B') AND cost IS NOT NULL",
            &[],
        ),
        (
            "SELECT COUNT(*) FROM visits WHERE patient_id = $1",
            &[ParamValue::Int(999999)],
        ),
        (
            "SELECT SUM(cost) FROM visits WHERE ward = $1 AND age > $2",
            &[ParamValue::Text("A".into()), ParamValue::Int(-1)],
        ),
        ("SELECT COUNT(*), SUM(score), AVG(score) FROM events", &[]),
        ("SELECT VARIANCE(age), STDDEV_POP(cost) FROM visits", &[]),
        ("SELECT VAR_SAMP(score), STDDEV(score) FROM events", &[]),
        ("SELECT MEDIAN(age), PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY cost) FROM visits", &[]),
        ("SELECT PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY score DESC) FROM events WHERE score > -2", &[]),
    ];
    for &(sql, params) in shapes {
        let Command::Private(mut query) = classify(sql).unwrap().remove(0) else {
            panic!("{sql} is not private")
        };
        bind_parameters(&mut query, params).unwrap();
        let p = plan(&query, &config, 1.0).unwrap();
        // Repeat: the rows kept for the added unit are chosen at random.
        for _ in 0..5 {
            let a = measurements(&d, &p.backend_sql).await;
            let b = measurements(&d_prime, &p.backend_sql).await;
            // L1 change of each (possibly vector) measurement.
            let mut at = 0;
            for (i, m) in p.release.measurements.iter().enumerate() {
                let change: u64 = (at..at + m.len).map(|j| (b[j] - a[j]).unsigned_abs()).sum();
                at += m.len;
                let declared = m.noise.sensitivity();
                assert!(
                    change <= declared,
                    "{sql}: measurement {i} changed by {change} > sensitivity {declared}\n{}",
                    p.backend_sql
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_is_reached_so_the_test_can_fail() {
    // The added unit contributes maximally: the change equals the bound,
    // so a planner that understated sensitivity would be caught above.
    let (d, d_prime, config) = neighbours().await;
    let Command::Private(query) = classify("SELECT COUNT(*), SUM(age) FROM visits")
        .unwrap()
        .remove(0)
    else {
        panic!()
    };
    let p = plan(&query, &config, 1.0).unwrap();
    let a = measurements(&d, &p.backend_sql).await;
    let b = measurements(&d_prime, &p.backend_sql).await;
    assert_eq!(
        (b[0] - a[0]) as u64,
        p.release.measurements[0].noise.sensitivity(),
        "count"
    );
    // Ages alternate between the bounds: the sum moves by at most 5 × 110.
    assert!((b[1] - a[1]).unsigned_abs() <= p.release.measurements[1].noise.sensitivity());
}
