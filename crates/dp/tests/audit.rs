//! Statistical audits of every mechanism.
//!
//! For neighbouring inputs x, x' (one privacy unit added with maximal
//! contributions) each audit draws 100 000 outputs from both, and for a
//! fixed set of one-sided events E computes Clopper–Pearson bounds on
//! P[M(x) ∈ E] and P[M(x') ∈ E] (Bonferroni-corrected over events and both
//! directions, with a false alarm rate of 1e-4 per audit). The measured lower bound
//! ε_lb = max ln((lower P[M(x') ∈ E] − δ) / upper P[M(x) ∈ E]) must stay at or
//! below the claimed ε; the same audit of a copy whose noise scale is × 0.8
//! must find ε_lb above the claim, which shows the audit can fail.

use dpgate_dp::partition::PartitionSelection;
use dpgate_dp::release::{KeySelection, Measurement, Output, ReleasePlan};
use dpgate_dp::sensitivity::Contribution;
use dpgate_dp::{secure_rng, DiscreteGaussian, DiscreteLaplace, Grid, Noise, Rational};
use statrs::distribution::{Beta, ContinuousCDF};

const DRAWS: usize = 100_000;

/// Probability that a correct mechanism fails its audit (Bonferroni over
/// events): small enough that CI does not flake.
const FALSE_ALARM: f64 = 1e-4;

fn cp_lower(k: usize, n: usize, alpha: f64) -> f64 {
    if k == 0 {
        0.0
    } else {
        Beta::new(k as f64, (n - k + 1) as f64)
            .unwrap()
            .inverse_cdf(alpha)
    }
}

fn cp_upper(k: usize, n: usize, alpha: f64) -> f64 {
    if k == n {
        1.0
    } else {
        Beta::new((k + 1) as f64, (n - k) as f64)
            .unwrap()
            .inverse_cdf(1.0 - alpha)
    }
}

type Event<T> = Box<dyn Fn(&T) -> bool>;

/// The measured ε lower bound over `events` at `delta`, from `DRAWS`
/// outputs on each side.
fn epsilon_lower_bound<T>(
    x: impl FnMut() -> T,
    x_prime: impl FnMut() -> T,
    events: &[Event<T>],
    delta: f64,
) -> f64 {
    epsilon_lower_bound_from(DRAWS, x, x_prime, events, delta)
}

/// [`epsilon_lower_bound`] from `draws` outputs on each side: audits whose
/// best event is rare (probability about 1 %) need more draws for the
/// bound to sit reliably near the true ε.
fn epsilon_lower_bound_from<T>(
    draws: usize,
    mut x: impl FnMut() -> T,
    mut x_prime: impl FnMut() -> T,
    events: &[Event<T>],
    delta: f64,
) -> f64 {
    let a: Vec<T> = (0..draws).map(|_| x()).collect();
    let b: Vec<T> = (0..draws).map(|_| x_prime()).collect();
    let alpha = FALSE_ALARM / (2.0 * events.len() as f64);
    let mut best = f64::NEG_INFINITY;
    for e in events {
        let ka = a.iter().filter(|o| e(o)).count();
        let kb = b.iter().filter(|o| e(o)).count();
        for (k_num, k_den) in [(kb, ka), (ka, kb)] {
            let num = cp_lower(k_num, draws, alpha) - delta;
            let den = cp_upper(k_den, draws, alpha);
            if num > 0.0 && den > 0.0 {
                best = best.max((num / den).ln());
            }
        }
    }
    best
}

fn ge<T: 'static>(f: impl Fn(&T) -> f64 + 'static, t: f64) -> Event<T> {
    Box::new(move |o| f(o) >= t)
}

fn le<T: 'static>(f: impl Fn(&T) -> f64 + 'static, t: f64) -> Event<T> {
    Box::new(move |o| f(o) <= t)
}

fn eps(x: f64) -> Rational {
    Rational::from_f64(x).unwrap()
}

/// Audits a scalar integer mechanism on inputs 0 and `sens`, with events
/// in both tails, and returns ε_lb.
fn audit_scalar(noise: Noise, sens: i64, scale: f64) -> f64 {
    let mut rng = secure_rng();
    let mut rng2 = secure_rng();
    let id = |o: &i128| *o as f64;
    let mut events: Vec<Event<i128>> = Vec::new();
    for j in 0..3 {
        events.push(ge(id, (sens as f64 + j as f64 * scale).round()));
        events.push(le(id, -(j as f64 * scale).round()));
    }
    let n2 = noise.clone();
    epsilon_lower_bound(
        move || noise.release(0, &mut rng),
        move || n2.release(sens, &mut rng2),
        &events,
        0.0,
    )
}

