//! What an MST fit of a table reads (`dpgate_dp::mst`): its attributes —
//! each declared column as finitely many values, bins of its declared
//! bounds or its declared domain, never values found in the data — and
//! one ordinary private query per marginal, `SELECT k1[, k2], COUNT(*)
//! FROM t GROUP BY …`, which the planner bounds per unit like any other:
//! one unit adds at most `max_rows_per_unit` rows to a marginal, the `k`
//! the fit's sensitivities use. The raw counts of these plans feed the
//! fit; only its noisy release leaves dpgate.

use std::ops::ControlFlow;

use dpgate_config::{ColumnType, Config, Table, TablePrivacy};
use sqlparser::ast::{
    Distinct, Expr, GroupByExpr, LimitClause, Query, SetExpr, SetQuantifier, Value, Visit, Visitor,
};

use crate::classify::object_name;
use crate::error::{sqlstate, Refusal};
use crate::types::{canonical_key, is_aggregate, Cell, OutputType};

/// A row-level SELECT answered from synthetic rows: the tables it reads
/// (each declares `[tables.synthetic]`) and whether it sets its own LIMIT.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticRead {
    /// The declared tables read, as `(schema, name)`.
    pub tables: Vec<(String, String)>,
    /// Whether the outermost query has a LIMIT (else `max_rows` caps it).
    pub limited: bool,
    /// The query to run on the synthetic rows: the analyst's, with
    /// `LIMIT max_rows` (the least of the tables') when it has none.
    pub sql: String,
}

/// Whether `query` is answered from synthetic rows: it aggregates nowhere
/// (no aggregate or window call, GROUP BY, HAVING or DISTINCT: those stay
/// on the private path, never on synthetic rows), reads at least one
/// declared table, and every declared table it reads has synthetic rows.
/// `Some(Err)` when it would be, but also reads a relation that the
/// synthetic database does not hold. `None` leaves it to the planner
/// (which refuses row-level reads of tables without synthetic rows and
/// names the setting).
pub fn synthetic_read(query: &Query, config: &Config) -> Option<Result<SyntheticRead, Refusal>> {
    let reads = crate::catalog::declared_reads(query, config);
    let (mut tables, mut other) = (reads.tables, reads.other);
    // Public tables are not in the synthetic database.
    let before = tables.len();
    tables.retain(|t| !matches!(t.privacy, TablePrivacy::Public));
    other |= tables.len() < before;
    if tables.is_empty() || tables.iter().any(|t| t.synthetic.is_none()) {
        return None;
    }
    let mut aggregates = Aggregates(false);
    let _ = query.visit(&mut aggregates);
    if aggregates.0 {
        return None;
    }
    if other {
        return Some(Err(Refusal::unsupported(
            "synthetic rows cannot be combined with other tables",
            "read only tables that declare [tables.synthetic] in a row-level query",
        )));
    }
    if reads.shadowed {
        return Some(Err(Refusal::unsupported(
            "a CTE takes the name of a declared table",
            "name the CTE differently from every declared table",
        )));
    }
    let mut capped = query.clone();
    let limited = capped.fetch.is_some()
        || match &capped.limit_clause {
            Some(LimitClause::LimitOffset { limit, .. }) => limit.is_some(),
            Some(_) => true,
            None => false,
        };
    if !limited {
        let cap = tables
            .iter()
            .filter_map(|t| t.synthetic.as_ref().map(|s| s.max_rows))
            .min()
            .unwrap_or(1);
        let limit = Some(Expr::value(Value::Number(cap.to_string(), false)));
        match &mut capped.limit_clause {
            Some(LimitClause::LimitOffset { limit: l, .. }) => *l = limit,
            _ => {
                capped.limit_clause = Some(LimitClause::LimitOffset {
                    limit,
                    offset: None,
                    limit_by: vec![],
                })
            }
        }
    }
    // An analyst's own LIMIT may ask for more than the tables hold (a
    // self-join, LIMIT ALL): at most the largest table's rows come back.
    let mut sql = capped.to_string();
    if limited {
        let most = tables
            .iter()
            .filter_map(|t| t.synthetic.as_ref().map(|s| s.rows))
            .max()
            .unwrap_or(1);
        sql = format!("SELECT * FROM (\n{sql}\n) AS dpgate_synthetic LIMIT {most}");
    }
    Some(Ok(SyntheticRead {
        tables: tables
            .iter()
            .map(|t| (t.schema.clone(), t.name.clone()))
            .collect(),
        limited,
        sql,
    }))
}

