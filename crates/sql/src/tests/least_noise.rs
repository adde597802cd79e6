//! Least noise for the budget: measurements shared between outputs, sums
//! centred on their range, and the split of ε that minimises the error.

use dpgate_dp::release::Output;
use dpgate_dp::Rational;

use super::*;
use crate::plan::{plan_prepared, Ask, Mechanism, Split};

fn measurements(sql: &str) -> usize {
    try_plan(sql).unwrap().release.measurements.len()
}

fn plan_with(sql: &str, epsilon: f64, split: Split) -> Plan {
    plan_asking(
        sql,
        Ask {
            split,
            mechanism: Mechanism::Laplace,
            ..Ask::at(epsilon)
        },
    )
    .unwrap()
}

fn plan_asking(sql: &str, ask: Ask) -> Result<Plan, Refusal> {
    let Command::Private(q) = classify(sql).unwrap().remove(0) else {
        panic!("{sql}")
    };
    plan_prepared(&q, &config(), &ask, None, None)
}

fn shares(p: &Plan) -> Vec<f64> {
    p.release
        .measurements
        .iter()
        .map(|m| match m.noise.loss() {
            dpgate_dp::accounting::PrivacyLoss::Pure { epsilon } => epsilon,
            other => panic!("{other:?}"),
        })
        .collect()
}

/// One count serves COUNT(*) and every mean or variance of values that
/// are never NULL: declared `not_null`, or proved so by the WHERE clause.
#[test]
fn counts_are_shared_when_values_are_never_null() {
    // stay is declared not_null.
    assert_eq!(measurements("SELECT COUNT(*), AVG(stay) FROM visits"), 2);
    // age may be NULL: its values are counted on their own...
    assert_eq!(measurements("SELECT COUNT(*), AVG(age) FROM visits"), 3);
    // ...unless the WHERE clause only passes rows that hold one.
    for filter in [
        "age >= 18",
        "age IS NOT NULL",
        "ward = 'A' AND age BETWEEN 20 AND 60",
        "age IN (30, 40)",
    ] {
        let sql = format!("SELECT COUNT(*), AVG(age) FROM visits WHERE {filter}");
        assert_eq!(measurements(&sql), 2, "{sql}");
    }
    // A disjunction proves nothing.
    assert_eq!(
        measurements("SELECT COUNT(*), AVG(age) FROM visits WHERE age > 5 OR ward = 'A'"),
        3
    );
    // The same FILTER: COUNT(*) FILTER and AVG FILTER share the count.
    assert_eq!(
        measurements(
            "SELECT COUNT(*) FILTER (WHERE ward = 'A'), AVG(stay) FILTER (WHERE ward = 'A') FROM visits"
        ),
        2
    );
    // Arithmetic on never-NULL values is never NULL; a quotient may be.
    assert_eq!(
        measurements("SELECT COUNT(*), AVG(stay * 2 + 1) FROM visits"),
        2
    );
    assert_eq!(
        measurements("SELECT COUNT(*), AVG(stay / 2) FROM visits"),
        3
    );
    // The right side of a LEFT JOIN is NULL on unmatched rows, whatever
    // its table declares: its values are counted on their own.
    assert_eq!(
        measurements("SELECT COUNT(*), AVG(b.stay) FROM patients a LEFT JOIN visits b ON a.patient_id = b.patient_id"),
        3
    );
    assert_eq!(
        measurements("SELECT COUNT(*), AVG(b.stay) FROM patients a JOIN visits b ON a.patient_id = b.patient_id"),
        2
    );
}

/// AVG and VARIANCE of one column share the count and the centred sum; a
/// SUM of the same values serves AVG; the same SUM twice is measured once.
#[test]
fn sums_are_shared_between_outputs() {
    assert_eq!(
        measurements("SELECT COUNT(*), AVG(stay), VARIANCE(stay), STDDEV(stay) FROM visits"),
        3
    );
    let p = try_plan("SELECT SUM(age), AVG(age) FROM visits").unwrap();
    assert_eq!(p.release.measurements.len(), 2, "{:?}", p.release);
    let Output::Mean { sum, center, .. } = p.release.outputs[1] else {
        panic!()
    };
    assert_eq!((sum, center), (0, 0.0), "AVG reads SUM's measurement");
    assert_eq!(measurements("SELECT SUM(age), SUM(age) * 2 FROM visits"), 1);
    // AVG alone sums ages less 55 (sensitivity 5 × 55, not 5 × 110).
    let p = try_plan("SELECT AVG(age) FROM visits").unwrap();
    let Output::Mean { sum, center, .. } = p.release.outputs[0] else {
        panic!()
    };
    assert_eq!(center, 55.0);
    let m = &p.release.measurements[sum];
    assert_eq!(m.noise.sensitivity() as f64 * m.grid.unit(), 275.0);
}

