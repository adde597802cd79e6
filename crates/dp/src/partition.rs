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
use crate::laplace::{DiscreteLaplace, MechanismError};
use crate::noise::Noise;
use crate::rational::Rational;
use crate::sensitivity::{Contribution, Sensitivity};
use num_bigint::BigUint;
use num_traits::ToPrimitive;

/// Thresholded noisy counts for keys without a declared domain.
#[derive(Clone, Debug)]
pub struct PartitionSelection {
    noise: Noise,
    threshold: i64,
    delta: f64,
}

/// Relative slack added to every logarithm computed in `f64` (whose error
/// is below 10⁻¹⁵ relative), and the factor δ is shrunk by before τ is
/// derived (the ledger may round a δ within 10⁻¹² of a whole atto-δ to
/// that unit): both make τ larger, never smaller.
const SLACK: f64 = 1e-9;

/// An upper bound on ln(x) for x ≥ 1.
pub(crate) fn ln_upper(x: f64) -> f64 {
    x.ln() * (1.0 + SLACK) + SLACK
}

/// The smallest integer ≥ `r`, exactly.
fn ceil(r: &Rational) -> u64 {
    let f = r.floor();
    let whole = Rational::new(f.clone(), 1u32.into());
    let up = if whole == *r { f } else { f + 1u32 };
    up.to_u64().unwrap_or(u64::MAX)
}

impl PartitionSelection {
    /// Laplace thresholding at ε for the count and δ for the keys.
    pub fn laplace(
        contribution: Contribution,
        epsilon: Rational,
        delta: f64,
    ) -> Result<PartitionSelection, MechanismError> {
        let sens = contribution.count();
        Self::laplace_for(sens, contribution.max_partitions, epsilon, delta)
    }

    /// Laplace thresholding for a count with sensitivity `sens` when a unit
    /// touches at most `max_partitions` keys. Used when the backend bounds
    /// each unit's rows in total (then L1 = L∞ = rows, and L0 ≤ rows).
    ///
    /// τ = L∞ + t with t the smallest integer such that a key held by one
    /// unit alone (true count ≤ L∞) passes with probability ≤ δ / L0. For
    /// discrete Laplace of scale b, P(Z ≥ t) = pᵗ / (1 + p) with
    /// p = e^(−1/b), so t ≥ b · (ln(L0/δ) − ln(1 + p)) suffices. It is
    /// computed with every rounding against the analyst: b exactly (a
    /// rational), ln(L0/δ) bounded above, ln(1 + p) bounded below through
    /// p ≥ 1 − 1/b, and the product and ceiling in exact arithmetic. (The
    /// earlier `f64` version rounded p to 1 for large b and collapsed τ to
    /// L∞ + 1.)
    pub fn laplace_for(
        sens: crate::sensitivity::Sensitivity,
        max_partitions: u64,
        epsilon: Rational,
        delta: f64,
    ) -> Result<PartitionSelection, MechanismError> {
        let m = DiscreteLaplace::new(sens.l1, epsilon)?;
        let per_key = Self::per_key_delta(delta, max_partitions)?;
        let b = m.scale();
        // Lower bound of b in f64 (to_f64 is within 2⁻⁵² relative).
        let b_low = b.to_f64() * (1.0 - SLACK);
        let ln_one_plus_p_low = if b_low > 1.0 {
            ((2.0 - 1.0 / b_low).ln() * (1.0 - SLACK) - SLACK).max(0.0)
        } else {
            0.0
        };
        let log_term = (ln_upper(1.0 / per_key) - ln_one_plus_p_low).max(0.0);
        let log_term = Rational::from_f64(log_term).expect("finite and non-negative");
        let t = ceil(&b.mul(&log_term)).max(1);
        Ok(PartitionSelection {
            noise: m.into(),
            threshold: Self::threshold_from(sens.l_inf, t)?,
            delta,
        })
    }

    /// Gaussian thresholding at ρ for the counts and δ for the keys.
    ///
    /// The discrete Gaussian is subgaussian (CKS Corollary 9):
    /// P(Z ≥ t) ≤ e^(−t²/2σ²), so t = ⌈√(2σ² ln(L0/δ))⌉ suffices; σ² is
    /// exact, the logarithm bounded above, and the square root taken
    /// exactly on integers.
    pub fn gaussian(
        contribution: Contribution,
        rho: Rational,
        delta: f64,
    ) -> Result<PartitionSelection, MechanismError> {
        Self::gaussian_for(
            contribution.count(),
            contribution.max_partitions,
            rho,
            delta,
        )
    }

