use super::*;
use crate::tests::config;
use crate::{classify, plan, Command, Grouping};
use dpgate_config::Config;

fn visits() -> Table {
    config().table(None, "visits").unwrap().clone()
}

#[test]
fn every_declared_column_is_an_attribute() {
    let attrs = attributes(&visits(), 16).unwrap().modelled;
    let names: Vec<&str> = attrs.iter().map(|a| a.column.as_str()).collect();
    assert_eq!(names, ["age", "cost", "ward", "stay"]);
    assert_eq!(attrs[0].size(), 16);
    assert_eq!(attrs[2].size(), 2);
    // stay: integers 0..30, 16 bins.
    assert_eq!(attrs[3].size(), 16);
    assert!(attributes(&visits(), 0).is_err());
}

#[test]
fn bins_map_keys_and_values_both_ways() {
    let age = &attributes(&visits(), 10).unwrap().modelled[0];
    assert_eq!(age.index_of(Some("1")), Some(0));
    assert_eq!(age.index_of(Some("10")), Some(9));
    // The upper bound itself falls in bucket bins + 1: the last bin.
    assert_eq!(age.index_of(Some("11")), Some(9));
    assert_eq!(age.index_of(Some("0")), None);
    assert_eq!(age.index_of(None), None);
    for i in 0..10 {
        for u in [0.0, 0.5, 0.999] {
            let Cell::Int(v) = age.cell(i, u) else {
                panic!()
            };
            assert!((0..=110).contains(&v));
            // The value falls back into its own bin.
            let bucket = ((v as f64 - 0.0) / 11.0).floor() as usize + 1;
            assert_eq!(
                age.index_of(Some(&bucket.to_string())),
                Some(i),
                "{i} {u} {v}"
            );
        }
    }
    let ward = &attributes(&visits(), 10).unwrap().modelled[2];
    assert_eq!(ward.index_of(Some("B")), Some(1));
    assert_eq!(ward.cell(0, 0.3), Cell::Text("A".into()));
}

/// A text column without a domain: its selected values in order, then
/// `other` for every other non-NULL value; NULL counts nowhere.
#[test]
fn selected_values_keep_rare_ones_in_other() {
    let a = Attribute {
        column: "diagnosis".into(),
        values: Values::Selected(vec!["asthma".into(), "flu".into()]),
    };
    assert_eq!(a.size(), 3);
    assert_eq!(a.index_of(Some("flu")), Some(1));
    assert_eq!(a.index_of(Some("zzz-rare")), Some(2));
    assert_eq!(a.index_of(None), None);
    assert_eq!(a.cell(0, 0.5), Cell::Text("asthma".into()));
    assert_eq!(a.cell(2, 0.5), Cell::Text(OTHER.into()));
    assert_eq!(a.key_sql(), "\"diagnosis\"");
}

/// Dates and timestamps by quarter: keys of either dialect map to their
/// quarter, other quarters to the last value (NULL), and sampled values
/// fall inside their quarter.
#[test]
fn quarters_map_keys_and_sample_inside_the_quarter() {
    let a = Attribute {
        column: "visit_date".into(),
        values: Values::Quarters(Vec::new(), false),
    }
    .with_selected(vec![
        "2024-01-01 00:00:00".into(),
        "2023-10-01 00:00:00".into(),
    ]);
    assert_eq!(
        a.values,
        Values::Quarters(vec!["2023-10".into(), "2024-01".into()], false)
    );
    assert_eq!(a.index_of(Some("2024-02-17")), Some(1));
    assert_eq!(a.index_of(Some("2023-12-31 23:59:59")), Some(0));
    assert_eq!(a.index_of(Some("2019-07-01")), Some(2));
    assert_eq!(a.index_of(Some("garbage")), None);
    assert_eq!(a.cell(2, 0.5), Cell::Null);
    let mut seen = std::collections::BTreeSet::new();
    for k in 0..1000 {
        let Cell::Text(d) = a.cell(1, k as f64 / 1000.0) else {
            panic!()
        };
        assert!(d.len() == 10 && a.index_of(Some(&d)) == Some(1), "{d}");
        seen.insert(d[5..7].to_string());
    }
    // 2024 is a leap year: January to March is 91 days, all reached.
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["01", "02", "03"]);
    let ts = Attribute {
        column: "at".into(),
        values: Values::Quarters(vec!["2023-04".into()], true),
    };
    let Cell::Text(t) = ts.cell(0, 0.999_999_9) else {
        panic!()
    };
    assert!(t.starts_with("2023-06-30 23:"), "{t}");
}

/// The marginal queries are ordinary private plans over declared
/// domains: every cell released (none selected from the data), and
/// the COUNT's sensitivity is max_rows_per_unit = 5, the k of the fit.
#[test]
fn marginal_queries_plan_with_the_units_bound() {
    let table = visits();
    let attrs = attributes(&table, 8).unwrap().modelled;
    let pairs = [
        vec![&attrs[0]],
        vec![&attrs[2]],
        vec![&attrs[0], &attrs[2]],
        vec![&attrs[1], &attrs[3]],
    ];
    for attrs in pairs {
        let sql = marginal_sql(&table, &attrs);
        let Command::Private(q) = classify(&sql).unwrap().remove(0) else {
            panic!("{sql} is not a private query")
        };
        let p = plan(&q, &config(), 1.0).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        let Grouping::Domain { groups, .. } = &p.grouping else {
            panic!("{sql}: {:?}", p.grouping)
        };
        // width_bucket's domain is 0..=bins+1: two more than the bins.
        let expected: usize = attrs
            .iter()
            .map(|a| match a.values {
                Values::Bins { bins, .. } => bins + 2,
                _ => a.size(),
            })
            .product();
        assert_eq!(groups.len(), expected, "{sql}");
        assert_eq!(p.release.measurements.len(), 1, "{sql}");
        assert_eq!(p.release.measurements[0].noise.sensitivity(), 5, "{sql}");
        assert!(p.release.selection.is_none(), "{sql}");
    }
}

