//! Utility at equal cost: dpgate against SmartNoise SQL on the same
//! PostgreSQL table, the same bounds and the same privacy unit bound.
//!
//! SmartNoise (the `smartnoise-sql` package, in a virtual environment this
//! bench creates under `target/utility-venv`) runs each query at ε = 0.1
//! per mechanism and reports what that cost (it charges every mechanism
//! its full ε, so AVG costs 0.2); dpgate then runs the same query with
//! `dp.epsilon` set to that cost, so both answers cost the same. Each
//! query is repeated `UTILITY_REPEATS` times (200) by each system; the
//! bench prints each output column's mean |error| against PostgreSQL's
//! exact answer, and the ratio dpgate / SmartNoise (below 1: dpgate is
//! closer at the same cost). Then latency: each query's p50 straight at
//! PostgreSQL (the plain query), through dpgate (cache off) and through
//! SmartNoise SQL (psycopg2 to the same server), from the same repeats,
//! and the ratios SmartNoise / dpgate and dpgate / plain.
//!
//! Run: `cargo bench --bench utility` (needs python3 and PyPI once).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// SmartNoise's ε per mechanism.
const EPSILON: f64 = 0.1;

const QUERIES: &[(&str, &str)] = &[
    ("COUNT", "SELECT COUNT(*) FROM public.visits"),
    ("SUM", "SELECT SUM(cost) FROM public.visits"),
    ("AVG", "SELECT AVG(age) FROM public.visits"),
    (
        "4 aggregates",
        "SELECT COUNT(*), SUM(cost), AVG(age), AVG(cost) FROM public.visits",
    ),
    (
        "grouped AVG",
        "SELECT ward, AVG(age) FROM public.visits GROUP BY ward",
    ),
];

/// The same table, bounds and per-unit bound, in SmartNoise's terms.
const METADATA: &str = "Database:
  public:
    visits:
      max_ids: 5
      row_privacy: False
      censor_dims: False
      patient_id:
        type: int
        private_id: True
      age:
        type: int
        lower: 0
        upper: 110
        nullable: False
      cost:
        type: float
        lower: 0
        upper: 5000
        nullable: False
      ward:
        type: string
";

/// One answer: rows of cells, a grouped query's rows keyed by their key.
type Rows = Vec<Vec<Option<String>>>;

/// The virtual environment with smartnoise-sql and psycopg2, created on
/// first use.
fn venv() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/utility-venv");
    let python = dir.join("bin/python");
    if !python.exists() {
        eprintln!("creating {} (smartnoise-sql from PyPI)...", dir.display());
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(dir.join("bin/pip"))
                .args(["install", "-q", "smartnoise-sql", "psycopg2-binary"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok, "could not create the SmartNoise virtual environment");
    }
    python
}

/// SmartNoise's answers: for each query, (recorded ε, recorded δ, answers,
/// p50 latency).
fn smartnoise(dsn: &str, repeats: usize) -> Vec<(f64, f64, Vec<Rows>, Duration)> {
    let dir = tempdir();
    let meta = dir.path().join("visits.yaml");
    std::fs::write(&meta, METADATA).unwrap();
    let job = serde_json::json!({
        "dsn": dsn,
        "epsilon": EPSILON,
        "delta": 1e-6,
        "repeats": repeats,
        "metadata": meta,
        "queries": QUERIES.iter().map(|(_, q)| *q).collect::<Vec<_>>(),
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/utility/smartnoise.py");
    let mut child = Command::new(venv())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(job.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "smartnoise.py failed");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = |c: &serde_json::Value| match c {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    };
    v["queries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| {
            let answers = q["answers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|rows| {
                    rows.as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r.as_array().unwrap().iter().map(text).collect())
                        .collect()
                })
                .collect();
            let seconds = q["seconds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| Duration::from_secs_f64(s.as_f64().unwrap()))
                .collect();
            (
                q["epsilon"].as_f64().unwrap(),
                q["delta"].as_f64().unwrap(),
                answers,
                median(seconds),
            )
        })
        .collect()
}

