//! What the analyst asked the budget to buy (`dp.epsilon`, `dp.split`),
//! and how a plan divides its ε across measurements.

use dpgate_dp::accounting::split_epsilon;
use dpgate_dp::release::Output;
use dpgate_dp::split::{proportional, weights};
use dpgate_dp::Rational;

use crate::aggregate::MeasureSpec;
use crate::error::{sqlstate, Refusal};

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
    /// `'optimal'` or `'equal'`, any case (`dp.split`, or an HTTP
    /// request's `split`).
    pub fn parse(text: &str) -> Result<Split, Refusal> {
        match text.trim().to_ascii_lowercase().as_str() {
            "optimal" => Ok(Split::Optimal),
            "equal" => Ok(Split::Equal),
            _ => Err(Refusal::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("dp.split must be 'optimal' or 'equal', got '{}'", text.trim()),
                "'optimal' divides ε to minimise the errors of the aggregates asked for; 'equal' gives every measurement the same share",
            )),
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

/// Which noise a query gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mechanism {
    /// The one whose outputs have less variance at the same charge.
    #[default]
    Auto,
    /// Discrete Laplace, pure ε.
    Laplace,
    /// Discrete Gaussian, zCDP charged as (ε, δ).
    Gaussian,
}

impl Mechanism {
    /// `'auto'`, `'laplace'` or `'gaussian'`, any case (`dp.mechanism`,
    /// or an HTTP request's `mechanism`).
    pub fn parse(text: &str) -> Result<Mechanism, Refusal> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Mechanism::Auto),
            "laplace" => Ok(Mechanism::Laplace),
            "gaussian" => Ok(Mechanism::Gaussian),
            _ => Err(Refusal::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!(
                    "dp.mechanism must be 'auto', 'laplace' or 'gaussian', got '{}'",
                    text.trim()
                ),
                "'auto' uses whichever noise gives the smaller error at the same charge; 'laplace' is pure ε; 'gaussian' is zCDP charged as (ε, δ)",
            )),
        }
    }

    /// The setting's value as SHOW prints it.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Auto => "auto",
            Mechanism::Laplace => "laplace",
            Mechanism::Gaussian => "gaussian",
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
    /// Which noise.
    pub mechanism: Mechanism,
    /// The accuracy asked for instead of `epsilon` (`dp.target_error`).
    pub target: Option<Target>,
}

impl Ask {
    /// `epsilon`, split to minimise the error, with the better noise.
    pub fn at(epsilon: f64) -> Ask {
        Ask {
            epsilon,
            split: Split::default(),
            mechanism: Mechanism::default(),
            target: None,
        }
    }
}

/// Each measurement's exact share of `total`, ε (`power` 1/3) or ρ
/// (`power` 1/2); the shares sum to it exactly. `selection` is the count
/// that decides partition selection, which matters though no output may
/// read it.
pub(super) fn shares(
    total: &Rational,
    specs: &[MeasureSpec],
    outputs: &[Output],
    selection: Option<usize>,
    split: Split,
    power: f64,
) -> Vec<Rational> {
    match split {
        Split::Equal => vec![split_epsilon(total, specs.len()); specs.len()],
        Split::Optimal => {
            let scales: Vec<f64> = specs
                .iter()
                .map(|s| s.sensitivity.max(1) as f64 * s.grid.unit())
                .collect();
            let c = weights(outputs, &scales, selection.as_slice());
            proportional(total, &c, power)
        }
    }
}

/// What accuracy the analyst asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// A half-width for the first aggregate column.
    First(f64),
    /// A half-width per named output column.
    Columns(Vec<(String, f64)>),
}

impl Target {
    /// `50`, or `count:50, avg_cost:2` (names are output column names,
    /// any case). Each half-width must be a positive number.
    pub fn parse(text: &str) -> Result<Target, Refusal> {
        let bad = |why: String| {
            Refusal::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("dp.target_error {why}"),
                "SET dp.target_error = 50 (the first aggregate's half-width), or = 'count:50, total:2000' per column; RESET dp.target_error to spend dp.epsilon instead",
            )
        };
        let width = |t: &str| -> Result<f64, Refusal> {
            t.trim()
                .parse::<f64>()
                .ok()
                .filter(|w| w.is_finite() && *w > 0.0)
                .ok_or_else(|| bad(format!("needs positive half-widths, got '{}'", t.trim())))
        };
        let text = text.trim();
        if !text.contains(':') {
            return Ok(Target::First(width(text)?));
        }
        let mut columns = Vec::new();
        for part in text.split(',') {
            let Some((name, w)) = part.split_once(':') else {
                return Err(bad(format!("'{}' is not column:half-width", part.trim())));
            };
            let name = name.trim().trim_matches('"').to_string();
            if name.is_empty() {
                return Err(bad("names no column".into()));
            }
            columns.push((name, width(w)?));
        }
        Ok(Target::Columns(columns))
    }
}

/// The ε a plan met its target with, for EXPLAIN and the NOTICE.
#[derive(Clone, Debug, PartialEq)]
pub struct TargetMet {
    /// The target, as set.
    pub target: Target,
    /// The least ε (on the ledger's grid) that meets it.
    pub epsilon: f64,
}
