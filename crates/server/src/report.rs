//! How answers report their accuracy and cost: the NOTICE text, the
//! `<column>_ci` interval columns, and number formatting shared with EXPLAIN.

use dpgate_sql::constant::Constant;
use dpgate_sql::Plan;
use pgwire::api::Type;

/// How accuracy is reported: in a NOTICE only, or also as `<column>_ci`
/// columns for tools that hide notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accuracy {
    /// A NOTICE after each answer.
    Notice,
    /// The NOTICE, and a half-width column after each noisy column.
    Columns,
}

pub(crate) fn cost_text(plan: &Plan) -> String {
    if plan.delta > 0.0 {
        format!("ε = {}, δ = {:e}", fmt_eps(plan.epsilon), plan.delta)
    } else {
        format!("ε = {}", fmt_eps(plan.epsilon))
    }
}

/// ` 95% confidence half-widths: count ±12, avg ±0.4…1.9` (a range when
/// groups differ), or nothing when no column carries an interval.
pub(crate) fn widths_text(
    plan: &Plan,
    half_widths: &[Vec<Option<f64>>],
    confidence: f64,
) -> String {
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

pub(crate) fn fmt_eps(x: f64) -> String {
    let s = format!("{x:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

pub(crate) fn fmt_width(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}