async fn rows(client: &tokio_postgres::Client, sql: &str) -> Rows {
    simple_rows(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Rows sorted by their first cell when the query is grouped (so keys line
/// up), each cell as a number where it is one.
fn numbers(rows: &Rows, grouped: bool) -> Vec<(Option<String>, Vec<f64>)> {
    let mut out: Vec<(Option<String>, Vec<f64>)> = rows
        .iter()
        .map(|r| {
            let (key, cells) = if grouped {
                (r[0].clone(), &r[1..])
            } else {
                (None, &r[..])
            };
            let values = cells
                .iter()
                .map(|c| {
                    c.as_deref()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(f64::NAN)
                })
                .collect();
            (key, values)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Mean |error| of each output column (over repeats and groups), with
/// the standard error of that mean.
fn mean_abs_errors(answers: &[Rows], truth: &Rows, grouped: bool) -> Vec<(f64, f64)> {
    let truth = numbers(truth, grouped);
    let width = truth.first().map_or(0, |(_, v)| v.len());
    let mut errors: Vec<Vec<f64>> = vec![Vec::new(); width];
    for answer in answers {
        let got = numbers(answer, grouped);
        for (key, want) in &truth {
            // A group missing from an answer counts as 0 released.
            let row = got.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
            for j in 0..width {
                let g = row.as_ref().map_or(0.0, |r| r[j]);
                if g.is_finite() {
                    errors[j].push((g - want[j]).abs());
                }
            }
        }
    }
    errors
        .iter()
        .map(|e| {
            let n = e.len().max(1) as f64;
            let mean = e.iter().sum::<f64>() / n;
            let var = e.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
            (mean, (var / n).sqrt())
        })
        .collect()
}

fn main() {
    let repeats: usize = env_number("UTILITY_REPEATS", 200);
    let rt = bench_runtime();
    rt.block_on(async move {
        let (db, n_rows) = visits_database("utility", 3334).await;
        let url = cluster().url(&db);
        let dsn = format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            cluster().port
        );
        let sn = tokio::task::spawn_blocking(move || smartnoise(&dsn, repeats))
            .await
            .unwrap();

        let dir = tempdir();
        let port = free_port();
        let config = proxy_toml(&db, port, &dir.path().join("l.sqlite"), 1e9, EPSILON)
            .replace(
                "columns.age = { type = \"int\", lower = 0, upper = 110 }",
                "columns.age = { type = \"int\", lower = 0, upper = 110, not_null = true }",
            )
            .replace(
                "columns.cost = { type = \"float\", lower = 0, upper = 5000 }",
                "columns.cost = { type = \"float\", lower = 0, upper = 5000, not_null = true }",
            )
            + "[cache]\nenabled = false\n";
        let gate = Dpgate::start(dir.path(), &config, port);
        let (proxy, _notices) = gate.connect().await;
        let direct = connect_direct(&url).await;

        println!(
            "utility over {n_rows} rows, {repeats} repeats per query and system, \
             SmartNoise at ε = {EPSILON} per mechanism, dpgate at the ε SmartNoise recorded:"
        );
        println!(
            "  {:<13} {:>5} {:>8}  {:<12} {:>22} {:>22} {:>7}",
            "query", "ε", "δ (SN)", "column", "dpgate mean|err| ± se", "SmartNoise", "ratio"
        );
        let mut latencies = Vec::new();
        for ((name, sql), (eps, delta, sn_answers, sn_p50)) in QUERIES.iter().zip(&sn) {
            let grouped = sql.contains("GROUP BY");
            let truth = rows(&direct, sql).await;
            proxy
                .batch_execute(&format!("SET dp.epsilon = {eps}"))
                .await
                .unwrap();
            let mut ours = Vec::with_capacity(repeats);
            let mut ours_took = Vec::with_capacity(repeats);
            let mut plain_took = Vec::with_capacity(repeats);
            for _ in 0..repeats {
                let t = Instant::now();
                ours.push(rows(&proxy, sql).await);
                ours_took.push(t.elapsed());
                let t = Instant::now();
                rows(&direct, sql).await;
                plain_took.push(t.elapsed());
            }
            latencies.push((*name, median(plain_took), median(ours_took), *sn_p50));
            let (a, b) = (
                mean_abs_errors(&ours, &truth, grouped),
                mean_abs_errors(sn_answers, &truth, grouped),
            );
            let columns: Vec<String> = sql
                .trim_start_matches("SELECT ")
                .split(" FROM")
                .next()
                .unwrap()
                .split(", ")
                .filter(|c| !grouped || *c != "ward")
                .map(str::to_string)
                .collect();
            let mut log_ratio = 0.0;
            for (j, ((x, sx), (y, sy))) in a.iter().zip(&b).enumerate() {
                log_ratio += (x / y).ln();
                println!(
                    "  {:<13} {:>5} {:>8}  {:<12} {:>22} {:>22} {:>7.3}",
                    if j == 0 { *name } else { "" },
                    if j == 0 {
                        format!("{eps}")
                    } else {
                        String::new()
                    },
                    if j == 0 {
                        format!("{delta:.0e}")
                    } else {
                        String::new()
                    },
                    columns.get(j).map_or("?", String::as_str),
                    format!("{x:.3} ± {sx:.3}"),
                    format!("{y:.3} ± {sy:.3}"),
                    x / y
                );
            }
            if a.len() > 1 {
                println!(
                    "  {:<13} {:>5} {:>8}  {:<12} {:>22} {:>22} {:>7.3}",
                    "",
                    "",
                    "",
                    "(geo. mean)",
                    "",
                    "",
                    (log_ratio / a.len() as f64).exp()
                );
            }
        }
        println!("latency, p50 of {repeats} (dpgate cache off; SmartNoise through psycopg2):");
        println!(
            "  {:<13} {:>11} {:>11} {:>11} {:>14} {:>14}",
            "query", "plain PG", "dpgate", "SmartNoise", "SN / dpgate", "dpgate / PG"
        );
        for (name, plain, ours, sn) in latencies {
            println!(
                "  {name:<13} {plain:>11.2?} {ours:>11.2?} {sn:>11.2?} {:>14.1} {:>14.2}",
                sn.as_secs_f64() / ours.as_secs_f64(),
                ours.as_secs_f64() / plain.as_secs_f64()
            );
        }
    });
}
