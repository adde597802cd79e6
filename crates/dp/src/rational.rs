//! Exact non-negative rationals, used for every parameter that a sampler
//! consumes. Floats from the config are converted exactly (every finite
//! `f64` is a dyadic rational), so no rounding ever weakens a guarantee.

use num_bigint::BigUint;
use num_integer::Integer;
use num_traits::{One, ToPrimitive, Zero};

/// A non-negative rational number `num / den` with `den > 0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rational {
    num: BigUint,
    den: BigUint,
}

impl Rational {
    /// Builds `num / den`, reduced. Panics if `den` is zero: callers build
    /// denominators from validated, positive parameters only.
    pub fn new(num: BigUint, den: BigUint) -> Self {
        assert!(!den.is_zero(), "rational with zero denominator");
        let g = num.gcd(&den);
        if g.is_one() || g.is_zero() {
            Rational { num, den }
        } else {
            Rational {
                num: num / &g,
                den: den / &g,
            }
        }
    }

    /// The integer `n`.
    pub fn integer(n: u64) -> Self {
        Rational::new(BigUint::from(n), BigUint::one())
    }

    /// The exact value of a finite, non-negative `f64`, or `None` for
    /// negative, NaN or infinite input.
    pub fn from_f64(x: f64) -> Option<Self> {
        if !x.is_finite() || x < 0.0 {
            return None;
        }
        if x == 0.0 {
            return Some(Rational::integer(0));
        }
        let bits = x.to_bits();
        let exponent = ((bits >> 52) & 0x7ff) as i64;
        let fraction = bits & ((1u64 << 52) - 1);
        // Subnormals have no implicit leading one and a fixed exponent.
        let (mantissa, exp2) = if exponent == 0 {
            (fraction, -1074)
        } else {
            (fraction | (1u64 << 52), exponent - 1075)
        };
        let m = BigUint::from(mantissa);
        Some(if exp2 >= 0 {
            Rational::new(m << (exp2 as usize), BigUint::one())
        } else {
            Rational::new(m, BigUint::one() << ((-exp2) as usize))
        })
    }

    /// Numerator (reduced).
    pub fn numer(&self) -> &BigUint {
        &self.num
    }

    /// Denominator (reduced, positive).
    pub fn denom(&self) -> &BigUint {
        &self.den
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.num.is_zero()
    }

    /// Exact product.
    pub fn mul(&self, other: &Rational) -> Rational {
        Rational::new(&self.num * &other.num, &self.den * &other.den)
    }

    /// Exact quotient; `None` when dividing by zero.
    pub fn div(&self, other: &Rational) -> Option<Rational> {
        if other.is_zero() {
            return None;
        }
        Some(Rational::new(
            &self.num * &other.den,
            &self.den * &other.num,
        ))
    }

    /// Exact sum.
    pub fn add(&self, other: &Rational) -> Rational {
        Rational::new(
            &self.num * &other.den + &other.num * &self.den,
            &self.den * &other.den,
        )
    }

    /// `self - other`, or zero when `other` is larger.
    pub fn sub_or_zero(&self, other: &Rational) -> Rational {
        let a = &self.num * &other.den;
        let b = &other.num * &self.den;
        if a <= b {
            return Rational::integer(0);
        }
        Rational::new(a - b, &self.den * &other.den)
    }

    /// `floor(self)`.
    pub fn floor(&self) -> BigUint {
        &self.num / &self.den
    }

    /// Nearest `f64`, for reports only (never for sampling).
    pub fn to_f64(&self) -> f64 {
        // Keep the top 64 bits of each part and carry the shifts as a power of two.
        let sn = self.num.bits().saturating_sub(64);
        let sd = self.den.bits().saturating_sub(64);
        let n = (&self.num >> sn).to_f64().unwrap_or(0.0);
        let d = (&self.den >> sd).to_f64().unwrap_or(1.0);
        let shift = sn as i64 - sd as i64;
        let half = (shift / 2) as i32;
        n / d * 2f64.powi(half) * 2f64.powi((shift - half as i64) as i32)
    }
}

impl PartialOrd for Rational {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Rational {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (&self.num * &other.den).cmp(&(&other.num * &self.den))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_convert_exactly() {
        let tenth = Rational::from_f64(0.1).unwrap();
        assert_eq!(tenth.numer(), &BigUint::from(3602879701896397u64));
        assert_eq!(tenth.denom(), &(BigUint::one() << 55usize));
        assert_eq!(Rational::from_f64(3.0).unwrap(), Rational::integer(3));
        assert_eq!(Rational::from_f64(0.5).unwrap().to_f64(), 0.5);
        assert!(Rational::from_f64(-1.0).is_none());
        assert!(Rational::from_f64(f64::NAN).is_none());
        let tiny = Rational::from_f64(f64::MIN_POSITIVE / 4.0).unwrap();
        assert_eq!(tiny.to_f64(), f64::MIN_POSITIVE / 4.0);
    }

    #[test]
    fn arithmetic_is_exact() {
        let a = Rational::from_f64(0.1).unwrap();
        let b = Rational::from_f64(0.2).unwrap();
        let sum = a.add(&b);
        // 0.1 + 0.2 in exact arithmetic is not the f64 0.3.
        assert_ne!(sum, Rational::from_f64(0.3).unwrap());
        assert_eq!(a.mul(&Rational::integer(2)), b);
        assert_eq!(b.div(&a).unwrap(), Rational::integer(2));
        assert!(a < b);
        assert_eq!(
            Rational::integer(7)
                .div(&Rational::integer(2))
                .unwrap()
                .floor(),
            BigUint::from(3u8)
        );
    }
}
