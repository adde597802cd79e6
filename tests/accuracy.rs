//! Accuracy: released values fall inside their reported 95 % intervals at
//! least 94 % of the time. Planned like any query, run on real PostgreSQL,
//! on the embedded SQLite backend loaded from the same data as CSV and
//! (with the `spark` feature) on Spark holding a copy,
//! over data that needs no bounding (so the bounded truth is PostgreSQL's
//! plain SQL answer), noised and post-processed by the same code as the
//! server.

mod common;

use common::*;
use dpgate_backend::Backend;
use dpgate_config::Config;
use dpgate_dp::secure_rng;
use dpgate_sql::Cell;
use dpgate_sql::{classify, plan, Command};
use tokio_postgres::{Client, SimpleQueryMessage};

async fn text_rows(client: &Client, sql: &str) -> Vec<Vec<Option<String>>> {
    client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_fall_inside_their_reported_intervals() {
    let db = hospital_database("accuracy", 2000).await;
    let client = connect_direct(&cluster().url(&db)).await;
    let dir = tempdir();
    let parse = |text: &str| Config::parse(text, &|_| Some("x".into())).unwrap();
    let pg = parse(&hospital_toml(&db, 1, &dir.path().join("l"), 1.0, 1.0));
    let lite = parse(&hospital_sqlite_toml(&db, 1, dir.path(), 1.0, 1.0).await);
    #[allow(unused_mut)]
    let mut configs = vec![pg, lite];
    #[cfg(feature = "spark")]
    configs.push(parse(
        &spark::spark_toml(
            &hospital_toml(&db, 1, &dir.path().join("l"), 1.0, 1.0),
            &db,
            &HOSPITAL_TABLES,
            "accuracy",
        )
        .await,
    ));
    for config in configs {
        let backend = dpgate_backend::connect(&config).await.unwrap();
        check_intervals(&client, backend.as_ref(), &config).await;
    }
}

/// Runs the cases on `backend` and compares with PostgreSQL's plain answers.
async fn check_intervals(client: &Client, backend: &dyn Backend, config: &Config) {
    // (private query, the same question in plain SQL, ordered by key)
    let cases = [
        (
            "SELECT ward, COUNT(*), SUM(cost), AVG(age), STDDEV(age) FROM visits GROUP BY ward ORDER BY ward",
            "SELECT ward, COUNT(*), SUM(cost), AVG(age), STDDEV(age) FROM visits GROUP BY ward ORDER BY ward",
        ),
        (
            "SELECT COUNT(*), SUM(age), AVG(cost) FROM visits WHERE age < 40",
            "SELECT COUNT(*), SUM(age), AVG(cost) FROM visits WHERE age < 40",
        ),
        (
            "SELECT p.sex, COUNT(*), AVG(p.birth_year) FROM visits v JOIN patients p ON v.patient_id = p.patient_id GROUP BY p.sex ORDER BY p.sex",
            "SELECT p.sex, COUNT(*), AVG(p.birth_year) FROM visits v JOIN patients p ON v.patient_id = p.patient_id GROUP BY p.sex ORDER BY p.sex",
        ),
        (
            "SELECT diagnosis, COUNT(*), SUM(age * 2) FROM visits GROUP BY diagnosis ORDER BY diagnosis",
            "SELECT diagnosis, COUNT(*), SUM(age * 2) FROM visits GROUP BY diagnosis ORDER BY diagnosis",
        ),
    ];
    let (mut inside, mut total) = (0usize, 0usize);
    for (private, plain) in cases {
        let truth = text_rows(client, plain).await;
        let Command::Private(q) = classify(private).unwrap().remove(0) else {
            panic!()
        };
        let p = plan(&q, config, 1.0).unwrap();
        let keys = p.grouping.key_count();
        let (mut case_inside, mut case_total) = (0usize, 0usize);
        // 30 × 30 answers: a case checks 2 700 to 10 800 intervals. The
        // case closest to 95 % (GROUP BY diagnosis, 9 000) then has 94 %
        // 4 standard errors below a true 95 %; with a third as many
        // answers it was 2.5, and one CI run failed by chance (0.938).
        for _ in 0..30 {
            let raw = backend.fetch(&p).await.unwrap();
            let groups = p.arrange(raw);
            for _ in 0..30 {
                let mut rng = secure_rng();
                let draws: Vec<_> = groups
                    .iter()
                    .map(|_| p.release.draw_noise(&mut rng))
                    .collect();
                let answer = p.finish(&groups, &draws, 0.95);
                for (row, widths) in answer.rows.iter().zip(&answer.half_widths) {
                    // Match the released row to the true row by its keys.
                    let Some(t) = truth
                        .iter()
                        .find(|t| (0..keys).all(|i| Some(text(&row[i])) == t[i]))
                    else {
                        continue;
                    };
                    for (col, w) in widths.iter().enumerate() {
                        let (Some(w), Some(truth)) = (w, t[col].as_deref()) else {
                            continue;
                        };
                        let truth: f64 = truth.parse().unwrap();
                        let value = match row[col] {
                            Cell::Int(i) => i as f64,
                            Cell::Float(f) => f,
                            ref other => panic!("{private}: {other:?}"),
                        };
                        case_total += 1;
                        if (value - truth).abs() <= *w {
                            case_inside += 1;
                        }
                    }
                }
            }
        }
        let rate = case_inside as f64 / case_total as f64;
        let dialect = backend.dialect();
        println!("{dialect:?} {private}: {case_inside}/{case_total} = {rate:.4} inside");
        assert!(case_total > 0, "{private}: nothing checked");
        assert!(
            rate >= 0.94,
            "{dialect:?} {private}: only {rate:.4} of answers inside their 95 % intervals"
        );
        inside += case_inside;
        total += case_total;
    }
    println!(
        "{:?} all: {inside}/{total} = {:.4}",
        backend.dialect(),
        inside as f64 / total as f64
    );
}

fn text(c: &Cell) -> String {
    match c {
        Cell::Text(t) => t.clone(),
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) => f.to_string(),
        Cell::Bool(b) => b.to_string(),
        Cell::Null => String::new(),
    }
}

