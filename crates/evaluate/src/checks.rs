//! The four tests of one query, from its trials.
//!
//! - *Privacy*: the tracked released value (and the set of released row
//!   keys) on D and on D − u; the empirical ε lower bound over bins and
//!   tails fixed on calibration trials ([`crate::stats`]), which must not
//!   exceed the ε charged (with its δ).
//! - *Accuracy*: the share of released values whose plain answer lies in
//!   the reported interval, at least the configured confidence less the
//!   stated tolerance; the error is split into bounding (bounded answer −
//!   plain answer) and noise (released − bounded).
//! - *Utility*: relative error and interval width; values whose interval
//!   is wider than the value are flagged, with the ε that would make the
//!   width a tenth of it.
//! - *Bias*: the mean of released − bounded answer, per value, by a
//!   t-test (Bonferroni over every value of the run, applied by the caller);
//!   where post-processing clamps or a nonlinear derivation biases the
//!   value by design, the bias is reported and not failed on.

use std::collections::BTreeMap;

use dpgate_dp::release::{Output, ReleasePlan};
use serde::Serialize;

use crate::stats::{self, Counts};

/// The trials of one query.
#[derive(Default)]
pub struct Samples {
    /// The tracked value per trial on D (`None`: not released).
    pub tracked_d: Vec<Option<f64>>,
    /// The same on D − u.
    pub tracked_neighbour: Vec<Option<f64>>,
    /// The released row keys per trial on D, as one text.
    pub keys_d: Vec<String>,
    /// The same on D − u.
    pub keys_neighbour: Vec<String>,
    /// Per released value (row key and column), its trials on D.
    pub cells: BTreeMap<String, CellSamples>,
}

/// One released value's trials on D.
#[derive(Default)]
pub struct CellSamples {
    /// Index of its output in the release.
    pub output: usize,
    /// Released values.
    pub released: Vec<f64>,
    /// Reported half-widths.
    pub half_width: Vec<f64>,
    /// The bounded answer (no noise) of the same backend run.
    pub bounded: Vec<f64>,
    /// The plain answer, when the plain query ran.
    pub plain: Option<f64>,
}

/// The privacy test's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Privacy {
    /// Empirical ε lower bound (largest of value and key-set events).
    pub epsilon_lower: f64,
    /// The ε charged.
    pub claimed: f64,
    /// The δ charged.
    pub delta: f64,
    /// The largest bound these trials could show at all: a claim at or
    /// above it cannot be tested (inconclusive, which fails).
    pub ceiling: f64,
    /// Whether the bound stays within the claim, below the ceiling.
    pub pass: bool,
    /// Which value was tracked.
    pub tracked: String,
    /// The bound from the released key sets alone (when they vary).
    pub key_sets: Option<f64>,
    /// Events compared (after calibration), per side.
    pub trials: usize,
    /// Bin edges of the tracked value.
    pub edges: Vec<f64>,
    /// Counts per bin on D, the last "not released".
    pub histogram_d: Vec<u64>,
    /// Counts per bin on D − u.
    pub histogram_neighbour: Vec<u64>,
}

/// Bins of the tracked value's histograms.
const BINS: usize = 10;

/// Most keys whose presence is an event of their own.
const MAX_KEY_EVENTS: usize = 200;

