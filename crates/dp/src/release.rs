//! From raw measurements to released values: noise each measurement once,
//! then derive every output column by post-processing (free), with its
//! confidence interval computed from public parameters and noisy values
//! only.

use statrs::distribution::{ContinuousCDF, Normal};

use crate::accounting::{compose, PrivacyLoss};
use crate::grid::Grid;
use crate::noise::Noise;
use crate::partition::PartitionSelection;
use crate::rational::Rational;
use crate::samplers::SecureRng;

/// One noisy measurement: an integer-valued query (a count, a sum in grid
/// units, or a vector such as a histogram) and the noise calibrated to its
/// sensitivity. A vector of `len` values is noised coordinate-wise with
/// noise calibrated to the whole vector's sensitivity, and costs one loss.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// The noise, carrying sensitivity and privacy loss.
    pub noise: Noise,
    /// The grid raw values are expressed in (integer grid for counts).
    pub grid: Grid,
    /// Number of raw values (1 for scalars, bins for histograms).
    pub len: usize,
}

impl Measurement {
    /// A scalar measurement.
    pub fn scalar(noise: impl Into<Noise>, grid: Grid) -> Measurement {
        Measurement {
            noise: noise.into(),
            grid,
            len: 1,
        }
    }

    fn width(&self, alpha: f64) -> f64 {
        self.noise.half_width(alpha) * self.grid.unit()
    }
}

/// How one output column is derived from measurements.
#[derive(Clone, Debug)]
pub enum Output {
    /// A count, clamped at zero after noise.
    Count {
        /// Index of the count measurement.
        measurement: usize,
    },
    /// A sum of clamped values.
    Sum {
        /// Index of the sum measurement.
        measurement: usize,
        /// Whether the column is integral (released as an integer).
        integer: bool,
    },
    /// A mean: noisy sum over noisy count, clamped to the declared bounds.
    Mean {
        /// Index of the sum measurement.
        sum: usize,
        /// Index of the count measurement.
        count: usize,
        /// Declared lower bound of the averaged values.
        lower: f64,
        /// Declared upper bound of the averaged values.
        upper: f64,
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

/// All measurements of one query, the outputs derived from them, and
/// how its group keys are selected: the whole release, whose cost is
/// computed from these parts and nowhere else.
///
/// Privacy argument. Each measurement is an integer query whose
/// sensitivity (L1 for Laplace, squared L2 for Gaussian) over one unit's
/// bounded contribution its noise is calibrated for, so it is ε-DP
/// (ρ-zCDP). The measurements are released together, hence by sequential
/// composition the release is (Σε)-DP and (Σρ)-zCDP ([`Self::cost`]).
/// With partition selection, the keys released are those whose noisy
/// count (one of the measurements, noised by the selection's own
/// mechanism) clears τ; a key only one unit holds passes with
/// probability at most δ, so keys and values together are (Σε, δ)-DP
/// (see [`PartitionSelection`]). Everything the outputs do with the noisy
/// values is post-processing.
#[derive(Clone, Debug, Default)]
pub struct ReleasePlan {
    /// Measurements, in the order the backend returns their raw values.
    pub measurements: Vec<Measurement>,
    /// Output columns, in the order the analyst asked for them.
    pub outputs: Vec<Output>,
    /// Key selection, when group keys are found in the data.
    pub selection: Option<KeySelection>,
}

/// Keys found in the data are released only when the noisy count of
/// measurement `count` passes `selection` (whose mechanism noises that
/// measurement).
#[derive(Clone, Debug)]
pub struct KeySelection {
    /// Index of the deciding count measurement.
    pub count: usize,
    /// The audited thresholding.
    pub selection: PartitionSelection,
}

/// What a release costs: the composition of its parts, exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct Cost {
    /// Σ ε of the pure (Laplace) measurements, exact.
    pub epsilon: Rational,
    /// Σ ρ of the zCDP (Gaussian) measurements, exact.
    pub rho: Rational,
    /// δ of partition selection (0 without it).
    pub delta: f64,
}

impl Cost {
    /// ε as `f64` (the nearest double to the exact sum).
    pub fn epsilon_f64(&self) -> f64 {
        self.epsilon.to_f64()
    }
}

/// Noise drawn for a plan before its data is read: one vector per measurement.
#[derive(Clone, Debug)]
pub struct NoiseDraw(Vec<Vec<i128>>);

/// Noisy measurements: one vector per measurement, each value the exact
/// sum of a raw `i64` and a draw (see `samplers`), never saturated.
pub type Noisy = Vec<Vec<i128>>;

/// A released value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Released {
    /// An integer.
    Int(i64),
    /// A real number.
    Float(f64),
}

