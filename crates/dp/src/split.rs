//! How a query's budget is split across its measurements.
//!
//! **The objective.** Each output the analyst asked for is a function of
//! some measurements; to first order (the delta method) its variance is
//! `V_o = Σ_i a_oi · s_i² / ε_i²`, where `s_i` is measurement `i`'s noise
//! scale at ε = 1 (its sensitivity times its grid unit; Laplace noise at
//! share ε_i has variance `2 s_i² / ε_i²`, the 2 is common to all) and
//! `a_oi` is the squared partial derivative of the output in measurement
//! `i`, taken at the worst case the declared bounds allow (see
//! [`Output::sensitivity_weights`]). Outputs are made comparable by their
//! own scale: `w_o = 1 / Σ_i a_oi s_i²`, the output's variance were every
//! measurement given ε = 1. The split minimises the sum of the outputs'
//! normalised variances,
//!
//! ```text
//!   Σ_o w_o V_o = Σ_i c_i / ε_i²,   c_i = Σ_o w_o a_oi s_i²,
//! ```
//!
//! subject to `Σ_i ε_i = ε`. With a Lagrange multiplier λ,
//! `-2 c_i / ε_i³ + λ = 0`, so **`ε_i ∝ c_i^(1/3)`**. Under zCDP the
//! Gaussian variance is `s_i² / (2 ρ_i)` (with `s_i` the L2 scale), the
//! objective `Σ c_i / ρ_i` and the rule **`ρ_i ∝ c_i^(1/2)`**.
//!
//! For `AVG(x)` alone with a centred sum (radius r, k rows per unit) and a
//! count: `s_sum = k r`, `s_count = k`, `a_sum = 1`, `a_count = r²`, so
//! `c_sum = c_count` and the split is equal; next to `COUNT(*)` (which
//! shares the count) the count gets more, as both outputs read it.
//!
//! **Privacy.** The split is a function of the plan alone (public bounds,
//! sensitivities and the query's shape), never of data. The floats only
//! choose proportions: each share is `ε · n_i / N` with whole numbers
//! `n_i ≥ 1` summing to `N` exactly, so the shares are exact rationals
//! whose sum is exactly the ε charged.

use crate::rational::Rational;
use crate::release::Output;

/// Parts of the total a share is a whole multiple of (2²⁰).
const PARTS: u64 = 1 << 20;

/// Each measurement's weight `c_i` in the objective above. `scales[i]` is
/// measurement `i`'s noise scale at unit budget (sensitivity × grid unit);
/// `standalone` lists measurements that matter on their own though no
/// output reads them (the count that decides partition selection), each
/// weighted as a count the analyst asked for.
pub fn weights(outputs: &[Output], scales: &[f64], standalone: &[usize]) -> Vec<f64> {
    let mut c = vec![0.0; scales.len()];
    let s2 = |i: usize| scales[i] * scales[i];
    for o in outputs {
        let parts = o.sensitivity_weights();
        let unit: f64 = parts.iter().map(|&(i, a)| a * s2(i)).sum();
        if !(unit.is_finite() && unit > 0.0) {
            continue;
        }
        for (i, a) in parts {
            c[i] += a * s2(i) / unit;
        }
    }
    for &i in standalone {
        c[i] += 1.0;
    }
    c
}

/// Splits `total` in proportion to `weights[i]^power` (1/3 for ε under
/// Laplace noise, 1/2 for ρ under Gaussian noise), exactly: the shares are
/// rationals that sum to `total`, each at least `total / 2²⁰`. Weights that
/// are zero, negative or not finite count as the smallest positive one.
pub fn proportional(total: &Rational, weights: &[f64], power: f64) -> Vec<Rational> {
    let n = weights.len();
    if n == 0 {
        return vec![];
    }
    let floor = weights
        .iter()
        .copied()
        .filter(|w| w.is_finite() && *w > 0.0)
        .fold(f64::INFINITY, f64::min);
    let floor = if floor.is_finite() { floor } else { 1.0 };
    let raw: Vec<f64> = weights
        .iter()
        .map(|&w| {
            let w = if w.is_finite() && w > 0.0 { w } else { floor };
            w.powf(power)
        })
        .collect();
    let sum: f64 = raw.iter().sum();
    let spare = PARTS - n as u64;
    // Every share gets one part, the rest in proportion (rounded down).
    let mut parts: Vec<u64> = raw
        .iter()
        .map(|r| 1 + ((r / sum) * spare as f64).floor().clamp(0.0, spare as f64) as u64)
        .collect();
    let given: u64 = parts.iter().sum();
    // What rounding left (or, in a pathological float case, took too
    // much) goes to or comes from the largest share, so Σ = PARTS exactly.
    let largest = (0..n)
        .max_by(|&a, &b| raw[a].total_cmp(&raw[b]))
        .unwrap_or(0);
    if given <= PARTS {
        parts[largest] += PARTS - given;
    } else {
        parts[largest] -= (given - PARTS).min(parts[largest] - 1);
    }
    let whole = Rational::integer(PARTS);
    parts
        .iter()
        .map(|&p| {
            total
                .mul(&Rational::integer(p))
                .div(&whole)
                .expect("PARTS is positive")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_sum_to_the_total_exactly() {
        let total = Rational::from_f64(0.1).unwrap();
        for w in [
            vec![1.0],
            vec![1.0, 1.0, 1.0],
            vec![1.5, 0.5],
            vec![1e-30, 1e30, 3.0],
            vec![0.0, f64::NAN, 2.0],
        ] {
            let shares = proportional(&total, &w, 1.0 / 3.0);
            let sum = shares
                .iter()
                .fold(Rational::integer(0), |acc, s| acc.add(s));
            assert_eq!(sum, total, "{w:?}");
            assert!(shares.iter().all(|s| !s.is_zero()), "{w:?}");
        }
    }

    #[test]
    fn shares_follow_the_cube_root_rule() {
        let total = Rational::integer(1);
        let shares = proportional(&total, &[8.0, 1.0], 1.0 / 3.0);
        let (a, b) = (shares[0].to_f64(), shares[1].to_f64());
        assert!((a / b - 2.0).abs() < 1e-4, "{a} {b}");
        let shares = proportional(&total, &[4.0, 1.0], 0.5);
        assert!((shares[0].to_f64() / shares[1].to_f64() - 2.0).abs() < 1e-4);
    }

    /// COUNT(*) and AVG(age) on [0, 110], 5 rows per unit, the count
    /// shared: the count is read by both outputs and gets the larger share.
    #[test]
    fn a_shared_count_gets_more() {
        let outputs = [
            Output::Count { measurement: 0 },
            Output::Mean {
                sum: 1,
                count: 0,
                lower: 0.0,
                upper: 110.0,
                center: 55.0,
            },
        ];
        let c = weights(&outputs, &[5.0, 275.0], &[]);
        assert!(
            (c[0] - 1.5).abs() < 1e-9 && (c[1] - 0.5).abs() < 1e-9,
            "{c:?}"
        );
        // AVG alone: an equal split.
        let c = weights(&outputs[1..], &[5.0, 275.0], &[]);
        assert!((c[0] - c[1]).abs() < 1e-9, "{c:?}");
    }
}
