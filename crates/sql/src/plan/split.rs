//! What the analyst asked the budget to buy (`dp.epsilon`, `dp.split`),
//! and how a plan divides its ε across measurements.

use dpgate_dp::accounting::split_epsilon;
use dpgate_dp::release::Output;
use dpgate_dp::split::{proportional, weights};
use dpgate_dp::Rational;

use crate::aggregate::MeasureSpec;

/// How a query's ε is divided among its measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Split {
    /// To minimise the outputs' errors ([`dpgate_dp::split`]).
    #[default]
    Optimal,
    /// The same share for every measurement.
    Equal,
}

impl Split {
    /// `'optimal'` or `'equal'`, any case.
    pub fn parse(text: &str) -> Option<Split> {
        match text.trim().to_ascii_lowercase().as_str() {
            "optimal" => Some(Split::Optimal),
            "equal" => Some(Split::Equal),
            _ => None,
        }
    }

    /// The setting's value as SHOW prints it.
    pub fn name(self) -> &'static str {
        match self {
            Split::Optimal => "optimal",
            Split::Equal => "equal",
        }
    }
}

/// What one statement may spend and how: the session's settings, taken
/// once when the statement starts.
#[derive(Clone, Debug, PartialEq)]
pub struct Ask {
    /// The ε the query spends.
    pub epsilon: f64,
    /// How that ε is divided among the query's measurements.
    pub split: Split,
}

impl Ask {
    /// `epsilon`, split to minimise the error.
    pub fn at(epsilon: f64) -> Ask {
        Ask {
            epsilon,
            split: Split::default(),
        }
    }
}

/// Each measurement's exact share of `epsilon` (the shares sum to it
/// exactly). `selection` is the count that decides partition selection,
/// which matters though no output may read it.
pub(super) fn shares(
    epsilon: &Rational,
    specs: &[MeasureSpec],
    outputs: &[Output],
    selection: Option<usize>,
    split: Split,
) -> Vec<Rational> {
    match split {
        Split::Equal => vec![split_epsilon(epsilon, specs.len()); specs.len()],
        Split::Optimal => {
            let scales: Vec<f64> = specs
                .iter()
                .map(|s| s.sensitivity.max(1) as f64 * s.grid.unit())
                .collect();
            let c = weights(outputs, &scales, selection.as_slice());
            proportional(epsilon, &c, 1.0 / 3.0)
        }
    }
}