#[test]
fn laplace_count_audit() {
    // COUNT with 5 rows per unit: Δ = 5, ε = 1.
    let claim = 1.0;
    let good = DiscreteLaplace::new(5, eps(claim)).unwrap();
    let lb = audit_scalar(good.into(), 5, 5.0);
    eprintln!("audit: laplace count claim {claim}: ε_lb {lb:.3}");
    assert!(lb <= claim, "ε_lb {lb} > claim {claim}");
    assert!(lb > 0.8 * claim, "audit too weak to mean anything: {lb}");
    let bad = DiscreteLaplace::new(5, eps(claim / 0.8)).unwrap();
    let lb_bad = audit_scalar(bad.into(), 5, 4.0);
    eprintln!("audit: laplace count ×0.8 scale: ε_lb {lb_bad:.3}");
    assert!(lb_bad > claim, "mis-scaled copy passed: ε_lb {lb_bad}");
}

/// Reports an audit and checks its verdict: the measured lower bound
/// `lb` stays within `claim` exactly when the mechanism is the honest one.
fn judge(lb: f64, epsilon: f64, claim: f64, should_pass: bool) {
    eprintln!("audit: ε {epsilon:.3} (claim {claim}): ε_lb {lb:.3}");
    assert_eq!(
        lb <= claim,
        should_pass,
        "ε {epsilon}: ε_lb {lb} vs claim {claim}"
    );
}

/// A plan, its neighbouring raw inputs, and the events on its noisy measurements.
fn audit_plan(
    plan: &ReleasePlan,
    x: Vec<i64>,
    x_prime: Vec<i64>,
    events: &[Event<Vec<Vec<i128>>>],
) -> f64 {
    let (p1, p2) = (plan.clone(), plan.clone());
    let (mut r1, mut r2) = (secure_rng(), secure_rng());
    epsilon_lower_bound(
        move || p1.noise(&x, &mut r1),
        move || p2.noise(&x_prime, &mut r2),
        events,
        0.0,
    )
}

fn sum_plan(epsilon: f64, k: u64) -> (ReleasePlan, i64) {
    let grid = Grid::for_magnitude(5000.0);
    let units = Contribution::ungrouped(k).sum(grid.max_units(0.0, 5000.0));
    let noise = DiscreteLaplace::new(units.l1, eps(epsilon)).unwrap();
    let plan = ReleasePlan {
        selection: None,
        measurements: vec![Measurement::scalar(noise, grid)],
        outputs: vec![Output::Sum {
            measurement: 0,
            integer: false,
            lower: 0.0,
            upper: 5000.0,
        }],
        zcdp: None,
    };
    (plan, units.l1 as i64)
}

#[test]
fn laplace_real_sum_audit() {
    // SUM(cost) with cost in [0, 5000] on a 2^-7 grid, 2 rows per unit.
    let claim = 0.5;
    for (epsilon, should_pass) in [(claim, true), (claim / 0.8, false)] {
        let (plan, delta_units) = sum_plan(epsilon, 2);
        let scale = delta_units as f64 / epsilon;
        let at = move |v: &Vec<Vec<i128>>| v[0][0] as f64;
        let events: Vec<Event<Vec<Vec<i128>>>> = (0..3)
            .flat_map(|j| {
                [
                    ge(at, delta_units as f64 + j as f64 * scale),
                    le(at, -(j as f64) * scale),
                ]
            })
            .collect();
        let lb = audit_plan(&plan, vec![0], vec![delta_units], &events);
        judge(lb, epsilon, claim, should_pass);
    }
}

/// Mean = (sum, count): neighbours differ in both by a unit's k rows at the
/// upper bound; joint events catch the composed loss ε_sum + ε_count. Run
/// for the plain sum (values in [0, 100], sensitivity k·100) and for the
/// centred sum AVG measures (values less 50, sensitivity k·50): the same
/// events, each calibrated to its own sensitivity.
#[test]
fn mean_audit() {
    for center in [0.0, 50.0] {
        mean_audit_at(center);
    }
}

