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
fn spent(gate: &Dpgate) -> f64 {
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

/// A dpgate over a visits database where `setup` made further tables,
/// declared one row per unit (`tables`), after checking the attack's
/// premises: each of `premises` counts the people one person meets,
/// which must be several.
async fn gate_over_units(
    prefix: &str,
    setup: &str,
    premises: &[&str],
    tables: &[(&str, &str)],
) -> (tempfile::TempDir, Dpgate) {
    let (db, _) = visits_database(prefix, 30).await;
    let direct = connect_direct(&cluster().url(&db)).await;
    direct.batch_execute(setup).await.unwrap();
    for premise in premises {
        let met: i64 = direct.query_one(*premise, &[]).await.unwrap().get(0);
        assert!(met >= 2, "{premise}: {met}");
    }
    let dir = tempdir();
    let port = free_port();
    let config =
        proxy_toml(&db, port, &dir.path().join("l.sqlite"), 10.0, 0.1) + &one_row_units(tables);
    let gate = Dpgate::start(dir.path(), &config, port);
    (dir, gate)
}

/// proxy.toml declarations of `tables` (name, an int column 0..10), one
/// row per `patient_id` unit, with the cache off.
fn one_row_units(tables: &[(&str, &str)]) -> String {
    let mut toml: String = tables
        .iter()
        .map(|(name, column)| {
            format!(
                "[[tables]]\nname = \"{name}\"\nprivacy_unit = \"patient_id\"\nmax_rows_per_unit = 1\ncolumns.{column} = {{ type = \"int\", lower = 0, upper = 10 }}\n"
            )
        })
        .collect();
    toml.push_str("[cache]\nenabled = false\n");
    toml
}

/// The SQLSTATE of `sql`'s error, or "answered".
async fn outcome(client: &tokio_postgres::Client, sql: &str) -> String {
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
    assert!(cluster().logged(&db, "AS \"__dp_table\" WHERE \"__dp_rn_table\" <= 5") >= 1);
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

/// Joins on privacy units of different types: equality between a double
/// and a bigint is not one to one (2⁵³ and 2⁵³ + 1 are one double), so
/// one person in `scores` (unit 2⁵³ as a double) met two people in
/// `accounts` and doubled what a unit could add. Such a join is refused
/// before anything is charged; the same join over units of one kind of
/// type answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_on_units_of_different_types_are_refused() {
    let (_dir, gate) = gate_over_units(
        "unittypes",
        "CREATE TABLE accounts (patient_id bigint, balance int);
         INSERT INTO accounts VALUES (9007199254740992, 1), (9007199254740993, 1);
         CREATE TABLE scores (patient_id double precision, score int);
         INSERT INTO scores VALUES (9007199254740992, 1);
         CREATE TABLE visits_big AS SELECT patient_id::bigint AS patient_id, age FROM visits;
         CREATE TABLE members (patient_id character(8), fee int);
         INSERT INTO members VALUES ('P1', 1);
         CREATE TABLE claims (patient_id character varying(8), amount int);
         INSERT INTO claims VALUES ('P1', 1), ('P1 ', 1), ('P1  ', 1);",
        // The premises: the one person in scores meets two people in
        // accounts; member P1 meets three people in claims (character(n)
        // ignores trailing spaces, even against character varying).
        &[
            "SELECT COUNT(DISTINCT a.patient_id) FROM accounts a JOIN scores s ON a.patient_id = s.patient_id",
            "SELECT COUNT(DISTINCT c.patient_id) FROM members m JOIN claims c ON m.patient_id = c.patient_id",
        ],
        &[
            ("public.accounts", "balance"),
            ("public.scores", "score"),
            ("public.visits_big", "age"),
            ("public.members", "fee"),
            ("public.claims", "amount"),
        ],
    )
    .await;
    let (client, _n) = gate.connect().await;
    let mismatched = "SELECT COUNT(*), SUM(a.balance) FROM accounts a JOIN scores s ON a.patient_id = s.patient_id";
    assert_eq!(outcome(&client, mismatched).await, "42804");
    let through_subquery = "SELECT COUNT(*) FROM (SELECT patient_id, score FROM scores) s JOIN accounts a ON s.patient_id = a.patient_id";
    assert_eq!(outcome(&client, through_subquery).await, "42804");
    let padded = "SELECT COUNT(*), SUM(c.amount) FROM members m JOIN claims c USING (patient_id)";
    assert_eq!(outcome(&client, padded).await, "42804");
    // int and bigint units are one kind: equality is exact.
    let exact = "SELECT COUNT(*) FROM visits v JOIN visits_big b ON v.patient_id = b.patient_id";
    assert_eq!(outcome(&client, exact).await, "answered");
    // Nothing was charged for the refusals.
    assert_eq!(spent(&gate), 0.1);
}

/// The same attack through collations, on PostgreSQL: in `members` the
/// unit column compares case-insensitively (a nondeterministic ICU
/// collation), so its one person 'Bob' meets two people in `claims`,
/// 'Bob' and 'bob'. Two different deterministic collations ("C" and
/// "POSIX") would fail in PostgreSQL itself, after the charge. Both are
/// refused before anything is charged; the same collation on both sides
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_on_units_compared_differently_are_refused_on_postgres() {
    let (_dir, gate) = gate_over_units(
        "collations",
        "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         CREATE TABLE members (patient_id text COLLATE ci, fee int);
         INSERT INTO members VALUES ('Bob', 1);
         CREATE TABLE members_too (patient_id text COLLATE ci, fee int);
         INSERT INTO members_too VALUES ('BOB', 1);
         CREATE TABLE claims (patient_id text, amount int);
         INSERT INTO claims VALUES ('Bob', 1), ('bob', 1);
         CREATE TABLE claims_c (patient_id text COLLATE \"C\", amount int);
         CREATE TABLE claims_posix (patient_id text COLLATE \"POSIX\", amount int);",
        // The premise: one person in members meets two people in claims.
        &["SELECT COUNT(DISTINCT c.patient_id) FROM members m JOIN claims c ON m.patient_id = c.patient_id"],
        &[
            ("public.members", "fee"),
            ("public.members_too", "fee"),
            ("public.claims", "amount"),
            ("public.claims_c", "amount"),
            ("public.claims_posix", "amount"),
        ],
    )
    .await;
    let (client, _n) = gate.connect().await;
    for (left, right) in [
        ("members", "claims"),
        ("claims", "members"),
        ("claims_c", "claims_posix"),
    ] {
        let sql =
            format!("SELECT COUNT(*) FROM {left} a JOIN {right} b ON a.patient_id = b.patient_id");
        let (code, message, hint) = refusal(&client, &sql).await;
        assert_eq!(code, "42804", "{sql}: {message}");
        assert!(message.contains("collation"), "{message}");
        assert!(hint.contains("collation"), "{hint}");
    }
    // One collation on both sides: one equality, one person each.
    let same = "SELECT COUNT(*), SUM(m.fee) FROM members m JOIN members_too t ON m.patient_id = t.patient_id";
    assert_eq!(outcome(&client, same).await, "answered");
    assert_eq!(spent(&gate), 0.1);
}

/// The collation attack on the embedded SQLite backend, over a data
/// owner's own file: `members`' unit column is `COLLATE NOCASE`, so its
/// 'Bob' meets claims' 'Bob' and 'bob'. Units whose comparison SQLite
/// does not report (a view's column, here a UNION whose arms convert
/// differently; ANY columns) are not joined either. Refused before the
/// charge; the same collation on both sides answers, and so does a
/// column without a type joined with a TEXT one (neither side is
/// converted: 1 and '1' stay apart, one person each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_on_units_compared_differently_are_refused_on_sqlite() {
    let dir = tempdir();
    let file = dir.path().join("units.db");
    {
        let c = rusqlite::Connection::open(&file).unwrap();
        c.execute_batch(
            "CREATE TABLE visits (patient_id INTEGER, age INTEGER, ward TEXT, cost REAL);
             CREATE TABLE members (patient_id TEXT COLLATE NOCASE, fee INTEGER);
             INSERT INTO members VALUES ('Bob', 1);
             CREATE TABLE members_too (patient_id VARCHAR(20) COLLATE NOCASE, fee INTEGER);
             INSERT INTO members_too VALUES ('BOB', 1);
             CREATE TABLE claims (patient_id TEXT, amount INTEGER);
             INSERT INTO claims VALUES ('Bob', 1), ('bob', 1), ('1', 1);
             CREATE TABLE untyped (patient_id, amount INTEGER);
             INSERT INTO untyped VALUES (1, 1), ('1', 1);
             CREATE TABLE numbered (patient_id INTEGER, amount INTEGER);
             INSERT INTO numbered VALUES (1, 1);
             CREATE TABLE archived (patient_id TEXT, amount INTEGER);
             INSERT INTO archived VALUES ('01', 1), ('1', 1);
             CREATE TABLE current (patient_id INTEGER, amount INTEGER);
             INSERT INTO current VALUES (1, 1);
             CREATE VIEW everyone AS SELECT patient_id, amount FROM archived
               UNION ALL SELECT patient_id, amount FROM current;
             CREATE TABLE loose (patient_id ANY, amount INTEGER) STRICT;
             INSERT INTO loose VALUES ('1', 1), ('01', 1), (1, 1);
             CREATE TABLE coerced (patient_id ANY, amount INTEGER);
             INSERT INTO coerced VALUES (1, 1);",
        )
        .unwrap();
        let count = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).unwrap() };
        // The premises: one person in members meets two people in claims;
        // SQLite reports the view's column as the last arm's INTEGER, yet
        // numbered's 1 meets three people in it ('01', '1' and 1); and an
        // ANY column of an ordinary table (NUMERIC affinity) meets three
        // in a STRICT table's ANY column.
        for premise in [
            "SELECT COUNT(DISTINCT c.patient_id) FROM members m JOIN claims c ON m.patient_id = c.patient_id",
            "SELECT COUNT(*) FROM numbered n JOIN everyone e ON n.patient_id = e.patient_id",
            "SELECT COUNT(*) FROM coerced c JOIN loose l ON c.patient_id = l.patient_id",
        ] {
            assert!(count(premise) >= 2, "{premise}");
        }
        // And what makes the untyped join safe: claims' '1' meets one unit.
        assert_eq!(
            count("SELECT COUNT(*) FROM claims c JOIN untyped u ON c.patient_id = u.patient_id WHERE c.patient_id = '1'"),
            1
        );
    }
    let port = free_port();
    let db = "unused";
    let config = proxy_toml(db, port, &dir.path().join("l.sqlite"), 10.0, 0.1)
        .replace(
            &format!("url = \"{}\"", cluster().reader_url(db)),
            &format!("sqlite = \"{}\"", file.display()),
        )
        .replace("name = \"public.visits\"", "name = \"visits\"")
        + &one_row_units(&[
            ("members", "fee"),
            ("members_too", "fee"),
            ("claims", "amount"),
            ("untyped", "amount"),
            ("numbered", "amount"),
            ("everyone", "amount"),
            ("loose", "amount"),
            ("coerced", "amount"),
        ]);
    assert!(config.contains("sqlite = "), "{config}");
    let gate = Dpgate::start(dir.path(), &config, port);
    let (client, _n) = gate.connect().await;
    for (left, right) in [("members", "claims"), ("claims", "members")] {
        let sql =
            format!("SELECT COUNT(*) FROM {left} a JOIN {right} b ON a.patient_id = b.patient_id");
        let (code, message, _) = refusal(&client, &sql).await;
        assert_eq!(code, "42804", "{sql}: {message}");
        assert!(message.contains("collation NOCASE"), "{message}");
    }
    // The view and the ANY columns: how they compare is unknown.
    for (left, right) in [("numbered", "everyone"), ("coerced", "loose")] {
        let sql = format!("SELECT COUNT(*) FROM {left} a JOIN {right} b USING (patient_id)");
        let (code, message, _) = refusal(&client, &sql).await;
        assert_eq!(code, "42804", "{sql}: {message}");
        assert!(message.contains("does not say"), "{message}");
    }
    for sql in [
        "SELECT COUNT(*), SUM(m.fee) FROM members m JOIN members_too t ON m.patient_id = t.patient_id",
        "SELECT COUNT(*) FROM claims c JOIN untyped u ON c.patient_id = u.patient_id",
    ] {
        assert_eq!(outcome(&client, sql).await, "answered", "{sql}");
    }
    let spent = spent(&gate);
    assert!((spent - 0.2).abs() < 1e-9, "{spent}");
}
