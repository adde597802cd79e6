//! Query shapes: grouping, domains, expressions, post-processing, joins.

use super::*;

fn plan_at(sql: &str, epsilon: f64) -> Plan {
    match classify(sql).unwrap().remove(0) {
        Command::Private(q) => plan(&q, &config(), epsilon).unwrap(),
        other => panic!("not private: {other:?}"),
    }
}

#[test]
fn declared_domains_release_every_key_and_nothing_else() {
    let p = try_plan("SELECT ward, COUNT(*) FROM visits GROUP BY ward").unwrap();
    let crate::Grouping::Domain { groups, .. } = &p.grouping else {
        panic!("{:?}", p.grouping)
    };
    assert_eq!(
        groups,
        &[vec![Some("A".to_string())], vec![Some("B".into())]]
    );
    assert_eq!(p.cost().delta, 0.0);
    let raw = vec![
        crate::RawGroup {
            keys: vec![Some("Z".into())],
            values: vec![7],
        },
        crate::RawGroup {
            keys: vec![Some("A".into())],
            values: vec![3],
        },
    ];
    let arranged = p.arrange(raw);
    // B appears with zero rows; Z, outside the domain, never does.
    assert_eq!(arranged.len(), 2);
    assert_eq!(arranged[0].values, [3]);
    assert_eq!(arranged[1].values, [0]);
    // WHERE ward = 'A' narrows the domain.
    let p = try_plan("SELECT ward, COUNT(*) FROM visits WHERE ward = 'A' GROUP BY ward").unwrap();
    assert!(matches!(&p.grouping, crate::Grouping::Domain { groups, .. } if groups.len() == 1));
    // CASE bins and width_bucket have domains of their own.
    let p = try_plan(
        "SELECT CASE WHEN age < 18 THEN 'child' ELSE 'adult' END AS band, width_bucket(age, 0, 100, 4) AS b, COUNT(*) FROM visits GROUP BY 1, 2",
    )
    .unwrap();
    assert!(matches!(&p.grouping, crate::Grouping::Domain { groups, .. } if groups.len() == 2 * 6));
}

#[test]
fn undeclared_keys_pass_partition_selection() {
    let p = try_plan("SELECT age, SUM(cost) FROM visits GROUP BY age").unwrap();
    let crate::Grouping::Selection { .. } = p.grouping else {
        panic!("{:?}", p.grouping)
    };
    let chosen = p.release.selection.as_ref().expect("keys are selected");
    let (count, threshold) = (chosen.count, chosen.selection.threshold());
    // The selection count is a hidden COUNT(*) with the same share of ε.
    assert_eq!(p.release.measurements.len(), 2);
    assert_eq!(p.release.measurements[count].noise.sensitivity(), 5);
    // A unit alone has at most 5 rows in a key: τ must sit well above.
    assert!(threshold > 5 + 10, "{threshold}");
    assert!(p.cost().delta > 0.0);
}

