//! Sensitivity tests: for every query shape dpgate answers, run the
//! rewritten backend query on a dataset and on its neighbour (one privacy
//! unit added with maximal, out-of-bounds contributions) in real
//! PostgreSQL, in the embedded SQLite backend (loaded from the same data
//! as CSV) and, with the `spark` feature, in Spark (a copy), and check
//! that every pre-noise measurement changes by at most the sensitivity
//! the plan declared.

mod common;

use std::sync::Arc;

use common::*;
use dpgate_backend::Backend;
use dpgate_config::Config;
use dpgate_sql::params::bind_parameters;
use dpgate_sql::Cell;
use dpgate_sql::{classify, plan, Command, Grouping, Plan, RawGroup};
use tokio_postgres::Client;

/// D and D′ on one backend, and the config to plan for it.
struct Neighbours {
    d: Arc<dyn Backend>,
    d_prime: Arc<dyn Backend>,
    config: Config,
    /// The SQLite files and CSV exports, removed on drop.
    _files: Option<tempfile::TempDir>,
}

/// D and D′ (databases `small` and `large`, declared by `toml(db)`) on
/// PostgreSQL, and on SQLite loaded from their CSV exports of `tables`.
async fn on_both_backends(
    small: &str,
    large: &str,
    toml: impl Fn(&str) -> String,
    tables: &[&str],
) -> Vec<Neighbours> {
    let parse = |text: &str| Config::parse(text, &|_| Some("x".into())).unwrap();
    let connect =
        |text: String| async move { dpgate_backend::connect(&parse(&text)).await.unwrap() };
    let files = tempdir();
    let (dir_d, dir_d_prime) = (files.path().join("d"), files.path().join("d_prime"));
    std::fs::create_dir_all(&dir_d).unwrap();
    std::fs::create_dir_all(&dir_d_prime).unwrap();
    let lite = sqlite_toml(&toml(small), small, tables, &dir_d).await;
    let lite_prime = sqlite_toml(&toml(large), large, tables, &dir_d_prime).await;
    #[allow(unused_mut)]
    let mut pairs = vec![
        Neighbours {
            d: connect(toml(small)).await,
            d_prime: connect(toml(large)).await,
            config: parse(&toml(small)),
            _files: None,
        },
        Neighbours {
            config: parse(&lite),
            d: connect(lite).await,
            d_prime: connect(lite_prime).await,
            _files: Some(files),
        },
    ];
    // Spark holds copies of both, each in a database named after it;
    // row-level tables are left out (Spark has no row identity).
    #[cfg(feature = "spark")]
    {
        let spark_d = spark::spark_toml(
            &spark::without_row_level_tables(&toml(small)),
            small,
            tables,
            small,
        )
        .await;
        let spark_d_prime = spark::spark_toml(
            &spark::without_row_level_tables(&toml(large)),
            large,
            tables,
            large,
        )
        .await;
        pairs.push(Neighbours {
            config: parse(&spark_d),
            d: connect(spark_d).await,
            d_prime: Arc::new(spark::Renamed {
                inner: connect(spark_d_prime).await,
                from: small.to_string(),
                to: large.to_string(),
            }),
            _files: None,
        });
    }
    // Planned as the server plans: with what the backend's schema says of
    // each table (unit types, unique units, stored tables).
    for n in &mut pairs {
        dpgate_backend::read_schema(&mut n.config, n.d.as_ref()).await;
    }
    pairs
}

