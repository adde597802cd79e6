//! Planner and rewrite tests over a fixed catalog.

use dpgate_config::Config;

use crate::params::{bind_parameters, parameter_types};
use crate::types::Cell;
use crate::{classify, plan, Command, Plan, Refusal};

/// The catalog these tests plan against.
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
columns.ward = { type = "text", values = ["A", "B"] }
columns.stay = { type = "int", lower = 0, upper = 30, not_null = true }
[[tables]]
name = "events"
columns.score = { type = "int", lower = -10, upper = 3 }
[[tables]]
name = "wards"
public = true
columns.ward = { type = "text" }
[[tables]]
name = "patients"
privacy_unit = "patient_id"
privacy_unit_unique = true
columns.birth_year = { type = "int", lower = 1900, upper = 2025 }
[[tables]]
name = "insurance"
privacy_unit = "patient_id"
privacy_unit_unique = true
columns.premium = { type = "float", lower = 0, upper = 900 }
"#;

pub(crate) fn config() -> Config {
    Config::parse(CONFIG, &|_| Some("x".into())).unwrap()
}

fn try_plan(sql: &str) -> Result<Plan, Refusal> {
    match classify(sql)?.remove(0) {
        Command::Private(q) => plan(&q, &config(), 1.0),
        other => panic!("not private: {other:?}"),
    }
}

/// The same planner writes Spark SQL: backticked names, strings with
/// backslash escapes (and `$` escaped against variable substitution),
/// `div` for integer division, exact DECIMAL sums, declared columns read
/// through TRY_CAST, and random draws only in projections.
#[test]
fn spark_plans_are_spelled_for_spark() {
    let text = CONFIG
        .replace(
            "url = \"postgres://x@127.0.0.1/db\"",
            "spark = \"sc://127.0.0.1:15002\"",
        )
        .replace(
            "[[tables]]\nname = \"events\"\ncolumns.score = { type = \"int\", lower = -10, upper = 3 }\n",
            "",
        );
    let config = Config::parse(&text, &|_| Some("x".into())).unwrap();
    let Command::Private(q) =
        classify("SELECT COUNT(*), AVG(age / 3) FROM visits WHERE ward <> 'it''s ${x}\\'")
            .unwrap()
            .remove(0)
    else {
        panic!("not private")
    };
    let p = plan(&q, &config, 1.0).unwrap();
    let sql = &p.backend_sql;
    assert!(!sql.contains('"'), "{sql}");
    for part in [
        "FROM `default`.`visits` AS `visits`",
        "TRY_CAST(`visits`.`age` AS BIGINT)",
        "'it\\'s \\u0024{x}\\\\'",
        " div CAST(3 AS BIGINT))",
        "SUM(CAST(__dp_cut",
        "AS DECIMAL(38, 0))",
        "__dp_w AS __dp_cut0, LEAST(GREATEST(COALESCE(",
        "AS __dp_cut1, CASE",
    ] {
        assert!(sql.contains(part), "{part}\n{sql}");
    }
    // Rows sampled per unit (GROUP BY with few rows per unit) are ranked by
    // a hash of their values, the same in every attempt of a stage.
    let Command::Private(grouped) = classify("SELECT ward, COUNT(*) FROM visits GROUP BY ward")
        .unwrap()
        .remove(0)
    else {
        panic!("not private")
    };
    let sampled = plan(&grouped, &config, 1.0).unwrap().backend_sql;
    assert!(
        sampled.contains("PARTITION BY `visits`.`patient_id` ORDER BY xxhash64(")
            && !sampled.contains("random()"),
        "{sampled}"
    );
    // The PostgreSQL plan of the same query keeps standard quoting.
    let pg = plan(&q, &super::tests::config(), 1.0).unwrap();
    assert!(
        pg.backend_sql.contains("'it''s ${x}\\'"),
        "{}",
        pg.backend_sql
    );
}

/// The declared sensitivity of each measurement of `p`.
fn sensitivities(p: &Plan) -> Vec<u64> {
    p.release
        .measurements
        .iter()
        .map(|m| m.noise.sensitivity())
        .collect()
}

fn refused(sql: &str) -> Refusal {
    try_plan(sql).expect_err(sql)
}

