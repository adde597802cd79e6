//! Scale: COUNT, SUM, AVG, grouped AVG and a quantile over generated
//! tables of 1M (and, with SCALE_ROWS, 10M) rows, created by the bench in
//! a throwaway PostgreSQL cluster: the plain aggregate straight at
//! PostgreSQL, the query through dpgate (cache off: charged, bounded,
//! noised), and their ratio; for COUNT and SUM also the former rewrite
//! (rows sampled per unit with ROW_NUMBER) straight at PostgreSQL. The
//! same for a table whose privacy unit is declared unique (no bounding
//! step), and the dpgate process's peak memory.
//!
//! With `DPGATE_BASELINE_BIN` set to another build of dpgate (e.g. the
//! previous release), each query also goes through that build, on the
//! same data in the same run, and the bench prints this build / baseline.
//!
//! Run: `cargo bench --bench scale` (SCALE_ROWS=1000000,10000000 and
//! SCALE_ITERS to change).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

/// (label, private query, plain query) over `big` (≤ 5 rows per patient).
const QUERIES: [(&str, &str); 5] = [
    ("COUNT", "SELECT COUNT(*) FROM big"),
    ("SUM", "SELECT SUM(age) FROM big"),
    ("AVG", "SELECT AVG(cost) FROM big"),
    (
        "grouped AVG",
        "SELECT ward, AVG(cost) FROM big GROUP BY ward",
    ),
    (
        "quantile",
        "SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY age) FROM big",
    ),
];

/// The same rows in random physical order: `big` is stored patient by
/// patient, as a table loaded per person would be; a table filled over
/// time holds each person's rows scattered, and grouping by the unit
/// costs more there.
const SHUFFLED: [(&str, &str); 2] = [
    ("COUNT", "SELECT COUNT(*) FROM big_shuffled"),
    ("SUM", "SELECT SUM(age) FROM big_shuffled"),
];

/// The same over `members` (one row per member, unit declared unique).
const UNIQUE: [(&str, &str); 2] = [
    ("COUNT", "SELECT COUNT(*) FROM members"),
    ("SUM", "SELECT SUM(fee) FROM members"),
];

/// The rewrite dpgate used before per-unit pre-aggregation, for COUNT and SUM.
const ROW_SAMPLED: [(&str, &str); 2] = [
    (
        "COUNT",
        "SELECT COUNT(*) FROM (SELECT ROW_NUMBER() OVER (PARTITION BY patient_id ORDER BY random()) AS rn FROM big) s WHERE rn <= 5",
    ),
    (
        "SUM",
        "SELECT SUM(LEAST(GREATEST(age, 0), 110)) FROM (SELECT age, ROW_NUMBER() OVER (PARTITION BY patient_id ORDER BY random()) AS rn FROM big) s WHERE rn <= 5",
    ),
];

async fn median_of(iters: usize, client: &tokio_postgres::Client, sql: &str) -> Duration {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut samples = Vec::new();
    for _ in 0..iters {
        let t = Instant::now();
        client.simple_query(sql).await.unwrap();
        samples.push(t.elapsed());
    }
    samples.sort();
    samples[samples.len() / 2]
}

