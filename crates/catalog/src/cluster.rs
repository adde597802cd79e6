//! The private PostgreSQL cluster that holds the shadow catalog.
//!
//! Catalog SQL from analysts is arbitrary PostgreSQL: functions that read
//! files (`pg_read_binary_file`), run SQL text (`query_to_xml`), list other
//! databases (`pg_database`) or show other sessions (`pg_stat_activity`).
//! A token denylist cannot stop all of them (escaped identifiers, SQL in
//! strings), so the catalog is private by construction instead: dpgate
//! initialises a fresh cluster from the installed server binaries in a
//! temporary directory, starts it with no TCP listener on a Unix socket in
//! a directory only its owner can open, creates one database of empty
//! tables, and lets analysts' queries in only as an unprivileged role.
//! Whatever a query reads there — files, statistics, activity, other
//! databases — belongs to a server that holds no data and no one else.
//!
//! The server runs as the invoking user, or as `postgres` when dpgate runs
//! as root (PostgreSQL refuses root). It stops when the [`Cluster`] is
//! dropped; a small shell watchdog also stops it within a second of
//! dpgate's exit, however dpgate ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::CatalogError;

/// The role dpgate itself uses to create the shadow tables.
pub(crate) const ADMIN_ROLE: &str = "dpgate_admin";
/// The unprivileged role analysts' catalog queries run as.
pub(crate) const READER_ROLE: &str = "dpgate_reader";
/// The one database analysts can reach.
pub(crate) const DATABASE: &str = "dpgate_catalog";
/// The database of synthetic rows (tables declaring `[tables.synthetic]`,
/// filled with rows sampled from their fits; nothing else).
pub(crate) const SYNTHETIC_DATABASE: &str = "dpgate_synthetic";

/// A running private cluster; stopped and deleted on drop.
pub struct Cluster {
    dir: tempfile::TempDir,
    data: PathBuf,
    socket_dir: PathBuf,
}

