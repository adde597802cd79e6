//! Throughput under load: 32 concurrent clients send a mix of ungrouped,
//! grouped and joined private queries through dpgate (cache off, so each
//! is charged durably, run and released), and 32 clients send the same
//! queries' rewritten SQL straight to PostgreSQL (as simple queries, then
//! as statements each prepared once), in the same run against the same
//! throwaway cluster. Prints queries per second and p50/p99
//! latency of both, and their ratios. First, one client sends each shape
//! straight (simple, and prepared once as dpgate sends a repeated backend
//! query) and through dpgate, every side once per round in rotating
//! order, 200 rounds, and dpgate's own time is the p50 of the per-round
//! difference from each direct side (robust to slow spells of the
//! machine, which hit every side of a round alike).
//!
//! With `DPGATE_BASELINE_BIN` set to another build of dpgate (e.g. the
//! previous release), the same load also goes through that build, on the
//! same data in the same run, and the bench prints this build / baseline.
//!
//! With `LOAD_LEDGER=postgres`, each dpgate's ledger is a database of
//! the same cluster (the store replicas share) instead of a SQLite file.
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
/// in turn for `seconds`, as simple queries or (`prepared`) as statements
/// each client prepares once.
async fn drive(
    clients: Vec<tokio_postgres::Client>,
    queries: Arc<Vec<String>>,
    seconds: u64,
    prepared: bool,
) -> (f64, Vec<Duration>) {
    let mut statements = Vec::new();
    for client in &clients {
        let mut mine = Vec::new();
        if prepared {
            for q in queries.iter() {
                mine.push(client.prepare(q).await.unwrap());
            }
        }
        statements.push(mine);
    }
    let start = Instant::now();
    let stop = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, (client, statements)) in clients.into_iter().zip(statements).enumerate() {
        let queries = queries.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n = i;
            while Instant::now() < stop && latencies.len() < MAX_PER_CLIENT {
                let t = Instant::now();
                let j = n % queries.len();
                let done = match statements.get(j) {
                    Some(statement) => client.query(statement, &[]).await.map(drop),
                    None => client.simple_query(&queries[j]).await.map(drop),
                };
                done.unwrap_or_else(|e| panic!("{}: {e}", queries[j]));
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

/// One client's figures for one query shape. Each round sends the
/// rewritten query straight to PostgreSQL as a simple query (parsed and
/// planned each time) and as a statement prepared once (how dpgate sends
/// a backend query it has sent before), and the query through each gate;
/// the order rotates from round to round, so that neither a slow spell of
/// the machine nor the warm caches a query leaves for the next favour
/// one side. Returns the p50 straight (simple, prepared), and per gate its
/// p50 and the p50s of its own time: its latency minus the simple direct
/// latency of the same round, and minus the prepared one (which does not
/// count as saved the backend's parsing and planning that dpgate's
/// prepared statement skips).
async fn solo(
    direct: &tokio_postgres::Client,
    rewritten: &str,
    gates: &[&tokio_postgres::Client],
    sql: &str,
) -> (Duration, Duration, Vec<(Duration, [Duration; 2])>) {
    let statement = direct.prepare(rewritten).await.unwrap();
    let sides = 2 + gates.len();
    // Per side (simple, prepared, then each gate), its latency per round.
    let mut taken = vec![Vec::new(); sides];
    for i in 0..SOLO_ITERS + 5 {
        let mut round = vec![Duration::ZERO; sides];
        for k in 0..sides {
            let side = (i + k) % sides;
            round[side] = match side {
                0 => timed(direct.simple_query(rewritten)).await,
                1 => timed(direct.query(&statement, &[])).await,
                g => timed(gates[g - 2].simple_query(sql)).await,
            };
        }
        if i >= 5 {
            for (side, t) in round.into_iter().enumerate() {
                taken[side].push(t);
            }
        }
    }
    // The p50 of a gate's latency minus a direct side's, round by round.
    let own = |gate: &[Duration], direct: &[Duration]| {
        let mut d: Vec<f64> = gate
            .iter()
            .zip(direct)
            .map(|(t, d)| t.as_secs_f64() - d.as_secs_f64())
            .collect();
        d.sort_by(f64::total_cmp);
        Duration::from_secs_f64(d[d.len() / 2].max(0.0))
    };
    let own: Vec<[Duration; 2]> = taken[2..]
        .iter()
        .map(|gate| [own(gate, &taken[0]), own(gate, &taken[1])])
        .collect();
    let mut taken = taken.into_iter();
    let (straight, prepared) = (taken.next().unwrap(), taken.next().unwrap());
    let through: Vec<Vec<Duration>> = taken.collect();
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let per_gate = through
        .into_iter()
        .zip(own)
        .map(|(t, o)| (median(t), o))
        .collect();
    (median(straight), median(prepared), per_gate)
}

/// How long `query` takes to answer.
async fn timed<T>(
    query: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Duration {
    let t = Instant::now();
    query.await.unwrap_or_else(|e| panic!("{e}"));
    t.elapsed()
}

/// The `[ledger]` store line (`path = …` or `url = …`) of a config.
fn ledger_of(text: &str) -> String {
    let section = text.find("[ledger]\n").expect("a [ledger] section") + "[ledger]\n".len();
    text[section..]
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The `[ledger]` store line of a dpgate with the files of `dir`: a new
/// database of the bench's cluster (`postgres`), or a SQLite file in `dir`.
async fn ledger(postgres: bool, dir: &tempfile::TempDir) -> String {
    match postgres {
        true => format!(
            "url = \"{}\"",
            cluster().url(&empty_database("load_ledger").await)
        ),
        false => format!("path = \"{}\"", dir.path().join("l.sqlite").display()),
    }
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
        let pg_ledger = std::env::var("LOAD_LEDGER").is_ok_and(|v| v == "postgres");
        let text = hospital_toml(&db, port, &dir.path().join("l.sqlite"), 1e9, 0.1)
            .replacen("[server]\n", "[server]\nmax_connections = 200\n", 1)
            + "[cache]\nenabled = false\n";
        let text = text.replacen(&ledger_of(&text), &ledger(pg_ledger, &dir).await, 1);
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
        let baseline = match std::env::var_os("DPGATE_BASELINE_BIN") {
            Some(bin) => {
                let (base_dir, base_port) = (tempdir(), free_port());
                let base_ledger = ledger(pg_ledger, &base_dir).await;
                Some((bin, base_dir, base_port, base_ledger))
            }
            None => None,
        };
        let baseline = baseline.map(|(bin, base_dir, base_port, base_ledger)| {
            let text = text
                .replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{base_port}"))
                .replacen(&ledger_of(&text), &base_ledger, 1);
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
        if pg_ledger {
            println!("ledgers: PostgreSQL databases of the bench's cluster");
        }
        // One client first: each query's p50 straight at PostgreSQL
        // (rewritten, simple and prepared) and through dpgate, in rotating
        // order; dpgate's own time per query (parse, plan, durable charge
        // and outcome, noise) is the p50 of the difference within each
        // round.
        println!(
            "one client, p50 of {SOLO_ITERS} rounds (every side once per round, \
             in rotating order; own time = dpgate minus direct, simple | prepared, per round):"
        );
        let base_columns = if baseline.is_some() {
            "    baseline  own (simple | prepared)"
        } else {
            ""
        };
        println!(
            "  {:<12} {:>11} {:>11} {:>11} {:>11}{base_columns}",
            "query", "direct", "prepared", "dpgate", "own (simple | prepared)"
        );
        {
            let solo_direct = connect_direct(&cluster().url(&db)).await;
            let mut solo_gates = vec![gate.connect().await.0];
            if let Some((base, _)) = &baseline {
                solo_gates.push(base.connect().await.0);
            }
            let gates: Vec<&tokio_postgres::Client> = solo_gates.iter().collect();
            for (i, (q, r)) in QUERIES.iter().zip(&rewritten).enumerate() {
                let (s, d, per_gate) = solo(&solo_direct, r, &gates, q).await;
                let name = ["ungrouped", "grouped", "joined"][i];
                let mut line = format!("  {name:<12} {s:>11.2?} {d:>11.2?}");
                for (latency, [simple, prepared]) in per_gate {
                    line += &format!(" {latency:>11.2?} {simple:>11.2?} | {prepared:>9.2?}");
                }
                println!("{line}");
            }
        }
        let mut proxied = Vec::new();
        let (mut direct, mut direct_prepared) = (Vec::new(), Vec::new());
        for _ in 0..clients {
            proxied.push(gate.connect().await.0);
            direct.push(connect_direct(&cluster().url(&db)).await);
            direct_prepared.push(connect_direct(&cluster().url(&db)).await);
        }
        let rewritten = Arc::new(rewritten);
        let (direct_qps, direct_lat) = drive(direct, rewritten.clone(), seconds, false).await;
        let (prepared_qps, prepared_lat) = drive(direct_prepared, rewritten, seconds, true).await;
        let queries: Arc<Vec<String>> = Arc::new(QUERIES.iter().map(|q| q.to_string()).collect());
        let (gate_qps, gate_lat) = drive(proxied, queries.clone(), seconds, false).await;
        let baseline = match baseline {
            Some((base, base_dir)) => {
                let mut clients_of_base = Vec::new();
                for _ in 0..clients {
                    clients_of_base.push(base.connect().await.0);
                }
                let (qps, lat) = drive(clients_of_base, queries, seconds, false).await;
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
            ("direct, prepared", prepared_qps, &prepared_lat),
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
            "  ratio dpgate / direct prepared, queries/s: {:.3}",
            gate_qps / prepared_qps
        );
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
