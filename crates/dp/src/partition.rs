//! Partition selection: which group keys without a declared public domain
//! may be released.
//!
//! A key is released only if its noisy count clears a threshold τ chosen
//! so that a key held by a single unit (true count at most `max_rows`)
//! appears with probability at most δ / L0 for each of the L0 groups the
//! unit can touch, hence at most δ in all (union bound). Keys and their
//! noisy counts then satisfy (ε, δ)-DP (Laplace) or ρ-zCDP plus δ
//! (Gaussian); see Korolova et al. 2009 and Wilson et al. 2020 ("
//! Differentially private SQL with bounded user contribution").

use crate::accounting::PrivacyLoss;
use crate::gaussian::DiscreteGaussian;
use crate::laplace::DiscreteLaplace;
use crate::noise::Noise;
use crate::rational::Rational;
use crate::samplers::SecureRng;
use crate::sensitivity::Contribution;

/// Thresholded noisy counts for keys without a declared domain.
#[derive(Clone, Debug)]
pub struct PartitionSelection {
    noise: Noise,
    threshold: i64,
    delta: f64,
}

impl PartitionSelection {
    /// Laplace thresholding at ε for the count and δ for the keys.
    pub fn laplace(
        contribution: Contribution,
        epsilon: Rational,
        delta: f64,
    ) -> PartitionSelection {
        let sens = contribution.count();
        Self::laplace_for(sens, contribution.max_partitions, epsilon, delta)
    }

    /// Laplace thresholding for a count with sensitivity `sens` when a unit
    /// touches at most `max_partitions` keys. Used when the backend bounds
    /// each unit's rows in total (then L1 = L∞ = rows, and L0 ≤ rows).
    pub fn laplace_for(
        sens: crate::sensitivity::Sensitivity,
        max_partitions: u64,
        epsilon: Rational,
        delta: f64,
    ) -> PartitionSelection {
        let m = DiscreteLaplace::new(sens.l1, epsilon).expect("positive epsilon");
        // P(Z ≥ t) = p^t / (1 + p) for integers t ≥ 1, p = exp(-1/b).
        let b = m.scale().to_f64();
        let p = (-1.0 / b).exp();
        let per_key = delta / max_partitions.max(1) as f64;
        let t = ((per_key * (1.0 + p)).ln() / p.ln()).ceil().max(1.0);
        PartitionSelection {
            noise: m.into(),
            threshold: sens.l_inf as i64 + t as i64,
            delta,
        }
    }

    /// Gaussian thresholding at ρ for the counts and δ for the keys.
    pub fn gaussian(contribution: Contribution, rho: Rational, delta: f64) -> PartitionSelection {
        let sens = contribution.count();
        let m = DiscreteGaussian::new(sens.l2_squared, rho).expect("positive rho");
        // Subgaussian tail of the discrete Gaussian: P(Z ≥ t) ≤ exp(-t²/2σ²).
        let sigma2 = m.sigma2().to_f64();
        let per_key = delta / contribution.max_partitions as f64;
        let t = (2.0 * sigma2 * (1.0 / per_key).ln()).sqrt().ceil().max(1.0);
        PartitionSelection {
            noise: m.into(),
            threshold: sens.l_inf as i64 + t as i64,
            delta,
        }
    }

    /// The noisy count of a key if it clears the threshold, else `None`.
    pub fn select<R: SecureRng + ?Sized>(&self, count: i64, rng: &mut R) -> Option<i64> {
        let noisy = self.noise.release(count, rng);
        (noisy >= self.threshold).then_some(noisy)
    }

    /// τ: the smallest noisy count that is released.
    pub fn threshold(&self) -> i64 {
        self.threshold
    }

    /// The noise used for the counts.
    pub fn noise(&self) -> &Noise {
        &self.noise
    }

    /// The privacy loss of releasing the selected keys with their counts.
    pub fn loss(&self) -> PrivacyLoss {
        match self.noise.loss() {
            PrivacyLoss::Pure { epsilon } => PrivacyLoss::Approximate {
                epsilon,
                delta: self.delta,
            },
            // zCDP for the counts, plus δ for the keys: report as (ε, δ)
            // at the caller's conversion; here the count part stays ρ.
            other => other,
        }
    }

    /// δ spent on the keys.
    pub fn delta(&self) -> f64 {
        self.delta
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_grow_with_groups_and_shrink_with_delta() {
        let eps = Rational::integer(1);
        let one = PartitionSelection::laplace(Contribution::ungrouped(1), eps.clone(), 1e-6);
        let many = PartitionSelection::laplace(
            Contribution {
                max_partitions: 10,
                max_rows: 1,
            },
            eps.clone(),
            1e-6,
        );
        let loose = PartitionSelection::laplace(Contribution::ungrouped(1), eps, 1e-2);
        assert!(many.threshold() > one.threshold());
        assert!(loose.threshold() < one.threshold());
        // b = 1: t = ceil(ln(1e-6 (1+e^-1)) / -1) = 14, τ = 1 + 14.
        assert_eq!(one.threshold(), 15);
        let g =
            PartitionSelection::gaussian(Contribution::ungrouped(1), Rational::integer(1), 1e-6);
        assert!(g.threshold() > 1);
    }
}
