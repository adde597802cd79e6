//! Data-dependent errors: every backend expression dpgate writes must be
//! total. Random expression trees over the whole supported grammar are
//! planned and their backend queries run, on PostgreSQL, on SQLite and
//! (with the `spark` feature) on Spark in ANSI mode,
//! against rows holding the most hostile values each engine can store
//! (±1e308, denormals, NaN, ±infinity, infinite dates, bigint extremes,
//! NULLs, odd text). A single backend error would be an oracle: the one
//! uniform 58000 after the charge answers "does such a row exist?".

use dpgate_config::Config;
use dpgate_sql::{classify, plan, Command};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::*;

const TABLE_TOML: &str = r#"
[[tables]]
name = "extremes"
privacy_unit = "id"
max_rows_per_unit = 3
columns.n = { type = "int", lower = -100, upper = 100 }
columns.x = { type = "float", lower = -1000, upper = 1000 }
columns.d = { type = "date" }
columns.ts = { type = "timestamp" }
columns.s = { type = "text" }
columns.w = { type = "text", values = ["a", "b"] }
columns.b = { type = "bool" }
"#;

/// Rows for PostgreSQL: (n, x, d, ts, s, w, b) as SQL literals.
const PG_ROWS: &[&str] = &[
    "9223372036854775807, 1e308, 'infinity', 'infinity', '', 'a', true",
    "-9223372036854775808, -1e308, '-infinity', '-infinity', 'x', 'b', false",
    "0, 'NaN', '4713-01-01 BC', '4713-01-01 00:00:00 BC', repeat('z', 10000), 'zz', NULL",
    "1, 'Infinity', '5874897-12-31', '294276-12-31 23:59:59', '%_\\', NULL, true",
    "-1, '-Infinity', '2024-02-29', '2024-02-29 23:59:59.999999', 'ünï', 'a', false",
    "NULL, 5e-324, NULL, NULL, NULL, NULL, NULL",
    "100, -5e-324, '0001-01-01', '0001-01-01 00:00:00', '1e400', 'b', true",
    "-100, 2.2250738585072014e-308, '9999-12-31', '9999-12-31 23:59:59', 'NaN', 'a', true",
    "50, 0, '2000-01-01', '2000-01-01 00:00:00', '-0', 'a', false",
    "7, -0.0, '1970-01-01', '1970-01-01 00:00:00', ' ', 'b', NULL",
];

/// Rows for SQLite (which stores NaN as NULL and dates as text).
const SQLITE_ROWS: &[&str] = &[
    "9223372036854775807, 1e308, 'infinity', 'infinity', '', 'a', 1",
    "-9223372036854775808, -1e308, '-infinity', '-infinity', 'x', 'b', 0",
    "0, 9e999, 'not a date', '2024-99-99 99:99', 'z', 'zz', NULL",
    "1, -9e999, '5874897-12-31', '294276-12-31 23:59:59', '%_\\', NULL, 1",
    "-1, 5e-324, '2024-02-29', '2024-02-29 23:59:59.999999', 'ünï', 'a', 0",
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL",
    "100, -5e-324, '0001-01-01', '0001-01-01 00:00:00', '1e400', 'b', 1",
    "-100, 2.2250738585072014e-308, '9999-12-31', '9999-12-31 23:59:59', 'NaN', 'a', 7",
    "'text in an int', 'text in a float', 20240229, 3.5, 42, 1, 'yes'",
    "7, -0.0, '1970-01-01', '1970-01-01 00:00:00', ' ', 'b', NULL",
];

