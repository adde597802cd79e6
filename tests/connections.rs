//! Connection handling of a running dpgate: TLS, the connection limit,
//! the idle timeout, cancellation reaching the backend, and graceful
//! shutdown on SIGTERM.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tokio_postgres::NoTls;

const QUERY: &str = "SELECT COUNT(*) FROM visits";

/// A dpgate over a fresh visits database with extra `[server]` settings.
async fn gate_with(prefix: &str, server: &str) -> (String, tempfile::TempDir, Dpgate) {
    gate_over(prefix, server, false).await
}

/// [`gate_with`], its backend reached over TLS (`sslmode=verify-full`)
/// if `tls`.
async fn gate_over(prefix: &str, server: &str, tls: bool) -> (String, tempfile::TempDir, Dpgate) {
    let (db, _) = visits_database(prefix, 200).await;
    let dir = tempdir();
    let port = free_port();
    let mut config = proxy_toml(&db, port, &dir.path().join("l.sqlite"), 5.0, 0.1).replacen(
        "[server]\n",
        &format!("[server]\n{server}\n"),
        1,
    );
    if tls {
        let url = cluster().reader_url(&db);
        let ca = cluster().ca.display().to_string();
        config = config.replace(&url, &format!("{url}?sslmode=verify-full&sslrootcert={ca}"));
    }
    let gate = Dpgate::start(dir.path(), &config, port);
    (db, dir, gate)
}

