//! The Spark Connect server the Spark tests run against (`.ci/run`
//! starts one and names it in `DPGATE_SPARK_URL`), and copies of the
//! PostgreSQL test tables in it.

use dpgate_backend::spark::SparkBackend;
use dpgate_sql::types::quote_literal;

use super::{cluster, connect_direct};

/// The Spark Connect URL the tests use.
pub fn spark_url() -> String {
    std::env::var("DPGATE_SPARK_URL").unwrap_or_else(|_| {
        panic!(
            "the spark feature's tests need a Spark Connect server: run scripts/spark-connect.sh start and set DPGATE_SPARK_URL=sc://127.0.0.1:15002"
        )
    })
}

/// A session on the test server.
pub async fn spark_session() -> SparkBackend {
    spark_session_at(&spark_url()).await
}

/// A session on the server at `url`.
pub async fn spark_session_at(url: &str) -> SparkBackend {
    let settings = dpgate_config::Backend {
        store: dpgate_config::BackendStore::Spark(url.to_string()),
        statement_timeout_ms: 300_000,
        pool_size: 1,
        allow_privileged_role: false,
    };
    SparkBackend::connect(url, &settings).await.unwrap()
}

/// Spark's name for a PostgreSQL column type.
fn spark_type(pg: &str) -> &'static str {
    match pg {
        "integer" => "INT",
        "bigint" => "BIGINT",
        "smallint" => "SMALLINT",
        "double precision" => "DOUBLE",
        "real" => "FLOAT",
        "numeric" => "DECIMAL(38, 10)",
        "boolean" => "BOOLEAN",
        "date" => "DATE",
        "timestamp without time zone" => "TIMESTAMP",
        _ => "STRING",
    }
}

/// A value PostgreSQL printed as `text` as a Spark literal of `ty`.
fn spark_literal(text: Option<&str>, ty: &str) -> String {
    let Some(text) = text else {
        return "NULL".into();
    };
    match ty {
        "INT" | "BIGINT" | "SMALLINT" => text.to_string(),
        "BOOLEAN" => (if text == "t" { "TRUE" } else { "FALSE" }).into(),
        "DATE" => format!("DATE {}", quote_literal(text)),
        "TIMESTAMP" => format!("TIMESTAMP {}", quote_literal(text)),
        "STRING" => quote_literal(text),
        other => format!("CAST({} AS {other})", quote_literal(text)),
    }
}

/// Copies `tables` of the PostgreSQL test database `db` into the Spark
/// database `database` (created, or replaced) of the server at `url`, as
/// parquet tables with the same columns, types and rows.
pub async fn copy_to_spark(url: &str, db: &str, tables: &[&str], database: &str) {
    let pg = connect_direct(&cluster().url(db)).await;
    let spark = spark_session_at(url).await;
    let mut statements = vec![format!("CREATE DATABASE IF NOT EXISTS \"{database}\"")];
    for table in tables {
        let columns: Vec<(String, &str)> = pg
            .query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = 'public' AND table_name = $1 ORDER BY ordinal_position",
                &[table],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), spark_type(r.get::<_, &str>(1))))
            .collect();
        let name = format!("\"{database}\".\"{table}\"");
        statements.push(format!("DROP TABLE IF EXISTS {name}"));
        statements.push(format!(
            "CREATE TABLE {name} ({}) USING parquet",
            columns
                .iter()
                .map(|(c, t)| format!("\"{c}\" {t}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let rows = super::simple_rows(&pg, &format!("SELECT * FROM \"{table}\""))
            .await
            .unwrap();
        for chunk in rows.chunks(2000) {
            let values: Vec<String> = chunk
                .iter()
                .map(|row| {
                    let cells: Vec<String> = row
                        .iter()
                        .zip(&columns)
                        .map(|(v, (_, ty))| spark_literal(v.as_deref(), ty))
                        .collect();
                    format!("({})", cells.join(", "))
                })
                .collect();
            statements.push(format!("INSERT INTO {name} VALUES {}", values.join(", ")));
        }
    }
    spark.execute(&statements).await.unwrap();
}

/// `toml` (whose backend is the test database `db`) turned to the test
/// Spark server: each of `tables`, copied into Spark's `database`, is
/// declared with its Spark name.
pub async fn spark_toml(toml: &str, db: &str, tables: &[&str], database: &str) -> String {
    spark_toml_at(&spark_url(), toml, db, tables, database).await
}

/// [`spark_toml`] for the Spark Connect server at `url`.
pub async fn spark_toml_at(
    url: &str,
    toml: &str,
    db: &str,
    tables: &[&str],
    database: &str,
) -> String {
    copy_to_spark(url, db, tables, database).await;
    let mut toml = toml.replace(
        &format!("[backend]\nurl = \"{}\"", cluster().reader_url(db)),
        &format!("[backend]\nspark = \"{url}\""),
    );
    for table in tables {
        let mapped = format!("name = \"{table}\"\nbackend_name = \"{database}.{table}\"\n");
        let qualified = format!("name = \"public.{table}\"\n");
        toml = if toml.contains(&qualified) {
            toml.replace(&qualified, &mapped)
        } else {
            toml.replace(&format!("name = \"{table}\"\n"), &mapped)
        };
    }
    assert!(toml.contains("spark = "), "{toml}");
    toml
}

