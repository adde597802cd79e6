//! Test harness: one throwaway PostgreSQL cluster per test binary (initdb
//! into a temporary directory, a free port, run as `postgres` when root),
//! a fresh database per test, and dpgate started as a real child process.
//!
//! Set DPGATE_TEST_PG_BIN to choose the PostgreSQL binaries directory.

#![allow(dead_code)]

pub mod corpus;
pub mod http;
#[cfg(feature = "spark")]
pub mod spark;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// The password every test user has.
pub const PASSWORD: &str = "s3cret-test";

/// A running PostgreSQL cluster for this test binary.
pub struct Cluster {
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
    /// The CA that signed the cluster's TLS certificate (for 127.0.0.1
    /// and localhost): the `sslrootcert` of verify-full connections.
    pub ca: PathBuf,
}

/// A CA and a server certificate it signed for localhost and 127.0.0.1,
/// written into `dir` (ca.pem, server.pem, server.key).
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl on PATH");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=dpgate test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "server.ext",
        "-out",
        "server.pem",
    ]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false)
}

fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("DPGATE_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().expect("PostgreSQL server binaries not found: install the postgresql package or set DPGATE_TEST_PG_BIN")
}

/// Runs a PostgreSQL binary, as `postgres` when we are root.
fn pg_command(bin: &Path, root: bool) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shared cluster, started on first use and stopped by a watchdog
/// when this test process exits.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let root = is_root();
        let bin = pg_bin();
        let dir = std::env::temp_dir().join(format!("dpgate-test-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        if root {
            Command::new("chown").args(["-R", "postgres"]).arg(&dir).status().unwrap();
        }
        let data = dir.join("data");
        let out = pg_command(&bin.join("initdb"), root)
            .args(["-D"]).arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        make_certificates(&dir);
        if root {
            Command::new("chown").args(["-R", "postgres"]).arg(&dir).status().unwrap();
        }
        let port = free_port();
        let log = dir.join("postgres.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = pg_command(&bin.join("postgres"), root)
            .arg("-D").arg(&data)
            .args(["-p", &port.to_string(), "-k"]).arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "log_statement=all", "-c", "log_line_prefix=%d: "])
            .args(["-c", "max_connections=300", "-c", "shared_buffers=64MB"])
            // TLS on offer (clients that ask get it; others stay plaintext).
            .args(["-c", "ssl=on"])
            .arg("-c").arg(format!("ssl_cert_file={}", dir.join("server.pem").display()))
            .arg("-c").arg(format!("ssl_key_file={}", dir.join("server.key").display()))
            .stdout(Stdio::null())
            .stderr(log_file.try_clone().unwrap())
            .spawn()
            .expect("start postgres");
        // Stop the cluster and remove its files when this process is gone;
        // the watchdog outlives us on purpose, so it is never waited for.
        #[allow(clippy::zombie_processes)]
        let _watchdog = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {me} 2>/dev/null; do sleep 1; done; kill -INT {pg} 2>/dev/null; sleep 3; kill -9 {pg} 2>/dev/null; rm -rf '{dir}'",
                me = std::process::id(),
                pg = child.id(),
                dir = dir.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "postgres did not start: {}", std::fs::read_to_string(&log).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(100));
        }
        std::mem::forget(child);
        // dpgate reads the data as a plain role that may only SELECT (it
        // refuses a superuser): SELECT on every table later created by
        // postgres, through template1's default privileges, which every
        // test database copies.
        let out = Command::new(bin.join("psql"))
            .arg(format!("postgres://postgres@127.0.0.1:{port}/template1"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!(
                "CREATE ROLE {READER} LOGIN NOSUPERUSER; \
                 ALTER ROLE {READER} SET default_transaction_read_only = on; \
                 ALTER DEFAULT PRIVILEGES FOR ROLE postgres GRANT SELECT ON TABLES TO {READER};"
            ))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let ca = dir.join("ca.pem");
        Cluster { port, dir, log, ca }
    })
}

