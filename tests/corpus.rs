//! The analyst query corpus: DBeaver-style SQL over a hospital dataset
//! (visits, patients, a public wards table), each with its expected
//! outcome through a running dpgate in front of real PostgreSQL: answered
//! with a number of rows, or refused with a SQLSTATE and a hint.

mod common;

use common::*;

/// What a corpus query must produce.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Exactly this many rows (ungrouped, or keys from declared domains).
    Rows(usize),
    /// Between these many rows (keys from partition selection, HAVING).
    RowsIn(usize, usize),
    /// Refused with this SQLSTATE.
    Refused(&'static str),
}
use Expect::*;

const CORPUS: &[(&str, Expect)] = &[
    // Ungrouped aggregates.
    ("SELECT COUNT(*) FROM visits", Rows(1)),
    ("SELECT COUNT(age) FROM visits", Rows(1)),
    ("SELECT COUNT(DISTINCT patient_id) FROM visits", Rows(1)),
    ("SELECT COUNT(DISTINCT ward) FROM visits", Rows(1)),
    ("SELECT SUM(cost) FROM visits", Rows(1)),
    ("SELECT AVG(age) FROM visits WHERE ward = 'A'", Rows(1)),
    ("SELECT VARIANCE(age), STDDEV(age) FROM visits", Rows(1)),
    ("SELECT VAR_POP(cost), STDDEV_POP(cost), VAR_SAMP(cost), STDDEV_SAMP(cost) FROM visits", Rows(1)),
    ("SELECT MEDIAN(age) FROM visits", Rows(1)),
    ("SELECT PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY cost) FROM visits", Rows(1)),
    ("SELECT PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY age DESC) FROM visits WHERE age < 60", Rows(1)),
    // Expressions inside aggregates and filters.
    ("SELECT SUM(age * 2 + 1) FROM visits", Rows(1)),
    ("SELECT AVG(cost / 100) FROM visits", Rows(1)),
    ("SELECT SUM(CASE WHEN age >= 65 THEN 1 ELSE 0 END) FROM visits", Rows(1)),
    ("SELECT AVG(COALESCE(cost, 0)) FROM visits", Rows(1)),
    ("SELECT SUM(LEAST(cost, 1000)) FROM visits", Rows(1)),
    ("SELECT AVG(GREATEST(age - 18, 0)) FROM visits", Rows(1)),
    ("SELECT SUM(NULLIF(age, 0)) FROM visits", Rows(1)),
    ("SELECT AVG(CAST(age AS float)) FROM visits", Rows(1)),
    ("SELECT AVG(ROUND(cost)) FROM visits", Rows(1)),
    ("SELECT SUM(ABS(age - 50)) FROM visits", Rows(1)),
    ("SELECT AVG(cost / NULLIF(age, 0)) FILTER (WHERE age > 0) FROM visits", Refused("0A000")),
    ("SELECT COUNT(*) FILTER (WHERE age > 40), COUNT(*) FROM visits", Rows(1)),
    ("SELECT AVG(extract(month FROM visit_date)) FROM visits", Rows(1)),
    ("SELECT SUM(cost) / COUNT(*) AS mean_cost FROM visits", Rows(1)),
    ("SELECT ROUND(AVG(age), 1) FROM visits", Rows(1)),
    ("SELECT COUNT(*) FROM visits WHERE visit_date >= DATE '2024-01-01'", Rows(1)),
    ("SELECT COUNT(*) FROM visits WHERE visit_date < '2023-06-01'", Rows(1)),
    ("SELECT COUNT(*) FROM visits WHERE extract(year FROM visit_date) = 2023", Rows(1)),
    ("SELECT COUNT(*) FROM visits WHERE diagnosis LIKE 'f%'", Rows(1)),
    ("SELECT COUNT(*) FROM visits WHERE age BETWEEN 18 AND 65 AND ward IN ('A', 'B')", Rows(1)),
    ("SELECT COUNT(*) FROM visits WHERE NOT (age < 18) OR cost IS NULL", Rows(1)),
    ("SELECT AVG(age) FROM visits v WHERE v.cost > 100", Rows(1)),
    ("SELECT COUNT(*) AS n, AVG(cost) AS c FROM visits HAVING COUNT(*) > 0", Rows(1)),
    ("SELECT COUNT(*) FROM visits WHERE age % 2 = 0", Rows(1)),
    ("SELECT AVG(age) FROM visits WHERE lower(ward) = 'a'", Rows(1)),
    // Row-level subqueries and CTEs.
    ("WITH young AS (SELECT age, cost FROM visits WHERE age < 30) SELECT COUNT(*), AVG(cost) FROM young", Rows(1)),
    ("SELECT AVG(c) FROM (SELECT cost * 1.1 AS c FROM visits) AS s", Rows(1)),
    ("SELECT COUNT(*) FROM (SELECT * FROM visits WHERE ward = 'B') t", Rows(1)),
    ("WITH a AS (SELECT patient_id, age FROM visits), b AS (SELECT age + 1 AS age1 FROM a) SELECT AVG(age1) FROM b", Rows(1)),
    // Joins.
    ("SELECT COUNT(*) FROM visits v JOIN patients p ON v.patient_id = p.patient_id WHERE p.sex = 'F'", Rows(1)),
    ("SELECT AVG(p.birth_year) FROM visits v JOIN patients p ON v.patient_id = p.patient_id", Rows(1)),
    ("SELECT COUNT(*) FROM visits v JOIN wards w ON v.ward = w.ward WHERE w.floor = 2", Rows(1)),
    ("SELECT AVG(w.floor) FROM visits v JOIN wards w ON v.ward = w.ward", Rows(1)),
    ("SELECT COUNT(*) FROM visits v LEFT JOIN wards w ON v.ward = w.ward", Rows(1)),
    ("SELECT COUNT(DISTINCT v.patient_id) FROM visits v JOIN patients p USING (patient_id)", Rows(1)),
    ("SELECT COUNT(*) FROM patients WHERE smoker", Rows(1)),
    ("SELECT AVG(2025 - birth_year) FROM patients", Rows(1)),
    // GROUP BY on declared domains: every key released.
    ("SELECT ward, COUNT(*) FROM visits GROUP BY ward", Rows(3)),
    ("SELECT ward, COUNT(*), AVG(cost) FROM visits GROUP BY ward ORDER BY ward", Rows(3)),
    ("SELECT ward, SUM(cost) FROM visits WHERE ward <> 'C' GROUP BY ward", Rows(3)),
    ("SELECT ward, COUNT(*) FROM visits WHERE ward = 'A' GROUP BY ward", Rows(1)),
    ("SELECT ward, COUNT(*) FROM visits GROUP BY 1 ORDER BY 2 DESC", Rows(3)),
    ("SELECT ward AS w, COUNT(*) AS n FROM visits GROUP BY w ORDER BY n DESC LIMIT 2", Rows(2)),
    ("SELECT ward, COUNT(*) FROM visits GROUP BY ward HAVING COUNT(*) > 100000", Rows(0)),
    ("SELECT ward, COUNT(*) FROM visits GROUP BY ward ORDER BY ward LIMIT 1 OFFSET 1", Rows(1)),
    ("SELECT extract(month FROM visit_date) AS m, COUNT(*) FROM visits GROUP BY m ORDER BY m", Rows(12)),
    ("SELECT width_bucket(age, 0, 100, 10) AS b, COUNT(*) FROM visits GROUP BY b", Rows(12)),
    ("SELECT CASE WHEN age < 18 THEN 'child' WHEN age < 65 THEN 'adult' ELSE 'senior' END AS band, COUNT(*), AVG(cost) FROM visits GROUP BY band", Rows(3)),
    ("SELECT p.sex, p.region, COUNT(*) FROM visits v JOIN patients p ON v.patient_id = p.patient_id GROUP BY p.sex, p.region", Rows(8)),
    ("SELECT sex, AVG(birth_year) FROM patients GROUP BY sex", Rows(2)),
    ("SELECT smoker, COUNT(*) FROM patients GROUP BY smoker", Rows(2)),
    ("SELECT ward, VARIANCE(age), MEDIAN(cost) FROM visits GROUP BY ward", Rows(3)),
    ("SELECT ward, COUNT(DISTINCT patient_id) FROM visits GROUP BY ward", Rows(3)),
    ("SELECT DISTINCT ward FROM visits", Rows(3)),
    ("SELECT ward, SUM(cost) / COUNT(*) AS avg_cost, ROUND(AVG(age), 1) FROM visits GROUP BY ward", Rows(3)),
    ("SELECT extract(dow FROM visit_date) AS d, COUNT(*) FROM visits GROUP BY d", Rows(7)),
    ("SELECT ward, COUNT(*) FILTER (WHERE age >= 65) AS seniors FROM visits GROUP BY ward", Rows(3)),
    ("SELECT region, COUNT(*) FROM patients GROUP BY region HAVING COUNT(*) > 10 ORDER BY COUNT(*) DESC", Rows(4)),
    ("SELECT ward, COUNT(*) FROM visits GROUP BY ward ORDER BY AVG(age)", Rows(3)),
    ("SELECT ward, COUNT(*) * 100.0 / 6000 AS pct FROM visits GROUP BY ward", Rows(3)),
    // GROUP BY without a declared domain: partition selection.
    ("SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis", RowsIn(5, 5)),
    ("SELECT date_trunc('month', visit_date) AS month, COUNT(*) FROM visits GROUP BY month ORDER BY month", RowsIn(20, 24)),
    ("SELECT extract(year FROM visit_date) AS y, SUM(cost) FROM visits GROUP BY y", RowsIn(2, 2)),
    ("SELECT w.name, COUNT(*) FROM visits v JOIN wards w ON v.ward = w.ward GROUP BY w.name", RowsIn(3, 3)),
    ("SELECT diagnosis, ward, AVG(age) FROM visits GROUP BY diagnosis, ward", RowsIn(12, 15)),
    ("SELECT age, COUNT(*) FROM visits GROUP BY age", RowsIn(0, 110)),
    ("SELECT lower(diagnosis) AS d, COUNT(*) FROM visits GROUP BY d", RowsIn(5, 5)),
    ("SELECT diagnosis FROM visits GROUP BY diagnosis", RowsIn(5, 5)),
    // Refused, with the reason.
    ("SELECT * FROM visits", Refused("42501")),
    ("SELECT age FROM visits", Refused("42501")),
    ("SELECT MAX(age) FROM visits", Refused("0A000")),
    ("SELECT MIN(cost) FROM visits", Refused("0A000")),
    ("SELECT COUNT(*) FROM secrets", Refused("42P01")),
    ("SELECT SUM(secret) FROM visits", Refused("42703")),
    ("SELECT SUM(ward) FROM visits", Refused("42804")),
    ("SELECT SUM(patient_id) FROM visits", Refused("42804")),
    ("SELECT patient_id, COUNT(*) FROM visits GROUP BY patient_id", Refused("42501")),
    ("SELECT age, COUNT(*) FROM visits", Refused("42803")),
    ("SELECT COUNT(*) FROM visits v JOIN patients p ON v.age = p.birth_year", Refused("0A000")),
    ("SELECT COUNT(*) FROM visits, patients", Refused("0A000")),
    ("SELECT COUNT(*) FROM wards", Refused("0A000")),
    ("SELECT COUNT(*) FROM visits UNION SELECT COUNT(*) FROM patients", Refused("0A000")),
    ("SELECT COUNT(*) FROM (SELECT ward, COUNT(*) AS n FROM visits GROUP BY ward) t", Refused("0A000")),
    ("SELECT COUNT(*) FROM (SELECT * FROM visits ORDER BY cost DESC LIMIT 10) t", Refused("0A000")),
    ("SELECT SUM(cost / age) FROM visits", Refused("0A000")),
    ("SELECT SUM(DISTINCT age) FROM visits", Refused("0A000")),
    ("SELECT COUNT(*) FROM visits WHERE age = 'abc'", Refused("42804")),
    ("SELECT COUNT(*) FROM visits WHERE age IN (SELECT age FROM visits)", Refused("0A000")),
    ("SELECT COUNT(*) FROM visits WHERE CAST(ward AS int) = 1", Refused("0A000")),
    ("SELECT AVG(age) OVER () FROM visits", Refused("0A000")),
    ("SELECT COUNT(*) FROM visits WHERE visit_date > DATE '2024-13-45'", Refused("42804")),
    ("SELECT COUNT(*) FROM visits ORDER BY 3", Refused("42P10")),
    ("SELECT COUNT(*) FROM visits LIMIT -1", Refused("22023")),
    ("SELECT string_agg(ward, ',') FROM visits", Refused("0A000")),
    ("SELECT COUNT(*) FROM wards w LEFT JOIN visits v ON v.ward = w.ward", Refused("0A000")),
    ("WITH RECURSIVE r AS (SELECT age FROM visits) SELECT COUNT(*) FROM r", Refused("0A000")),
    // No declared table: answered by the shadow catalog, which holds no data.
    ("WITH RECURSIVE r AS (SELECT 1) SELECT COUNT(*) FROM r", Rows(1)),
    ("SELECT COUNT(*) FROM visits FULL JOIN patients ON visits.patient_id = patients.patient_id", Refused("0A000")),
    ("SELECT COUNT(*) FROM visits WHERE secret = 'x'", Refused("42703")),
    ("SELECT ward, COUNT(*) FROM visits GROUP BY ROLLUP (ward)", Refused("0A000")),
    ("SELECT PERCENTILE_CONT(2) WITHIN GROUP (ORDER BY age) FROM visits", Refused("22023")),
    ("SELECT COUNT(*) FROM visits GROUP BY COUNT(*)", Refused("42803")),
    ("SELECT SUM(age * age * age * age * age * age * age * age * age * age) FROM visits", Refused("0A000")),
    ("SELECT COUNT(*) FROM visits WHERE ward LIKE 'A\\'", Refused("22023")),
    ("SELECT AVG(length(diagnosis)) FROM visits", Refused("0A000")),
    ("SELECT COUNT(*) FROM visits WHERE age = (SELECT MAX(age) FROM visits)", Refused("0A000")),
    ("SELECT COUNT(*) FROM visits v JOIN patients p ON v.patient_id = p.patient_id WHERE patient_id > 3", Refused("42702")),
    ("SELECT COUNT(*) FROM visits x WHERE y.age > 3", Refused("42P01")),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_corpus_query_gets_its_expected_outcome() {
    assert!(
        CORPUS.len() >= 80,
        "the corpus has {} queries",
        CORPUS.len()
    );
    let db = hospital_database("corpus", 2000).await;
    let dir = tempdir();
    let port = free_port();
    let config = hospital_toml(&db, port, &dir.path().join("l.sqlite"), 1e6, 1.0);
    let gate = Dpgate::start(dir.path(), &config, port);
    let (client, _notices) = gate.connect().await;
    let mut failures = Vec::new();
    for &(sql, expect) in CORPUS {
        let got = simple_rows(&client, sql).await;
        let ok = match (&got, expect) {
            (Ok(rows), Rows(n)) => rows.len() == n,
            (Ok(rows), RowsIn(lo, hi)) => (lo..=hi).contains(&rows.len()),
            (Err(e), Refused(code)) => e.as_db_error().is_some_and(|d| {
                d.code().code() == code
                    && !d.message().is_empty()
                    && d.hint().is_some_and(|h| !h.is_empty())
            }),
            _ => false,
        };
        if !ok {
            let got = match got {
                Ok(rows) => format!("{} rows: {rows:?}", rows.len()),
                Err(e) => match e.as_db_error() {
                    Some(d) => {
                        format!("{} {} (hint: {:?})", d.code().code(), d.message(), d.hint())
                    }
                    None => e.to_string(),
                },
            };
            failures.push(format!("{sql}\n    expected {expect:?}, got {got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus queries failed:\n{}",
        failures.len(),
        CORPUS.len(),
        failures.join("\n")
    );
}
