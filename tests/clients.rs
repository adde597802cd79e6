//! Real client libraries against a running dpgate: each browses the
//! catalog, runs a private aggregate with a bound parameter and reads the
//! notice or the accuracy columns (scripts in clients/). `.ci/run`
//! installs every client and sets DPGATE_REQUIRE_CLIENTS=1, so that a
//! missing client fails there instead of being skipped.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Returns false (after saying why) when a client is not installed here;
/// panics instead when clients are required.
fn available(what: &str, present: bool) -> bool {
    if !present {
        assert!(
            std::env::var_os("DPGATE_REQUIRE_CLIENTS").is_none(),
            "{what} is required but not installed (run .ci/run, which installs it)"
        );
        eprintln!("skipping: {what} is not installed; .ci/run installs it");
    }
    present
}

fn on_path(bin: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Rows a row-level query without LIMIT returns from the clients' gate.
const SYNTHETIC_MAX_ROWS: usize = 40;

/// A dpgate over a fresh hospital database, analyst budget 5, `visits`
/// with synthetic rows.
async fn gate(prefix: &str) -> (tempfile::TempDir, Dpgate) {
    let db = hospital_database(prefix, 300).await;
    let dir = tempdir();
    let port = free_port();
    let config = with_synthetic(
        &hospital_toml(&db, port, &dir.path().join("l.sqlite"), 5.0, 0.1),
        &format!("epsilon = 1\nrows = 500\nmax_rows = {SYNTHETIC_MAX_ROWS}"),
    );
    let gate = Dpgate::start(dir.path(), &config, port);
    (dir, gate)
}

fn run(mut command: Command, what: &str) -> String {
    let out = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    stdout
}

fn python() -> Option<PathBuf> {
    std::env::var_os("DPGATE_CLIENT_PYTHON")
        .map(PathBuf::from)
        .or_else(|| Some(root().join("target/clients-venv/bin/python")))
        .filter(|p| p.exists())
}

async fn python_client(which: &str) {
    let Some(python) = python() else {
        available("the Python client venv (target/clients-venv)", false);
        return;
    };
    let (_dir, gate) = gate(&format!("py_{which}")).await;
    let mut c = Command::new(python);
    c.arg(root().join("clients/python/clients.py"))
        .arg(which)
        .arg(
            gate.url("analyst", PASSWORD)
                .replace("postgres://", "postgresql://"),
        );
    let out = run(c, which);
    assert!(out.contains(&format!("{which} ok")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3() {
    python_client("psycopg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg() {
    python_client("asyncpg").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlalchemy() {
    python_client("sqlalchemy").await;
}

/// examples/python/grouped_query.py against `dpgate demo` (SQLite
/// backend, no catalog): one line per ward with both intervals.
#[test]
fn the_python_example_prints_answers_with_intervals() {
    let Some(python) = python() else {
        available("the Python client venv (target/clients-venv)", false);
        return;
    };
    let dir = tempdir();
    let port = free_port();
    let demo = dir.path().join("demo");
    let listen = format!("127.0.0.1:{port}");
    let _gate = Dpgate::run(
        dir.path(),
        &["demo", "--dir", demo.to_str().unwrap(), "--listen", &listen],
        port,
    );
    let mut c = Command::new(python);
    c.arg(root().join("examples/python/grouped_query.py"))
        .arg(format!("postgresql://analyst:demo@{listen}/demo"));
    let out = run(c, "grouped_query.py");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("  ward = ")).collect();
    assert_eq!(lines.len(), 6, "{out}");
    for line in lines {
        assert!(
            line.contains("visits = ") && line.matches(" ± ").count() == 2,
            "{line}"
        );
    }
    assert!(out.contains("dpgate: this answer cost ε = 0.1"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres() {
    let dir = root().join("clients/node");
    if !available(
        "node-postgres (npm install in clients/node)",
        on_path("node") && dir.join("node_modules/pg").exists(),
    ) {
        return;
    }
    let (_tmp, gate) = gate("node_pg").await;
    let mut c = Command::new("node");
    c.arg(dir.join("client.js"))
        .arg(gate.url("analyst", PASSWORD));
    assert!(run(c, "node-postgres").contains("node-postgres ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgjdbc() {
    let jar = Path::new("/usr/share/java/postgresql.jar");
    if !available(
        "pgjdbc (Debian package libpostgresql-jdbc-java) and java",
        jar.exists() && on_path("java"),
    ) {
        return;
    }
    let (_tmp, gate) = gate("pgjdbc").await;
    let mut c = Command::new("java");
    c.arg("-cp")
        .arg(jar)
        .arg(root().join("clients/java/ClientTest.java"))
        .arg(gate.port.to_string())
        .arg(PASSWORD)
        .arg(SYNTHETIC_MAX_ROWS.to_string());
    assert!(run(c, "pgjdbc").contains("pgjdbc ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_custom_script() {
    if !available("pgbench", on_path("pgbench")) {
        return;
    }
    let (_tmp, gate) = gate("pgbench").await;
    for mode in ["simple", "extended", "prepared"] {
        let mut c = Command::new("pgbench");
        c.args(["-n", "-c", "2", "-t", "5", "-M", mode, "-f"])
            .arg(root().join("clients/pgbench/private.sql"))
            .arg(format!(
                "host=127.0.0.1 port={} user=analyst dbname=warehouse",
                gate.port
            ))
            .env("PGPASSWORD", PASSWORD);
        let out = run(c, "pgbench");
        assert!(
            out.contains("number of transactions actually processed: 10/10"),
            "{mode}: {out}"
        );
    }
}
