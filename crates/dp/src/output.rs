//! The outputs a release derives from its noisy measurements, and how:
//! each value and its confidence interval are post-processing of noisy
//! values and public parameters only (free under DP).

use statrs::distribution::{ContinuousCDF, Normal};

use crate::release::{ReleasePlan, Released, ReleasedColumn};

/// How one output column is derived from measurements.
#[derive(Clone, Debug)]
pub enum Output {
    /// A count, clamped at zero after noise.
    Count {
        /// Index of the count measurement.
        measurement: usize,
    },
    /// A sum of clamped values. A sum of values that are all ≥ 0 is
    /// released ≥ 0 (and of values all ≤ 0, ≤ 0): projecting onto a set
    /// that holds the true sum never moves the answer away from it.
    Sum {
        /// Index of the sum measurement.
        measurement: usize,
        /// Whether the column is integral (released as an integer).
        integer: bool,
        /// Declared lower bound of the summed values.
        lower: f64,
        /// Declared upper bound of the summed values.
        upper: f64,
    },
    /// A mean: `center` plus the noisy sum of values less `center` over
    /// the noisy count, clamped to the declared bounds. Centred on the
    /// middle of the range, the sum's sensitivity is k·(upper − lower)/2
    /// instead of k·max(|lower|, |upper|); with `center` 0 the sum is the
    /// plain sum (shared with a SUM of the same values).
    Mean {
        /// Index of the sum measurement (of values less `center`).
        sum: usize,
        /// Index of the count measurement.
        count: usize,
        /// Declared lower bound of the averaged values.
        lower: f64,
        /// Declared upper bound of the averaged values.
        upper: f64,
        /// What was subtracted from each value before summing.
        center: f64,
    },
    /// Variance (or standard deviation) from the count, the sum and the
    /// sum of squares of values centred at `center` (|x - center| ≤ radius).
    Variance {
        /// Index of the count measurement.
        count: usize,
        /// Index of the sum of centred values.
        sum: usize,
        /// Index of the sum of squared centred values.
        sum_squares: usize,
        /// Radius of the declared range: (upper - lower) / 2.
        radius: f64,
        /// Sample (n - 1) rather than population variance.
        sample: bool,
        /// Release the square root (standard deviation).
        stddev: bool,
    },
    /// A quantile from a noisy histogram over equal bins of [lower, upper].
    Quantile {
        /// Index of the histogram measurement.
        histogram: usize,
        /// Declared lower bound.
        lower: f64,
        /// Declared upper bound.
        upper: f64,
        /// The quantile in [0, 1] (0.5 for the median).
        p: f64,
    },
}

impl Output {
    /// The measurements this output reads, each with the squared partial
    /// derivative of the output in it at the worst case the declared bounds
    /// allow, up to a factor common to all (see [`crate::split`]).
    pub fn sensitivity_weights(&self) -> Vec<(usize, f64)> {
        match *self {
            Output::Count { measurement } | Output::Sum { measurement, .. } => {
                vec![(measurement, 1.0)]
            }
            // m = c + S/C: ∂/∂S = 1/C, |∂/∂C| = |S|/C² ≤ r/C, where r
            // bounds |x − c|; the 1/C² is common.
            Output::Mean {
                sum,
                count,
                lower,
                upper,
                center,
            } => {
                let r = (lower - center).abs().max((upper - center).abs());
                vec![(sum, 1.0), (count, r * r)]
            }
            // v = Q/C − (S/C)²: ∂/∂Q = 1/C, |∂/∂S| = 2|S|/C² ≤ 2r/C,
            // |∂/∂C| = |−Q/C + 2(S/C)²|/C ≤ 2r²/C; the 1/C² is common (and
            // the square root of a standard deviation scales all alike).
            Output::Variance {
                count,
                sum,
                sum_squares,
                radius: r,
                ..
            } => vec![
                (sum_squares, 1.0),
                (sum, 4.0 * r * r),
                (count, 4.0 * r.powi(4)),
            ],
            Output::Quantile { histogram, .. } => vec![(histogram, 1.0)],
        }
    }

