//! What a plan says about itself without running: `EXPLAIN`'s lines
//! (cost, grouping, each measurement's mechanism, sensitivity, share and
//! noise width, each column's derivation, the post-processing, the
//! backend SQL), the cost as text, and the fingerprint that keys free
//! repeats. All are functions of the plan alone, so every front end shows
//! and keys the same thing.

use dpgate_dp::accounting::PrivacyLoss;
use dpgate_dp::release::{Cost, Output, ReleasePlan};
use dpgate_dp::Noise;
use sha2::{Digest, Sha256};

use crate::plan::{Grouping, Plan, Target, TargetMet};
use crate::post::PostExpr;

impl Plan {
    /// `EXPLAIN`: the plan as text lines, without running or charging.
    pub fn explain_lines(&self, confidence: f64) -> Vec<String> {
        explain_lines(self, confidence)
    }

    /// The fingerprint of this plan released at `confidence`: the key of
    /// free repeats. It covers everything that decides what is released —
    /// the backend SQL (bounds, clamps and bound parameters included),
    /// each measurement's mechanism, sensitivity, exact share and grid,
    /// the derivations, key release (domains, τ, δ), post-processing and
    /// output columns — so queries that differ only in spelling share a
    /// release and any change that could alter it gets a new one.
    pub fn fingerprint(&self, confidence: f64) -> String {
        let mut h = Sha256::new();
        let mut part = |label: &str, text: &str| {
            h.update(label.as_bytes());
            h.update((text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        };
        part("sql", &self.backend_sql);
        for c in &self.columns {
            part("column", &format!("{}:{:?}", c.name, c.ty));
        }
        for m in &self.release.measurements {
            let (mechanism, share) = match &m.noise {
                Noise::Laplace(l) => ("laplace", l.epsilon()),
                Noise::Gaussian(g) => ("gaussian", g.rho()),
            };
            part(
                "measurement",
                &format!(
                    "{mechanism} {} {}/{} {} {}",
                    m.noise.sensitivity(),
                    share.numer(),
                    share.denom(),
                    m.grid.exponent,
                    m.len
                ),
            );
        }
        for o in &self.release.outputs {
            part("output", &format!("{o:?}"));
        }
        if let Some(s) = &self.release.selection {
            part(
                "selection",
                &format!(
                    "{} {} {:x}",
                    s.count,
                    s.selection.threshold(),
                    s.selection.delta().to_bits()
                ),
            );
        }
        if let Some(z) = &self.release.zcdp {
            part(
                "zcdp",
                &format!(
                    "{}/{} {}/{} {:x}",
                    z.rho.numer(),
                    z.rho.denom(),
                    z.epsilon.numer(),
                    z.epsilon.denom(),
                    z.delta.to_bits()
                ),
            );
        }
        part("grouping", &format!("{:?}", self.grouping));
        part("post", &format!("{:?}", self.post));
        part("confidence", &format!("{:x}", confidence.to_bits()));
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// `ε = 0.1`, `ε = 0.1, δ = 1e-6`, or with Gaussian noise
/// `ε = 0.1, δ = 1e-6 (ρ = 0.00018 zCDP)`: what a release costs, as text.
pub fn cost_text(cost: &Cost) -> String {
    let mut text = format!("ε = {}", fmt_eps(cost.epsilon_f64()));
    if cost.delta > 0.0 {
        text.push_str(&format!(", δ = {:e}", cost.delta));
    }
    if !cost.rho.is_zero() {
        text.push_str(&format!(" (ρ = {} zCDP)", fmt_rho(cost.rho.to_f64())));
    }
    text
}

/// `dp.target_error` as SHOW prints it: `50` or `count:50, total:2000`.
pub fn target_text(target: &Target) -> String {
    match target {
        Target::First(w) => fmt_width(*w),
        Target::Columns(c) => c
            .iter()
            .map(|(n, w)| format!("{n}:{}", fmt_width(*w)))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// `ε = 0.03 is the least that meets dp.target_error = '50'`.
pub fn target_met_text(met: &TargetMet) -> String {
    format!(
        "ε = {} is the least that meets dp.target_error = '{}'",
        fmt_eps(met.epsilon),
        target_text(&met.target)
    )
}

/// A ρ for people: four significant digits.
fn fmt_rho(x: f64) -> String {
    format!("{x:.4e}")
}

/// The EXPLAIN line that says which noise the plan uses and why.
fn mechanism_text(plan: &Plan) -> String {
    let note = plan.mechanism;
    let why = match (note.chosen_by, note.gaussian_variance_ratio) {
        (crate::plan::Mechanism::Auto, Some(r)) if note.gaussian => format!(
            "its outputs' variance is {:.2}× that of discrete Laplace at the same charge",
            r
        ),
        (crate::plan::Mechanism::Auto, Some(r)) => format!(
            "discrete Gaussian at the same charge would give {:.2}× the variance",
            r
        ),
        (crate::plan::Mechanism::Auto, None) => {
            "discrete Gaussian needs δ > 0 (privacy.delta)".to_string()
        }
        (chosen, _) => format!("SET dp.mechanism = '{}'", chosen.name()),
    };
    if note.gaussian {
        format!("  Mechanism: discrete Gaussian, zCDP charged as (ε, δ) ({why})")
    } else {
        format!("  Mechanism: discrete Laplace, pure ε ({why})")
    }
}

/// An ε for people: up to six decimals, no trailing zeros.
pub fn fmt_eps(x: f64) -> String {
    let s = format!("{x:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A half-width for people: whole above 100, else three decimals at most.
pub fn fmt_width(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

/// The lines of an EXPLAIN: cost, grouping, each measurement's mechanism,
/// sensitivity and share, each column's derivation and interval, the
/// post-processing, and the backend SQL.
fn explain_lines(plan: &Plan, confidence: f64) -> Vec<String> {
    let release = &plan.release;
    let mut lines = vec![
        "dpgate private query plan (not run, not charged)".to_string(),
        format!("  Cost: {}", cost_text(&plan.cost())),
        mechanism_text(plan),
    ];
    if let Some(met) = &plan.target {
        lines.push(format!("  Target: {}", target_met_text(met)));
    }
    lines.push(format!(
        "  Bounding: {}",
        plan.bounding.describe(plan.max_rows)
    ));
    lines.push(format!(
        "  Groups: {}",
        grouping_text(
            &plan.grouping,
            release.selection.as_ref().map(|s| s.selection.threshold())
        )
    ));
    for (i, m) in release.measurements.iter().enumerate() {
        let (mechanism, sensitivity) = match &m.noise {
            Noise::Laplace(_) => ("discrete Laplace", "L1 sensitivity"),
            Noise::Gaussian(_) => ("discrete Gaussian", "squared L2 sensitivity"),
        };
        let share = match m.noise.loss() {
            PrivacyLoss::Pure { epsilon } => {
                format!("ε = {}", fmt_eps(epsilon))
            }
            PrivacyLoss::Zcdp { rho } => format!("ρ = {}", fmt_rho(rho)),
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
                Some(PostExpr::Key(_)) => "group key".into(),
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

fn grouping_text(g: &Grouping, threshold: Option<i64>) -> String {
    match g {
        Grouping::None => "one row (no GROUP BY)".into(),
        Grouping::Domain { groups, .. } => format!(
            "{} keys from declared domains, all released (empty groups too)",
            groups.len()
        ),
        Grouping::Selection { .. } => match threshold {
            Some(t) => format!(
                "keys found in the data, released when their noisy row count reaches τ = {t} (partition selection)"
            ),
            None => "keys found in the data (partition selection)".into(),
        },
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
            Output::Mean {
                sum, count, center, ..
            } => [
                (
                    sum,
                    if center != 0.0 {
                        "centred sum"
                    } else {
                        "clamped sum"
                    },
                ),
                (count, "value count"),
            ]
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
            center,
        } if center != 0.0 => {
            format!("{center} + m{sum} / m{count}, clamped to [{lower}, {upper}]")
        }
        Output::Mean {
            sum,
            count,
            lower,
            upper,
            ..
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