/// The optimal split gives the count read by COUNT(*) and AVG more than
/// the sum read by AVG alone; `dp.split = 'equal'` gives the same share
/// to each. Either way the shares add up to ε exactly, and the count's
/// interval is narrower than under the equal split of three measurements.
#[test]
fn the_split_minimises_the_error() {
    let sql = "SELECT COUNT(*), AVG(stay) FROM visits";
    let optimal = plan_with(sql, 0.1, Split::Optimal);
    let equal = plan_with(sql, 0.1, Split::Equal);
    let (o, e) = (shares(&optimal), shares(&equal));
    assert!(o[0] > o[1], "{o:?}");
    assert_eq!(e[0], e[1]);
    let tenth = Rational::from_f64(0.1).unwrap();
    let exact = |p: &Plan| p.release.pure_epsilon().unwrap();
    assert_eq!(
        exact(&optimal),
        dpgate_dp::accounting::epsilon_on_ledger_grid(0.1)
            .unwrap()
            .1
    );
    assert!(exact(&equal) <= tenth);
    // The cube-root rule: c = (1.5, 0.5) for (count, sum).
    let ratio = o[0] / o[1];
    assert!((ratio - 3f64.cbrt()).abs() < 1e-3, "{ratio}");
    // COUNT(*)'s half-width at ε = 0.1 with 5 rows per unit: ±449 when
    // it had a third of ε; now below ±320.
    let widths = optimal.release.half_widths(0.95);
    assert!(widths[0].unwrap() <= 320.0, "{widths:?}");
    // A single aggregate keeps all of ε under either rule.
    let one = plan_with("SELECT COUNT(*) FROM visits", 0.1, Split::Optimal);
    assert_eq!(shares(&one), [0.1]);
}

