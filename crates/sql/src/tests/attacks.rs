//! Bounded collectors and the attack reviews' findings.

use super::*;

/// The collector keeps only what can be released: domain keys, and at
/// most `max_groups` groups that passed selection (then it breaks).
#[test]
fn collectors_keep_answers_bounded() {
    use crate::collect::GroupSink;
    let group = |k: &str, v: i64| crate::RawGroup {
        keys: vec![Some(k.into())],
        values: vec![v, v],
    };
    let p = try_plan("SELECT age, SUM(cost) FROM visits GROUP BY age").unwrap();
    let mut c = p.collector(10);
    let mut pushed = 0;
    for i in 0..1000 {
        pushed += 1;
        // Counts far above τ: every group passes.
        if c.push(group(&format!("{i:04}"), 1_000_000)).is_break() {
            break;
        }
    }
    assert_eq!(pushed, 11);
    let kept = c.finish();
    assert!(kept.truncated);
    assert_eq!(kept.groups.len(), 10);
    assert_eq!(kept.draws.len(), 10);
    assert_eq!(kept.groups[9].keys, [Some("0009".to_string())]);
    // Groups below τ are dropped as they arrive.
    let mut c = p.collector(10);
    for i in 0..1000 {
        assert!(c.push(group(&i.to_string(), 0)).is_continue());
    }
    let kept = c.finish();
    assert!(kept.groups.len() <= 1 && !kept.truncated);
    // Keys outside a declared domain are never kept.
    let p = try_plan("SELECT ward, COUNT(*) FROM visits GROUP BY ward").unwrap();
    let mut c = p.collector(10);
    for i in 0..10_000 {
        let _ = c.push(crate::RawGroup {
            keys: vec![Some(format!("undeclared {i}"))],
            values: vec![1],
        });
    }
    let _ = c.push(crate::RawGroup {
        keys: vec![Some("A".into())],
        values: vec![7],
    });
    let kept = c.finish();
    assert_eq!(kept.groups.len(), 2, "the domain A, B in full");
    assert_eq!(kept.groups[0].values, [7]);
    // Selection plans ask the backend for keys in order.
    let p = try_plan("SELECT age, COUNT(*) FROM visits GROUP BY age").unwrap();
    assert!(
        p.backend_sql
            .ends_with("GROUP BY __dp_k0 ORDER BY __dp_k0 COLLATE \"C\" NULLS FIRST"),
        "{}",
        p.backend_sql
    );
}

/// Findings of the attack review of these fixes, each a way to make a
/// backend expression raise for one row, or to exhaust memory.
#[test]
fn attack_review_findings_stay_closed() {
    // PostgreSQL rounds a float cast half to even (0.5 → 0): the divisor's
    // range must hold 0, so the division is guarded.
    let p = try_plan("SELECT COUNT(*) FROM visits WHERE (CASE WHEN patient_id = '42' AND age <= 40 THEN age / CAST(LEAST(GREATEST(cost, 0.5), 0.5) AS int) ELSE 0 END) = 0").unwrap();
    assert!(p.backend_sql.contains("NULLIF("), "{}", p.backend_sql);
    // A product flushed to 0 may be 0: dividing by it is guarded too.
    let p =
        try_plan("SELECT COUNT(*) FROM visits WHERE 1e-100 / (GREATEST(cost, 1e-20) * 1e-100) > 1")
            .unwrap();
    assert!(
        p.backend_sql.contains("CASE WHEN abs("),
        "{}",
        p.backend_sql
    );
    // Untyped strings among typed CASE/COALESCE/LEAST branches are checked.
    for sql in [
        "SELECT COUNT(*) FROM visits WHERE CASE WHEN age > 3 THEN 'abc' ELSE age END > 0",
        "SELECT COUNT(*) FROM visits WHERE COALESCE(age, 'x') > 0",
        "SELECT COUNT(*) FROM visits WHERE LEAST(cost, '1e400') > 0",
    ] {
        assert_eq!(refused(sql).code, "42804", "{sql}");
    }
    assert!(try_plan("SELECT COUNT(*) FROM visits WHERE COALESCE(age, '3') > 0").is_ok());
    // The smallest bigint, bound as a parameter, negated.
    let Command::Private(mut q) =
        classify("SELECT COUNT(*) FROM visits WHERE LEAST(-$1, age) * 2 = 0")
            .unwrap()
            .remove(0)
    else {
        panic!()
    };
    bind_parameters(&mut q, &[Cell::Int(i64::MIN)]).unwrap();
    if let Ok(p) = plan(&q, &config(), 1.0) {
        assert!(
            !p.backend_sql.contains("-9223372036854775808) * 2"),
            "{}",
            p.backend_sql
        );
    }
    // Written as text, the smallest bigint is a float literal: no overflow.
    assert!(try_plan("SELECT COUNT(*) FROM visits WHERE age > -(-9223372036854775808)").is_ok());
    // $n beyond the protocol's 65 535 parameters allocates nothing.
    let Command::Private(q) = classify("SELECT COUNT(*) FROM visits WHERE age = $1000000000000")
        .unwrap()
        .remove(0)
    else {
        panic!()
    };
    assert!(parameter_types(&q, &config()).is_empty());
    assert!(plan(&q, &config(), 1.0).is_err());
    // Work per answer is bounded before the charge.
    let many = (0..24)
        .map(|i| format!("PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY cost + {i})"))
        .collect::<Vec<_>>()
        .join(", ");
    let e = refused(&format!(
        "SELECT width_bucket(age, 0, 110, 9998) AS b, {many} FROM visits GROUP BY 1"
    ));
    assert_eq!(e.code, "54000", "{e}");
}

