//! The plain answer: the analyst's query run as written, without bounding,
//! clamping or noise, by the data owner, on the backend. HAVING, ORDER BY,
//! LIMIT and OFFSET are dropped (every group's truth is wanted), each
//! output is cast to text, declared tables are named as the backend names
//! them, and for SQLite PostgreSQL's `::` casts and `percentile_cont(p)
//! WITHIN GROUP (ORDER BY x)` are respelled (the backend registers those
//! aggregates, see `dpgate_backend::plain`). A query the backend cannot
//! run as written has no plain answer; the report says why.

use std::ops::ControlFlow;

use dpgate_config::{quote_ident, Config, TablePrivacy};
use dpgate_sql::ast::{
    CastKind, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName,
    ObjectNamePart, Query, SelectItem, SetExpr, TableFactor,
};
use dpgate_sql::{Dialect, Prepared};

const EXTRACT_FIELDS: &[&str] = &[
    "year",
    "isoyear",
    "quarter",
    "month",
    "week",
    "day",
    "doy",
    "dow",
    "isodow",
    "hour",
    "minute",
    "decade",
    "century",
    "millennium",
];
const TRUNC_UNITS: &[&str] = &[
    "year", "quarter", "month", "week", "day", "hour", "minute", "decade", "century",
];

/// SQL text standing in an expression's place (printed as written).
fn raw(sql: String) -> Expr {
    Expr::Identifier(Ident::new(format!("({sql})")))
}

/// The plain query of `prepared` in the backend's dialect, or why there is none.
pub fn plain_sql(prepared: &Prepared, config: &Config) -> Result<String, String> {
    let mut q = prepared.query().clone();
    q.order_by = None;
    q.limit_clause = None;
    q.fetch = None;
    let SetExpr::Select(select) = q.body.as_mut() else {
        return Err("not a single SELECT".into());
    };
    select.having = None;
    for (i, item) in select.projection.iter_mut().enumerate() {
        let expr = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e.clone(),
            _ => return Err("the select list has a wildcard".into()),
        };
        *item = SelectItem::ExprWithAlias {
            expr: Expr::Cast {
                kind: CastKind::Cast,
                expr: Box::new(expr),
                data_type: DataType::Text,
                format: None,
            },
            alias: Ident::new(format!("__plain{i}")),
        };
    }
    respell(&mut q, config);
    // The rendered table names are already quoted: the identifiers above
    // print as they were built.
    Ok(q.to_string())
}