#[test]
fn count_and_avg_bound_each_unit() {
    let p = try_plan("SELECT COUNT(*), AVG(age) FROM visits").unwrap();
    // AVG measures the sum of ages less 55 (the middle of [0, 110]), as
    // integers, and the count of ages (age may be NULL here).
    // One aggregation per patient: its rows counted, each partial scaled
    // to min(rows, 5) rows' worth and cut there (5 rows × radius 55).
    for part in [
        // The bare column is read clamped once, in the row projection.
        // A unit's partial sum of values that fit an integer is summed
        // as integers (the running total stays a plain int8).
        "SUM(CAST((__dp_a0 - 55) AS integer)) AS __dp_p1",
        "CASE WHEN COUNT(*) <= 5 THEN COUNT(*) ELSE 5 END AS __dp_w",
        // COUNT(*) of a pair is its row count: its cut is the allowance.
        "__dp_w AS __dp_cut0,",
        "LEAST(GREATEST(COALESCE(CASE WHEN __dp_c <= __dp_w THEN __dp_p1 ELSE CAST(div(CAST(__dp_p1 AS numeric) * __dp_w, __dp_c) AS bigint) END, 0), __dp_w * -55), __dp_w * 55) AS __dp_cut1",
        "CASE WHEN __dp_p2 >= __dp_c THEN __dp_w ELSE ((__dp_p2 * __dp_w) / __dp_c) + CASE WHEN floor(random() * __dp_c) < (__dp_p2 * __dp_w) % __dp_c THEN 1 ELSE 0 END END AS __dp_cut2",
        "SUM(CAST(__dp_cut1 AS bigint))",
        // Rows without a unit belong to no one and are left out.
        "\"visits\".\"patient_id\" AS __dp_u FROM \"public\".\"visits\" AS \"visits\" WHERE \"visits\".\"patient_id\" IS NOT NULL) AS __dp_rows GROUP BY __dp_u) AS __dp_units",
    ] {
        assert!(p.backend_sql.contains(part), "{part}\n{}", p.backend_sql);
    }
    assert_eq!(p.bounding, crate::plan::Bounding::PreAggregated);
    let sens = sensitivities(&p);
    // 5 rows × radius 55: half of 5 × 110.
    assert_eq!(sens, [5, 5 * 55, 5]);
    // An odd width is summed in half units: 2·x − (lower + upper).
    let odd = try_plan("SELECT AVG(score) FROM events").unwrap();
    assert!(
        odd.backend_sql.contains("(2 * __dp_a0 - -7)"),
        "{}",
        odd.backend_sql
    );
    assert!(
        odd.backend_sql.contains(" - -7) AS bigint))"),
        "{}",
        odd.backend_sql
    );
    let m = &odd.release.measurements[0];
    assert_eq!((m.noise.sensitivity(), m.grid.unit()), (13, 0.5));
    // Three measurements share ε = 1 exactly.
    assert_eq!(
        p.release.pure_epsilon().unwrap(),
        dpgate_dp::Rational::integer(1)
    );
    assert_eq!(
        p.columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["count", "avg"]
    );
}

/// PostgreSQL's per-unit step takes its cheapest exact form: a lone unit
/// column sorted (grouped in one pass), partial sums as integers while
/// every value fits one (a wider sum stays bigint, summed exactly), the
/// scaling of a unit beyond its allowance in numeric. The other
/// dialects are unchanged.
#[test]
fn per_unit_partials_take_the_cheapest_exact_form() {
    let count = try_plan("SELECT COUNT(*) FROM visits").unwrap().backend_sql;
    assert!(
        count.contains("AS __dp_u FROM \"public\".\"visits\" AS \"visits\" WHERE \"visits\".\"patient_id\" IS NOT NULL ORDER BY __dp_u) AS __dp_rows GROUP BY __dp_u"),
        "{count}"
    );
    // With any other column the sort would carry whole rows: no sort.
    for sql in [
        "SELECT COUNT(*), SUM(age) FROM visits",
        "SELECT COUNT(age) FROM visits",
        "SELECT COUNT(DISTINCT patient_id) FROM visits",
    ] {
        let p = try_plan(sql).unwrap();
        assert_eq!(p.bounding, crate::plan::Bounding::PreAggregated, "{sql}");
        assert!(
            !p.backend_sql.contains("ORDER BY"),
            "{sql}: {}",
            p.backend_sql
        );
    }
    // age · 10⁸ reaches 1.1·10¹⁰ > 2³¹ − 1: summed as bigint.
    let wide = try_plan("SELECT SUM(age * 100000000) FROM visits")
        .unwrap()
        .backend_sql;
    assert!(wide.contains("AS bigint)) AS __dp_p0"), "{wide}");
    assert!(!wide.contains("AS integer)"), "{wide}");
    let narrow = try_plan("SELECT SUM(age * 10000000) FROM visits")
        .unwrap()
        .backend_sql;
    assert!(narrow.contains("AS integer)) AS __dp_p0"), "{narrow}");
    for backend in ["sqlite = \"/tmp/x.db\"", "spark = \"sc://127.0.0.1:15002\""] {
        let text = CONFIG
            .replace("url = \"postgres://x@127.0.0.1/db\"", backend)
            .replace(
                "name = \"events\"\n",
                "name = \"events\"\nprivacy_unit = \"id\"\n",
            );
        let config = Config::parse(&text, &|_| Some("x".into())).unwrap();
        for sql in ["SELECT COUNT(*) FROM visits", "SELECT SUM(age) FROM visits"] {
            let Command::Private(q) = classify(sql).unwrap().remove(0) else {
                panic!("not private")
            };
            let rendered = plan(&q, &config, 1.0).unwrap().backend_sql;
            assert!(!rendered.contains("ORDER BY"), "{backend}: {rendered}");
            assert!(!rendered.contains("AS integer)"), "{backend}: {rendered}");
        }
    }
}