#[test]
fn aggregated_expressions_are_bounded_by_interval_arithmetic() {
    for (sql, sensitivity) in [
        ("SELECT SUM(age * 2 + 1) FROM visits", 5 * 221),
        ("SELECT SUM(age - 200) FROM visits", 5 * 200),
        (
            "SELECT SUM(CASE WHEN age > 50 THEN 1 ELSE 0 END) FROM visits",
            5,
        ),
        ("SELECT SUM(age) FROM visits WHERE age < 40", 5 * 39),
        (
            "SELECT SUM(age) FROM visits WHERE age BETWEEN 10 AND 20 AND age <> 3",
            5 * 20,
        ),
        ("SELECT SUM(age / 10) FROM visits", 5 * 11),
        ("SELECT SUM(age % 7) FROM visits", 5 * 7),
        ("SELECT SUM(ABS(score)) FROM events", 10),
        ("SELECT SUM(GREATEST(score, 0)) FROM events", 3),
        ("SELECT SUM(COALESCE(score, 100)) FROM events", 100),
        (
            "SELECT SUM(score) FROM (SELECT score FROM events WHERE score >= 0) s",
            3,
        ),
    ] {
        let p = try_plan(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(
            p.release.measurements[0].noise.sensitivity(),
            sensitivity,
            "{sql}"
        );
    }
    // Division by a range containing zero is guarded and unbounded for
    // reals: refused unless clamped.
    assert_eq!(refused("SELECT SUM(cost / age) FROM visits").code, "0A000");
    let p = try_plan("SELECT SUM(LEAST(GREATEST(cost / age, 0), 10)) FROM visits").unwrap();
    assert!(
        p.backend_sql.contains("CASE WHEN abs("),
        "{}",
        p.backend_sql
    );
    assert!(p.backend_sql.contains("NULLIF") || p.backend_sql.contains("abs("));
}

#[test]
fn post_processing_runs_on_noisy_groups() {
    // ε so large the noise is zero with overwhelming probability.
    let p = plan_at(
        "SELECT ward, COUNT(*) AS n, SUM(age) / COUNT(*) AS m FROM visits GROUP BY ward \
         HAVING COUNT(*) > 7 ORDER BY n DESC LIMIT 1",
        1e9,
    );
    let raw = vec![
        crate::RawGroup {
            keys: vec![Some("A".into())],
            values: vec![10, 300],
        },
        crate::RawGroup {
            keys: vec![Some("B".into())],
            values: vec![20, 200],
        },
    ];
    let groups = p.arrange(raw);
    let mut rng = dpgate_dp::secure_rng();
    let draws: Vec<_> = groups
        .iter()
        .map(|_| p.release.draw_noise(&mut rng))
        .collect();
    let answer = p.finish(&groups, &draws, 0.95);
    use crate::types::Cell::*;
    assert_eq!(answer.rows, vec![vec![Text("B".into()), Int(20), Int(10)]]);
    assert!(answer.half_widths[0][1].is_some() && answer.half_widths[0][2].is_none());
    // The backend query never sees the analyst's HAVING, ORDER BY or
    // LIMIT (its own HAVING finds the units with more than 5 rows).
    for word in ["> 7", "ORDER BY n", "LIMIT"] {
        assert!(!p.backend_sql.contains(word), "{}", p.backend_sql);
    }
}

#[test]
fn joins_need_the_shared_unit_or_a_public_table() {
    let p = try_plan("SELECT COUNT(*) FROM visits v JOIN wards w ON v.ward = w.ward").unwrap();
    assert_eq!(p.release.measurements[0].noise.sensitivity(), 5);
    assert!(p.backend_sql.contains("\"v\".\"patient_id\" AS __dp_u"));
    let p = try_plan("SELECT COUNT(*) FROM visits a JOIN visits b ON a.patient_id = b.patient_id")
        .unwrap();
    // Both sides keep 5 rows per unit: the join keeps 25.
    assert_eq!(p.release.measurements[0].noise.sensitivity(), 25);
    assert_eq!(
        refused("SELECT COUNT(*) FROM visits a JOIN visits b ON a.age = b.age").code,
        "0A000"
    );
    assert_eq!(
        refused("SELECT COUNT(*) FROM visits JOIN events ON true").code,
        "0A000"
    );
    assert_eq!(
        refused("SELECT COUNT(*) FROM wards w LEFT JOIN visits v ON v.ward = w.ward").code,
        "0A000"
    );
}

/// A CTE body sees only the CTEs before it: naming itself means the table,
/// and two CTEs that name each other cannot loop.
#[test]
fn ctes_cannot_recurse_through_their_names() {
    let p = try_plan("WITH visits AS (SELECT * FROM visits) SELECT COUNT(*) FROM visits").unwrap();
    assert!(p.backend_sql.contains("\"visits\""), "{}", p.backend_sql);
    let e = refused("WITH a AS (SELECT * FROM b), b AS (SELECT * FROM a) SELECT COUNT(*) FROM a");
    assert_eq!(e.code, "42P01", "{e}");
    let nested = "WITH v AS (WITH v AS (SELECT * FROM v) SELECT * FROM v) SELECT COUNT(*) FROM v";
    assert_eq!(refused(nested).code, "42P01");
}

/// Fan-out is bounded before resolution: CTEs that reuse each other
/// cannot multiply the work, and joins cannot multiply a person's rows
/// beyond the stated limit.
#[test]
fn fan_out_is_bounded() {
    let mut sql = String::from("WITH c0 AS (SELECT * FROM visits)");
    for i in 1..40 {
        let p = i - 1;
        sql.push_str(&format!(
            ", c{i} AS (SELECT a.age FROM c{p} a JOIN c{p} b ON a.patient_id = b.patient_id)"
        ));
    }
    sql.push_str(" SELECT COUNT(*) FROM c39");
    let started = std::time::Instant::now();
    assert_eq!(refused(&sql).code, "54001");
    assert!(started.elapsed().as_secs() < 5);
    let mut chain = String::from("SELECT COUNT(*) FROM visits v0");
    for i in 1..22 {
        chain.push_str(&format!(
            " JOIN visits v{i} ON v0.patient_id = v{i}.patient_id"
        ));
    }
    assert_eq!(refused(&chain).code, "54001");
    // 5 · 5 · 5 rows per person is within the limit; 5⁵ is not.
    let join = |n: usize| {
        let mut s = String::from("SELECT COUNT(*) FROM visits v0");
        for i in 1..n {
            s.push_str(&format!(
                " JOIN visits v{i} ON v0.patient_id = v{i}.patient_id"
            ));
        }
        s
    };
    let three = try_plan(&join(3)).unwrap();
    assert_eq!(sensitivities(&three), [125]);
    // Each private table is bounded per person before it is joined.
    assert_eq!(three.backend_sql.matches("__dp_rn_table\" <= 5").count(), 3);
    assert_eq!(refused(&join(5)).code, "54001");
    // A single table is bounded once, after its filter.
    let one = try_plan("SELECT COUNT(*) FROM visits WHERE age > 3").unwrap();
    assert!(!one.backend_sql.contains("__dp_rn_table"));
}

/// The deepest expressions the parser lets through plan without
/// exhausting an ordinary thread's stack.
#[test]
fn the_deepest_accepted_expressions_plan() {
    let terms = vec!["age"; 120].join(" + ");
    let p = try_plan(&format!(
        "SELECT SUM(LEAST({terms}, 100)) FROM visits WHERE {terms} > 3"
    ));
    assert!(p.is_ok(), "{p:?}");
    let parens = format!("{}age{}", "(".repeat(25), ")".repeat(25));
    assert!(try_plan(&format!("SELECT SUM({parens}) FROM visits")).is_ok());
}

/// Noise beyond the stated scale limit is refused before any charge,
/// never added with saturation.
#[test]
fn huge_sensitivities_are_refused() {
    let e = refused("SELECT SUM(age * 10000000000000000) FROM visits");
    assert_eq!(e.code, "54000", "{e}");
    // AVG sums values centred on their range on a grid relative to it, so
    // a wide integer range is measured, not refused.
    assert!(try_plan("SELECT AVG(age * 100000000000000) FROM visits").is_ok());
    // Real-valued sums are measured on a grid relative to their bound, so
    // their sensitivity in grid units stays small; unbounded ones are
    // refused by the expression checker.
    assert!(try_plan("SELECT SUM(cost * 1e90) FROM visits").is_ok());
    assert_eq!(
        refused("SELECT SUM(cost * 1e300) FROM visits").code,
        "0A000"
    );
    assert!(try_plan("SELECT SUM(age * 1000) FROM visits").is_ok());
}

/// Each backend group is released at most once per query, whatever the
/// spelling of its keys: domain entries are canonical and distinct.
#[test]
fn each_backend_group_is_released_once() {
    let ones: Vec<String> = (1..=100)
        .map(|i| format!("WHEN FALSE THEN {}1", "0".repeat(i)))
        .collect();
    let k = format!("CASE {} ELSE 1 END", ones.join(" "));
    let nulls = "NULLIF(NULLIF(NULLIF(NULLIF(ward, 'x'), 'y'), 'z'), 'w')";
    let cases = [
        (format!("SELECT {k} AS k, COUNT(*) FROM visits GROUP BY k"), vec!["1"]),
        (
            format!("SELECT {k} AS a, {k} AS b, COUNT(*) FROM visits GROUP BY a, b"),
            vec!["1", "1"],
        ),
        (
            format!("SELECT CAST({k} AS text) AS k, COUNT(*) FROM visits GROUP BY k"),
            vec!["1"],
        ),
        (
            "SELECT CASE WHEN FALSE THEN 1.0 WHEN FALSE THEN 1.00 WHEN FALSE THEN -0.0 ELSE 0.0 END AS k, COUNT(*) FROM visits GROUP BY k".to_string(),
            vec!["0"],
        ),
        (format!("SELECT {nulls} AS k, COUNT(*) FROM visits GROUP BY k"), vec!["A"]),
    ];
    for (sql, backend_key) in cases {
        let p = try_plan(&sql).unwrap();
        let crate::Grouping::Domain { keys, groups } = &p.grouping else {
            panic!("{sql}: {:?}", p.grouping)
        };
        // Every backend row (here: the one that all the spellings mean,
        // and NULL) matches at most one released group.
        for probe in [
            backend_key
                .iter()
                .map(|k| Some(k.to_string()))
                .collect::<Vec<_>>(),
            vec![None; keys.len()],
        ] {
            let canon = |g: &[Option<String>]| -> Vec<Option<String>> {
                g.iter()
                    .zip(keys)
                    .map(|(v, t)| crate::types::canonical_key(v.as_deref(), *t))
                    .collect()
            };
            let matches = groups.iter().filter(|g| canon(g) == canon(&probe)).count();
            assert!(matches <= 1, "{sql}: {probe:?} released {matches} times");
        }
        let arranged = p.arrange(vec![crate::RawGroup {
            keys: backend_key.iter().map(|k| Some(k.to_string())).collect(),
            values: vec![7],
        }]);
        let with_data = arranged.iter().filter(|g| g.values == [7]).count();
        assert_eq!(with_data, 1, "{sql}: {arranged:?}");
        assert!(groups.len() <= 3, "{sql}: {} groups", groups.len());
    }
}

/// Whatever would fail in the backend on every row is refused before the
/// charge: malformed constants, samples, and plans beyond backend limits.
#[test]
fn constant_failures_are_refused_before_the_charge() {
    for (sql, code) in [
        ("SELECT COUNT(*) FROM visits WHERE age = 'NaN'", "42804"),
        ("SELECT COUNT(*) FROM visits WHERE age = '1.5'", "42804"),
        ("SELECT COUNT(*) FROM visits WHERE cost = '1e-400'", "42804"),
        ("SELECT COUNT(*) FROM visits WHERE cost = '1e400'", "42804"),
        (
            "SELECT COUNT(*) FROM visits WHERE ward = DATE '2024-02-31'",
            "42804",
        ),
        (
            "SELECT COUNT(*) FROM visits TABLESAMPLE BERNOULLI (10)",
            "0A000",
        ),
        ("SELECT COUNT(*) FROM visits WHERE patient_id < 10", "0A000"),
    ] {
        let e = refused(sql);
        assert_eq!(e.code, code, "{sql}: {e}");
    }
    let many = (1..=30)
        .map(|i| format!("PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY age + {i})"))
        .collect::<Vec<_>>()
        .join(", ");
    let e = refused(&format!("SELECT {many} FROM visits"));
    assert_eq!(e.code, "54000", "{e}");
    assert!(try_plan("SELECT COUNT(*) FROM visits WHERE cost = 'NaN' OR cost > '1e3'").is_ok());
    // The privacy unit compares as text, which no stored value can fail.
    let p =
        try_plan("SELECT COUNT(*) FROM visits WHERE patient_id = 'abc' OR patient_id IN (4, 5)")
            .unwrap();
    assert!(
        p.backend_sql
            .contains("CAST(\"visits\".\"patient_id\" AS text) = 'abc'"),
        "{}",
        p.backend_sql
    );
}

/// The one rule (`Bounding::choose`): no bounding where the schema proves
/// one row per unit, pre-aggregation where every measurement adds up over
/// units, row sampling where one does not; sensitivities are the same
/// whichever rewrite runs.
#[test]
fn the_bounding_rewrite_follows_one_rule() {
    use crate::plan::Bounding;
    let bounding = |sql: &str| try_plan(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    for sql in [
        "SELECT COUNT(*), AVG(birth_year) FROM patients",
        "SELECT COUNT(*), SUM(score) FROM events",
        "SELECT COUNT(*), AVG(p.birth_year), SUM(i.premium) FROM patients p JOIN insurance i ON p.patient_id = i.patient_id",
        "SELECT COUNT(DISTINCT patient_id) FROM patients",
    ] {
        let p = bounding(sql);
        assert_eq!(p.bounding, Bounding::None, "{sql}");
        assert!(!p.backend_sql.contains("__dp_u") && !p.backend_sql.contains("ROW_NUMBER"));
    }
    // One row per unit: COUNT(*) moves by 1, SUM by the largest |bound|.
    let p = bounding("SELECT COUNT(*), SUM(birth_year) FROM patients");
    assert_eq!(sensitivities(&p), [1, 2025]);
    for sql in [
        "SELECT COUNT(*), SUM(age), AVG(cost), VARIANCE(stay) FROM visits",
        "SELECT VARIANCE(age), COUNT(*) FILTER (WHERE ward = 'A') FROM visits",
        "SELECT COUNT(DISTINCT patient_id) FROM visits",
        // A public side may repeat rows, even after private tables were
        // cut and joined on the unit.
        "SELECT COUNT(*) FROM patients p JOIN wards w ON true",
        "SELECT COUNT(*) FROM visits v JOIN patients p ON v.patient_id = p.patient_id JOIN wards w ON v.ward = w.ward",
    ] {
        let p = bounding(sql);
        assert_eq!(p.bounding, Bounding::PreAggregated, "{sql}");
        assert!(
            p.backend_sql.contains("GROUP BY __dp_u"),
            "{}",
            p.backend_sql
        );
        assert!(!p
            .backend_sql
            .contains("ROW_NUMBER() OVER (PARTITION BY \"v"));
    }
    // Private tables each cut to their bound per unit, then joined on the
    // unit (also inside a row-level subquery, and a self-join): the joined
    // rows are bounded already, so no step follows the join.
    for (sql, sens) in [
        (
            "SELECT COUNT(*) FROM patients p JOIN visits v ON p.patient_id = v.patient_id",
            vec![5],
        ),
        (
            "SELECT ward, COUNT(*) FROM (SELECT v.ward FROM visits v JOIN patients p USING (patient_id) WHERE p.birth_year > 1950) s GROUP BY ward",
            vec![5],
        ),
        (
            "SELECT COUNT(*) FROM visits a LEFT JOIN visits b ON a.patient_id = b.patient_id",
            vec![25],
        ),
    ] {
        let p = bounding(sql);
        assert_eq!(p.bounding, Bounding::Tables, "{sql}");
        assert!(
            p.backend_sql
                .contains("ROW_NUMBER() OVER (PARTITION BY \"patient_id\"")
                && !p.backend_sql.contains("GROUP BY __dp_u")
                && !p.backend_sql.contains("__dp_w")
                && !p.backend_sql.contains("__dp_rn <="),
            "{}",
            p.backend_sql
        );
        assert_eq!(sensitivities(&p)[..1], sens[..], "{sql}");
    }
    // GROUP BY with few rows per unit (k = 5) samples rows; with many
    // (k ≥ 8) it shares each unit's allowance over its groups.
    let p = bounding("SELECT ward, COUNT(*) FROM visits GROUP BY ward");
    assert_eq!(p.bounding, Bounding::RowSampled);
    let many = CONFIG.replace("max_rows_per_unit = 5", "max_rows_per_unit = 8");
    let config = dpgate_config::Config::parse(&many, &|_| Some("x".into())).unwrap();
    let Command::Private(q) = classify("SELECT ward, COUNT(*) FROM visits GROUP BY ward")
        .unwrap()
        .remove(0)
    else {
        panic!()
    };
    let p = plan(&q, &config, 1.0).unwrap();
    assert_eq!(p.bounding, Bounding::PreAggregated);
    assert!(p.backend_sql.contains("ORDER BY __dp_r DESC, random()"));
    assert!(p.backend_sql.contains("WHERE __dp_w > 0"));
    // A percentile's histogram keeps rows (bins scaled one by one would
    // lose a unit whose rows spread over many bins).
    let p = bounding("SELECT MEDIAN(age), COUNT(*) FROM visits");
    assert_eq!(p.bounding, Bounding::RowSampled);
    let p = bounding("SELECT COUNT(DISTINCT age), SUM(age) FROM visits");
    assert_eq!(p.bounding, Bounding::RowSampled);
    assert!(p.backend_sql.contains("ROW_NUMBER() OVER (PARTITION BY"));
    assert_eq!(sensitivities(&p), [5, 5 * 110]);
    // EXPLAIN names the rewrite.
    let lines = bounding("SELECT COUNT(*) FROM visits").explain_lines(0.95);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  Bounding: per-unit pre-aggregation")),
        "{lines:?}"
    );
    // A row-level table has no unit to join on.
    assert_eq!(
        refused("SELECT COUNT(*) FROM events e JOIN patients p ON true").code,
        "0A000"
    );
}
