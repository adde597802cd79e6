//! How answers report their accuracy and cost: the NOTICE text, the
//! `<column>_ci` interval columns.

use dpgate_ledger::Amount;
use dpgate_service::PrivateAnswer;
use dpgate_sql::explain::{cost_text, fmt_eps, fmt_width, target_met_text};
use dpgate_sql::Cell;
use dpgate_sql::OutputColumn;
use pgwire::api::Type;

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

/// The rows of a private answer with its NOTICE (cost or free repeat,
/// budget left, interval half-widths), and interval columns if asked.
pub(crate) fn private_outcome(
    columns: &[OutputColumn],
    sources: &[Option<usize>],
    answer: PrivateAnswer,
    accuracy: Accuracy,
) -> Outcome {
    let widths = widths_text(columns, &answer.half_widths, answer.confidence);
    let notice = match &answer.cost {
        Some(cost) => {
            let left = answer
                .standing
                .map(|(remaining, limit)| left_text(remaining, limit, cost.delta > 0.0))
                .unwrap_or_default();
            let target = answer
                .target
                .as_ref()
                .map(|t| format!(" ({})", target_met_text(t)))
                .unwrap_or_default();
            format!(
                "dpgate: this answer cost {}{target}; {left}.{widths}",
                cost_text(cost)
            )
        }
        None => {
            let left = answer
                .standing
                .map(|(remaining, limit)| format!("; {}", left_text(remaining, limit, false)))
                .unwrap_or_default();
            format!("dpgate: this answer repeats an earlier release of the same query, at no cost{left}.{widths}")
        }
    };
    let mut fields: Vec<(String, Type)> = columns
        .iter()
        .map(|c| (c.name.clone(), output_type(c.ty)))
        .collect();
    let mut rows = answer.rows;
    if accuracy == Accuracy::Columns {
        add_interval_columns(sources, &mut fields, &mut rows, &answer.half_widths);
    }
    Outcome::Rows {
        fields,
        rows,
        notice: Some(notice),
    }
}

/// `0.4 of ε = 3 remain` (and δ when the query spent δ).
fn left_text(remaining: Amount, limit: Amount, with_delta: bool) -> String {
    let mut s = format!(
        "{} of ε = {} remain",
        fmt_eps(remaining.epsilon),
        fmt_eps(limit.epsilon)
    );
    if with_delta {
        s.push_str(&format!(", {:e} of δ = {:e}", remaining.delta, limit.delta));
    }
    s
}

/// ` 95% confidence half-widths: count ±12, avg ±0.4…1.9` (a range when
/// groups differ), or nothing when no column carries an interval.
fn widths_text(
    columns: &[OutputColumn],
    half_widths: &[Vec<Option<f64>>],
    confidence: f64,
) -> String {
    let widths: Vec<String> = columns
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
    sources: &[Option<usize>],
    fields: &mut Vec<(String, Type)>,
    rows: &mut [Vec<Cell>],
    half_widths: &[Vec<Option<f64>>],
) {
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
                .map(Cell::Float)
                .unwrap_or(Cell::Null);
            row.insert(i + 1, w);
        }
    }
}
