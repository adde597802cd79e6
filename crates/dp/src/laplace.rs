//! The discrete Laplace mechanism: pure ε-DP for integer-valued queries.

use crate::rational::Rational;
use crate::samplers::{sample_discrete_laplace, SecureRng};

/// Errors in mechanism parameters; these come from config or session
/// settings, never from data.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MechanismError {
    /// ε must be a finite positive number.
    #[error("epsilon must be a finite number above 0, got {0}")]
    BadEpsilon(f64),
    /// The noise scale (sensitivity / ε, in the measurement's units) is
    /// beyond [`MAX_SCALE`].
    #[error("the noise scale {0:.3e} is above dpgate's limit of 2^52 units")]
    ScaleTooLarge(f64),
    /// δ must lie strictly between 0 and 1.
    #[error("delta must be above 0 and below 1, got {0}")]
    BadDelta(f64),
}

/// Largest noise scale (Laplace b, or Gaussian σ) a mechanism accepts, in
/// the units of its measurement: 2⁵² ≈ 4.5·10¹⁵. Beyond it an answer is
/// noise at any realistic data size, and the exact arithmetic below
/// (draws below 2¹²⁶, their sums with `i64` values in `i128`) needs scales
/// below 2⁶²; planners refuse such queries before anything is charged.
pub const MAX_SCALE: u64 = 1 << 52;

/// The discrete Laplace mechanism on integers.
///
/// Privacy: for integer-valued queries with L1 sensitivity Δ, adding
/// discrete Laplace noise with `P(z) ∝ exp(-|z|·ε/Δ)` satisfies ε-DP: for
/// neighbouring outputs f(x), f(x') with |f(x) - f(x')| ≤ Δ the density
/// ratio at any output y is exp(ε·(|y-f(x')| - |y-f(x)|)/Δ) ≤ exp(ε).
/// The scale Δ/ε is computed exactly from the exact rational value of ε.
#[derive(Clone, Debug)]
pub struct DiscreteLaplace {
    sensitivity: u64,
    epsilon: Rational,
    scale: Rational,
}

impl DiscreteLaplace {
    /// A mechanism for a query of integer L1 `sensitivity` at privacy cost `epsilon`.
    pub fn new(sensitivity: u64, epsilon: Rational) -> Result<Self, MechanismError> {
        if epsilon.is_zero() {
            return Err(MechanismError::BadEpsilon(0.0));
        }
        // u64::MAX is what a saturated product leaves: the true
        // sensitivity is larger and unknown, so nothing can be calibrated.
        if sensitivity == u64::MAX {
            return Err(MechanismError::ScaleTooLarge(f64::INFINITY));
        }
        // Sensitivity 0 would make noise pointless; treat it as 1 so the
        // mechanism is always well defined (noise only grows).
        let sensitivity = sensitivity.max(1);
        let scale = Rational::integer(sensitivity)
            .div(&epsilon)
            .expect("epsilon checked non-zero");
        if scale > Rational::integer(MAX_SCALE) {
            return Err(MechanismError::ScaleTooLarge(scale.to_f64()));
        }
        Ok(DiscreteLaplace {
            sensitivity,
            epsilon,
            scale,
        })
    }

    /// The privacy map: ε spent by one release.
    pub fn epsilon(&self) -> &Rational {
        &self.epsilon
    }

    /// The L1 sensitivity this mechanism was calibrated for.
    pub fn sensitivity(&self) -> u64 {
        self.sensitivity
    }

    /// The noise scale b = Δ/ε, exactly.
    pub fn scale(&self) -> &Rational {
        &self.scale
    }

    /// Releases `value` plus exact discrete Laplace noise. The sum is
    /// exact (no saturation): see [`sample_discrete_laplace`].
    pub fn release<R: SecureRng + ?Sized>(&self, value: i64, rng: &mut R) -> i128 {
        i128::from(value) + sample_discrete_laplace(&self.scale, rng)
    }

    /// Half-width h of the central interval: P(|noise| > h) ≤ alpha.
    ///
    /// For discrete Laplace with p = exp(-1/b),
    /// P(|Z| > k) = 2·p^(k+1) / (1 + p). Computed from public parameters only.
    pub fn half_width(&self, alpha: f64) -> f64 {
        laplace_tail_half_width(self.scale.to_f64(), alpha)
    }

    /// The noise variance 2p/(1-p)², for reports and tests (1 - p from
    /// `expm1`, so large scales do not round it to zero).
    pub fn variance(&self) -> f64 {
        let b = self.scale.to_f64();
        let p = (-1.0 / b).exp();
        let q = -(-1.0 / b).exp_m1();
        2.0 * p / (q * q)
    }
}

