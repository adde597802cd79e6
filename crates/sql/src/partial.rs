//! How one unit's partial aggregate is cut when the backend query
//! pre-aggregates per unit, and why that bounds each unit as kept rows
//! would.

/// How a measurement's partial value over one unit's rows in one group
/// is bounded when the backend query pre-aggregates per unit
/// (`crate::plan::Bounding::PreAggregated`).
///
/// Each (unit, group) pair of `c` rows is given an allowance of `w ≤ c`
/// rows, the unit's allowances summing to at most `max_rows` over all
/// groups. A pair within its allowance (`c = w`) keeps its partials as
/// they are; otherwise each partial is scaled by `w / c` (what `w` of its
/// rows give in expectation, as sampling `w` rows would) and then cut to
/// what `w` rows could contribute, in integer arithmetic on the backend:
///
/// - the pair's row count itself (`COUNT(*)`, `p = c`) becomes `w`;
/// - a count of values or rows passing a FILTER (each row adds 0
///   or 1) becomes `⌊p·w/c⌋`, plus one with probability equal to the
///   remainder `(p·w mod c)/c` (randomized rounding: unbiased, and since
///   `p ≤ c`, never above `w`);
/// - the unit's own presence (`COUNT(DISTINCT unit)`, 0 or 1 per pair) is
///   cut to `min(p, w)`;
/// - a sum whose rows each add a whole number of grid units in
///   `[lower, upper]` (`lower ≤ 0 ≤ upper`) becomes `trunc(p·w/c)`, then
///   is clipped to `[w·lower, w·upper]` whatever the arithmetic gave (a
///   pair without values, whose sum is NULL, adds 0, which lies inside).
///
/// So one unit changes a count by at most Σw ≤ `max_rows` and a sum by at
/// most `max_rows · max(|lower|, |upper|)` units — exactly what keeping
/// `max_rows` of its rows gives, the sensitivity each measurement already
/// declares (`Contribution::ungrouped(max_rows)`). A unit's allowances
/// depend on its own rows only, so adding or removing a unit changes no
/// other unit's partials. Histograms are not pre-aggregated: bins scaled
/// one by one would lose a unit whose rows spread over many bins.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Partial {
    /// Each row adds 1: the pair's partial is its row count.
    RowCount,
    /// Each row adds 0 or 1.
    Count,
    /// 1 when the pair has the unit itself, else 0 (`COUNT(DISTINCT unit)`).
    Presence,
    /// Each row adds a whole number of grid units in `[lower, upper]`.
    Sum {
        /// Least a row adds, in grid units (≤ 0).
        lower: i64,
        /// Most a row adds, in grid units (≥ 0).
        upper: i64,
    },
    /// Not cut per unit — COUNT(DISTINCT) of a column other than the unit
    /// (values shared between units do not add up), or a percentile's
    /// histogram (bins scaled one by one would lose a unit whose rows
    /// spread over many): the query keeps `max_rows` rows per unit.
    Rows,
}

impl Partial {
    /// Clip bounds in grid units `unit` for a sum whose rows each lie in
    /// `[lower, upper]` before rounding onto the grid: `[−⌈|min(lower, 0)|/unit⌉,
    /// ⌈max(upper, 0)/unit⌉]`, which holds every rounded row and is within
    /// `Grid::max_units` on both sides.
    pub(crate) fn sum(unit: f64, lower: f64, upper: f64) -> Partial {
        let units = |x: f64| {
            let u = (x / unit).ceil();
            if u >= i64::MAX as f64 {
                i64::MAX
            } else {
                u as i64
            }
        };
        Partial::Sum {
            lower: -units((-lower).max(0.0)),
            upper: units(upper.max(0.0)),
        }
    }
}
