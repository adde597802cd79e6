//! The wire protocol against an in-process dpgate: each input is sent as
//! raw bytes on a fresh connection — from the startup packet on when its
//! first byte is even, or after a real SCRAM login when it is odd (then
//! the bytes are frames of the logged-in protocol: simple and extended
//! queries, COPY, cancel, garbage). The server must neither panic (a panic
//! hook aborts the process, which libFuzzer reports) nor hang: every
//! connection ends within the read timeout once the input is sent.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::{backend, frontend};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSWORD: &str = "fuzz-password";

struct Server {
    runtime: tokio::runtime::Runtime,
    port: u16,
    _dir: tempfile::TempDir,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        std::panic::set_hook(Box::new(|info| {
            // Caught by the server, which closes that connection with 08P01.
            if dpgate_server::decoding_client_message() {
                return;
            }
            eprintln!(
                "panic in dpgate: {info}\n{}",
                std::backtrace::Backtrace::force_capture()
            );
            std::process::abort();
        }));
        let dir = tempfile::tempdir().unwrap();
        let mut csv = String::from("patient_id,age,ward\n");
        for i in 0..200 {
            csv.push_str(&format!("{},{},{}\n", i % 50, i % 90, ["A", "B"][i % 2]));
        }
        std::fs::write(dir.path().join("visits.csv"), csv).unwrap();
        let toml = format!(
            r#"
[server]
listen = "127.0.0.1:0"
max_connections = 64
[backend]
sqlite = "{db}"
statement_timeout_ms = 2000
[catalog]
enabled = false
[ledger]
path = "{ledger}"
[privacy]
dataset_epsilon_budget = 1e9
[[users]]
name = "analyst"
password = "env:FUZZ_PASSWORD"
epsilon_budget = 1e9
[[tables]]
name = "visits"
csv = "{csv}"
privacy_unit = "patient_id"
max_rows_per_unit = 5
columns.age = {{ type = "int", lower = 0, upper = 110 }}
columns.ward = {{ type = "text", values = ["A", "B"] }}
"#,
            db = dir.path().join("data.db").display(),
            ledger = dir.path().join("ledger.sqlite").display(),
            csv = dir.path().join("visits.csv").display(),
        );
        let config = dpgate_config::Config::parse(&toml, &|_| Some(PASSWORD.into())).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let port = runtime.block_on(async {
            let ledger = dpgate_ledger::Ledger::open(&config.ledger).await.unwrap();
            let backend = dpgate_backend::connect(&config).await.unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let salt_key = ledger.secret("scram-salt").await.unwrap();
            let shared = std::sync::Arc::new(
                dpgate_server::Shared::new(
                    config,
                    std::sync::Arc::new(ledger),
                    backend,
                    None,
                    salt_key,
                )
                .unwrap(),
            );
            tokio::spawn(dpgate_server::serve(
                shared,
                listener,
                std::future::pending(),
            ));
            port
        });
        Server {
            runtime,
            port,
            _dir: dir,
        }
    })
}

/// Reads one backend message, or `None` when the server closed or went quiet.
async fn message(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<backend::Message> {
    loop {
        if let Ok(Some(m)) = backend::Message::parse(buf) {
            return Some(m);
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A real SCRAM-SHA-256 login; true once the server is ready for queries.
async fn login(stream: &mut TcpStream) -> bool {
    let mut out = BytesMut::new();
    frontend::startup_message([("user", "analyst"), ("database", "fuzz")], &mut out).unwrap();
    if stream.write_all(&out).await.is_err() {
        return false;
    }
    let mut buf = BytesMut::new();
    let mut scram = ScramSha256::new(PASSWORD.as_bytes(), ChannelBinding::unsupported());
    loop {
        out.clear();
        match message(stream, &mut buf).await {
            Some(backend::Message::AuthenticationSasl(_)) => {
                frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut out)
                    .unwrap();
            }
            Some(backend::Message::AuthenticationSaslContinue(body)) => {
                if scram.update(body.data()).is_err() {
                    return false;
                }
                frontend::sasl_response(scram.message(), &mut out).unwrap();
            }
            Some(backend::Message::AuthenticationSaslFinal(body)) => {
                if scram.finish(body.data()).is_err() {
                    return false;
                }
            }
            Some(backend::Message::ReadyForQuery(_)) => return true,
            Some(backend::Message::ErrorResponse(_)) | None => return false,
            Some(_) => {}
        }
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return false;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let s = server();
    s.runtime.block_on(async {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", s.port)).await else {
            return;
        };
        let (first, rest) = data.split_first().map_or((0, data), |(f, r)| (*f, r));
        if first % 2 == 1 && !login(&mut stream).await {
            panic!("the fuzz user could not log in");
        }
        let _ = stream.write_all(rest).await;
        let _ = stream.shutdown().await;
        // The server must answer and close within the timeout.
        let mut sink = Vec::new();
        let drained =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut sink)).await;
        assert!(
            drained.is_ok(),
            "dpgate kept a half-closed connection open for 10 s"
        );
    });
});
