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
    let settings = dpgate_config::Backend {
        store: dpgate_config::BackendStore::Spark(spark_url()),
        statement_timeout_ms: 300_000,
        pool_size: 1,
        allow_privileged_role: false,
    };
    SparkBackend::connect(&spark_url(), &settings)
        .await
        .unwrap()
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
/// database `database` (created, or replaced), as parquet tables with
/// the same columns, types and rows.
pub async fn copy_to_spark(db: &str, tables: &[&str], database: &str) {
    let pg = connect_direct(&cluster().url(db)).await;
    let spark = spark_session().await;
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

/// `toml` (whose backend is the test database `db`) turned to the Spark
/// server: each of `tables`, copied into Spark's `database`, is declared
/// with its Spark name.
pub async fn spark_toml(toml: &str, db: &str, tables: &[&str], database: &str) -> String {
    copy_to_spark(db, tables, database).await;
    let mut toml = toml.replace(
        &format!("[backend]\nurl = \"{}\"", cluster().reader_url(db)),
        &format!("[backend]\nspark = \"{}\"", spark_url()),
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
