//! Kept releases: a release, once made, is public to the analyst who saw
//! it, so the same query at the same settings (the same
//! [`dpgate_sql::Plan::fingerprint`]) may be answered with the same rows
//! at no new cost. This is how the ledger stores them.

use dpgate_sql::constant::Constant;
use serde::{Deserialize, Serialize};

/// A released answer as the ledger keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// Rows after post-processing.
    pub rows: Vec<Vec<Constant>>,
    /// Each row's half-widths, per output column.
    pub half_widths: Vec<Vec<Option<f64>>>,
}

/// Cells with floats kept bit for bit (JSON numbers lose NaN and ±∞).
#[derive(Serialize, Deserialize)]
enum Cell {
    N,
    I(i64),
    F(u64),
    T(String),
    B(bool),
}

#[derive(Serialize, Deserialize)]
struct Body {
    rows: Vec<Vec<Cell>>,
    widths: Vec<Vec<Option<u64>>>,
}

impl Kept {
    /// JSON for the ledger.
    pub fn encode(&self) -> String {
        let body = Body {
            rows: self
                .rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|c| match c {
                            Constant::Null => Cell::N,
                            Constant::Int(i) => Cell::I(*i),
                            Constant::Float(f) => Cell::F(f.to_bits()),
                            Constant::Text(t) => Cell::T(t.clone()),
                            Constant::Bool(b) => Cell::B(*b),
                        })
                        .collect()
                })
                .collect(),
            widths: self
                .half_widths
                .iter()
                .map(|r| r.iter().map(|w| w.map(f64::to_bits)).collect())
                .collect(),
        };
        serde_json::to_string(&body).expect("plain data serializes")
    }

    /// Reads what [`Kept::encode`] wrote (None if it cannot be read: the
    /// query is then charged and answered afresh).
    pub fn decode(text: &str) -> Option<Kept> {
        let body: Body = serde_json::from_str(text).ok()?;
        Some(Kept {
            rows: body
                .rows
                .into_iter()
                .map(|r| {
                    r.into_iter()
                        .map(|c| match c {
                            Cell::N => Constant::Null,
                            Cell::I(i) => Constant::Int(i),
                            Cell::F(f) => Constant::Float(f64::from_bits(f)),
                            Cell::T(t) => Constant::Text(t),
                            Cell::B(b) => Constant::Bool(b),
                        })
                        .collect()
                })
                .collect(),
            half_widths: body
                .widths
                .into_iter()
                .map(|r| r.into_iter().map(|w| w.map(f64::from_bits)).collect())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_round_trips_bit_for_bit() {
        let kept = Kept {
            rows: vec![vec![
                Constant::Text("A".into()),
                Constant::Int(-3),
                Constant::Float(f64::NAN),
                Constant::Float(0.1),
                Constant::Null,
                Constant::Bool(true),
            ]],
            half_widths: vec![vec![None, Some(12.5), Some(f64::INFINITY)]],
        };
        let back = Kept::decode(&kept.encode()).unwrap();
        assert_eq!(back.rows[0][3], Constant::Float(0.1));
        assert!(matches!(back.rows[0][2], Constant::Float(f) if f.is_nan()));
        assert_eq!(back.half_widths, kept.half_widths);
        assert!(Kept::decode("not json").is_none());
    }
}
