//! Privacy accounting: pure ε, approximate (ε, δ) and zCDP (ρ), their
//! composition, the conversion of zCDP to (ε, δ), and the one rule that
//! splits a query's budget over its measurements.

use crate::rational::Rational;

/// The privacy loss of one measurement or of a composition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PrivacyLoss {
    /// ε-differential privacy.
    Pure {
        /// ε
        epsilon: f64,
    },
    /// (ε, δ)-differential privacy.
    Approximate {
        /// ε
        epsilon: f64,
        /// δ
        delta: f64,
    },
    /// ρ-zero-concentrated differential privacy.
    Zcdp {
        /// ρ
        rho: f64,
    },
}

impl PrivacyLoss {
    /// This loss as (ε, δ) at the given δ target (used for zCDP only).
    pub fn to_approximate(self, delta: f64) -> (f64, f64) {
        match self {
            PrivacyLoss::Pure { epsilon } => (epsilon, 0.0),
            PrivacyLoss::Approximate { epsilon, delta } => (epsilon, delta),
            PrivacyLoss::Zcdp { rho } => (zcdp_to_epsilon(rho, delta), delta),
        }
    }
}

/// Sequential composition. Pure and approximate losses add up in ε and δ;
/// zCDP losses add up in ρ. Mixing zCDP with (ε, δ) terms converts the
/// zCDP part at `delta` and adds it, which is valid (if not tight).
pub fn compose(losses: &[PrivacyLoss], delta: f64) -> PrivacyLoss {
    let rho: f64 = losses
        .iter()
        .filter_map(|l| match l {
            PrivacyLoss::Zcdp { rho } => Some(*rho),
            _ => None,
        })
        .sum();
    let (mut eps, mut del) = (0.0, 0.0);
    let mut any_approx = false;
    for l in losses {
        match *l {
            PrivacyLoss::Pure { epsilon } => eps += epsilon,
            PrivacyLoss::Approximate { epsilon, delta } => {
                eps += epsilon;
                del += delta;
                any_approx = true;
            }
            PrivacyLoss::Zcdp { .. } => {}
        }
    }
    match (rho > 0.0, eps > 0.0 || any_approx) {
        (true, false) => PrivacyLoss::Zcdp { rho },
        (true, true) => PrivacyLoss::Approximate {
            epsilon: eps + zcdp_to_epsilon(rho, delta),
            delta: del + delta,
        },
        (false, _) if any_approx => PrivacyLoss::Approximate {
            epsilon: eps,
            delta: del,
        },
        (false, _) => PrivacyLoss::Pure { epsilon: eps },
    }
}

/// The ε such that ρ-zCDP implies (ε, δ)-DP, by Canonne, Kamath and
/// Steinke 2020 (Proposition 12 / Corollary 13):
/// ε = inf over α > 1 of αρ + (ln(1/δ) + (α−1)·ln(1−1/α) − ln α) / (α−1).
/// The infimum is found by golden-section search (the function is convex
/// in α over the relevant range) and never exceeds the classic bound
/// ρ + 2·sqrt(ρ·ln(1/δ)).
pub fn zcdp_to_epsilon(rho: f64, delta: f64) -> f64 {
    if rho <= 0.0 {
        return 0.0;
    }
    let f = |a: f64| {
        a * rho + ((1.0 / delta).ln() + (a - 1.0) * (1.0 - 1.0 / a).ln() - a.ln()) / (a - 1.0)
    };
    let classic = rho + 2.0 * (rho * (1.0 / delta).ln()).sqrt();
    let (mut lo, mut hi) = (1.0 + 1e-9, 1.0 + 2.0 * (1.0 / delta).ln() / rho + 10.0);
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..300 {
        let a = hi - g * (hi - lo);
        let b = lo + g * (hi - lo);
        if f(a) < f(b) {
            hi = b;
        } else {
            lo = a;
        }
    }
    f((lo + hi) / 2.0).min(classic)
}