/// PostgreSQL's built-in aggregates beyond those dpgate answers (which
/// [`is_aggregate`] knows): none of them may run over synthetic rows.
const OTHER_AGGREGATES: &[&str] = &[
    "any_value",
    "array_agg",
    "avg",
    "bit_xor",
    "bool_and",
    "bool_or",
    "cume_dist",
    "dense_rank",
    "json_agg",
    "json_object_agg",
    "jsonb_agg",
    "jsonb_object_agg",
    "percent_rank",
    "range_agg",
    "range_intersect_agg",
    "rank",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "string_agg",
    "xmlagg",
];

/// Finds any aggregation in a query tree: aggregate or window calls,
/// GROUP BY, HAVING, DISTINCT, and set operations that remove duplicates
/// (UNION, INTERSECT, EXCEPT without ALL), in every branch.
struct Aggregates(bool);

impl Aggregates {
    fn set_expr(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Select(select) => {
                let grouped = match &select.group_by {
                    GroupByExpr::All(_) => true,
                    GroupByExpr::Expressions(e, _) => !e.is_empty(),
                };
                let distinct =
                    matches!(select.distinct, Some(Distinct::Distinct | Distinct::On(_)));
                self.0 |= grouped || distinct || select.having.is_some();
            }
            SetExpr::SetOperation {
                left,
                right,
                set_quantifier,
                ..
            } => {
                self.0 |= !matches!(
                    set_quantifier,
                    SetQuantifier::All | SetQuantifier::AllByName
                );
                self.set_expr(left);
                self.set_expr(right);
            }
            // Nested queries are visited on their own.
            _ => {}
        }
    }
}

impl Visitor for Aggregates {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.set_expr(&query.body);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(f) = expr {
            let name = object_name(&f.name).to_ascii_lowercase();
            let name = name.rsplit('.').next().unwrap_or_default();
            self.0 |= is_aggregate(name)
                || OTHER_AGGREGATES.contains(&name)
                || f.over.is_some()
                || !f.within_group.is_empty()
                || f.filter.is_some();
        }
        ControlFlow::Continue(())
    }
}

/// How an attribute's values map to a column's.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// `bins` equal bins of `[lower, upper]` (`width_bucket`); a sampled
    /// value is drawn uniformly in its bin.
    Bins {
        /// Declared lower bound.
        lower: f64,
        /// Declared upper bound.
        upper: f64,
        /// Number of bins.
        bins: usize,
        /// Whether the column holds integers.
        integer: bool,
    },
    /// The declared domain, in order.
    Domain(Vec<String>),
    /// `false` and `true`.
    Bool,
    /// A text column without a declared domain: the values partition
    /// selection released (filled in by the fit, in order), then one
    /// `other` value that every other non-NULL value falls into.
    Selected(Vec<String>),
    /// A date (or, `true`, timestamp) column by calendar month: the
    /// months (`YYYY-MM`) partition selection released, then one value
    /// for every other month, sampled as NULL. A sampled value is drawn
    /// uniformly inside its month.
    Months(Vec<String>, bool),
}

/// The value rare (unselected) text values are shown as.
pub const OTHER: &str = "other";

/// One column as a finite attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    /// The column.
    pub column: String,
    /// Its values.
    pub values: Values,
}