/// Declaring the privacy unit under `columns` too (for its type) keeps it
/// one column, the unit: queries that name it plan as before.
#[test]
fn unit_declared_as_a_column_is_one_column() {
    let text = CONFIG.replace(
        "max_rows_per_unit = 5\n",
        "max_rows_per_unit = 5\ncolumns.patient_id = { type = \"int\" }\n",
    );
    let config = Config::parse(&text, &|_| Some("x".into())).unwrap();
    let plan_with = |sql: &str| match classify(sql).unwrap().remove(0) {
        Command::Private(q) => plan(&q, &config, 1.0),
        other => panic!("not private: {other:?}"),
    };
    let p = plan_with("SELECT COUNT(DISTINCT patient_id) FROM visits WHERE age > 3").unwrap();
    assert_eq!(sensitivities(&p), [1]);
    assert!(plan_with("SELECT COUNT(*) FROM visits WHERE patient_id = 7").is_ok());
    let e = plan_with("SELECT patient_id, COUNT(*) FROM visits GROUP BY patient_id").unwrap_err();
    assert_eq!(e.code, "42501", "{e:?}");
    // Bounds or values on the unit would publish facts about who is in the data.
    let bounded = text.replace(
        "columns.patient_id = { type = \"int\" }",
        "columns.patient_id = { type = \"int\", lower = 0, upper = 10 }",
    );
    let err = Config::parse(&bounded, &|_| Some("x".into())).unwrap_err();
    assert!(
        err.0
            .iter()
            .any(|e| e.path == "tables[0].columns.patient_id"),
        "{err}"
    );
}

/// Membership through an underflow error: a squared or grid-scaled value
/// that rounds to 0 is an error in PostgreSQL for rows that have a value,
/// and none for rows that do not. Ranges whose products could underflow
/// are refused before anything runs (both found by the attack review:
/// `VARIANCE(age * 1e-99 * 1e-99) ... WHERE patient_id = 'p1'` erred
/// exactly when p1 had an age; bounds of ±1e300 made `SUM(x)` err for
/// any row with 1e-100 ≤ |x| < 1.5e-30).
#[test]
fn ranges_whose_products_could_underflow_are_refused() {
    for sql in [
        "SELECT VARIANCE(age * 1e-99 * 1e-99) FROM visits",
        "SELECT SUM(cost * 1e-60 * 1e-60) FROM visits",
    ] {
        let r = refused(sql);
        assert_eq!(r.code, "54000", "{sql}: {}", r.message);
    }
    let wide = super::CONFIG.replace(
        "columns.cost = { type = \"float\", lower = 0, upper = 5000 }",
        "columns.cost = { type = \"float\", lower = -1e300, upper = 1e300 }",
    );
    let config = dpgate_config::Config::parse(&wide, &|_| Some("x".into())).unwrap();
    let Command::Private(q) = classify("SELECT SUM(cost) FROM visits").unwrap().remove(0) else {
        panic!()
    };
    assert_eq!(plan(&q, &config, 1.0).unwrap_err().code, "54000");
    // The declared magnitudes still plan.
    assert!(try_plan("SELECT VARIANCE(cost), SUM(cost * 1e-90) FROM visits").is_ok());
}
