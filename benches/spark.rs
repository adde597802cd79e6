//! Spark at scale: a generated table of 10M rows (`SPARK_BENCH_ROWS`),
//! written as parquet by Spark itself, and the same rows in PostgreSQL.
//! For COUNT, SUM, grouped AVG and a join with a public table: the query
//! through dpgate on Spark (cache off: charged, bounded, noised) against
//! its rewritten query sent straight to Spark over Spark Connect, timed
//! alternately, as a ratio; and dpgate on PostgreSQL over the same data
//! for comparison.
//!
//! Run with a Spark Connect server (`scripts/spark-connect.sh start`):
//! `DPGATE_SPARK_URL=sc://127.0.0.1:15002 cargo bench --features spark --bench spark`
//! (`SPARK_BENCH_ITERS` to change the 3 timed runs a side;
//! `SPARK_BENCH_QUERIES=COUNT,join` to time only those labels).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::*;
use dpgate_sql::{classify, plan, Command};

const QUERIES: [(&str, &str); 4] = [
    ("COUNT", "SELECT COUNT(*) FROM big"),
    ("SUM", "SELECT SUM(age) FROM big"),
    (
        "grouped AVG",
        "SELECT ward, AVG(cost) FROM big GROUP BY ward",
    ),
    (
        "join",
        "SELECT w.floor, COUNT(*) FROM big b JOIN wards w ON b.ward = w.ward GROUP BY w.floor",
    ),
];

/// The declarations, for a backend section `backend`.
fn toml(backend: &str, port: u16, ledger: &std::path::Path, big: &str, wards: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[backend]
{backend}
statement_timeout_ms = 600000
[ledger]
path = "{ledger}"
[privacy]
default_epsilon = 0.1
delta = 1e-6
[cache]
enabled = false
[[users]]
name = "analyst"
password = "env:DPGATE_TEST_PASSWORD"
epsilon_budget = 1e9
[[tables]]
name = "big"
{big}privacy_unit = "patient_id"
max_rows_per_unit = 5
columns.age = {{ type = "int", lower = 0, upper = 110 }}
columns.cost = {{ type = "float", lower = 0, upper = 5000 }}
columns.ward = {{ type = "text", values = ["A", "B", "C"] }}
[[tables]]
name = "wards"
{wards}public = true
columns.ward = {{ type = "text" }}
columns.floor = {{ type = "int", lower = 0, upper = 10 }}
"#,
        ledger = ledger.display()
    )
}

fn main() {
    let rows: i64 = env_number("SPARK_BENCH_ROWS", 10_000_000);
    let iters: usize = env_number("SPARK_BENCH_ITERS", 3);
    let url = spark::spark_url();
    let rt = bench_runtime();
    rt.block_on(async move {
        // Row i belongs to patient i mod rows/3: three rows each.
        let patients = rows / 3;
        let t = Instant::now();
        let session = spark::spark_session_at(&url).await;
        session
            .execute(&[
                "CREATE DATABASE IF NOT EXISTS bench".into(),
                "DROP TABLE IF EXISTS bench.big".into(),
                format!(
                    "CREATE TABLE bench.big USING parquet AS SELECT id % {patients} AS patient_id, \
                     CAST((id * 37) % 110 AS INT) AS age, CAST((id * 7919) % 500000 AS DOUBLE) / 100 AS cost, \
                     element_at(array('A', 'B', 'C'), CAST(id % 3 + 1 AS INT)) AS ward FROM range({rows})"
                ),
                "DROP TABLE IF EXISTS bench.wards".into(),
                "CREATE TABLE bench.wards USING parquet AS SELECT * FROM VALUES ('A', 1), ('B', 2), ('C', 2) AS w(ward, floor)".into(),
            ])
            .await
            .unwrap();
        let spark_generated = t.elapsed();
        let db = empty_database("spark_bench").await;
        let admin = connect_direct(&cluster().url(&db)).await;
        let t = Instant::now();
        admin
            .batch_execute(&format!(
                "CREATE TABLE big (patient_id bigint, age int, cost float8, ward text);
                 INSERT INTO big SELECT i % {patients}, (i * 37) % 110, ((i * 7919) % 500000) / 100.0,
                        (ARRAY['A','B','C'])[1 + i % 3] FROM generate_series(0::bigint, {rows} - 1) AS i;
                 CREATE TABLE wards (ward text, floor int);
                 INSERT INTO wards VALUES ('A', 1), ('B', 2), ('C', 2);
                 GRANT SELECT ON big, wards TO PUBLIC;
                 ALTER DATABASE {db} SET work_mem = '64MB';"
            ))
            .await
            .unwrap();
        admin.batch_execute("VACUUM ANALYZE big").await.unwrap();
        let pg_generated = t.elapsed();

        let dir = tempdir();
        let (spark_port, pg_port) = (free_port(), free_port());
        let spark_text = toml(
            &format!("spark = \"{url}\""),
            spark_port,
            &dir.path().join("spark.sqlite"),
            "backend_name = \"bench.big\"\n",
            "backend_name = \"bench.wards\"\n",
        );
        let pg_text = toml(
            &format!("url = \"{}\"", cluster().reader_url(&db)),
            pg_port,
            &dir.path().join("pg.sqlite"),
            "",
            "",
        );
        let spark_dir = dir.path().join("spark");
        let pg_dir = dir.path().join("pg");
        std::fs::create_dir_all(&spark_dir).unwrap();
        std::fs::create_dir_all(&pg_dir).unwrap();
        let spark_gate = Dpgate::start(&spark_dir, &spark_text, spark_port);
        let pg_gate = Dpgate::start(&pg_dir, &pg_text, pg_port);
        let (via_spark, _n1) = spark_gate.connect().await;
        let (via_pg, _n2) = pg_gate.connect().await;
        let (config, direct) = server_config(&spark_text, "x").await;

        println!(
            "spark: {rows} rows in big ({patients} patients, 3 rows each); generated in Spark in {spark_generated:.1?}, in PostgreSQL in {pg_generated:.1?}; median of {iters}"
        );
        println!(
            "  {:<12} {:>12} {:>12} {:>8} {:>14}",
            "query", "Spark direct", "dpgate", "ratio", "dpgate on PG"
        );
        let only = std::env::var("SPARK_BENCH_QUERIES").ok();
        let chosen = |label: &str| {
            only.as_deref()
                .is_none_or(|list| list.split(',').any(|l| l.trim().eq_ignore_ascii_case(label)))
        };
        for (label, sql) in QUERIES.into_iter().filter(|(label, _)| chosen(label)) {
            let Command::Private(q) = classify(sql).unwrap().remove(0) else {
                panic!("{sql} is not private")
            };
            let p = plan(&q, &config, 0.1).unwrap();
            let (straight, through) = time_pair(
                iters,
                || async {
                    direct.fetch(&p).await.unwrap();
                },
                || async {
                    via_spark.simple_query(sql).await.unwrap();
                },
            )
            .await;
            let on_pg = time(iters, || async {
                via_pg.simple_query(sql).await.unwrap();
            })
            .await;
            println!(
                "  {label:<12} {straight:>12.2?} {through:>12.2?} {:>8.3} {on_pg:>14.2?}",
                through.as_secs_f64() / straight.as_secs_f64()
            );
        }
    });
}
