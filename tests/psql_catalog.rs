//! psql against a running dpgate: meta-commands browse exactly the
//! declared schema, statistics stay hidden, and private answers come with
//! their reports (NOTICE, EXPLAIN, accuracy columns).

mod common;

use common::*;

/// Runs `script` through psql (unaligned, tuples and headers as psql
/// prints them) and returns (stdout, stderr, success).
fn psql(gate: &Dpgate, script: &str) -> (String, String, bool) {
    let path = gate.dir.join("script.sql");
    std::fs::write(&path, script).unwrap();
    gate.psql(&["-A", "-v", "ON_ERROR_STOP=1", "-f", path.to_str().unwrap()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_meta_commands_show_exactly_the_declared_schema() {
    let db = hospital_database("psql_meta", 300).await;
    let dir = tempdir();
    let port = free_port();
    let config = hospital_toml(&db, port, &dir.path().join("l.sqlite"), 5.0, 0.1);
    let gate = Dpgate::start(dir.path(), &config, port);

    let (out, err, ok) = psql(&gate, "\\dt\n");
    assert!(ok, "{err}");
    for table in ["patients", "visits", "wards"] {
        assert!(out.contains(&format!("public|{table}|table")), "{out}");
    }
    assert!(out.contains("(3 rows)"), "{out}");

    // \d shows the unit and the declared columns, and nothing else: the
    // backend's undeclared `secret` column is invisible.
    let (out, err, ok) = psql(&gate, "\\d visits\n");
    assert!(ok, "{err}");
    let columns: Vec<&str> = out
        .lines()
        .filter(|l| l.contains('|') && !l.starts_with("Column|"))
        .map(|l| l.split('|').next().unwrap())
        .collect();
    assert_eq!(
        columns,
        [
            "patient_id",
            "age",
            "ward",
            "cost",
            "visit_date",
            "diagnosis"
        ],
        "{out}"
    );
    assert!(!out.contains("secret"), "{out}");

    // \d+ carries the bounds as column comments; \dn and \l work.
    let (out, err, ok) = psql(&gate, "\\d+ visits\n\\dn\n\\l\n");
    assert!(ok, "{err}");
    assert!(out.contains("bounds [0, 110]"), "{out}");
    assert!(out.contains("privacy unit"), "{out}");
    assert!(out.contains("public"), "{out}");

    // No statistic of the data is visible: pg_stats and friends are
    // refused, and pg_class describes empty tables.
    for sql in [
        "SELECT * FROM pg_stats",
        "SELECT * FROM pg_catalog.pg_statistic",
        "SELECT n_live_tup FROM pg_stat_user_tables",
        "SELECT pg_relation_size('visits')",
        "SELECT pg_database_size(current_database())",
        "SELECT * FROM pg_stat_activity",
    ] {
        let (_, err, ok) = psql(&gate, &format!("{sql};\n"));
        assert!(
            !ok && err.contains("not visible through dpgate"),
            "{sql}: {err}"
        );
    }
    let (out, err, ok) = psql(
        &gate,
        "SELECT relname, reltuples, relpages FROM pg_class WHERE relname = 'visits';\n",
    );
    assert!(ok, "{err}");
    let row = out.lines().nth(1).unwrap_or_default();
    let fields: Vec<&str> = row.split('|').collect();
    assert_eq!(fields[0], "visits", "{out}");
    assert!(fields[1] == "-1" || fields[1] == "0", "{out}");
    assert_eq!(fields[2], "0", "{out}");

    // information_schema lists declared columns only.
    let (out, err, ok) = psql(
        &gate,
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'visits' ORDER BY ordinal_position;\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains("(6 rows)") && !out.contains("secret"), "{out}");

    // Session functions answer for the analyst, not the catalog's role.
    let (out, err, ok) = psql(
        &gate,
        "SELECT current_user, session_user, current_schema();\nSHOW search_path;\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains("analyst|analyst|public"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_explain_and_accuracy_columns() {
    let db = hospital_database("psql_report", 300).await;
    let dir = tempdir();
    let port = free_port();
    let config = hospital_toml(&db, port, &dir.path().join("l.sqlite"), 5.0, 0.1);
    let gate = Dpgate::start(dir.path(), &config, port);
    let cluster = cluster();
    let before = cluster.logged(&db, "__dp_");

    // EXPLAIN neither runs nor charges.
    let (out, err, ok) = psql(
        &gate,
        "EXPLAIN SELECT ward, COUNT(*), AVG(age) FROM visits WHERE age > 30 GROUP BY ward;\nSHOW dp.budget;\n",
    );
    assert!(ok, "{err}");
    for needle in [
        "not run, not charged",
        "Cost: ε = 0.1",
        "3 keys from declared domains",
        "discrete Laplace",
        "Column count: noisy count",
        "Backend SQL:",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    assert!(out.contains("dp.budget\n5\n"), "{out}");
    assert_eq!(cluster.logged(&db, "__dp_"), before);

    // dp.accuracy = 'columns' adds a half-width after each noisy column.
    let (out, err, ok) = psql(
        &gate,
        "SET dp.accuracy = 'columns';\nSELECT ward, COUNT(*) AS n, AVG(age) AS mean_age FROM visits GROUP BY ward ORDER BY ward;\nSHOW dp.budget;\n",
    );
    assert!(ok, "{err}");
    assert!(out.contains("ward|n|n_ci|mean_age|mean_age_ci"), "{out}");
    assert!(err.contains("dpgate: this answer cost ε = 0.1"), "{err}");
    assert!(out.contains("dp.budget\n4.9\n"), "{out}");
}

/// What DBeaver sends on connect and when opening the navigator, over the
/// extended protocol with binary results (as JDBC does once statements
/// are prepared): every catalog answer passes through intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dbeaver_connect_sequence_over_the_extended_protocol() {
    let db = hospital_database("dbeaver", 100).await;
    let dir = tempdir();
    let port = free_port();
    let config = hospital_toml(&db, port, &dir.path().join("l.sqlite"), 5.0, 0.1);
    let gate = Dpgate::start(dir.path(), &config, port);
    let (client, _n) = gate.connect().await;

    let row = client
        .query_one("SELECT current_schema(), session_user", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "public");
    assert_eq!(row.get::<_, String>(1), "analyst");
    let settings = client
        .query(
            "SELECT name, setting FROM pg_catalog.pg_settings WHERE name = $1",
            &[&"standard_conforming_strings"],
        )
        .await
        .unwrap();
    assert_eq!(settings[0].get::<_, String>(1), "on");
    let keywords: String = client
        .query_one(
            "SELECT string_agg(word, ',') FROM pg_catalog.pg_get_keywords() WHERE word <> ALL ('{a,abs,absolute}'::text[])",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(keywords.contains("select"));
    let namespaces = client
        .query(
            "SELECT n.oid, n.nspname, d.description FROM pg_catalog.pg_namespace n \
             LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid = n.oid AND d.objsubid = 0 \
             AND d.classoid = 'pg_namespace'::regclass ORDER BY nspname",
            &[],
        )
        .await
        .unwrap();
    assert!(namespaces.iter().any(|r| r.get::<_, String>(1) == "public"));
    let types = client
        .query(
            "SELECT t.oid, t.typname, t.typtype, t.typarray, format_type(nullif(t.typbasetype, 0), t.typtypmod) AS base_type_name \
             FROM pg_catalog.pg_type t WHERE t.typnamespace = $1::oid",
            &[&11u32],
        )
        .await
        .unwrap();
    assert!(types.iter().any(|r| r.get::<_, String>(1) == "int8"));
    // Tables with their comments and columns of one table, by OID.
    let tables = client
        .query(
            "SELECT c.oid, c.relname, c.relkind, d.description FROM pg_catalog.pg_class c \
             LEFT OUTER JOIN pg_catalog.pg_description d ON d.objoid = c.oid AND d.objsubid = 0 \
             WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' ORDER BY c.relname",
            &[],
        )
        .await
        .unwrap();
    let names: Vec<String> = tables.iter().map(|r| r.get(1)).collect();
    assert_eq!(names, ["patients", "visits", "wards"]);
    let visits: u32 = tables[1].get(0);
    assert!(tables[1]
        .get::<_, String>(3)
        .contains("privacy unit patient_id"));
    let columns = client
        .query(
            "SELECT a.attname, a.atttypid, a.attnum FROM pg_catalog.pg_attribute a \
             WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&visits],
        )
        .await
        .unwrap();
    assert_eq!(columns.len(), 6);
    // A result-set probe with LIMIT 0 gets the columns and no rows.
    let probe = client
        .prepare("SELECT * FROM visits LIMIT 0")
        .await
        .unwrap();
    assert_eq!(probe.columns().len(), 6);
    assert!(client.query(&probe, &[]).await.unwrap().is_empty());
    // Reading the data itself is refused, with a hint.
    let err = client.query("SELECT * FROM visits", &[]).await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "42501");
}