/// Rows for Spark (the feature's tests), in a table whose columns are not
/// all of the declared types, as a data owner's lake may be: `n` is a
/// decimal reaching past bigint, `d` and `b` are text, so every read of
/// them must convert without raising in ANSI mode.
#[cfg(feature = "spark")]
const SPARK_ROWS: &[&str] = &[
    "9223372036854775807, 1e308, 'infinity', TIMESTAMP '+99999-12-31 23:59:59', '', 'a', 'true'",
    "-9223372036854775808, -1e308, '-infinity', TIMESTAMP '-9999-01-01 00:00:00', 'x', 'b', 'false'",
    "0, CAST('NaN' AS DOUBLE), '4713-01-01 BC', NULL, repeat('z', 10000), 'zz', NULL",
    "1, CAST('Infinity' AS DOUBLE), '+99999-12-31', TIMESTAMP '2024-02-29 23:59:59.999999', '%_\\', NULL, 'maybe'",
    "-1, CAST('-Infinity' AS DOUBLE), '2024-02-29', TIMESTAMP '1970-01-01 00:00:00', 'ünï', 'a', 'f'",
    "NULL, NULL, NULL, NULL, NULL, NULL, NULL",
    "99999999999999999999999999999999999999, 4.9e-324, '0001-01-01', TIMESTAMP '0001-01-01 00:00:00', '1e400', 'b', 'yes'",
    "-100, 2.2250738585072014e-308, '9999-12-31', TIMESTAMP '9999-12-31 23:59:59', 'NaN', 'a', '1'",
    "-99999999999999999999999999999999999999, 0, 'not a date', TIMESTAMP '2000-01-01 00:00:00', '${env:HOME}', 'a', '0'",
    "7, CAST('-0.0' AS DOUBLE), '2024-99-99', TIMESTAMP '1970-01-01 00:00:00', ' ', 'b', NULL",
    "2147483647, 2e15, '2024-01-01', TIMESTAMP '2024-01-01 10:00:00', 'a\\\\b', 'a', 'true'",
];

/// A random expression generator over dpgate's row-level grammar.
struct Gen {
    rng: StdRng,
}

