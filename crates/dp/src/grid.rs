//! The power-of-two grid real values are rounded onto before summing.

/// A power-of-two grid for real-valued sums. Values are clamped, divided by
/// the grid unit and rounded to integers in the backend, so sums are exact
/// integers and noise is added in grid units. The rounding is part of the
/// sensitivity: a value in [lower, upper] rounds into
/// [round(lower/unit), round(upper/unit)].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    /// log2 of the grid unit.
    pub exponent: i32,
}

impl Grid {
    /// Bits of resolution a grid keeps below the largest magnitude.
    const RESOLUTION_BITS: i32 = 20;

    /// The unit grid (integers, no rounding).
    pub const INTEGER: Grid = Grid { exponent: 0 };

    /// A grid fine enough for values of magnitude up to `max_abs`.
    pub fn for_magnitude(max_abs: f64) -> Grid {
        if !(max_abs.is_finite()) || max_abs <= 0.0 {
            return Grid::INTEGER;
        }
        let top = max_abs.log2().ceil() as i32;
        Grid {
            exponent: top - Self::RESOLUTION_BITS,
        }
    }

    /// The grid unit 2^exponent.
    pub fn unit(&self) -> f64 {
        2f64.powi(self.exponent)
    }

    /// Largest |value| in grid units after rounding a value in [lower, upper].
    pub fn max_units(&self, lower: f64, upper: f64) -> u64 {
        let m = lower.abs().max(upper.abs());
        // Rounded up: any rounding mode of the backend stays within it.
        (m / self.unit()).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_counts_rounding() {
        let g = Grid::for_magnitude(5000.0);
        assert_eq!(g.exponent, 13 - 20);
        assert_eq!(g.max_units(0.0, 5000.0), (5000.0 / g.unit()).ceil() as u64);
        assert_eq!(Grid::INTEGER.max_units(-3.0, 2.0), 3);
    }
}
