//! `EXPLAIN` of a private query: the plan as text lines — cost, grouping,
//! each measurement's mechanism, sensitivity, share and noise width, each
//! column's derivation, the post-processing and the backend SQL — without
//! running or charging anything.

use dpgate_dp::release::{Output, ReleasePlan};
use dpgate_sql::constant::Constant;
use dpgate_sql::{Grouping, Plan};
use pgwire::api::Type;

use crate::handler::QueryHandler;
use crate::report::{cost_text, fmt_eps, fmt_width};
use crate::wire::Outcome;

impl QueryHandler {
    /// `EXPLAIN`: the plan as text lines, without running or charging.
    pub(crate) fn explain(&self, plan: &Plan) -> Outcome {
        let confidence = self.shared.config().privacy.confidence;
        let lines = explain_lines(plan, confidence);
        Outcome::Rows {
            fields: vec![("QUERY PLAN".into(), Type::TEXT)],
            rows: lines.into_iter().map(|l| vec![Constant::Text(l)]).collect(),
            notice: None,
        }
    }
}

/// The lines of an EXPLAIN: cost, grouping, each measurement's mechanism,
/// sensitivity and share, each column's derivation and interval, the
/// post-processing, and the backend SQL.
fn explain_lines(plan: &Plan, confidence: f64) -> Vec<String> {
    let release = &plan.release;
    let mut lines = vec![
        "dpgate private query plan (not run, not charged)".to_string(),
        format!("  Cost: {}", cost_text(plan)),
        format!("  Groups: {}", grouping_text(&plan.grouping)),
    ];
    for (i, m) in release.measurements.iter().enumerate() {
        let (mechanism, sensitivity) = match &m.noise {
            dpgate_dp::noise::Noise::Laplace(_) => ("discrete Laplace", "L1 sensitivity"),
            dpgate_dp::noise::Noise::Gaussian(_) => ("discrete Gaussian", "squared L2 sensitivity"),
        };
        let share = match m.noise.loss() {
            dpgate_dp::accounting::PrivacyLoss::Pure { epsilon } => {
                format!("ε = {}", fmt_eps(epsilon))
            }
            other => format!("{other:?}"),
        };
        let width = m.noise.half_width(1.0 - confidence) * m.grid.unit();
        lines.push(format!(
            "  Measurement m{i}: {} — {mechanism}, {sensitivity} {} (in units of {}), {share}, noise within ±{} with {}% confidence{}",
            measurement_role(release, i),
            m.noise.sensitivity(),
            m.grid.unit(),
            fmt_width(width),
            confidence * 100.0,
            if m.len > 1 { format!(", {} values", m.len) } else { String::new() },
        ));
    }
    let widths = release.half_widths(confidence);
    let sources = plan.column_sources();
    for (i, c) in plan.columns.iter().enumerate() {
        let source = sources.get(i).copied().flatten();
        let how = match (
            source,
            source.and_then(|j| widths.get(j).copied().flatten()),
        ) {
            (Some(j), Some(w)) => format!(
                "{}, ±{} ({}% interval)",
                output_text(&release.outputs[j]),
                fmt_width(w),
                confidence * 100.0
            ),
            (Some(j), None) => format!(
                "{}, interval reported with the answer",
                output_text(&release.outputs[j])
            ),
            (None, _) => match plan.post.items.get(i) {
                Some(dpgate_sql::post::PostExpr::Key(_)) => "group key".into(),
                _ => "computed by dpgate from released values (post-processing, free)".into(),
            },
        };
        lines.push(format!("  Column {}: {how}", c.name));
    }
    let post = &plan.post;
    let mut steps = Vec::new();
    if post.having.is_some() {
        steps.push("HAVING");
    }
    if !post.order.is_empty() {
        steps.push("ORDER BY");
    }
    if post.distinct {
        steps.push("DISTINCT");
    }
    if post.limit.is_some() || post.offset > 0 {
        steps.push("LIMIT/OFFSET");
    }
    if !steps.is_empty() {
        lines.push(format!(
            "  After noise, in dpgate: {} (post-processing, free)",
            steps.join(", ")
        ));
    }
    lines.push("  Backend SQL:".into());
    lines.extend(plan.backend_sql.lines().map(|l| format!("    {l}")));
    lines
}

fn grouping_text(g: &Grouping) -> String {
    match g {
        Grouping::None => "one row (no GROUP BY)".into(),
        Grouping::Domain { groups, .. } => format!(
            "{} keys from declared domains, all released (empty groups too)",
            groups.len()
        ),
        Grouping::Selection { threshold, .. } => format!(
            "keys found in the data, released when their noisy row count reaches τ = {threshold} (partition selection)"
        ),
    }
}

/// What measurement `i` measures, from the outputs that read it.
fn measurement_role(release: &ReleasePlan, i: usize) -> String {
    let mut roles: Vec<&str> = release
        .outputs
        .iter()
        .flat_map(|o| match *o {
            Output::Count { measurement } if measurement == i => vec!["row count"],
            Output::Sum { measurement, .. } if measurement == i => vec!["clamped sum"],
            Output::Mean { sum, count, .. } => [(sum, "clamped sum"), (count, "value count")]
                .into_iter()
                .filter(|(m, _)| *m == i)
                .map(|(_, r)| r)
                .collect(),
            Output::Variance {
                count,
                sum,
                sum_squares,
                ..
            } => [
                (count, "value count"),
                (sum, "centred sum"),
                (sum_squares, "sum of squares"),
            ]
            .into_iter()
            .filter(|(m, _)| *m == i)
            .map(|(_, r)| r)
            .collect(),
            Output::Quantile { histogram, .. } if histogram == i => vec!["histogram"],
            _ => vec![],
        })
        .collect();
    roles.dedup();
    if roles.is_empty() {
        "row count for key selection".into()
    } else {
        roles.join(", ")
    }
}

fn output_text(o: &Output) -> String {
    match *o {
        Output::Count { measurement } => format!("noisy count m{measurement}"),
        Output::Sum { measurement, .. } => format!("noisy sum m{measurement}"),
        Output::Mean {
            sum,
            count,
            lower,
            upper,
        } => format!("m{sum} / m{count}, clamped to [{lower}, {upper}]"),
        Output::Variance {
            count,
            sum,
            sum_squares,
            stddev,
            ..
        } => format!(
            "{} from m{count}, m{sum}, m{sum_squares}",
            if stddev {
                "standard deviation"
            } else {
                "variance"
            }
        ),
        Output::Quantile {
            histogram,
            lower,
            upper,
            p,
        } => format!("quantile {p} of histogram m{histogram} over [{lower}, {upper}]"),
    }
}