fn with_synthetic(tables: &[&str]) -> Config {
    let mut c = config();
    for t in &mut c.tables {
        if tables.contains(&t.name.as_str()) {
            t.synthetic = Some(dpgate_config::Synthetic {
                epsilon: 1.0,
                rows: 1000,
                bins: 8,
                max_rows: 200,
                refresh: None,
            });
        }
    }
    c
}

fn routed(sql: &str, c: &Config) -> crate::Statement {
    crate::route(sql, c, true).unwrap().remove(0).statement
}

/// Row-level reads of tables with synthetic rows go to them; anything
/// that aggregates, anywhere, stays on the private path; reads mixed
/// with other relations are refused; tables without synthetic rows
/// keep the refusal, whose hint names the setting.
#[test]
fn row_level_reads_route_to_synthetic_rows_and_aggregates_never_do() {
    use crate::Statement;
    let c = with_synthetic(&["visits", "patients"]);
    for (sql, limited, explain) in [
        ("SELECT * FROM visits LIMIT 10", true, false),
        ("SELECT * FROM public.visits", false, false),
        (
            "SELECT age, ward FROM visits WHERE age > 30 ORDER BY cost DESC",
            false,
            false,
        ),
        ("EXPLAIN SELECT * FROM visits", false, true),
        (
            "SELECT v.age FROM visits v JOIN patients p USING (patient_id) FETCH FIRST 5 ROWS ONLY",
            true,
            false,
        ),
        (
            "WITH old AS (SELECT * FROM visits WHERE age > 80) SELECT * FROM old",
            false,
            false,
        ),
    ] {
        match routed(sql, &c) {
            Statement::Synthetic { read, explain: e } => {
                assert_eq!((read.limited, e), (limited, explain), "{sql}");
                let cap = if limited { "LIMIT 1000" } else { "LIMIT 200" };
                assert!(read.sql.ends_with(cap), "{sql}: {}", read.sql);
                assert!(
                    read.tables.contains(&("public".into(), "visits".into())),
                    "{sql}"
                );
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    for sql in [
        "SELECT COUNT(*) FROM visits",
        "SELECT DISTINCT ward FROM visits",
        "SELECT ward FROM visits GROUP BY ward",
        "SELECT age, COUNT(*) OVER () FROM visits",
        "SELECT * FROM visits WHERE age > (SELECT AVG(age) FROM visits)",
        "SELECT * FROM visits v JOIN events e ON v.patient_id = e.patient_id",
        "SELECT pg_catalog.max(age) FROM visits",
    ] {
        assert!(matches!(routed(sql, &c), Statement::Private(_)), "{sql}");
    }
    // Aggregation in any branch of a set operation, or a UNION that
    // removes duplicates, keeps it off the synthetic rows too.
    for sql in [
        "SELECT ward FROM visits GROUP BY ward UNION ALL SELECT ward FROM visits",
        "SELECT age FROM visits UNION SELECT age FROM patients",
        "SELECT any_value(age) FROM visits",
        "SELECT regr_count(age, cost) FROM visits",
    ] {
        assert!(
            !matches!(routed(sql, &c), Statement::Synthetic { .. }),
            "{sql}"
        );
    }
    // A CTE named like a declared table is ambiguous here: refused.
    match routed(
        "SELECT * FROM visits, (WITH patients AS (SELECT 1) SELECT 1) s, patients",
        &c,
    ) {
        Statement::Refused(e) => assert!(e.message.contains("CTE"), "{e:?}"),
        other => panic!("{other:?}"),
    }
    // An explicit LIMIT is capped at the largest table's rows; LIMIT
    // ALL is no LIMIT.
    for (sql, cap) in [
        ("SELECT * FROM visits LIMIT NULL", "LIMIT 1000"),
        (
            "SELECT * FROM visits v, visits w LIMIT 5000000",
            "LIMIT 1000",
        ),
        ("SELECT * FROM visits LIMIT ALL", "LIMIT 200"),
    ] {
        let Statement::Synthetic { read, .. } = routed(sql, &c) else {
            panic!("{sql}")
        };
        assert!(read.sql.ends_with(cap), "{sql}: {}", read.sql);
    }
    assert!(matches!(
        routed("SELECT * FROM visits LIMIT 0", &c),
        Statement::Catalog
    ));
    match routed("SELECT * FROM visits v JOIN wards w ON v.ward = w.ward", &c) {
        Statement::Refused(e) => assert!(e.hint.contains("[tables.synthetic]"), "{e:?}"),
        other => panic!("{other:?}"),
    }
    // Without the declaration, the refusal names it.
    let Statement::Private(p) = routed("SELECT * FROM visits LIMIT 10", &config()) else {
        panic!()
    };
    let e = p.bind(&[], &crate::Ask::at(1.0), &config()).unwrap_err();
    assert!(e.hint.contains("[tables.synthetic]"), "{e:?}");
}