/// Smallest integer k with P(|Z| > k) ≤ alpha for discrete Laplace of scale b.
pub fn laplace_tail_half_width(scale: f64, alpha: f64) -> f64 {
    let p = (-1.0 / scale).exp();
    // 2 p^(k+1) / (1+p) ≤ alpha  ⇔  k + 1 ≥ b · ln(2 / (alpha (1+p))),
    // with ln p = -1/b taken exactly rather than from a rounded p (which
    // is 1.0 for large b and made the width 0).
    let k = (scale * (2.0 / (alpha * (1.0 + p))).ln() - 1.0).ceil();
    k.max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samplers::secure_rng;

    /// The empirical variance and the spread of discrete Laplace match the
    /// stated scale (issue: walking skeleton).
    #[test]
    fn discrete_laplace_matches_its_scale() {
        let mut rng = secure_rng();
        for &(sens, eps) in &[(1u64, 1.0f64), (5, 0.1), (3, 2.0)] {
            let m = DiscreteLaplace::new(sens, Rational::from_f64(eps).unwrap()).unwrap();
            let n = 100_000;
            let draws: Vec<f64> = (0..n).map(|_| m.release(0, &mut rng) as f64).collect();
            let mean = draws.iter().sum::<f64>() / n as f64;
            let var = draws.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
            let expected = m.variance();
            // Var of the sample variance for Laplace ≈ 5·σ⁴/n (kurtosis 6).
            let tolerance = 5.0 * (5.0 * expected * expected / n as f64).sqrt();
            assert!(
                mean.abs() < 5.0 * (expected / n as f64).sqrt(),
                "mean {mean}"
            );
            assert!(
                (var - expected).abs() < tolerance,
                "var {var} vs {expected}"
            );
            // Mean absolute deviation ≈ b for large b: check the 95 % width.
            let hw = m.half_width(0.05);
            let inside = draws.iter().filter(|x| x.abs() <= hw).count() as f64 / n as f64;
            assert!(inside >= 0.945, "coverage {inside} at half-width {hw}");
        }
    }

    #[test]
    fn half_width_is_tight() {
        // b = 10: P(|Z| > k) for the reported k is ≤ 5 % and for k-1 it is not.
        let b = 10.0f64;
        let k = laplace_tail_half_width(b, 0.05);
        let p = (-1.0 / b).exp();
        let tail = |k: f64| 2.0 * p.powf(k + 1.0) / (1.0 + p);
        assert!(tail(k) <= 0.05 && tail(k - 1.0) > 0.05);
    }

    #[test]
    fn rejects_zero_epsilon() {
        assert!(DiscreteLaplace::new(1, Rational::integer(0)).is_err());
    }

    /// Tiny ε or huge sensitivities are refused, not saturated; at the
    /// largest accepted scale draws are exact and widths are not zero.
    #[test]
    fn scales_beyond_the_limit_are_refused_and_the_largest_is_exact() {
        let tiny = Rational::from_f64(1e-300).unwrap();
        assert!(matches!(
            DiscreteLaplace::new(1, tiny),
            Err(MechanismError::ScaleTooLarge(_))
        ));
        assert!(DiscreteLaplace::new(u64::MAX, Rational::integer(1)).is_err());
        let m = DiscreteLaplace::new(MAX_SCALE, Rational::integer(1)).unwrap();
        let mut rng = secure_rng();
        let raw = i64::MAX - 3;
        let draws: Vec<i128> = (0..200).map(|_| m.release(raw, &mut rng)).collect();
        // Not a function of the raw value: the outputs spread far past
        // i64 on both sides, and none sits at a saturation point.
        assert!(draws.iter().any(|&d| d > i128::from(i64::MAX)));
        assert!(draws.iter().any(|&d| d < i128::from(raw) - (1 << 40)));
        assert!(draws.iter().all(|&d| d != i128::from(i64::MAX)));
        let w = m.half_width(0.05);
        assert!(w > 1e16 && w < 2e16, "{w}");
        assert!(m.variance().is_finite() && m.variance() > 1e31);
    }
}

#[cfg(test)]
mod saturation {
    use super::*;

    /// A sensitivity that saturated (u64::MAX) is refused at any ε, by
    /// both mechanisms: the noise would be calibrated for less than the
    /// truth.
    #[test]
    fn saturated_sensitivities_are_refused() {
        let huge = Rational::integer(1_000_000);
        assert!(DiscreteLaplace::new(u64::MAX, huge.clone()).is_err());
        assert!(crate::DiscreteGaussian::new(u64::MAX, huge).is_err());
        assert!(DiscreteLaplace::new(u64::MAX - 1, Rational::integer(1 << 20)).is_ok());
    }
}
