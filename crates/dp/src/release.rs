//! From raw measurements to released values: noise each measurement once,
//! then derive every output column by post-processing (free), with its
//! confidence interval computed from public parameters and noisy values
//! only.

use crate::accounting::{compose, PrivacyLoss};
use crate::grid::Grid;
use crate::noise::Noise;
use crate::partition::PartitionSelection;
use crate::rational::Rational;
use crate::samplers::SecureRng;

pub use crate::output::{histogram_quantile, Output};

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

    pub(crate) fn width(&self, alpha: f64) -> f64 {
        self.noise.half_width(alpha) * self.grid.unit()
    }
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
/// (see [`PartitionSelection`]). When the measurements are Gaussian, their
/// Σρ-zCDP is charged as the (ε, δ)-DP it implies ([`ZcdpCharge`]), and the
/// selection's δ adds to that δ. Everything the outputs do with the noisy
/// values is post-processing.
#[derive(Clone, Debug, Default)]
pub struct ReleasePlan {
    /// Measurements, in the order the backend returns their raw values.
    pub measurements: Vec<Measurement>,
    /// Output columns, in the order the analyst asked for them.
    pub outputs: Vec<Output>,
    /// Key selection, when group keys are found in the data.
    pub selection: Option<KeySelection>,
    /// How the Gaussian measurements' ρ is charged, when there are any.
    pub zcdp: Option<ZcdpCharge>,
}

/// The (ε, δ) charge that covers a release's zCDP part: its Gaussian
/// measurements together spend at most `rho`, and ρ-zCDP implies
/// (`epsilon`, `delta`)-DP ([`crate::accounting::zcdp_for`] computed `rho`
/// from the other two with every rounding against the analyst).
#[derive(Clone, Debug, PartialEq)]
pub struct ZcdpCharge {
    /// The most ρ the Gaussian measurements may spend together.
    pub rho: Rational,
    /// ε charged for them.
    pub epsilon: Rational,
    /// δ charged for them.
    pub delta: f64,
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
    /// ε to charge: Σ ε of the pure (Laplace) measurements, plus the ε
    /// that covers the Gaussian ones, exact.
    pub epsilon: Rational,
    /// Σ ρ of the zCDP (Gaussian) measurements, exact (recorded; charged
    /// through `epsilon` and `delta`).
    pub rho: Rational,
    /// δ to charge: partition selection's plus the Gaussian part's.
    pub delta: f64,
    /// False when Gaussian measurements spend more ρ than the release's
    /// [`ZcdpCharge`] covers (or it has none): such a release must not be
    /// charged or answered.
    pub covered: bool,
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
    /// (ε exactly for Laplace, ρ exactly for Gaussian, charged as the
    /// (ε, δ) of its [`ZcdpCharge`]) plus the δ of key selection. The
    /// deciding count of a selection is one of the measurements, so its
    /// cost is counted once.
    pub fn cost(&self) -> Cost {
        let (mut epsilon, mut rho) = (Rational::integer(0), Rational::integer(0));
        for m in &self.measurements {
            match &m.noise {
                Noise::Laplace(l) => epsilon = epsilon.add(l.epsilon()),
                Noise::Gaussian(g) => rho = rho.add(g.rho()),
            }
        }
        let mut delta = self.selection.as_ref().map_or(0.0, |s| s.selection.delta());
        let covered = match &self.zcdp {
            None => rho.is_zero(),
            Some(z) if rho <= z.rho => {
                epsilon = epsilon.add(&z.epsilon);
                delta += z.delta;
                true
            }
            Some(_) => false,
        };
        Cost {
            epsilon,
            rho,
            delta,
            covered,
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

    /// A draw of zeros: with it, [`Self::apply`] gives the outputs the
    /// noise hides (the bounded answer). Only the data owner's evaluator
    /// uses it, to compare noisy releases with; it is never released.
    pub fn no_noise(&self) -> NoiseDraw {
        NoiseDraw(self.measurements.iter().map(|m| vec![0; m.len]).collect())
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
            zcdp: None,
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
            zcdp: None,
        };
        let mut rng = crate::secure_rng();
        for _ in 0..200 {
            let Released::Int(v) = plan.release(&[0], 0.95, &mut rng)[0].value else {
                panic!()
            };
            assert!(v >= 0);
        }
    }

    /// SUM(CASE WHEN age > 90 THEN 1 ELSE 0 END) sums values in [0, 1]:
    /// never released below 0, however the noise falls (and a sum of
    /// values in [-1, 0] never above 0).
    #[test]
    fn sums_keep_the_sign_of_their_values() {
        for (lower, upper) in [(0.0, 1.0), (-1.0, 0.0)] {
            let plan = ReleasePlan {
                measurements: vec![Measurement::scalar(laplace(1, 0.01), Grid::INTEGER)],
                outputs: vec![Output::Sum {
                    measurement: 0,
                    integer: true,
                    lower,
                    upper,
                }],
                selection: None,
                zcdp: None,
            };
            let mut rng = crate::secure_rng();
            for _ in 0..200 {
                let Released::Int(v) = plan.release(&[0], 0.95, &mut rng)[0].value else {
                    panic!()
                };
                assert!(if lower >= 0.0 { v >= 0 } else { v <= 0 }, "{v}");
            }
        }
    }
}
