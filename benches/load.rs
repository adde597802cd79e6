//! Throughput under load: 32 concurrent clients send a mix of ungrouped,
//! grouped and joined private queries through dpgate (cache off, so each
//! is charged durably, run and released), and 32 clients send the same
//! queries' rewritten SQL straight to PostgreSQL, in the same run against
//! the same throwaway cluster. Prints queries per second and p50/p99
//! latency of both, and their ratios. First, one client sends each shape
//! straight and through dpgate in turn, 200 rounds, and dpgate's own time
//! is the p50 of the per-round difference (robust to slow spells of the
//! machine, which hit both sides of a round alike).
//!
//! With `DPGATE_BASELINE_BIN` set to another build of dpgate (e.g. the
//! previous release), the same load also goes through that build, on the
//! same data in the same run, and the bench prints this build / baseline.
//!
//! Run: `cargo bench --bench load` (LOAD_ROWS, LOAD_CLIENTS and
//! LOAD_SECONDS to change size; every loop is bounded in time and count
//! and talks to loopback only).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use dpgate_sql::{classify, plan, Command};

/// The mix: one of each shape per three queries.
const QUERIES: [&str; 3] = [
    "SELECT COUNT(*), AVG(age) FROM visits WHERE ward = 'A'",
    "SELECT ward, COUNT(*), AVG(cost) FROM visits GROUP BY ward",
    "SELECT p.sex, COUNT(*), AVG(v.age) FROM visits v JOIN patients p ON v.patient_id = p.patient_id GROUP BY p.sex",
];

/// Most queries one client sends (a bound besides the time).
const MAX_PER_CLIENT: usize = 100_000;

/// Queries per second and sorted latencies of `clients` running `queries`
/// in turn for `seconds`.
async fn drive(
    clients: Vec<tokio_postgres::Client>,
    queries: Arc<Vec<String>>,
    seconds: u64,
) -> (f64, Vec<Duration>) {
    let start = Instant::now();
    let stop = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let queries = queries.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = i;
            while Instant::now() < stop && latencies.len() < MAX_PER_CLIENT {
                let t = Instant::now();
                client
                    .simple_query(&queries[n % queries.len()])
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", queries[n % queries.len()]));
                latencies.push(t.elapsed());
                n += 1;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / elapsed, all)
}

/// Rounds one client sends per query shape for the one-client figures.
const SOLO_ITERS: usize = 200;

/// One client's figures for one query shape: in each round the rewritten
/// query goes straight to PostgreSQL, then the query through each gate, so
/// that a slow spell of the machine hits every side alike. Returns the p50
/// straight, and per gate its p50 and the p50 of its own time (its latency
/// minus the direct latency of the same round).
async fn solo(
    direct: &tokio_postgres::Client,
    rewritten: &str,
    gates: &[&tokio_postgres::Client],
    sql: &str,
) -> (Duration, Vec<(Duration, Duration)>) {
    let mut straight = Vec::new();
    let mut through = vec![Vec::new(); gates.len()];
    let mut own = vec![Vec::new(); gates.len()];
    for i in 0..SOLO_ITERS + 5 {
        let d = timed(direct, rewritten).await;
        for (g, gate) in gates.iter().enumerate() {
            let t = timed(gate, sql).await;
            if i >= 5 {
                through[g].push(t);
                own[g].push(t.as_secs_f64() - d.as_secs_f64());
            }
        }
        if i >= 5 {
            straight.push(d);
        }
    }
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let per_gate = through
        .into_iter()
        .zip(own)
        .map(|(t, mut o)| {
            o.sort_by(f64::total_cmp);
            (median(t), Duration::from_secs_f64(o[o.len() / 2].max(0.0)))
        })
        .collect();
    (median(straight), per_gate)
}

