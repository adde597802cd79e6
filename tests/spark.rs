//! dpgate in front of Apache Spark (feature `spark`; a Spark Connect
//! server named in `DPGATE_SPARK_URL`, which `.ci/run` starts): psql gets
//! the README's grouped query from a Spark table with noise, intervals and
//! cost, charged to the same budget as every other front end.
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