fn mean_audit_at(center: f64) {
    let claim = 1.0;
    let k = 3u64;
    let reach = (100.0 - center) as u64;
    for (epsilon, should_pass) in [(claim, true), (claim / 0.8, false)] {
        let c = Contribution::ungrouped(k);
        let (sum_s, cnt_s) = (c.sum(reach).l1, c.count().l1);
        let half = eps(epsilon / 2.0);
        let plan = ReleasePlan {
            selection: None,
            measurements: vec![
                Measurement::scalar(
                    DiscreteLaplace::new(sum_s, half.clone()).unwrap(),
                    Grid::INTEGER,
                ),
                Measurement::scalar(DiscreteLaplace::new(cnt_s, half).unwrap(), Grid::INTEGER),
            ],
            outputs: vec![Output::Mean {
                sum: 0,
                count: 1,
                lower: 0.0,
                upper: 100.0,
                center,
            }],
            zcdp: None,
        };
        let (bs, bc) = (sum_s as f64 * 2.0 / epsilon, cnt_s as f64 * 2.0 / epsilon);
        let (s0, c0) = (4000i64, 100i64);
        let mut events: Vec<Event<Vec<Vec<i128>>>> = Vec::new();
        for j in 0..3 {
            let (ts, tc) = (
                (s0 + sum_s as i64) as f64 + j as f64 * bs,
                (c0 + cnt_s as i64) as f64 + j as f64 * bc,
            );
            events.push(Box::new(move |v| {
                v[0][0] as f64 >= ts && v[1][0] as f64 >= tc
            }));
            let (us, uc) = (s0 as f64 - j as f64 * bs, c0 as f64 - j as f64 * bc);
            events.push(Box::new(move |v| {
                v[0][0] as f64 <= us && v[1][0] as f64 <= uc
            }));
        }
        let lb = audit_plan(
            &plan,
            vec![s0, c0],
            vec![s0 + sum_s as i64, c0 + cnt_s as i64],
            &events,
        );
        judge(lb, epsilon, claim, should_pass);
        // The released mean alone is post-processing: never above the claim.
        if should_pass {
            let (p1, p2) = (plan.clone(), plan.clone());
            let (mut r1, mut r2) = (secure_rng(), secure_rng());
            let mean = |v: &f64| *v;
            let m0 = center + s0 as f64 / c0 as f64;
            let events: Vec<Event<f64>> = vec![
                ge(mean, m0 + 1.0),
                le(mean, m0 - 1.0),
                ge(mean, m0 + 0.5),
                le(mean, m0 - 0.5),
            ];
            let lb = epsilon_lower_bound(
                move || p1.release(&[s0, c0], 0.95, &mut r1)[0].value.as_f64(),
                move || {
                    p2.release(&[s0 + sum_s as i64, c0 + cnt_s as i64], 0.95, &mut r2)[0]
                        .value
                        .as_f64()
                },
                &events,
                0.0,
            );
            assert!(lb <= claim, "mean output ε_lb {lb}");
        }
    }
}

/// Variance = (count, centred sum, centred sum of squares), one third of ε each.
#[test]
fn variance_audit() {
    let claim = 1.5;
    let k = 2u64;
    let radius = 10u64;
    for (epsilon, should_pass) in [(claim, true), (claim / 0.8, false)] {
        let c = Contribution::ungrouped(k);
        let sens = [c.count().l1, c.sum(radius).l1, c.sum(radius * radius).l1];
        let third = eps(epsilon / 3.0);
        let plan = ReleasePlan {
            selection: None,
            measurements: sens
                .iter()
                .map(|&s| {
                    Measurement::scalar(
                        DiscreteLaplace::new(s, third.clone()).unwrap(),
                        Grid::INTEGER,
                    )
                })
                .collect(),
            outputs: vec![Output::Variance {
                count: 0,
                sum: 1,
                sum_squares: 2,
                radius: radius as f64,
                sample: false,
                stddev: false,
            }],
            zcdp: None,
        };
        let x = vec![50i64, 0, 1000];
        let xp: Vec<i64> = x.iter().zip(sens).map(|(v, s)| v + s as i64).collect();
        let scales: Vec<f64> = sens.iter().map(|&s| s as f64 * 3.0 / epsilon).collect();
        let mut events: Vec<Event<Vec<Vec<i128>>>> = Vec::new();
        for j in 0..3 {
            let hi: Vec<f64> = (0..3)
                .map(|i| xp[i] as f64 + j as f64 * scales[i])
                .collect();
            let lo: Vec<f64> = (0..3).map(|i| x[i] as f64 - j as f64 * scales[i]).collect();
            events.push(Box::new(move |v| (0..3).all(|i| v[i][0] as f64 >= hi[i])));
            events.push(Box::new(move |v| (0..3).all(|i| v[i][0] as f64 <= lo[i])));
        }
        let lb = audit_plan(&plan, x, xp, &events);
        judge(lb, epsilon, claim, should_pass);
    }
}

