//! Row sampling under attack. Row sampling ranks only the rows of units
//! with more than `max_rows_per_unit` rows: it finds them by grouping on
//! the unit, then sends each row down one of two branches by whether its
//! unit equals a large unit's grouped value. A person whose unit is
//! spelled several ways that the unit column's equality calls equal
//! ('Alice' and 'alice' under a case-insensitive collation, a float's
//! -0 and 0) is one unit to GROUP BY and to PARTITION BY. Were the test
//! finer than the grouping (bytes instead of the column's `=`), each
//! spelling's few rows would pass unranked and the person would count
//! once per spelling.

use crate::neighbours::on_both;

/// Every capitalisation of "alice" (32 spellings), `per` rows each, as
/// one VALUES list of (unit, group, value) rows.
fn alice_rows(per: usize) -> String {
    let mut rows = Vec::new();
    for mask in 0..32u32 {
        let name: String = "alice"
            .chars()
            .enumerate()
            .map(|(i, c)| match mask >> i & 1 {
                1 => c.to_ascii_uppercase(),
                _ => c,
            })
            .collect();
        for _ in 0..per {
            rows.push(format!("('{name}', 'a', 10)"));
        }
    }
    rows.join(", ")
}

/// The shapes each row-sampled query takes (grouped with few rows per
/// unit; a median's histogram and COUNT(DISTINCT)), and a pre-aggregated
/// one.
const SAMPLED: [&str; 3] = [
    "SELECT g, COUNT(*), SUM(v) FROM t GROUP BY g",
    "SELECT MEDIAN(v), COUNT(DISTINCT v) FROM t",
    "SELECT COUNT(*), SUM(v) FROM t",
];

/// Each case's (name, PostgreSQL setup, SQLite setup, the person's rows)
/// as D and D′, with `k` rows per unit, `queries` run `draws` times on
/// each: where a measurement moved past its sensitivity, one line each.
async fn moved(
    cases: &[(&str, String, String, String)],
    queries: &[&str],
    draws: usize,
    k: u64,
) -> Vec<String> {
    let toml = format!(
        "[[tables]]\nname = \"t\"\nprivacy_unit = \"uid\"\nmax_rows_per_unit = {k}\n\
         columns.v = {{ type = \"int\", lower = 0, upper = 10 }}\n\
         columns.g = {{ type = \"text\", values = [\"a\", \"b\"] }}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut beyond = Vec::new();
    for (name, pg, lite, person) in cases {
        // SQLite reads '-0' as text: its float unit takes the number.
        let lite_person = person.replace("'-0'", "-0.0").replace("'0'", "0.0");
        let name = format!("{name}_{k}");
        let pairs = on_both(&name, (pg, person), (lite, &lite_person), &toml, dir.path()).await;
        for n in &pairs {
            for sql in queries {
                // The rows kept per unit are drawn at random.
                for _ in 0..draws {
                    let (p, a, b) = n.groups(sql).await;
                    beyond.extend(n.beyond(&format!("{name}: {sql}"), &p, &a, &b));
                }
            }
        }
    }
    beyond.dedup();
    beyond
}

/// 40 people of 3 rows in table `t` (`unit` their unit's SQL), in
/// PostgreSQL's SQL and SQLite's.
fn others(unit: &str) -> (String, String) {
    let pg = format!(
        "INSERT INTO t SELECT {unit}, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, i % 11 \
         FROM generate_series(0, 119) AS i;"
    );
    let lite = pg.replace(
        "FROM generate_series(0, 119) AS i",
        "FROM (WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 119) SELECT i FROM s)",
    );
    (pg, lite)
}

/// One person, 64 rows over 32 spellings of a case-insensitive text unit
/// (PostgreSQL ICU and citext, SQLite NOCASE), or 6 rows over -0 and 0
/// of a float unit, next to 40 people of 3 rows: each row-sampled shape,
/// a pre-aggregated one and a join of tables each cut to k rows per unit
/// move by no more than k = 3 rows (k² = 9 joined) when the person
/// joins. citext's `=` is not in `pg_catalog`, which dpgate's connections
/// search: there `=` compares its text, case-sensitive, so its units are
/// all ranked (with `=` between the branches, 62 of the person's rows
/// passed unranked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_spelled_many_ways_is_sampled_as_one() {
    let (text_pg, text_lite) = others("'p' || (i % 40)");
    let (float_pg, float_lite) = others("1 + i % 40");
    let nocase =
        format!("CREATE TABLE t (uid TEXT COLLATE NOCASE, g TEXT, v INTEGER); {text_lite}");
    let alice = format!("INSERT INTO t VALUES {};", alice_rows(2));
    let cases = [
        (
            "ci_units",
            format!(
                "CREATE COLLATION IF NOT EXISTS ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
                 CREATE TABLE t (uid text COLLATE ci, g text, v int); {text_pg}"
            ),
            nocase.clone(),
            alice.clone(),
        ),
        (
            "citext_units",
            format!("CREATE EXTENSION IF NOT EXISTS citext; CREATE TABLE t (uid citext, g text, v int); {text_pg}"),
            nocase,
            alice,
        ),
        (
            "zero_units",
            format!("CREATE TABLE t (uid float8, g text, v int); {float_pg}"),
            format!("CREATE TABLE t (uid REAL, g TEXT, v INTEGER); {float_lite}"),
            "INSERT INTO t VALUES ('-0', 'a', 10), ('-0', 'a', 10), ('-0', 'a', 10), \
             ('0', 'a', 10), ('0', 'a', 10), ('0', 'a', 10);"
                .to_string(),
        ),
    ];
    let mut queries = SAMPLED.to_vec();
    // Each side cut to k rows per unit before the join.
    queries.push("SELECT a.g, COUNT(*), SUM(b.v) FROM t a JOIN t b ON a.uid = b.uid GROUP BY a.g");
    let mut beyond = moved(&cases, &queries, 3, 3).await;
    // With k = 10 a grouped query pre-aggregates (unit, group) pairs,
    // and only large units share their allowance.
    beyond.extend(moved(&cases, &queries, 1, 10).await);
    assert!(beyond.is_empty(), "{}", beyond.join("\n"));
}

/// A view declared as a table may return other rows on each read (here
/// each of the person's 8 rows shows with probability ½). Read once to
/// rank and once more for the rows of small units, the person could look
/// small (≤ 3 rows) to the first read and pass 4 or more unranked in the
/// second: the grouped count moved by up to 8 > 3, in about one draw of
/// four. Only stored tables are read twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_that_reads_differently_each_time_is_read_once() {
    let (pg, lite) = others("'p' || (i % 40)");
    let table = |sql: &str| sql.replace("INSERT INTO t ", "INSERT INTO raw ");
    let person = format!(
        "INSERT INTO raw VALUES {};",
        ["('x', 'a', 10)"; 8].join(", ")
    );
    let cases = [(
        "coin_view",
        format!(
            "CREATE TABLE raw (uid text, g text, v int); {} \
             CREATE VIEW t AS SELECT * FROM raw WHERE uid <> 'x' OR random() < 0.5;",
            table(&pg)
        ),
        format!(
            "CREATE TABLE raw (uid TEXT, g TEXT, v INTEGER); {} \
             CREATE VIEW t AS SELECT * FROM raw WHERE uid <> 'x' OR random() % 2 = 0;",
            table(&lite)
        ),
        person,
    )];
    let beyond = moved(&cases, &SAMPLED, 30, 3).await;
    assert!(beyond.is_empty(), "{}", beyond.join("\n"));
}