impl Gen {
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.rng.gen_range(0..xs.len())]
    }

    fn num_literal(&mut self) -> String {
        self.pick(&[
            "0",
            "1",
            "-1",
            "2",
            "3",
            "7",
            "0.5",
            "2.5",
            "-3.75",
            "1e-100",
            "1e-300",
            "1e100",
            "1e50",
            "1e18",
            "4e18",
            "1.5",
            "1e-20",
            "-0.5",
            "100000",
            "0.0",
            "1e-320",
            "9223372036854775807",
            // Spark reads these digits as a 32-bit INT.
            "2147483647",
            "1e15",
            "3e15",
        ])
        .to_string()
    }

    fn num(&mut self, depth: u32) -> String {
        if depth == 0 {
            return match self.rng.gen_range(0..4) {
                0 => self.num_literal(),
                1 | 2 => self.pick(&["n", "x"]).to_string(),
                _ => format!("length({})", self.text(0)),
            };
        }
        let d = depth - 1;
        match self.rng.gen_range(0..27) {
            0..=5 => {
                let op = self.pick(&["+", "-", "*", "/", "/", "%"]);
                format!("({} {op} {})", self.num(d), self.num(d))
            }
            6 => format!("(- {})", self.num(d)),
            7 => format!(
                "{}({})",
                self.pick(&["abs", "round", "floor", "ceil", "trunc", "sqrt", "sign"]),
                self.num(d)
            ),
            8 => format!(
                "{}({}, {})",
                self.pick(&["least", "greatest", "coalesce", "nullif"]),
                self.num(d),
                self.num(d)
            ),
            9 => format!(
                "CASE WHEN {} THEN {} ELSE {} END",
                self.boolean(d),
                self.num(d),
                self.num(d)
            ),
            10 => format!(
                "CAST({} AS {})",
                self.num(d),
                self.pick(&["int", "bigint", "float", "float8", "real", "numeric", "smallint"])
            ),
            11 => format!(
                "extract({} FROM {})",
                self.pick(&[
                    "year", "month", "day", "dow", "isodow", "doy", "hour", "minute", "second",
                    "epoch", "quarter", "week", "decade", "century", "isoyear",
                ]),
                self.date(d)
            ),
            12 => format!(
                "date_part('{}', {})",
                self.pick(&["year", "month", "epoch", "day"]),
                self.date(d)
            ),
            13 => format!(
                "width_bucket({}, {}, {}, {})",
                self.num(d),
                self.pick(&["0", "-1000", "1e-300", "5"]),
                self.pick(&["1000", "100", "1e300", "5.5"]),
                self.pick(&["1", "4", "10", "1000"])
            ),
            14 => format!(
                "round({}, {})",
                self.num(d),
                self.pick(&["0", "2", "-3", "20"])
            ),
            15 => format!("trunc({}, {})", self.num(d), self.pick(&["1", "-2"])),
            16 => format!("length({})", self.text(d)),
            17 => format!("CAST({} AS int)", self.pick(&["b", "(n > 3)"])),
            // Ties that the backend rounds its own way, and strings among
            // typed branches.
            18 => format!(
                "CAST(LEAST(GREATEST({}, {}), {}) AS int)",
                self.num(d),
                self.pick(&["0.5", "-0.5", "2.5", "1.5"]),
                self.pick(&["0.5", "2.5", "3.5"])
            ),
            19 => format!(
                "CASE WHEN {} THEN '{}' ELSE {} END",
                self.boolean(d),
                self.pick(&["abc", "1e400", "NaN", "3", "1.5"]),
                self.num(d)
            ),
            20 => format!("round(n, {})", self.pick(&["-1", "-2", "-5"])),
            _ => self.num(0),
        }
    }

    fn text(&mut self, depth: u32) -> String {
        if depth == 0 {
            return self.pick(&["s", "w", "'a'", "'%'", "''"]).to_string();
        }
        let d = depth - 1;
        match self.rng.gen_range(0..9) {
            0 => format!("{}({})", self.pick(&["lower", "upper"]), self.text(d)),
            1 => format!("({} || {})", self.text(d), self.text(d)),
            2 => format!("CAST({} AS text)", self.num(d)),
            3 => format!("CAST({} AS text)", self.date(d)),
            4 => format!("coalesce({}, {})", self.text(d), self.text(d)),
            5 => format!("CAST({} AS varchar(3))", self.text(d)),
            6 => "CAST(b AS text)".to_string(),
            _ => self.text(0),
        }
    }

    fn date(&mut self, depth: u32) -> String {
        if depth == 0 {
            return self
                .pick(&[
                    "d",
                    "ts",
                    "DATE '2024-02-29'",
                    "TIMESTAMP '1999-12-31 23:59:59'",
                ])
                .to_string();
        }
        let d = depth - 1;
        match self.rng.gen_range(0..6) {
            4 => format!(
                "CASE WHEN {} THEN '{}' ELSE {} END",
                self.boolean(d),
                self.pick(&["infinity", "5000000-01-01", "2024-02-31", "2024-01-01"]),
                self.date(d)
            ),
            5 => format!(
                "coalesce({}, '{}')",
                self.date(d),
                self.pick(&["-infinity", "0000-01-01", "1999-12-31 23:59:59"])
            ),
            0 => format!(
                "date_trunc('{}', {})",
                self.pick(&[
                    "year", "month", "week", "day", "hour", "quarter", "decade", "century"
                ]),
                self.date(d)
            ),
            1 => format!(
                "CAST({} AS {})",
                self.date(d),
                self.pick(&["date", "timestamp"])
            ),
            _ => self.date(0),
        }
    }

    fn boolean(&mut self, depth: u32) -> String {
        let d = depth.saturating_sub(1);
        match self.rng.gen_range(0..13) {
            0..=2 => format!(
                "{} {} {}",
                self.num(d),
                self.pick(&["=", "<>", "<", "<=", ">", ">="]),
                self.num(d)
            ),
            3 => format!("{} = {}", self.text(d), self.text(d)),
            4 => format!(
                "{} {} {}",
                self.date(d),
                self.pick(&["<", ">=", "="]),
                self.date(d)
            ),
            5 if depth > 0 => format!(
                "({} {} {})",
                self.boolean(d),
                self.pick(&["AND", "OR"]),
                self.boolean(d)
            ),
            6 if depth > 0 => format!("NOT ({})", self.boolean(d)),
            7 => format!("{} IS NULL", self.num(d)),
            8 => format!(
                "{} BETWEEN {} AND {}",
                self.num(d),
                self.num_literal(),
                self.num_literal()
            ),
            9 => format!(
                "{} {} '{}'",
                self.text(d),
                self.pick(&["LIKE", "ILIKE", "NOT LIKE"]),
                self.pick(&["a%", "%_%", "\\%", "", "%ü"])
            ),
            10 => format!(
                "{} IN ({}, {})",
                self.num(d),
                self.num_literal(),
                self.num_literal()
            ),
            // Literals of the wrong shape and comparisons with the unit.
            11 => self
                .pick(&[
                    "id = 'abc'",
                    "id IN (1, 'x', 2.5)",
                    "id <> 3",
                    "'7' = id",
                    "id = n",
                    "n = 'NaN'",
                    "x = '1e-400'",
                    "x > 'Infinity'",
                    "n = '1.5'",
                    "d = '2024-02-31'",
                    "ts < '2024-01-01 25:00'",
                    "d = '\u{3000}2024-01-01'",
                    "ts > '2024-01-01 10:00.5'",
                    "x = '\u{3000}nan'",
                    "x < ' -inf'",
                    "CASE WHEN n > 0 THEN ((0 - 2147483647) - 2) ELSE 0 END < 0",
                    "CASE WHEN n > 0 THEN trunc(x * 3e12, 2) ELSE 0 END > 0",
                    "d > DATE '2023-02-29'",
                    "b = 'maybe'",
                    "s = 12",
                ])
                .to_string(),
            _ => self.pick(&["b", "b IS TRUE", "b IS NOT FALSE"]).to_string(),
        }
    }

    fn query(&mut self) -> String {
        let depth = self.rng.gen_range(1..5);
        match self.rng.gen_range(0..6) {
            0 | 1 => format!("SELECT COUNT(*) FROM extremes WHERE {}", self.boolean(depth)),
            2 => format!(
                "SELECT SUM(LEAST(GREATEST({}, -1000), 1000)), AVG(LEAST(GREATEST({}, 0), 10)) FROM extremes",
                self.num(depth),
                self.num(depth)
            ),
            3 => format!(
                "SELECT {} AS k, COUNT(*) FROM extremes GROUP BY k",
                match self.rng.gen_range(0..3) {
                    0 => self.num(depth),
                    1 => self.text(depth),
                    _ => self.date(depth),
                }
            ),
            4 => format!(
                "SELECT PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY LEAST(GREATEST({}, -5), 5)) FROM extremes WHERE {}",
                self.num(depth),
                self.boolean(depth - 1)
            ),
            _ => format!(
                "SELECT COUNT(*) FILTER (WHERE {}), STDDEV(LEAST(GREATEST({}, 0), 1)) FROM extremes",
                self.boolean(depth),
                self.num(depth)
            ),
        }
    }
}