/// How long `sql` takes on `client`.
async fn timed(client: &tokio_postgres::Client, sql: &str) -> Duration {
    let t = Instant::now();
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    t.elapsed()
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let patients = env_number::<i64>("LOAD_ROWS", 10_000) / 3;
    let clients: usize = env_number("LOAD_CLIENTS", 32);
    let seconds: u64 = env_number("LOAD_SECONDS", 10);
    let rt = bench_runtime();
    rt.block_on(async move {
        let db = hospital_database("load", patients).await;
        let rows: i64 = connect_direct(&cluster().url(&db))
            .await
            .query_one("SELECT COUNT(*) FROM visits", &[])
            .await
            .unwrap()
            .get(0);
        let dir = tempdir();
        let port = free_port();
        let text = hospital_toml(&db, port, &dir.path().join("l.sqlite"), 1e9, 0.1)
            .replacen("[server]\n", "[server]\nmax_connections = 200\n", 1)
            + "[cache]\nenabled = false\n";
        let gate = Dpgate::start(dir.path(), &text, port);
        let (config, _) = server_config(&text, PASSWORD).await;
        let rewritten: Vec<String> = QUERIES
            .iter()
            .map(|q| {
                let Command::Private(query) = classify(q).unwrap().remove(0) else {
                    unreachable!()
                };
                plan(&query, &config, 0.1).unwrap().backend_sql
            })
            .collect();
        // The baseline build, if given: same config, a ledger of its own.
        let baseline = std::env::var_os("DPGATE_BASELINE_BIN").map(|bin| {
            let (base_dir, base_port) = (tempdir(), free_port());
            let text = text
                .replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{base_port}"))
                .replace(
                    &dir.path().join("l.sqlite").display().to_string(),
                    &base_dir.path().join("l.sqlite").display().to_string(),
                );
            let path = base_dir.path().join("proxy.toml");
            std::fs::write(&path, &text).unwrap();
            let path = path.display().to_string();
            let base = Dpgate::run_binary(
                std::path::Path::new(&bin),
                base_dir.path(),
                &["serve", "--config", &path],
                base_port,
            );
            (base, base_dir)
        });
        // One client first: each query's p50 straight at PostgreSQL
        // (rewritten) and through dpgate, in turn; dpgate's own time per
        // query (parse, plan, durable charge and outcome, noise) is the
        // p50 of the difference within each round.
        println!("one client, p50 of {SOLO_ITERS} rounds (direct, then each gate, in turn):");
        let base_columns = if baseline.is_some() { "    baseline   own time" } else { "" };
        println!(
            "  {:<12} {:>11} {:>11} {:>11}{base_columns}",
            "query", "direct", "dpgate", "own time"
        );
        {
            let solo_direct = connect_direct(&cluster().url(&db)).await;
            let mut solo_gates = vec![gate.connect().await.0];
            if let Some((base, _)) = &baseline {
                solo_gates.push(base.connect().await.0);
            }
            let gates: Vec<&tokio_postgres::Client> = solo_gates.iter().collect();
            for (i, (q, r)) in QUERIES.iter().zip(&rewritten).enumerate() {
                let (d, per_gate) = solo(&solo_direct, r, &gates, q).await;
                let mut line = format!("  {:<12} {d:>11.2?}", ["ungrouped", "grouped", "joined"][i]);
                for (latency, own) in per_gate {
                    line += &format!(" {latency:>11.2?} {own:>11.2?}");
                }
                println!("{line}");
            }
        }
        let mut proxied = Vec::new();
        let mut direct = Vec::new();
        for _ in 0..clients {
            proxied.push(gate.connect().await.0);
            direct.push(connect_direct(&cluster().url(&db)).await);
        }
        let (direct_qps, direct_lat) = drive(direct, Arc::new(rewritten), seconds).await;
        let queries: Arc<Vec<String>> = Arc::new(QUERIES.iter().map(|q| q.to_string()).collect());
        let (gate_qps, gate_lat) = drive(proxied, queries.clone(), seconds).await;
        let baseline = match baseline {
            Some((base, base_dir)) => {
                let mut clients_of_base = Vec::new();
                for _ in 0..clients {
                    clients_of_base.push(base.connect().await.0);
                }
                let (qps, lat) = drive(clients_of_base, queries, seconds).await;
                Some((qps, lat, base, base_dir))
            }
            None => None,
        };
        println!(
            "load over {rows} rows, {clients} clients, {seconds} s each, mix of ungrouped, grouped and joined (cache off):"
        );
        println!("                         queries/s      p50        p99");
        let mut rows_out = vec![
            ("rewritten, direct", direct_qps, &direct_lat),
            ("through dpgate", gate_qps, &gate_lat),
        ];
        if let Some((qps, lat, _, _)) = &baseline {
            rows_out.push(("through baseline", *qps, lat));
        }
        for (name, qps, lat) in rows_out {
            println!(
                "  {name:<20} {qps:>10.1} {:>10.2?} {:>10.2?}",
                pct(lat, 0.5),
                pct(lat, 0.99)
            );
        }
        println!("  ratio dpgate / direct, queries/s: {:.3}", gate_qps / direct_qps);
        println!(
            "  ratio dpgate / direct, p50:       {:.3}",
            pct(&gate_lat, 0.5).as_secs_f64() / pct(&direct_lat, 0.5).as_secs_f64()
        );
        println!(
            "  ratio dpgate / direct, p99:       {:.3}",
            pct(&gate_lat, 0.99).as_secs_f64() / pct(&direct_lat, 0.99).as_secs_f64()
        );
        if let Some((qps, lat, _, _)) = &baseline {
            println!("  ratio baseline / direct, queries/s: {:.3}", qps / direct_qps);
            println!("  ratio this build / baseline, queries/s: {:.3}", gate_qps / qps);
            println!(
                "  ratio this build / baseline, p50: {:.3}",
                pct(&gate_lat, 0.5).as_secs_f64() / pct(lat, 0.5).as_secs_f64()
            );
        }
    });
}
