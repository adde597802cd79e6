//! One trial is one release, as the query path makes it: the backend's raw
//! groups through the same collector (partition selection with its own
//! noise), noise drawn by the plan, derivation and post-processing
//! (`Plan::finish`). Rows are told apart by their key columns (the output
//! columns that read no aggregate), normalised so that the released keys
//! and the plain query's text compare equal.

use std::collections::HashMap;
use std::ops::ControlFlow;

use dpgate_dp::gaussian::DiscreteGaussian;
use dpgate_dp::laplace::DiscreteLaplace;
use dpgate_dp::noise::Noise;
use dpgate_dp::release::ReleasePlan;
use dpgate_dp::Rational;
use dpgate_sql::post::PostExpr;
use dpgate_sql::types::key_value;
use dpgate_sql::{Answer, Cell, GroupSink, Grouping, OutputType, Plan, RawGroup};

/// One release of `plan` over the backend rows `raw`.
pub fn release_once(plan: &Plan, raw: &[RawGroup], max_groups: usize, confidence: f64) -> Answer {
    let rng = &mut dpgate_dp::secure_rng();
    if plan.groups_before_data().is_some() {
        let groups = plan.arrange(raw.to_vec());
        let draws: Vec<_> = groups
            .iter()
            .map(|_| plan.release.draw_noise(rng))
            .collect();
        return plan.finish(&groups, &draws, confidence);
    }
    let mut collector = plan.collector(max_groups);
    for g in raw {
        if let ControlFlow::Break(()) = collector.push(g.clone()) {
            break;
        }
    }
    let kept = collector.finish();
    plan.finish(&kept.groups, &kept.draws, confidence)
}

/// Where a row's identity comes from.
#[derive(Clone, Debug)]
pub struct Rows {
    /// Output columns that read no aggregate (the row's keys).
    pub key_columns: Vec<usize>,
    /// Output columns that are one aggregate each: (column, output index).
    pub aggregate_columns: Vec<(usize, usize)>,
    /// Whether rows can be matched by position instead (no GROUP BY, or
    /// a declared domain released in order, whole).
    pub positional: bool,
}

impl Rows {
    /// The shape of `plan`'s rows.
    pub fn of(plan: &Plan) -> Rows {
        let key_columns = (0..plan.post.items.len())
            .filter(|&c| !reads_aggregate(&plan.post.items[c]))
            .collect();
        let aggregate_columns = plan
            .post
            .items
            .iter()
            .enumerate()
            .filter_map(|(c, p)| match p {
                PostExpr::Agg(i) => Some((c, *i)),
                _ => None,
            })
            .collect();
        let whole = plan.post.having.is_none()
            && plan.post.order.is_empty()
            && plan.post.limit.is_none()
            && plan.post.offset == 0
            && !plan.post.distinct;
        let positional = match plan.grouping {
            Grouping::None => true,
            Grouping::Domain { .. } => whole,
            Grouping::Selection { .. } => false,
        };
        Rows {
            key_columns,
            aggregate_columns,
            positional,
        }
    }

    /// Whether rows of different groups can be told apart.
    pub fn matchable(&self) -> bool {
        !self.key_columns.is_empty() || self.positional
    }

    /// The identity of row `index` (`cells`): its normalised key cells, or
    /// its position.
    pub fn key(&self, plan: &Plan, index: usize, cells: &[Cell]) -> String {
        if self.key_columns.is_empty() {
            return format!("#{}", index + 1);
        }
        self.key_columns
            .iter()
            .map(|&c| normalise_cell(&cells[c], plan.columns[c].ty))
            .collect::<Vec<_>>()
            .join(" · ")
    }
}

fn reads_aggregate(p: &PostExpr) -> bool {
    match p {
        PostExpr::Agg(_) => true,
        PostExpr::Key(_) | PostExpr::Const(_) => false,
        PostExpr::Neg(x) | PostExpr::Not(x) | PostExpr::IsNull(x, _) | PostExpr::Cast(x, _) => {
            reads_aggregate(x)
        }
        PostExpr::Binary(_, a, b) => reads_aggregate(a) || reads_aggregate(b),
        PostExpr::Call(_, args) => args.iter().any(reads_aggregate),
        PostExpr::Case(arms, e) => {
            reads_aggregate(e)
                || arms
                    .iter()
                    .any(|(c, r)| reads_aggregate(c) || reads_aggregate(r))
        }
    }
}

/// A cell as comparable text.
pub fn normalise_cell(cell: &Cell, ty: OutputType) -> String {
    match cell {
        Cell::Null => "NULL".into(),
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) => normalise_text(&f.to_string(), ty),
        Cell::Text(t) => normalise_text(t, ty),
        Cell::Bool(b) => b.to_string(),
    }
}

