//! The private query path: charge, query the backend, release, report.
//! Nothing reaches the backend unless the charge is durable; after the
//! charge, every failure is the same uninformative error.

use dpgate_dp::release::{NoiseDraw, Output, ReleasePlan};
use dpgate_sql::constant::Constant;
use dpgate_sql::{sqlstate, Grouping, Plan, RawGroup, Refusal};
use pgwire::api::Type;

use crate::handler::QueryHandler;
use crate::wire::{output_type, Outcome};

/// How accuracy is reported: in a NOTICE only, or also as `<column>_ci`
/// columns for tools that hide notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accuracy {
    /// A NOTICE after each answer.
    Notice,
    /// The NOTICE, and a half-width column after each noisy column.
    Columns,
}

impl QueryHandler {
    /// ε spent so far by `user`.
    pub(crate) async fn spent(&self, user: &str) -> Result<f64, Refusal> {
        let ledger = self.shared.ledger.clone();
        let user = user.to_string();
        tokio::task::spawn_blocking(move || ledger.spent(&user))
            .await
            .map_err(|e| ledger_failure(&e.to_string()))?
            .map_err(|e| ledger_failure(&e.to_string()))
    }

    /// Charge, query, release. A cancel request drops this future, which
    /// cancels the backend query; the charge stands.
    pub(crate) async fn answer(
        &self,
        user: &str,
        plan: Plan,
        sql: &str,
        accuracy: Accuracy,
    ) -> Result<Outcome, Refusal> {
        let config = &self.shared.config;
        let budget = config.user(user).map(|u| u.epsilon_budget).unwrap_or(0.0);
        // Noise is drawn off the request path, while the charge and the
        // backend query run: sampling time grows with the magnitude drawn.
        // Only partition selection, whose group count is known after the
        // query, draws afterwards.
        let early_noise = plan
            .groups_before_data()
            .map(|n| draw_noise(plan.release.clone(), n));
        let ledger = self.shared.ledger.clone();
        let (u, s, eps) = (user.to_string(), sql.to_string(), plan.epsilon);
        let charge = tokio::task::spawn_blocking(move || ledger.charge(&u, budget, eps, &s))
            .await
            .map_err(|e| ledger_failure(&e.to_string()))?
            .map_err(|e| match e {
                dpgate_ledger::LedgerError::Exhausted { spent, budget, cost } => Refusal::new(
                    sqlstate::BUDGET_EXHAUSTED,
                    format!("privacy budget exhausted: this query costs ε = {cost}, but only {} of {budget} remain", fmt_eps((budget - spent).max(0.0))),
                    "lower the cost with SET dp.epsilon = <smaller value>, or ask the data owner for more budget",
                ),
                other => ledger_failure(&other.to_string()),
            })?;
        tracing::info!(
            user,
            epsilon = plan.epsilon,
            delta = plan.delta,
            spent = charge.spent,
            "charged"
        );

        let raw = self
            .shared
            .backend
            .fetch_groups(
                &plan.backend_sql,
                key_count(&plan),
                plan.release.raw_len(),
            )
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, sql = %plan.backend_sql, "backend query failed after charge");
                failed_after_charge()
            })?;
        let groups = plan.arrange(
            raw.into_iter()
                .map(|g| RawGroup {
                    keys: g.keys,
                    values: g.values,
                })
                .collect(),
        );
        let draws = match early_noise {
            Some(draws) => draws,
            None => draw_noise(plan.release.clone(), groups.len()),
        }
        .await
        .map_err(|e| {
            tracing::error!("noise sampling failed: {e}");
            failed_after_charge()
        })?;
        let confidence = config.privacy.confidence;
        let answer = plan.finish(&groups, &draws, confidence);
        let notice = format!(
            "dpgate: this answer cost {}; {} of ε = {} remain.{}",
            cost_text(&plan),
            fmt_eps(charge.remaining),
            fmt_eps(budget),
            widths_text(&plan, &answer.half_widths, confidence),
        );
        let mut fields: Vec<(String, Type)> = plan
            .columns
            .iter()
            .map(|c| (c.name.clone(), output_type(c.ty)))
            .collect();
        let mut rows = answer.rows;
        if accuracy == Accuracy::Columns {
            add_interval_columns(&plan, &mut fields, &mut rows, &answer.half_widths);
        }
        Ok(Outcome::Rows {
            fields,
            rows,
            notice: Some(notice),
        })
    }

    /// `EXPLAIN`: the plan as text lines, without running or charging.
    pub(crate) fn explain(&self, plan: &Plan) -> Outcome {
        let confidence = self.shared.config.privacy.confidence;
        let lines = explain_lines(plan, confidence);
        Outcome::Rows {
            fields: vec![("QUERY PLAN".into(), Type::TEXT)],
            rows: lines.into_iter().map(|l| vec![Constant::Text(l)]).collect(),
            notice: None,
        }
    }
}

