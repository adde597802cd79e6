//! The planner: turns a checked aggregate query into a backend query that
//! bounds contributions and clamps values, plus the release plan (one
//! measurement per backend column, each with its sensitivity and ε share).
//! The plan depends on the query text, the config and ε only — never on data.

use dpgate_config::{quote_ident, ColumnType, Config, Table, TablePrivacy};
use dpgate_dp::accounting::split_epsilon;
use dpgate_dp::release::{Measurement, Output, ReleasePlan};
use dpgate_dp::sensitivity::Contribution;
use dpgate_dp::{DiscreteLaplace, Grid, Rational};
use sqlparser::ast::{
    Distinct, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, Query,
    SelectItem, SetExpr, TableFactor,
};

use crate::classify::object_name;
use crate::error::{sqlstate, Refusal};
use crate::predicate::check_predicate;
use crate::resolve::{resolve_column, resolve_table};

/// A planned private query.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The SQL sent to the backend; returns one row with one integer per measurement.
    pub backend_sql: String,
    /// Output columns as the analyst sees them.
    pub columns: Vec<OutputColumn>,
    /// Measurements and how outputs derive from them.
    pub release: ReleasePlan,
    /// ε this query costs (exactly the sum of its measurements' ε).
    pub epsilon: f64,
}

/// An output column's name and type.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputColumn {
    /// Name (alias, or PostgreSQL's default such as `count`).
    pub name: String,
    /// Released type.
    pub ty: OutputType,
}

/// Types of released values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputType {
    /// bigint
    Int,
    /// double precision
    Float,
}

/// One aggregate over the bounded rows, before budget split.
struct MeasureSpec {
    /// One aggregate per coordinate (several for a histogram).
    sqls: Vec<String>,
    sensitivity: u64,
    grid: Grid,
}

/// Plans `query` at privacy cost `epsilon`.
pub fn plan(query: &Query, config: &Config, epsilon: f64) -> Result<Plan, Refusal> {
    let eps = Rational::from_f64(epsilon)
        .filter(|e| !e.is_zero())
        .ok_or_else(|| {
            Refusal::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("dp.epsilon {epsilon} is not a positive number"),
                "SET dp.epsilon to a number above 0, e.g. 0.1",
            )
        })?;
    let select = check_shape(query)?;
    let table = single_table(select, config)?;
    let (unit, k) = match &table.privacy {
        TablePrivacy::Public => {
            return Err(Refusal::unsupported(
                format!(
                    "\"{}\" is a public lookup table; dpgate answers private aggregates only",
                    table.name
                ),
                "aggregate a private table; public tables can be joined in a later version",
            ))
        }
        TablePrivacy::Private {
            privacy_unit,
            max_rows_per_unit,
        } => (privacy_unit.clone(), u64::from(*max_rows_per_unit)),
    };

    let mut specs: Vec<MeasureSpec> = Vec::new();
    let mut outputs = Vec::new();
    let mut columns = Vec::new();
    let mut used_columns: Vec<String> = Vec::new();
    for item in &select.projection {
        let (expr, alias) = match item {
            SelectItem::UnnamedExpr(e) => (e, None),
            SelectItem::ExprWithAlias { expr, alias } => (expr, Some(alias.value.clone())),
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => return Err(raw_rows()),
            other => {
                return Err(Refusal::unsupported(
                    format!("{other} is not supported"),
                    "select aggregates",
                ))
            }
        };
        let agg = parse_aggregate(expr, table)?;
        let (name, ty, output) = agg.to_output(table, k, &mut specs, &mut used_columns)?;
        columns.push(OutputColumn {
            name: alias.unwrap_or(name),
            ty,
        });
        outputs.push(output);
    }

    let mut predicate = select.selection.clone();
    if let Some(p) = predicate.as_mut() {
        check_predicate(p, table)?;
    }

    let share = split_epsilon(&eps, specs.len());
    let measurements = specs
        .iter()
        .map(|s| {
            let noise = DiscreteLaplace::new(s.sensitivity, share.clone())
                .expect("share of a positive epsilon is positive");
            Measurement {
                noise: noise.into(),
                grid: s.grid,
                len: s.sqls.len(),
            }
        })
        .collect();
    let backend_sql = render(
        table,
        unit.as_deref(),
        k,
        &specs,
        &used_columns,
        predicate.as_ref(),
    );
    Ok(Plan {
        backend_sql,
        columns,
        release: ReleasePlan {
            measurements,
            outputs,
        },
        epsilon,
    })
}

