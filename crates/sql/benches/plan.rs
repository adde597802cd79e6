//! What parsing and planning cost per statement: the median time to
//! classify and plan each of a few typical private queries, in µs. Run
//! with different builds (e.g. the release profile's opt-level for this
//! crate and sqlparser) to compare.
//!
//! Run: `cargo bench -p dpgate-sql --bench plan`.

use std::hint::black_box;
use std::time::Instant;

use dpgate_config::Config;
use dpgate_sql::{classify, plan, Command};

const CONFIG: &str = r#"
[backend]
url = "postgres://x@127.0.0.1/db"
[[users]]
name = "a"
password = "env:P"
epsilon_budget = 1
[[tables]]
name = "visits"
privacy_unit = "patient_id"
max_rows_per_unit = 5
columns.age = { type = "int", lower = 0, upper = 110 }
columns.cost = { type = "float", lower = 0, upper = 5000 }
columns.ward = { type = "text", values = ["A", "B", "C"] }
columns.diagnosis = { type = "text" }
[[tables]]
name = "patients"
privacy_unit = "patient_id"
max_rows_per_unit = 1
columns.birth_year = { type = "int", lower = 1900, upper = 2025 }
columns.sex = { type = "text", values = ["F", "M"] }
"#;

const QUERIES: [&str; 5] = [
    "SELECT COUNT(*) FROM visits",
    "SELECT COUNT(*), AVG(age), SUM(cost) FROM visits WHERE ward = 'A'",
    "SELECT ward, COUNT(*), AVG(cost) FROM visits GROUP BY ward ORDER BY 2 DESC",
    "SELECT diagnosis, COUNT(*) FROM visits WHERE age BETWEEN 18 AND 65 GROUP BY diagnosis HAVING COUNT(*) > 10",
    "SELECT p.sex, COUNT(*), PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY v.cost) FROM visits v JOIN patients p ON v.patient_id = p.patient_id GROUP BY p.sex",
];

const ITERS: usize = 2_000;

fn main() {
    let config = Config::parse(CONFIG, &|_| Some("x".into())).unwrap();
    println!("parse and plan, median of {ITERS}:");
    for sql in QUERIES {
        let mut samples = Vec::with_capacity(ITERS);
        for _ in 0..ITERS {
            let start = Instant::now();
            let Command::Private(q) = classify(black_box(sql)).unwrap().remove(0) else {
                unreachable!()
            };
            black_box(plan(&q, &config, 0.1).unwrap());
            samples.push(start.elapsed());
        }
        samples.sort();
        println!("  {:>9.1?}  {sql}", samples[ITERS / 2]);
    }
}
