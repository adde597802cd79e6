//! HTTP against the wire protocol: p50 latency of the same private query
//! (`COUNT(*)`, and a grouped AVG) over `POST /v1/query` on a keep-alive
//! connection and over a PostgreSQL connection to the same dpgate, in one
//! run, interleaved, with the release cache off so every query is charged
//! and runs on the backend. Also a fresh HTTP connection per request (a
//! client that does not keep connections), and the plain query straight
//! at PostgreSQL for scale.
//!
//! Run: `cargo bench --bench http` (BENCH_ROWS, BENCH_ITERS).

#[path = "../tests/common/mod.rs"]
mod common;

use common::http::{basic, read_response, request};
use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

fn main() {
    let patients: i64 = env_number("BENCH_ROWS", 10_000) / 3;
    let iters: usize = env_number("BENCH_ITERS", 200);
    bench_runtime().block_on(async move {
        let (db, rows) = visits_database("bench_http", patients).await;
        let dir = tempdir();
        let (port, http) = (free_port(), free_port());
        // A budget no run exhausts; no free repeats.
        let config = proxy_toml(&db, port, &dir.path().join("l.sqlite"), 1e9, 0.1)
            .replace("[backend]", &format!("[http]\nlisten = \"127.0.0.1:{http}\"\n[cache]\nenabled = false\n[backend]"));
        let gate = Dpgate::start(dir.path(), &config, port);
        while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let (wire, _notices) = gate.connect().await;
        let direct = connect_direct(&cluster().url(&db)).await;
        let auth = basic("analyst", PASSWORD);
        let mut keep_alive = tokio::net::TcpStream::connect(("127.0.0.1", http)).await.unwrap();
        keep_alive.set_nodelay(true).unwrap();
        println!("HTTP against the wire protocol, {rows} rows, p50 of {iters} (cache off, each query charged):");
        println!("  {:<12} {:>10} {:>10} {:>12} {:>10} {:>14}", "query", "plain PG", "wire", "HTTP (kept)", "HTTP/wire", "HTTP (new conn)");
        for (name, sql) in [
            ("COUNT", "SELECT COUNT(*) FROM visits"),
            ("grouped AVG", "SELECT ward, COUNT(*), AVG(cost) FROM visits GROUP BY ward"),
        ] {
            let body = json!({"sql": sql}).to_string();
            let raw = format!(
                "POST /v1/query HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let plain = time(iters, || async {
                direct.simple_query(sql).await.unwrap();
            })
            .await;
            let socket = tokio::sync::Mutex::new(&mut keep_alive);
            let (over_wire, over_http) = time_pair(
                iters,
                || async {
                    wire.simple_query(sql).await.unwrap();
                },
                || async {
                    let mut s = socket.lock().await;
                    s.write_all(raw.as_bytes()).await.unwrap();
                    let r = read_response(&mut **s).await.unwrap();
                    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
                },
            )
            .await;
            let fresh = time(iters / 4, || async {
                let r = request(http, "POST", "/v1/query", Some(&auth), Some(&body)).await;
                assert_eq!(r.status, 200);
            })
            .await;
            println!(
                "  {:<12} {:>10.2?} {:>10.2?} {:>12.2?} {:>10.2} {:>14.2?}",
                name,
                plain,
                over_wire,
                over_http,
                over_http.as_secs_f64() / over_wire.as_secs_f64(),
                fresh
            );
        }
    });
}