    /// The measurement indices this output reads, to renumber them.
    pub fn measurements_mut(&mut self) -> Vec<&mut usize> {
        match self {
            Output::Count { measurement } | Output::Sum { measurement, .. } => vec![measurement],
            Output::Mean { sum, count, .. } => vec![sum, count],
            Output::Variance {
                count,
                sum,
                sum_squares,
                ..
            } => vec![count, sum, sum_squares],
            Output::Quantile { histogram, .. } => vec![histogram],
        }
    }
}

impl ReleasePlan {
    /// Post-processing: outputs and their intervals from noisy measurements.
    pub fn derive_all(&self, noisy: &[Vec<i128>], confidence: f64) -> Vec<ReleasedColumn> {
        self.outputs
            .iter()
            .map(|o| self.derive(o, noisy, 1.0 - confidence))
            .collect()
    }

    /// Half-widths known before any data (counts and sums), e.g. for EXPLAIN.
    pub fn half_widths(&self, confidence: f64) -> Vec<Option<f64>> {
        let alpha = 1.0 - confidence;
        self.outputs
            .iter()
            .map(|o| match o {
                Output::Count { measurement } | Output::Sum { measurement, .. } => {
                    Some(self.measurements[*measurement].width(alpha))
                }
                _ => None,
            })
            .collect()
    }

    fn value(&self, noisy: &[Vec<i128>], i: usize) -> f64 {
        noisy[i][0] as f64 * self.measurements[i].grid.unit()
    }

    fn derive(&self, output: &Output, noisy: &[Vec<i128>], alpha: f64) -> ReleasedColumn {
        let width = |i: usize, a: f64| self.measurements[i].width(a);
        match *output {
            Output::Count { measurement } => ReleasedColumn {
                // Post-processing of the noisy value: negative counts are 0,
                // counts beyond i64 show as its largest value.
                value: Released::Int(to_i64(noisy[measurement][0].max(0))),
                half_width: width(measurement, alpha),
            },
            Output::Sum {
                measurement,
                integer,
                lower,
                upper,
            } => {
                let unit = self.measurements[measurement].grid.unit();
                let mut units = noisy[measurement][0];
                if lower >= 0.0 {
                    units = units.max(0);
                }
                if upper <= 0.0 {
                    units = units.min(0);
                }
                let value = if integer && unit >= 1.0 {
                    Released::Int(to_i64(units.saturating_mul(unit as i128)))
                } else {
                    Released::Float(units as f64 * unit)
                };
                ReleasedColumn {
                    value,
                    half_width: width(measurement, alpha),
                }
            }
            Output::Mean {
                sum,
                count,
                lower,
                upper,
                center,
            } => {
                let s = self.value(noisy, sum);
                let c = self.value(noisy, count);
                let mean = |s: f64, c: f64| (center + s / c.max(1.0)).clamp(lower, upper);
                // Union bound: each measurement within its α/2 interval.
                let box_ = [(s, width(sum, alpha / 2.0)), (c, width(count, alpha / 2.0))];
                let value = mean(s, c);
                ReleasedColumn {
                    value: Released::Float(value),
                    half_width: box_half_width(value, &box_, |v| mean(v[0], v[1])),
                }
            }
            Output::Variance {
                count,
                sum,
                sum_squares,
                radius,
                sample,
                stddev,
            } => {
                let c = self.value(noisy, count);
                let s = self.value(noisy, sum);
                let q = self.value(noisy, sum_squares);
                let f = |v: &[f64]| {
                    let n = v[0].max(if sample { 2.0 } else { 1.0 });
                    let m = v[1] / n;
                    let mut var = (v[2] / n - m * m).clamp(0.0, radius * radius);
                    if sample {
                        var = (var * n / (n - 1.0)).min(radius * radius * 2.0);
                    }
                    if stddev {
                        var.sqrt()
                    } else {
                        var
                    }
                };
                let box_ = [
                    (c, width(count, alpha / 3.0)),
                    (s, width(sum, alpha / 3.0)),
                    (q, width(sum_squares, alpha / 3.0)),
                ];
                let value = f(&[c, s, q]);
                ReleasedColumn {
                    value: Released::Float(value),
                    half_width: box_half_width(value, &box_, f),
                }
            }
            Output::Quantile {
                histogram,
                lower,
                upper,
                p,
            } => {
                let m = &self.measurements[histogram];
                let counts: Vec<f64> = noisy[histogram].iter().map(|&c| c.max(0) as f64).collect();
                let value = histogram_quantile(&counts, lower, upper, p);
                // Rank error: the cumulative noisy count up to any bin is off
                // by a sum of at most `bins` independent noises; a normal
                // bound on that sum (by the CLT, conservative for ≥ 2 bins).
                let z = Normal::standard().inverse_cdf(1.0 - alpha / 2.0);
                let rank_err = z * (m.len as f64 * m.noise.variance()).sqrt();
                let total: f64 = counts.iter().sum();
                let at = |rank: f64| {
                    histogram_quantile(
                        &counts,
                        lower,
                        upper,
                        (rank / total.max(1.0)).clamp(0.0, 1.0),
                    )
                };
                let lo = at(p * total - rank_err);
                let hi = at(p * total + rank_err);
                ReleasedColumn {
                    value: Released::Float(value),
                    // At least one bin: interpolating inside a bin can be off by that much.
                    half_width: (value - lo)
                        .max(hi - value)
                        .max((upper - lower) / m.len as f64),
                }
            }
        }
    }
}