/// `q` as the backend spells it: declared tables by their backend names;
/// for SQLite, `::` casts as CAST, dates as the planner writes them and
/// ordered-set percentiles as two-argument aggregates.
fn respell(q: &mut Query, config: &Config) {
    let dialect = Dialect::of(&config.backend.store);
    let ctes: Vec<String> = q
        .with
        .iter()
        .flat_map(|w| &w.cte_tables)
        .map(|c| c.alias.name.value.to_ascii_lowercase())
        .collect();
    let _ = dpgate_sql::ast::visit_relations_mut(q, |name: &mut ObjectName| {
        let text = name.to_string().replace('"', "").to_ascii_lowercase();
        let parts: Vec<&str> = text.split('.').collect();
        let table = match parts.as_slice() {
            [t] if ctes.iter().any(|c| c == t) => None,
            [t] => config.table(None, t),
            [s, t] | [_, s, t] => config.table(Some(s), t),
            _ => None,
        };
        if let Some(t) = table {
            *name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(
                dialect.table(t),
            ))]);
        }
        ControlFlow::<()>::Continue(())
    });
    if dialect == Dialect::Postgres {
        // MEDIAN(x) is dpgate's; PostgreSQL spells it as an ordered-set
        // aggregate.
        let _ = dpgate_sql::ast::visit_expressions_mut(q, |e: &mut Expr| {
            if let Expr::Function(f) = e {
                if f.name.to_string().eq_ignore_ascii_case("median") {
                    if let FunctionArguments::List(list) = &f.args {
                        if let [FunctionArg::Unnamed(FunctionArgExpr::Expr(x))] =
                            list.args.as_slice()
                        {
                            *e = raw(format!("percentile_cont(0.5) WITHIN GROUP (ORDER BY {x})"));
                        }
                    }
                }
            }
            ControlFlow::<()>::Continue(())
        });
    }
    if dialect == Dialect::Sqlite {
        let _ = dpgate_sql::ast::visit_expressions_mut(q, |e: &mut Expr| {
            match e {
                Expr::Cast { kind, .. } if *kind == CastKind::DoubleColon => *kind = CastKind::Cast,
                // Dates as the planner spells them for SQLite (the same
                // text as the released keys).
                Expr::Extract { field, expr, .. } => {
                    let field = field.to_string().to_ascii_lowercase();
                    if EXTRACT_FIELDS.contains(&field.as_str()) {
                        *e = raw(dialect.extract(&field, &expr.to_string()));
                    }
                }
                Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("date_trunc") => {
                    if let FunctionArguments::List(list) = &f.args {
                        if let [FunctionArg::Unnamed(FunctionArgExpr::Expr(unit)), FunctionArg::Unnamed(FunctionArgExpr::Expr(x))] =
                            list.args.as_slice()
                        {
                            let unit = unit.to_string().trim_matches('\'').to_ascii_lowercase();
                            if TRUNC_UNITS.contains(&unit.as_str()) {
                                *e = raw(dialect.date_trunc(&unit, &x.to_string()));
                            }
                        }
                    }
                }
                Expr::Function(f) if !f.within_group.is_empty() => {
                    let x = f.within_group.remove(0).expr;
                    if let FunctionArguments::List(list) = &mut f.args {
                        list.args
                            .insert(0, FunctionArg::Unnamed(FunctionArgExpr::Expr(x)));
                    }
                    f.within_group.clear();
                }
                _ => {}
            }
            ControlFlow::<()>::Continue(())
        });
    }
}

/// Ranks the privacy units among the rows `prepared` reads and keeps (its
/// FROM and WHERE as written).
pub struct UnitRanking {
    /// A query naming the unit that ranks first by the aggregate put in
    /// place of `{order}` (such as `COUNT(*) DESC`).
    pub template: String,
    /// How the unit's table is named in it (to qualify its columns).
    pub qualifier: String,
    /// The unit's table.
    pub table: String,
}

/// The [`UnitRanking`] of `prepared`; `None` when the unit is not a column
/// of a table named in the top FROM.
pub fn unit_ranking(prepared: &Prepared, config: &Config) -> Option<UnitRanking> {
    let mut q = prepared.query().clone();
    respell(&mut q, config);
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    let dialect = Dialect::of(&config.backend.store);
    let factors = select
        .from
        .iter()
        .flat_map(|f| std::iter::once(&f.relation).chain(f.joins.iter().map(|j| &j.relation)));
    let (qualifier, unit, table) = factors.into_iter().find_map(|f| {
        let TableFactor::Table { name, alias, .. } = f else {
            return None;
        };
        let table = config
            .tables
            .iter()
            .find(|t| dialect.table(t) == name.to_string())?;
        let TablePrivacy::Private { privacy_unit, .. } = &table.privacy else {
            return None;
        };
        let qualifier = alias
            .as_ref()
            .map_or(table.name.clone(), |a| a.name.value.clone());
        // A row-level table's unit is the row itself.
        let unit = match privacy_unit {
            Some(u) => format!("{}.{}", quote_ident(&qualifier), quote_ident(u)),
            None => dialect.row_id(&qualifier),
        };
        Some((quote_ident(&qualifier), unit, table.name.clone()))
    })?;
    let with = q.with.as_ref().map_or(String::new(), |w| format!("{w} "));
    let from: Vec<String> = select.from.iter().map(ToString::to_string).collect();
    let filter = select
        .selection
        .as_ref()
        .map_or(String::new(), |w| format!("({w}) AND "));
    Some(UnitRanking {
        template: format!(
            "{with}SELECT {} FROM {} WHERE {filter}{unit} IS NOT NULL GROUP BY {unit} ORDER BY {{order}}, 1 LIMIT 1",
            dialect.unit_text(&unit),
            from.join(", ")
        ),
        qualifier,
        table,
    })
}