impl Attribute {
    /// Number of values.
    pub fn size(&self) -> usize {
        match &self.values {
            Values::Bins { bins, .. } => *bins,
            Values::Domain(v) => v.len(),
            Values::Bool => 2,
            Values::Selected(v) | Values::Months(v, _) => v.len() + 1,
        }
    }

    /// Whether the fit selects this attribute's values from the data.
    pub fn is_selected(&self) -> bool {
        matches!(self.values, Values::Selected(_) | Values::Months(..))
    }

    /// This attribute with `values` selected (keys as released).
    pub fn with_selected(&self, values: Vec<String>) -> Attribute {
        let values = match &self.values {
            Values::Months(_, timestamp) => {
                let mut months: Vec<String> = values.iter().filter_map(|k| month_of(k)).collect();
                months.sort();
                months.dedup();
                Values::Months(months, *timestamp)
            }
            _ => Values::Selected(values),
        };
        Attribute {
            column: self.column.clone(),
            values,
        }
    }

    /// The group key the marginal queries use for it.
    fn key_sql(&self) -> String {
        let column = quote_ident(&self.column);
        match &self.values {
            Values::Bins {
                lower, upper, bins, ..
            } => format!("width_bucket({column}, {lower:?}, {upper:?}, {bins})"),
            Values::Domain(_) | Values::Bool | Values::Selected(_) => column,
            Values::Months(..) => format!("date_trunc('month', {column})"),
        }
    }

    /// The attribute value a released group key stands for (`None` for
    /// keys outside the attribute: NULL).
    pub fn index_of(&self, key: Option<&str>) -> Option<usize> {
        let key = key?;
        match &self.values {
            Values::Bins { bins, .. } => {
                // Values are clamped to the bounds, so buckets run 1..=bins,
                // and bins + 1 holds the upper bound itself.
                let b: usize = key.trim().parse().ok()?;
                (1..=bins + 1).contains(&b).then(|| (b - 1).min(bins - 1))
            }
            Values::Domain(values) => {
                let k = canonical_key(Some(key), OutputType::Text);
                values
                    .iter()
                    .position(|v| canonical_key(Some(v), OutputType::Text) == k)
            }
            Values::Selected(values) => Some(
                values
                    .iter()
                    .position(|v| v.as_str() == key)
                    .unwrap_or(values.len()),
            ),
            Values::Months(months, _) => {
                let month = month_of(key)?;
                Some(
                    months
                        .iter()
                        .position(|m| *m == month)
                        .unwrap_or(months.len()),
                )
            }
            Values::Bool => match key.trim() {
                "f" | "false" | "0" => Some(0),
                "t" | "true" | "1" => Some(1),
                _ => None,
            },
        }
    }

    /// A column value for attribute value `index`: uniform in its bin for
    /// numbers (`u` uniform in [0, 1)), the domain entry otherwise.
    pub fn cell(&self, index: usize, u: f64) -> Cell {
        match &self.values {
            Values::Bins {
                lower,
                upper,
                bins,
                integer,
            } => {
                let width = (upper - lower) / *bins as f64;
                let x = lower + width * (index as f64 + u);
                if *integer {
                    // Integers whose bin this is: [ceil(start), end).
                    let start = (lower + width * index as f64).ceil();
                    let end = (lower + width * (index + 1) as f64).ceil().max(start + 1.0);
                    let end = if index + 1 == *bins {
                        upper.floor() + 1.0
                    } else {
                        end
                    };
                    Cell::Int((start + ((end - start) * u).floor()).min(*upper) as i64)
                } else {
                    // Three significant digits of the bin width (at least
                    // two decimals) read better than a double's seventeen.
                    let digits = (3 - width.log10().floor() as i32).clamp(2, 9);
                    let scale = 10f64.powi(digits);
                    Cell::Float(((x * scale).round() / scale).clamp(*lower, *upper))
                }
            }
            Values::Domain(values) => Cell::Text(values[index].clone()),
            Values::Selected(values) => {
                Cell::Text(values.get(index).map_or(OTHER, String::as_str).to_string())
            }
            Values::Months(months, timestamp) => match months.get(index) {
                Some(m) => in_month(m, u, *timestamp),
                None => Cell::Null,
            },
            Values::Bool => Cell::Bool(index == 1),
        }
    }
}