fn raw_rows() -> Refusal {
    Refusal::new(
        sqlstate::INSUFFICIENT_PRIVILEGE,
        "dpgate does not release individual rows or column values",
        "ask for aggregates instead, e.g. SELECT COUNT(*), AVG(age) FROM visits",
    )
}

fn check_shape(query: &Query) -> Result<&sqlparser::ast::Select, Refusal> {
    if query.with.is_some() {
        return Err(Refusal::unsupported(
            "WITH is not supported yet",
            "query the declared table directly",
        ));
    }
    if query.order_by.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
        return Err(Refusal::unsupported(
            "ORDER BY, LIMIT and OFFSET are not supported yet on private queries",
            "remove them: an ungrouped aggregate returns one row",
        ));
    }
    if !query.locks.is_empty() {
        return Err(raw_rows());
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(Refusal::unsupported(
            "UNION, INTERSECT, EXCEPT and VALUES are not supported",
            "send one SELECT with aggregates",
        ));
    };
    if let Some(d) = &select.distinct {
        let _: &Distinct = d;
        return Err(Refusal::new(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "SELECT DISTINCT would release individual values",
            "count distinct values with aggregates instead",
        ));
    }
    let grouped = match &select.group_by {
        GroupByExpr::Expressions(e, m) => !e.is_empty() || !m.is_empty(),
        GroupByExpr::All(_) => true,
    };
    if grouped || select.having.is_some() {
        return Err(Refusal::unsupported(
            "GROUP BY and HAVING are not supported yet",
            "remove GROUP BY and filter each group with WHERE, e.g. WHERE ward = 'A'",
        ));
    }
    if select.into.is_some() {
        return Err(raw_rows());
    }
    Ok(select)
}

fn single_table<'c>(
    select: &sqlparser::ast::Select,
    config: &'c Config,
) -> Result<&'c Table, Refusal> {
    let [from] = select.from.as_slice() else {
        return Err(Refusal::unsupported(
            "a private query reads exactly one table",
            "query one declared table, e.g. SELECT COUNT(*) FROM visits",
        ));
    };
    if !from.joins.is_empty() {
        return Err(Refusal::unsupported(
            "JOIN is not supported yet",
            "query one declared table",
        ));
    }
    match &from.relation {
        TableFactor::Table {
            name, args: None, ..
        } => resolve_table(config, name),
        TableFactor::Derived { .. } => Err(Refusal::unsupported(
            "subqueries in FROM are not supported yet",
            "query the declared table directly and filter with WHERE",
        )),
        other => Err(Refusal::unsupported(
            format!("FROM {other} is not supported"),
            "query one declared table",
        )),
    }
}

/// The aggregates dpgate answers.
enum Aggregate {
    CountStar,
    Count(String),
    Sum(String),
    Avg(String),
    Variance {
        column: String,
        name: String,
        sample: bool,
        stddev: bool,
    },
    Quantile {
        column: String,
        name: String,
        p: f64,
    },
}

