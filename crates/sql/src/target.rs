//! Accuracy-first queries: `SET dp.target_error = 50` (the 95 % half-width
//! of the first aggregate) or `'count:50, sum:2000'` (per column) says how
//! accurate an answer must be, and dpgate finds the least ε that makes
//! the reported intervals that narrow — from the plan alone (bounds,
//! sensitivities, the split), never from data, so choosing ε leaks
//! nothing (Ge et al., "APEx", SIGMOD 2019, answer queries to an accuracy
//! bound the same way).
//!
//! Only intervals known before the data are read can be targeted: counts
//! and sums. The interval of an average, a variance or a percentile
//! depends on how many rows it covers, which dpgate cannot know without
//! spending budget, so a target on one is refused with a hint.

use dpgate_config::Config;

use crate::error::{sqlstate, Refusal};
use crate::explain::{fmt_eps, target_text};
use crate::front::Prepared;
use crate::plan::{Ask, Plan, Target, TargetMet};
use crate::types::Cell;

/// The ledger's units per ε (the search runs on its grid).
const UNITS: f64 = 1e9;

/// Each column of `plan` that `target` aims at, with the half-width it
/// must meet: (column index, wanted half-width).
fn targeted_columns(target: &Target, plan: &Plan) -> Result<Vec<(usize, f64)>, Refusal> {
    let sources = plan.column_sources();
    match target {
            Target::First(w) => sources
                .iter()
                .position(Option::is_some)
                .map(|i| vec![(i, *w)])
                .ok_or_else(|| {
                    Refusal::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        "dp.target_error is set, but this query has no aggregate column to aim it at",
                        "RESET dp.target_error for queries without aggregates",
                    )
                }),
            Target::Columns(named) => named
                .iter()
                .map(|(name, w)| {
                    plan.columns
                        .iter()
                        .position(|c| c.name.eq_ignore_ascii_case(name))
                        .filter(|i| sources[*i].is_some())
                        .map(|i| (i, *w))
                        .ok_or_else(|| {
                            Refusal::new(
                                sqlstate::INVALID_PARAMETER_VALUE,
                                format!("dp.target_error names \"{name}\", which is not an aggregate column of this query"),
                                format!(
                                    "name output columns: {}",
                                    plan.columns
                                        .iter()
                                        .zip(&sources)
                                        .filter(|(_, s)| s.is_some())
                                        .map(|(c, _)| c.name.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )
                        })
                })
                .collect(),
        }
}

/// How far `plan` is from `target`: the largest ratio of a targeted
/// column's half-width to the one wanted (≤ 1 meets it). Refused when a
/// targeted column's interval is only known after the data is read.
fn shortfall(plan: &Plan, wanted: &[(usize, f64)], confidence: f64) -> Result<f64, Refusal> {
    let widths = plan.release.half_widths(confidence);
    let sources = plan.column_sources();
    let mut worst: f64 = 0.0;
    for &(i, w) in wanted {
        let output = sources[i].expect("targeted columns are aggregates");
        let Some(h) = widths[output] else {
            return Err(Refusal::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                format!(
                    "the interval of \"{}\" depends on how many rows it covers, which dpgate cannot know before reading data, so no ε can be promised for it",
                    plan.columns[i].name
                ),
                "aim dp.target_error at a COUNT or SUM column (e.g. 'count:50'), or SET dp.epsilon and read the interval from the NOTICE",
            ));
        };
        worst = worst.max(h / w);
    }
    Ok(worst)
}

impl Prepared {
    /// The plan at the least ε, on the ledger's grid between `min_epsilon`
    /// and `max_epsilon`, whose reported `confidence` half-widths meet
    /// `target` (the rest of `ask` as given). Refused, with the ε it
    /// would take, when even `max_epsilon` does not; `max_why` says where
    /// that maximum comes from.
    #[allow(clippy::too_many_arguments)]
    pub fn bind_to_target(
        &self,
        values: &[Cell],
        ask: &Ask,
        config: &Config,
        target: &Target,
        (min_epsilon, max_epsilon): (f64, f64),
        max_why: &str,
        confidence: f64,
    ) -> Result<Plan, Refusal> {
        let at = |units: u64| {
            let epsilon = units as f64 / UNITS;
            // Not kept: each step of the search is a different ε.
            self.plan(
                values,
                &Ask {
                    epsilon,
                    ..ask.clone()
                },
                config,
            )
        };
        let (lo, hi) = (
            (min_epsilon * UNITS).ceil().max(1.0) as u64,
            (max_epsilon * UNITS).floor() as u64,
        );
        if hi < lo {
            return Err(Refusal::new(
                sqlstate::BUDGET_EXHAUSTED,
                format!("no ε is left to aim dp.target_error at ({max_why})"),
                "ask the data owner for more budget",
            ));
        }
        let top = at(hi)?;
        let wanted = targeted_columns(target, &top)?;
        let ratio = shortfall(&top, &wanted, confidence)?;
        if ratio > 1.0 {
            // Half-widths shrink about as 1/ε.
            return Err(Refusal::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!(
                    "meeting dp.target_error = '{}' needs about ε = {}, more than the {} {max_why}",
                    target_text(target),
                    fmt_eps(max_epsilon * ratio),
                    fmt_eps(max_epsilon)
                ),
                "aim for a wider interval, or ask the data owner for a larger per-query ε or more budget",
            ));
        }
        let (mut lo, mut hi, mut best) = (lo, hi, top);
        let bottom = at(lo)?;
        if shortfall(&bottom, &wanted, confidence)? <= 1.0 {
            (hi, best) = (lo, bottom);
        }
        // Invariant: ε = hi meets the target (best is its plan), lo does not.
        while hi > lo + 1 {
            let mid = lo + (hi - lo) / 2;
            let plan = at(mid)?;
            if shortfall(&plan, &wanted, confidence)? <= 1.0 {
                (hi, best) = (mid, plan);
            } else {
                lo = mid;
            }
        }
        best.target = Some(TargetMet {
            target: target.clone(),
            epsilon: hi as f64 / UNITS,
        });
        Ok(best)
    }
}