/// A histogram (vector) measurement: a unit's k rows all in one bin is the
/// worst case; one loss covers the whole vector.
#[test]
fn histogram_audit() {
    let claim = 1.0;
    let k = 2u64;
    for (epsilon, should_pass) in [(claim, true), (claim / 0.8, false)] {
        let sens = Contribution::ungrouped(k).histogram();
        let noise = DiscreteLaplace::new(sens.l1, eps(epsilon)).unwrap();
        let plan = ReleasePlan {
            selection: None,
            measurements: vec![Measurement {
                noise: noise.into(),
                grid: Grid::INTEGER,
                len: 4,
            }],
            outputs: vec![Output::Quantile {
                histogram: 0,
                lower: 0.0,
                upper: 4.0,
                p: 0.5,
            }],
            zcdp: None,
        };
        let x = vec![10i64, 10, 10, 10];
        let mut xp = x.clone();
        xp[1] += k as i64;
        let b = sens.l1 as f64 / epsilon;
        let events: Vec<Event<Vec<Vec<i128>>>> = (0..3)
            .flat_map(|j| {
                let (hi, lo) = (12.0 + j as f64 * b, 10.0 - j as f64 * b);
                [
                    Box::new(move |v: &Vec<Vec<i128>>| v[0][1] as f64 >= hi) as Event<_>,
                    Box::new(move |v: &Vec<Vec<i128>>| v[0][1] as f64 <= lo),
                ]
            })
            .collect();
        let lb = audit_plan(&plan, x, xp, &events);
        judge(lb, epsilon, claim, should_pass);
    }
}

/// The exact (ε, δ) profile of the discrete Gaussian (CKS 2020, Theorem 7):
/// δ(ε) = P[Z > εσ²/Δ − Δ/2] − e^ε P[Z > εσ²/Δ + Δ/2], Z discrete Gaussian.
fn gaussian_delta(sigma2: f64, sens: f64, epsilon: f64) -> f64 {
    let limit = (sigma2.sqrt() * 40.0) as i64 + 10;
    let w = |z: i64| (-(z * z) as f64 / (2.0 * sigma2)).exp();
    let total: f64 = (-limit..=limit).map(w).sum();
    let tail = |t: f64| {
        (-limit..=limit)
            .filter(|&z| z as f64 > t)
            .map(w)
            .sum::<f64>()
            / total
    };
    let m = epsilon * sigma2 / sens;
    tail(m - sens / 2.0) - epsilon.exp() * tail(m + sens / 2.0)
}

#[test]
fn gaussian_audit() {
    // σ² = Δ²/(2ρ) with Δ = 2, ρ = 0.5: σ = 2. Audit the profile at ε = 1.
    let (sens, rho, target) = (2i64, 0.5, 1.0);
    let good = DiscreteGaussian::new((sens * sens) as u64, eps(rho)).unwrap();
    let delta = gaussian_delta(good.sigma2().to_f64(), sens as f64, target);
    assert!(delta > 0.01 && delta < 0.5, "δ(1) = {delta}");
    let run = |m: DiscreteGaussian| {
        let (m1, m2) = (m.clone(), m);
        let (mut r1, mut r2) = (secure_rng(), secure_rng());
        let id = |o: &i128| *o as f64;
        let events: Vec<Event<i128>> = (0..4)
            .flat_map(|t| [ge(id, (sens + t) as f64), le(id, -t as f64)])
            .collect();
        epsilon_lower_bound(
            move || m1.release(0, &mut r1),
            move || m2.release(sens, &mut r2),
            &events,
            delta,
        )
    };
    let lb = run(good);
    eprintln!("audit: gaussian at δ {delta:.4}: ε_lb {lb:.3} (claim {target})");
    assert!(lb <= target, "ε_lb {lb} at δ {delta}");
    // σ × 0.8: ρ × 1/0.64.
    let bad = DiscreteGaussian::new((sens * sens) as u64, eps(rho / 0.64)).unwrap();
    let lb_bad = run(bad);
    eprintln!("audit: gaussian ×0.8 σ: ε_lb {lb_bad:.3}");
    assert!(
        lb_bad > target,
        "mis-scaled Gaussian passed: ε_lb {lb_bad} at δ {delta}"
    );
}