#[test]
fn column_references_are_told_from_expressions() {
    use crate::types::is_column_ref;
    for yes in [
        "__dp_a0",
        "\"visits\".\"age\"",
        "v.age",
        "\"public\".\"t\".\"x y\"",
    ] {
        assert!(is_column_ref(yes), "{yes}");
    }
    for no in [
        "",
        "age + 1",
        "(age)",
        "\"a\"\"b\"",
        "\"a.b\"",
        "1e3",
        "f(x)",
        "a..b",
        "\"",
    ] {
        assert!(!is_column_ref(no), "{no}");
    }
}

#[test]
fn only_a_bare_column_skips_the_aggregate_clamp() {
    // A bare column is read clamped to its bounds in the row projection;
    // an expression's value is clamped by the aggregate to its range.
    let bare = try_plan("SELECT SUM(age) FROM visits").unwrap().backend_sql;
    assert!(bare.contains("SUM(CAST(__dp_a0 AS integer))"), "{bare}");
    let expr = try_plan("SELECT SUM(age - 10) FROM visits")
        .unwrap()
        .backend_sql;
    assert!(
        expr.contains("SUM(CAST(CASE WHEN __dp_a0 <= -10 THEN -10 WHEN __dp_a0 >= 100 THEN 100 ELSE CAST(__dp_a0 AS bigint) END AS integer))"),
        "{expr}"
    );
    let real = try_plan("SELECT AVG(age * 0.5) FROM visits")
        .unwrap()
        .backend_sql;
    assert!(
        real.contains("WHEN __dp_a0 < 0e0 THEN 0e0 WHEN __dp_a0 > 5.5e1 THEN 5.5e1 ELSE CAST(__dp_a0 AS float8)"),
        "{real}"
    );
}

#[test]
fn shared_measurements_are_paid_once() {
    let p = try_plan("SELECT SUM(age) AS s, AVG(age) AS a, COUNT(age) FROM visits").unwrap();
    assert_eq!(p.release.measurements.len(), 2);
    assert_eq!(p.columns[0].name, "s");
}

#[test]
fn real_sums_use_a_power_of_two_grid() {
    let p = try_plan("SELECT SUM(cost) FROM visits WHERE ward = 'A'").unwrap();
    assert!(
        p.backend_sql
            .contains("SUM(CAST(ROUND(__dp_a0 * 1.28e2) AS integer))"),
        "{}",
        p.backend_sql
    );
    assert!(
        p.backend_sql.contains(
            "WHERE (\"visits\".\"ward\" = 'A') AND \"visits\".\"patient_id\" IS NOT NULL"
        ),
        "{}",
        p.backend_sql
    );
    let m = &p.release.measurements[0];
    assert_eq!(m.grid.unit(), 1.0 / 128.0);
    assert_eq!(m.noise.sensitivity(), 5 * 5000 * 128);
}

#[test]
fn row_level_tables_need_no_window() {
    let p = try_plan("SELECT SUM(score) FROM events WHERE score > -3").unwrap();
    assert_eq!(
        p.backend_sql,
        "SELECT CAST(COALESCE(SUM(CAST(__dp_a0 AS bigint)), 0) AS text) AS m0 \
         FROM (SELECT CASE WHEN \"events\".\"score\" <= -2 THEN -2 WHEN \"events\".\"score\" >= 3 THEN 3 ELSE CAST(\"events\".\"score\" AS bigint) END AS __dp_a0 \
         FROM \"public\".\"events\" AS \"events\" WHERE \"events\".\"score\" > -3) AS __dp_rows"
    );
    // WHERE score > -3 narrows [-10, 3] to [-2, 3].
    assert_eq!(p.release.measurements[0].noise.sensitivity(), 3);
}

