//! How a query's ε is divided among the measurements that answer it.
//!
//! The rule, stated once: every measurement in a query gets an equal share
//! of the query's ε (computed exactly), so the shares add up to exactly the
//! ε that is charged. AVG is two measurements (a sum and a count), so it
//! takes two shares. By sequential composition the query is ε-DP.

use crate::rational::Rational;

/// Splits `epsilon` equally over `measurements` (at least one) exactly.
pub fn split_epsilon(epsilon: &Rational, measurements: usize) -> Rational {
    let n = Rational::integer(measurements.max(1) as u64);
    epsilon.div(&n).expect("n is positive")
}

/// Sequential composition of pure-ε measurements: the sum of their ε.
pub fn compose(epsilons: &[Rational]) -> Rational {
    epsilons
        .iter()
        .fold(Rational::integer(0), |acc, e| acc.add(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_exactly() {
        let eps = Rational::from_f64(0.1).unwrap();
        for n in 1..7 {
            let share = split_epsilon(&eps, n);
            assert_eq!(compose(&vec![share; n]), eps);
        }
    }
}
