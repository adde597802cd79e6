//! Grammar-aware SQL: the fuzzer's bytes choose productions of dpgate's
//! query grammar (aggregates, expressions, GROUP BY, joins, subqueries,
//! CTEs, HAVING, ORDER BY, LIMIT), so most inputs reach the planner and
//! post-processing rather than stopping at the parser.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

/// Reads choices from the input; zeros when it runs out.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn next(&mut self, n: usize) -> usize {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b as usize % n
            }
            None => 0,
        }
    }

    fn pick<'s>(&mut self, xs: &[&'s str]) -> &'s str {
        xs[self.next(xs.len())]
    }
}

fn num(c: &mut Choices, depth: u32) -> String {
    if depth == 0 {
        return c
            .pick(&[
                "age",
                "cost",
                "v.age",
                "p.birth_year",
                "1",
                "0",
                "2.5",
                "-3",
                "1e-100",
                "1e50",
                "NULL",
                "$1",
                "score",
            ])
            .to_string();
    }
    let d = depth - 1;
    match c.next(12) {
        0..=3 => format!(
            "({} {} {})",
            num(c, d),
            c.pick(&["+", "-", "*", "/", "%"]),
            num(c, d)
        ),
        4 => format!(
            "{}({})",
            c.pick(&["abs", "round", "floor", "ceil", "sqrt", "sign", "trunc"]),
            num(c, d)
        ),
        5 => format!(
            "{}({}, {})",
            c.pick(&["least", "greatest", "coalesce", "nullif"]),
            num(c, d),
            num(c, d)
        ),
        6 => format!(
            "CASE WHEN {} THEN {} ELSE {} END",
            boolean(c, d),
            num(c, d),
            num(c, d)
        ),
        7 => format!(
            "CAST({} AS {})",
            num(c, d),
            c.pick(&["int", "float", "numeric", "text"])
        ),
        8 => format!(
            "extract({} FROM {})",
            c.pick(&["year", "month", "dow", "hour", "epoch"]),
            c.pick(&["visit_date", "at"])
        ),
        9 => format!(
            "width_bucket({}, 0, 100, {})",
            num(c, d),
            c.pick(&["4", "10", "0"])
        ),
        _ => num(c, 0),
    }
}

fn boolean(c: &mut Choices, depth: u32) -> String {
    let d = depth.saturating_sub(1);
    match c.next(8) {
        0 | 1 => format!(
            "{} {} {}",
            num(c, d),
            c.pick(&["=", "<", ">=", "<>"]),
            num(c, d)
        ),
        2 if depth > 0 => format!(
            "({} {} {})",
            boolean(c, d),
            c.pick(&["AND", "OR"]),
            boolean(c, d)
        ),
        3 => format!(
            "ward {} ({})",
            c.pick(&["IN", "NOT IN"]),
            c.pick(&["'A'", "'A', 'B'", "NULL"])
        ),
        4 => format!(
            "diagnosis {} '{}'",
            c.pick(&["LIKE", "ILIKE"]),
            c.pick(&["a%", "\\", "%_"])
        ),
        5 => format!("{} IS {}", num(c, d), c.pick(&["NULL", "NOT NULL"])),
        6 => format!(
            "visit_date {} '{}'",
            c.pick(&["<", ">="]),
            c.pick(&["2024-01-01", "2024-02-31", "x"])
        ),
        _ => c
            .pick(&["urgent", "NOT urgent", "patient_id = 'x'", "TRUE"])
            .to_string(),
    }
}

fn aggregate(c: &mut Choices, depth: u32) -> String {
    match c.next(9) {
        0 => "COUNT(*)".into(),
        1 => format!("COUNT(DISTINCT {})", c.pick(&["patient_id", "ward", "age"])),
        2 => format!("SUM({})", num(c, depth)),
        3 => format!("AVG({})", num(c, depth)),
        4 => format!(
            "{}({})",
            c.pick(&["VARIANCE", "STDDEV", "VAR_POP"]),
            num(c, depth)
        ),
        5 => format!(
            "PERCENTILE_CONT({}) WITHIN GROUP (ORDER BY {})",
            c.pick(&["0.5", "0.9", "2"]),
            num(c, depth)
        ),
        6 => format!("COUNT(*) FILTER (WHERE {})", boolean(c, depth)),
        7 => format!("MEDIAN({})", num(c, depth)),
        _ => format!(
            "{}({})",
            c.pick(&["MAX", "MIN", "SUM"]),
            c.pick(&["ward", "patient_id", "cost"])
        ),
    }
}

fn from(c: &mut Choices, depth: u32) -> String {
    match c.next(7) {
        0 | 1 => "visits".into(),
        2 => "visits v JOIN patients p ON v.patient_id = p.patient_id".into(),
        3 => "visits v JOIN wards w ON v.ward = w.ward".into(),
        4 if depth > 0 => format!(
            "(SELECT * FROM {} WHERE {}) AS s",
            from(c, depth - 1),
            boolean(c, 1)
        ),
        5 => "events".into(),
        _ => c
            .pick(&[
                "visits TABLESAMPLE BERNOULLI (5)",
                "visits, patients",
                "secrets",
            ])
            .to_string(),
    }
}

fn query(c: &mut Choices) -> String {
    let depth = 1 + c.next(4) as u32;
    let mut items = vec![aggregate(c, depth)];
    let mut group = Vec::new();
    for _ in 0..c.next(3) {
        let key = match c.next(5) {
            0 => "ward".to_string(),
            1 => format!("CASE WHEN {} THEN 'a' ELSE 'b' END", boolean(c, 1)),
            2 => format!("width_bucket(age, 0, 110, {})", c.pick(&["4", "11"])),
            3 => "diagnosis".into(),
            _ => num(c, 1),
        };
        group.push(key.clone());
        items.push(key);
        items.push(aggregate(c, depth));
    }
    let mut sql = String::new();
    if c.next(4) == 0 {
        sql.push_str("WITH c AS (SELECT * FROM visits WHERE age > 3) ");
    }
    sql.push_str(&format!("SELECT {} FROM {}", items.join(", "), from(c, 2)));
    if c.next(2) == 0 {
        sql.push_str(&format!(" WHERE {}", boolean(c, depth)));
    }
    if !group.is_empty() {
        sql.push_str(&format!(" GROUP BY {}", group.join(", ")));
        if c.next(2) == 0 {
            sql.push_str(&format!(" HAVING {} > {}", aggregate(c, 1), num(c, 0)));
        }
    }
    if c.next(3) == 0 {
        sql.push_str(&format!(
            " ORDER BY {} {}",
            c.pick(&["1", "2", "COUNT(*)"]),
            c.pick(&["", "DESC", "NULLS FIRST"])
        ));
    }
    if c.next(3) == 0 {
        sql.push_str(&format!(
            " LIMIT {}",
            c.pick(&["0", "1", "18446744073709551615", "-1"])
        ));
    }
    if c.next(8) == 0 {
        sql = format!("EXPLAIN {sql}");
    }
    sql
}

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static CONFIG: dpgate_config::Config = common::config();
    }
    let sql = query(&mut Choices(data));
    CONFIG.with(|c| common::front_end(&sql, c));
});