/// Holds an exclusive lock on `visits` in the backend until dropped, so
/// that private queries block there.
async fn lock_visits(db: &str) -> tokio_postgres::Client {
    let client = connect_direct(&cluster().url(db)).await;
    client
        .batch_execute("BEGIN; LOCK TABLE visits IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    client
}

/// Backend queries of dpgate currently waiting or running.
async fn running_backend_queries(db: &str) -> i64 {
    let client = connect_direct(&cluster().url(db)).await;
    client
        .query_one(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'dpgate' AND state = 'active'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A self-signed certificate for localhost and its key, in `dir`.
fn test_certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl on PATH");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    (cert, key)
}

/// psql against `port` with `conninfo` added, running `\conninfo` and the
/// query: (succeeded, stdout, stderr).
fn psql(port: u16, conninfo: &str) -> (bool, String, String) {
    let out = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} user=analyst dbname=warehouse {conninfo}"
        ))
        .args(["-X", "-c", "\\conninfo", "-c", QUERY])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_offered_with_the_configured_certificate() {
    let dir = tempdir();
    let (cert, key) = test_certificate(dir.path());
    let (_db, _d, gate) = gate_with(
        "conn_tls",
        &format!("tls_cert = {:?}\ntls_key = {:?}", cert, key),
    )
    .await;
    let (ok, stdout, stderr) = psql(gate.port, "sslmode=require");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("SSL connection (protocol: TLS"), "{stdout}");
    // Without require_tls, TLS stays optional for clients that do not ask.
    let (ok, stdout, stderr) = psql(gate.port, "sslmode=disable");
    assert!(ok, "{stderr}");
    assert!(!stdout.contains("SSL connection"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_refused_with_53300() {
    let (_db, _d, gate) = gate_with("conn_limit", "max_connections = 2").await;
    let (a, _na) = gate.connect().await;
    let (b, _nb) = gate.connect().await;
    let err = tokio_postgres::connect(&gate.url("analyst", PASSWORD), NoTls)
        .await
        .err()
        .expect("a third connection is refused");
    assert_eq!(
        err.as_db_error().map(|d| d.code().code()),
        Some("53300"),
        "{err}"
    );
    assert!(simple_row(&a, QUERY).await[0].is_some());
    drop(b);
    // The freed slot serves a new connection.
    wait_until("a slot frees up", async || {
        tokio_postgres::connect(&gate.url("analyst", PASSWORD), NoTls)
            .await
            .is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_timeout() {
    let (_db, _d, gate) = gate_with("conn_idle", "idle_timeout_s = 1").await;
    let (client, _n) = gate.connect().await;
    assert!(simple_row(&client, "SELECT 1").await[0].is_some());
    wait_until("the idle connection is closed", async || client.is_closed()).await;
    assert!(client.simple_query("SELECT 1").await.is_err());
    // A busy connection is not idle.
    let (busy, _n) = gate.connect().await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(simple_row(&busy, "SELECT 1").await[0].is_some());
    }
}

/// Over a plaintext backend connection and over TLS, where the cancel
/// dpgate sends the backend must go over TLS too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_cancels_the_backend_query() {
    for tls in [false, true] {
        let (db, _d, gate) = gate_over("conn_cancel", "", tls).await;
        cancel_reaches_the_backend(&db, &gate).await;
    }
}

async fn cancel_reaches_the_backend(db: &str, gate: &Dpgate) {
    let (client, _n) = gate.connect().await;
    let lock = lock_visits(db).await;
    let token = client.cancel_token();
    let query = tokio::spawn(async move { client.simple_query(QUERY).await.map(|_| ()) });
    wait_until("the backend query waits on the lock", async || {
        running_backend_queries(db).await == 1
    })
    .await;
    token.cancel_query(NoTls).await.unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("cancel returns promptly")
        .unwrap()
        .expect_err("the query is cancelled");
    assert_eq!(err.as_db_error().map(|d| d.code().code()), Some("57014"));
    // The backend stopped working on it while the lock is still held.
    wait_until("the backend query is gone", async || {
        running_backend_queries(db).await == 0
    })
    .await;
    drop(lock);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_queries_finish_and_closes_idle_connections() {
    let (db, _d, mut gate) = gate_with("conn_term", "shutdown_grace_s = 20").await;
    let (busy, _n) = gate.connect().await;
    let (idle, _n2) = connect_collecting(&gate.url("analyst", PASSWORD))
        .await
        .unwrap();
    let lock = lock_visits(&db).await;
    let query = tokio::spawn(async move { busy.simple_query(QUERY).await });
    wait_until("the backend query waits on the lock", async || {
        running_backend_queries(&db).await == 1
    })
    .await;
    let pid = gate.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    wait_until("the idle connection is closed", async || idle.is_closed()).await;
    // New connections are no longer accepted.
    wait_until("the listener is closed", async || {
        tokio_postgres::connect(&gate.url("analyst", PASSWORD), NoTls)
            .await
            .is_err()
    })
    .await;
    // The running query still gets its answer once the backend frees up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(lock);
    let rows = tokio::time::timeout(Duration::from_secs(10), query)
        .await
        .expect("answered")
        .unwrap()
        .expect("the running query finishes");
    assert!(!rows.is_empty());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = gate.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "dpgate did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}

/// `require_tls`: a login without TLS is refused before any password proof
/// is exchanged, directly or through a relay that passes bytes on in the
/// clear; with TLS the SCRAM proof is bound to dpgate's certificate
/// (SCRAM-SHA-256-PLUS), so `channel_binding=require` logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_can_be_required_and_logins_are_bound_to_it() {
    let dir = tempdir();
    let (cert, key) = test_certificate(dir.path());
    let (_db, _d, gate) = gate_with(
        "conn_tls_required",
        &format!(
            "tls_cert = {:?}\ntls_key = {:?}\nrequire_tls = true",
            cert, key
        ),
    )
    .await;
    let (ok, stdout, stderr) = psql(gate.port, "sslmode=require channel_binding=require");
    assert!(ok, "{stderr}");
    assert!(stdout.contains("SSL connection (protocol: TLS"), "{stdout}");
    let (ok, _, stderr) = psql(gate.port, "sslmode=disable");
    assert!(!ok);
    assert!(stderr.contains("accepts only TLS connections"), "{stderr}");

    // A relay that passes the bytes on in the clear gets the same answer.
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let target = gate.port;
    let forward = tokio::spawn(async move {
        for _ in 0..4 {
            let Ok((mut client, _)) = relay.accept().await else {
                return;
            };
            let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                return;
            };
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    let (ok, _, stderr) = tokio::task::spawn_blocking(move || psql(relay_port, "sslmode=disable"))
        .await
        .unwrap();
    assert!(!ok);
    assert!(stderr.contains("accepts only TLS connections"), "{stderr}");
    forward.abort();

    // The config is checked: require_tls without a certificate is an error.
    let bad = gate_config_error("require_tls = true");
    assert!(bad.contains("server.require_tls"), "{bad}");
}

/// `dpgate check` on a config whose `[server]` section has `extra`: its
/// error output.
fn gate_config_error(extra: &str) -> String {
    let dir = tempdir();
    let text = proxy_toml("db", free_port(), &dir.path().join("l.sqlite"), 1.0, 0.1).replacen(
        "[server]\n",
        &format!("[server]\n{extra}\n"),
        1,
    );
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dpgate"))
        .args(["check", "--config"])
        .arg(&path)
        .env("DPGATE_TEST_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout)
}

/// Every hop encrypted and verified: the backend and the PostgreSQL
/// ledger connections use `sslmode=verify-full` against the test cluster's
/// CA (pg_stat_ssl shows them encrypted), and psql reaches dpgate with
/// `sslmode=verify-full channel_binding=require`. A CA that did not sign
/// the server's certificate stops dpgate at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_and_ledger_connections_are_tls_verified() {
    let c = cluster();
    let ca = c.ca.display().to_string();
    let verified = |url: String| format!("{url}?sslmode=verify-full&sslrootcert={ca}");
    let (db, _) = visits_database("tls_hops", 100).await;
    let ledger_db = empty_database("tls_hops_ledger").await;
    let dir = tempdir();
    let port = free_port();
    let text = proxy_toml(&db, port, &dir.path().join("l.sqlite"), 5.0, 0.1)
        .replace(&c.reader_url(&db), &verified(c.reader_url(&db)))
        .replace(
            &format!("path = \"{}\"", dir.path().join("l.sqlite").display()),
            &format!("url = \"{}\"", verified(c.url(&ledger_db))),
        )
        .replacen(
            "[server]\n",
            &format!(
                "[server]\ntls_cert = {:?}\ntls_key = {:?}\nrequire_tls = true\n",
                c.dir.join("server.pem"),
                c.dir.join("server.key")
            ),
            1,
        );
    assert!(text.contains("sslmode=verify-full") && text.contains("require_tls"));
    let gate = Dpgate::start(dir.path(), &text, port);
    let (ok, stdout, stderr) = psql(
        gate.port,
        &format!("sslmode=verify-full sslrootcert={ca} channel_binding=require"),
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("SSL connection"), "{stdout}");
    // The backend and ledger sessions dpgate holds are encrypted.
    let direct = connect_direct(&c.url("postgres")).await;
    let rows = direct
        .query(
            "SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name IN ('dpgate', 'dpgate-ledger') AND a.datname IN ($1, $2)",
            &[&db, &ledger_db],
        )
        .await
        .unwrap();
    let apps: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        apps.contains("dpgate") && apps.contains("dpgate-ledger"),
        "{apps:?}"
    );
    assert!(rows.iter().all(|r| r.get::<_, bool>(1)), "a plaintext hop");
    drop(gate);

    // A CA that did not sign the cluster's certificate: dpgate refuses to start.
    let other = tempdir();
    let (wrong_ca, _) = test_certificate(other.path());
    let wrong = text.replace(&ca, &wrong_ca.display().to_string());
    std::fs::write(dir.path().join("proxy.toml"), wrong).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dpgate"))
        .args(["serve", "--config"])
        .arg(dir.path().join("proxy.toml"))
        .env("DPGATE_TEST_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("tls"),
        "{err}"
    );
}
