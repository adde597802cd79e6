//! The noise a measurement adds: discrete Laplace (pure ε) or discrete
//! Gaussian (zCDP), behind one interface so plans can mix them.

use crate::accounting::PrivacyLoss;
use crate::gaussian::DiscreteGaussian;
use crate::laplace::DiscreteLaplace;
use crate::samplers::SecureRng;

/// An integer noise mechanism with its privacy map.
#[derive(Clone, Debug)]
pub enum Noise {
    /// Discrete Laplace, ε-DP.
    Laplace(DiscreteLaplace),
    /// Discrete Gaussian, ρ-zCDP.
    Gaussian(DiscreteGaussian),
}

impl Noise {
    /// `value` plus one draw of noise, exactly (never saturated).
    pub fn release<R: SecureRng + ?Sized>(&self, value: i64, rng: &mut R) -> i128 {
        match self {
            Noise::Laplace(m) => m.release(value, rng),
            Noise::Gaussian(m) => m.release(value, rng),
        }
    }

    /// Half-width of the central interval holding the noise with
    /// probability at least 1 - alpha.
    pub fn half_width(&self, alpha: f64) -> f64 {
        match self {
            Noise::Laplace(m) => m.half_width(alpha),
            Noise::Gaussian(m) => m.half_width(alpha),
        }
    }

    /// The L1 (Laplace) or squared L2 (Gaussian) sensitivity calibrated for.
    pub fn sensitivity(&self) -> u64 {
        match self {
            Noise::Laplace(m) => m.sensitivity(),
            Noise::Gaussian(m) => m.l2_squared(),
        }
    }

    /// Variance of one draw (for sums of draws).
    pub fn variance(&self) -> f64 {
        match self {
            Noise::Laplace(m) => m.variance(),
            Noise::Gaussian(m) => m.sigma2().to_f64(),
        }
    }

    /// The privacy loss of one release (of a whole vector when the
    /// sensitivity was computed for the vector).
    pub fn loss(&self) -> PrivacyLoss {
        match self {
            Noise::Laplace(m) => PrivacyLoss::Pure {
                epsilon: m.epsilon().to_f64(),
            },
            Noise::Gaussian(m) => m.loss(),
        }
    }
}

impl From<DiscreteLaplace> for Noise {
    fn from(m: DiscreteLaplace) -> Self {
        Noise::Laplace(m)
    }
}

impl From<DiscreteGaussian> for Noise {
    fn from(m: DiscreteGaussian) -> Self {
        Noise::Gaussian(m)
    }
}