    /// Gaussian thresholding for a count with sensitivity `sens` when a
    /// unit touches at most `max_partitions` keys (each new key it alone
    /// holds may pass with probability δ / `max_partitions`).
    pub fn gaussian_for(
        sens: Sensitivity,
        max_partitions: u64,
        rho: Rational,
        delta: f64,
    ) -> Result<PartitionSelection, MechanismError> {
        let m = DiscreteGaussian::new(sens.l2_squared, rho)?;
        let per_key = Self::per_key_delta(delta, max_partitions)?;
        let log_term = Rational::from_f64(ln_upper(1.0 / per_key)).expect("finite");
        let square = ceil(&m.sigma2().mul(&Rational::integer(2)).mul(&log_term));
        let mut t = BigUint::from(square).sqrt();
        if &t * &t < BigUint::from(square) {
            t += 1u32;
        }
        let t = t.to_u64().unwrap_or(u64::MAX).max(1);
        Ok(PartitionSelection {
            noise: m.into(),
            threshold: Self::threshold_from(sens.l_inf, t)?,
            delta,
        })
    }

    /// δ / L0, shrunk by the slack, for thresholds.
    fn per_key_delta(delta: f64, max_partitions: u64) -> Result<f64, MechanismError> {
        if !(delta > 0.0 && delta < 1.0) {
            return Err(MechanismError::BadDelta(delta));
        }
        let per_key = delta * (1.0 - SLACK) / max_partitions.max(1) as f64;
        // 1/per_key must be finite for the thresholds' logarithms.
        if !(1.0 / per_key).is_finite() {
            return Err(MechanismError::BadDelta(delta));
        }
        Ok(per_key)
    }

    fn threshold_from(l_inf: u64, t: u64) -> Result<i64, MechanismError> {
        l_inf
            .checked_add(t)
            .and_then(|x| i64::try_from(x).ok())
            .ok_or(MechanismError::ScaleTooLarge(t as f64))
    }

    /// Whether a noisy count is released: the one decision
    /// [`crate::release::ReleasePlan::select_group`] (audited, and run by
    /// the query path) makes.
    pub fn passes(&self, noisy_count: i128) -> bool {
        noisy_count >= i128::from(self.threshold)
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
        let one =
            PartitionSelection::laplace(Contribution::ungrouped(1), eps.clone(), 1e-6).unwrap();
        let many = PartitionSelection::laplace(
            Contribution {
                max_partitions: 10,
                max_rows: 1,
            },
            eps.clone(),
            1e-6,
        )
        .unwrap();
        let loose = PartitionSelection::laplace(Contribution::ungrouped(1), eps, 1e-2).unwrap();
        assert!(many.threshold() > one.threshold());
        assert!(loose.threshold() < one.threshold());
        // b = 1: t = ceil(ln(1e-6 (1+e^-1)) / -1) = 14, τ = 1 + 14.
        assert_eq!(one.threshold(), 15);
        let g =
            PartitionSelection::gaussian(Contribution::ungrouped(1), Rational::integer(1), 1e-6)
                .unwrap();
        assert!(g.threshold() > 1);
    }

    /// At scales where e^(−1/b) rounds to 1 in f64, τ still grows with b:
    /// t ≥ b · (ln(L0/δ) − ln 2) (the f64 version gave τ = L∞ + 1).
    #[test]
    fn thresholds_stay_exact_at_huge_scales() {
        for exp in [20u32, 40, 50] {
            let eps = Rational::new(1u32.into(), BigUint::from(1u8) << exp as usize);
            let b = 2f64.powi(exp as i32);
            let sel = PartitionSelection::laplace(Contribution::ungrouped(1), eps, 1e-6).unwrap();
            let floor = b * ((1e6f64).ln() - 2f64.ln());
            assert!(
                sel.threshold() as f64 >= floor,
                "{exp}: {}",
                sel.threshold()
            );
            assert!((sel.threshold() as f64) < b * (1e6f64).ln() + 2.0);
        }
        // Beyond the scale limit: refused, not collapsed.
        let tiny = Rational::from_f64(1e-300).unwrap();
        assert!(PartitionSelection::laplace(Contribution::ungrouped(1), tiny, 1e-6).is_err());
        assert!(
            PartitionSelection::laplace(Contribution::ungrouped(1), Rational::integer(1), 0.0)
                .is_err()
        );
    }
}

#[cfg(test)]
mod gaussian_keys {
    use super::*;

    /// Gaussian thresholding accounts for the keys one unit can reach: a
    /// unit with k rows may put one in each of k new keys, so each may
    /// pass with δ/k only — a higher τ than for one key (the review found
    /// the query path passing one key for k rows). An absurdly small δ is
    /// refused, not a panic.
    #[test]
    fn gaussian_thresholds_split_delta_over_the_keys_a_unit_reaches() {
        let k = 100u64;
        let sens = Sensitivity {
            l_inf: k,
            l1: k,
            l2_squared: k * k,
        };
        let rho = Rational::from_f64(0.01).unwrap();
        let one = PartitionSelection::gaussian_for(sens, 1, rho.clone(), 1e-6).unwrap();
        let many = PartitionSelection::gaussian_for(sens, k, rho.clone(), 1e-6).unwrap();
        assert!(
            many.threshold() > one.threshold(),
            "{} vs {}",
            many.threshold(),
            one.threshold()
        );
        assert!(PartitionSelection::gaussian_for(sens, k, rho, 1e-310).is_err());
    }
}