/// Twenty sums: Laplace must split ε twenty ways (variance ∝ m²), zCDP
/// composes in ρ (variance ∝ m), so Gaussian noise charged as the same
/// (ε, δ) wins and `auto` picks it; three aggregates stay Laplace. The
/// charge is exactly the session's ε and the config's δ, and the
/// Gaussian measurements spend no more ρ than that charge covers.
#[test]
fn gaussian_noise_where_it_wins() {
    let many = format!(
        "SELECT {} FROM visits",
        (0..20)
            .map(|i| format!("SUM(stay + {i})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for epsilon in [0.1, 1.0] {
        let p = plan_asking(&many, Ask::at(epsilon)).unwrap();
        assert!(p.mechanism.gaussian, "{epsilon}: {:?}", p.mechanism);
        let ratio = p.mechanism.gaussian_variance_ratio.unwrap();
        assert!(ratio < 1.0, "{ratio}");
        let cost = p.cost();
        assert!(cost.covered);
        let eps = dpgate_dp::accounting::epsilon_on_ledger_grid(epsilon)
            .unwrap()
            .1;
        assert_eq!(cost.epsilon, eps);
        assert_eq!(cost.delta, config().privacy.delta);
        let zcdp = p.release.zcdp.as_ref().unwrap();
        assert!(cost.rho <= zcdp.rho && !cost.rho.is_zero());
        // Forced Laplace: the same charge, more variance.
        let laplace = plan_asking(
            &many,
            Ask {
                mechanism: Mechanism::Laplace,
                ..Ask::at(epsilon)
            },
        )
        .unwrap();
        assert!(!laplace.mechanism.gaussian);
        assert_eq!(laplace.cost().epsilon, eps);
        assert_eq!(laplace.cost().delta, 0.0);
    }
    let few = plan_asking(
        "SELECT COUNT(*), AVG(stay), SUM(age) FROM visits",
        Ask::at(0.1),
    )
    .unwrap();
    assert!(!few.mechanism.gaussian);
    assert!(few.mechanism.gaussian_variance_ratio.unwrap() > 1.0);
    // Forced Gaussian where it loses: honoured, and charged the same way.
    let forced = plan_asking(
        "SELECT COUNT(*) FROM visits",
        Ask {
            mechanism: Mechanism::Gaussian,
            ..Ask::at(0.1)
        },
    )
    .unwrap();
    assert!(forced.mechanism.gaussian && forced.cost().covered);
    // Grouped without a domain: δ is shared by the keys and the conversion.
    let grouped = plan_asking(
        "SELECT age, COUNT(*), SUM(stay) FROM visits GROUP BY age",
        Ask {
            mechanism: Mechanism::Gaussian,
            ..Ask::at(1.0)
        },
    )
    .unwrap();
    let selection = grouped.release.selection.as_ref().unwrap();
    let zcdp = grouped.release.zcdp.as_ref().unwrap();
    assert_eq!(selection.selection.delta(), config().privacy.delta / 2.0);
    assert_eq!(zcdp.delta, config().privacy.delta / 2.0);
    assert_eq!(grouped.cost().delta, config().privacy.delta);
}

/// `dp.target_error`: the least ε on the ledger's grid whose reported
/// interval meets the target — the next grid step down does not — found
/// from the plan alone; per-column targets; targets that cannot be met or
/// aimed (an average's interval depends on its row count) are refused.
#[test]
fn the_least_epsilon_that_meets_a_target() {
    use crate::front::{route, Statement};
    use crate::plan::Target;
    use crate::sqlstate;
    let prepared = |sql: &str| match route(sql, &config(), false).unwrap().remove(0).statement {
        Statement::Private(p) => p,
        other => panic!("{other:?}"),
    };
    let aim = |sql: &str, target: &str, max: f64| {
        let target = Target::parse(target).unwrap();
        prepared(sql).bind_to_target(
            &[],
            &Ask::at(0.1),
            &config(),
            &target,
            (0.001, max),
            "one query may spend",
            0.95,
        )
    };
    let sql = "SELECT COUNT(*) AS n, SUM(stay) AS total FROM visits";
    let p = aim(sql, "50", 10.0).unwrap();
    let met = p.target.clone().unwrap();
    let width = |p: &Plan, i: usize| p.release.half_widths(0.95)[i].unwrap();
    assert!(width(&p, 0) <= 50.0, "{}", width(&p, 0));
    // One nano-ε less misses it.
    let less = prepared(sql)
        .bind(&[], &Ask::at(met.epsilon - 1e-9), &config())
        .unwrap();
    assert!(
        width(&less, 0) > 50.0,
        "{} at {}",
        width(&less, 0),
        met.epsilon
    );
    assert_eq!(p.cost().epsilon_f64(), met.epsilon);
    // Both columns, each to its own half-width.
    let p = aim(sql, "n:40, TOTAL:2000", 10.0).unwrap();
    assert!(width(&p, 0) <= 40.0 && width(&p, 1) <= 2000.0);
    // More than one query may spend: refused, saying what it would take.
    let e = aim(sql, "1", 1.0).unwrap_err();
    assert_eq!(e.code, sqlstate::INVALID_PARAMETER_VALUE);
    assert!(e.message.contains("needs about ε ="), "{e}");
    // An average's interval is only known after the data.
    let e = aim("SELECT AVG(stay) FROM visits", "1", 10.0).unwrap_err();
    assert_eq!(e.code, sqlstate::FEATURE_NOT_SUPPORTED, "{e}");
    // A column the query does not have.
    let e = aim(sql, "avg:3", 10.0).unwrap_err();
    assert!(e.hint.contains("n, total"), "{e:?}");
    for bad in ["-1", "0", "count:", "x", "n:1, :2"] {
        assert!(Target::parse(bad).is_err(), "{bad}");
    }
}

/// Found by the review of this code: a squared L2 sensitivity that does
/// not fit u64 was saturated (noise calibrated for less than the truth,
/// and `auto` chose it); a centred sum's radius was (upper − lower)/2 while
/// the centre had been rounded, so a value at a bound could sit further
/// from it than the sensitivity said.
#[test]
fn gaussian_and_centred_sums_never_understate_their_sensitivity() {
    // L1 = 5 · 1.1e10 > 2³²: L1² overflows u64.
    let sql = "SELECT SUM(age * 100000000) FROM visits";
    let auto = plan_asking(sql, Ask::at(0.1)).unwrap();
    assert!(!auto.mechanism.gaussian, "{:?}", auto.mechanism);
    let forced = plan_asking(
        sql,
        Ask {
            mechanism: Mechanism::Gaussian,
            ..Ask::at(0.1)
        },
    );
    assert!(forced.is_err());
    // A narrow float range whose middle rounds: every clamped value lies
    // within the sensitivity of the centre the SQL subtracts.
    let lo = 4999.999999999999f64;
    let p = try_plan(&format!(
        "SELECT AVG(cost) FROM visits WHERE cost >= {lo:?} AND cost <= 5000"
    ))
    .unwrap();
    let Output::Mean {
        sum,
        lower,
        upper,
        center,
        ..
    } = p.release.outputs[0]
    else {
        panic!()
    };
    let m = &p.release.measurements[sum];
    let per_row = m.noise.sensitivity() as f64 / 5.0;
    for x in [lower, upper] {
        let units = ((x - center) / m.grid.unit()).round().abs();
        assert!(units <= per_row, "{x}: {units} units > {per_row}");
    }
    // Integers near 2⁵⁹: the centre is exact (an f64 sum rounds there).
    let p = try_plan("SELECT AVG(LEAST(GREATEST(age, 0), 110) + 576460752303423488) FROM visits")
        .unwrap();
    // (The interval arithmetic already rounded the upper bound to a double.)
    assert!(
        p.backend_sql.contains(
            "THEN 576460752303423616 ELSE CAST(__dp_a0 AS bigint) END - 576460752303423552)"
        ),
        "{}",
        p.backend_sql
    );
}
