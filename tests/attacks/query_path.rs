//! The query path under attack, through a real dpgate over PostgreSQL: one
//! test per class an attack review found. Each table holds one patient
//! (42) whose rows make the attack's question answerable if the defence
//! were missing: an age the error oracle could find, a diagnosis only
//! they have, and enough rows for joins to multiply.

use crate::common::*;

/// A dpgate over `visits`, with patient 42 at age 37 holding the only
/// 'rare' diagnosis, and a per-query ε up to 1.
async fn gate(prefix: &str, budget: f64) -> (String, tempfile::TempDir, Dpgate) {
    let (db, _) = visits_database(prefix, 300).await;
    connect_direct(&cluster().url(&db))
        .await
        .batch_execute(
            "ALTER TABLE visits ADD COLUMN diagnosis text;
             UPDATE visits SET diagnosis = 'common';
             UPDATE visits SET age = 37, diagnosis = 'rare' WHERE patient_id = 42;",
        )
        .await
        .unwrap();
    let dir = tempdir();
    let port = free_port();
    let config = proxy_toml(&db, port, &dir.path().join("l.sqlite"), budget, 0.1)
        .replace("[privacy]\n", "[privacy]\nmax_epsilon_per_query = 1\n")
        + "columns.diagnosis = { type = \"text\" }\n[cache]\nenabled = false\n";
    let gate = Dpgate::start(dir.path(), &config, port);
    (db, dir, gate)
}

/// The ε the analyst has spent, as `dpgate budget show` reports it.
pub(crate) fn spent(gate: &Dpgate) -> f64 {
    let shown: serde_json::Value =
        serde_json::from_str(&gate.cli(&["budget", "show", "--format", "json"])).unwrap();
    shown
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "analyst" || a["user"] == "analyst")
        .and_then(|a| a["epsilon_spent"].as_f64())
        .unwrap_or_else(|| panic!("{shown}"))
}

/// The SQLSTATE of `sql`'s error, or "answered".
pub(crate) async fn outcome(client: &tokio_postgres::Client, sql: &str) -> String {
    match client.simple_query(sql).await {
        Ok(_) => "answered".into(),
        Err(e) => e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.code().code().to_string()),
    }
}

/// Data-dependent errors: the review's oracle divided by a value that is
/// tiny only for patient 42 at a guessed age, so the backend overflowed
/// (one uniform 58000) exactly when the guess was right. Now the chain is
/// refused before the charge, and every allowed variant answers alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_answer_no_question_about_a_row() {
    let (_db, _dir, gate) = gate("oracle", 100.0).await;
    let (client, _n) = gate.connect().await;
    for guess in [30, 37] {
        let y = format!("(CASE WHEN patient_id = 42 AND age <= {guess} THEN 1e-100 ELSE 0.0 END)");
        let chain = format!(
            "SELECT COUNT(*) FROM visits WHERE ((((cost + 1.0) / {y}) / {y}) / {y}) / {y} IS NULL"
        );
        assert_eq!(outcome(&client, &chain).await, "0A000", "{chain}");
        // One division is allowed, and answers whether or not the guess is right.
        let once = format!("SELECT COUNT(*) FROM visits WHERE (cost + 1.0) / {y} IS NULL");
        assert_eq!(outcome(&client, &once).await, "answered", "{once}");
        let clamped = format!(
            "SELECT COUNT(*) FROM visits WHERE LEAST(GREATEST((cost + 1.0) / {y}, -1e90), 1e90) * 1e10 > 0"
        );
        assert_eq!(outcome(&client, &clamped).await, "answered", "{clamped}");
    }
    // Casts and constants that would fail on every row are refused before
    // the charge, not charged and then failed.
    for sql in [
        "SELECT COUNT(*) FROM visits WHERE patient_id = 'abc'",
        "SELECT COUNT(*) FROM visits WHERE age = 'NaN'",
    ] {
        assert_ne!(outcome(&client, sql).await, "58000", "{sql}");
    }
}