/// Peak resident memory of process `pid`, from /proc.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let sizes: Vec<i64> = std::env::var("SCALE_ROWS")
        .unwrap_or_else(|_| "1000000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .expect("SCALE_ROWS: comma-separated row counts")
        })
        .collect();
    let iters: usize = env_number("SCALE_ITERS", 5);
    let rt = bench_runtime();
    rt.block_on(async move {
        for rows in sizes {
            let db = empty_database(&format!("scale_{rows}")).await;
            let admin = connect_direct(&cluster().url(&db)).await;
            let t = Instant::now();
            // 1 + p % 5 rows for patient p: 3 on average, at most 5.
            admin
                .batch_execute(&format!(
                    "CREATE TABLE big (patient_id int, age int, cost float8, ward text);
                     INSERT INTO big SELECT p, (p::bigint * 37 + v * 11) % 110, ((p::bigint * 7919 + v * 104729) % 500000) / 100.0,
                            (ARRAY['A','B','C'])[1 + (p + v) % 3]
                       FROM generate_series(1, {patients}) AS p, generate_series(1, 1 + p % 5) AS v;
                     CREATE TABLE big_shuffled AS SELECT * FROM big ORDER BY random();
                     CREATE TABLE members (member_id int PRIMARY KEY, fee int);
                     INSERT INTO members SELECT g, g % 100 FROM generate_series(1, {rows}) g;
                     GRANT SELECT ON big, big_shuffled, members TO PUBLIC;",
                    patients = rows / 3
                ))
                .await
                .unwrap();
            // Both sides run with the same settings: a hash aggregation by
            // unit wants more than the default 4 MB of work_mem (as an
            // operator would give dpgate's role: ALTER ROLE ... SET
            // work_mem), and no parallel workers, for steady timings.
            admin
                .batch_execute(&format!(
                    "ALTER DATABASE {db} SET work_mem = '64MB';
                     ALTER DATABASE {db} SET max_parallel_workers_per_gather = 0;"
                ))
                .await
                .unwrap();
            // Separately: VACUUM cannot run inside the batch's transaction.
            for table in ["big", "big_shuffled", "members"] {
                admin
                    .batch_execute(&format!("VACUUM ANALYZE {table}"))
                    .await
                    .unwrap();
            }
            let generated = t.elapsed();
            let dir = tempdir();
            let port = free_port();
            let text = format!(
                r#"
[server]
listen = "127.0.0.1:{port}"
[backend]
url = "{url}"
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
privacy_unit = "patient_id"
max_rows_per_unit = 5
columns.age = {{ type = "int", lower = 0, upper = 110 }}
columns.cost = {{ type = "float", lower = 0, upper = 5000 }}
columns.ward = {{ type = "text", values = ["A", "B", "C"] }}
[[tables]]
name = "big_shuffled"
privacy_unit = "patient_id"
max_rows_per_unit = 5
columns.age = {{ type = "int", lower = 0, upper = 110 }}
[[tables]]
name = "members"
privacy_unit = "member_id"
privacy_unit_unique = true
columns.fee = {{ type = "int", lower = 0, upper = 100 }}
"#,
                url = cluster().reader_url(&db),
                ledger = dir.path().join("l.sqlite").display()
            );
            let gate = Dpgate::start(dir.path(), &text, port);
            let (proxy, _notices) = gate.connect().await;
            // The baseline build, if given: same config, its own ledger.
            let base_dir = tempdir();
            let baseline = match std::env::var_os("DPGATE_BASELINE_BIN") {
                Some(bin) => {
                    let base_port = free_port();
                    let path = base_dir.path().join("proxy.toml");
                    std::fs::write(
                        &path,
                        text.replace(&format!(":{port}\""), &format!(":{base_port}\""))
                            .replace(
                                &dir.path().join("l.sqlite").display().to_string(),
                                &base_dir.path().join("l.sqlite").display().to_string(),
                            ),
                    )
                    .unwrap();
                    let base = Dpgate::run_binary(
                        std::path::Path::new(&bin),
                        base_dir.path(),
                        &["serve", "--config", &path.display().to_string()],
                        base_port,
                    );
                    let client = base.connect().await.0;
                    Some((base, client))
                }
                None => None,
            };
            let direct = connect_direct(&cluster().url(&db)).await;
            let n: i64 = direct
                .query_one("SELECT COUNT(*) FROM big", &[])
                .await
                .unwrap()
                .get(0);
            println!(
                "scale: {n} rows in big (≤ 5 per patient), {rows} in members (unique unit); generated in {generated:.1?}; median of {iters}"
            );
            let base_columns = if baseline.is_some() { "    baseline  this/base" } else { "" };
            println!(
                "  {:<22} {:>11} {:>11} {:>8}{base_columns}",
                "query", "plain", "dpgate", "ratio"
            );
            for (table, queries) in [
                ("big", &QUERIES[..]),
                ("big_shuffled", &SHUFFLED[..]),
                ("members", &UNIQUE[..]),
            ] {
                for (label, sql) in queries {
                    let plain = median_of(iters, &direct, sql).await;
                    let through = median_of(iters, &proxy, sql).await;
                    let base = match &baseline {
                        Some((_, client)) => {
                            let b = median_of(iters, client, sql).await;
                            format!(
                                " {b:>11.2?} {:>10.2}",
                                through.as_secs_f64() / b.as_secs_f64()
                            )
                        }
                        None => String::new(),
                    };
                    println!(
                        "  {:<22} {plain:>11.2?} {through:>11.2?} {:>8.2}{base}",
                        format!("{label} ({table})"),
                        through.as_secs_f64() / plain.as_secs_f64()
                    );
                }
            }
            println!("  former rewrite (ROW_NUMBER per unit), straight at PostgreSQL:");
            for (label, sql) in ROW_SAMPLED {
                let plain_sql = QUERIES.iter().find(|(l, _)| *l == label).unwrap().1;
                let plain = median_of(iters, &direct, plain_sql).await;
                let sampled = median_of(iters, &direct, sql).await;
                println!(
                    "  {:<22} {plain:>11.2?} {sampled:>11.2?} {:>8.2}",
                    format!("{label} (big)"),
                    sampled.as_secs_f64() / plain.as_secs_f64()
                );
            }
            if let Some(mib) = peak_rss_mib(gate.child.id()) {
                println!("  dpgate peak resident memory: {mib:.1} MiB");
            }
        }
    });
}