/// Two databases: `visits` as generated, and the same plus one patient
/// with 40 extreme rows (ages and costs far outside the declared bounds).
async fn neighbours() -> Vec<Neighbours> {
    let (small, _) = visits_database("sens_d", 400).await;
    let (large, _) = visits_database("sens_dprime", 400).await;
    let (d, d_prime) = (
        connect_direct(&cluster().url(&small)).await,
        connect_direct(&cluster().url(&large)).await,
    );
    d_prime
        .batch_execute(
            "INSERT INTO visits SELECT 999999, CASE WHEN v % 2 = 0 THEN 100000 ELSE -100000 END,
                    CASE WHEN v % 2 = 0 THEN 1e12 ELSE -1e12 END, 'A', 'x'
             FROM generate_series(1, 40) AS v;
             CREATE TABLE events (score int);
             INSERT INTO events SELECT (g % 7) - 3 FROM generate_series(1, 500) g;",
        )
        .await
        .unwrap();
    let members = "CREATE TABLE members (member_id int PRIMARY KEY, fee int);
         INSERT INTO members SELECT g, (g * 37) % 120 FROM generate_series(1, 300) g;";
    d.batch_execute(&format!(
        "CREATE TABLE events (score int);
         INSERT INTO events SELECT (g % 7) - 3 FROM generate_series(1, 500) g;
         {members}"
    ))
    .await
    .unwrap();
    d_prime.batch_execute(members).await.unwrap();
    // events in D' has one more row (row-level privacy: one row is one
    // unit), and members one more member (its unit is declared unique, so
    // a neighbour has one more row there too), all far out of bounds.
    d_prime
        .batch_execute(
            "INSERT INTO events VALUES (1000000);
             INSERT INTO members VALUES (999999, -1000000);",
        )
        .await
        .unwrap();
    let toml = |db: &str| {
        proxy_toml(db, 1, std::path::Path::new("/tmp/unused"), 1.0, 0.1)
            + r#"
[[tables]]
name = "events"
columns.score = { type = "int", lower = -10, upper = 3 }
[[tables]]
name = "members"
privacy_unit = "member_id"
privacy_unit_unique = true
columns.fee = { type = "int", lower = 0, upper = 100 }
"#
    };
    on_both_backends(&small, &large, toml, &["visits", "events", "members"]).await
}

/// The raw groups of `p` on `backend`.
async fn groups(backend: &Arc<dyn Backend>, p: &Plan) -> Vec<RawGroup> {
    backend
        .fetch(p)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", p.backend_sql))
}