/// A noisy integer as `i64`, clamped (post-processing: a function of the
/// noisy value only).
fn to_i64(v: i128) -> i64 {
    v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
}

/// The largest distance from `value` of `f` over the corners (and the
/// centre lines) of the box of measurement intervals `(centre, half-width)`.
/// `f` here is monotone or unimodal in each coordinate, so its extremes on
/// the box lie at corners or where a coordinate is zero.
fn box_half_width(value: f64, box_: &[(f64, f64)], f: impl Fn(&[f64]) -> f64) -> f64 {
    let choices: Vec<Vec<f64>> = box_
        .iter()
        .map(|&(c, h)| {
            let mut v = vec![c - h, c + h];
            if c - h < 0.0 && c + h > 0.0 {
                v.push(0.0);
            }
            v
        })
        .collect();
    let mut worst: f64 = 0.0;
    let mut idx = vec![0usize; choices.len()];
    loop {
        let point: Vec<f64> = idx.iter().zip(&choices).map(|(&i, c)| c[i]).collect();
        worst = worst.max((f(&point) - value).abs());
        let mut k = 0;
        while k < idx.len() {
            idx[k] += 1;
            if idx[k] < choices[k].len() {
                break;
            }
            idx[k] = 0;
            k += 1;
        }
        if k == idx.len() {
            return worst;
        }
    }
}

/// The p-quantile of values summarised by bin counts over equal bins of
/// [lower, upper], interpolating linearly within the bin.
pub fn histogram_quantile(counts: &[f64], lower: f64, upper: f64, p: f64) -> f64 {
    let total: f64 = counts.iter().sum();
    if total <= 0.0 || counts.is_empty() {
        return (lower + upper) / 2.0;
    }
    let width = (upper - lower) / counts.len() as f64;
    let target = p.clamp(0.0, 1.0) * total;
    let mut cum = 0.0;
    for (i, &c) in counts.iter().enumerate() {
        if c > 0.0 && cum + c >= target {
            let within = ((target - cum) / c).clamp(0.0, 1.0);
            return lower + width * (i as f64 + within);
        }
        cum += c;
    }
    upper
}
