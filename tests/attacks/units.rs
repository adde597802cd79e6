//! Joins on the privacy unit, units declared unique and rows without a
//! unit, under attack: each test first shows, straight in the engine,
//! that one person meets several on the other side (or that a unit
//! declared unique repeats, or that rows without a unit pool several
//! people), then that dpgate refuses the join, bounds the table, or
//! leaves the rows out, before anything is charged.

use crate::common::*;
use crate::query_path::{outcome, spent};

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

/// A dpgate over the SQLite file `file` (which holds a `visits` table),
/// with `tables` declared one row per unit and `extra` added to each
/// declaration.
fn sqlite_gate(
    dir: &std::path::Path,
    file: &std::path::Path,
    tables: &[(&str, &str)],
    extra: &str,
) -> Dpgate {
    let port = free_port();
    let db = "unused";
    let config = proxy_toml(db, port, &dir.join("l.sqlite"), 10.0, 0.1)
        .replace(
            &format!("url = \"{}\"", cluster().reader_url(db)),
            &format!("sqlite = \"{}\"", file.display()),
        )
        .replace("name = \"public.visits\"", "name = \"visits\"")
        + &one_row_units(tables).replace(
            "max_rows_per_unit = 1\n",
            &format!("max_rows_per_unit = 1\n{extra}"),
        );
    assert!(config.contains("sqlite = "), "{config}");
    Dpgate::start(dir, &config, port)
}