/// The ρ a zCDP (Gaussian) release may spend when it is charged as
/// (ε, δ)-DP: ρ-zCDP implies (ρ + 2√(ρ·ln(1/δ)), δ)-DP (Bun and Steinke
/// 2016, Proposition 1.3), and ρ = ε² / (√(L + ε) + √L)² makes that
/// exactly ε for L = ln(1/δ). Every rounding goes against the analyst: L
/// is bounded above, each square root above, ρ rounded down to a multiple
/// of 2⁻⁶⁰, and the bound checked again in exact arithmetic,
/// 4ρ·L_up ≤ (ε − ρ)², before ρ is returned. `None` when δ is not in
/// (0, 1) or ε is zero.
pub fn zcdp_for(epsilon: &Rational, delta: f64) -> Option<Rational> {
    if !(delta > 0.0 && delta < 1.0) || epsilon.is_zero() {
        return None;
    }
    let l_up = Rational::from_f64(crate::partition::ln_upper(1.0 / delta))?;
    let s = sqrt_upper(&l_up.add(epsilon))?.add(&sqrt_upper(&l_up)?);
    let exact = epsilon.mul(epsilon).div(&s.mul(&s))?;
    let grid = Rational::integer(1 << 60);
    let rho = Rational::new(exact.mul(&grid).floor(), grid.numer().clone());
    let gap = epsilon.sub_or_zero(&rho);
    let four_rho_l = Rational::integer(4).mul(&rho).mul(&l_up);
    (rho <= *epsilon && four_rho_l <= gap.mul(&gap) && !rho.is_zero()).then_some(rho)
}

/// A rational `q` with `q² ≥ x` and `q` within about 10⁻⁹ of √x.
fn sqrt_upper(x: &Rational) -> Option<Rational> {
    let f = x.to_f64().sqrt();
    let mut q = Rational::from_f64(f * (1.0 + 1e-12) + f64::MIN_POSITIVE)?;
    let step = Rational::from_f64(1.0 + 1e-9)?;
    for _ in 0..64 {
        if q.mul(&q) >= *x {
            return Some(q);
        }
        q = q.mul(&step);
    }
    None
}

/// ε-DP implies (ε²/2)-zCDP (Bun and Steinke 2016, Proposition 1.4).
pub fn pure_to_zcdp(epsilon: f64) -> f64 {
    epsilon * epsilon / 2.0
}

/// The split rule, stated once: a query's ε is divided equally among its
/// distinct measurements, exactly, so the shares add up to exactly the ε
/// charged. AVG is two measurements (a sum and a count), VARIANCE three
/// (sum, sum of squares, count). By sequential composition the query is
/// ε-DP. Partition selection, when a query needs it, takes its δ whole
/// and shares ε like any other measurement.
pub fn split_epsilon(epsilon: &Rational, measurements: usize) -> Rational {
    let n = Rational::integer(measurements.max(1) as u64);
    epsilon.div(&n).expect("n is positive")
}

/// Ledger units per ε: the ledger counts nano-ε.
pub const UNITS_PER_EPSILON: u64 = 1_000_000_000;

/// `epsilon` on the ledger's nano-ε grid: the ε a query's noise is
/// calibrated for, as a whole number of ledger units and as an exact
/// rational. A decimal such as 0.3, whose nearest `f64` lies a hair below
/// or above 3·10⁸ units, means those units; anything else is rounded down
/// (more noise, never less). The ledger charges exactly these units, so
/// what is charged is exactly what the mechanism spends. `None` for
/// non-finite, negative or sub-unit values (nothing could be charged).
pub fn epsilon_on_ledger_grid(epsilon: f64) -> Option<(u64, Rational)> {
    let exact = Rational::from_f64(epsilon)?;
    let scaled = exact.mul(&Rational::integer(UNITS_PER_EPSILON));
    let below = num_traits::ToPrimitive::to_u64(&scaled.floor())?;
    // Within 1e-12 relative of the next whole unit: that unit (the same
    // rule the ledger applies when it converts the cost it is given).
    let above = below.checked_add(1)?;
    let gap = Rational::integer(above).sub_or_zero(&scaled);
    let tolerance = Rational::integer(above).div(&Rational::integer(1_000_000_000_000))?;
    let units = if gap <= tolerance { above } else { below };
    (units > 0).then(|| {
        let grid = Rational::integer(units)
            .div(&Rational::integer(UNITS_PER_EPSILON))
            .expect("positive denominator");
        (units, grid)
    })
}

