//! The measurements a query's aggregates need, shared where two
//! aggregates read the same sum, and the SQL of each over the bounded
//! rows or per unit.

use dpgate_dp::release::Output;
use dpgate_dp::sensitivity::Contribution;
use dpgate_dp::Grid;

use super::{centre, on_grid};
use crate::dialect::Dialect;
use crate::partial::Partial;
use crate::types::{Range, SqlType, Typed};

/// Widest integer range whose centred sum is summed as integers (so a
/// sum over any realistic number of rows stays far inside bigint and
/// within SQLite's exact TOTAL).
const INT_CENTRED_WIDTH: f64 = (1u64 << 31) as f64;
/// Largest integer magnitude summed that way (2x stays inside bigint).
const INT_CENTRED_MAGNITUDE: f64 = (1u64 << 60) as f64;

/// One measurement before the budget is split: one SQL aggregate per
/// coordinate (several for a histogram), its L1 sensitivity and grid.
#[derive(Clone, Debug)]
pub struct MeasureSpec {
    /// Aggregates over the bounded rows, reading `__dp_a<i>` columns.
    pub sqls: Vec<String>,
    /// L1 sensitivity of the whole vector, in grid units.
    pub sensitivity: u64,
    /// Grid of the raw values.
    pub grid: Grid,
    /// What it sums, where one measurement could serve another's output.
    pub kind: SumKind,
    /// How one unit's partial value of it is bounded when the backend
    /// pre-aggregates per unit (see [`Partial`]).
    pub partial: Partial,
    /// For a sum of whole grid units, the value each row adds (`sqls` is
    /// [`Dialect::sum`] of it): a unit's partial may sum it in a narrower
    /// type ([`MeasureSpec::partial_sqls`]).
    pub summand: Option<String>,
}

impl MeasureSpec {
    /// The aggregates that give one unit's (and group's) partial values
    /// when the backend pre-aggregates per unit: a sum through
    /// [`Dialect::unit_sum`], which may use a narrower type since the
    /// partial is cut to its clip bounds afterwards; anything else as
    /// over all bounded rows.
    pub fn partial_sqls(&self, d: Dialect) -> Vec<String> {
        match (&self.summand, self.partial) {
            (Some(summand), Partial::Sum { lower, upper }) => {
                vec![d.unit_sum(summand, lower.unsigned_abs().max(upper.unsigned_abs()))]
            }
            _ => self.sqls.clone(),
        }
    }
}

/// Which values a measurement sums (for sharing one sum between outputs).
#[derive(Clone, Debug, PartialEq)]
pub enum SumKind {
    /// The clamped values of the bounded-row column `arg`.
    Plain {
        /// The `__dp_a<i>` column.
        arg: String,
    },
    /// The same values less the middle of their range.
    Centred {
        /// The `__dp_a<i>` column.
        arg: String,
    },
    /// Not a sum of values (a count, a histogram, a sum of squares).
    Other,
}

/// The measurements of a query and the row-level arguments they read.
#[derive(Clone, Debug, Default)]
pub struct Measures {
    /// Measurements, in backend column order.
    pub specs: Vec<MeasureSpec>,
    /// Row-level argument SQL, computed before bounding as `__dp_a<i>`.
    pub args: Vec<String>,
}

impl Measures {
    /// The bounded-row column that holds `sql` (shared when identical).
    pub(super) fn arg(&mut self, sql: String) -> String {
        let i = self.args.iter().position(|a| *a == sql).unwrap_or_else(|| {
            self.args.push(sql);
            self.args.len() - 1
        });
        format!("__dp_a{i}")
    }

    /// Adds a measurement, or returns the identical one already planned
    /// (a shared measurement is paid once).
    pub fn register(
        &mut self,
        sqls: Vec<String>,
        sensitivity: u64,
        grid: Grid,
        partial: Partial,
    ) -> usize {
        self.push(sqls, sensitivity, grid, SumKind::Other, partial, None)
    }

    /// [`Measures::register`] for the sum (in `d`) of `summand`, whole
    /// grid units each, marked with its kind.
    pub(super) fn register_sum(
        &mut self,
        d: Dialect,
        summand: String,
        sensitivity: u64,
        grid: Grid,
        kind: SumKind,
        partial: Partial,
    ) -> usize {
        let sqls = vec![d.sum(&summand)];
        self.push(sqls, sensitivity, grid, kind, partial, Some(summand))
    }

    /// Adds a measurement unless an identical one is planned already.
    fn push(
        &mut self,
        sqls: Vec<String>,
        sensitivity: u64,
        grid: Grid,
        kind: SumKind,
        partial: Partial,
        summand: Option<String>,
    ) -> usize {
        if let Some(i) = self.specs.iter().position(|s| s.sqls == sqls) {
            return i;
        }
        self.specs.push(MeasureSpec {
            sqls,
            sensitivity,
            grid,
            kind,
            partial,
            summand,
        });
        self.specs.len() - 1
    }