fn parse_aggregate(expr: &Expr, table: &Table) -> Result<Aggregate, Refusal> {
    let Expr::Function(f) = expr else {
        return match expr {
            Expr::Identifier(_) | Expr::CompoundIdentifier(_) => Err(raw_rows()),
            Expr::Nested(inner) => parse_aggregate(inner, table),
            _ => Err(Refusal::unsupported(
                format!("{expr} is not supported in the select list"),
                "select aggregates of declared columns: COUNT(*), COUNT(col), SUM(col), AVG(col)",
            )),
        };
    };
    let name = object_name(&f.name).to_ascii_lowercase();
    if f.over.is_some() {
        return Err(Refusal::unsupported(
            "window functions are not supported",
            "use plain aggregates",
        ));
    }
    if f.filter.is_some() {
        return Err(Refusal::unsupported(
            format!("{name}(...) FILTER (WHERE ...) is not supported yet"),
            "move the condition into WHERE",
        ));
    }
    if !f.within_group.is_empty() {
        return parse_percentile(f, &name, table);
    }
    let FunctionArguments::List(list) = &f.args else {
        return Err(Refusal::unsupported(
            format!("{name} is not supported"),
            "use COUNT, SUM or AVG",
        ));
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return Err(Refusal::unsupported(
            format!("{name}(DISTINCT ...) and ordered aggregates are not supported yet"),
            "use COUNT(col), SUM(col) or AVG(col)",
        ));
    }
    let arg = match list.args.as_slice() {
        [FunctionArg::Unnamed(a)] => a,
        [] => {
            return Err(Refusal::unsupported(
                format!("{name}() needs an argument"),
                "write COUNT(*)",
            ))
        }
        _ => {
            return Err(Refusal::unsupported(
                format!("{name} takes one argument here"),
                "aggregate one column",
            ))
        }
    };
    let column = |arg: &FunctionArgExpr| -> Result<String, Refusal> {
        match arg {
            FunctionArgExpr::Expr(e @ (Expr::Identifier(_) | Expr::CompoundIdentifier(_))) => {
                resolve_column(e, table)
            }
            FunctionArgExpr::Expr(e) => Err(Refusal::unsupported(
                format!("aggregating the expression {e} is not supported yet"),
                "aggregate a declared column directly and filter rows with WHERE",
            )),
            _ => Err(Refusal::unsupported(
                format!("{name}(*) is not supported"),
                "aggregate a declared column",
            )),
        }
    };
    Ok(match name.as_str() {
        "count" => match arg {
            FunctionArgExpr::Wildcard => Aggregate::CountStar,
            FunctionArgExpr::Expr(Expr::Value(v))
                if !matches!(v.value, sqlparser::ast::Value::Null) =>
            {
                Aggregate::CountStar
            }
            other => Aggregate::Count(column(other)?),
        },
        "sum" => Aggregate::Sum(column(arg)?),
        "avg" | "mean" => Aggregate::Avg(column(arg)?),
        "variance" | "var_samp" | "var_pop" | "stddev" | "stddev_samp" | "stddev_pop" => Aggregate::Variance {
            column: column(arg)?,
            sample: !name.ends_with("_pop"),
            stddev: name.starts_with("stddev"),
            name,
        },
        "median" => Aggregate::Quantile {
            column: column(arg)?,
            name,
            p: 0.5,
        },
        "min" | "max" => return Err(Refusal::unsupported(
            format!(
                "{} reveals one person's value and has no private version",
                name.to_uppercase()
            ),
            "ask for a percentile instead, e.g. PERCENTILE_CONT(0.95) WITHIN GROUP (ORDER BY col)",
        )),
        _ => {
            return Err(Refusal::unsupported(
                format!("the function {name} is not supported in private queries"),
                "use COUNT, SUM, AVG, VARIANCE, STDDEV, MEDIAN or PERCENTILE_CONT(p) WITHIN GROUP (ORDER BY col)",
            ))
        }
    })
}

/// `PERCENTILE_CONT(p) WITHIN GROUP (ORDER BY col [ASC|DESC])`, and `_DISC`.
fn parse_percentile(
    f: &sqlparser::ast::Function,
    name: &str,
    table: &Table,
) -> Result<Aggregate, Refusal> {
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
                sqlparser::ast::Value::Number(n, _) => n.parse::<f64>().ok(),
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
            format!("{name} orders by one column"),
            hint,
        ));
    };
    if !matches!(
        order.expr,
        Expr::Identifier(_) | Expr::CompoundIdentifier(_)
    ) {
        return Err(Refusal::unsupported(
            format!(
                "{name} over the expression {} is not supported yet",
                order.expr
            ),
            hint,
        ));
    }
    let descending = matches!(order.options.sort, Some(sqlparser::ast::OrderBySort::Desc));
    Ok(Aggregate::Quantile {
        column: resolve_column(&order.expr, table)?,
        name: name.to_string(),
        p: if descending { 1.0 - p } else { p },
    })
}