/// `YYYY-MM` of a date or timestamp key (`YYYY-MM-DD…`).
fn month_of(key: &str) -> Option<String> {
    let k = key.trim();
    let (y, m) = (k.get(0..4)?, k.get(5..7)?);
    let ok = y.bytes().all(|b| b.is_ascii_digit())
        && m.bytes().all(|b| b.is_ascii_digit())
        && k.as_bytes().get(4) == Some(&b'-')
        && (1..=12).contains(&m.parse::<u32>().ok()?);
    ok.then(|| format!("{y}-{m}"))
}

/// A date (or timestamp) drawn uniformly inside month `m` (`YYYY-MM`),
/// `u` uniform in [0, 1).
fn in_month(m: &str, u: f64, timestamp: bool) -> Cell {
    let (year, month): (i64, u32) = (
        m[0..4].parse().unwrap_or(1970),
        m[5..7].parse().unwrap_or(1),
    );
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    let seconds = ((u.clamp(0.0, 1.0) * f64::from(days) * 86_400.0) as u32).min(days * 86_400 - 1);
    let day = 1 + seconds / 86_400;
    let rest = seconds % 86_400;
    Cell::Text(if timestamp {
        format!(
            "{m}-{day:02} {:02}:{:02}:{:02}",
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        )
    } else {
        format!("{m}-{day:02}")
    })
}

/// The columns of a table a fit models, and those it cannot.
#[derive(Clone, Debug, PartialEq)]
pub struct Attributes {
    /// Modelled columns, in declaration order.
    pub modelled: Vec<Attribute>,
    /// Columns with neither bounds nor a domain (and the privacy unit):
    /// NULL in synthetic rows, named in every answer's notice.
    pub unmodelled: Vec<String>,
}

