//! How one unit's partial aggregate is cut when the backend query
//! pre-aggregates per unit, and why that bounds each unit as kept rows
//! would.

/// How a measurement's partial value over one unit's rows in one group
/// is bounded when the backend query pre-aggregates per unit
/// (`crate::plan::Bounding::PreAggregated`).
///
/// Each (unit, group) pair is given an allowance of `w` rows, with
/// `w ≤` the pair's rows and the unit's allowances summing to at most
/// `max_rows` over all groups. A partial is then cut to what `w` rows
/// could contribute, in exact integer arithmetic on the backend:
///
/// - a count (of rows, values or rows passing a FILTER) has each row
///   adding 0 or 1, so it is cut to `[0, w]`;
/// - a sum whose rows each add a whole number of grid units in
///   `[lower, upper]` is cut to `[w·lower, w·upper]`;
/// - a histogram (one row adds 1 to one bin) is scaled by `w / rows` and
///   rounded down bin by bin, so its bins add up to at most `w`.
///
/// So one unit changes a count by at most Σw ≤ `max_rows`, a sum by at
/// most `max_rows · max(|lower|, |upper|)` units and a histogram by at
/// most `max_rows` in L1 — exactly what keeping `max_rows` of its rows
/// gives, which is the sensitivity each measurement already declares
/// (`Contribution::ungrouped(max_rows)`). A unit's allowances depend on
/// its own rows only, so adding or removing a unit changes no other
/// unit's partials.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Partial {
    /// Each row adds 0 or 1.
    Count,
    /// Each row adds a whole number of grid units in `[lower, upper]`.
    Sum {
        /// Least a row adds, in grid units (≤ 0).
        lower: i64,
        /// Most a row adds, in grid units (≥ 0).
        upper: i64,
    },
    /// One row adds 1 to at most one bin of the vector.
    Histogram,
    /// Not decomposable per unit (COUNT(DISTINCT) of a column that is not
    /// the unit): the query keeps `max_rows` rows per unit instead.
    Rows,
}

impl Partial {
    /// Clip bounds in grid units for a sum whose rows each lie in
    /// `[-max_units, max_units]` on one side or both, as `lower`/`upper`
    /// say (the loose side is 0: clipping never needs the unused sign).
    pub(crate) fn sum(max_units: u64, lower: f64, upper: f64) -> Partial {
        let m = i64::try_from(max_units).unwrap_or(i64::MAX);
        Partial::Sum {
            lower: if lower < 0.0 { -m } else { 0 },
            upper: if upper > 0.0 { m } else { 0 },
        }
    }
}