/// The bounding EXPLAIN reports for `COUNT(*)` over `table`.
async fn bounding(client: &tokio_postgres::Client, table: &str) -> String {
    let rows = simple_rows(client, &format!("EXPLAIN SELECT COUNT(*) FROM {table}"))
        .await
        .unwrap();
    rows.iter()
        .filter_map(|r| r[0].clone())
        .find_map(|l| l.trim().strip_prefix("Bounding: ").map(str::to_string))
        .unwrap_or_else(|| panic!("{rows:?}"))
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
         INSERT INTO claims VALUES ('P1', 1), ('P1 ', 1), ('P1  ', 1);
         CREATE DOMAIN \"Unit\" AS character(8);
         CREATE DOMAIN \"UNIT\" AS character varying(8);
         CREATE TABLE members_d (patient_id \"Unit\", fee int);
         INSERT INTO members_d VALUES ('P1', 1);
         CREATE TABLE claims_d (patient_id \"UNIT\", amount int);
         INSERT INTO claims_d VALUES ('P1', 1), ('P1 ', 1), ('P1  ', 1);",
        // The premises: the one person in scores meets two people in
        // accounts; member P1 meets three people in claims (character(n)
        // ignores trailing spaces, even against character varying), also
        // when the two types are domains.
        &[
            "SELECT COUNT(DISTINCT a.patient_id) FROM accounts a JOIN scores s ON a.patient_id = s.patient_id",
            "SELECT COUNT(DISTINCT c.patient_id) FROM members m JOIN claims c ON m.patient_id = c.patient_id",
            "SELECT COUNT(DISTINCT c.patient_id) FROM members_d m JOIN claims_d c ON m.patient_id = c.patient_id",
        ],
        &[
            ("public.accounts", "balance"),
            ("public.scores", "score"),
            ("public.visits_big", "age"),
            ("public.members", "fee"),
            ("public.claims", "amount"),
            ("public.members_d", "fee"),
            ("public.claims_d", "amount"),
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
    // The same through two domains whose names differ only in case.
    let domains = "SELECT COUNT(*) FROM members_d m JOIN claims_d c USING (patient_id)";
    assert_eq!(outcome(&client, domains).await, "42804");
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
    let gate = sqlite_gate(
        dir.path(),
        &file,
        &[
            ("members", "fee"),
            ("members_too", "fee"),
            ("claims", "amount"),
            ("untyped", "amount"),
            ("numbered", "amount"),
            ("everyone", "amount"),
            ("loose", "amount"),
            ("coerced", "amount"),
        ],
        "",
    );
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

/// A unit declared unique (`privacy_unit_unique`) skips the bounding
/// step only where the schema proves it, so the proof must hold. Each
/// table here has a unique index or primary key on the unit, yet one
/// person has several rows: rows of a child table under legacy
/// inheritance (the parent's key does not cover them); an invalid index
/// left by a failed `CREATE UNIQUE INDEX CONCURRENTLY`; an index whose
/// collation is not the column's (bytewise unique, while the column's `=`
/// calls 'bob' and 'Bob' one person). Each is bounded (one row per
/// unit), while a table whose key holds skips the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_units_need_a_proof_that_holds_on_postgres() {
    let (db, _) = visits_database("uniqueproof", 30).await;
    let direct = connect_direct(&cluster().url(&db)).await;
    direct
        .batch_execute(
            "CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
             CREATE TABLE people (patient_id bigint PRIMARY KEY, fee int);
             INSERT INTO people SELECT g, 1 FROM generate_series(1, 20) g;
             CREATE TABLE people_2025 () INHERITS (people);
             INSERT INTO people_2025 SELECT 1, 1 FROM generate_series(1, 5);
             CREATE TABLE dup (patient_id bigint NOT NULL, fee int);
             INSERT INTO dup SELECT g, 1 FROM generate_series(1, 20) g;
             INSERT INTO dup SELECT 7, 1 FROM generate_series(1, 5);
             CREATE TABLE folded (patient_id text COLLATE ci NOT NULL, fee int);
             CREATE UNIQUE INDEX folded_bytes ON folded (patient_id COLLATE \"C\");
             INSERT INTO folded VALUES ('bob', 1), ('Bob', 1), ('BOB', 1);
             CREATE TABLE proven (patient_id bigint PRIMARY KEY, fee int);
             INSERT INTO proven SELECT g, 1 FROM generate_series(1, 20) g;",
        )
        .await
        .unwrap();
    // Fails on the duplicates, and leaves an invalid unique index behind.
    direct
        .batch_execute("CREATE UNIQUE INDEX CONCURRENTLY dup_unique ON dup (patient_id)")
        .await
        .unwrap_err();
    // The premises: one person has several rows in each table.
    for premise in [
        "SELECT COUNT(*) FROM people WHERE patient_id = 1",
        "SELECT COUNT(*) FROM dup WHERE patient_id = 7",
        "SELECT COUNT(*) FROM folded WHERE patient_id = 'bob'",
    ] {
        let rows: i64 = direct.query_one(premise, &[]).await.unwrap().get(0);
        assert!(rows >= 3, "{premise}: {rows}");
    }
    let dir = tempdir();
    let port = free_port();
    let config = proxy_toml(&db, port, &dir.path().join("l.sqlite"), 10.0, 0.1)
        + &one_row_units(&[
            ("public.people", "fee"),
            ("public.dup", "fee"),
            ("public.folded", "fee"),
            ("public.proven", "fee"),
        ])
        .replace(
            "max_rows_per_unit = 1\n",
            "max_rows_per_unit = 1\nprivacy_unit_unique = true\n",
        );
    let gate = Dpgate::start(dir.path(), &config, port);
    let (client, _n) = gate.connect().await;
    let mut unbounded = Vec::new();
    for table in ["people", "dup", "folded"] {
        let how = bounding(&client, table).await;
        if how.starts_with("none") {
            unbounded.push(table);
        }
    }
    assert!(unbounded.is_empty(), "not bounded: {unbounded:?}");
    assert!(bounding(&client, "proven").await.starts_with("none"));
}

/// The same on SQLite: a BINARY unique index on a NOCASE column ('bob'
/// and 'Bob', one person to the column's `=`), and an `INTEGER PRIMARY
/// KEY DESC`, which is not the rowid and holds NULLs. Both are bounded;
/// a real INTEGER PRIMARY KEY skips the step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_units_need_a_proof_that_holds_on_sqlite() {
    let dir = tempdir();
    let file = dir.path().join("unique.db");
    {
        let c = rusqlite::Connection::open(&file).unwrap();
        c.execute_batch(
            "CREATE TABLE visits (patient_id INTEGER, age INTEGER, ward TEXT, cost REAL);
             CREATE TABLE folded (patient_id TEXT COLLATE NOCASE NOT NULL, fee INTEGER);
             CREATE UNIQUE INDEX folded_bytes ON folded (patient_id COLLATE BINARY);
             INSERT INTO folded VALUES ('bob', 1), ('Bob', 1), ('BOB', 1);
             CREATE TABLE descending (patient_id INTEGER PRIMARY KEY DESC, fee INTEGER);
             INSERT INTO descending VALUES (NULL, 1), (NULL, 1), (NULL, 1);
             CREATE TABLE proven (patient_id INTEGER PRIMARY KEY, fee INTEGER);
             INSERT INTO proven VALUES (1, 1), (2, 1);",
        )
        .unwrap();
        for premise in [
            "SELECT COUNT(*) FROM folded WHERE patient_id = 'bob'",
            "SELECT COUNT(*) FROM descending WHERE patient_id IS NULL",
        ] {
            let rows: i64 = c.query_row(premise, [], |r| r.get(0)).unwrap();
            assert!(rows >= 3, "{premise}: {rows}");
        }
    }
    let gate = sqlite_gate(
        dir.path(),
        &file,
        &[("folded", "fee"), ("descending", "fee"), ("proven", "fee")],
        "privacy_unit_unique = true\n",
    );
    let (client, _n) = gate.connect().await;
    let mut unbounded = Vec::new();
    for table in ["folded", "descending"] {
        let how = bounding(&client, table).await;
        if how.starts_with("none") {
            unbounded.push(table);
        }
    }
    assert!(unbounded.is_empty(), "not bounded: {unbounded:?}");
    assert!(bounding(&client, "proven").await.starts_with("none"));
}

/// Rows whose unit is NULL: GROUP BY and PARTITION BY pool them as one
/// unit, though they may be several people's. One person whose 1 000
/// rows carry no unit (all at the bottom of the range) joins a pool of
/// three rows at the top: pooled, the pool's cut sum would swing from
/// +k·100 to about −k·100, twice the sensitivity. Every bounded shape
/// (pre-aggregated, rows sampled, tables bounded before a join, grouped)
/// must move each measurement by no more than it declares, on
/// PostgreSQL and SQLite alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_without_a_unit_pool_no_one() {
    let table = "[[tables]]\nname = \"pool\"\nprivacy_unit = \"uid\"\nmax_rows_per_unit = 3\n\
        columns.v = { type = \"int\", lower = -100, upper = 100 }\n\
        columns.g = { type = \"text\", values = [\"a\", \"b\"] }\n";
    let base = "CREATE TABLE pool (uid int, v int, g text); \
        INSERT INTO pool SELECT 1 + i % 20, (i * 37) % 201 - 100, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END \
          FROM generate_series(0, 59) AS i; \
        INSERT INTO pool VALUES (NULL, 100, 'a'), (NULL, 100, 'a'), (NULL, 100, 'b');";
    let person = "INSERT INTO pool SELECT NULL, -100, 'a' FROM generate_series(1, 1000);";
    // SQLite has no generate_series: the same rows through a recursive CTE.
    let series = |sql: &str| {
        sql.replace(
            "FROM generate_series(0, 59) AS i",
            "FROM (WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 59) SELECT i FROM s)",
        )
        .replace(
            "FROM generate_series(1, 1000)",
            "FROM (WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 1000) SELECT i FROM s)",
        )
    };
    let dir = tempdir();
    let (lite_base, lite_person) = (series(base), series(person));
    let pairs = crate::neighbours::on_both(
        "pool",
        (base, person),
        (&lite_base, &lite_person),
        table,
        dir.path(),
    )
    .await;
    let mut beyond = Vec::new();
    for n in &pairs {
        for sql in [
            "SELECT COUNT(*), SUM(v), AVG(v) FROM pool",
            "SELECT MEDIAN(v), COUNT(DISTINCT v) FROM pool",
            "SELECT g, COUNT(*), SUM(v) FROM pool GROUP BY g",
            "SELECT COUNT(*), SUM(a.v) FROM pool a JOIN pool b ON a.uid = b.uid",
            "SELECT COUNT(*), SUM(a.v) FROM pool a LEFT JOIN pool b ON a.uid = b.uid",
        ] {
            // The rows kept per unit are drawn at random: a few draws.
            for _ in 0..3 {
                let (p, a, b) = n.groups(sql).await;
                beyond.extend(n.beyond(sql, &p, &a, &b));
            }
        }
    }
    beyond.dedup();
    assert!(beyond.is_empty(), "{}", beyond.join("\n"));
}

/// A privacy unit of a type the database can neither group nor sort by
/// (json has no equality, point no order): every bounding step groups or
/// partitions by the unit, so each query on such a table failed inside
/// PostgreSQL after the charge. It is refused before anything is
/// charged, with an error that says why and what to declare instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_that_cannot_be_grouped_are_refused_before_the_charge() {
    let setup = "CREATE TABLE notes (patient_id json, mood int);
         INSERT INTO notes VALUES ('{\"id\": 1}', 3), ('{\"id\": 1}', 4);
         CREATE TABLE places (patient_id point, rank int);
         INSERT INTO places VALUES ('(1,1)', 3), ('(1,1)', 4);";
    // The premise: PostgreSQL itself cannot group either unit.
    let db = empty_database("ungroupable_premise").await;
    let direct = connect_direct(&cluster().url(&db)).await;
    direct.batch_execute(setup).await.unwrap();
    for table in ["notes", "places"] {
        let grouped = direct
            .simple_query(&format!("SELECT COUNT(*) FROM {table} GROUP BY patient_id"))
            .await
            .unwrap_err();
        assert_eq!(
            grouped.code(),
            Some(&tokio_postgres::error::SqlState::UNDEFINED_FUNCTION),
            "{table}: {grouped}"
        );
    }
    let (_dir, gate) = gate_over_units(
        "ungroupable",
        setup,
        &["SELECT COUNT(*) FROM notes", "SELECT COUNT(*) FROM places"],
        &[("public.notes", "mood"), ("public.places", "rank")],
    )
    .await;
    let (client, _n) = gate.connect().await;
    for sql in [
        "SELECT COUNT(*) FROM notes",
        "SELECT SUM(mood) FROM notes",
        "SELECT COUNT(*) FROM places WHERE rank > 1",
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        let e = e.as_db_error().unwrap();
        assert_eq!(e.code().code(), "42883", "{sql}: {}", e.message());
        assert!(
            e.message().contains("cannot group reliably"),
            "{}",
            e.message()
        );
        assert!(e.hint().unwrap_or("").contains("view that casts"), "{e:?}");
    }
    // Tables with ordinary units still answer; nothing was charged above.
    assert_eq!(
        outcome(&client, "SELECT COUNT(*) FROM visits").await,
        "answered"
    );
    assert_eq!(spent(&gate), 0.1);
}

/// A row-level table (each row is one person) that PostgreSQL stores in
/// partitions: the row identity `ctid` repeats across partitions (each
/// has a row at (0,1)), so bounding by it pooled the new person's row
/// with another person's, and the new row could displace that one: a
/// grouped COUNT moved by 2 and a SUM by 200 against a bound of 1 and
/// 100, in about half the draws. The identity is the row's table and
/// ctid together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_of_a_row_level_table_pool_no_one() {
    let pg = "CREATE TABLE ev (g text, v int, d date) PARTITION BY RANGE (d);
        CREATE TABLE ev1 PARTITION OF ev FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');
        CREATE TABLE ev2 PARTITION OF ev FOR VALUES FROM ('2021-01-01') TO ('2022-01-01');
        INSERT INTO ev SELECT CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, 100, DATE '2020-03-01' FROM generate_series(1, 50) AS i;
        CREATE TABLE wards (g text, label text);
        INSERT INTO wards VALUES ('a', 'Ward A'), ('b', 'Ward B');";
    let person = "INSERT INTO ev VALUES ('a', -100, DATE '2021-05-01');";
    let lite = "CREATE TABLE ev (g TEXT, v INTEGER, d TEXT);
        INSERT INTO ev WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 50)
          SELECT CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, 100, '2020-03-01' FROM s;
        CREATE TABLE wards (g TEXT, label TEXT);
        INSERT INTO wards VALUES ('a', 'Ward A'), ('b', 'Ward B');";
    let toml = "[[tables]]\nname = \"ev\"\n\
        columns.g = { type = \"text\", values = [\"a\", \"b\"] }\n\
        columns.v = { type = \"int\", lower = -100, upper = 100 }\n\
        [[tables]]\nname = \"wards\"\npublic = true\n\
        columns.g = { type = \"text\" }\n\
        columns.label = { type = \"text\", values = [\"Ward A\", \"Ward B\"] }\n";
    let dir = tempdir();
    let pairs = crate::neighbours::on_both(
        "parts",
        (pg, person),
        (lite, &person.replace("DATE ", "")),
        toml,
        dir.path(),
    )
    .await;
    let mut beyond = Vec::new();
    for n in &pairs {
        for sql in [
            "SELECT w.label, COUNT(*), SUM(e.v) FROM ev e JOIN wards w ON e.g = w.g GROUP BY w.label",
            "SELECT MEDIAN(e.v) FROM ev e JOIN wards w ON e.g = w.g",
            "SELECT COUNT(*), SUM(e.v) FROM ev e JOIN wards w ON e.g = w.g",
        ] {
            for _ in 0..8 {
                let (p, a, b) = n.groups(sql).await;
                beyond.extend(n.beyond(sql, &p, &a, &b));
            }
        }
    }
    beyond.dedup();
    assert!(beyond.is_empty(), "{}", beyond.join("\n"));
}