/// The read-only role dpgate's backend connections use in the tests.
pub const READER: &str = "dpgate_reader";

impl Cluster {
    /// The superuser's URL, for setting databases up.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// The read-only role's URL, for dpgate's backend.
    pub fn reader_url(&self, db: &str) -> String {
        format!("postgres://{READER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Statements the backend logged for database `db` that contain `needle`.
    pub fn logged(&self, db: &str, needle: &str) -> usize {
        let prefix = format!("{db}: ");
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(&prefix) && l.contains(needle))
            .count()
    }
}

pub async fn connect_direct(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A fresh, empty database; returns its name.
pub async fn empty_database(prefix: &str) -> String {
    let db = format!(
        "{prefix}_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    );
    connect_direct(&cluster().url("postgres"))
        .await
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .await
        .unwrap();
    db
}

/// A fresh database with the `visits` table: `patients` patients with 1
/// to 5 visits each (deterministic), ages 0..109, costs 0..4999.99.
pub async fn visits_database(prefix: &str, patients: i64) -> (String, i64) {
    let db = empty_database(prefix).await;
    let client = connect_direct(&cluster().url(&db)).await;
    client
        .batch_execute(&format!(
            "CREATE TABLE visits (patient_id int, age int, cost float8, ward text, secret text);
             INSERT INTO visits
               SELECT p, (p * 37 + v * 11) % 110, ((p * 7919 + v * 104729) % 500000) / 100.0,
                      (ARRAY['A','B','C'])[1 + (p + v) % 3], 'hidden'
               FROM generate_series(1, {patients}) AS p, generate_series(1, 1 + p % 5) AS v;"
        ))
        .await
        .unwrap();
    let rows: i64 = client
        .query_one("SELECT COUNT(*) FROM visits", &[])
        .await
        .unwrap()
        .get(0);
    (db, rows)
}

/// proxy.toml text for `db`, with user `analyst` and the given budget.
pub fn proxy_toml(db: &str, listen_port: u16, ledger: &Path, budget: f64, epsilon: f64) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{listen_port}"
[backend]
url = "{url}"
[ledger]
path = "{ledger}"
[privacy]
default_epsilon = {epsilon}
delta = 1e-6
[[users]]
name = "analyst"
password = "env:DPGATE_TEST_PASSWORD"
epsilon_budget = {budget}
[[tables]]
name = "public.visits"
privacy_unit = "patient_id"
max_rows_per_unit = 5
columns.age = {{ type = "int", lower = 0, upper = 110 }}
columns.ward = {{ type = "text", values = ["A", "B", "C"] }}
columns.cost = {{ type = "float", lower = 0, upper = 5000 }}
"#,
        url = cluster().reader_url(db),
        ledger = ledger.display()
    )
}

/// A running dpgate process; killed (SIGKILL) on drop.
pub struct Dpgate {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
    /// What dpgate wrote to stdout and stderr so far.
    pub log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Dpgate {
    /// Writes `config` into `dir`/proxy.toml and starts `dpgate serve`.
    pub fn start(dir: &Path, config: &str, port: u16) -> Dpgate {
        let path = dir.join("proxy.toml");
        std::fs::write(&path, config).unwrap();
        let path = path.display().to_string();
        Dpgate::run(dir, &["serve", "--config", &path], port)
    }

    /// Starts `dpgate <args>` and waits until it listens on `port`.
    pub fn run(dir: &Path, args: &[&str], port: u16) -> Dpgate {
        Dpgate::run_binary(Path::new(env!("CARGO_BIN_EXE_dpgate")), dir, args, port)
    }

    /// [`Dpgate::run`] with another build of dpgate (a baseline in a bench).
    pub fn run_binary(binary: &Path, dir: &Path, args: &[&str], port: u16) -> Dpgate {
        let mut child = Command::new(binary)
            .args(args)
            .env("DPGATE_TEST_PASSWORD", PASSWORD)
            .env("DPGATE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                for line in BufReader::new(child.stderr.take().unwrap()).lines() {
                    err.push_str(&line.unwrap());
                    err.push('\n');
                }
                panic!("dpgate exited with {status}: {err}");
            }
            assert!(Instant::now() < deadline, "dpgate did not start listening");
            std::thread::sleep(Duration::from_millis(50));
        }
        // Both streams are drained by threads, so a chatty log never
        // blocks the process.
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        for stream in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let sink = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut log = sink.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        Dpgate {
            child,
            port,
            dir: dir.to_path_buf(),
            log,
        }
    }