/// The privacy test at family-wise error `alpha`; the first `calibration`
/// trials of each side fix the bins and key-set categories.
pub fn privacy(
    s: &Samples,
    tracked: String,
    claimed: f64,
    delta: f64,
    alpha: f64,
    calibration: usize,
) -> Privacy {
    let split = |v: &[Option<f64>]| {
        let c = calibration.min(v.len());
        (v[..c].to_vec(), v[c..].to_vec())
    };
    let (cal_d, test_d) = split(&s.tracked_d);
    let (cal_n, test_n) = split(&s.tracked_neighbour);
    let pooled: Vec<f64> = cal_d.iter().chain(&cal_n).flatten().copied().collect();
    let edges = stats::quantile_edges(&pooled, BINS);
    let varying_keys = s
        .keys_d
        .iter()
        .chain(&s.keys_neighbour)
        .any(|k| *k != s.keys_d[0]);
    // Half the error for each family when both are tested.
    let a = if varying_keys { alpha / 2.0 } else { alpha };
    let counts = stats::value_counts(&test_d, &test_n, &edges);
    let value_bound = stats::epsilon_lower_bound(&counts, delta, a);
    // Key events: each key's presence, and each whole key set seen in
    // calibration.
    let key_sets = varying_keys.then(|| {
        let c = calibration.min(s.keys_d.len());
        let mut sets: Vec<&String> = s.keys_d[..c].iter().chain(&s.keys_neighbour[..c]).collect();
        sets.sort();
        sets.dedup();
        let mut keys: Vec<&str> = sets.iter().flat_map(|k| k.split('\u{1f}')).collect();
        keys.sort();
        keys.dedup();
        keys.truncate(MAX_KEY_EVENTS);
        let count = |trials: &[String]| {
            let mut h = vec![0u64; sets.len() + 1 + keys.len()];
            for t in trials {
                h[sets.binary_search(&t).unwrap_or(sets.len())] += 1;
                let present: Vec<&str> = t.split('\u{1f}').collect();
                for (i, k) in keys.iter().enumerate() {
                    h[sets.len() + 1 + i] += u64::from(present.contains(k));
                }
            }
            h
        };
        let (d, n) = (&s.keys_d[c..], &s.keys_neighbour[c..]);
        stats::epsilon_lower_bound(
            &Counts {
                d: count(d),
                neighbour: count(n),
                n_d: d.len() as u64,
                n_neighbour: n.len() as u64,
            },
            delta,
            a,
        )
    });
    let bins = edges.len() + 2;
    let epsilon_lower = value_bound.max(key_sets.unwrap_or(0.0));
    let ceiling = stats::epsilon_ceiling(test_d.len() as u64, counts.d.len(), delta, a);
    Privacy {
        epsilon_lower,
        claimed,
        delta,
        ceiling,
        pass: claimed < ceiling && epsilon_lower <= claimed,
        tracked,
        key_sets,
        trials: test_d.len(),
        edges,
        histogram_d: counts.d[..bins].to_vec(),
        histogram_neighbour: counts.neighbour[..bins].to_vec(),
    }
}

/// The accuracy test's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Accuracy {
    /// Share of released values whose plain answer is in the interval.
    pub coverage: Option<f64>,
    /// Share whose bounded answer is (the noise alone).
    pub coverage_bounded: f64,
    /// The configured confidence.
    pub confidence: f64,
    /// How far below it one value's coverage may fall by chance at these
    /// trials (Clopper–Pearson, Bonferroni over the values tested).
    pub tolerance: f64,
    /// The value with the lowest coverage of its plain answer.
    pub worst: Option<(String, f64)>,
    /// Whether every value's coverage of its plain answer holds.
    pub pass: bool,
    /// Values tested (released in every trial, with a plain answer).
    pub values: usize,
    /// Values released in only some trials (selection or HAVING on their
    /// own noise conditions them): not tested.
    pub conditioned: usize,
    /// Mean |bounded − plain| relative to the interval half-width.
    pub bounding_error: Option<f64>,
    /// Mean |released − bounded| relative to the half-width.
    pub noise_error: f64,
    /// Why there is no plain answer, if there is none (then the test fails).
    pub plain_missing: Option<String>,
}

