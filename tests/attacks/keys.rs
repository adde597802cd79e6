//! Group keys under attack: a group's released key must be a function
//! of its own rows' values, so that one person can add a group (which
//! partition selection then weighs) but never rename or empty another.
//! Where the backend's equality joins values that print differently (a
//! case-insensitive collation's 'A' and 'a', a float's -0 and 0), a group
//! keyed by the value itself would take the spelling of whichever row
//! the backend met first.

use crate::neighbours::on_both;

/// One person whose rows say 'a' where 3 × 40 others say 'A' (or 'B'):
/// under a case-insensitive collation (PostgreSQL ICU, SQLite NOCASE)
/// the backend puts them in one group. Keyed by its value, that group
/// was released as 'a' (the person's rows come first): declared group A
/// fell from 60 rows to 0 (sensitivity 3), and without a declared
/// domain the released key was spelled after the person. Keyed by its
/// bytes, 'a' is a group of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collation_that_ignores_case_renames_no_group() {
    // With the person (unit 0) inserted first, so a scan meets its rows
    // first; D deletes them again.
    let pg = "CREATE COLLATION IF NOT EXISTS ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
        CREATE TABLE t (uid int, g text COLLATE ci, v int);
        INSERT INTO t VALUES (0, 'a', 5), (0, 'a', 5), (0, 'a', 5);
        INSERT INTO t SELECT 1 + i % 40, CASE WHEN i % 2 = 0 THEN 'A' ELSE 'B' END, 5 FROM generate_series(0, 119) AS i;";
    let lite = "CREATE TABLE t (uid INTEGER, g TEXT COLLATE NOCASE, v INTEGER);
        INSERT INTO t VALUES (0, 'a', 5), (0, 'a', 5), (0, 'a', 5);
        INSERT INTO t WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 119)
          SELECT 1 + i % 40, CASE WHEN i % 2 = 0 THEN 'A' ELSE 'B' END, 5 FROM s;";
    let without_person = "DELETE FROM t WHERE uid = 0;";
    let dir = tempfile::tempdir().unwrap();
    let mut beyond = Vec::new();
    for k in [3, 10] {
        let table = format!(
            "[[tables]]\nname = \"t\"\nprivacy_unit = \"uid\"\nmax_rows_per_unit = {k}\n\
             columns.v = {{ type = \"int\", lower = 0, upper = 10 }}\n"
        );
        for domain in [", values = [\"A\", \"B\"]", ""] {
            let toml = format!("{table}columns.g = {{ type = \"text\"{domain} }}\n");
            let name = format!("ci_{k}_{}", domain.len());
            let pairs = on_both(
                &name,
                (pg, without_person),
                (lite, without_person),
                &toml,
                dir.path(),
            )
            .await;
            for n in &pairs {
                let sql = "SELECT g, COUNT(*), SUM(v) FROM t GROUP BY g";
                // Here `d` holds the person and `d_prime` does not.
                let (p, with, without) = n.groups(sql).await;
                beyond.extend(n.beyond(sql, &p, &without, &with));
                // Every group is still there, under the same key, when
                // the person joins.
                beyond.extend(n.vanished(&format!("k = {k}{domain}: {sql}"), &without, &with));
            }
        }
    }
    assert!(beyond.is_empty(), "{}", beyond.join("\n"));
}

/// The same through values a type calls equal but prints apart: a
/// float8's -0 and 0, a numeric's 0.50000 and 0.5. One person's rows,
/// met first, gave the whole group their spelling in every run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_values_spelled_apart_rename_no_group() {
    let pg = "CREATE TABLE f (uid int, x float8, y numeric);
        INSERT INTO f VALUES (0, '-0', 0.50000), (0, '-0', 0.50000), (0, '-0', 0.50000);
        INSERT INTO f SELECT 1 + i % 40, 0, 0.5 FROM generate_series(0, 119) AS i;";
    let lite = "CREATE TABLE f (uid INTEGER, x REAL, y REAL);
        INSERT INTO f VALUES (0, -0.0, 0.5), (0, -0.0, 0.5), (0, -0.0, 0.5);
        INSERT INTO f WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 119)
          SELECT 1 + i % 40, 0.0, 0.5 FROM s;";
    let without_person = "DELETE FROM f WHERE uid = 0;";
    let toml = "[[tables]]\nname = \"f\"\nprivacy_unit = \"uid\"\nmax_rows_per_unit = 3\n\
        columns.x = { type = \"float\", lower = -1, upper = 1 }\n\
        columns.y = { type = \"float\", lower = 0, upper = 1 }\n";
    let dir = tempfile::tempdir().unwrap();
    let pairs = on_both(
        "zeros",
        (pg, without_person),
        (lite, without_person),
        toml,
        dir.path(),
    )
    .await;
    let mut beyond = Vec::new();
    for n in &pairs {
        for sql in [
            "SELECT x, COUNT(*) FROM f GROUP BY x",
            "SELECT y, COUNT(*) FROM f GROUP BY y",
        ] {
            let (p, with, without) = n.groups(sql).await;
            beyond.extend(n.beyond(sql, &p, &without, &with));
            beyond.extend(n.vanished(sql, &without, &with));
        }
    }
    assert!(beyond.is_empty(), "{}", beyond.join("\n"));
}
