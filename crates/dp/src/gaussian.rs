//! The discrete Gaussian mechanism: ρ-zCDP for integer-valued queries.

use statrs::distribution::{ContinuousCDF, Normal};

use crate::accounting::PrivacyLoss;
use crate::laplace::MechanismError;
use crate::rational::Rational;
use crate::samplers::{sample_discrete_gaussian, SecureRng};

/// The discrete Gaussian mechanism on integers.
///
/// Privacy (Canonne, Kamath and Steinke 2020, Theorem 4): adding discrete
/// Gaussian noise of variance parameter σ² to an integer query of L2
/// sensitivity Δ₂ satisfies ρ-zCDP with ρ = Δ₂² / (2σ²), the same as the
/// continuous Gaussian. Here σ² = Δ₂² / (2ρ) is computed exactly.
#[derive(Clone, Debug)]
pub struct DiscreteGaussian {
    l2_squared: u64,
    rho: Rational,
    sigma2: Rational,
}

impl DiscreteGaussian {
    /// A mechanism for a query whose squared L2 sensitivity is
    /// `l2_squared` (an integer for integer queries), at cost ρ (zCDP).
    pub fn new(l2_squared: u64, rho: Rational) -> Result<Self, MechanismError> {
        if rho.is_zero() {
            return Err(MechanismError::BadEpsilon(0.0));
        }
        // u64::MAX is what a saturated product leaves (see DiscreteLaplace).
        if l2_squared == u64::MAX {
            return Err(MechanismError::ScaleTooLarge(f64::INFINITY));
        }
        let d2 = l2_squared.max(1);
        let sigma2 = Rational::integer(d2)
            .div(&rho.mul(&Rational::integer(2)))
            .expect("rho checked non-zero");
        let max_scale = crate::laplace::MAX_SCALE;
        if sigma2 > Rational::integer(max_scale).mul(&Rational::integer(max_scale)) {
            return Err(MechanismError::ScaleTooLarge(sigma2.to_f64().sqrt()));
        }
        Ok(DiscreteGaussian {
            l2_squared: d2,
            rho,
            sigma2,
        })
    }

    /// The privacy map: ρ-zCDP.
    pub fn loss(&self) -> PrivacyLoss {
        PrivacyLoss::Zcdp {
            rho: self.rho.to_f64(),
        }
    }

    /// ρ, exactly.
    pub fn rho(&self) -> &Rational {
        &self.rho
    }

    /// The squared L2 sensitivity this mechanism was calibrated for.
    pub fn l2_squared(&self) -> u64 {
        self.l2_squared
    }

    /// σ², exactly.
    pub fn sigma2(&self) -> &Rational {
        &self.sigma2
    }

    /// Releases `value` plus exact discrete Gaussian noise.
    pub fn release<R: SecureRng + ?Sized>(&self, value: i64, rng: &mut R) -> i128 {
        i128::from(value) + sample_discrete_gaussian(&self.sigma2, rng)
    }

    /// Half-width h with P(|noise| > h) ≤ alpha.
    ///
    /// For small σ the discrete tail is summed exactly; otherwise the
    /// continuous Gaussian quantile plus one lattice step is used (the
    /// discrete Gaussian is subgaussian with parameter σ, CKS Corollary 9).
    pub fn half_width(&self, alpha: f64) -> f64 {
        let sigma2 = self.sigma2.to_f64();
        let sigma = sigma2.sqrt();
        if sigma <= 200.0 {
            let weight = |x: f64| (-x * x / (2.0 * sigma2)).exp();
            let limit = (sigma * 40.0).ceil() as i64 + 2;
            let total: f64 = weight(0.0) + 2.0 * (1..=limit).map(|x| weight(x as f64)).sum::<f64>();
            let mut inside = weight(0.0) / total;
            let mut k = 0i64;
            while 1.0 - inside > alpha && k < limit {
                k += 1;
                inside += 2.0 * weight(k as f64) / total;
            }
            return k as f64;
        }
        let z = Normal::standard().inverse_cdf(1.0 - alpha / 2.0);
        (z * sigma).ceil() + 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::samplers::secure_rng;

    #[test]
    fn variance_matches_sigma2() {
        let mut rng = secure_rng();
        for &(d, rho) in &[(1u64, 0.5f64), (25, 0.1), (9, 2.0)] {
            let m = DiscreteGaussian::new(d, Rational::from_f64(rho).unwrap()).unwrap();
            let n = 100_000;
            let draws: Vec<f64> = (0..n).map(|_| m.release(0, &mut rng) as f64).collect();
            let mean = draws.iter().sum::<f64>() / n as f64;
            let var = draws.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let s2 = m.sigma2().to_f64();
            assert!(mean.abs() < 5.0 * (s2 / n as f64).sqrt(), "mean {mean}");
            assert!(
                (var / s2 - 1.0).abs() < 5.0 * (2.0 / n as f64).sqrt(),
                "var {var} vs {s2}"
            );
            let hw = m.half_width(0.05);
            let inside = draws.iter().filter(|x| x.abs() <= hw).count() as f64 / n as f64;
            assert!(inside >= 0.945, "coverage {inside} at {hw}");
        }
    }
}