impl Aggregate {
    /// Registers the measurements this aggregate needs and how its output
    /// derives from them.
    fn to_output(
        &self,
        table: &Table,
        k: u64,
        specs: &mut Vec<MeasureSpec>,
        used: &mut Vec<String>,
    ) -> Result<(String, OutputType, Output), Refusal> {
        let column = match self {
            Aggregate::CountStar => None,
            Aggregate::Count(c)
            | Aggregate::Sum(c)
            | Aggregate::Avg(c)
            | Aggregate::Variance { column: c, .. }
            | Aggregate::Quantile { column: c, .. } => Some(c.as_str()),
        };
        if let Some(c) = column {
            if !used.iter().any(|u| u == c) {
                used.push(c.to_string());
            }
        }
        let contribution = Contribution::ungrouped(k);
        let count_of = |specs: &mut Vec<MeasureSpec>, c: &str| {
            register(
                specs,
                format!("COUNT({})", quote_ident(c)),
                contribution.count().l1,
                Grid::INTEGER,
            )
        };
        Ok(match self {
            Aggregate::CountStar => {
                let m = register(
                    specs,
                    "COUNT(*)".into(),
                    contribution.count().l1,
                    Grid::INTEGER,
                );
                (
                    "count".into(),
                    OutputType::Int,
                    Output::Count { measurement: m },
                )
            }
            Aggregate::Count(c) => {
                let m = count_of(specs, c);
                (
                    "count".into(),
                    OutputType::Int,
                    Output::Count { measurement: m },
                )
            }
            Aggregate::Sum(c) | Aggregate::Avg(c) => {
                let (ty, lower, upper) = bounded_column(table, c)?;
                let (sum_sql, grid) = clamped_sum(c, ty, lower, upper);
                let sum = register(
                    specs,
                    sum_sql,
                    contribution.sum(grid.max_units(lower, upper)).l1,
                    grid,
                );
                if let Aggregate::Sum(_) = self {
                    let integer = ty == ColumnType::Int;
                    let out_ty = if integer {
                        OutputType::Int
                    } else {
                        OutputType::Float
                    };
                    (
                        "sum".into(),
                        out_ty,
                        Output::Sum {
                            measurement: sum,
                            integer,
                        },
                    )
                } else {
                    let count = count_of(specs, c);
                    (
                        "avg".into(),
                        OutputType::Float,
                        Output::Mean {
                            sum,
                            count,
                            lower,
                            upper,
                        },
                    )
                }
            }
            Aggregate::Variance {
                column: c,
                name,
                sample,
                stddev,
            } => {
                let (_, lower, upper) = bounded_column(table, c)?;
                let (center, radius) = ((lower + upper) / 2.0, (upper - lower) / 2.0);
                let centred = format!("({} - {center:e})", clamped_float(c, lower, upper));
                let g1 = Grid::for_magnitude(radius);
                let g2 = Grid::for_magnitude(radius * radius);
                let count = count_of(specs, c);
                let sum = register(
                    specs,
                    on_grid(&centred, g1),
                    contribution.sum(g1.max_units(-radius, radius)).l1,
                    g1,
                );
                let sum_squares = register(
                    specs,
                    on_grid(&format!("({centred} * {centred})"), g2),
                    contribution.sum(g2.max_units(0.0, radius * radius)).l1,
                    g2,
                );
                (
                    name.clone(),
                    OutputType::Float,
                    Output::Variance {
                        count,
                        sum,
                        sum_squares,
                        radius,
                        sample: *sample,
                        stddev: *stddev,
                    },
                )
            }
            Aggregate::Quantile { column: c, name, p } => {
                let (_, lower, upper) = bounded_column(table, c)?;
                if lower >= upper {
                    return Err(Refusal::unsupported(
                        format!("\"{c}\" has a single value in its declared bounds, so it has no quantiles"),
                        "ask the data owner to declare distinct lower and upper bounds",
                    ));
                }
                let bucket = format!(
                    "LEAST(width_bucket({}, {lower:e}, {upper:e}, {HISTOGRAM_BINS}), {HISTOGRAM_BINS})",
                    clamped_float(c, lower, upper)
                );
                let sqls = (1..=HISTOGRAM_BINS)
                    .map(|i| format!("COUNT(CASE WHEN {bucket} = {i} THEN 1 END)"))
                    .collect();
                let histogram =
                    register_vec(specs, sqls, contribution.histogram().l1, Grid::INTEGER);
                (
                    name.clone(),
                    OutputType::Float,
                    Output::Quantile {
                        histogram,
                        lower,
                        upper,
                        p: *p,
                    },
                )
            }
        })
    }
}

/// Bins of the noisy histogram behind percentiles: 64 keeps the noise on
/// cumulative counts small while resolving 1/64 of the declared range.
const HISTOGRAM_BINS: usize = 64;

/// Adds a scalar measurement, or returns the identical one already planned
/// (a shared measurement is paid once).
fn register(specs: &mut Vec<MeasureSpec>, sql: String, sensitivity: u64, grid: Grid) -> usize {
    register_vec(specs, vec![sql], sensitivity, grid)
}