impl Released {
    /// The value as f64.
    pub fn as_f64(&self) -> f64 {
        match self {
            Released::Int(i) => *i as f64,
            Released::Float(f) => *f,
        }
    }
}

/// A released value with the half-width of its confidence interval.
#[derive(Clone, Debug, PartialEq)]
pub struct ReleasedColumn {
    /// The noisy, post-processed value.
    pub value: Released,
    /// Half-width of the interval at the requested confidence.
    pub half_width: f64,
}

impl ReleasePlan {
    /// Number of raw values the backend must return.
    pub fn raw_len(&self) -> usize {
        self.measurements.iter().map(|m| m.len).sum()
    }

    /// Total privacy loss of the plan by sequential composition.
    pub fn loss(&self, delta: f64) -> PrivacyLoss {
        let parts: Vec<PrivacyLoss> = self.measurements.iter().map(|m| m.noise.loss()).collect();
        compose(&parts, delta)
    }

    /// The release's cost by sequential composition of its measurements
    /// (ε exactly for Laplace, ρ exactly for Gaussian) plus the δ of key
    /// selection. The deciding count of a selection is one of the
    /// measurements, so its ε is counted once.
    pub fn cost(&self) -> Cost {
        let (mut epsilon, mut rho) = (Rational::integer(0), Rational::integer(0));
        for m in &self.measurements {
            match &m.noise {
                Noise::Laplace(l) => epsilon = epsilon.add(l.epsilon()),
                Noise::Gaussian(g) => rho = rho.add(g.rho()),
            }
        }
        Cost {
            epsilon,
            rho,
            delta: self.selection.as_ref().map_or(0.0, |s| s.selection.delta()),
        }
    }

    /// The exact total ε when every measurement is pure (Laplace).
    pub fn pure_epsilon(&self) -> Option<crate::Rational> {
        let parts: Option<Vec<crate::Rational>> = self
            .measurements
            .iter()
            .map(|m| match &m.noise {
                Noise::Laplace(l) => Some(l.epsilon().clone()),
                Noise::Gaussian(_) => None,
            })
            .collect();
        parts.map(|p| crate::accounting::sum_epsilons(&p))
    }

    /// Noises `raw` (the measurements' values, concatenated) and derives
    /// the outputs. `confidence` is e.g. 0.95.
    pub fn release<R: SecureRng + ?Sized>(
        &self,
        raw: &[i64],
        confidence: f64,
        rng: &mut R,
    ) -> Vec<ReleasedColumn> {
        let noisy = self.noise(raw, rng);
        self.derive_all(&noisy, confidence)
    }

    /// The mechanism proper: each measurement noised once, one vector per
    /// measurement. Everything after this is post-processing.
    pub fn noise<R: SecureRng + ?Sized>(&self, raw: &[i64], rng: &mut R) -> Noisy {
        self.add_noise(raw, &self.draw_noise(rng))
    }

    /// Draws the noise for every coordinate without looking at any data.
    ///
    /// The time an exact sampler takes grows with the magnitude it draws.
    /// Callers draw noise here, off the request path (while the charge and
    /// the backend query run), and then add it with [`Self::add_noise`],
    /// whose time does not depend on the noise, so response times do not
    /// reveal how much noise was added.
    pub fn draw_noise<R: SecureRng + ?Sized>(&self, rng: &mut R) -> NoiseDraw {
        NoiseDraw(
            self.measurements
                .iter()
                .map(|m| (0..m.len).map(|_| m.noise.release(0, rng)).collect())
                .collect(),
        )
    }

    /// The noise of measurement `i` alone (one value per coordinate).
    pub fn draw_one<R: SecureRng + ?Sized>(&self, i: usize, rng: &mut R) -> Vec<i128> {
        let m = &self.measurements[i];
        (0..m.len).map(|_| m.noise.release(0, rng)).collect()
    }

    /// A full draw whose measurement `i` is `drawn` (from [`Self::draw_one`])
    /// and whose others are drawn now: the same distribution as
    /// [`Self::draw_noise`], in two steps, so a decision on measurement `i`
    /// can come before the rest is drawn.
    pub fn draw_rest<R: SecureRng + ?Sized>(
        &self,
        i: usize,
        drawn: Vec<i128>,
        rng: &mut R,
    ) -> NoiseDraw {
        let mut drawn = Some(drawn);
        NoiseDraw(
            (0..self.measurements.len())
                .map(|j| match j == i {
                    true => drawn.take().expect("one measurement is given"),
                    false => self.draw_one(j, rng),
                })
                .collect(),
        )
    }

    /// Where measurement `i`'s raw values start among all raw values.
    pub fn offset(&self, i: usize) -> usize {
        self.measurements[..i].iter().map(|m| m.len).sum()
    }

