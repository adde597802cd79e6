//! Which statements synthetic rows answer: row-level SELECTs that
//! aggregate nowhere, over tables that all declare `[tables.synthetic]`,
//! with the LIMIT that bounds what comes back.

use std::ops::ControlFlow;

use dpgate_config::{Config, TablePrivacy};
use sqlparser::ast::{
    Distinct, Expr, GroupByExpr, LimitClause, Query, SetExpr, SetQuantifier, Value, Visit, Visitor,
};

use crate::classify::object_name;
use crate::error::Refusal;
use crate::types::is_aggregate;

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