/// The accuracy test at family-wise error `alpha` over `trials` releases:
/// each value released in every trial must cover its plain answer at the
/// configured confidence, unless its Clopper–Pearson upper bound says so
/// by chance; without a plain answer the test fails (it could not look).
pub fn accuracy(
    s: &Samples,
    confidence: f64,
    trials: usize,
    alpha: f64,
    plain_missing: Option<String>,
) -> Accuracy {
    let tested: Vec<(&String, &CellSamples, f64)> = s
        .cells
        .iter()
        .filter(|(_, c)| c.released.len() >= trials)
        .filter_map(|(l, c)| c.plain.map(|p| (l, c, p)))
        .collect();
    let a = alpha / tested.len().max(1) as f64;
    let n = trials as u64;
    // The smallest share of n that is still consistent with `confidence`.
    let least = (0..=n)
        .find(|&k| stats::cp_upper(k, n, a) >= confidence)
        .unwrap_or(n);
    let tolerance = (confidence - least as f64 / n.max(1) as f64).max(0.0);
    let (mut all, mut in_bounded, mut covered_plain, mut with_plain) =
        (0usize, 0usize, 0usize, 0usize);
    let (mut bounding, mut noise) = (Vec::new(), Vec::new());
    for c in s.cells.values() {
        for ((r, w), b) in c.released.iter().zip(&c.half_width).zip(&c.bounded) {
            all += 1;
            in_bounded += usize::from((r - b).abs() <= *w);
            noise.push((r - b).abs() / w.max(1e-300));
            if let Some(p) = c.plain {
                with_plain += 1;
                covered_plain += usize::from((r - p).abs() <= *w);
                bounding.push((b - p).abs() / w.max(1e-300));
            }
        }
    }
    let mut worst: Option<(String, f64)> = None;
    let mut failed = 0;
    for (label, c, plain) in &tested {
        let k = c
            .released
            .iter()
            .zip(&c.half_width)
            .filter(|(r, w)| (*r - plain).abs() <= **w)
            .count() as u64;
        let share = k as f64 / c.released.len() as f64;
        if stats::cp_upper(k, c.released.len() as u64, a) < confidence {
            failed += 1;
        }
        if worst.as_ref().is_none_or(|(_, w)| share < *w) {
            worst = Some(((*label).clone(), share));
        }
    }
    let plain_missing = plain_missing.or_else(|| {
        tested
            .is_empty()
            .then(|| "no released value could be matched with a plain answer".to_string())
    });
    Accuracy {
        coverage: (with_plain > 0).then(|| covered_plain as f64 / with_plain as f64),
        coverage_bounded: in_bounded as f64 / all.max(1) as f64,
        confidence,
        tolerance,
        worst,
        pass: plain_missing.is_none() && failed == 0,
        values: tested.len(),
        conditioned: s
            .cells
            .values()
            .filter(|c| c.released.len() < trials)
            .count(),
        bounding_error: (!bounding.is_empty()).then(|| stats::mean_sd(&bounding).0),
        noise_error: stats::mean_sd(&noise).0,
        plain_missing,
    }
}

/// The utility report.
#[derive(Clone, Debug, Serialize)]
pub struct Utility {
    /// Mean |released − truth| / |truth| (truth: plain, else bounded).
    pub mean_relative_error: Option<f64>,
    /// Its median.
    pub median_relative_error: Option<f64>,
    /// Median of interval width (2 × half-width) / |truth|.
    pub median_relative_width: Option<f64>,
    /// Values whose interval is wider than the value, with the ε that
    /// would make their width a tenth of it.
    pub useless: Vec<(String, f64)>,
    /// Whether no value was flagged.
    pub pass: bool,
    /// A sample of signed relative errors, for the plot.
    pub errors: Vec<f64>,
}

/// The utility report at the query's charged `epsilon`. The suggested ε
/// scales the width as 1/ε, exact for Laplace noise and close for
/// Gaussian noise charged as (ε, δ).
pub fn utility(s: &Samples, epsilon: f64) -> Utility {
    let (mut rel, mut width, mut errors, mut useless) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (label, c) in &s.cells {
        let truth = c.plain.unwrap_or_else(|| stats::mean_sd(&c.bounded).0);
        let w = stats::median(&c.half_width) * 2.0;
        if truth != 0.0 && truth.is_finite() {
            width.push(w / truth.abs());
            if w > truth.abs() {
                useless.push((label.clone(), epsilon * w / (0.1 * truth.abs())));
            }
            for r in &c.released {
                rel.push((r - truth).abs() / truth.abs());
                if errors.len() < 2000 {
                    errors.push((r - truth) / truth.abs());
                }
            }
        }
    }
    let some = |v: &[f64], f: fn(&[f64]) -> f64| (!v.is_empty()).then(|| f(v));
    Utility {
        mean_relative_error: some(&rel, |v| stats::mean_sd(v).0),
        median_relative_error: some(&rel, stats::median),
        median_relative_width: some(&width, stats::median),
        pass: useless.is_empty(),
        useless,
        errors,
    }
}