/// Text from the backend (or a released key) as comparable text: numbers
/// by value, booleans as `true`/`false` (SQLite says 1 and 0).
pub fn normalise_text(text: &str, ty: OutputType) -> String {
    match ty {
        OutputType::Bool => match text.trim().to_ascii_lowercase().as_str() {
            "1" | "t" | "true" => "true".into(),
            "0" | "f" | "false" => "false".into(),
            other => other.into(),
        },
        OutputType::Int | OutputType::Float => match text.trim().parse::<f64>() {
            Ok(v) => format!("{v}"),
            Err(_) => text.into(),
        },
        OutputType::Text => match key_value(Some(text), ty) {
            Cell::Text(t) => t,
            other => format!("{other:?}"),
        },
    }
}

/// A cell as a number, when it is one.
pub fn number(cell: &Cell) -> Option<f64> {
    match cell {
        Cell::Int(i) => Some(*i as f64),
        Cell::Float(f) => Some(*f),
        _ => None,
    }
}

/// One row without noise.
#[derive(Clone, Debug)]
pub struct Bounded {
    /// Its cells, as released.
    pub cells: Vec<Cell>,
    /// Per column, the interval half-width where the column is one
    /// aggregate.
    pub widths: Vec<Option<f64>>,
    /// The backend's raw measured values of its group.
    pub raw: Vec<i64>,
}

/// The released rows without noise (the bounded answer the noise hides),
/// every group kept whether or not it would pass selection, HAVING or
/// LIMIT, by row identity.
pub fn noiseless(
    plan: &Plan,
    rows: &Rows,
    raw: &[RawGroup],
    confidence: f64,
) -> HashMap<String, Bounded> {
    let zero = plan.release.no_noise();
    plan.arrange(raw.to_vec())
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let noisy = plan.release.add_noise(&g.values, &zero);
            let row = plan.group_row(&g.keys, &plan.release.derive_all(&noisy, confidence));
            (
                rows.key(plan, i, &row.values),
                Bounded {
                    cells: row.values,
                    widths: row.widths,
                    raw: g.values.clone(),
                },
            )
        })
        .collect()
}

/// The release of a broken build whose every measurement's noise is
/// calibrated for a sensitivity `factor` times smaller than the true one
/// (the evaluator's self-check: its privacy test must fail on it). Noise
/// for sensitivity Δ/f at ε is noise for Δ at f·ε (Laplace scale Δ/ε), and
/// at f²·ρ for Gaussian noise (σ² = Δ²/2ρ), which also reaches Δ = 1.
pub fn understated(release: &ReleasePlan, factor: u64) -> ReleasePlan {
    let f = Rational::integer(factor);
    let mut broken = release.clone();
    for m in &mut broken.measurements {
        m.noise = match &m.noise {
            Noise::Laplace(l) => DiscreteLaplace::new(l.sensitivity(), l.epsilon().mul(&f))
                .map(Noise::from)
                .expect("a smaller noise scale is always valid"),
            Noise::Gaussian(g) => DiscreteGaussian::new(g.l2_squared(), g.rho().mul(&f).mul(&f))
                .map(Noise::from)
                .expect("a smaller noise scale is always valid"),
        };
    }
    broken
}

#[cfg(test)]
mod tests {
    use super::*;
    use dpgate_dp::release::{Measurement, Output};
    use dpgate_dp::Grid;

    #[test]
    fn understated_noise_is_that_of_a_smaller_sensitivity() {
        let eps = Rational::from_f64(0.5).unwrap();
        let plan = |sensitivity: u64, rho: Rational| ReleasePlan {
            measurements: vec![
                Measurement::scalar(
                    DiscreteLaplace::new(sensitivity, eps.clone()).unwrap(),
                    Grid::INTEGER,
                ),
                Measurement::scalar(
                    DiscreteGaussian::new(sensitivity * sensitivity, rho).unwrap(),
                    Grid::INTEGER,
                ),
            ],
            outputs: vec![Output::Count { measurement: 0 }],
            selection: None,
            zcdp: None,
        };
        let rho = Rational::from_f64(0.125).unwrap();
        // Sensitivity 1 understated 4× is noise for sensitivity 1/4: the
        // same as sensitivity 4 understated 16×, or sensitivity 1 at 4ε.
        let broken = understated(&plan(1, rho.clone()), 4);
        let quarter = understated(&plan(4, rho.clone()), 16);
        for (b, q) in broken.measurements.iter().zip(&quarter.measurements) {
            assert_eq!(b.noise.variance(), q.noise.variance());
        }
        let honest = plan(1, rho);
        // Exactly: the Laplace scale is a quarter, the Gaussian σ² a 16th.
        match (&broken.measurements[0].noise, &honest.measurements[0].noise) {
            (Noise::Laplace(b), Noise::Laplace(h)) => {
                assert_eq!(b.scale().mul(&Rational::integer(4)), *h.scale())
            }
            _ => unreachable!(),
        }
        match (&broken.measurements[1].noise, &honest.measurements[1].noise) {
            (Noise::Gaussian(b), Noise::Gaussian(h)) => {
                assert_eq!(b.sigma2().mul(&Rational::integer(16)), *h.sigma2())
            }
            _ => unreachable!(),
        }
        // What the plan claims (its cost) is unchanged by the switch only
        // in the evaluator's reading: the broken plan's own cost is larger.
        assert!(broken.cost().epsilon > honest.cost().epsilon);
    }
}
