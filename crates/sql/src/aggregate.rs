//! Aggregate calls → measurements. Each aggregate becomes one or more
//! integer measurements over the bounded rows (counts, sums on a grid,
//! histograms), each with the sensitivity that the contribution bound and
//! the argument's proven range give, and an [`Output`] that derives the
//! analyst's value from the noisy measurements.

use dpgate_dp::release::Output;
use dpgate_dp::sensitivity::Contribution;
use dpgate_dp::Grid;
use sqlparser::ast::{
    DuplicateTreatment, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments,
    OrderBySort, Value,
};

use crate::classify::object_name;
use crate::dialect::Dialect;
use crate::error::{sqlstate, Refusal};
use crate::expr::compile;
use crate::partial::Partial;
use crate::scope::Scope;
use crate::types::{is_aggregate, Range, SqlType, Typed};

/// Whether `e` calls an aggregate (including ordered-set and window
/// calls, which are refused with a reason when planned).
pub fn contains_aggregate(e: &Expr) -> bool {
    let mut found = false;
    let _ = sqlparser::ast::visit_expressions(e, |x| {
        if let Expr::Function(f) = x {
            let name = object_name(&f.name).to_ascii_lowercase();
            if is_aggregate(&name) || !f.within_group.is_empty() || f.over.is_some() {
                found = true;
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    found
}

/// Widest integer range whose centred sum is summed as integers (so a
/// sum over any realistic number of rows stays far inside bigint and
/// within SQLite's exact TOTAL).
const INT_CENTRED_WIDTH: f64 = (1u64 << 31) as f64;
/// Largest integer magnitude summed that way (2x stays inside bigint).
const INT_CENTRED_MAGNITUDE: f64 = (1u64 << 60) as f64;

/// Bins of the noisy histogram behind percentiles: 64 keeps the noise on
/// cumulative counts small while resolving 1/64 of the declared range.
pub const HISTOGRAM_BINS: usize = 64;

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
    fn arg(&mut self, sql: String) -> String {
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
        self.register_sum(sqls, sensitivity, grid, SumKind::Other, partial)
    }

    /// [`Measures::register`] for a sum of values, marked with its kind.
    fn register_sum(
        &mut self,
        sqls: Vec<String>,
        sensitivity: u64,
        grid: Grid,
        kind: SumKind,
        partial: Partial,
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
    fn value_count(&mut self, arg: &Typed, a: &str, filter: Option<&str>, max_rows: u64) -> usize {
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
    fn centred_sum(
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
                    d.sum(&format!("({clamped} - {})", twice / 2)),
                    Grid::INTEGER,
                    half_width,
                )
            } else {
                (
                    d.sum(&format!("(2 * {clamped} - {twice})")),
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
            vec![sql],
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

/// How much one unit contributes: at most `max_rows` rows in total, so
/// across all groups a count changes by at most `max_rows` in L1.
#[derive(Clone, Copy, Debug)]
pub struct Bound {
    /// Rows kept per unit.
    pub max_rows: u64,
    /// The query has GROUP BY (a unit may reach up to `max_rows` groups).
    pub grouped: bool,
}

/// The type a released aggregate has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggType {
    /// bigint
    Int,
    /// double precision
    Float,
}

/// Plans the aggregate call `f`.
pub fn plan_aggregate(
    f: &Function,
    scope: &Scope,
    bound: Bound,
    measures: &mut Measures,
) -> Result<(Output, AggType), Refusal> {
    let name = object_name(&f.name).to_ascii_lowercase();
    let d = scope.dialect;
    if f.over.is_some() {
        return Err(Refusal::unsupported(
            "window functions are not supported",
            "use plain aggregates, with GROUP BY for one value per group",
        ));
    }
    let filter = f
        .filter
        .as_ref()
        .map(|c| {
            let t = compile(c, scope)?;
            if !matches!(t.ty, SqlType::Bool | SqlType::Unknown) {
                return Err(Refusal::new(
                    sqlstate::DATATYPE_MISMATCH,
                    "FILTER needs a boolean condition",
                    "write FILTER (WHERE age > 40)",
                ));
            }
            Ok(t.sql)
        })
        .transpose()?;
    let contribution = Contribution::ungrouped(bound.max_rows);
    let filtered = |sql: String| match &filter {
        Some(c) => format!("CASE WHEN {c} THEN {sql} END"),
        None => sql,
    };
    if !f.within_group.is_empty() {
        let (arg, p) = percentile(f, &name, scope)?;
        return quantile(d, &name, &arg, p, contribution, filtered, measures);
    }
    let (arg, distinct) = argument(f, &name, scope)?;
    let count_of = |measures: &mut Measures, sql: String| {
        let a = measures.arg(filtered(sql));
        measures.register(
            vec![format!("COUNT({a})")],
            contribution.count().l1,
            Grid::INTEGER,
            Partial::Count,
        )
    };
    if distinct && name != "count" {
        return Err(Refusal::unsupported(
            format!("{}(DISTINCT ...) is not supported", name.to_uppercase()),
            "use COUNT(DISTINCT col), or the aggregate without DISTINCT",
        ));
    }
    let count_output = |m| Ok((Output::Count { measurement: m }, AggType::Int));
    let Some(arg) = arg else {
        // COUNT(*) and COUNT(<constant>).
        let m = match &filter {
            None => measures.count_rows(bound.max_rows),
            Some(_) => count_of(measures, "1".into()),
        };
        return count_output(m);
    };
    match name.as_str() {
        "count" if distinct => {
            let a = measures.arg(filtered(arg.sql.clone()));
            // A unit's rows add at most one new value each (≤ max_rows in
            // all groups together); counting the unit itself, at most one
            // per group, so exactly one without GROUP BY.
            let sensitivity = if arg.is_unit && !bound.grouped {
                contribution.count_distinct(true).l1
            } else {
                contribution.count().l1
            };
            // Per unit, the unit itself is one value (a count); any other
            // column's values may be shared between units, so its distinct
            // count does not add up over units and needs kept rows.
            let partial = if arg.is_unit {
                Partial::Presence
            } else {
                Partial::Rows
            };
            let m = measures.register(
                vec![format!("COUNT(DISTINCT {a})")],
                sensitivity,
                Grid::INTEGER,
                partial,
            );
            count_output(m)
        }
        // Clamped where possible, so COUNT(age) and AVG(age) share a count.
        "count" => count_output(count_of(
            measures,
            arg.operand(d).unwrap_or_else(|_| arg.sql.clone()),
        )),
        "sum" => {
            let range = arg.finite_range("SUM")?;
            let a = measures.arg(filtered(arg.operand(d)?));
            let (sql, grid) = clamped_sum(d, &arg, &a, range);
            let units = grid.max_units(range.lo, range.hi);
            let sum = measures.register_sum(
                vec![sql],
                contribution.sum(units).l1,
                grid,
                SumKind::Plain { arg: a },
                Partial::sum(grid.unit(), range.lo, range.hi),
            );
            let integer = arg.ty == SqlType::Int;
            let ty = if integer { AggType::Int } else { AggType::Float };
            Ok((
                Output::Sum {
                    measurement: sum,
                    integer,
                    lower: range.lo,
                    upper: range.hi,
                },
                ty,
            ))
        }
        // Centred on the middle of the range (sensitivity k·r, not
        // k·max|x|); a SUM of the same values, if asked for too, serves
        // instead (see `Measures::share_sums`).
        "avg" | "mean" => {
            let range = arg.finite_range(&name.to_uppercase())?;
            let a = measures.arg(filtered(arg.operand(d)?));
            let (sum, center) = measures.centred_sum(d, &arg, &a, range, bound.max_rows);
            let count = measures.value_count(&arg, &a, filter.as_deref(), bound.max_rows);
            Ok((
                Output::Mean {
                    sum,
                    count,
                    lower: range.lo,
                    upper: range.hi,
                    center,
                },
                AggType::Float,
            ))
        }
        "variance" | "var_samp" | "var_pop" | "stddev" | "stddev_samp" | "stddev_pop" => {
            let range = arg.finite_range(&name.to_uppercase())?;
            let (center, radius) = centre(range);
            let a = measures.arg(filtered(arg.operand(d)?));
            let centred = format!(
                "({} - {center:e})",
                arg.clamp_operand(d, &a, SqlType::Float, range)
            );
            let g2 = Grid::for_magnitude(radius * radius);
            let count = measures.value_count(&arg, &a, filter.as_deref(), bound.max_rows);
            let (sum, _) = measures.centred_sum(d, &arg, &a, range, bound.max_rows);
            let units = g2.max_units(0.0, radius * radius);
            let sum_squares = measures.register(
                vec![on_grid(d, &format!("({centred} * {centred})"), g2)],
                contribution.sum(units).l1,
                g2,
                Partial::sum(g2.unit(), 0.0, radius * radius),
            );
            Ok((
                Output::Variance {
                    count,
                    sum,
                    sum_squares,
                    radius,
                    sample: !name.ends_with("_pop"),
                    stddev: name.starts_with("stddev"),
                },
                AggType::Float,
            ))
        }
        "median" => quantile(d, &name, &arg, 0.5, contribution, filtered, measures),
        "min" | "max" => Err(Refusal::unsupported(
            format!(
                "{} reveals one person's value and has no private version",
                name.to_uppercase()
            ),
            "ask for a percentile instead, e.g. PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY col)",
        )),
        _ => Err(Refusal::unsupported(
            format!("the aggregate {name} is not supported in private queries"),
            "use COUNT, COUNT(DISTINCT), SUM, AVG, VARIANCE, STDDEV, MEDIAN or PERCENTILE_CONT(p) WITHIN GROUP (ORDER BY col)",
        )),
    }
}

/// The one argument of an aggregate (`None` for `*` or a constant), and
/// whether it is DISTINCT.
fn argument(f: &Function, name: &str, scope: &Scope) -> Result<(Option<Typed>, bool), Refusal> {
    let FunctionArguments::List(list) = &f.args else {
        return Err(Refusal::unsupported(
            format!("{name} needs an argument list"),
            "write e.g. COUNT(*) or SUM(cost)",
        ));
    };
    if !list.clauses.is_empty() {
        return Err(Refusal::unsupported(
            format!("{name}(... ORDER BY/LIMIT) is not supported"),
            "aggregate without clauses inside the parentheses",
        ));
    }
    let distinct = matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct));
    let arg = match list.args.as_slice() {
        [FunctionArg::Unnamed(a)] => a,
        [] => {
            return Err(Refusal::new(
                sqlstate::SYNTAX_ERROR,
                format!("{name}() needs an argument"),
                "write COUNT(*)",
            ))
        }
        _ => {
            return Err(Refusal::unsupported(
                format!("{name} takes one argument here"),
                "aggregate one column or expression",
            ))
        }
    };
    match arg {
        FunctionArgExpr::Wildcard if name == "count" && !distinct => Ok((None, false)),
        FunctionArgExpr::Expr(Expr::Value(v))
            if name == "count" && !distinct && !matches!(v.value, Value::Null) =>
        {
            Ok((None, false))
        }
        FunctionArgExpr::Expr(e) => Ok((Some(compile(e, scope)?), distinct)),
        _ => Err(Refusal::unsupported(
            format!("{name}(*) is not supported"),
            "aggregate a declared column",
        )),
    }
}

/// `PERCENTILE_CONT(p) WITHIN GROUP (ORDER BY expr [ASC|DESC])`, and `_DISC`.
fn percentile(f: &Function, name: &str, scope: &Scope) -> Result<(Typed, f64), Refusal> {
    let hint =
        "write PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY col) with a constant p between 0 and 1";
    if name != "percentile_cont" && name != "percentile_disc" {
        return Err(Refusal::unsupported(
            format!("{name}(...) WITHIN GROUP is not supported"),
            hint,
        ));
    }
    let p = match &f.args {
        FunctionArguments::List(list) => match list.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))] => match &v.value {
                Value::Number(n, _) => n.parse::<f64>().ok(),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    };
    let p = p.filter(|p| (0.0..=1.0).contains(p)).ok_or_else(|| {
        Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("{name} needs one constant fraction between 0 and 1"),
            hint,
        )
    })?;
    let [order] = f.within_group.as_slice() else {
        return Err(Refusal::unsupported(
            format!("{name} orders by one expression"),
            hint,
        ));
    };
    let descending = matches!(order.options.sort, Some(OrderBySort::Desc));
    Ok((
        compile(&order.expr, scope)?,
        if descending { 1.0 - p } else { p },
    ))
}

fn quantile(
    d: Dialect,
    name: &str,
    arg: &Typed,
    p: f64,
    contribution: Contribution,
    filtered: impl Fn(String) -> String,
    measures: &mut Measures,
) -> Result<(Output, AggType), Refusal> {
    let range = arg.finite_range(&name.to_uppercase())?;
    if range.lo >= range.hi {
        return Err(Refusal::unsupported(
            format!(
                "{} has a single possible value, so it has no quantiles",
                arg.sql
            ),
            "ask the data owner to declare distinct lower and upper bounds",
        ));
    }
    // Bin i holds values in [edge(i-1), edge(i)); the first bin also holds
    // everything below and the last everything above (NaN included), so
    // each non-NULL value is in exactly one bin whatever its range.
    let a = measures.arg(filtered(arg.operand(d)?));
    let edge = |i: usize| range.lo + (range.hi - range.lo) * i as f64 / HISTOGRAM_BINS as f64;
    let sqls = (1..=HISTOGRAM_BINS)
        .map(|i| {
            let above = (i > 1).then(|| format!("{a} >= {:e}", edge(i - 1)));
            let below = (i < HISTOGRAM_BINS).then(|| format!("{a} < {:e}", edge(i)));
            let test: Vec<String> = above.into_iter().chain(below).collect();
            format!("COUNT(CASE WHEN {} THEN 1 END)", test.join(" AND "))
        })
        .collect();
    let histogram = measures.register(
        sqls,
        contribution.histogram().l1,
        Grid::INTEGER,
        Partial::Rows,
    );
    Ok((
        Output::Quantile {
            histogram,
            lower: range.lo,
            upper: range.hi,
            p,
        },
        AggType::Float,
    ))
}

/// The middle `c` of `range`, and a radius `r` that bounds |x − c| for
/// every x in it as the backend computes it: c is rounded to a double, so
/// r is measured from that c (not (upper − lower)/2) and raised two steps
/// past the rounding of the subtraction. A smaller r would understate the
/// sensitivity of the centred sums.
fn centre(range: Range) -> (f64, f64) {
    let center = range.lo / 2.0 + range.hi / 2.0;
    let reach = (range.hi - center).max(center - range.lo).max(0.0);
    (center, reach.next_up().next_up())
}

/// SQL for the sum of clamped values in grid units, and the grid.
fn clamped_sum(d: Dialect, arg: &Typed, a: &str, range: Range) -> (String, Grid) {
    if arg.ty == SqlType::Int {
        return (
            d.sum(&arg.clamp_operand(d, a, SqlType::Int, range)),
            Grid::INTEGER,
        );
    }
    let grid = Grid::for_magnitude(range.max_abs());
    let value = arg.clamp_operand(d, a, SqlType::Float, range);
    (on_grid(d, &value, grid), grid)
}

/// The sum of `value` rounded onto `grid`. Multiplying by a power of two is
/// exact in float8, and rounding (ties to even, on every backend) puts
/// each value on the grid, so the sum is an exact integer in grid units.
fn on_grid(d: Dialect, value: &str, grid: Grid) -> String {
    let scale = 2f64.powi(-grid.exponent);
    d.sum(&d.round_whole("round", &format!("{value} * {scale:e}")))
}
