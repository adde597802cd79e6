//! Kept releases: a release, once made, is public to the analyst who saw
//! it, so the same query at the same settings (the same
//! [`dpgate_sql::Plan::fingerprint`]) may be answered with the same rows
//! at no new cost. This is how the ledger stores them.

use dpgate_sql::Cell;
use serde::{Deserialize, Serialize};

/// A released answer as the ledger keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Kept {
    /// Rows after post-processing.
    pub rows: Vec<Vec<Cell>>,
    /// Each row's half-widths, per output column.
    pub half_widths: Vec<Vec<Option<f64>>>,
}

/// Cells with floats kept bit for bit (JSON numbers lose NaN and ±∞).
#[derive(Serialize, Deserialize)]
enum Stored {
    N,
    I(i64),
    F(u64),
    T(String),
    B(bool),
}

#[derive(Serialize, Deserialize)]
struct Body {
    rows: Vec<Vec<Stored>>,
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
                            Cell::Null => Stored::N,
                            Cell::Int(i) => Stored::I(*i),
                            Cell::Float(f) => Stored::F(f.to_bits()),
                            Cell::Text(t) => Stored::T(t.clone()),
                            Cell::Bool(b) => Stored::B(*b),
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
                            Stored::N => Cell::Null,
                            Stored::I(i) => Cell::Int(i),
                            Stored::F(f) => Cell::Float(f64::from_bits(f)),
                            Stored::T(t) => Cell::Text(t),
                            Stored::B(b) => Cell::Bool(b),
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
                Cell::Text("A".into()),
                Cell::Int(-3),
                Cell::Float(f64::NAN),
                Cell::Float(0.1),
                Cell::Null,
                Cell::Bool(true),
            ]],
            half_widths: vec![vec![None, Some(12.5), Some(f64::INFINITY)]],
        };
        let back = Kept::decode(&kept.encode()).unwrap();
        assert_eq!(back.rows[0][3], Cell::Float(0.1));
        assert!(matches!(back.rows[0][2], Cell::Float(f) if f.is_nan()));
        assert_eq!(back.half_widths, kept.half_widths);
        assert!(Kept::decode("not json").is_none());
    }
}