/// Exact sequential composition of pure-ε measurements.
pub fn sum_epsilons(epsilons: &[Rational]) -> Rational {
    epsilons
        .iter()
        .fold(Rational::integer(0), |acc, e| acc.add(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ρ a Gaussian release spends keeps its (ε, δ) promise: the
    /// classic conversion and the tighter one both stay within ε, and ρ is
    /// within 10⁻⁶ (relative) of the largest ρ the classic bound allows.
    #[test]
    fn zcdp_charged_as_epsilon_delta_stays_within_it() {
        for (eps, delta) in [(0.1, 1e-6), (1.0, 1e-9), (0.001, 1e-5), (10.0, 1e-6)] {
            let e = Rational::from_f64(eps).unwrap();
            let rho = zcdp_for(&e, delta).unwrap().to_f64();
            let classic = rho + 2.0 * (rho * (1.0 / delta).ln()).sqrt();
            assert!(classic <= eps, "{eps} {delta}: {classic}");
            assert!(zcdp_to_epsilon(rho, delta) <= eps);
            let l = (1.0 / delta).ln();
            let best = ((l + eps).sqrt() - l.sqrt()).powi(2);
            assert!((best - rho) / best < 1e-6, "{rho} vs {best}");
            // A mis-scaled ρ (10 % more) breaks the promise.
            let more = rho * 1.1;
            assert!(more + 2.0 * (more * l).sqrt() > eps);
        }
        assert!(zcdp_for(&Rational::from_f64(0.1).unwrap(), 0.0).is_none());
    }

    #[test]
    fn epsilons_snap_down_to_whole_ledger_units() {
        let (units, grid) = epsilon_on_ledger_grid(0.1).unwrap();
        assert_eq!(units, 100_000_000);
        assert_eq!(
            grid,
            Rational::integer(1).div(&Rational::integer(10)).unwrap()
        );
        // The f64 0.1 is a little above 1/10: the grid value never exceeds it.
        assert!(grid <= Rational::from_f64(0.1).unwrap());
        let third = epsilon_on_ledger_grid(1.0 / 3.0).unwrap();
        assert_eq!(third.0, 333_333_333);
        // The f64 0.3 is a little below 3/10: typed decimals keep their value.
        assert_eq!(epsilon_on_ledger_grid(0.3).unwrap().0, 300_000_000);
        assert_eq!(epsilon_on_ledger_grid(0.7).unwrap().0, 700_000_000);
        assert!(epsilon_on_ledger_grid(1e-300).is_none());
        assert!(epsilon_on_ledger_grid(0.9e-9).is_none());
        assert_eq!(epsilon_on_ledger_grid(1e-9).map(|g| g.0), Some(1));
        assert!(epsilon_on_ledger_grid(f64::NAN).is_none());
        assert!(epsilon_on_ledger_grid(1e300).is_none());
    }

    #[test]
    fn shares_add_up_exactly() {
        let eps = Rational::from_f64(0.1).unwrap();
        for n in 1..7 {
            let share = split_epsilon(&eps, n);
            assert_eq!(sum_epsilons(&vec![share; n]), eps);
        }
    }

    #[test]
    fn zcdp_conversion_matches_published_values() {
        // CKS 2020: ρ = 0.5, δ = 1e-6 gives ε ≈ 5.22 (classic bound 5.76).
        assert!((zcdp_to_epsilon(0.5, 1e-6) - 5.2215).abs() < 1e-3);
        assert!(zcdp_to_epsilon(0.5, 1e-6) < 0.5 + 2.0 * (0.5 * 1e6f64.ln()).sqrt());
        // Small ρ: close to the classic bound's leading term.
        let e = zcdp_to_epsilon(0.01, 1e-5);
        assert!(
            e > 0.01 && e < 0.01 + 2.0 * (0.01 * 1e5f64.ln()).sqrt(),
            "{e}"
        );
        assert_eq!(zcdp_to_epsilon(0.0, 1e-6), 0.0);
        assert_eq!(pure_to_zcdp(1.0), 0.5);
    }

    #[test]
    fn composition_adds_like_terms() {
        let p = PrivacyLoss::Pure { epsilon: 0.25 };
        assert_eq!(compose(&[p, p], 1e-6), PrivacyLoss::Pure { epsilon: 0.5 });
        let z = PrivacyLoss::Zcdp { rho: 0.25 };
        assert_eq!(compose(&[z, z], 1e-6), PrivacyLoss::Zcdp { rho: 0.5 });
        let a = PrivacyLoss::Approximate {
            epsilon: 0.1,
            delta: 1e-7,
        };
        match compose(&[a, z, z], 1e-6) {
            PrivacyLoss::Approximate { epsilon, delta } => {
                assert!((epsilon - 0.1 - zcdp_to_epsilon(0.5, 1e-6)).abs() < 1e-9);
                assert!((delta - 1.1e-6).abs() < 1e-15);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(z.to_approximate(1e-6).0, zcdp_to_epsilon(0.25, 1e-6));
    }
}