/// The release the query path builds for keys found in the data: one
/// count measurement noised by the selection's mechanism, decided by it.
/// The audits below run `ReleasePlan::select_group`, the function the
/// server's collector calls for each group.
fn selecting(sel: &PartitionSelection) -> ReleasePlan {
    ReleasePlan {
        measurements: vec![Measurement::scalar(sel.noise().clone(), Grid::INTEGER)],
        outputs: vec![Output::Count { measurement: 0 }],
        selection: Some(KeySelection {
            count: 0,
            selection: sel.clone(),
        }),
        zcdp: None,
    }
}

/// A key held by one unit is released with probability at most δ; a
/// threshold one noise scale (at least 2) below τ releases it more often
/// than δ. (Two below, at scale 6, released it only 1.34 × as often as
/// δ allows: the audit missed that about once in 250 runs.)
#[test]
fn partition_selection_releases_a_lone_key_rarely() {
    let n = 400_000usize;
    for (contribution, delta) in [
        (Contribution::ungrouped(1), 1e-3),
        (
            Contribution {
                max_partitions: 3,
                max_rows: 2,
            },
            3e-3,
        ),
    ] {
        let sel = PartitionSelection::laplace(contribution, eps(1.0), delta).unwrap();
        let mut rng = secure_rng();
        let lone = contribution.max_rows as i64;
        let released = (0..n)
            .filter(|_| selecting(&sel).select_group(&[lone], &mut rng).is_some())
            .count();
        let per_key = delta / contribution.max_partitions as f64;
        assert!(
            cp_lower(released, n, FALSE_ALARM) <= per_key,
            "{released} of {n} released, δ/L0 = {per_key}"
        );
        // The noise scale b from the variance 2p/(1-p)² ≈ 2b² (a test
        // tolerance, not a privacy parameter).
        let lower_by = ((sel.noise().variance() / 2.0).sqrt().ceil() as i64).max(2);
        let lowered = (0..n)
            .filter(|_| {
                sel.noise().release(lone, &mut rng) >= i128::from(sel.threshold() - lower_by)
            })
            .count();
        assert!(
            cp_lower(lowered, n, FALSE_ALARM) > per_key,
            "threshold τ-{lower_by} still below δ: {lowered}"
        );
    }
    let g = PartitionSelection::gaussian(Contribution::ungrouped(1), eps(0.5), 1e-3).unwrap();
    let mut rng = secure_rng();
    let released = (0..n)
        .filter(|_| selecting(&g).select_group(&[1], &mut rng).is_some())
        .count();
    assert!(
        cp_lower(released, n, FALSE_ALARM) <= 1e-3,
        "gaussian: {released}"
    );
}

/// Partition selection at extreme noise scales (b up to 2⁴⁰, where an
/// `f64` threshold lost precision): a lone key still passes with
/// probability at most δ, and a threshold lowered by one scale (which
/// multiplies that probability by about e) fails the same audit.
#[test]
fn partition_selection_holds_at_extreme_scales() {
    let n = 200_000usize;
    let delta = 2e-3;
    for exp in [20u32, 40] {
        let epsilon = Rational::new(1u32.into(), num_bigint::BigUint::from(1u8) << exp as usize);
        let sel = PartitionSelection::laplace(Contribution::ungrouped(1), epsilon, delta).unwrap();
        let mut rng = secure_rng();
        let released = (0..n)
            .filter(|_| selecting(&sel).select_group(&[1], &mut rng).is_some())
            .count();
        // A lone key passes with probability δ itself (to 1e-8), so the
        // honest check's false alarm rate is its level whatever n is:
        // 1e-6 here, where the negative below fails at P ≈ e·δ anyway.
        assert!(
            cp_lower(released, n, 1e-6) <= delta,
            "b = 2^{exp}: {released} of {n} released, δ = {delta}"
        );
        let lowered = i128::from(sel.threshold()) - (1i128 << exp);
        let mis = (0..n)
            .filter(|_| sel.noise().release(1, &mut rng) >= lowered)
            .count();
        assert!(
            cp_lower(mis, n, FALSE_ALARM) > delta,
            "b = 2^{exp}: a threshold one scale lower still passed: {mis}"
        );
    }
}