    /// The proxy.toml this dpgate serves.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("proxy.toml")
    }

    /// Runs `dpgate <args> --config <this config>` and returns its stdout;
    /// panics with stderr if it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_dpgate"))
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .env("DPGATE_TEST_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dpgate {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs psql as `analyst` against this dpgate with `args` (after
    /// `-X`, no psqlrc); returns (stdout, stderr, success).
    pub fn psql(&self, args: &[&str]) -> (String, String, bool) {
        let out = Command::new("psql")
            .arg(format!(
                "host=127.0.0.1 port={} user=analyst dbname=warehouse",
                self.port
            ))
            .arg("-X")
            .args(args)
            .env("PGPASSWORD", PASSWORD)
            .env("PGOPTIONS", "")
            .output()
            .expect("psql on PATH");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            out.status.success(),
        )
    }

    /// Sends a signal (e.g. "HUP") to the process.
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    pub fn url(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@127.0.0.1:{}/warehouse",
            self.port
        )
    }

    /// Connects as `analyst` with tokio-postgres, collecting notices.
    pub async fn connect(&self) -> (Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
        connect_collecting(&self.url("analyst", PASSWORD))
            .await
            .unwrap()
    }

    /// SIGKILL, as `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dpgate {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Connects and forwards every NOTICE message text to the returned channel.
pub async fn connect_collecting(
    url: &str,
) -> Result<(Client, tokio::sync::mpsc::UnboundedReceiver<String>), tokio_postgres::Error> {
    use futures_util::StreamExt;
    let (client, mut conn) = tokio_postgres::connect(url, NoTls).await?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(m)) = messages.next().await {
            if let tokio_postgres::AsyncMessage::Notice(n) = m {
                let _ = tx.send(n.message().to_string());
            }
        }
    });
    Ok((client, rx))
}

/// The values of the first row of a simple query, as text.
pub async fn simple_row(client: &Client, sql: &str) -> Vec<Option<String>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    for m in messages {
        if let SimpleQueryMessage::Row(r) = m {
            return (0..r.len()).map(|i| r.get(i).map(str::to_string)).collect();
        }
    }
    panic!("{sql}: no row")
}

/// The SQLSTATE, message and hint of a failing statement.
pub async fn refusal(client: &Client, sql: &str) -> (String, String, String) {
    let err = client.simple_query(sql).await.expect_err(sql);
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("{sql}: not a database error: {err}"));
    (
        db.code().code().to_string(),
        db.message().to_string(),
        db.hint().unwrap_or_default().to_string(),
    )
}