/// How many random queries each backend runs (override with
/// `DPGATE_TOTALITY_QUERIES` for a longer search).
fn query_count() -> usize {
    std::env::var("DPGATE_TOTALITY_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500)
}

fn base_toml(backend: &str, ledger: &std::path::Path) -> String {
    format!(
        "[backend]\n{backend}\n[ledger]\npath = \"{}\"\n[privacy]\ndelta = 1e-6\n[[users]]\nname = \"a\"\npassword = \"env:P\"\nepsilon_budget = 1\n{TABLE_TOML}",
        ledger.display()
    )
}

/// Random expression trees over extreme rows: zero backend errors on
/// PostgreSQL and SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_expressions_never_raise_on_extreme_rows() {
    let dir = tempdir();
    // PostgreSQL with every hostile value it can store.
    let db = empty_database("totality").await;
    let direct = connect_direct(&cluster().url(&db)).await;
    let mut sql = String::from(
        "CREATE TABLE extremes (id int, n int8, x float8, d date, ts timestamp, s text, w text, b bool);",
    );
    for (i, row) in PG_ROWS.iter().enumerate() {
        sql.push_str(&format!("INSERT INTO extremes VALUES ({}, {row});", i % 4));
    }
    direct.batch_execute(&sql).await.unwrap();
    let pg_config = Config::parse(
        &base_toml(
            &format!("url = \"{}\"", cluster().url(&db)),
            &dir.path().join("l1.sqlite"),
        ),
        &|_| Some("x".into()),
    )
    .unwrap();
    // SQLite, written directly, as a data owner's own file may be.
    let file = dir.path().join("extremes.db");
    {
        let c = rusqlite::Connection::open(&file).unwrap();
        c.execute_batch(
            "CREATE TABLE extremes (id INTEGER, n INTEGER, x REAL, d TEXT, ts TEXT, s TEXT, w TEXT, b INTEGER);",
        )
        .unwrap();
        for (i, row) in SQLITE_ROWS.iter().enumerate() {
            c.execute_batch(&format!("INSERT INTO extremes VALUES ({}, {row});", i % 4))
                .unwrap();
        }
    }
    let lite_config = Config::parse(
        &base_toml(
            &format!("sqlite = \"{}\"", file.display()),
            &dir.path().join("l2.sqlite"),
        ),
        &|_| Some("x".into()),
    )
    .unwrap();
    let pg = dpgate_backend::connect(&pg_config).await.unwrap();
    let lite = dpgate_backend::connect(&lite_config).await.unwrap();
    let count = query_count();
    let (ran, errors) = run_random(&[(&pg, &pg_config), (&lite, &lite_config)], count).await;
    assert!(
        ran >= count / 2,
        "only {ran} queries ran: the generator is mostly refused"
    );
    assert_none(ran, &errors);
}