#[test]
fn where_columns_are_normalised_and_checked() {
    let p = try_plan("SELECT COUNT(*) FROM visits v WHERE AGE BETWEEN 18 AND 65 AND (ward IN ('A','B') OR cost IS NULL)").unwrap();
    assert!(
        p.backend_sql.contains(
            "WHERE (\"v\".\"age\" BETWEEN 18 AND 65 AND (\"v\".\"ward\" IN ('A', 'B') OR \"v\".\"cost\" IS NULL)) AND \"v\".\"patient_id\" IS NOT NULL"
        ),
        "{}",
        p.backend_sql
    );
    assert_eq!(
        refused("SELECT COUNT(*) FROM visits WHERE secret = 1").code,
        "42703"
    );
    assert_eq!(
        refused("SELECT COUNT(*) FROM visits WHERE age / 'x' = 1").code,
        "42804"
    );
    assert_eq!(
        refused("SELECT COUNT(*) FROM visits WHERE age IN (SELECT 1)").code,
        "0A000"
    );
    assert_eq!(
        refused("SELECT COUNT(*) FROM visits WHERE CAST(ward AS int) = 1").code,
        "0A000"
    );
}

#[test]
fn refusals_have_codes_and_hints() {
    for (sql, code) in [
        ("SELECT * FROM visits", "42501"),
        ("SELECT age FROM visits", "42501"),
        ("SELECT MAX(age) FROM visits", "0A000"),
        ("SELECT MIN(age) FROM visits", "0A000"),
        ("SELECT COUNT(*) FROM secrets", "42P01"),
        ("SELECT SUM(ward) FROM visits", "42804"),
        ("SELECT SUM(patient_id) FROM visits", "42804"),
        ("SELECT COUNT(*) FROM visits JOIN events ON true", "0A000"),
        ("SELECT COUNT(*) FROM wards", "0A000"),
        (
            "SELECT COUNT(*) FROM visits UNION SELECT COUNT(*) FROM visits",
            "0A000",
        ),
        (
            "SELECT COUNT(*) FROM (SELECT COUNT(*) FROM visits) t",
            "0A000",
        ),
        ("SELECT COUNT(*) FROM visits ORDER BY 2", "42P10"),
        ("SELECT SUM(cost / age) FROM visits", "0A000"),
        ("SELECT SUM(DISTINCT age) FROM visits", "0A000"),
        ("SELECT random() FROM visits", "42501"),
        ("SELECT COUNT(*), random() FROM visits", "0A000"),
        ("SELECT age, COUNT(*) FROM visits", "42803"),
        (
            "SELECT patient_id, COUNT(*) FROM visits GROUP BY patient_id",
            "42501",
        ),
    ] {
        let r = refused(sql);
        assert_eq!(r.code, code, "{sql}: {r}");
        assert!(!r.hint.is_empty() && !r.message.is_empty(), "{sql}");
    }
}

#[test]
fn parameters_are_typed_and_bound() {
    let Command::Private(mut q) =
        classify("SELECT COUNT(*) FROM visits WHERE age > $1 AND ward = $2 AND cost < $3")
            .unwrap()
            .remove(0)
    else {
        panic!()
    };
    let cfg = config();
    use dpgate_config::ColumnType::*;
    assert_eq!(
        parameter_types(&q, &cfg),
        [Some(Int), Some(Text), Some(Float)]
    );
    bind_parameters(
        &mut q,
        &[
            Cell::Int(-3),
            Cell::Text("A'; DROP".into()),
            Cell::Float(2.5),
        ],
    )
    .unwrap();
    let p = plan(&q, &cfg, 0.5).unwrap();
    assert!(
        p.backend_sql
            .contains("\"visits\".\"age\" > (-3) AND \"visits\".\"ward\" = 'A''; DROP' AND \"visits\".\"cost\" < 2.5e0"),
        "{}",
        p.backend_sql
    );
    assert!(
        bind_parameters(&mut q.clone(), &[]).is_ok(),
        "already bound"
    );
}

/// No query is free: an ε below the configured minimum (or below one
/// ledger unit) is refused before anything is planned or charged.
#[test]
fn tiny_epsilons_are_refused() {
    let Command::Private(q) = classify("SELECT COUNT(*) FROM visits").unwrap().remove(0) else {
        panic!()
    };
    for eps in [1e-300, 1e-10, 0.0009, 0.0, -1.0, f64::NAN] {
        let e = plan(&q, &config(), eps).unwrap_err();
        assert_eq!(e.code, "22023", "{eps}: {e}");
    }
    assert!(plan(&q, &config(), 0.001).is_ok());
}

