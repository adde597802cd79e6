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

/// One person, 64 rows over 32 spellings of a case-insensitive text unit
/// (PostgreSQL ICU, SQLite NOCASE), or 6 rows over -0 and 0 of a float
/// unit, next to 40 people of 3 rows: each row-sampled shape (grouped
/// with few rows per unit, a median, COUNT(DISTINCT)), the
/// pre-aggregated ones and a join of tables each cut to k rows per unit
/// move by no more than k = 3 rows (k² = 9 joined) when the person
/// joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_spelled_many_ways_is_sampled_as_one() {
    let others = |unit: &str| {
        format!(
            "INSERT INTO t SELECT {unit}, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END, i % 11 \
             FROM generate_series(0, 119) AS i;"
        )
    };
    let lite_series = |sql: String| {
        sql.replace(
            "FROM generate_series(0, 119) AS i",
            "FROM (WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < 119) SELECT i FROM s)",
        )
    };
    let text_others = others("'p' || (i % 40)");
    let float_others = others("1 + i % 40");
    let cases = [
        (
            "ci_units",
            format!(
                "CREATE COLLATION IF NOT EXISTS ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
                 CREATE TABLE t (uid text COLLATE ci, g text, v int); {text_others}"
            ),
            lite_series(format!(
                "CREATE TABLE t (uid TEXT COLLATE NOCASE, g TEXT, v INTEGER); {text_others}"
            )),
            format!("INSERT INTO t VALUES {};", alice_rows(2)),
        ),
        (
            "zero_units",
            format!("CREATE TABLE t (uid float8, g text, v int); {float_others}"),
            lite_series(format!(
                "CREATE TABLE t (uid REAL, g TEXT, v INTEGER); {float_others}"
            )),
            "INSERT INTO t VALUES ('-0', 'a', 10), ('-0', 'a', 10), ('-0', 'a', 10), \
             ('0', 'a', 10), ('0', 'a', 10), ('0', 'a', 10);"
                .to_string(),
        ),
    ];
    let toml = "[[tables]]\nname = \"t\"\nprivacy_unit = \"uid\"\nmax_rows_per_unit = 3\n\
        columns.v = { type = \"int\", lower = 0, upper = 10 }\n\
        columns.g = { type = \"text\", values = [\"a\", \"b\"] }\n";
    let dir = tempfile::tempdir().unwrap();
    let mut beyond = Vec::new();
    for (name, pg, lite, person) in &cases {
        // SQLite reads '-0' as text: its float unit takes the number.
        let lite_person = person.replace("'-0'", "-0.0").replace("'0'", "0.0");
        let pairs = on_both(name, (pg, person), (lite, &lite_person), toml, dir.path()).await;
        for n in &pairs {
            for sql in [
                "SELECT g, COUNT(*), SUM(v) FROM t GROUP BY g",
                "SELECT MEDIAN(v), COUNT(DISTINCT v) FROM t",
                "SELECT COUNT(*), SUM(v) FROM t",
                // Each side cut to k rows per unit before the join.
                "SELECT a.g, COUNT(*), SUM(b.v) FROM t a JOIN t b ON a.uid = b.uid GROUP BY a.g",
            ] {
                // The rows kept per unit are drawn at random: a few draws.
                for _ in 0..3 {
                    let (p, a, b) = n.groups(sql).await;
                    beyond.extend(n.beyond(&format!("{name}: {sql}"), &p, &a, &b));
                }
            }
        }
    }
    beyond.dedup();
    assert!(beyond.is_empty(), "{}", beyond.join("\n"));
}
