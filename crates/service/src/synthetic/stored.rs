//! How a fit is kept in the ledger's releases table, and under which key.

use dpgate_config::{Config, Synthetic, Table};
use dpgate_dp::mst::Fit;
use dpgate_dp::rational::Rational;
use dpgate_ledger::Amount;
use dpgate_sql::synth::{Attribute, Attributes, Values};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::SyntheticModel;

/// What the ledger keeps of a fit (JSON in the releases table).
#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    epsilon: f64,
    delta: f64,
    rho: f64,
    fitted_at_ms: i64,
    seed: u64,
    sizes: Vec<usize>,
    edges: Vec<(usize, usize)>,
    noisy_one: Vec<Vec<i64>>,
    noisy_two: Vec<Vec<i64>>,
    one: Vec<Vec<f64>>,
    two: Vec<Vec<f64>>,
    rows: f64,
    /// Per attribute, the values partition selection chose (text columns
    /// without a declared domain; empty for the others).
    selected: Vec<Vec<String>>,
}

/// The key of `table`'s fit: its declaration, the fit's settings and δ
/// (not `rows` or `max_rows`, which only change how many rows are drawn
/// from the same fit).
pub(super) fn fit_key(table: &Table, spec: &Synthetic, config: &Config) -> String {
    let declaration = format!(
        "mst-v1|{}|{}|{:?}|{:?}|{}|{}|{:?}",
        table.schema,
        table.name,
        table.privacy,
        table.columns,
        spec.epsilon,
        spec.bins,
        config.privacy.delta
    );
    let digest = Sha256::digest(declaration.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("synthetic:{}.{}:{hex}", table.schema, table.name)
}

pub(super) fn encode(m: &SyntheticModel) -> String {
    let f = &m.fit;
    serde_json::to_string(&Stored {
        version: 1,
        epsilon: m.cost.epsilon,
        delta: m.cost.delta,
        rho: f.rho.to_f64(),
        fitted_at_ms: m.fitted_at_ms,
        seed: m.seed,
        sizes: f.sizes.clone(),
        edges: f.edges.clone(),
        noisy_one: f.noisy_one.clone(),
        noisy_two: f.noisy_two.clone(),
        one: f.one.clone(),
        two: f.two.clone(),
        rows: f.rows,
        selected: m
            .attributes
            .modelled
            .iter()
            .map(|a| match &a.values {
                Values::Selected(v) | Values::Quarters(v, _) => v.clone(),
                _ => Vec::new(),
            })
            .collect(),
    })
    .expect("a fit serializes")
}

/// A kept fit, if it matches the attributes (else it is refitted).
pub(super) fn decode(
    body: &str,
    table: &Table,
    key: &str,
    attrs: &Attributes,
) -> Option<SyntheticModel> {
    let s: Stored = serde_json::from_str(body).ok()?;
    let mut attrs = attrs.clone();
    if s.selected.len() != attrs.modelled.len() {
        return None;
    }
    for (a, chosen) in attrs.modelled.iter_mut().zip(&s.selected) {
        if a.is_selected() {
            *a = a.with_selected(chosen.clone());
        }
    }
    let sizes: Vec<usize> = attrs.modelled.iter().map(Attribute::size).collect();
    if s.version != 1 || s.sizes != sizes {
        return None;
    }
    Some(SyntheticModel {
        table: (table.schema.clone(), table.name.clone()),
        key: key.to_string(),
        cost: Amount {
            epsilon: s.epsilon,
            delta: s.delta,
        },
        fitted_at_ms: s.fitted_at_ms,
        attributes: attrs,
        fit: Fit {
            sizes: s.sizes,
            edges: s.edges,
            noisy_one: s.noisy_one,
            noisy_two: s.noisy_two,
            one: s.one,
            two: s.two,
            rows: s.rows,
            rho: Rational::from_f64(s.rho).unwrap_or_else(|| Rational::integer(0)),
        },
        seed: s.seed,
    })
}