/// A unit PostgreSQL groups one way by hashing and another by sorting: a
/// `name` column under a case-insensitive collation compares 'alice' and
/// 'ALICE' equal but hashes their bytes. A bounding step that found a
/// person's rows by a hashed GROUP BY and cut them by a sorted one (or a
/// window) counted the person once per spelling: 64 rows passed a bound
/// of 10. Such a unit is refused before the charge, like one that cannot
/// be grouped at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn units_hashed_apart_from_their_collation_are_refused() {
    let setup = "CREATE COLLATION IF NOT EXISTS ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
         CREATE TABLE names (patient_id name COLLATE ci, mood int);
         INSERT INTO names VALUES ('alice', 3), ('ALICE', 4), ('Alice', 5);";
    // The premise: hashing and sorting group these rows differently.
    let db = empty_database("hashed_apart_premise").await;
    let direct = connect_direct(&cluster().url(&db)).await;
    direct.batch_execute(setup).await.unwrap();
    let mut groups = Vec::new();
    for off in ["enable_hashagg", "enable_sort"] {
        let rows = direct
            .simple_query(&format!(
                "SET {off} = off; SELECT COUNT(*) FROM (SELECT patient_id FROM names GROUP BY 1) AS g"
            ))
            .await
            .unwrap();
        let count = rows.iter().find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        });
        groups.push(count.unwrap());
        direct.batch_execute(&format!("RESET {off}")).await.unwrap();
    }
    assert_eq!(groups, ["1", "3"], "sorted, then hashed");
    let (_dir, gate) = gate_over_units(
        "hashed_apart",
        setup,
        &["SELECT COUNT(*) FROM names"],
        &[("public.names", "mood")],
    )
    .await;
    let (client, _n) = gate.connect().await;
    for sql in [
        "SELECT COUNT(*) FROM names",
        "SELECT mood, COUNT(*) FROM names GROUP BY mood",
    ] {
        let e = client.simple_query(sql).await.unwrap_err();
        let e = e.as_db_error().unwrap();
        assert_eq!(e.code().code(), "42883", "{sql}: {}", e.message());
        assert!(e.hint().unwrap_or("").contains("view that casts"), "{e:?}");
    }
    assert_eq!(spent(&gate), 0.0);
}