fn key_count(plan: &Plan) -> usize {
    match &plan.grouping {
        Grouping::None => 0,
        Grouping::Domain { keys, .. } | Grouping::Selection { keys, .. } => keys.len(),
    }
}

fn cost_text(plan: &Plan) -> String {
    if plan.delta > 0.0 {
        format!("ε = {}, δ = {:e}", fmt_eps(plan.epsilon), plan.delta)
    } else {
        format!("ε = {}", fmt_eps(plan.epsilon))
    }
}

/// ` 95% confidence half-widths: count ±12, avg ±0.4…1.9` (a range when
/// groups differ), or nothing when no column carries an interval.
fn widths_text(plan: &Plan, half_widths: &[Vec<Option<f64>>], confidence: f64) -> String {
    let widths: Vec<String> = plan
        .columns
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let w: Vec<f64> = half_widths.iter().filter_map(|r| r[i]).collect();
            let lo = w.iter().cloned().fold(f64::INFINITY, f64::min);
            let hi = w.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            match w.len() {
                0 => None,
                _ if hi - lo <= 1e-9 * hi.abs().max(1.0) => {
                    Some(format!("{} ±{}", c.name, fmt_width(hi)))
                }
                _ => Some(format!("{} ±{}…{}", c.name, fmt_width(lo), fmt_width(hi))),
            }
        })
        .collect();
    if widths.is_empty() {
        String::new()
    } else {
        format!(
            " {}% confidence half-widths: {}",
            confidence * 100.0,
            widths.join(", ")
        )
    }
}

/// Inserts `<name>_ci` (the half-width, float8) after every column that
/// shows a noisy aggregate; with `rows` empty, only the fields (Describe).
pub(crate) fn add_interval_columns(
    plan: &Plan,
    fields: &mut Vec<(String, Type)>,
    rows: &mut [Vec<Constant>],
    half_widths: &[Vec<Option<f64>>],
) {
    let sources = plan.column_sources();
    for i in (0..fields.len()).rev() {
        if sources.get(i).copied().flatten().is_none() {
            continue;
        }
        let name = format!("{}_ci", fields[i].0);
        fields.insert(i + 1, (name, Type::FLOAT8));
        for (row, widths) in rows.iter_mut().zip(half_widths) {
            let w = widths
                .get(i)
                .copied()
                .flatten()
                .map(Constant::Float)
                .unwrap_or(Constant::Null);
            row.insert(i + 1, w);
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

pub(crate) fn fmt_eps(x: f64) -> String {
    let s = format!("{x:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn fmt_width(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// Draws noise for `groups` groups in a blocking task.
fn draw_noise(release: ReleasePlan, groups: usize) -> tokio::task::JoinHandle<Vec<NoiseDraw>> {
    tokio::task::spawn_blocking(move || {
        let mut rng = dpgate_dp::secure_rng();
        (0..groups).map(|_| release.draw_noise(&mut rng)).collect()
    })
}

/// The one error every failure after the charge gets: it must not depend
/// on the data, so it carries no detail (the log has it).
fn failed_after_charge() -> Refusal {
    Refusal::new(
        sqlstate::BACKEND_FAILED,
        "the private query could not be completed; its cost has been charged",
        "retry later; if it keeps failing, ask the data owner to check the backend",
    )
}

pub(crate) fn ledger_failure(detail: &str) -> Refusal {
    tracing::error!(detail, "ledger failure");
    Refusal::new(
        "58030",
        "the privacy ledger could not record the charge, so the query was not run",
        "retry later; the data owner should check the ledger file",
    )
}