impl Cluster {
    /// Initialises and starts a cluster with the binaries in `bin_dir` (or
    /// the ones found on this machine).
    pub fn start(bin_dir: Option<&Path>) -> Result<Cluster, CatalogError> {
        let bin = find_bin_dir(bin_dir)?;
        let dir = tempfile::Builder::new()
            .prefix("dpgate-catalog-")
            .tempdir()
            .map_err(|e| unavailable(format!("cannot create a directory for it: {e}")))?;
        let data = dir.path().join("data");
        let socket_dir = dir.path().join("socket");
        std::fs::create_dir(&socket_dir)
            .map_err(|e| unavailable(format!("cannot create its socket directory: {e}")))?;
        let owner = ServerUser::for_this_process()?;
        owner.take(dir.path())?;
        owner.take(&socket_dir)?;
        let started = Instant::now();
        let init = owner
            .command(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-A",
                "trust",
                "-U",
                ADMIN_ROLE,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .map_err(|e| unavailable(format!("cannot run initdb: {e}")))?;
        if !init.status.success() {
            return Err(unavailable(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&init.stderr).trim()
            )));
        }
        // The postmaster, and a watchdog that stops it when dpgate is gone.
        let script = r#"
"$1/postgres" -D "$2" -k "$3" -p 5432 -c listen_addresses= -c unix_socket_permissions=0700 \
  -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=24 \
  -c shared_buffers=16MB -c max_wal_size=64MB -c logging_collector=off \
  -c log_min_messages=warning -c statement_timeout=10000 \
  -c track_activities=off -c track_counts=off 2>>"$2/../postgres.log" &
pg=$!
while [ -d "/proc/$4" ] && kill -0 "$pg" 2>/dev/null; do sleep 1; done
kill -INT "$pg" 2>/dev/null
wait "$pg"
rm -rf "$5"
"#;
        owner
            .command(Path::new("/bin/sh"))
            .arg("-c")
            .arg(script)
            .arg("dpgate-catalog")
            .arg(&bin)
            .arg(&data)
            .arg(&socket_dir)
            .arg(std::process::id().to_string())
            // The whole directory, by its own name: `rm` refuses a path
            // that ends in `..`, so `$2/..` left every directory behind.
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| unavailable(format!("cannot start postgres: {e}")))?;
        let cluster = Cluster {
            dir,
            data,
            socket_dir,
        };
        cluster.wait_until_ready()?;
        tracing::info!(
            dir = %cluster.dir.path().display(),
            ms = started.elapsed().as_millis() as u64,
            "catalog cluster started"
        );
        Ok(cluster)
    }

    /// The directory that holds the cluster's data, socket and log.
    pub fn directory(&self) -> &Path {
        self.dir.path()
    }

    /// Connection settings for `role` on the catalog database.
    pub fn config(&self, role: &str, database: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host_path(&self.socket_dir)
            .port(5432)
            .user(role)
            .dbname(database)
            .application_name("dpgate catalog")
            .connect_timeout(Duration::from_secs(10));
        c
    }

    fn wait_until_ready(&self) -> Result<(), CatalogError> {
        let socket = self.socket_dir.join(".s.PGSQL.5432");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            // The socket appears once the server accepts connections, and
            // the pid file's last line says "ready" from then on.
            let ready = std::fs::read_to_string(self.data.join("postmaster.pid"))
                .is_ok_and(|pid| pid.lines().any(|l| l.trim() == "ready"));
            if socket.exists() && ready {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default();
        Err(unavailable(format!(
            "postgres did not start within 30 s: {}",
            log.lines().last().unwrap_or("no log")
        )))
    }

    /// The postmaster's pid, from its pid file.
    fn postmaster_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Cluster {
    /// Fast shutdown (SIGINT), then the directory goes with the TempDir.
    fn drop(&mut self) {
        if let Some(pid) = self.postmaster_pid() {
            let _ = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn unavailable(detail: String) -> CatalogError {
    CatalogError::Unavailable(format!("the catalog cluster: {detail}"))
}

/// PostgreSQL's server binaries: the configured directory, else
/// `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin.
fn find_bin_dir(configured: Option<&Path>) -> Result<PathBuf, CatalogError> {
    let has_server = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Some(d) = configured {
        return if has_server(d) {
            Ok(d.to_path_buf())
        } else {
            Err(unavailable(format!(
                "catalog.bin_dir {} holds no initdb and postgres",
                d.display()
            )))
        };
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .collect();
    debian.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    from_pg_config
        .into_iter()
        .chain(debian.into_iter().rev())
        .find(|d| has_server(d))
        .ok_or_else(|| {
            unavailable(
                "no PostgreSQL server binaries (initdb, postgres) were found; install them (Debian: apt install postgresql) or set catalog.bin_dir".into(),
            )
        })
}

/// Who runs the server: this process's user, or `postgres` under root.
enum ServerUser {
    Me,
    Postgres { uid: u32, gid: u32 },
}

impl ServerUser {
    fn for_this_process() -> Result<ServerUser, CatalogError> {
        let id = |flag: &str| -> Option<u32> {
            let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
            String::from_utf8_lossy(&out.stdout).trim().parse().ok()
        };
        let me = Command::new("id")
            .arg("-u")
            .output()
            .map_err(|e| unavailable(format!("cannot run id: {e}")))?;
        if String::from_utf8_lossy(&me.stdout).trim() != "0" {
            return Ok(ServerUser::Me);
        }
        match (id("-u"), id("-g")) {
            (Some(uid), Some(gid)) => Ok(ServerUser::Postgres { uid, gid }),
            _ => Err(unavailable(
                "dpgate runs as root and PostgreSQL refuses to; create a postgres user or run dpgate as an ordinary user".into(),
            )),
        }
    }

    /// Gives `dir` to the server's user, readable by it alone.
    fn take(&self, dir: &Path) -> Result<(), CatalogError> {
        use std::os::unix::fs::PermissionsExt;
        if let ServerUser::Postgres { uid, gid } = self {
            std::os::unix::fs::chown(dir, Some(*uid), Some(*gid)).map_err(|e| {
                unavailable(format!("cannot give {} to postgres: {e}", dir.display()))
            })?;
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| unavailable(format!("cannot restrict {}: {e}", dir.display())))
    }

    fn command(&self, program: &Path) -> Command {
        match self {
            ServerUser::Me => Command::new(program),
            ServerUser::Postgres { .. } => {
                let mut c = Command::new("runuser");
                c.args(["-u", "postgres", "--"]).arg(program);
                c
            }
        }
    }
}
