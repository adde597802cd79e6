//! End to end through real PostgreSQL and real clients (tokio-postgres,
//! psql): answers, refusals, budgets, restarts, sessions and auth.

mod common;

use std::process::Command;

use common::*;

const QUERY: &str = "SELECT COUNT(*), AVG(age) FROM visits";

/// Noisy answers drawn for the variance check. The sample variance of
/// discrete Laplace noise is heavy-tailed: of 200 draws it fell outside
/// [0.6, 1.6] × the stated variance about once in 500 runs (1.73 seen in
/// CI); of 600, far less than once in 100 000.
const ROUNDS: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noisy_answers_match_the_truth_and_the_budget_holds() {
    let (db, truth) = visits_database("e2e_budget", 3334).await;
    assert!((9_900..=10_100).contains(&truth), "{truth} rows");
    let dir = tempdir();
    let port = free_port();
    let ledger = dir.path().join("ledger.sqlite");
    // ROUNDS queries at ε = 0.1 spend the whole budget; the cache is
    // off, so every repeat draws fresh noise (and pays for it).
    let budget = ROUNDS as f64 / 10.0;
    let config = proxy_toml(&db, port, &ledger, budget, 0.1) + "[cache]\nenabled = false\n";
    let mut gate = Dpgate::start(dir.path(), &config, port);
    let (client, mut notices) = gate.connect().await;

    let mut counts = Vec::new();
    for _ in 0..ROUNDS {
        let row = simple_row(&client, QUERY).await;
        counts.push(row[0].as_ref().unwrap().parse::<f64>().unwrap());
        let avg: f64 = row[1].as_ref().unwrap().parse().unwrap();
        assert!((0.0..=110.0).contains(&avg));
    }
    let notice = notices.recv().await.expect("a notice per answer");
    assert!(
        notice.contains("cost ε = 0.1") && notice.contains("count ±") && notice.contains("avg ±"),
        "{notice}"
    );

    // The variance the plan states for COUNT(*): its measurement's
    // discrete Laplace noise at the share the split gave it (about 0.054
    // of the 0.1: the count is read by COUNT and by AVG's ratio).
    let n = counts.len() as f64;
    let mean = counts.iter().sum::<f64>() / n;
    let var = counts.iter().map(|c| (c - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let parsed = dpgate_config::Config::parse(&config, &|_| Some(PASSWORD.into())).unwrap();
    let dpgate_sql::Command::Private(query) = dpgate_sql::classify(QUERY).unwrap().remove(0) else {
        unreachable!()
    };
    let plan = dpgate_sql::plan(&query, &parsed, 0.1).unwrap();
    let dpgate_dp::release::Output::Count { measurement } = plan.release.outputs[0] else {
        panic!("{:?}", plan.release.outputs[0])
    };
    let expected_var = plan.release.measurements[measurement].noise.variance();
    // Bigger than a third of ε would give (scale 150), smaller than all of it.
    let third = {
        let p = (-1.0f64 / 150.0).exp();
        2.0 * p / (1.0 - p).powi(2)
    };
    assert!(
        expected_var < third && expected_var > third / 9.0,
        "{expected_var}"
    );
    assert!(
        (mean - truth as f64).abs() < 0.01 * truth as f64,
        "mean {mean} vs {truth}"
    );
    let ratio = var / expected_var;
    assert!(
        (0.6..1.6).contains(&ratio),
        "variance {var} vs stated {expected_var}"
    );

    // The ledger holds ROUNDS queries' worth of ε.
    assert_eq!(
        simple_row(&client, "SHOW dp.budget").await[0].as_deref(),
        Some("0")
    );
    let shown = gate.cli(&["budget", "show", "--format", "json"]);
    assert!(
        shown.contains(&format!(r#""epsilon_spent":{budget:?}"#))
            && shown.contains(&format!(r#""queries":{ROUNDS}"#)),
        "{shown}"
    );

    // The query that would overspend is refused and reaches no backend.
    let cluster = cluster();
    let before = cluster.logged(&db, "__dp_rows");
    assert_eq!(before, ROUNDS);
    let (code, message, hint) = refusal(&client, QUERY).await;
    assert_eq!(code, "53000", "{message}");
    assert!(message.contains("budget") && !hint.is_empty());
    assert_eq!(cluster.logged(&db, "__dp_rows"), before);

    // kill -9 and restart: the spent budget stays spent.
    drop(client);
    gate.kill9();
    let gate = Dpgate::start(dir.path(), &config, port);
    let (client, _n) = gate.connect().await;
    assert_eq!(
        simple_row(&client, "SHOW dp.budget").await[0].as_deref(),
        Some("0")
    );
    assert_eq!(refusal(&client, QUERY).await.0, "53000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_sqlstate_and_hint_and_touch_nothing() {
    let (db, _dir, gate) = gate_over_visits("e2e_refuse", 300, 5.0, 0.1).await;
    let (client, _n) = gate.connect().await;
    for (sql, code) in [
        ("SELECT * FROM visits", "42501"),
        ("SELECT age FROM visits", "42501"),
        ("SELECT MAX(age) FROM visits", "0A000"),
        ("SELECT secret FROM visits", "42501"),
        ("SELECT COUNT(secret) FROM visits", "42703"),
        ("SELECT COUNT(*) FROM pg_shadow", "42501"),
        ("SELECT * FROM pg_stats", "42501"),
        ("SELECT COUNT(*) FROM secrets", "42P01"),
        ("DELETE FROM visits", "42501"),
        ("CREATE TABLE t (a int)", "42501"),
        ("SELECT COUNT(*) FROM visits; SELECT 1", "0A000"),
        (
            "SELECT COUNT(*) FROM visits WHERE age IN (SELECT 1)",
            "0A000",
        ),
        ("SELEC COUNT(*) FROM visits", "42601"),
        ("SET dp.epsilon = 50", "22023"),
        ("SET dp.epsilon = -1", "22023"),
        ("SET dp.epsilonn = 1", "42704"),
    ] {
        let (got, message, hint) = refusal(&client, sql).await;
        assert_eq!(got, code, "{sql}: {message}");
        assert!(!hint.is_empty(), "{sql}: no hint");
    }
    assert_eq!(
        simple_row(&client, "SHOW dp.budget").await[0].as_deref(),
        Some("5")
    );
    assert_eq!(
        cluster().logged(&db, "__dp"),
        0,
        "a refused query reached the backend"
    );
    // The connection still works after every refusal.
    assert_eq!(
        simple_row(&client, "SELECT 1").await[0].as_deref(),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_clients_send_on_connect_works() {
    let (_db, _dir, gate) = gate_over_visits("e2e_session", 100, 5.0, 0.1).await;
    let (client, _n) = gate.connect().await;
    let version = simple_row(&client, "SELECT version()").await[0]
        .clone()
        .unwrap();
    assert!(version.starts_with("PostgreSQL 15.0 (dpgate "), "{version}");
    assert_eq!(
        simple_row(&client, "select current_schema()").await[0].as_deref(),
        Some("public")
    );
    assert_eq!(
        simple_row(&client, "SELECT 1").await[0].as_deref(),
        Some("1")
    );
    assert_eq!(
        simple_row(&client, "SELECT current_user, current_database()").await,
        [Some("analyst".into()), Some("warehouse".into())]
    );
    client.batch_execute("SET extra_float_digits = 3; SET application_name = 'x'; BEGIN; COMMIT; ROLLBACK; RESET ALL").await.unwrap();
    assert_eq!(
        simple_row(&client, "SHOW search_path").await[0].as_deref(),
        Some("\"$user\", public")
    );
    client.batch_execute("SET dp.epsilon = 0.25").await.unwrap();
    assert_eq!(
        simple_row(&client, "SHOW dp.epsilon").await[0].as_deref(),
        Some("0.25")
    );
    simple_row(&client, "SELECT COUNT(*) FROM visits").await;
    assert_eq!(
        simple_row(&client, "SHOW dp.budget").await[0].as_deref(),
        Some("4.75")
    );
    client.batch_execute("RESET dp.epsilon").await.unwrap();
    assert_eq!(
        simple_row(&client, "SHOW dp.epsilon").await[0].as_deref(),
        Some("0.1")
    );

    // Extended protocol: typed parameters, binary results, prepared reuse.
    let stmt = client
        .prepare("SELECT COUNT(*) AS n, SUM(cost) FROM visits WHERE age >= $1 AND ward = $2")
        .await
        .unwrap();
    assert_eq!(
        stmt.params(),
        [
            tokio_postgres::types::Type::INT8,
            tokio_postgres::types::Type::TEXT
        ]
    );
    for _ in 0..2 {
        let row = client.query_one(&stmt, &[&18i64, &"A"]).await.unwrap();
        let n: i64 = row.get("n");
        let sum: f64 = row.get(1);
        assert!(n >= 0 && sum.is_finite());
    }
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_and_wrong_passwords_get_the_same_answer() {
    let (_db, _dir, gate) = gate_over_visits("e2e_auth", 10, 1.0, 0.1).await;
    let wrong = connect_collecting(&gate.url("analyst", "nope"))
        .await
        .err()
        .unwrap();
    let unknown = connect_collecting(&gate.url("mallory", "nope"))
        .await
        .err()
        .unwrap();
    let code = |e: &tokio_postgres::Error| {
        e.as_db_error().map(|d| {
            (
                d.code().code().to_string(),
                d.message().replace("mallory", "analyst"),
            )
        })
    };
    assert_eq!(code(&wrong), code(&unknown));
    assert_eq!(code(&wrong).unwrap().0, "28P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_gets_a_noisy_row_and_a_notice() {
    let (_db, _dir, gate) = gate_over_visits("e2e_psql", 500, 1.0, 0.1).await;
    let (stdout, stderr, ok) = gate.psql(&["-A", "-t", "-c", QUERY]);
    assert!(ok, "{stderr}");
    let fields: Vec<&str> = stdout.trim().split('|').collect();
    assert_eq!(fields.len(), 2, "{stdout}");
    assert!(
        fields[0].parse::<i64>().is_ok() && fields[1].parse::<f64>().is_ok(),
        "{stdout}"
    );
    assert!(
        stderr.contains("NOTICE:") && stderr.contains("remain"),
        "{stderr}"
    );
    let (_, stderr, ok) = gate.psql(&["-c", "SELECT age FROM visits"]);
    assert!(
        !ok && stderr.contains("ERROR:") && stderr.contains("HINT:"),
        "{stderr}"
    );
}

#[test]
fn a_bad_config_stops_dpgate_with_the_path_of_each_problem() {
    let dir = tempdir();
    let config = proxy_toml("x", 1, &dir.path().join("l.sqlite"), 1.0, 0.1)
        .replace("lower = 0, upper = 110", "lower = 10, upper = 5");
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dpgate"))
        .args(["serve", "--config"])
        .arg(&path)
        .env_remove("DPGATE_TEST_PASSWORD")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("tables[0].columns.age: lower 10 is above upper 5"),
        "{stderr}"
    );
    assert!(
        stderr.contains("users[0].password: environment variable DPGATE_TEST_PASSWORD is not set"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_scram_verifiers_from_postgres_authenticate() {
    let (db, _) = visits_database("e2e_verifier", 10).await;
    let admin = connect_direct(&cluster().url(&db)).await;
    let role = format!("verifier_{}", std::process::id());
    admin
        .batch_execute(&format!("SET password_encryption = 'scram-sha-256'; CREATE ROLE {role} PASSWORD 'from-postgres'"))
        .await
        .unwrap();
    let verifier: String = admin
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0);
    let dir = tempdir();
    let port = free_port();
    let config = proxy_toml(&db, port, &dir.path().join("l.sqlite"), 1.0, 0.1)
        .replace("env:DPGATE_TEST_PASSWORD", &verifier);
    let gate = Dpgate::start(dir.path(), &config, port);
    let (client, _n) = connect_collecting(&gate.url("analyst", "from-postgres"))
        .await
        .unwrap();
    assert_eq!(
        simple_row(&client, "SELECT 1").await[0].as_deref(),
        Some("1")
    );
    assert!(connect_collecting(&gate.url("analyst", PASSWORD))
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variances_and_percentiles_come_close_to_the_truth() {
    // ε = 2 per query: at 1 the variance and median checks failed about
    // once in 3 000 runs by chance.
    let (db, _dir, gate) = gate_over_visits("e2e_stats", 3334, 10.0, 2.0).await;
    let direct = connect_direct(&cluster().url(&db)).await;
    let truth = direct
        .query_one(
            "SELECT var_samp(age)::float8, stddev_pop(age)::float8,
                    percentile_cont(0.5) WITHIN GROUP (ORDER BY age),
                    percentile_cont(0.9) WITHIN GROUP (ORDER BY cost) FROM visits",
            &[],
        )
        .await
        .unwrap();
    let (client, mut notices) = gate.connect().await;
    let row = simple_row(
        &client,
        "SELECT VARIANCE(age), STDDEV_POP(age) AS sd, MEDIAN(age), PERCENTILE_CONT(0.9) WITHIN GROUP (ORDER BY cost) FROM visits",
    )
    .await;
    let got: Vec<f64> = row
        .iter()
        .map(|v| v.as_ref().unwrap().parse().unwrap())
        .collect();
    let want: Vec<f64> = (0..4).map(|i| truth.get::<_, f64>(i)).collect();
    // ε = 2 over 5 measurements (count, centred sum and sum of squares
    // shared by both variances, two histograms): loose bounds that still
    // catch a wrong plan.
    assert!(
        (got[0] - want[0]).abs() < 0.1 * want[0],
        "variance {} vs {}",
        got[0],
        want[0]
    );
    assert!(
        (got[1] - want[1]).abs() < 0.1 * want[1],
        "stddev {} vs {}",
        got[1],
        want[1]
    );
    assert!(
        (got[2] - want[2]).abs() < 110.0 / 64.0 * 3.0,
        "median {} vs {}",
        got[2],
        want[2]
    );
    assert!(
        (got[3] - want[3]).abs() < 5000.0 / 64.0 * 3.0,
        "p90 {} vs {}",
        got[3],
        want[3]
    );
    let notice = notices.recv().await.unwrap();
    for name in ["variance ±", "sd ±", "median ±", "percentile_cont ±"] {
        assert!(notice.contains(name), "{notice}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_failure_after_the_charge_gives_one_uninformative_error() {
    let (db, _dir, gate) = gate_over_visits("e2e_backend_fail", 50, 1.0, 0.1).await;
    let (client, _n) = gate.connect().await;
    // Break the backend behind dpgate's back: the query is charged, then fails.
    let direct = connect_direct(&cluster().url(&db)).await;
    direct
        .batch_execute("ALTER TABLE visits RENAME TO visits_gone")
        .await
        .unwrap();
    let (code, message, _hint) = refusal(&client, "SELECT COUNT(*) FROM visits").await;
    assert_eq!(code, "58000");
    assert_eq!(
        message,
        "the private query could not be completed; its cost has been charged"
    );
    assert_eq!(
        simple_row(&client, "SHOW dp.budget").await[0].as_deref(),
        Some("0.9")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grouped_queries_work_over_psql_and_the_extended_protocol() {
    let db = hospital_database("e2e_grouped", 1500).await;
    let dir = tempdir();
    let port = free_port();
    let config = hospital_toml(&db, port, &dir.path().join("l.sqlite"), 100.0, 1.0);
    let gate = Dpgate::start(dir.path(), &config, port);

    // psql: every declared ward, ordered, with a notice giving each width.
    let (stdout, stderr, ok) = gate.psql(&[
        "-A",
        "-t",
        "-c",
        "SELECT ward, COUNT(*) AS n, ROUND(AVG(cost), 1) AS avg_cost FROM visits GROUP BY ward ORDER BY ward",
    ]);
    assert!(ok, "{stderr}");
    let wards: Vec<&str> = stdout
        .lines()
        .map(|l| l.split('|').next().unwrap())
        .collect();
    assert_eq!(wards, ["A", "B", "C"], "{stdout}");
    assert!(
        stderr.contains("n ±") && !stderr.contains("avg_cost ±"),
        "{stderr}"
    );

    // Extended protocol, binary results, a parameter in WHERE.
    let (client, mut notices) = gate.connect().await;
    let rows = client
        .query(
            "SELECT p.sex, COUNT(*) AS n, AVG(v.age) AS mean_age FROM visits v \
             JOIN patients p ON v.patient_id = p.patient_id WHERE v.age >= $1 \
             GROUP BY p.sex ORDER BY p.sex",
            &[&18i64],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get::<_, String>(0), "F");
    let n: i64 = rows[0].get(1);
    let mean: f64 = rows[0].get(2);
    assert!(n > 1000 && (18.0..=110.0).contains(&mean), "{n} {mean}");
    let notice = notices.recv().await.unwrap();
    assert!(notice.contains("mean_age ±"), "{notice}");

    // Partition selection: δ appears in the notice; keys are real values.
    let rows = client
        .query(
            "SELECT diagnosis, COUNT(*) FROM visits GROUP BY diagnosis ORDER BY 2 DESC",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(names
        .iter()
        .all(|n| ["flu", "fracture", "asthma", "diabetes", "migraine"].contains(&n.as_str())));
    let notice = notices.recv().await.unwrap();
    assert!(notice.contains("δ = 1e-6"), "{notice}");
}

/// `dpgate check --verify` counts, as the data owner, whether the data
/// holds what proxy.toml declares: it fails while a unit declared unique
/// repeats (answers would not bound it), passes once it is unique, and
/// reports units beyond max_rows_per_unit and values beyond their bounds.
/// dpgate itself skips the bounding step for that table only once the
/// schema proves the unit unique (a primary key), whatever proxy.toml says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_verify_confirms_the_declarations_against_the_backend() {
    let (db, _) = visits_database("e2e_verify", 50).await;
    let admin = connect_direct(&cluster().url(&db)).await;
    admin
        .batch_execute(
            "CREATE TABLE members (member_id int, fee int);
             INSERT INTO members SELECT g, g FROM generate_series(1, 20) g;
             INSERT INTO members VALUES (7, 500), (7, 3);
             INSERT INTO visits SELECT 1, 200, 1.0, 'A', 'x' FROM generate_series(1, 9);
             GRANT SELECT ON members TO PUBLIC;",
        )
        .await
        .unwrap();
    let dir = tempdir();
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        proxy_toml(&db, free_port(), &dir.path().join("l.sqlite"), 1.0, 0.1)
            + r#"[[tables]]
name = "members"
privacy_unit = "member_id"
privacy_unit_unique = true
columns.fee = { type = "int", lower = 0, upper = 100 }
"#,
    )
    .unwrap();
    let verify = || {
        let out = Command::new(env!("CARGO_BIN_EXE_dpgate"))
            .args(["check", "--verify", "--config"])
            .arg(&path)
            .env("DPGATE_TEST_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = verify();
    assert!(!ok, "{text}");
    assert!(
        text.contains("\"public\".\"members\": privacy_unit_unique is FALSE: 1 of 20 values of member_id have more than one row (up to 3)"),
        "{text}"
    );
    // Patient 1 now has 11 visits (declared 5); 9 ages are above 110.
    for line in [
        "at most 11 rows per unit (declared 5); 1 unit has more than 5",
        "age within [0, 110] (answers clamp values outside): 9 rows do not hold",
        "fee within [0, 100] (answers clamp values outside): 1 row does not hold",
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
    admin
        .batch_execute("DELETE FROM members WHERE member_id = 7 AND fee <> 7")
        .await
        .unwrap();
    let (ok, text) = verify();
    assert!(ok, "{text}");
    assert!(
        text.contains("20 privacy units, each one row: privacy_unit_unique holds"),
        "{text}"
    );
    assert!(
        text.contains("has no primary key or unique index on member_id"),
        "{text}"
    );
    let bounding = || {
        let config = std::fs::read_to_string(&path).unwrap();
        let port: u16 = config
            .lines()
            .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
            .and_then(|p| p.trim_end_matches('"').parse().ok())
            .unwrap();
        let gate = Dpgate::start(dir.path(), &config, port);
        let (out, err, ok) = gate.psql(&["-c", "EXPLAIN SELECT COUNT(*) FROM members"]);
        assert!(ok, "{err}");
        out.lines()
            .find(|l| l.contains("Bounding:"))
            .unwrap_or_default()
            .to_string()
    };
    // Unique in the data, but nothing in the schema says so: bounded.
    assert!(bounding().contains("per-unit pre-aggregation"));
    admin
        .batch_execute("ALTER TABLE members ADD PRIMARY KEY (member_id)")
        .await
        .unwrap();
    assert!(bounding().contains("Bounding: none"));
    let (ok, text) = verify();
    assert!(ok && !text.contains("has no primary key"), "{text}");
}

/// A backend query that ran before on the same connection runs as the
/// statement prepared then, without PostgreSQL parsing and planning it
/// again; it still answers after its table is rewritten under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_backend_queries_run_prepared_and_survive_table_changes() {
    let (db, _dir, gate) = gate_over_visits("e2e_prepared", 300, 1e6, 0.1).await;
    let (client, _n) = gate.connect().await;
    let cluster = cluster();
    // Each ε is a new release (the kept one does not repeat it) of the
    // same backend query.
    let answer = |eps: f64| {
        let client = &client;
        async move {
            client
                .batch_execute(&format!("SET dp.epsilon = {eps}"))
                .await
                .unwrap();
            simple_row(client, "SELECT COUNT(*) FROM visits").await
        }
    };
    for i in 0..4 {
        assert!(answer(0.1 + f64::from(i) / 100.0).await[0].is_some());
    }
    let unnamed = cluster.logged(&db, "execute <unnamed>: SELECT CAST(COALESCE(SUM(");
    let all = cluster.logged(&db, ": SELECT CAST(COALESCE(SUM(");
    // The first run parses it unnamed; the others bind the prepared
    // statement (`execute s…`), on whichever pooled connection saw it.
    assert!(
        unnamed >= 1 && all == 4 && all - unnamed >= 2,
        "{unnamed} of {all}"
    );

    // The table rewritten under the prepared statement: still answered.
    connect_direct(&cluster.url(&db))
        .await
        .batch_execute("ALTER TABLE visits ALTER COLUMN patient_id TYPE bigint")
        .await
        .unwrap();
    for i in 0..2 {
        assert!(answer(0.2 + f64::from(i) / 100.0).await[0].is_some());
    }
    assert_eq!(cluster.logged(&db, ": SELECT CAST(COALESCE(SUM("), 6);
}

/// A prepared backend statement whose result type changed under it (the
/// server then refuses to run it, 0A000) is prepared afresh, so the
/// query answers instead of failing after its charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_whose_result_type_changed_is_prepared_afresh() {
    use dpgate_backend::BackendQuery;
    let (db, _) = visits_database("e2e_restale", 30).await;
    let direct = connect_direct(&cluster().url(&db)).await;
    direct
        .batch_execute("CREATE TABLE labels (label text); INSERT INTO labels VALUES ('a')")
        .await
        .unwrap();
    let dir = tempdir();
    let text = proxy_toml(&db, free_port(), &dir.path().join("l.sqlite"), 1.0, 0.1);
    let (_config, backend) = server_config(&text, PASSWORD).await;
    let query = BackendQuery {
        sql: "SELECT label FROM public.labels",
        keys: 1,
        measurements: 0,
    };
    let labels = || async {
        let mut rows = Vec::new();
        backend
            .fetch_into(query, &mut rows)
            .await
            .map(|()| rows.len())
    };
    for _ in 0..3 {
        assert_eq!(labels().await.unwrap(), 1);
    }
    direct
        .batch_execute("ALTER TABLE labels ALTER COLUMN label TYPE varchar(9)")
        .await
        .unwrap();
    assert_eq!(labels().await.unwrap(), 1);
    assert_eq!(labels().await.unwrap(), 1);
}

/// A backend request abandoned midway (its caller gone, as when a client
/// cancels, or timed out) closes its connection instead of pooling it:
/// whatever it left in that session (a query still running, a statement
/// prepared under a name no one will close) ends with it, and the cancel
/// sent after it cannot hit the next analyst's query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_backend_request_closes_its_connection() {
    use dpgate_backend::BackendQuery;
    let (db, _) = visits_database("e2e_abandon", 30).await;
    let dir = tempdir();
    let text = proxy_toml(&db, free_port(), &dir.path().join("l.sqlite"), 1.0, 0.1);
    let (_config, backend) = server_config(&text, PASSWORD).await;
    let pid = || async {
        let mut rows = Vec::new();
        let query = BackendQuery {
            sql: "SELECT CAST(pg_backend_pid() AS text)",
            keys: 1,
            measurements: 0,
        };
        backend.fetch_into(query, &mut rows).await.unwrap();
        rows[0].keys[0].clone().unwrap()
    };
    // A finished request leaves its connection to the next one.
    let first = pid().await;
    assert_eq!(pid().await, first);
    // Abandoned while the server still runs it.
    let mut rows = Vec::new();
    let slow = BackendQuery {
        sql: "SELECT CAST(pg_sleep(2) AS text)",
        keys: 1,
        measurements: 0,
    };
    let abandoned = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        backend.fetch_into(slow, &mut rows),
    )
    .await;
    assert!(abandoned.is_err(), "the slow query should still run");
    assert_ne!(pid().await, first, "the abandoned connection was pooled");
}