/// `text` parsed and completed with what its backend's schema says of
/// each table (unit types, unique units, stored tables), as the server
/// completes it at start: what dpgate plans with, for a bench or test
/// that sends a plan's backend SQL itself. Also the backend.
pub async fn server_config(
    text: &str,
    password: &str,
) -> (
    dpgate_config::Config,
    std::sync::Arc<dyn dpgate_backend::Backend>,
) {
    let mut config = dpgate_config::Config::parse(text, &|_| Some(password.into())).unwrap();
    let backend = dpgate_backend::connect(&config).await.unwrap();
    dpgate_backend::read_schema(&mut config, backend.as_ref()).await;
    (config, backend)
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// A `visits` database with `patients` patients and a dpgate in front of
/// it (user `analyst`, `budget`, default ε `epsilon`), in a fresh directory.
pub async fn gate_over_visits(
    prefix: &str,
    patients: i64,
    budget: f64,
    epsilon: f64,
) -> (String, tempfile::TempDir, Dpgate) {
    let (db, _) = visits_database(prefix, patients).await;
    let dir = tempdir();
    let port = free_port();
    let config = proxy_toml(&db, port, &dir.path().join("l.sqlite"), budget, epsilon);
    let gate = Dpgate::start(dir.path(), &config, port);
    (db, dir, gate)
}

/// A hospital: `visits` (1–5 per patient, dates, diagnoses), `patients`
/// (one row each) and the public lookup table `wards`. Every patient stays
/// within the declared bounds, so bounded answers equal the plain ones.
pub async fn hospital_database(prefix: &str, patients: i64) -> String {
    let (db, _) = visits_database(prefix, patients).await;
    let client = connect_direct(&cluster().url(&db)).await;
    client
        .batch_execute(&format!(
            "ALTER TABLE visits ADD COLUMN visit_date date, ADD COLUMN diagnosis text;
             UPDATE visits SET visit_date = DATE '2023-01-01' + ((patient_id * 13 + age * 7) % 730),
                               diagnosis = (ARRAY['flu','fracture','asthma','diabetes','migraine'])[1 + (patient_id + age) % 5];
             CREATE TABLE patients (patient_id int, sex text, birth_year int, region text, smoker bool);
             INSERT INTO patients SELECT p, CASE WHEN p % 2 = 0 THEN 'F' ELSE 'M' END, 1930 + p % 80,
                    (ARRAY['north','south','east','west'])[1 + p % 4], p % 3 = 0
               FROM generate_series(1, {patients}) AS p;
             CREATE TABLE wards (ward text, floor int, name text);
             INSERT INTO wards VALUES ('A', 1, 'Cardiology'), ('B', 2, 'Oncology'), ('C', 2, 'Pediatrics');"
        ))
        .await
        .unwrap();
    db
}

/// The declarations of `patients` and `wards`, and the extra `visits`
/// columns, appended to [`proxy_toml`].
pub fn hospital_toml(
    db: &str,
    listen_port: u16,
    ledger: &Path,
    budget: f64,
    epsilon: f64,
) -> String {
    proxy_toml(db, listen_port, ledger, budget, epsilon)
        + r#"columns.visit_date = { type = "date" }
columns.diagnosis = { type = "text" }
[[tables]]
name = "public.patients"
privacy_unit = "patient_id"
max_rows_per_unit = 1
columns.sex = { type = "text", values = ["F", "M"] }
columns.birth_year = { type = "int", lower = 1900, upper = 2025 }
columns.region = { type = "text", values = ["north", "south", "east", "west"] }
columns.smoker = { type = "bool" }
[[tables]]
name = "public.wards"
public = true
columns.ward = { type = "text" }
columns.floor = { type = "int", lower = 0, upper = 10 }
columns.name = { type = "text" }
"#
}

/// `toml` (from [`hospital_toml`]) with `[tables.synthetic]` holding
/// `settings` for `visits`.
pub fn with_synthetic(toml: &str, settings: &str) -> String {
    let patients = "[[tables]]\nname = \"public.patients\"";
    assert!(toml.contains(patients), "not a hospital_toml config");
    toml.replacen(
        patients,
        &format!("[tables.synthetic]\n{settings}\n{patients}"),
        1,
    )
}

/// Waits until `sql`, a row-level query over synthetic rows, is answered
/// by `psql_ok` (fits run in the background at start; until one is done,
/// such queries are refused with 55000). Panics after two minutes.
pub fn wait_for_synthetic(mut psql_ok: impl FnMut() -> (bool, String)) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (ok, err) = psql_ok();
        if ok {
            return;
        }
        assert!(
            err.contains("55000") || err.contains("being fitted"),
            "not a fit in progress: {err}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no fit after 2 minutes: {err}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// All rows of a simple query, as text.
pub async fn simple_rows(
    client: &Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, tokio_postgres::Error> {
    Ok(client
        .simple_query(sql)
        .await?
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect())
}

/// The hospital tables of [`hospital_database`].
pub const HOSPITAL_TABLES: [&str; 3] = ["visits", "patients", "wards"];

/// Writes each of `tables` of `db` to `dir`/<table>.csv (header row),
/// as PostgreSQL's COPY prints it.
pub async fn export_csv(db: &str, tables: &[&str], dir: &Path) {
    use futures_util::StreamExt;
    let client = connect_direct(&cluster().url(db)).await;
    for table in tables {
        let stream = client
            .copy_out(&format!("COPY {table} TO STDOUT WITH (FORMAT csv, HEADER)"))
            .await
            .unwrap();
        let mut stream = std::pin::pin!(stream);
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            bytes.extend_from_slice(&chunk.unwrap());
        }
        std::fs::write(dir.join(format!("{table}.csv")), bytes).unwrap();
    }
}

/// [`hospital_toml`] served from the embedded SQLite backend instead:
/// the same declarations, each table loaded from the CSV export of `db`
/// (written into `dir`).
pub async fn hospital_sqlite_toml(
    db: &str,
    listen_port: u16,
    dir: &Path,
    budget: f64,
    epsilon: f64,
) -> String {
    let toml = hospital_toml(db, listen_port, &dir.join("l.sqlite"), budget, epsilon);
    sqlite_toml(&toml, db, &HOSPITAL_TABLES, dir).await
}

/// `toml` (whose backend is `db`) turned to the embedded SQLite backend:
/// `tables` are exported from `db` as CSV into `dir` and declared with
/// those files as their sources.
pub async fn sqlite_toml(toml: &str, db: &str, tables: &[&str], dir: &Path) -> String {
    export_csv(db, tables, dir).await;
    let mut toml = toml.replace(
        &format!("[backend]\nurl = \"{}\"", cluster().reader_url(db)),
        &format!("[backend]\nsqlite = \"{}\"", dir.join("data.db").display()),
    );
    for table in tables {
        let csv = format!(
            "name = \"{table}\"\ncsv = \"{}\"\n",
            dir.join(format!("{table}.csv")).display()
        );
        let qualified = format!("name = \"public.{table}\"\n");
        toml = if toml.contains(&qualified) {
            toml.replace(&qualified, &csv)
        } else {
            toml.replace(&format!("name = \"{table}\"\n"), &csv)
        };
    }
    assert!(
        toml.contains("sqlite = ") && !toml.contains("public."),
        "{toml}"
    );
    toml
}

/// The runtime a bench's `main` runs in: two workers, like the machine.
pub fn bench_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A number a bench reads from the environment, or `default`.
pub fn env_number<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of latency samples (benches).
pub fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// The median time of `iters` runs of `f`, after a warm-up (benches).
pub async fn time<F, Fut>(iters: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for _ in 0..iters / 10 + 1 {
        f().await; // warm up caches and connections
    }
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        f().await;
        samples.push(start.elapsed());
    }
    median(samples)
}

/// Medians of `f` and `g` run alternately, so that both see the same
/// moments of the machine (a slow stretch slows both, not one).
pub async fn time_pair<F, G, FutF, FutG>(iters: usize, mut f: F, mut g: G) -> (Duration, Duration)
where
    F: FnMut() -> FutF,
    G: FnMut() -> FutG,
    FutF: std::future::Future<Output = ()>,
    FutG: std::future::Future<Output = ()>,
{
    for _ in 0..iters / 10 + 1 {
        f().await;
        g().await;
    }
    let (mut a, mut b) = (Vec::with_capacity(iters), Vec::with_capacity(iters));
    for _ in 0..iters {
        let start = Instant::now();
        f().await;
        a.push(start.elapsed());
        let start = Instant::now();
        g().await;
        b.push(start.elapsed());
    }
    (median(a), median(b))
}
