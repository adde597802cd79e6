//! Creates the example hospital tables (`hospital.visits`, 100 000 visits
//! of 20 000 patients, and `hospital.patients`) in the Spark Connect
//! server at `DPGATE_SPARK_URL` (default `sc://127.0.0.1:15002`), written
//! by Spark itself from `range()`: nothing to download or copy.
//!
//! ```sh
//! cargo run --release --features spark --example spark_load
//! ```

use dpgate_backend::spark::SparkBackend;

const STATEMENTS: [&str; 5] = [
    "CREATE DATABASE IF NOT EXISTS hospital",
    "DROP TABLE IF EXISTS hospital.visits",
    "CREATE TABLE hospital.visits USING parquet AS SELECT \
       CAST(id % 20000 AS BIGINT) AS patient_id, \
       CAST(pmod(hash(id, 1), 95) + 1 AS INT) AS age, \
       CAST(pmod(hash(id, 2), 500000) AS DOUBLE) / 100 AS cost, \
       element_at(array('A', 'B', 'C'), CAST(pmod(hash(id, 3), 3) + 1 AS INT)) AS ward, \
       date_add(DATE '2023-01-01', CAST(pmod(hash(id, 4), 730) AS INT)) AS visit_date \
     FROM range(100000)",
    "DROP TABLE IF EXISTS hospital.patients",
    "CREATE TABLE hospital.patients USING parquet AS SELECT \
       id AS patient_id, \
       CASE WHEN id % 2 = 0 THEN 'F' ELSE 'M' END AS sex, \
       CAST(1930 + pmod(hash(id, 5), 80) AS INT) AS birth_year \
     FROM range(20000)",
];

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DPGATE_SPARK_URL").unwrap_or_else(|_| "sc://127.0.0.1:15002".into());
    let settings = dpgate_config::Backend {
        store: dpgate_config::BackendStore::Spark(url.clone()),
        statement_timeout_ms: 600_000,
        pool_size: 1,
        allow_privileged_role: false,
    };
    let spark = SparkBackend::connect(&url, &settings).await?;
    let statements: Vec<String> = STATEMENTS.iter().map(|s| s.to_string()).collect();
    spark.execute(&statements).await?;
    let rows = spark.rows("SELECT COUNT(*) FROM hospital.visits").await?;
    println!(
        "hospital.visits ({} rows) and hospital.patients are ready in {url}",
        rows[0][0].as_deref().unwrap_or("?")
    );
    Ok(())
}
