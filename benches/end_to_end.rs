//! End-to-end latency: the same aggregate through dpgate and straight at
//! PostgreSQL, in the same run, against the same throwaway cluster.
//!
//! Prints median latencies and the ratios dpgate / direct-rewritten (the
//! proxy's own overhead: parse, plan, charge and audit, noise, wire),
//! rewritten / plain (the cost of contribution bounding in the backend),
//! a PostgreSQL ledger against the SQLite one, a free repeat from the
//! cache against the rewritten query, and the embedded SQLite backend
//! (the same rows, loaded from CSV) through dpgate against its rewritten
//! query run directly on the SQLite file.
//!
//! With `DPGATE_BASELINE_BIN` set to another build of dpgate (e.g. the
//! previous commit's `target/release/dpgate`), the same query also goes
//! through that build, on the same data in the same run, and the bench
//! prints this build / the baseline. `benches/baseline.sh REV` does it.
//!
//! Run: `cargo bench --bench end_to_end` (BENCH_ROWS and BENCH_ITERS to change size).

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use dpgate_sql::{classify, plan, Command};

const QUERY: &str = "SELECT COUNT(*), AVG(age), SUM(cost) FROM visits WHERE ward = 'A'";

fn main() {
    let patients: i64 = env_number("BENCH_ROWS", 100_000) / 3;
    let iters: usize = env_number("BENCH_ITERS", 100);
    let rt = bench_runtime();
    rt.block_on(async move {
        let (db, rows) = visits_database("bench", patients).await;
        let dir = tempdir();
        let port = free_port();
        // Cache off: every query is charged (audited, released) afresh.
        let config_text = proxy_toml(&db, port, &dir.path().join("l.sqlite"), 1e9, 0.1)
            + "[cache]\nenabled = false\n";
        let gate = Dpgate::start(dir.path(), &config_text, port);
        let (proxy, _notices) = gate.connect().await;
        // The same with the ledger in PostgreSQL, and with repeats cached.
        let ledger_db = empty_database("bench_ledger").await;
        let (pg_dir, pg_port) = (tempdir(), free_port());
        let pg_text = proxy_toml(&db, pg_port, &pg_dir.path().join("l.sqlite"), 1e9, 0.1)
            .replace(
                &format!("path = \"{}\"", pg_dir.path().join("l.sqlite").display()),
                &format!("url = \"{}\"", cluster().url(&ledger_db)),
            )
            + "[cache]\nenabled = false\n";
        let pg_gate = Dpgate::start(pg_dir.path(), &pg_text, pg_port);
        let (pg_proxy, _pg_notices) = pg_gate.connect().await;
        let (cache_dir, cache_port) = (tempdir(), free_port());
        let cache_text = proxy_toml(&db, cache_port, &cache_dir.path().join("l.sqlite"), 1e9, 0.1);
        let cache_gate = Dpgate::start(cache_dir.path(), &cache_text, cache_port);
        let (cache_proxy, _cache_notices) = cache_gate.connect().await;
        let direct = connect_direct(&cluster().url(&db)).await;
        // The previous build, if given: the same config in a directory of its own.
        let baseline_bin = std::env::var_os("DPGATE_BASELINE_BIN").map(std::path::PathBuf::from);
        let (base_dir, base_port) = (tempdir(), free_port());
        let baseline = baseline_bin.as_ref().map(|bin| {
            let text = proxy_toml(&db, base_port, &base_dir.path().join("l.sqlite"), 1e9, 0.1)
                + "[cache]\nenabled = false\n";
            let path = base_dir.path().join("proxy.toml");
            std::fs::write(&path, text).unwrap();
            let path = path.display().to_string();
            Dpgate::run_binary(bin, base_dir.path(), &["serve", "--config", &path], base_port)
        });
        let base_proxy = match &baseline {
            Some(gate) => Some(gate.connect().await.0),
            None => None,
        };

        let (config, _) = server_config(&config_text, PASSWORD).await;
        let Command::Private(query) = classify(QUERY).unwrap().remove(0) else {
            unreachable!()
        };
        let rewritten = plan(&query, &config, 0.1).unwrap().backend_sql;

        // This build and the baseline alternate query by query.
        let (through, through_baseline) = match &base_proxy {
            Some(p) => {
                let (a, b) = time_pair(
                    iters,
                    || async { proxy.simple_query(QUERY).await.map(|_| ()).unwrap() },
                    || async { p.simple_query(QUERY).await.map(|_| ()).unwrap() },
                )
                .await;
                (a, Some(b))
            }
            None => (
                time(iters, || async {
                    proxy.simple_query(QUERY).await.map(|_| ()).unwrap()
                })
                .await,
                None,
            ),
        };
        // dpgate and its rewritten query straight at PostgreSQL, query by
        // query, so that the difference (dpgate's own time) sees the same
        // moments of the machine on both sides.
        let (paired_through, paired_direct) = time_pair(
            iters,
            || async { proxy.simple_query(QUERY).await.map(|_| ()).unwrap() },
            || async { direct.simple_query(&rewritten).await.map(|_| ()).unwrap() },
        )
        .await;
        let through_pg_ledger = time(iters, || async {
            pg_proxy.simple_query(QUERY).await.map(|_| ()).unwrap()
        })
        .await;
        let repeated = time(iters, || async {
            cache_proxy.simple_query(QUERY).await.map(|_| ()).unwrap()
        })
        .await;
        let bounded = time(iters, || async {
            direct.simple_query(&rewritten).await.map(|_| ()).unwrap()
        })
        .await;
        let plain = time(iters, || async {
            direct.simple_query(QUERY).await.map(|_| ()).unwrap()
        })
        .await;

        // The extended protocol with a parameter (Parse/Bind/Describe/
        // Execute/Sync in one batch), through dpgate and direct.
        let param_query = "SELECT COUNT(*) FROM visits WHERE age >= $1";
        let through_extended = time(iters, || async {
            proxy.query(param_query, &[&30i64]).await.map(|_| ()).unwrap()
        })
        .await;
        // Baseline: the same query with 30 bound, rewritten by the planner
        // and sent straight to PostgreSQL (so the ratio is the proxy's own
        // cost, not contribution bounding's).
        let Command::Private(q) = classify("SELECT COUNT(*) FROM visits WHERE age >= 30")
            .unwrap()
            .remove(0)
        else {
            unreachable!()
        };
        let rewritten_param = plan(&q, &config, 0.1).unwrap().backend_sql;
        let direct_extended = time(iters, || async {
            direct.query(&rewritten_param, &[]).await.map(|_| ()).unwrap()
        })
        .await;

        // A catalog query (psql's \dt), through dpgate to its shadow
        // catalog (a private cluster of its own, unreachable from here) and
        // direct to the data's PostgreSQL, which answers the same query.
        let catalog_direct = connect_direct(&cluster().url(&db)).await;
        let dt = "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c \
                  LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                  WHERE c.relkind IN ('r','p') AND n.nspname <> 'pg_catalog' \
                  AND n.nspname <> 'information_schema' AND pg_catalog.pg_table_is_visible(c.oid) ORDER BY 1, 2";
        let through_catalog = time(iters, || async {
            proxy.simple_query(dt).await.map(|_| ()).unwrap()
        })
        .await;
        let direct_catalog = time(iters, || async {
            catalog_direct.simple_query(dt).await.map(|_| ()).unwrap()
        })
        .await;

        // The embedded SQLite backend over the same rows (CSV export).
        let (lite_dir, lite_port) = (tempdir(), free_port());
        let lite_text = sqlite_toml(
            &(proxy_toml(&db, lite_port, &lite_dir.path().join("l.sqlite"), 1e9, 0.1)
                + "[cache]\nenabled = false\n"),
            &db,
            &["visits"],
            lite_dir.path(),
        )
        .await;
        let lite_gate = Dpgate::start(lite_dir.path(), &lite_text, lite_port);
        let (lite_proxy, _lite_notices) = lite_gate.connect().await;
        let (lite_config, lite_backend) = server_config(&lite_text, PASSWORD).await;
        let lite_plan = plan(&query, &lite_config, 0.1).unwrap();
        let through_lite = time(iters, || async {
            lite_proxy.simple_query(QUERY).await.map(|_| ()).unwrap()
        })
        .await;
        let lite_direct = time(iters, || async {
            lite_backend
                .fetch(&lite_plan)
                .await
                .map(|_| ())
                .unwrap()
        })
        .await;

        println!("end_to_end over {rows} rows, median of {iters} runs each:");
        println!("  plain query, direct to PostgreSQL:     {plain:>10.2?}");
        println!("  rewritten query, direct to PostgreSQL: {bounded:>10.2?}");
        println!("  through dpgate:                        {through:>10.2?}");
        println!(
            "  ratio dpgate / rewritten direct:       {:>10.3}",
            through.as_secs_f64() / bounded.as_secs_f64()
        );
        println!(
            "  dpgate's own time (through − direct):  {:>10.2?}  (alternating: {paired_through:.2?} − {paired_direct:.2?})",
            paired_through.saturating_sub(paired_direct)
        );
        if let (Some(base), Some(bin)) = (through_baseline, &baseline_bin) {
            println!("  through the baseline build:            {base:>10.2?}  ({})", bin.display());
            println!(
                "  ratio baseline / rewritten direct:     {:>10.3}",
                base.as_secs_f64() / bounded.as_secs_f64()
            );
            println!(
                "  ratio this build / baseline:           {:>10.3}",
                through.as_secs_f64() / base.as_secs_f64()
            );
        }
        println!(
            "  ratio rewritten / plain (bounding):    {:>10.3}",
            bounded.as_secs_f64() / plain.as_secs_f64()
        );
        println!("  through dpgate, PostgreSQL ledger:     {through_pg_ledger:>10.2?}");
        println!(
            "  ratio PostgreSQL / SQLite ledger:      {:>10.3}",
            through_pg_ledger.as_secs_f64() / through.as_secs_f64()
        );
        println!("  repeat answered from the cache:        {repeated:>10.2?}");
        println!(
            "  ratio repeat / rewritten direct:       {:>10.3}",
            repeated.as_secs_f64() / bounded.as_secs_f64()
        );
        println!("  same, rewritten, direct (extended):    {direct_extended:>10.2?}");
        println!("  extended protocol with $1, dpgate:     {through_extended:>10.2?}");
        println!(
            "  ratio dpgate / direct (extended):      {:>10.3}",
            through_extended.as_secs_f64() / direct_extended.as_secs_f64()
        );
        println!("  catalog query (\\dt), direct:          {direct_catalog:>10.2?}");
        println!("  catalog query (\\dt), through dpgate:  {through_catalog:>10.2?}");
        println!(
            "  ratio dpgate / direct (catalog):       {:>10.3}",
            through_catalog.as_secs_f64() / direct_catalog.as_secs_f64()
        );
        println!("  SQLite backend, rewritten, direct:     {lite_direct:>10.2?}");
        println!("  SQLite backend, through dpgate:        {through_lite:>10.2?}");
        println!(
            "  ratio dpgate / direct (SQLite):        {:>10.3}",
            through_lite.as_secs_f64() / lite_direct.as_secs_f64()
        );
        println!(
            "  ratio SQLite / PostgreSQL backend:     {:>10.3}",
            through_lite.as_secs_f64() / through.as_secs_f64()
        );
    });
}
