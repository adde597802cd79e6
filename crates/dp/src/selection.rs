//! The exponential mechanism over integer scores, sampled exactly.
//!
//! Choosing one of `m` candidates by a data-dependent score `q_i` (higher
//! is better), where adding or removing one privacy unit moves each score
//! by at most `Δ`, the mechanism outputs `i` with probability
//! `∝ exp(ε · q_i / (2Δ))`. It is ε-DP (McSherry and Talwar 2007) and,
//! having bounded range, ε²/8-zCDP (Cesar and Rogers 2021), which is the
//! bound MST's accounting uses.
//!
//! **Exact sampling.** With `q* = max q`, draw a candidate uniformly and
//! keep it with probability `exp(−ε (q* − q_i) / (2Δ))`, by the exact
//! Bernoulli-of-an-exponential sampler of [`crate::samplers`] on a
//! rational exponent; otherwise draw again. A round keeps `i` with
//! probability `(1/m) · exp(−ε (q* − q_i)/(2Δ))`, so the kept candidate has
//! exactly the mechanism's distribution, with no floating point anywhere.
//! The best candidate is kept with probability 1, so a round succeeds
//! with probability at least `1/m` and the expected number of rounds is at
//! most `m`. (The number of rounds depends on the scores; it is local CPU
//! time of a data owner's fit, never a response time an analyst sees.)

use num_bigint::BigUint;
use rand::Rng;

use crate::rational::Rational;
use crate::samplers::{bernoulli_exp, SecureRng};

/// Why a selection cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectionError {
    /// No candidates.
    #[error("there is nothing to choose from")]
    Empty,
    /// ε must be positive and Δ at least 1.
    #[error("ε must be positive and the score sensitivity at least 1")]
    BadParameters,
}

/// The exponential mechanism at `epsilon` for scores of sensitivity
/// `sensitivity`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExponentialMechanism {
    epsilon: Rational,
    sensitivity: u64,
}

impl ExponentialMechanism {
    /// The mechanism; `epsilon > 0`, `sensitivity ≥ 1`.
    pub fn new(epsilon: Rational, sensitivity: u64) -> Result<Self, SelectionError> {
        if epsilon.is_zero() || sensitivity == 0 {
            return Err(SelectionError::BadParameters);
        }
        Ok(ExponentialMechanism {
            epsilon,
            sensitivity,
        })
    }

    /// Its pure ε.
    pub fn epsilon(&self) -> &Rational {
        &self.epsilon
    }

    /// Its zCDP ρ = ε²/8 (bounded range).
    pub fn rho(&self) -> Rational {
        self.epsilon
            .mul(&self.epsilon)
            .div(&Rational::integer(8))
            .expect("8 is not zero")
    }

    /// The index of the chosen candidate, exactly as the mechanism draws.
    pub fn select<R: SecureRng + ?Sized>(
        &self,
        scores: &[i64],
        rng: &mut R,
    ) -> Result<usize, SelectionError> {
        let best = *scores.iter().max().ok_or(SelectionError::Empty)?;
        // γ_i = ε (q* − q_i) / (2Δ), exact.
        let half = Rational::new(
            BigUint::from(1u32),
            BigUint::from(2u32) * BigUint::from(self.sensitivity),
        );
        let per_point = self.epsilon.mul(&half);
        loop {
            let i = rng.gen_range(0..scores.len());
            let gap = (best as i128 - scores[i] as i128) as u128;
            let gamma = per_point.mul(&Rational::new(BigUint::from(gap), BigUint::from(1u32)));
            if bernoulli_exp(&gamma, rng) {
                return Ok(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secure_rng;

    #[test]
    fn follows_the_exponential_weights() {
        // Scores 0, 2, 4 at ε = 1, Δ = 1: weights e^0, e^1, e^2.
        let m = ExponentialMechanism::new(Rational::integer(1), 1).unwrap();
        let mut rng = secure_rng();
        let n = 60_000;
        let mut counts = [0usize; 3];
        for _ in 0..n {
            counts[m.select(&[0, 2, 4], &mut rng).unwrap()] += 1;
        }
        let z: f64 = (0..3).map(|i| (i as f64).exp()).sum();
        for (i, c) in counts.iter().enumerate() {
            let p = (i as f64).exp() / z;
            let se = (p * (1.0 - p) / n as f64).sqrt();
            let got = *c as f64 / n as f64;
            assert!(
                (got - p).abs() < 5.0 * se,
                "candidate {i}: {got} against {p}"
            );
        }
    }

    #[test]
    fn refuses_nonsense() {
        assert_eq!(
            ExponentialMechanism::new(Rational::integer(0), 1),
            Err(SelectionError::BadParameters)
        );
        let m = ExponentialMechanism::new(Rational::integer(1), 1).unwrap();
        assert_eq!(m.select(&[], &mut secure_rng()), Err(SelectionError::Empty));
        // Extreme scores do not overflow.
        let i = m.select(&[i64::MIN, i64::MAX], &mut secure_rng()).unwrap();
        assert_eq!(i, 1);
        assert_eq!(m.rho(), Rational::new(1u32.into(), 8u32.into()));
    }
}