/// The measurements of an ungrouped plan.
async fn measurements(backend: &Arc<dyn Backend>, p: &Plan) -> Vec<i64> {
    groups(backend, p).await.remove(0).values
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_shape_stays_within_its_declared_sensitivity() {
    for n in neighbours().await {
        every_answered_shape_on(&n).await;
    }
}

async fn every_answered_shape_on(n: &Neighbours) {
    let (d, d_prime, config) = (&n.d, &n.d_prime, &n.config);
    let shapes: &[(&str, &[Cell])] = &[
        ("SELECT COUNT(*) FROM visits", &[]),
        (
            "SELECT COUNT(age), COUNT(ward), COUNT(patient_id) FROM visits",
            &[],
        ),
        ("SELECT SUM(age) FROM visits", &[]),
        ("SELECT SUM(cost) FROM visits", &[]),
        ("SELECT AVG(age), AVG(cost) FROM visits", &[]),
        (
            "SELECT COUNT(*), SUM(cost) FROM visits WHERE ward = 'A'",
            &[],
        ),
        (
            "SELECT AVG(cost) FROM visits WHERE age BETWEEN 0 AND 200 OR age < -5",
            &[],
        ),
        (
            "SELECT SUM(age) FROM visits WHERE ward IN ('A', 'B') AND cost IS NOT NULL",
            &[],
        ),
        (
            "SELECT COUNT(*) FROM visits WHERE patient_id = $1",
            &[Cell::Int(999999)],
        ),
        (
            "SELECT SUM(cost) FROM visits WHERE ward = $1 AND age > $2",
            &[Cell::Text("A".into()), Cell::Int(-1)],
        ),
        ("SELECT COUNT(*), SUM(score), AVG(score) FROM events", &[]),
        ("SELECT VARIANCE(age), STDDEV_POP(cost) FROM visits", &[]),
        ("SELECT VAR_SAMP(score), STDDEV(score) FROM events", &[]),
        ("SELECT MEDIAN(age), PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY cost) FROM visits", &[]),
        ("SELECT PERCENTILE_DISC(0.25) WITHIN GROUP (ORDER BY score DESC) FROM events WHERE score > -2", &[]),
        // Read without a bounding step: the unit is declared unique.
        ("SELECT COUNT(*), SUM(fee), AVG(fee), COUNT(DISTINCT member_id) FROM members", &[]),
        ("SELECT VARIANCE(fee), MEDIAN(fee) FROM members WHERE fee < 50", &[]),
        // Row sampling (a distinct count of a column other than the unit).
        ("SELECT COUNT(DISTINCT age), SUM(cost) FROM visits", &[]),
    ];
    for &(sql, params) in shapes {
        let Command::Private(mut query) = classify(sql).unwrap().remove(0) else {
            panic!("{sql} is not private")
        };
        bind_parameters(&mut query, params).unwrap();
        let p = match plan(&query, config, 1.0) {
            Ok(p) => p,
            // Spark's copy has no row-level table.
            Err(_) if d.dialect() == dpgate_sql::Dialect::Spark && sql.contains("events") => {
                continue
            }
            Err(e) => panic!("{sql}: {e:?}"),
        };
        // Repeat: the rows kept for the added unit are chosen at random.
        for _ in 0..5 {
            let a = measurements(d, &p).await;
            let b = measurements(d_prime, &p).await;
            // L1 change of each (possibly vector) measurement.
            let mut at = 0;
            for (i, m) in p.release.measurements.iter().enumerate() {
                let change: u64 = (at..at + m.len).map(|j| (b[j] - a[j]).unsigned_abs()).sum();
                at += m.len;
                let declared = m.noise.sensitivity();
                assert!(
                    change <= declared,
                    "{:?} {sql}: measurement {i} changed by {change} > sensitivity {declared}\n{}",
                    d.dialect(),
                    p.backend_sql
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bound_is_reached_so_the_test_can_fail() {
    // The added unit contributes maximally: the change equals the bound,
    // so a planner that understated sensitivity would be caught above.
    let Command::Private(query) = classify("SELECT COUNT(*), SUM(age) FROM visits")
        .unwrap()
        .remove(0)
    else {
        panic!()
    };
    for n in neighbours().await {
        let p = plan(&query, &n.config, 1.0).unwrap();
        let a = measurements(&n.d, &p).await;
        let b = measurements(&n.d_prime, &p).await;
        assert_eq!(
            (b[0] - a[0]) as u64,
            p.release.measurements[0].noise.sensitivity(),
            "count on {:?}",
            n.d.dialect()
        );
        // Ages alternate between the bounds: the sum moves by at most 5 × 110.
        assert!((b[1] - a[1]).unsigned_abs() <= p.release.measurements[1].noise.sensitivity());
    }
}

/// Hospital databases D and D′ = D plus one patient with 40 extreme visits
/// (every ward, a diagnosis nobody else has, ages and costs far outside
/// the bounds) and 3 rows in `patients` (the bound is 1), with visits
/// bounded to `k` rows per patient (k = 5 samples rows under GROUP BY,
/// k ≥ 8 pre-aggregates: see `Bounding::choose`).
async fn hospital_neighbours(k: u32) -> Vec<Neighbours> {
    let small = hospital_database(&format!("sens_h{k}"), 300).await;
    let large = hospital_database(&format!("sens_hprime{k}"), 300).await;
    let d_prime: Client = connect_direct(&cluster().url(&large)).await;
    d_prime
        .batch_execute(
            "INSERT INTO visits SELECT 999999, CASE WHEN v % 2 = 0 THEN 100000 ELSE -100000 END,
                    CASE WHEN v % 2 = 0 THEN 1e12 ELSE -1e12 END, (ARRAY['A','B','C'])[1 + v % 3], 'x',
                    DATE '2023-01-01' + v * 17, CASE WHEN v % 4 = 0 THEN 'zzz-rare' ELSE 'flu' END
             FROM generate_series(1, 40) AS v;
             INSERT INTO patients SELECT 999999, 'F', 1800 + v * 300, 'north', true FROM generate_series(1, 3) v;",
        )
        .await
        .unwrap();
    let toml = |db: &str| {
        hospital_toml(db, 1, std::path::Path::new("/tmp/unused"), 1.0, 0.1).replacen(
            "max_rows_per_unit = 5",
            &format!("max_rows_per_unit = {k}"),
            1,
        )
    };
    on_both_backends(&small, &large, toml, &HOSPITAL_TABLES).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_joined_and_derived_shapes_stay_within_their_sensitivity() {
    for k in [5, dpgate_sql::plan::GROUPED_PRE_AGGREGATION_MIN_ROWS as u32] {
        for n in hospital_neighbours(k).await {
            grouped_shapes_on(&n).await;
        }
    }
}

async fn grouped_shapes_on(n: &Neighbours) {
    let (d, d_prime, config) = (&n.d, &n.d_prime, &n.config);
    let shapes = [
        "SELECT ward, COUNT(*), SUM(cost), AVG(age) FROM visits GROUP BY ward",
        "SELECT ward, VARIANCE(age), MEDIAN(cost) FROM visits GROUP BY ward",
        "SELECT ward, COUNT(DISTINCT patient_id) FROM visits GROUP BY ward",
        "SELECT COUNT(DISTINCT patient_id), COUNT(DISTINCT ward) FROM visits",
        "SELECT diagnosis, COUNT(*), SUM(age) FROM visits GROUP BY diagnosis",
        "SELECT diagnosis, ward, AVG(cost) FROM visits GROUP BY diagnosis, ward",
        "SELECT date_trunc('month', visit_date) AS m, COUNT(*) FROM visits GROUP BY m",
        "SELECT extract(month FROM visit_date) AS m, SUM(age) FROM visits GROUP BY m",
        "SELECT width_bucket(age, 0, 100, 10) AS b, COUNT(*) FROM visits GROUP BY b",
        "SELECT CASE WHEN age < 18 THEN 'child' ELSE 'adult' END AS band, SUM(cost) FROM visits GROUP BY band",
        "SELECT SUM(age * 2 + 1), AVG(cost / 100), SUM(CASE WHEN age >= 65 THEN cost ELSE 0 END) FROM visits",
        "SELECT SUM(age) FROM visits WHERE age < 40",
        // Shared and centred measurements: AVG's count is COUNT(*)'s when
        // the WHERE proves its values present, AVG reads SUM's sum, and
        // AVG and VARIANCE share a sum of values less the range's middle.
        "SELECT COUNT(*), AVG(age), SUM(age) FROM visits WHERE age >= 18",
        "SELECT COUNT(*) FILTER (WHERE ward = 'A'), AVG(cost) FILTER (WHERE ward = 'A'), VARIANCE(cost) FROM visits WHERE cost IS NOT NULL",
        "SELECT ward, COUNT(*), AVG(age), STDDEV(age) FROM visits WHERE age BETWEEN 10 AND 90 GROUP BY ward",
        "SELECT COUNT(*) FILTER (WHERE age > 40), SUM(cost) FILTER (WHERE ward = 'A') FROM visits",
        "SELECT p.sex, COUNT(*), AVG(p.birth_year) FROM visits v JOIN patients p ON v.patient_id = p.patient_id GROUP BY p.sex",
        // Private tables cut per unit and joined on it need no later step
        // (Bounding::Tables): ungrouped, self-joined, in a subquery, with
        // rows (a percentile, COUNT(DISTINCT)) and with a LEFT JOIN.
        "SELECT COUNT(*), SUM(v.cost), AVG(p.birth_year) FROM visits v JOIN patients p ON v.patient_id = p.patient_id",
        "SELECT COUNT(*), SUM(a.age) FROM visits a JOIN visits b ON a.patient_id = b.patient_id",
        "SELECT ward, MEDIAN(age), COUNT(DISTINCT diagnosis) FROM (SELECT v.ward, v.age, v.diagnosis FROM visits v JOIN patients p USING (patient_id) WHERE p.smoker) s GROUP BY ward",
        "SELECT p.region, COUNT(*) FROM visits v LEFT JOIN patients p ON v.patient_id = p.patient_id GROUP BY p.region",
        "SELECT AVG(2025 - birth_year), COUNT(*) FROM patients",
        "SELECT w.name, COUNT(*), SUM(w.floor) FROM visits v JOIN wards w ON v.ward = w.ward GROUP BY w.name",
        "SELECT COUNT(*) FROM visits v LEFT JOIN wards w ON v.ward = w.ward",
        "WITH young AS (SELECT age, cost * 2 AS c FROM visits WHERE age < 30) SELECT COUNT(*), AVG(c) FROM young",
        "SELECT ward, SUM(c) FROM (SELECT ward, cost + age AS c FROM visits) s GROUP BY ward",
    ];
    for sql in shapes {
        let Command::Private(query) = classify(sql).unwrap().remove(0) else {
            panic!("{sql} is not private")
        };
        let p = plan(&query, config, 1.0).unwrap_or_else(|e| panic!("{sql}: {e}"));
        for _ in 0..3 {
            let a = p.arrange(groups(d, &p).await);
            let b = p.arrange(groups(d_prime, &p).await);
            let zeros = vec![0; p.release.raw_len()];
            let mut all_keys: Vec<&Vec<Option<String>>> = a.iter().map(|g| &g.keys).collect();
            all_keys.extend(
                b.iter()
                    .map(|g| &g.keys)
                    .filter(|k| !a.iter().any(|g| &g.keys == *k)),
            );
            let values = |side: &[RawGroup], k: &Vec<Option<String>>| {
                side.iter()
                    .find(|g| &g.keys == k)
                    .map_or(zeros.clone(), |g| g.values.clone())
            };
            let mut at = 0;
            for (i, m) in p.release.measurements.iter().enumerate() {
                let change: u64 = all_keys
                    .iter()
                    .map(|k| {
                        let (va, vb) = (values(&a, k), values(&b, k));
                        (at..at + m.len)
                            .map(|j| (vb[j] - va[j]).unsigned_abs())
                            .sum::<u64>()
                    })
                    .sum();
                at += m.len;
                let declared = m.noise.sensitivity();
                assert!(
                    change <= declared,
                    "{:?} {sql}: measurement {i} changed by {change} > sensitivity {declared}\n{}",
                    d.dialect(),
                    p.backend_sql
                );
            }
            // A key only the added unit has is released only by partition
            // selection, and its count stays below the threshold's offset.
            let new_keys: Vec<&RawGroup> = b
                .iter()
                .filter(|g| !a.iter().any(|h| h.keys == g.keys))
                .collect();
            match &p.grouping {
                Grouping::Selection { .. } => {
                    let chosen = p.release.selection.as_ref().expect("keys are selected");
                    let (count, threshold) = (&chosen.count, &chosen.selection.threshold());
                    let offset: usize =
                        p.release.measurements[..*count].iter().map(|m| m.len).sum();
                    let k = p.release.measurements[*count].noise.sensitivity() as i64;
                    for g in new_keys {
                        assert!(
                            g.values[offset] <= k && k < *threshold,
                            "{sql}: new key {:?}",
                            g.keys
                        );
                    }
                }
                _ => assert!(
                    new_keys.is_empty(),
                    "{sql}: a key appeared outside partition selection"
                ),
            }
        }
    }
}

/// Pre-aggregation with GROUP BY shares a unit's allowance of k rows over
/// its groups in proportion to its rows there, by largest remainders: the
/// unit with 40 visits (30 flu, 10 zzz-rare, k = 9) adds ⌊6.75⌋ + 1 = 7 to
/// flu and ⌊2.25⌋ = 2 to zzz-rare, exactly k in all; spread over 22
/// months, it still adds exactly k rows to at most k months. Without the
/// cut it would add 40, so the sensitivity tests above could fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_allowances_add_up_to_the_bound() {
    for n in hospital_neighbours(9).await {
        let run = |sql: &'static str| {
            let config = n.config.clone();
            let (d, d_prime) = (n.d.clone(), n.d_prime.clone());
            async move {
                let Command::Private(query) = classify(sql).unwrap().remove(0) else {
                    panic!()
                };
                let p = plan(&query, &config, 1.0).unwrap();
                assert_eq!(p.bounding, dpgate_sql::Bounding::PreAggregated);
                let (a, b) = (groups(&d, &p).await, groups(&d_prime, &p).await);
                let mut added: Vec<(Option<String>, i64)> = b
                    .iter()
                    .map(|g| {
                        let before = a
                            .iter()
                            .find(|h| h.keys == g.keys)
                            .map_or(0, |h| h.values[0]);
                        (g.keys[0].clone(), g.values[0] - before)
                    })
                    .filter(|(_, change)| *change != 0)
                    .collect();
                added.sort();
                added
            }
        };
        let by_diagnosis = run("SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis").await;
        assert_eq!(
            by_diagnosis,
            [
                (Some("flu".to_string()), 7),
                (Some("zzz-rare".to_string()), 2)
            ],
            "{:?}",
            n.d.dialect()
        );
        let by_month =
            run("SELECT date_trunc('month', visit_date) AS m, COUNT(*) FROM visits GROUP BY m")
                .await;
        assert_eq!(
            by_month.iter().map(|(_, c)| c).sum::<i64>(),
            9,
            "{by_month:?}"
        );
        assert!(
            by_month.len() <= 9 && by_month.iter().all(|(_, c)| *c > 0),
            "{by_month:?}"
        );
    }
}

/// A unit beyond its bound counts as `k` of its rows on average, not as
/// its rows clipped: 200 patients with 10 visits each (k = 5), every
/// visit at age 60 and one in ten at cost 4000. The mean age stays 60
/// exactly (the scaled sum is 300 for 5 counted rows), and the count of
/// costly visits is 5/10 per patient in expectation (randomized
/// rounding: 100 ± a few), where clipping would have said 5 per patient
/// (1000) and pulled AVG toward the bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_beyond_their_bound_count_as_their_average_rows() {
    let db = empty_database("sens_heavy").await;
    connect_direct(&cluster().url(&db))
        .await
        .batch_execute(
            "CREATE TABLE visits (patient_id int, age int, cost float8, ward text, secret text);
             INSERT INTO visits SELECT p, 60, CASE WHEN v = 1 THEN 4000 ELSE 100 END, 'A', 'x'
               FROM generate_series(1, 200) AS p, generate_series(1, 10) AS v;",
        )
        .await
        .unwrap();
    let toml = |db: &str| proxy_toml(db, 1, std::path::Path::new("/tmp/unused"), 1.0, 0.1);
    for n in on_both_backends(&db, &db, toml, &["visits"]).await {
        let Command::Private(query) =
            classify("SELECT COUNT(*), SUM(age), COUNT(*) FILTER (WHERE cost > 1000) FROM visits")
                .unwrap()
                .remove(0)
        else {
            panic!()
        };
        let p = plan(&query, &n.config, 1.0).unwrap();
        assert_eq!(p.bounding, dpgate_sql::Bounding::PreAggregated);
        let m = measurements(&n.d, &p).await;
        assert_eq!((m[0], m[1]), (1000, 60_000), "{:?}", n.d.dialect());
        assert!((60..=140).contains(&m[2]), "{:?}: {}", n.d.dialect(), m[2]);
    }
}

/// The marginal queries a synthetic-data fit reads (every 1-way and 2-way
/// count over bins and declared domains): the extreme unit moves each
/// marginal by at most k rows in total (L1 ≤ k, hence L2 ≤ k, the
/// sensitivity the fit's Gaussian noise assumes), on both backends, and
/// reaches k, so the test can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_marginals_move_by_at_most_k_rows() {
    use dpgate_service::synthetic::{marginal_plans, read_marginals};
    for k in [5, dpgate_sql::plan::GROUPED_PRE_AGGREGATION_MIN_ROWS as u32] {
        for n in hospital_neighbours(k).await {
            let table = n.config.table(None, "visits").unwrap();
            let attrs = dpgate_sql::synth::attributes(table, 8).unwrap();
            let plans = marginal_plans(table, &attrs.modelled, &n.config, Some(u64::from(k)))
                .unwrap_or_else(|e| panic!("{e:?}"));
            let l1 = |x: &[i64], y: &[i64]| -> u64 {
                x.iter().zip(y).map(|(a, b)| (a - b).unsigned_abs()).sum()
            };
            let mut largest = 0;
            for _ in 0..2 {
                let a = read_marginals(n.d.as_ref(), &plans, &attrs).await.unwrap();
                let b = read_marginals(n.d_prime.as_ref(), &plans, &attrs)
                    .await
                    .unwrap();
                let mut changes: Vec<(String, u64)> = a
                    .one
                    .iter()
                    .zip(&b.one)
                    .enumerate()
                    .map(|(i, (x, y))| (attrs.modelled[i].column.clone(), l1(x, y)))
                    .collect();
                changes.extend(
                    a.two
                        .iter()
                        .map(|(key, x)| (format!("{key:?}"), l1(x, &b.two[key]))),
                );
                for (which, change) in &changes {
                    assert!(
                        *change <= u64::from(k),
                        "{:?} k = {k}: marginal {which} moved by {change}",
                        n.d.dialect()
                    );
                    largest = largest.max(*change);
                }
            }
            assert_eq!(
                largest,
                u64::from(k),
                "{:?}: the bound is never reached",
                n.d.dialect()
            );
        }
    }
}