/// The same search on Spark in ANSI mode, over a table whose Spark types
/// are looser than the declared ones.
#[cfg(feature = "spark")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_expressions_never_raise_on_extreme_spark_rows() {
    let dir = tempdir();
    let spark = spark::spark_session().await;
    let mut statements = vec![
        "CREATE DATABASE IF NOT EXISTS totality".to_string(),
        "DROP TABLE IF EXISTS totality.extremes".to_string(),
        "CREATE TABLE totality.extremes (id INT, n DECIMAL(38, 0), x DOUBLE, d STRING, ts TIMESTAMP, s STRING, w STRING, b STRING) USING parquet".to_string(),
    ];
    for (i, row) in SPARK_ROWS.iter().enumerate() {
        statements.push(format!(
            "INSERT INTO totality.extremes VALUES ({}, {row})",
            i % 4
        ));
    }
    spark.execute(&statements).await.unwrap();
    let toml = base_toml(
        &format!("spark = \"{}\"", spark::spark_url()),
        &dir.path().join("l.sqlite"),
    )
    .replace(
        "name = \"extremes\"\n",
        "name = \"extremes\"\nbackend_name = \"totality.extremes\"\n",
    );
    let config = Config::parse(&toml, &|_| Some("x".into())).unwrap();
    let backend = dpgate_backend::connect(&config).await.unwrap();
    // Each Spark query takes a tenth of a second or more: fewer of them.
    let count = std::env::var("DPGATE_TOTALITY_SPARK_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let (ran, errors) = run_random(&[(&backend, &config)], count).await;
    assert!(ran >= count / 2, "only {ran} queries ran");
    assert_none(ran, &errors);
}