    /// After every aggregate is planned: a mean whose values are also
    /// summed by a SUM reads that sum (its count is all it adds), and
    /// measurements no output reads any more are dropped, the outputs'
    /// indices renumbered.
    pub fn share_sums(&mut self, outputs: &mut [Output]) {
        for o in outputs.iter_mut() {
            let Output::Mean { sum, center, .. } = o else {
                continue;
            };
            let SumKind::Centred { arg } = &self.specs[*sum].kind else {
                continue;
            };
            let plain = SumKind::Plain { arg: arg.clone() };
            if let Some(j) = self.specs.iter().position(|s| s.kind == plain) {
                *sum = j;
                *center = 0.0;
            }
        }
        let mut read = vec![false; self.specs.len()];
        for o in outputs.iter_mut() {
            for i in o.measurements_mut() {
                read[*i] = true;
            }
        }
        if read.iter().all(|r| *r) {
            return;
        }
        let mut renumbered = vec![usize::MAX; self.specs.len()];
        let mut next = 0;
        for (i, r) in read.iter().enumerate() {
            if *r {
                renumbered[i] = next;
                next += 1;
            }
        }
        let mut i = 0;
        self.specs.retain(|_| {
            i += 1;
            read[i - 1]
        });
        for o in outputs.iter_mut() {
            for m in o.measurements_mut() {
                *m = renumbered[*m];
            }
        }
    }

    /// The count of `arg`'s values: the row count (shared with COUNT(*),
    /// under the same FILTER) when `arg` is never NULL.
    pub(super) fn value_count(
        &mut self,
        arg: &Typed,
        a: &str,
        filter: Option<&str>,
        max_rows: u64,
    ) -> usize {
        let sql = match (arg.not_null, filter) {
            (true, None) => return self.count_rows(max_rows),
            (true, Some(c)) => {
                let one = self.arg(format!("CASE WHEN {c} THEN 1 END"));
                format!("COUNT({one})")
            }
            (false, _) => format!("COUNT({a})"),
        };
        self.register(
            vec![sql],
            Contribution::ungrouped(max_rows).count().l1,
            Grid::INTEGER,
            Partial::Count,
        )
    }

    /// The sum of `a`'s values less the middle of `range` (radius r): one
    /// unit changes it by at most k·r. Integers with an integral range of
    /// moderate width stay integers — `x − c` when the middle c is whole,
    /// `2x − (lower + upper)` in half units when it is not — so the
    /// backend does integer arithmetic; anything else is measured as a
    /// float on a grid for r.
    pub(super) fn centred_sum(
        &mut self,
        d: Dialect,
        arg: &Typed,
        a: &str,
        range: Range,
        max_rows: u64,
    ) -> (usize, f64) {
        let (center, radius) = centre(range);
        let integral = arg.ty == SqlType::Int
            && range.lo.fract() == 0.0
            && range.hi.fract() == 0.0
            && range.hi - range.lo <= INT_CENTRED_WIDTH
            && range.max_abs() <= INT_CENTRED_MAGNITUDE;
        let (sql, grid, radius) = if integral {
            let clamped = arg.clamp_operand(d, a, SqlType::Int, range);
            // Exact integers (i128), not the f64 sum, which rounds above
            // 2⁵³ and would move the centre off the middle.
            let (lo, hi) = (range.lo as i128, range.hi as i128);
            let (twice, width) = (lo + hi, hi - lo);
            let half_width = width as f64 / 2.0;
            if twice % 2 == 0 {
                (
                    format!("({clamped} - {})", twice / 2),
                    Grid::INTEGER,
                    half_width,
                )
            } else {
                (
                    format!("(2 * {clamped} - {twice})"),
                    Grid { exponent: -1 },
                    half_width,
                )
            }
        } else {
            let centred = format!(
                "({} - {center:e})",
                arg.clamp_operand(d, a, SqlType::Float, range)
            );
            let grid = Grid::for_magnitude(radius);
            (on_grid(d, &centred, grid), grid, radius)
        };
        let units = grid.max_units(-radius, radius);
        let sum = self.register_sum(
            d,
            sql,
            Contribution::ungrouped(max_rows).sum(units).l1,
            grid,
            SumKind::Centred { arg: a.to_string() },
            Partial::sum(grid.unit(), -radius, radius),
        );
        (sum, center)
    }

    /// `COUNT(*)` over the bounded rows (also the partition selection count).
    pub fn count_rows(&mut self, max_rows: u64) -> usize {
        self.register(
            vec!["COUNT(*)".into()],
            Contribution::ungrouped(max_rows).count().l1,
            Grid::INTEGER,
            Partial::RowCount,
        )
    }
}