/// One released value's bias.
#[derive(Clone, Debug, Serialize)]
pub struct CellBias {
    /// Row key and column.
    pub value: String,
    /// Mean of released − bounded answer.
    pub mean_error: f64,
    /// The t-test's two-sided p-value.
    pub p_value: Option<f64>,
    /// Why a bias is expected here (then the test does not fail).
    pub expected: Option<String>,
    /// Mean bounded − plain answer: the bias bounding and clamping add.
    pub clamping_bias: Option<f64>,
}

/// The bias of every released value of a query over `trials` releases.
/// A value released in only some of them (partition selection, HAVING or
/// LIMIT on noisy values) is conditioned on its own noise, so its mean
/// error is biased by design.
pub fn bias(s: &Samples, release: &ReleasePlan, trials: usize) -> Vec<CellBias> {
    s.cells
        .iter()
        .filter(|(_, c)| c.released.len() >= 2)
        .map(|(label, c)| {
            let errors: Vec<f64> = c
                .released
                .iter()
                .zip(&c.bounded)
                .map(|(r, b)| r - b)
                .collect();
            let bounded = stats::mean_sd(&c.bounded).0;
            let width = stats::median(&c.half_width);
            CellBias {
                value: label.clone(),
                mean_error: stats::mean_sd(&errors).0,
                p_value: stats::t_test(&errors),
                expected: if c.released.len() < trials {
                    Some(format!(
                        "released in {:.1}% of trials only: the choice depends on its noise",
                        c.released.len() as f64 * 100.0 / trials as f64
                    ))
                } else {
                    let error = stats::mean_sd(&errors).0;
                    release
                        .outputs
                        .get(c.output)
                        .and_then(|o| expected_bias(o, bounded, width, error))
                },
                clamping_bias: c.plain.map(|p| bounded - p),
            }
        })
        .collect()
}

/// Why `output` is biased by design near `value` (interval half-width
/// `width`, measured mean error `error`), if it is: post-processing that
/// clamps moves the mean of values within a half-width of the clamp
/// (counts and one-signed sums at 0, means at their bounds); a mean is a
/// ratio, and variances and quantiles are nonlinear in their noisy
/// measurements, which biases them by a little — excused only while the
/// bias stays below a quarter of the half-width.
pub fn expected_bias(output: &Output, value: f64, width: f64, error: f64) -> Option<String> {
    let near = |edge: f64| (value - edge).abs() < width;
    let small = error.abs() <= 0.25 * width;
    match *output {
        Output::Count { .. } if near(0.0) => Some("a count near 0 is clamped at 0".into()),
        Output::Sum { lower, upper, .. } if (lower >= 0.0 || upper <= 0.0) && near(0.0) => {
            Some("a sum of one-signed values near 0 is clamped at 0".into())
        }
        Output::Mean { lower, upper, .. } if near(lower) || near(upper) => {
            Some("a mean near its declared bounds is clamped to them".into())
        }
        Output::Mean { .. } if small => Some(
            "a mean is a ratio of noisy sums (bias below a quarter of the half-width)".into(),
        ),
        Output::Variance { .. } if small => Some(
            "a variance is nonlinear in its noisy sums (bias below a quarter of the half-width)"
                .into(),
        ),
        Output::Quantile { .. } if small => Some(
            "a quantile is read off a noisy histogram clamped at 0 (bias below a quarter of the half-width)"
                .into(),
        ),
        _ => None,
    }
}
