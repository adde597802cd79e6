//! From raw measurements to released values: noise each measurement once,
//! then derive every output column by post-processing (free), with its
//! confidence interval computed from public parameters only.

use crate::accounting::sum_epsilons;
use crate::grid::Grid;
use crate::laplace::DiscreteLaplace;
use crate::rational::Rational;
use crate::samplers::SecureRng;

/// One noisy measurement: an integer-valued query (a count, or a sum in
/// grid units) and the mechanism calibrated to its sensitivity.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// The mechanism, carrying sensitivity and ε.
    pub mechanism: DiscreteLaplace,
    /// The grid the raw value is expressed in (integer grid for counts).
    pub grid: Grid,
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
        /// Declared bounds of the averaged column.
        lower: f64,
        /// Declared bounds of the averaged column.
        upper: f64,
    },
}

/// All measurements of one query and the outputs derived from them.
#[derive(Clone, Debug, Default)]
pub struct ReleasePlan {
    /// Measurements, in the order the backend returns their raw values.
    pub measurements: Vec<Measurement>,
    /// Output columns, in the order the analyst asked for them.
    pub outputs: Vec<Output>,
}

/// A released value.
#[derive(Clone, Debug, PartialEq)]
pub enum Released {
    /// An integer.
    Int(i64),
    /// A real number.
    Float(f64),
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
    /// Total ε of the plan by sequential composition.
    pub fn epsilon(&self) -> Rational {
        let parts: Vec<Rational> = self
            .measurements
            .iter()
            .map(|m| m.mechanism.epsilon().clone())
            .collect();
        sum_epsilons(&parts)
    }

    /// Noises `raw` (one integer per measurement) and derives the outputs.
    /// `confidence` is e.g. 0.95.
    pub fn release<R: SecureRng + ?Sized>(
        &self,
        raw: &[i64],
        confidence: f64,
        rng: &mut R,
    ) -> Vec<ReleasedColumn> {
        assert_eq!(
            raw.len(),
            self.measurements.len(),
            "one raw value per measurement"
        );
        let noisy: Vec<i64> = self
            .measurements
            .iter()
            .zip(raw)
            .map(|(m, &v)| m.mechanism.release(v, rng))
            .collect();
        self.outputs
            .iter()
            .map(|o| self.derive(o, &noisy, 1.0 - confidence))
            .collect()
    }

    /// Half-widths without data, e.g. for EXPLAIN.
    pub fn half_widths(&self, confidence: f64) -> Vec<Option<f64>> {
        let alpha = 1.0 - confidence;
        self.outputs
            .iter()
            .map(|o| match o {
                Output::Count { measurement } | Output::Sum { measurement, .. } => {
                    let m = &self.measurements[*measurement];
                    Some(m.mechanism.half_width(alpha) * m.grid.unit())
                }
                Output::Mean { .. } => None,
            })
            .collect()
    }

    fn derive(&self, output: &Output, noisy: &[i64], alpha: f64) -> ReleasedColumn {
        let width = |i: usize, a: f64| {
            let m = &self.measurements[i];
            m.mechanism.half_width(a) * m.grid.unit()
        };
        match *output {
            Output::Count { measurement } => ReleasedColumn {
                value: Released::Int(noisy[measurement].max(0)),
                half_width: width(measurement, alpha),
            },
            Output::Sum {
                measurement,
                integer,
            } => {
                let unit = self.measurements[measurement].grid.unit();
                let value = if integer && unit >= 1.0 {
                    Released::Int(noisy[measurement].saturating_mul(unit as i64))
                } else {
                    Released::Float(noisy[measurement] as f64 * unit)
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
                let s = noisy[sum] as f64 * self.measurements[sum].grid.unit();
                let c = noisy[count].max(1) as f64;
                let mean = (s / c).clamp(lower, upper);
                // Union bound: sum and count each within their α/2 interval.
                let hs = width(sum, alpha / 2.0);
                let hc = width(count, alpha / 2.0);
                let range_half = (upper - lower) / 2.0;
                let half_width = if c - hc >= 1.0 {
                    let hi = ((s + hs) / (c - hc)).max((s + hs) / (c + hc));
                    let lo = ((s - hs) / (c - hc)).min((s - hs) / (c + hc));
                    (hi - mean).max(mean - lo).min(range_half.max(0.0))
                } else {
                    range_half
                };
                ReleasedColumn {
                    value: Released::Float(mean),
                    half_width,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samplers::secure_rng;

    fn laplace(sens: u64, eps: f64) -> DiscreteLaplace {
        DiscreteLaplace::new(sens, Rational::from_f64(eps).unwrap()).unwrap()
    }

    #[test]
    fn mean_interval_covers_the_truth() {
        // 1000 rows of value 40 (bounds 0..100), count and sum at ε=0.5 each.
        let grid = Grid::INTEGER;
        let plan = ReleasePlan {
            measurements: vec![
                Measurement {
                    mechanism: laplace(100, 0.5),
                    grid,
                },
                Measurement {
                    mechanism: laplace(1, 0.5),
                    grid,
                },
            ],
            outputs: vec![Output::Mean {
                sum: 0,
                count: 1,
                lower: 0.0,
                upper: 100.0,
            }],
        };
        assert_eq!(plan.epsilon(), Rational::integer(1));
        let mut rng = secure_rng();
        let trials = 2000;
        let covered = (0..trials)
            .filter(|_| {
                let out = &plan.release(&[40_000, 1000], 0.95, &mut rng)[0];
                let Released::Float(v) = out.value else {
                    panic!()
                };
                (v - 40.0).abs() <= out.half_width
            })
            .count();
        assert!(covered as f64 / trials as f64 >= 0.94, "{covered}");
    }

    #[test]
    fn counts_never_go_negative() {
        let plan = ReleasePlan {
            measurements: vec![Measurement {
                mechanism: laplace(1, 0.01),
                grid: Grid::INTEGER,
            }],
            outputs: vec![Output::Count { measurement: 0 }],
        };
        let mut rng = secure_rng();
        for _ in 0..200 {
            let Released::Int(v) = plan.release(&[0], 0.95, &mut rng)[0].value else {
                panic!()
            };
            assert!(v >= 0);
        }
    }
}
