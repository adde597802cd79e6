//! Exact amounts of privacy loss. The ledger adds integers, never floats:
//! ε in nano-ε and δ in atto-δ, costs rounded up and budgets rounded down,
//! so rounding can never let anyone spend more than a budget allows.

/// Units per ε.
pub(crate) const EPSILON_SCALE: f64 = 1e9;
/// Units per δ (δ is tiny: 1e-6 is 10¹² units).
pub(crate) const DELTA_SCALE: f64 = 1e18;

/// An amount of privacy loss, as shown to people.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Amount {
    /// ε.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
}

/// ρ (zCDP, recorded where Gaussian noise was used) in ledger units,
/// nano-ρ, rounded up.
pub(crate) fn rho_units(rho: f64) -> i64 {
    to_units(rho, EPSILON_SCALE, true)
}

/// nano-ρ as ρ.
pub(crate) fn rho_from_units(units: i64) -> f64 {
    units as f64 / EPSILON_SCALE
}

/// An amount in ledger units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Units {
    pub epsilon: i64,
    pub delta: i64,
}

impl Units {
    /// A cost: rounded up.
    pub fn cost(a: Amount) -> Units {
        Units {
            epsilon: to_units(a.epsilon, EPSILON_SCALE, true),
            delta: to_units(a.delta, DELTA_SCALE, true),
        }
    }

    /// A limit: rounded down.
    pub fn limit(a: Amount) -> Units {
        Units {
            epsilon: to_units(a.epsilon, EPSILON_SCALE, false),
            delta: to_units(a.delta, DELTA_SCALE, false),
        }
    }

    pub fn amount(self) -> Amount {
        Amount {
            epsilon: self.epsilon as f64 / EPSILON_SCALE,
            delta: self.delta as f64 / DELTA_SCALE,
        }
    }

    pub fn plus(self, o: Units) -> Units {
        Units {
            epsilon: self.epsilon.saturating_add(o.epsilon),
            delta: self.delta.saturating_add(o.delta),
        }
    }

    pub fn minus_or_zero(self, o: Units) -> Units {
        Units {
            epsilon: self.epsilon.saturating_sub(o.epsilon).max(0),
            delta: self.delta.saturating_sub(o.delta).max(0),
        }
    }
}

/// `value × scale` as an integer. A product within float error of a
/// whole number of units (0.1 × 1e9) counts as that number: planners
/// calibrate noise for ε already on the unit grid (`dpgate_dp::accounting::
/// epsilon_on_ledger_grid`), so that number is exactly what was spent.
/// Otherwise costs round up and limits down, and a positive cost is never
/// less than one unit: no query is free.
fn to_units(value: f64, scale: f64, round_up: bool) -> i64 {
    if !value.is_finite() || value <= 0.0 {
        return 0;
    }
    let x = value * scale;
    let r = x.round();
    let units = if r >= 1.0 && (x - r).abs() <= 1e-12 * x.abs() {
        r as i64
    } else if round_up {
        x.ceil() as i64
    } else {
        x.floor() as i64
    };
    if round_up {
        units.max(1)
    } else {
        units
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_literals_are_exact_and_rounding_is_safe() {
        let a = Amount {
            epsilon: 0.1,
            delta: 1e-6,
        };
        assert_eq!(Units::cost(a).epsilon, 100_000_000);
        assert_eq!(Units::cost(a).delta, 1_000_000_000_000);
        let odd = Amount {
            epsilon: 1.0 / 3.0,
            delta: 0.0,
        };
        assert_eq!(Units::cost(odd).epsilon, 333_333_334);
        assert_eq!(Units::limit(odd).epsilon, 333_333_333);
        assert_eq!(Units::cost(Amount::default()), Units::default());
        // No positive cost rounds to nothing, however small.
        let tiny = Amount {
            epsilon: 1e-300,
            delta: 1e-300,
        };
        assert_eq!(
            Units::cost(tiny),
            Units {
                epsilon: 1,
                delta: 1
            }
        );
        assert_eq!(Units::limit(tiny), Units::default());
        let below_half = Amount {
            epsilon: 0.4e-9,
            delta: 0.0,
        };
        assert_eq!(Units::cost(below_half).epsilon, 1);
    }
}