/// The attributes of `table`, `bins` bins per numeric column: every
/// declared column with bounds, a domain or boolean values, text columns
/// without a domain and dates and timestamps by month (their values
/// chosen by partition selection when the fit runs). Others — numbers
/// without bounds, and the privacy unit, which names people — are left
/// NULL; a table with no modelled column at all is refused with what to
/// declare.
pub fn attributes(table: &Table, bins: usize) -> Result<Attributes, Refusal> {
    if !(1..=1000).contains(&bins) {
        return Err(Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("{bins} bins per column is outside 1 to 1000"),
            "use e.g. 16 bins",
        ));
    }
    let unit = match &table.privacy {
        TablePrivacy::Public => {
            return Err(Refusal::unsupported(
                format!(
                    "{} is public: its rows need no synthetic stand-ins",
                    table.name
                ),
                "query it directly",
            ))
        }
        TablePrivacy::Private { privacy_unit, .. } => privacy_unit.as_deref(),
    };
    let mut modelled = Vec::new();
    let mut unmodelled = Vec::new();
    for c in &table.columns {
        if unit.is_some_and(|u| u.eq_ignore_ascii_case(&c.name)) {
            unmodelled.push(c.name.clone());
            continue;
        }
        let values = match (c.ty, c.bounds, &c.values) {
            (ColumnType::Bool, _, _) => Values::Bool,
            (_, _, Some(values)) if !values.is_empty() => Values::Domain(values.clone()),
            // Its values come from partition selection when the fit runs.
            (ColumnType::Text, _, None) => Values::Selected(Vec::new()),
            (ColumnType::Date, _, None) => Values::Months(Vec::new(), false),
            (ColumnType::Timestamp, _, None) => Values::Months(Vec::new(), true),
            (ColumnType::Int | ColumnType::Float, Some((lower, upper)), _) if lower < upper => {
                let integer = c.ty == ColumnType::Int;
                // Never more bins than integers in the range.
                let bins = if integer {
                    bins.min((upper - lower + 1.0).max(1.0) as usize)
                } else {
                    bins
                };
                Values::Bins {
                    lower,
                    upper,
                    bins,
                    integer,
                }
            }
            _ => {
                unmodelled.push(c.name.clone());
                continue;
            }
        };
        modelled.push(Attribute {
            column: c.name.clone(),
            values,
        });
    }
    if modelled.is_empty() {
        return Err(Refusal::unsupported(
            format!(
                "no column of {} has bounds or a domain, so synthetic rows cannot model it",
                table.name
            ),
            "declare lower and upper (numbers) or values = [...] (text) for the columns analysts should see",
        ));
    }
    Ok(Attributes {
        modelled,
        unmodelled,
    })
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The private query of the marginal over `attrs` (one or two).
pub fn marginal_sql(table: &Table, attrs: &[&Attribute]) -> String {
    let keys: Vec<String> = attrs.iter().map(|a| a.key_sql()).collect();
    let positions: Vec<String> = (1..=keys.len()).map(|i| i.to_string()).collect();
    format!(
        "SELECT {}, COUNT(*) FROM {}.{} GROUP BY {}",
        keys.join(", "),
        quote_ident(&table.schema),
        quote_ident(&table.name),
        positions.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::config;
    use crate::{classify, plan, Command, Grouping};

    fn visits() -> Table {
        config().table(None, "visits").unwrap().clone()
    }

    #[test]
    fn every_declared_column_is_an_attribute() {
        let attrs = attributes(&visits(), 16).unwrap().modelled;
        let names: Vec<&str> = attrs.iter().map(|a| a.column.as_str()).collect();
        assert_eq!(names, ["age", "cost", "ward", "stay"]);
        assert_eq!(attrs[0].size(), 16);
        assert_eq!(attrs[2].size(), 2);
        // stay: integers 0..30, 16 bins.
        assert_eq!(attrs[3].size(), 16);
        assert!(attributes(&visits(), 0).is_err());
    }

    #[test]
    fn bins_map_keys_and_values_both_ways() {
        let age = &attributes(&visits(), 10).unwrap().modelled[0];
        assert_eq!(age.index_of(Some("1")), Some(0));
        assert_eq!(age.index_of(Some("10")), Some(9));
        // The upper bound itself falls in bucket bins + 1: the last bin.
        assert_eq!(age.index_of(Some("11")), Some(9));
        assert_eq!(age.index_of(Some("0")), None);
        assert_eq!(age.index_of(None), None);
        for i in 0..10 {
            for u in [0.0, 0.5, 0.999] {
                let Cell::Int(v) = age.cell(i, u) else {
                    panic!()
                };
                assert!((0..=110).contains(&v));
                // The value falls back into its own bin.
                let bucket = ((v as f64 - 0.0) / 11.0).floor() as usize + 1;
                assert_eq!(
                    age.index_of(Some(&bucket.to_string())),
                    Some(i),
                    "{i} {u} {v}"
                );
            }
        }
        let ward = &attributes(&visits(), 10).unwrap().modelled[2];
        assert_eq!(ward.index_of(Some("B")), Some(1));
        assert_eq!(ward.cell(0, 0.3), Cell::Text("A".into()));
    }

    /// A text column without a domain: its selected values in order, then
    /// `other` for every other non-NULL value; NULL counts nowhere.
    #[test]
    fn selected_values_keep_rare_ones_in_other() {
        let a = Attribute {
            column: "diagnosis".into(),
            values: Values::Selected(vec!["asthma".into(), "flu".into()]),
        };
        assert_eq!(a.size(), 3);
        assert_eq!(a.index_of(Some("flu")), Some(1));
        assert_eq!(a.index_of(Some("zzz-rare")), Some(2));
        assert_eq!(a.index_of(None), None);
        assert_eq!(a.cell(0, 0.5), Cell::Text("asthma".into()));
        assert_eq!(a.cell(2, 0.5), Cell::Text(OTHER.into()));
        assert_eq!(a.key_sql(), "\"diagnosis\"");
    }

    /// Dates and timestamps by month: keys of either dialect map to their
    /// month, other months to the last value (NULL), and sampled values
    /// fall inside their month.
    #[test]
    fn months_map_keys_and_sample_inside_the_month() {
        let a = Attribute {
            column: "visit_date".into(),
            values: Values::Months(Vec::new(), false),
        }
        .with_selected(vec![
            "2024-02-01 00:00:00".into(),
            "2023-12-01 00:00:00".into(),
        ]);
        assert_eq!(
            a.values,
            Values::Months(vec!["2023-12".into(), "2024-02".into()], false)
        );
        assert_eq!(a.index_of(Some("2024-02-01 00:00:00")), Some(1));
        assert_eq!(a.index_of(Some("2019-07-01")), Some(2));
        assert_eq!(a.index_of(Some("garbage")), None);
        assert_eq!(a.cell(2, 0.5), Cell::Null);
        for u in [0.0, 0.5, 0.9999999] {
            let Cell::Text(d) = a.cell(1, u) else {
                panic!()
            };
            assert!(d.starts_with("2024-02-") && d.len() == 10, "{d}");
            assert!(d[8..].parse::<u32>().unwrap() <= 29, "{d}");
        }
        let ts = Attribute {
            column: "at".into(),
            values: Values::Months(vec!["2023-04".into()], true),
        };
        let Cell::Text(t) = ts.cell(0, 0.999_999_9) else {
            panic!()
        };
        assert!(t.starts_with("2023-04-30 23:"), "{t}");
    }

    /// The marginal queries are ordinary private plans over declared
    /// domains: every cell released (none selected from the data), and
    /// the COUNT's sensitivity is max_rows_per_unit = 5, the k of the fit.
    #[test]
    fn marginal_queries_plan_with_the_units_bound() {
        let table = visits();
        let attrs = attributes(&table, 8).unwrap().modelled;
        let pairs = [
            vec![&attrs[0]],
            vec![&attrs[2]],
            vec![&attrs[0], &attrs[2]],
            vec![&attrs[1], &attrs[3]],
        ];
        for attrs in pairs {
            let sql = marginal_sql(&table, &attrs);
            let Command::Private(q) = classify(&sql).unwrap().remove(0) else {
                panic!("{sql} is not a private query")
            };
            let p = plan(&q, &config(), 1.0).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            let Grouping::Domain { groups, .. } = &p.grouping else {
                panic!("{sql}: {:?}", p.grouping)
            };
            // width_bucket's domain is 0..=bins+1: two more than the bins.
            let expected: usize = attrs
                .iter()
                .map(|a| match a.values {
                    Values::Bins { bins, .. } => bins + 2,
                    _ => a.size(),
                })
                .product();
            assert_eq!(groups.len(), expected, "{sql}");
            assert_eq!(p.release.measurements.len(), 1, "{sql}");
            assert_eq!(p.release.measurements[0].noise.sensitivity(), 5, "{sql}");
            assert!(p.release.selection.is_none(), "{sql}");
        }
    }

    fn with_synthetic(tables: &[&str]) -> Config {
        let mut c = config();
        for t in &mut c.tables {
            if tables.contains(&t.name.as_str()) {
                t.synthetic = Some(dpgate_config::Synthetic {
                    epsilon: 1.0,
                    rows: 1000,
                    bins: 8,
                    max_rows: 200,
                    refresh: None,
                });
            }
        }
        c
    }

    fn routed(sql: &str, c: &Config) -> crate::Statement {
        crate::route(sql, c, true).unwrap().remove(0).statement
    }

    /// Row-level reads of tables with synthetic rows go to them; anything
    /// that aggregates, anywhere, stays on the private path; reads mixed
    /// with other relations are refused; tables without synthetic rows
    /// keep the refusal, whose hint names the setting.
    #[test]
    fn row_level_reads_route_to_synthetic_rows_and_aggregates_never_do() {
        use crate::Statement;
        let c = with_synthetic(&["visits", "patients"]);
        for (sql, limited, explain) in [
            ("SELECT * FROM visits LIMIT 10", true, false),
            ("SELECT * FROM public.visits", false, false),
            ("SELECT age, ward FROM visits WHERE age > 30 ORDER BY cost DESC", false, false),
            ("EXPLAIN SELECT * FROM visits", false, true),
            ("SELECT v.age FROM visits v JOIN patients p USING (patient_id) FETCH FIRST 5 ROWS ONLY", true, false),
            ("WITH old AS (SELECT * FROM visits WHERE age > 80) SELECT * FROM old", false, false),
        ] {
            match routed(sql, &c) {
                Statement::Synthetic { read, explain: e } => {
                    assert_eq!((read.limited, e), (limited, explain), "{sql}");
                    let cap = if limited { "LIMIT 1000" } else { "LIMIT 200" };
                    assert!(read.sql.ends_with(cap), "{sql}: {}", read.sql);
                    assert!(read.tables.contains(&("public".into(), "visits".into())), "{sql}");
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
        for sql in [
            "SELECT COUNT(*) FROM visits",
            "SELECT DISTINCT ward FROM visits",
            "SELECT ward FROM visits GROUP BY ward",
            "SELECT age, COUNT(*) OVER () FROM visits",
            "SELECT * FROM visits WHERE age > (SELECT AVG(age) FROM visits)",
            "SELECT * FROM visits v JOIN events e ON v.patient_id = e.patient_id",
            "SELECT pg_catalog.max(age) FROM visits",
        ] {
            assert!(matches!(routed(sql, &c), Statement::Private(_)), "{sql}");
        }
        // Aggregation in any branch of a set operation, or a UNION that
        // removes duplicates, keeps it off the synthetic rows too.
        for sql in [
            "SELECT ward FROM visits GROUP BY ward UNION ALL SELECT ward FROM visits",
            "SELECT age FROM visits UNION SELECT age FROM patients",
            "SELECT any_value(age) FROM visits",
            "SELECT regr_count(age, cost) FROM visits",
        ] {
            assert!(
                !matches!(routed(sql, &c), Statement::Synthetic { .. }),
                "{sql}"
            );
        }
        // A CTE named like a declared table is ambiguous here: refused.
        match routed(
            "SELECT * FROM visits, (WITH patients AS (SELECT 1) SELECT 1) s, patients",
            &c,
        ) {
            Statement::Refused(e) => assert!(e.message.contains("CTE"), "{e:?}"),
            other => panic!("{other:?}"),
        }
        // An explicit LIMIT is capped at the largest table's rows; LIMIT
        // ALL is no LIMIT.
        for (sql, cap) in [
            ("SELECT * FROM visits LIMIT NULL", "LIMIT 1000"),
            (
                "SELECT * FROM visits v, visits w LIMIT 5000000",
                "LIMIT 1000",
            ),
            ("SELECT * FROM visits LIMIT ALL", "LIMIT 200"),
        ] {
            let Statement::Synthetic { read, .. } = routed(sql, &c) else {
                panic!("{sql}")
            };
            assert!(read.sql.ends_with(cap), "{sql}: {}", read.sql);
        }
        assert!(matches!(
            routed("SELECT * FROM visits LIMIT 0", &c),
            Statement::Catalog
        ));
        match routed("SELECT * FROM visits v JOIN wards w ON v.ward = w.ward", &c) {
            Statement::Refused(e) => assert!(e.hint.contains("[tables.synthetic]"), "{e:?}"),
            other => panic!("{other:?}"),
        }
        // Without the declaration, the refusal names it.
        let Statement::Private(p) = routed("SELECT * FROM visits LIMIT 10", &config()) else {
            panic!()
        };
        let e = p.bind(&[], &crate::Ask::at(1.0), &config()).unwrap_err();
        assert!(e.hint.contains("[tables.synthetic]"), "{e:?}");
    }
}