/// Saturation, thresholds and free queries: parameters beyond the stated
/// limits are refused before anything is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_parameters_are_refused_not_saturated_or_free() {
    let (_db, _dir, gate) = gate("params", 1.0).await;
    let (client, _n) = gate.connect().await;
    // ε below a ledger unit was accepted and charged 0.
    assert_eq!(outcome(&client, "SET dp.epsilon = 1e-300").await, "22023");
    assert_eq!(outcome(&client, "SET dp.epsilon = 0.0001").await, "22023");
    // A sensitivity whose noise saturated i64 (answer = raw − (2^63 − 1)).
    assert_eq!(
        outcome(&client, "SELECT SUM(age * 10000000000000000) FROM visits").await,
        "54000"
    );
    // A 22-way self-join, whose per-unit bound 5^22 collapsed τ.
    let mut chain = String::from("SELECT diagnosis, COUNT(*) FROM visits v0");
    for i in 1..22 {
        chain.push_str(&format!(
            " JOIN visits v{i} ON v0.patient_id = v{i}.patient_id"
        ));
    }
    chain.push_str(" GROUP BY diagnosis");
    assert_eq!(outcome(&client, &chain).await, "54001");
    // Spend the budget: afterwards no query is free, whatever its ε.
    assert_eq!(outcome(&client, "SET dp.epsilon = 1").await, "answered");
    assert_eq!(
        outcome(&client, "SELECT COUNT(*) FROM visits").await,
        "answered"
    );
    assert_eq!(outcome(&client, "SET dp.epsilon = 0.001").await, "answered");
    assert_eq!(
        outcome(&client, "SELECT COUNT(*) FROM visits").await,
        "53000"
    );
    // Exactly the budget was spent: every charge was on the nano-ε grid.
    assert_eq!(spent(&gate), 1.0);
}

/// One query, many releases of one group: a hundred spellings of the key
/// 1 gave a hundred independently noised copies of one group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_is_released_once_however_its_key_is_spelled() {
    let (_db, _dir, gate) = gate("spellings", 100.0).await;
    let (client, _n) = gate.connect().await;
    let ones: Vec<String> = (1..=100)
        .map(|i| format!("WHEN FALSE THEN {}1", "0".repeat(i)))
        .collect();
    let k = format!("CASE {} ELSE 1 END", ones.join(" "));
    let rows = simple_rows(
        &client,
        &format!(
            "SELECT {k} AS a, {k} AS b, COUNT(*) FROM visits WHERE patient_id = 42 GROUP BY a, b"
        ),
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let nulls = "NULLIF(NULLIF(NULLIF(NULLIF(ward, 'x'), 'y'), 'z'), 'w')";
    let rows = simple_rows(
        &client,
        &format!("SELECT {nulls} AS k, COUNT(*) FROM visits GROUP BY k"),
    )
    .await
    .unwrap();
    let null_groups = rows.iter().filter(|r| r[0].is_none()).count();
    assert!(null_groups <= 1, "{rows:?}");
}

