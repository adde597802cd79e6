//! One planner, several renderers: every answered corpus query is planned
//! for PostgreSQL, for SQLite and (with the `spark` feature) for Spark,
//! run on each backend over the same data (the SQLite file loaded from
//! PostgreSQL's CSV export, the Spark tables copied row by row), and the
//! raw measurements, before any noise, must be identical. The data has NULLs,
//! and further queries exercise what the corpus does not: every date
//! function, LIKE and ILIKE, booleans, float keys, rounding.

mod common;

use common::corpus::*;
use common::*;
use dpgate_backend::Backend;
use dpgate_config::Config;
use dpgate_sql::{classify, plan, Command, Plan, RawGroup};

fn config(text: &str) -> Config {
    Config::parse(text, &|_| Some("x".into())).unwrap()
}

async fn raw(backend: &dyn Backend, p: &Plan) -> Result<Vec<RawGroup>, String> {
    let mut groups = backend
        .fetch(p)
        .await
        .map_err(|e| format!("{e}\n    SQL: {}", p.backend_sql))?;
    groups.sort_by(|a, b| a.keys.cmp(&b.keys));
    Ok(groups)
}

/// Shapes whose SQLite spelling differs most from PostgreSQL's.
const DIALECT_SHAPES: &[&str] = &[
    "SELECT date_trunc('year', visit_date) AS t, COUNT(*) FROM visits GROUP BY t",
    "SELECT date_trunc('quarter', visit_date) AS t, COUNT(*) FROM visits GROUP BY t",
    "SELECT date_trunc('week', visit_date) AS t, COUNT(*) FROM visits GROUP BY t",
    "SELECT date_trunc('day', visit_date) AS t, COUNT(*) FROM visits GROUP BY t",
    "SELECT date_trunc('hour', visit_date) AS t, date_trunc('minute', visit_date) AS m, COUNT(*) FROM visits GROUP BY t, m",
    "SELECT date_trunc('decade', visit_date) AS t, date_trunc('century', visit_date) AS c, COUNT(*) FROM visits GROUP BY t, c",
    "SELECT extract(isodow FROM visit_date) AS d, extract(week FROM visit_date) AS w, COUNT(*) FROM visits GROUP BY d, w",
    "SELECT extract(quarter FROM visit_date) AS q, extract(doy FROM visit_date) > 100 AS late, COUNT(*) FROM visits GROUP BY q, late",
    "SELECT extract(isoyear FROM visit_date) AS y, extract(decade FROM visit_date) AS d, extract(century FROM visit_date) AS c, COUNT(*) FROM visits GROUP BY y, d, c",
    "SELECT extract(day FROM visit_date) AS d, COUNT(*) FROM visits GROUP BY d",
    "SELECT AVG(extract(epoch FROM visit_date) / 86400) FROM visits",
    "SELECT COUNT(*) FROM visits WHERE date_part('month', visit_date) = 3",
    "SELECT COUNT(*) FROM visits WHERE visit_date BETWEEN '2023-03-01' AND '2023-06-30'",
    "SELECT COUNT(*) FROM visits WHERE CAST(visit_date AS timestamp) < TIMESTAMP '2023-05-01 12:00:00'",
    "SELECT COUNT(*) FROM visits WHERE diagnosis ILIKE 'F%'",
    "SELECT COUNT(*) FROM visits WHERE diagnosis LIKE '_lu' OR diagnosis NOT LIKE '%a%'",
    "SELECT COUNT(*) FROM visits WHERE ward || diagnosis = 'Aflu'",
    "SELECT upper(ward) AS w, COUNT(*) FROM visits GROUP BY w",
    "SELECT COUNT(*) FROM patients WHERE smoker = 'yes'",
    "SELECT COUNT(*) FROM patients WHERE smoker IS TRUE OR smoker IS NULL",
    "SELECT COUNT(*) FROM patients WHERE NOT smoker",
    "SELECT CAST(smoker AS text) AS s, COUNT(*) FROM patients GROUP BY s",
    "SELECT smoker, sex, COUNT(*) FROM patients GROUP BY smoker, sex",
    "SELECT AVG(sqrt(cost)), SUM(trunc(cost)), SUM(floor(cost / 3)), SUM(ceil(cost / 7)) FROM visits",
    "SELECT ROUND(cost, -3) AS c, COUNT(*) FROM visits GROUP BY c",
    "SELECT ROUND(cost / 1000) AS c, COUNT(*) FROM visits GROUP BY c",
    "SELECT SUM(ROUND(cost, 1)), SUM(trunc(cost, 1)) FROM visits",
    "SELECT width_bucket(cost, 5000, 0, 10) AS b, COUNT(*) FROM visits GROUP BY b",
    "SELECT width_bucket(cost / 2, 0, 2500, 5) AS b, COUNT(*) FROM visits GROUP BY b",
    "SELECT AVG(LEAST(age, cost, 50)), AVG(GREATEST(age, 20)) FROM visits",
    "SELECT sign(age - 50) AS s, COUNT(*) FROM visits GROUP BY s",
    "SELECT SUM(age / 3), AVG(cost / 3) FROM visits WHERE age / 7 = 3 OR age % 7 = 1",
    "SELECT COUNT(age), SUM(age), AVG(cost), COUNT(cost) FROM visits",
    "SELECT COUNT(*) FROM visits WHERE cost IS NULL OR age IS NULL",
    "SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis",
    "SELECT COALESCE(diagnosis, 'none') AS d, COUNT(*) FROM visits GROUP BY d",
    "SELECT CASE WHEN cost > 2500 THEN 'high' ELSE 'low' END AS c, MEDIAN(age) FROM visits GROUP BY c",
    "SELECT CAST(age AS float) / 2 AS h, COUNT(*) FROM visits WHERE age < 10 GROUP BY h",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_and_sqlite_measure_the_same_raw_values() {
    let db = hospital_database("dialects", 1000).await;
    let direct = connect_direct(&cluster().url(&db)).await;
    direct
        .batch_execute(
            "UPDATE visits SET age = NULL WHERE patient_id % 17 = 0;
             UPDATE visits SET cost = NULL WHERE patient_id % 13 = 0;
             UPDATE visits SET diagnosis = NULL WHERE patient_id % 19 = 0;
             UPDATE patients SET smoker = NULL WHERE patient_id % 11 = 0;",
        )
        .await
        .unwrap();
    let dir = tempdir();
    let pg_config = config(&hospital_toml(
        &db,
        1,
        &dir.path().join("l.sqlite"),
        1.0,
        1.0,
    ));
    let lite_config = config(&hospital_sqlite_toml(&db, 1, dir.path(), 1.0, 1.0).await);
    let pg = dpgate_backend::connect(&pg_config).await.unwrap();
    let lite = dpgate_backend::connect(&lite_config).await.unwrap();
    // Planned as the server plans, with what each schema says.
    let (mut pg_config, mut lite_config) = (pg_config, lite_config);
    dpgate_backend::read_schema(&mut pg_config, pg.as_ref()).await;
    dpgate_backend::read_schema(&mut lite_config, lite.as_ref()).await;
    // Each renderer against PostgreSQL's.
    #[allow(unused_mut)]
    let mut others = vec![("SQLite", lite, lite_config)];
    #[cfg(feature = "spark")]
    {
        let toml = hospital_toml(&db, 1, &dir.path().join("l.sqlite"), 1.0, 1.0);
        let spark_config =
            config(&common::spark::spark_toml(&toml, &db, &HOSPITAL_TABLES, "dialects").await);
        let spark = dpgate_backend::connect(&spark_config).await.unwrap();
        let mut spark_config = spark_config;
        dpgate_backend::read_schema(&mut spark_config, spark.as_ref()).await;
        others.push(("Spark", spark, spark_config));
    }
    let (mut same, mut failures) = (0, Vec::new());
    let queries = CORPUS
        .iter()
        .filter(|(_, expect)| !matches!(expect, Refused(_)))
        .map(|(sql, _)| *sql)
        .chain(DIALECT_SHAPES.iter().copied());
    for sql in queries {
        let Ok(Command::Private(q)) = classify(sql).map(|mut c| c.remove(0)) else {
            continue; // answered by the shadow catalog, with no data
        };
        // Queries that read no declared table go to the shadow catalog.
        let Ok(p_pg) = plan(&q, &pg_config, 1.0) else {
            continue;
        };
        let reference = raw(pg.as_ref(), &p_pg).await;
        let mut all_same = true;
        for (name, backend, config) in &others {
            let p = plan(&q, config, 1.0).unwrap();
            assert_ne!(p_pg.backend_sql, p.backend_sql, "{sql}");
            match (&reference, raw(backend.as_ref(), &p).await) {
                (Ok(a), Ok(b)) if *a == b => {}
                (a, b) => {
                    all_same = false;
                    failures.push(format!("{sql}\n  PostgreSQL: {a:?}\n  {name}: {b:?}"));
                }
            }
        }
        same += usize::from(all_same);
    }
    println!(
        "{same} corpus queries measured the same on PostgreSQL and {}",
        others.iter().map(|o| o.0).collect::<Vec<_>>().join(", ")
    );
    assert!(
        failures.is_empty(),
        "{} queries differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(same >= 110, "only {same} queries compared");

    // NULLs are neither counted nor summed: the raw measurements are the
    // plain answers (no patient has more rows than the bound).
    let Command::Private(q) = classify("SELECT COUNT(age), SUM(age) FROM visits")
        .unwrap()
        .remove(0)
    else {
        panic!("not private")
    };
    let truth = direct
        .query_one("SELECT COUNT(age), SUM(age) FROM visits", &[])
        .await
        .unwrap();
    let truth = vec![truth.get::<_, i64>(0), truth.get::<_, i64>(1)];
    let reference = [("PostgreSQL", pg, pg_config)];
    for (_, backend, config) in reference.iter().chain(&others) {
        let got = raw(backend.as_ref(), &plan(&q, config, 1.0).unwrap())
            .await
            .unwrap();
        assert_eq!(got[0].values, truth, "{:?}", backend.dialect());
    }
}
