//! How the backend query bounds each privacy unit's contribution: the one
//! rule that picks the rewrite, and the reason EXPLAIN gives for it.

use crate::aggregate::Measures;
use crate::partial::Partial;
use crate::source::Source;

/// Largest clip bound (rows × grid units) written into a pre-aggregating
/// query: far inside bigint, so `w · bound` never overflows on the backend
/// (an overflow would be an error that depends on the data).
const MAX_CLIP_UNITS: u128 = 1 << 62;

/// The same for SQLite, whose sums (TOTAL) are doubles: exact integers
/// only up to 2⁵³.
const MAX_CLIP_UNITS_SQLITE: u128 = 1 << 53;

/// Least `max_rows` for which a grouped query pre-aggregates. With few
/// rows per unit, (unit, group) pairs are about as many as rows, and
/// sharing each unit's allowance over its groups (two windows over the
/// pairs) costs more than sampling rows (one sort): measured on 10 000
/// visits with k = 5, 31–57 ms against 19 ms. With many rows per unit the
/// pairs are far fewer than the rows and pre-aggregation wins.
pub const GROUPED_PRE_AGGREGATION_MIN_ROWS: u64 = 8;

/// How a plan's backend query bounds what one unit contributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bounding {
    /// Each unit is provably one row (a row-level table, or a table whose
    /// privacy unit is declared unique): the plain aggregate, clamped.
    None,
    /// The joined private tables were each cut to their
    /// `max_rows_per_unit` rows per unit before the join on the unit, so
    /// the joined rows hold at most `max_rows` per unit already
    /// ([`Source::units_bounded`]): the plain aggregate, clamped, as for
    /// `None`.
    Tables,
    /// One hash aggregation per unit (and group): each unit's partial
    /// aggregates are cut to what `max_rows` rows could give
    /// ([`Partial`]), then summed.
    PreAggregated,
    /// `max_rows` rows kept per unit at random (ROW_NUMBER over the unit;
    /// where the backend allows, only over the units that have more),
    /// then aggregated: for aggregates that do not add up over units.
    RowSampled,
}

impl Bounding {
    /// The rewrite for `measures` over `source`, the cheapest that gives
    /// each measurement the sensitivity it declares: none when the schema
    /// proves one row per unit, nor when the FROM clause already cut each
    /// joined table per unit ([`Bounding::Tables`]); otherwise per-unit
    /// pre-aggregation —
    /// always without GROUP BY (one hash aggregation by unit instead of a
    /// sort), with GROUP BY when a unit may have many rows
    /// ([`GROUPED_PRE_AGGREGATION_MIN_ROWS`]) — unless a measurement does
    /// not add up over units (COUNT(DISTINCT) of a column other than the
    /// unit, a percentile's histogram) or a clip bound would not be exact
    /// on the backend; else rows are sampled. Only the query text and the config decide, never data.
    pub fn choose(source: &Source, measures: &Measures, max_rows: u64, grouped: bool) -> Bounding {
        if source.one_row_per_unit {
            return Bounding::None;
        }
        if source.units_bounded {
            return Bounding::Tables;
        }
        if grouped && max_rows < GROUPED_PRE_AGGREGATION_MIN_ROWS {
            return Bounding::RowSampled;
        }
        let cap = match source.scope.dialect {
            // Spark sums DECIMAL(38, 0): exact as PostgreSQL's numeric.
            crate::dialect::Dialect::Postgres | crate::dialect::Dialect::Spark => MAX_CLIP_UNITS,
            crate::dialect::Dialect::Sqlite => MAX_CLIP_UNITS_SQLITE,
        };
        let fits = |p: &Partial| match *p {
            Partial::Rows => false,
            Partial::Sum { lower, upper } => {
                let m = lower.unsigned_abs().max(upper.unsigned_abs());
                u128::from(m) * u128::from(max_rows) <= cap
            }
            Partial::RowCount | Partial::Count | Partial::Presence => true,
        };
        if measures.specs.iter().all(|s| fits(&s.partial)) {
            Bounding::PreAggregated
        } else {
            Bounding::RowSampled
        }
    }

    /// One line for EXPLAIN.
    pub fn describe(&self, max_rows: u64) -> String {
        match self {
            Bounding::None => {
                "none: each privacy unit is one row (row-level table or unique privacy unit), so the plain aggregate is clamped".into()
            }
            Bounding::Tables => format!(
                "none after the join: each private table keeps at most its max_rows_per_unit rows per unit before the join on the unit, so a unit has at most {max_rows} joined row{}",
                if max_rows == 1 { "" } else { "s" }
            ),
            Bounding::PreAggregated => format!(
                "per-unit pre-aggregation: one GROUP BY over the privacy unit, each unit's partial counts and sums cut to what {max_rows} row{} could contribute",
                if max_rows == 1 { "" } else { "s" }
            ),
            Bounding::RowSampled => format!(
                "row sampling: a privacy unit with more than {max_rows} row{s} keeps {max_rows} of them at random, the others all theirs (cheaper than pre-aggregation for GROUP BY with few rows per unit, and needed where an aggregate does not add up over units: a percentile, or COUNT(DISTINCT) of a column other than the unit)",
                s = if max_rows == 1 { "" } else { "s" }
            ),
        }
    }
}