/// The half-widths of `column` in an accuracy NOTICE (`count ±254, avg ±3.1`
/// or a range `avg ±2.9…3.4`, whose upper end is taken).
fn half_width(notice: &str, column: &str) -> f64 {
    let at = notice
        .find(&format!("{column} ±"))
        .unwrap_or_else(|| panic!("{column} in {notice}"));
    let rest = &notice[at + column.len() + " ±".len()..];
    let text: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == '…')
        .collect();
    text.rsplit('…').next().unwrap().parse().unwrap()
}

/// The yardstick: 10 000 visits, at most 5 per patient, ε = 0.1,
/// `age` declared `not_null`. `SELECT COUNT(*), AVG(age)` was three
/// measurements at ε/3 each (COUNT ±449, AVG ±9.3); it is now two, the
/// count shared and the sum centred, split to minimise the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_buys_the_least_noise() {
    let (db, rows) = visits_database("leastnoise", 3334).await;
    assert!((9_900..=10_100).contains(&rows), "{rows}");
    let dir = tempdir();
    let port = free_port();
    let text = proxy_toml(&db, port, &dir.path().join("l.sqlite"), 100.0, 0.1).replace(
        "columns.age = { type = \"int\", lower = 0, upper = 110 }",
        "columns.age = { type = \"int\", lower = 0, upper = 110, not_null = true }",
    );
    assert!(text.contains("not_null"));
    let gate = Dpgate::start(dir.path(), &text, port);
    let (client, mut notices) = gate.connect().await;
    let sql = "SELECT COUNT(*), AVG(age) FROM visits";
    let plan = text_rows(&client, &format!("EXPLAIN {sql}")).await;
    let measurements = plan
        .iter()
        .filter(|r| r[0].as_deref().unwrap_or("").contains("Measurement m"))
        .count();
    assert_eq!(measurements, 2, "{plan:?}");
    text_rows(&client, sql).await;
    let notice = notices.recv().await.unwrap();
    let (count, avg) = (half_width(&notice, "count"), half_width(&notice, "avg"));
    eprintln!("optimal split: {notice}");
    assert!(count <= 320.0, "{notice}");
    assert!(avg <= 5.6, "{notice}");
    // The equal split of the same two measurements is worse for COUNT.
    client
        .batch_execute("SET dp.split = 'equal'")
        .await
        .unwrap();
    text_rows(&client, sql).await;
    let equal = notices.recv().await.unwrap();
    assert!(half_width(&equal, "count") > count, "{equal} vs {notice}");
    println!("optimal: {notice}\nequal:   {equal}");

    // Gaussian noise on request: charged as (ε, δ), its ρ in the NOTICE,
    // EXPLAIN and the audit log; auto picks Laplace for so few aggregates.
    let mechanism = |rows: &[Vec<Option<String>>]| {
        rows.iter()
            .filter_map(|r| r[0].clone())
            .find(|l| l.contains("Mechanism:"))
            .unwrap()
    };
    client.batch_execute("RESET dp.split").await.unwrap();
    let auto = text_rows(&client, &format!("EXPLAIN {sql}")).await;
    assert!(mechanism(&auto).contains("discrete Laplace"), "{auto:?}");
    assert!(mechanism(&auto).contains("× the variance"), "{auto:?}");
    client
        .batch_execute("SET dp.mechanism = 'gaussian'")
        .await
        .unwrap();
    let forced = text_rows(&client, &format!("EXPLAIN {sql}")).await;
    assert!(
        mechanism(&forced).contains("discrete Gaussian"),
        "{forced:?}"
    );
    text_rows(&client, sql).await;
    let gaussian = notices.recv().await.unwrap();
    assert!(
        gaussian.contains("cost ε = 0.1, δ = 1e-6 (ρ = "),
        "{gaussian}"
    );
    let log: Vec<serde_json::Value> =
        serde_json::from_str(&gate.cli(&["audit", "--format", "json"])).unwrap();
    let charged: Vec<f64> = log
        .iter()
        .filter(|e| e["outcome"] == "answered" && e["epsilon"].as_f64() > Some(0.0))
        .map(|e| e["rho"].as_f64().unwrap())
        .collect();
    assert_eq!(charged.len(), 3, "{log:?}");
    assert!(
        charged.iter().filter(|r| **r > 0.0).count() == 1,
        "{charged:?}"
    );
    let err = client
        .batch_execute("SET dp.mechanism = 'normal'")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22023");
}