#[test]
fn cost_is_the_session_epsilon_whatever_the_shape() {
    for sql in [
        "SELECT COUNT(*) FROM visits",
        "SELECT AVG(cost), SUM(age), COUNT(ward) FROM visits",
    ] {
        let Command::Private(q) = classify(sql).unwrap().remove(0) else {
            panic!()
        };
        let p = plan(&q, &config(), 0.3).unwrap();
        assert_eq!(p.cost().epsilon_f64(), 0.3);
        assert_eq!(
            p.release.pure_epsilon().unwrap(),
            // Exactly the 3·10⁸ nano-ε the ledger charges.
            dpgate_dp::Rational::integer(3)
                .div(&dpgate_dp::Rational::integer(10))
                .unwrap()
        );
    }
}

#[test]
fn variances_use_centred_sums_on_grids() {
    let p = try_plan("SELECT VARIANCE(age), STDDEV_POP(age) AS sd FROM visits").unwrap();
    // Shared measurements: one count, one centred sum, one sum of squares.
    assert_eq!(p.release.measurements.len(), 3);
    let sens = sensitivities(&p);
    // age in [0, 110]: centre 55, radius 55 summed as integers (age − 55),
    // radius² 3025 on 2^-8.
    // (r is raised two doubles past 55 to cover rounding: one grid unit more.)
    assert_eq!(sens, [5, 5 * 55, 5 * (3025 * 256 + 1)]);
    assert!(
        p.backend_sql
            .contains("(CASE WHEN __dp_a0 > -1e-100 AND __dp_a0 < 1e-100 THEN 0e0 WHEN __dp_a0 < 0e0 THEN 0e0 WHEN __dp_a0 > 1.1e2 THEN 1.1e2 ELSE CAST(__dp_a0 AS float8) END - 5.5e1)"),
        "{}",
        p.backend_sql
    );
    assert_eq!(p.columns[0].name, "variance");
    assert_eq!(p.columns[1].name, "sd");
}

#[test]
fn percentiles_use_a_noisy_histogram() {
    let p = try_plan(
        "SELECT PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY cost DESC), MEDIAN(age) FROM visits",
    )
    .unwrap();
    assert_eq!(p.release.measurements.len(), 2);
    assert_eq!(p.release.raw_len(), 128);
    // A unit's 5 rows move at most 5 bin counts by one each.
    assert_eq!(p.release.measurements[0].noise.sensitivity(), 5);
    // Each row's bin is computed once (cost is a bare float column, read
    // clamped); values below, at or above the range fall in the end bins.
    for bin in [
        "CAST(width_bucket(CASE WHEN \"visits\".\"cost\" > -1e-100 AND \"visits\".\"cost\" < 1e-100 THEN 0e0 WHEN \"visits\".\"cost\" < 0e0 THEN 0e0 WHEN \"visits\".\"cost\" > 5e3 THEN 5e3 ELSE CAST(\"visits\".\"cost\" AS float8) END, 0e0, 5e3, 64) AS bigint) AS __dp_a0",
        "COUNT(CASE WHEN __dp_a0 <= 1 THEN 1 END)",
        "COUNT(CASE WHEN __dp_a0 = 2 THEN 1 END)",
        "COUNT(CASE WHEN __dp_a0 = 63 THEN 1 END)",
        "COUNT(CASE WHEN __dp_a0 >= 64 THEN 1 END)",
    ] {
        assert!(p.backend_sql.contains(bin), "{bin}: {}", p.backend_sql);
    }
    match p.release.outputs[0] {
        dpgate_dp::release::Output::Quantile { p, .. } => {
            assert!((p - 0.1).abs() < 1e-12, "DESC flips p")
        }
        ref other => panic!("{other:?}"),
    }
    assert_eq!(
        refused("SELECT PERCENTILE_CONT(1.5) WITHIN GROUP (ORDER BY age) FROM visits").code,
        "22023"
    );
    assert_eq!(
        refused("SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY ward) FROM visits").code,
        "42804"
    );
    assert_eq!(
        refused("SELECT RANK(1) WITHIN GROUP (ORDER BY age) FROM visits").code,
        "0A000"
    );
    assert_eq!(refused("SELECT VARIANCE(ward) FROM visits").code, "42804");
}

mod attacks;
mod least_noise;
mod shapes;