/// Size, depth and recursion: inputs that overflowed the stack and
/// aborted the whole proxy now get 54001, over both protocols, and the
/// proxy keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_and_recursive_statements_do_not_crash_the_proxy() {
    let (_db, _dir, gate) = gate("depth", 100.0).await;
    let (client, _n) = gate.connect().await;
    let terms = format!("SELECT {}", vec!["1"; 2000].join("+"));
    assert_eq!(outcome(&client, &terms).await, "54001");
    let filter = format!(
        "SELECT COUNT(*) FROM visits WHERE {} > 0",
        vec!["age"; 2000].join(" + ")
    );
    assert_eq!(outcome(&client, &filter).await, "54001");
    // Parse + Describe alone used to suffice for the CTE that names itself.
    let recursive = "WITH visits AS (SELECT * FROM visits) SELECT COUNT(*) FROM visits";
    client.prepare(recursive).await.unwrap();
    let mutual = "WITH a AS (SELECT * FROM b), b AS (SELECT * FROM a) SELECT COUNT(*) FROM a";
    assert!(client.prepare(mutual).await.is_err());
    // CTEs that reuse each other would expand exponentially.
    let mut fan = String::from("WITH c0 AS (SELECT * FROM visits)");
    for i in 1..30 {
        fan.push_str(&format!(
            ", c{i} AS (SELECT x.age FROM c{p} x JOIN c{p} y ON x.patient_id = y.patient_id)",
            p = i - 1
        ));
    }
    fan.push_str(" SELECT COUNT(*) FROM c29");
    assert_eq!(outcome(&client, &fan).await, "54001");
    let row = simple_row(&client, "SELECT COUNT(*) FROM visits").await;
    assert!(row[0].is_some());
}

/// Fan-out and timing: a self-join chain filtered to one patient made the
/// backend's work (and time) depend on that patient's rows. Chains are
/// capped, and each private table is bounded per person before joining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_cannot_multiply_one_persons_work_without_bound() {
    let (db, _dir, gate) = gate("fanout", 100.0).await;
    let (client, _n) = gate.connect().await;
    let join = |n: usize| {
        let mut s = String::from("SELECT COUNT(*) FROM visits v0");
        for i in 1..n {
            s.push_str(&format!(
                " JOIN visits v{i} ON v0.patient_id = v{i}.patient_id"
            ));
        }
        s + " WHERE v0.patient_id = '42'"
    };
    assert_eq!(outcome(&client, &join(3)).await, "answered");
    assert_eq!(outcome(&client, &join(5)).await, "54001");
    // The backend query bounded each table before the join.
    assert!(cluster().logged(&db, "AS __dp_ranked WHERE \"__dp_rn_table\" <= 5") >= 1);
}

/// Thresholds: a diagnosis held by one patient never appears among keys
/// found by partition selection, at the largest ε and through a join
/// that multiplies that patient's rows (τ grows with the per-person bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_held_by_one_person_is_not_released() {
    let (_db, _dir, gate) = gate("singleton", 100.0).await;
    let (client, _n) = gate.connect().await;
    assert_eq!(outcome(&client, "SET dp.epsilon = 1").await, "answered");
    let sql = "SELECT v0.diagnosis, COUNT(*) FROM visits v0 JOIN visits v1 ON v0.patient_id = v1.patient_id GROUP BY v0.diagnosis";
    for _ in 0..20 {
        let rows = simple_rows(&client, sql).await.unwrap();
        assert!(
            rows.iter().all(|r| r[0].as_deref() != Some("rare")),
            "the singleton key was released: {rows:?}"
        );
        assert!(
            rows.iter().any(|r| r[0].as_deref() == Some("common")),
            "{rows:?}"
        );
    }
}

/// Memory: a selection answer holds at most `privacy.max_groups` groups,
/// the first selected in key order, however many keys the data holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_answers_are_capped_at_max_groups() {
    let (db, _) = visits_database("maxgroups", 300).await;
    let dir = tempdir();
    let port = free_port();
    let config = proxy_toml(&db, port, &dir.path().join("l.sqlite"), 100.0, 1.0)
        .replace("[privacy]\n", "[privacy]\nmax_groups = 2\n");
    let gate = Dpgate::start(dir.path(), &config, port);
    let (client, _n) = gate.connect().await;
    // Four keys of about 240 rows each, all far above τ.
    let rows = simple_rows(
        &client,
        "SELECT age % 4 AS k, COUNT(*) FROM visits GROUP BY k",
    )
    .await
    .unwrap();
    let keys: Vec<_> = rows.iter().map(|r| r[0].clone().unwrap()).collect();
    assert_eq!(keys, ["0", "1"], "{rows:?}");
}