/// Mironov's attack needs outputs one input can produce and its neighbour
/// cannot. Released real sums are multiples of the grid unit for every
/// input, and every residue class of the noisy integer appears for both.
#[test]
fn no_floating_point_support_gaps() {
    let (mut plan, delta_units) = sum_plan(1.0, 1);
    // Values of both signs, so no sign is imposed after noise (a sum of
    // non-negative values is released ≥ 0: 0 is then in both supports).
    plan.outputs = vec![Output::Sum {
        measurement: 0,
        integer: false,
        lower: -5000.0,
        upper: 5000.0,
    }];
    let unit = plan.measurements[0].grid.unit();
    let mut rng = secure_rng();
    for raw in [0i64, delta_units, delta_units / 3 + 1] {
        let mut residues = [0usize; 7];
        for _ in 0..20_000 {
            let v = plan.release(&[raw], 0.95, &mut rng)[0].value.as_f64();
            let units = v / unit;
            assert_eq!(units.fract(), 0.0, "{v} is off the grid");
            residues[(units as i64).rem_euclid(7) as usize] += 1;
        }
        assert!(residues.iter().all(|&c| c > 2_000), "{residues:?}");
    }
}

/// The exponential mechanism (MST's choice of tree edges). Neighbours
/// move every score by at most Δ in either direction: candidate 0 goes
/// from last (0 against Δ for the other 63) to first (Δ against 0), the
/// case where the ratio of its probabilities approaches e^ε. The
/// mis-scaled copy drops the 2 in ε/(2Δ), which is only sound for scores
/// that move one way — these do not — and must fail.
///
/// The telling event (candidate 0 chosen) has probability about 1 % under
/// x, so the audit draws 1 000 000 outputs a side: with 100 000 the honest
/// bound (true ε 0.98) scattered around 0.78 with a standard deviation of
/// about 0.045, and fell below the power floor of 0.7 about once in a
/// hundred runs. With 10× the draws it centres near 0.92, about 0.012 wide.
#[test]
fn exponential_mechanism_audit() {
    use dpgate_dp::selection::ExponentialMechanism;
    let (claim, delta_q, m) = (1.0, 3i64, 64usize);
    let audit = |mechanism: ExponentialMechanism| {
        let x: Vec<i64> = (0..m).map(|i| if i == 0 { 0 } else { delta_q }).collect();
        let x_prime: Vec<i64> = (0..m).map(|i| if i == 0 { delta_q } else { 0 }).collect();
        let (m1, m2) = (mechanism.clone(), mechanism);
        let (mut r1, mut r2) = (secure_rng(), secure_rng());
        let events: Vec<Event<usize>> = vec![Box::new(|o| *o == 0), Box::new(|o| *o != 0)];
        epsilon_lower_bound_from(
            10 * DRAWS,
            move || m1.select(&x, &mut r1).unwrap(),
            move || m2.select(&x_prime, &mut r2).unwrap(),
            &events,
            0.0,
        )
    };
    let honest = ExponentialMechanism::new(eps(claim), delta_q as u64).unwrap();
    let lb = audit(honest);
    eprintln!("audit: exponential mechanism claim {claim}: ε_lb {lb:.3}");
    assert!(lb <= claim, "ε_lb {lb} > claim {claim}");
    assert!(lb > 0.8 * claim, "audit too weak to mean anything: {lb}");
    // ε/Δ instead of ε/(2Δ): the same as claiming twice the ε.
    let bad = ExponentialMechanism::new(eps(2.0 * claim), delta_q as u64).unwrap();
    let lb_bad = audit(bad);
    eprintln!("audit: exponential mechanism without the 2: ε_lb {lb_bad:.3}");
    assert!(lb_bad > claim, "mis-scaled copy passed: ε_lb {lb_bad}");
}
