//! Exact samplers after Canonne, Kamath and Steinke, "The Discrete Gaussian
//! for Differential Privacy" (NeurIPS 2020), Algorithms 1–3.
//!
//! Every random choice is a uniform integer draw from a cryptographically
//! secure generator compared against exact rationals, so the output
//! distribution is exactly the stated one. No floating-point arithmetic is
//! involved, which rules out the attack of Mironov (CCS 2012) on textbook
//! `b * ln(u)` Laplace samplers.

use num_bigint::{BigUint, RandBigInt};
use num_traits::{One, ToPrimitive, Zero};
use rand::{CryptoRng, Rng, RngCore};

use crate::rational::Rational;

/// The random source every sampler takes: any cryptographically secure
/// generator. Production code uses [`secure_rng`].
pub trait SecureRng: RngCore + CryptoRng {}
impl<T: RngCore + CryptoRng> SecureRng for T {}

/// The generator production code samples from: the thread-local ChaCha
/// generator of `rand`, seeded and periodically reseeded from the OS.
pub fn secure_rng() -> impl SecureRng {
    rand::thread_rng()
}

/// Bernoulli(num / den) for `num <= den`, `den > 0`.
fn bernoulli_ratio<R: SecureRng + ?Sized>(num: &BigUint, den: &BigUint, rng: &mut R) -> bool {
    if num >= den {
        return true;
    }
    if num.is_zero() {
        return false;
    }
    let mut rng = rng;
    (&mut rng).gen_biguint_below(den) < *num
}

/// Bernoulli(exp(-γ)) for γ = num / den in [0, 1] (CKS Algorithm 1, first part).
fn bernoulli_exp_unit<R: SecureRng + ?Sized>(num: &BigUint, den: &BigUint, rng: &mut R) -> bool {
    let mut k = BigUint::one();
    loop {
        if !bernoulli_ratio(num, &(den * &k), rng) {
            break;
        }
        k += 1u32;
    }
    // exp(-γ) = Σ over the stopping index K of P(K odd).
    (&k % 2u32).is_one()
}

/// Bernoulli(exp(-γ)) for any rational γ ≥ 0 (CKS Algorithm 1).
pub fn bernoulli_exp<R: SecureRng + ?Sized>(gamma: &Rational, rng: &mut R) -> bool {
    let whole = gamma.floor();
    let one = BigUint::one();
    let mut i = BigUint::zero();
    while i < whole {
        if !bernoulli_exp_unit(&one, &one, rng) {
            return false;
        }
        i += 1u32;
    }
    let rem_num = gamma.numer() - &whole * gamma.denom();
    bernoulli_exp_unit(&rem_num, gamma.denom(), rng)
}

/// Discrete Laplace with `P(x) ∝ exp(-|x| / scale)` on the integers
/// (CKS Algorithm 2). `scale` must be positive and at most
/// [`crate::laplace::MAX_SCALE`].
///
/// The draw is exact, never saturated: its magnitude is at most
/// `scale · (v + 1)` where `v` counts loop iterations (a `u64` that no
/// process can exhaust), so with scale ≤ 2⁶² it stays below 2¹²⁶ and fits
/// an `i128`, as does its sum with any `i64` value.
pub fn sample_discrete_laplace<R: SecureRng + ?Sized>(scale: &Rational, rng: &mut R) -> i128 {
    assert!(!scale.is_zero(), "discrete Laplace needs a positive scale");
    // scale = t / s in the paper's notation.
    let t = scale.numer();
    let s = scale.denom();
    let one = BigUint::one();
    loop {
        let u = {
            let mut r = &mut *rng;
            (&mut r).gen_biguint_below(t)
        };
        if !bernoulli_exp_unit(&u, t, rng) {
            continue;
        }
        let mut v: u64 = 0;
        while bernoulli_exp_unit(&one, &one, rng) {
            v += 1;
        }
        let x = u + t * BigUint::from(v);
        let y = x / s;
        let negative = rng.gen::<bool>();
        if negative && y.is_zero() {
            continue;
        }
        let magnitude = y
            .to_i128()
            .expect("scale ≤ 2^62 and v < 2^64 keep the magnitude below 2^126");
        return if negative { -magnitude } else { magnitude };
    }
}

/// Discrete Gaussian with `P(x) ∝ exp(-x² / (2σ²))` on the integers
/// (CKS Algorithm 3). `sigma2` (σ²) must be positive and σ at most
/// [`crate::laplace::MAX_SCALE`] (its Laplace proposals then stay exact).
pub fn sample_discrete_gaussian<R: SecureRng + ?Sized>(sigma2: &Rational, rng: &mut R) -> i128 {
    assert!(
        !sigma2.is_zero(),
        "discrete Gaussian needs a positive variance"
    );
    // t = floor(σ) + 1, with floor(sqrt(a/b)) = floor(sqrt(floor(a/b))).
    let t = sigma2.floor().sqrt() + 1u32;
    let laplace_scale = Rational::new(t.clone(), BigUint::one());
    let (a, b) = (sigma2.numer(), sigma2.denom());
    loop {
        let y = sample_discrete_laplace(&laplace_scale, rng);
        // γ = (|y| - σ²/t)² / (2σ²) = (|y|·b·t - a)² / (2·a·b·t²)
        let ybt = BigUint::from(y.unsigned_abs()) * b * &t;
        let diff = if ybt >= *a { ybt - a } else { a - ybt };
        let gamma = Rational::new(&diff * &diff, BigUint::from(2u8) * a * b * &t * &t);
        if bernoulli_exp(&gamma, rng) {
            return y;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(n: usize, mut f: impl FnMut() -> bool) -> f64 {
        (0..n).filter(|_| f()).count() as f64 / n as f64
    }

    #[test]
    fn bernoulli_exp_matches_exp() {
        let mut rng = secure_rng();
        for &g in &[0.0, 0.3, 1.0, 2.5] {
            let gamma = Rational::from_f64(g).unwrap();
            let p = rate(40_000, || bernoulli_exp(&gamma, &mut rng));
            let expected = (-g).exp();
            let sd = (expected * (1.0 - expected) / 40_000.0).sqrt();
            assert!(
                (p - expected).abs() < 5.0 * sd + 1e-9,
                "γ={g}: {p} vs {expected}"
            );
        }
    }
}