/// `toml` without its row-level tables (private, with no `privacy_unit`),
/// which the Spark backend cannot read.
pub fn without_row_level_tables(toml: &str) -> String {
    let mut blocks = toml.split("[[tables]]");
    let mut out = blocks.next().unwrap_or_default().to_string();
    for block in blocks {
        if block.contains("privacy_unit") || block.contains("public = true") {
            out.push_str("[[tables]]");
            out.push_str(block);
        }
    }
    out
}

/// A Spark standalone cluster on loopback for one test: a master, two
/// single-core workers and a Connect server attached to them, started by
/// `scripts/spark-connect.sh start-cluster` on free ports and stopped on
/// drop.
pub struct SparkCluster {
    /// The Connect server's URL.
    pub url: String,
    ui_port: u16,
    dir: tempfile::TempDir,
}

impl SparkCluster {
    /// Starts the cluster; panics with the script's output if it fails
    /// three times. Each try takes fresh free ports: a port free when
    /// chosen may be taken by one of Spark's own services (which bind
    /// random ports) before the Connect server binds it.
    pub fn start() -> SparkCluster {
        let mut failures = Vec::new();
        for _ in 0..3 {
            let dir = super::tempdir();
            let ui_port = super::free_port();
            let out = std::process::Command::new("scripts/spark-connect.sh")
                .arg("start-cluster")
                .env("DPGATE_SPARK_DIR", dir.path())
                .env("DPGATE_SPARK_PORT", super::free_port().to_string())
                .env("DPGATE_SPARK_MASTER_PORT", super::free_port().to_string())
                .env("DPGATE_SPARK_WEBUI_PORT", super::free_port().to_string())
                .env("DPGATE_SPARK_UI_PORT", ui_port.to_string())
                .output()
                .unwrap();
            let cluster = SparkCluster {
                url: String::from_utf8_lossy(&out.stdout).trim().to_string(),
                ui_port,
                dir,
            };
            if out.status.success() {
                return cluster;
            }
            // Dropping it stops whatever did start.
            failures.push(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        panic!("the cluster did not start: {failures:#?}");
    }

    /// Tasks each executor (not the driver) has completed, by executor
    /// id and host, from the driver's REST API.
    pub fn executor_tasks(&self) -> Vec<(String, u64)> {
        let get = |path: &str| -> serde_json::Value {
            let out = std::process::Command::new("curl")
                .args([
                    "-sf",
                    &format!("http://127.0.0.1:{}/api/v1/{path}", self.ui_port),
                ])
                .output()
                .unwrap();
            assert!(out.status.success(), "GET {path} failed");
            serde_json::from_slice(&out.stdout).unwrap()
        };
        let apps = get("applications");
        let id = apps[0]["id"].as_str().expect("one application").to_string();
        get(&format!("applications/{id}/executors"))
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["id"] != "driver")
            .map(|e| {
                (
                    format!("{} on {}", e["id"].as_str().unwrap_or("?"), e["hostPort"]),
                    e["completedTasks"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    }
}

impl Drop for SparkCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("scripts/spark-connect.sh")
            .arg("stop")
            .env("DPGATE_SPARK_DIR", self.dir.path())
            .status();
    }
}

/// `inner` reading Spark database `to` wherever a plan names `from`: the
/// sensitivity tests plan once (with D's declarations) and run the same
/// plan on D and on D′, which on Spark are two databases of one server.
pub struct Renamed {
    pub inner: std::sync::Arc<dyn dpgate_backend::Backend>,
    pub from: String,
    pub to: String,
}

#[async_trait::async_trait]
impl dpgate_backend::Backend for Renamed {
    fn dialect(&self) -> dpgate_sql::Dialect {
        self.inner.dialect()
    }

    async fn column_type(
        &self,
        table: &dpgate_config::Table,
        column: &str,
    ) -> Option<dpgate_backend::ColumnType> {
        self.inner.column_type(table, column).await
    }

    async fn fetch_into(
        &self,
        query: dpgate_backend::BackendQuery<'_>,
        sink: &mut (dyn dpgate_sql::GroupSink + Send),
    ) -> Result<(), dpgate_backend::BackendError> {
        let sql = query
            .sql
            .replace(&format!("`{}`.", self.from), &format!("`{}`.", self.to));
        assert_ne!(sql, query.sql, "the plan does not name {}", self.from);
        self.inner
            .fetch_into(dpgate_backend::BackendQuery { sql: &sql, ..query }, sink)
            .await
    }
}