/// Runs `count` random queries (seed `DPGATE_TOTALITY_SEED`, default 14)
/// on each backend; returns how many ran and the errors.
async fn run_random(
    backends: &[(&std::sync::Arc<dyn dpgate_backend::Backend>, &Config)],
    count: usize,
) -> (usize, Vec<String>) {
    let mut gen = Gen {
        rng: StdRng::seed_from_u64(
            std::env::var("DPGATE_TOTALITY_SEED")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(14),
        ),
    };
    let (mut ran, mut refused, mut errors) = (0usize, 0usize, Vec::new());
    for _ in 0..count {
        let text = gen.query();
        let Ok(Command::Private(q)) = classify(&text).map(|mut c| c.remove(0)) else {
            refused += 1;
            continue;
        };
        for (backend, config) in backends {
            let Ok(p) = plan(&q, config, 1.0) else {
                refused += 1;
                continue;
            };
            ran += 1;
            if let Err(e) = backend.fetch(&p).await {
                errors.push(format!(
                    "{:?}: {e:?}\n  query: {text}\n  backend SQL: {}",
                    backend.dialect(),
                    p.backend_sql
                ));
            }
        }
    }
    println!(
        "{ran} backend queries ran, {refused} plans refused, {} errors",
        errors.len()
    );
    (ran, errors)
}

