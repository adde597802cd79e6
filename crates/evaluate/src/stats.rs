//! The evaluator's statistics: exact binomial (Clopper–Pearson) bounds,
//! the empirical ε lower bound they give on two output samples, and
//! Student's one-sample t-test.

use statrs::distribution::{Beta, ContinuousCDF, Normal, StudentsT};

/// Lower end of the one-sided Clopper–Pearson bound for a binomial
/// proportion with `k` successes in `n` trials: the true proportion is
/// below it with probability at most `alpha`.
pub fn cp_lower(k: u64, n: u64, alpha: f64) -> f64 {
    if k == 0 || n == 0 {
        return 0.0;
    }
    Beta::new(k as f64, (n - k + 1) as f64)
        .map(|b| b.inverse_cdf(alpha))
        .unwrap_or(0.0)
}

/// Upper end of the one-sided Clopper–Pearson bound (above it with
/// probability at most `alpha`).
pub fn cp_upper(k: u64, n: u64, alpha: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    Beta::new((k + 1) as f64, (n - k) as f64)
        .map(|b| b.inverse_cdf(1.0 - alpha))
        .unwrap_or(1.0)
}

/// Two-sided p-value of Student's one-sample t-test that `xs` has mean 0
/// (`None` with fewer than two values).
pub fn t_test(xs: &[f64]) -> Option<f64> {
    let n = xs.len();
    if n < 2 {
        return None;
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    if var == 0.0 {
        return Some(if mean == 0.0 { 1.0 } else { 0.0 });
    }
    let t = mean / (var / n as f64).sqrt();
    let dist = StudentsT::new(0.0, 1.0, (n - 1) as f64).ok()?;
    Some((2.0 * (1.0 - dist.cdf(t.abs()))).clamp(0.0, 1.0))
}

/// How many events' counts two samples are compared on.
#[derive(Clone, Debug, PartialEq)]
pub struct Counts {
    /// Per event, how many outputs on D fell in it.
    pub d: Vec<u64>,
    /// Per event, how many outputs on the neighbour fell in it.
    pub neighbour: Vec<u64>,
    /// Outputs on D.
    pub n_d: u64,
    /// Outputs on the neighbour.
    pub n_neighbour: u64,
}

/// The largest ε any event proves, at confidence `1 − alpha` for the whole
/// family (Bonferroni over both directions of every event): for an event
/// E, P[M(D) ∈ E] ≤ e^ε P[M(D′) ∈ E] + δ must hold, so
/// ln((lower(P[M(D) ∈ E]) − δ) / upper(P[M(D′) ∈ E])) is a lower bound on
/// the ε the release can have, unless the bounds fail (probability ≤ alpha).
pub fn epsilon_lower_bound(counts: &Counts, delta: f64, alpha: f64) -> f64 {
    let tests = (2 * counts.d.len()).max(1) as f64;
    let a = alpha / tests;
    let one_way = |k_p: u64, n_p: u64, k_q: u64, n_q: u64| {
        let p = cp_lower(k_p, n_p, a) - delta;
        let q = cp_upper(k_q, n_q, a);
        if p > 0.0 && q > 0.0 {
            (p / q).ln()
        } else {
            0.0
        }
    };
    counts
        .d
        .iter()
        .zip(&counts.neighbour)
        .map(|(&kd, &kn)| {
            let forward = one_way(kd, counts.n_d, kn, counts.n_neighbour);
            let backward = one_way(kn, counts.n_neighbour, kd, counts.n_d);
            forward.max(backward)
        })
        .fold(0.0, f64::max)
}

/// The largest bound [`epsilon_lower_bound`] can give with `trials`
/// outputs per side and `events` events at `alpha`: an event seen in
/// every trial on one side and never on the other.
pub fn epsilon_ceiling(trials: u64, events: usize, delta: f64, alpha: f64) -> f64 {
    let a = alpha / (2 * events).max(1) as f64;
    let (p, q) = (cp_lower(trials, trials, a) - delta, cp_upper(0, trials, a));
    if p > 0.0 && q > 0.0 {
        (p / q).ln()
    } else {
        0.0
    }
}

/// Events over a real-valued output (`None`: the value was not released):
/// the bins between consecutive `edges`, every lower and upper tail, and
/// "not released". Tails are where a shifted distribution differs most.
pub fn value_counts(d: &[Option<f64>], neighbour: &[Option<f64>], edges: &[f64]) -> Counts {
    let bins = edges.len() + 1;
    let histogram = |xs: &[Option<f64>]| {
        let mut h = vec![0u64; bins + 1];
        for x in xs {
            match x {
                Some(v) => h[edges.partition_point(|e| e <= v)] += 1,
                None => h[bins] += 1,
            }
        }
        h
    };
    let events = |h: &[u64]| {
        let mut e = h.to_vec();
        for i in 1..bins {
            e.push(h[..i].iter().sum());
            e.push(h[i..bins].iter().sum());
        }
        e
    };
    Counts {
        d: events(&histogram(d)),
        neighbour: events(&histogram(neighbour)),
        n_d: d.len() as u64,
        n_neighbour: neighbour.len() as u64,
    }
}

/// Bin edges: the distinct `bins`-quantiles of `calibration` (outputs not
/// used for counting, so the events are fixed before the test).
pub fn quantile_edges(calibration: &[f64], bins: usize) -> Vec<f64> {
    let mut xs: Vec<f64> = calibration
        .iter()
        .copied()
        .filter(|x| x.is_finite())
        .collect();
    if xs.is_empty() {
        return Vec::new();
    }
    xs.sort_by(f64::total_cmp);
    let mut edges: Vec<f64> = (1..bins)
        .map(|j| xs[(j * xs.len() / bins).min(xs.len() - 1)])
        .collect();
    edges.dedup();
    edges
}

/// Mean and (sample) standard deviation.
pub fn mean_sd(xs: &[f64]) -> (f64, f64) {
    let n = xs.len().max(1) as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// The median of `xs` (NaN when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// The smallest ε for which a Gaussian mechanism whose two outputs'
/// means lie `mu` standard deviations apart is (ε, `delta`)-DP on that
/// pair: the exact privacy profile δ(ε) = Φ(μ/2 − ε/μ) − e^ε·Φ(−μ/2 − ε/μ)
/// (Balle and Wang, 2018), decreasing in ε, solved by bisection.
pub fn gaussian_epsilon(mu: f64, delta: f64) -> f64 {
    let Ok(phi) = Normal::new(0.0, 1.0) else {
        return f64::NAN;
    };
    if mu <= 0.0 {
        return 0.0;
    }
    let profile = |e: f64| phi.cdf(mu / 2.0 - e / mu) - e.exp() * phi.cdf(-mu / 2.0 - e / mu);
    if profile(0.0) <= delta {
        return 0.0;
    }
    let (mut lo, mut hi) = (0.0, 1.0);
    while profile(hi) > delta && hi < 1e6 {
        lo = hi;
        hi *= 2.0;
    }
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if profile(mid) > delta {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64) {
        assert!((got - want).abs() < 1e-9, "{got} != {want}");
    }

    #[test]
    fn clopper_pearson_matches_known_values() {
        // scipy.stats.beta.ppf(0.025, 5, 6) and ppf(0.975, 6, 5): the 95 %
        // interval of 5 successes in 10 trials.
        close(cp_lower(5, 10, 0.025), 0.187_086_028_447_398_55);
        close(cp_upper(5, 10, 0.025), 0.812_913_971_552_601_5);
        close(cp_upper(0, 10, 0.025), 0.308_497_107_818_760_7);
        close(cp_lower(37, 100, 0.05), 0.289_355_367_440_998);
        assert_eq!(cp_lower(0, 10, 0.05), 0.0);
        assert_eq!(cp_upper(10, 10, 0.05), 1.0);
    }

    #[test]
    fn gaussian_privacy_profile_matches_known_values() {
        // Balle and Wang's analytic Gaussian mechanism: σ ≈ 3.73 for
        // Δ = 1 at (1, 1e-5).
        let e = gaussian_epsilon(1.0 / 3.73, 1e-5);
        assert!((e - 1.000_186).abs() < 1e-5, "{e}");
        // Φ(1/2) − Φ(−1/2) = 0.3829…: δ at ε = 0 for μ = 1.
        assert_eq!(gaussian_epsilon(1.0, 0.383), 0.0);
        assert!(gaussian_epsilon(1.0, 0.38) > 0.0);
        let e = gaussian_epsilon(1.0, 1e-5);
        assert!((e - 4.377_178).abs() < 1e-5, "{e}");
        assert_eq!(gaussian_epsilon(0.0, 1e-5), 0.0);
    }

    #[test]
    fn t_test_matches_known_values() {
        // scipy.stats.ttest_1samp(..., 0).pvalue
        close(
            t_test(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap(),
            0.013_235_599_563_682_69,
        );
        close(
            t_test(&[0.3, -0.2, 0.1, 0.5, -0.4, 0.2]).unwrap(),
            0.564_613_976_879_490_1,
        );
        assert_eq!(t_test(&[1.0]), None);
        assert_eq!(t_test(&[0.0, 0.0]), Some(1.0));
    }

    #[test]
    fn epsilon_bound_sees_separation_and_only_it() {
        let same = Counts {
            d: vec![500, 500],
            neighbour: vec![500, 500],
            n_d: 1000,
            n_neighbour: 1000,
        };
        assert_eq!(epsilon_lower_bound(&same, 0.0, 0.05), 0.0);
        // 900 vs 100 of 1000: ln(9) = 2.2 at best; the bound must be
        // positive but below it.
        let apart = Counts {
            d: vec![900, 100],
            neighbour: vec![100, 900],
            n_d: 1000,
            n_neighbour: 1000,
        };
        let lb = epsilon_lower_bound(&apart, 0.0, 0.05);
        assert!(lb > 1.5 && lb < 9f64.ln(), "{lb}");
        // δ absorbs a difference of rare events.
        let rare = Counts {
            d: vec![30],
            neighbour: vec![0],
            n_d: 1000,
            n_neighbour: 1000,
        };
        assert!(epsilon_lower_bound(&rare, 0.0, 0.05) > 0.0);
        assert_eq!(epsilon_lower_bound(&rare, 0.1, 0.05), 0.0);
    }

    #[test]
    fn value_events_count_bins_tails_and_absence() {
        let c = value_counts(&[Some(0.0), Some(5.0), None], &[Some(9.0)], &[1.0, 6.0]);
        // bins: <1, [1,6), ≥6, absent; then tails at edge 1 and edge 2.
        assert_eq!(c.d, vec![1, 1, 0, 1, 1, 1, 2, 0]);
        assert_eq!(c.neighbour, vec![0, 0, 1, 0, 0, 1, 0, 1]);
        assert_eq!(quantile_edges(&[3.0, 1.0, 2.0, 4.0], 2), vec![3.0]);
        assert_eq!(quantile_edges(&[1.0; 10], 4), vec![1.0]);
        close(median(&[3.0, 1.0, 2.0, 10.0]), 2.5);
        // 800 trials, 29 events at α = 0.05/60: about 4.2, and more
        // trials see further.
        let c = epsilon_ceiling(800, 29, 0.0, 0.05 / 60.0);
        assert!((3.9..4.5).contains(&c), "{c}");
        assert!(epsilon_ceiling(8000, 29, 0.0, 0.05 / 60.0) > c + 2.0);
    }
}