    /// Partition selection of one group found in the data, whose raw
    /// values are `raw`: the deciding count's noise is drawn first and the
    /// audited decision ([`PartitionSelection::passes`]) made on it; only a
    /// group that passes gets the rest of its noise, which is returned
    /// (the same draw then releases it). Without selection every group
    /// passes with a full draw. This is the function both the query path
    /// and the audit run.
    pub fn select_group<R: SecureRng + ?Sized>(
        &self,
        raw: &[i64],
        rng: &mut R,
    ) -> Option<NoiseDraw> {
        let Some(KeySelection { count, selection }) = &self.selection else {
            return Some(self.draw_noise(rng));
        };
        let drawn = self.draw_one(*count, rng);
        let value = raw.get(self.offset(*count)).copied().unwrap_or(0);
        selection
            .passes(i128::from(value) + drawn[0])
            .then(|| self.draw_rest(*count, drawn, rng))
    }

    /// The whole release of one group: noise added to `raw`, the key
    /// selection decided on the noisy count, the outputs derived (`None`
    /// when the group's key is not released).
    pub fn apply(
        &self,
        raw: &[i64],
        draw: &NoiseDraw,
        confidence: f64,
    ) -> Option<Vec<ReleasedColumn>> {
        let noisy = self.add_noise(raw, draw);
        if let Some(KeySelection { count, selection }) = &self.selection {
            if !selection.passes(noisy[*count][0]) {
                return None;
            }
        }
        Some(self.derive_all(&noisy, confidence))
    }

    /// Adds drawn noise to raw values (the measurements' values, concatenated).
    pub fn add_noise(&self, raw: &[i64], noise: &NoiseDraw) -> Noisy {
        assert_eq!(
            raw.len(),
            self.raw_len(),
            "one raw value per measured coordinate"
        );
        let mut at = 0;
        noise
            .0
            .iter()
            .map(|draws| {
                let noisy = draws
                    .iter()
                    .zip(&raw[at..])
                    .map(|(z, v)| i128::from(*v) + z)
                    .collect();
                at += draws.len();
                noisy
            })
            .collect()
    }

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
            } => {
                let unit = self.measurements[measurement].grid.unit();
                let value = if integer && unit >= 1.0 {
                    Released::Int(to_i64(noisy[measurement][0].saturating_mul(unit as i128)))
                } else {
                    Released::Float(self.value(noisy, measurement))
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
            } => {
                let s = self.value(noisy, sum);
                let c = self.value(noisy, count);
                let mean = |s: f64, c: f64| (s / c.max(1.0)).clamp(lower, upper);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::laplace::DiscreteLaplace;

    fn laplace(sens: u64, eps: f64) -> Noise {
        DiscreteLaplace::new(sens, Rational::from_f64(eps).unwrap())
            .unwrap()
            .into()
    }

    #[test]
    fn histogram_quantiles_interpolate() {
        assert_eq!(
            histogram_quantile(&[1.0, 1.0, 1.0, 1.0], 0.0, 4.0, 0.5),
            2.0
        );
        assert_eq!(
            histogram_quantile(&[0.0, 4.0, 0.0, 0.0], 0.0, 4.0, 0.5),
            1.5
        );
        assert_eq!(histogram_quantile(&[0.0; 4], 0.0, 4.0, 0.5), 2.0);
    }

    #[test]
    fn vector_measurements_cost_once() {
        let plan = ReleasePlan {
            measurements: vec![Measurement {
                noise: laplace(1, 0.5),
                grid: Grid::INTEGER,
                len: 8,
            }],
            outputs: vec![Output::Quantile {
                histogram: 0,
                lower: 0.0,
                upper: 8.0,
                p: 0.5,
            }],
            selection: None,
        };
        assert_eq!(plan.loss(1e-6), PrivacyLoss::Pure { epsilon: 0.5 });
        assert_eq!(plan.raw_len(), 8);
        let out = plan.release(&[100; 8], 0.95, &mut crate::secure_rng());
        assert!((out[0].value.as_f64() - 4.0).abs() < 1.0);
    }

    #[test]
    fn counts_never_go_negative() {
        let plan = ReleasePlan {
            measurements: vec![Measurement::scalar(laplace(1, 0.01), Grid::INTEGER)],
            outputs: vec![Output::Count { measurement: 0 }],
            selection: None,
        };
        let mut rng = crate::secure_rng();
        for _ in 0..200 {
            let Released::Int(v) = plan.release(&[0], 0.95, &mut rng)[0].value else {
                panic!()
            };
            assert!(v >= 0);
        }
    }
}