fn assert_none(ran: usize, errors: &[String]) {
    assert!(
        errors.is_empty(),
        "{} of {ran} backend queries raised:\n{}",
        errors.len(),
        errors
            .iter()
            .take(15)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A unit far past the largest allowance, at the top of the widest range
/// summed as integers: its partial sum (4.3 million × (2³¹ − 1)) times
/// its allowance (1 000) is past bigint. An error there would tell
/// whether such a unit exists; PostgreSQL scales in numeric (exactly),
/// SQLite in floats, and neither raises.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unit_far_past_its_allowance_never_raises() {
    const ALLOWANCE: i64 = 1_000;
    const ROWS: i64 = 4_300_000;
    const MAX: i64 = i32::MAX as i64;
    let table = format!(
        "[[tables]]\nname = \"crowd\"\nprivacy_unit = \"id\"\nmax_rows_per_unit = {ALLOWANCE}\n\
         columns.v = {{ type = \"int\", lower = 0, upper = {MAX} }}\n"
    );
    let toml = |backend: String, ledger: &str| {
        format!(
            "[backend]\n{backend}\n[ledger]\npath = \"{ledger}\"\n[privacy]\ndelta = 1e-6\n\
             [[users]]\nname = \"a\"\npassword = \"env:P\"\nepsilon_budget = 1\n{table}"
        )
    };
    // Unit 1: ROWS rows at the top of the range; unit 2: three rows of 5.
    let fill = format!(
        "INSERT INTO crowd SELECT 1, {MAX} FROM generate_series(1, {ROWS}) AS g; \
         INSERT INTO crowd VALUES (2, 5), (2, 5), (2, 5);"
    );
    let dir = tempdir();
    let db = empty_database("crowd").await;
    let direct = connect_direct(&cluster().url(&db)).await;
    direct
        .batch_execute(&format!("CREATE TABLE crowd (id int, v int); {fill}"))
        .await
        .unwrap();
    let file = dir.path().join("crowd.db");
    rusqlite::Connection::open(&file)
        .unwrap()
        .execute_batch(&format!(
            "CREATE TABLE crowd (id INTEGER, v INTEGER); \
             INSERT INTO crowd WITH RECURSIVE g(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM g WHERE i < {ROWS}) \
             SELECT 1, {MAX} FROM g; INSERT INTO crowd VALUES (2, 5), (2, 5), (2, 5);"
        ))
        .unwrap();
    let parse = |text: String| Config::parse(&text, &|_| Some("x".into())).unwrap();
    let configs = [
        parse(toml(
            format!("url = \"{}\"", cluster().url(&db)),
            &dir.path().join("l1.sqlite").display().to_string(),
        )),
        parse(toml(
            format!("sqlite = \"{}\"", file.display()),
            &dir.path().join("l2.sqlite").display().to_string(),
        )),
    ];
    // Unit 1 keeps its allowance's worth, ALLOWANCE × MAX, exactly on
    // PostgreSQL; unit 2 adds 15.
    let expected = ALLOWANCE * MAX + 15;
    for config in &configs {
        let backend = dpgate_backend::connect(config).await.unwrap();
        for sql in [
            "SELECT SUM(v) FROM crowd",
            "SELECT COUNT(*), AVG(v) FROM crowd",
        ] {
            let Command::Private(q) = classify(sql).unwrap().remove(0) else {
                panic!("not private: {sql}")
            };
            let p = plan(&q, config, 1.0).unwrap();
            assert_eq!(p.bounding, dpgate_sql::Bounding::PreAggregated, "{sql}");
            let groups = backend
                .fetch(&p)
                .await
                .unwrap_or_else(|e| panic!("{:?}: {sql}: {e}", backend.dialect()));
            if sql.starts_with("SELECT SUM") {
                let raw = groups[0].values[0];
                match backend.dialect() {
                    dpgate_sql::Dialect::Postgres => assert_eq!(raw, expected),
                    // TOTAL is a float past 2⁵³ here: close, and never
                    // past the unit's bound.
                    _ => assert!((expected - 1000..=expected).contains(&raw), "{raw}"),
                }
            }
        }
    }
}

/// A column declared `int` but stored as `real` (float4): at the top of
/// a bound like 2³¹ − 1, float4 rounds past the bound, so a clamp whose
/// CASE is a float would hand on 2³¹ and a per-unit integer sum would
/// raise (an oracle for "some unit holds the top value", NaN included).
/// Every shape answers, and each unit's contribution stays within the
/// bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_float_column_declared_int_never_raises_at_its_bounds() {
    let dir = tempdir();
    let db = empty_database("float_as_int").await;
    connect_direct(&cluster().url(&db))
        .await
        .batch_execute(
            "CREATE TABLE t (uid int, up real, down real);
             INSERT INTO t VALUES (1, 2147483647, -2147483647), (2, 'NaN', '-Infinity'),
                                  (3, 5, -5), (4, 'Infinity', 'NaN');",
        )
        .await
        .unwrap();
    let config = Config::parse(
        &format!(
            "[backend]\nurl = \"{}\"\n[ledger]\npath = \"{}\"\n[privacy]\ndelta = 1e-6\n\
             [[users]]\nname = \"a\"\npassword = \"env:P\"\nepsilon_budget = 1\n\
             [[tables]]\nname = \"t\"\nprivacy_unit = \"uid\"\nmax_rows_per_unit = 3\n\
             columns.up = {{ type = \"int\", lower = 0, upper = 2147483647 }}\n\
             columns.down = {{ type = \"int\", lower = -2147483647, upper = 0 }}\n",
            cluster().url(&db),
            dir.path().join("l.sqlite").display()
        ),
        &|_| Some("x".into()),
    )
    .unwrap();
    let backend = dpgate_backend::connect(&config).await.unwrap();
    for sql in [
        "SELECT SUM(up), SUM(down) FROM t",
        "SELECT AVG(up), AVG(down) FROM t",
        "SELECT VARIANCE(up), MEDIAN(down) FROM t",
        "SELECT SUM(up) FROM t WHERE uid = 1",
    ] {
        let Command::Private(q) = classify(sql).unwrap().remove(0) else {
            panic!("not private: {sql}")
        };
        let p = plan(&q, &config, 1.0).unwrap();
        let groups = backend
            .fetch(&p)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}\n{}", p.backend_sql));
        if sql == "SELECT SUM(up), SUM(down) FROM t" {
            // Ups: units 1, 2 and 4 at the top (NaN and infinity clamp
            // there), unit 3 adds 5. Downs: units 1 and 2 at the bottom
            // (−infinity), unit 3 adds −5, unit 4's NaN lands on the top, 0.
            let top = 2_147_483_647i64;
            assert_eq!(
                groups[0].values,
                [3 * top + 5, -2 * top - 5],
                "{}",
                p.backend_sql
            );
        }
    }
}