/// Adds a vector measurement whose `sensitivity` covers the whole vector.
fn register_vec(
    specs: &mut Vec<MeasureSpec>,
    sqls: Vec<String>,
    sensitivity: u64,
    grid: Grid,
) -> usize {
    if let Some(i) = specs.iter().position(|s| s.sqls == sqls) {
        return i;
    }
    specs.push(MeasureSpec {
        sqls,
        sensitivity,
        grid,
    });
    specs.len() - 1
}

/// A numeric column's type and declared bounds (integer columns use the
/// integers inside the bounds).
fn bounded_column(table: &Table, name: &str) -> Result<(ColumnType, f64, f64), Refusal> {
    let col = table.column(name).ok_or_else(|| {
        Refusal::new(
            sqlstate::DATATYPE_MISMATCH,
            format!("\"{name}\" identifies a person and has no bounds to sum"),
            "count it with COUNT instead",
        )
    })?;
    if !col.ty.is_numeric() {
        return Err(Refusal::new(
            sqlstate::DATATYPE_MISMATCH,
            format!(
                "\"{name}\" is a {} column and cannot be summed or averaged",
                col.ty.pg_name()
            ),
            "sum or average an int or float column",
        ));
    }
    let Some((lower, upper)) = col.bounds else {
        return Err(Refusal::unsupported(
            format!("\"{name}\" has no declared bounds, so its sensitivity is unbounded"),
            format!(
                "ask the data owner to declare lower and upper for {}.columns.{name} in proxy.toml",
                table.name
            ),
        ));
    };
    Ok(match col.ty {
        ColumnType::Int => (col.ty, lower.ceil(), upper.floor().max(lower.ceil())),
        _ => (col.ty, lower, upper),
    })
}

/// SQL for the sum of clamped values in grid units, and the grid.
fn clamped_sum(col: &str, ty: ColumnType, lower: f64, upper: f64) -> (String, Grid) {
    if ty == ColumnType::Int {
        let c = quote_ident(col);
        let clamped = format!("LEAST(GREATEST({c}, {}), {})", lower as i64, upper as i64);
        return (format!("SUM({clamped})"), Grid::INTEGER);
    }
    let grid = Grid::for_magnitude(lower.abs().max(upper.abs()));
    (on_grid(&clamped_float(col, lower, upper), grid), grid)
}

/// A column as float8, clamped to its declared bounds (NaN lands on upper).
fn clamped_float(col: &str, lower: f64, upper: f64) -> String {
    format!(
        "LEAST(GREATEST(CAST({} AS float8), {lower:e}), {upper:e})",
        quote_ident(col)
    )
}

/// The sum of `value` rounded onto `grid`. Multiplying by a power of two is
/// exact in float8, and ROUND puts each value on the grid, so the sum is
/// an exact integer in grid units.
fn on_grid(value: &str, grid: Grid) -> String {
    let scale = 2f64.powi(-grid.exponent);
    format!("SUM(ROUND({value} * {scale:e}))")
}

/// The backend query: bound rows per unit at random, then aggregate.
fn render(
    table: &Table,
    unit: Option<&str>,
    k: u64,
    specs: &[MeasureSpec],
    used: &[String],
    predicate: Option<&Expr>,
) -> String {
    let aggregates = specs
        .iter()
        .flat_map(|s| &s.sqls)
        .enumerate()
        // Text, not bigint: a cast that overflows would be a data-dependent
        // error; the backend crate parses and saturates instead.
        .map(|(i, sql)| format!("CAST(COALESCE({sql}, 0) AS text) AS m{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let filter = predicate.map(|p| format!(" WHERE {p}")).unwrap_or_default();
    let from = table.qualified_name();
    match unit {
        None => format!("SELECT {aggregates} FROM {from}{filter}"),
        Some(unit) => {
            let mut cols: Vec<String> = used.iter().map(|c| quote_ident(c)).collect();
            cols.push(format!(
                "ROW_NUMBER() OVER (PARTITION BY {} ORDER BY random()) AS __dp_rn",
                quote_ident(unit)
            ));
            format!(
                "SELECT {aggregates} FROM (SELECT {} FROM {from}{filter}) AS __dp_bounded WHERE __dp_rn <= {k}",
                cols.join(", ")
            )
        }
    }
}
