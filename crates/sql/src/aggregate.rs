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

mod measures;

pub use measures::{MeasureSpec, Measures, SumKind};

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

/// Bins of the noisy histogram behind percentiles: 64 keeps the noise on
/// cumulative counts small while resolving 1/64 of the declared range.
pub const HISTOGRAM_BINS: usize = 64;

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
                d,
                sql,
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
            let sum_squares = measures.register_sum(
                d,
                on_grid(d, &format!("({centred} * {centred})"), g2),
                contribution.sum(units).l1,
                g2,
                SumKind::Other,
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
    // Each row's bin is computed once, in the row projection: the value
    // clamped into the range (NaN onto its top), then width_bucket, 1 to
    // 64 below the upper bound and 65 at it. Bin i holds [edge(i−1),
    // edge(i)); the first bin also holds everything below and the last
    // everything above, so each non-NULL value is in exactly one bin
    // whatever its range. (Testing the value against 128 edges per row
    // instead took 3.3 s over 1M rows, the bin number 0.85 s.)
    let clamped = arg.clamp_operand(d, &filtered(arg.operand(d)?), SqlType::Float, range);
    let bin = measures.arg(d.width_bucket(&clamped, range.lo, range.hi, HISTOGRAM_BINS as i64));
    let sqls = (1..=HISTOGRAM_BINS)
        .map(|i| {
            let test = match i {
                1 => format!("{bin} <= 1"),
                HISTOGRAM_BINS => format!("{bin} >= {HISTOGRAM_BINS}"),
                i => format!("{bin} = {i}"),
            };
            format!("COUNT(CASE WHEN {test} THEN 1 END)")
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

/// SQL for each row's clamped value in grid units, and the grid.
fn clamped_sum(d: Dialect, arg: &Typed, a: &str, range: Range) -> (String, Grid) {
    if arg.ty == SqlType::Int {
        return (arg.clamp_operand(d, a, SqlType::Int, range), Grid::INTEGER);
    }
    let grid = Grid::for_magnitude(range.max_abs());
    let value = arg.clamp_operand(d, a, SqlType::Float, range);
    (on_grid(d, &value, grid), grid)
}

/// `value` rounded onto `grid`, in grid units. Multiplying by a power of
/// two is exact in float8, and rounding (ties to even, on every backend)
/// puts each value on the grid, so a sum of them is an exact integer in
/// grid units.
fn on_grid(d: Dialect, value: &str, grid: Grid) -> String {
    let scale = 2f64.powi(-grid.exponent);
    d.round_whole("round", &format!("{value} * {scale:e}"))
}
