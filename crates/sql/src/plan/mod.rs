//! The planner: turns a checked aggregate query into a backend query that
//! bounds contributions and clamps values, the release plan (measurements
//! with their sensitivities and ε shares), how group keys are released,
//! and the post-processing that runs after noise. The plan depends on the
//! query text, the config and ε only — never on data (invariant 2).

use dpgate_config::Config;
use dpgate_dp::accounting::epsilon_on_ledger_grid;
use dpgate_dp::release::{Cost, Output, ReleasePlan};
use sqlparser::ast::{
    Distinct, Expr, Function, GroupByExpr, LimitClause, OrderByKind, Query, SelectItem, SetExpr,
    Value,
};

use crate::aggregate::{contains_aggregate, plan_aggregate, AggType, Bound, Measures};
use crate::error::{sqlstate, Refusal};
use crate::expr::compile;
use crate::narrow::narrow;
use crate::post::{compile_post, PostExpr, PostScope};
use crate::scope::Scope;
use crate::source::{push_ctes, resolve_from, Ctes, Source};
use crate::types::{canonical_key, OutputType, SqlType, Typed};

mod bounding;
mod clauses;
mod group;
mod noise;
mod render;
mod split;

pub use bounding::{Bounding, GROUPED_PRE_AGGREGATION_MIN_ROWS};
use clauses::*;
use group::*;
use render::*;
pub use split::{Ask, Mechanism, Split, Target, TargetMet};

/// A planned private query.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The SQL sent to the backend: one row per group, the group keys as
    /// text, then one integer (as text) per measured value.
    pub backend_sql: String,
    /// Output columns as the analyst sees them.
    pub columns: Vec<OutputColumn>,
    /// The release of one group: measurements, derived aggregates and key
    /// selection; its [`ReleasePlan::cost`] is what the query costs.
    pub release: ReleasePlan,
    /// How group keys are released.
    pub grouping: Grouping,
    /// What runs after noise.
    pub post: Post,
    /// Which noise the plan uses, and why.
    pub mechanism: MechanismNote,
    /// The accuracy target its ε was chosen to meet, if one was set.
    pub target: Option<TargetMet>,
    /// How the backend query bounds each unit's contribution.
    pub bounding: Bounding,
    /// Rows' worth one unit may contribute (the bound sensitivities use).
    pub max_rows: u64,
}

/// Which noise a plan uses and why, for EXPLAIN.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MechanismNote {
    /// Discrete Gaussian (zCDP charged as (ε, δ)), else discrete Laplace.
    pub gaussian: bool,
    /// The outputs' variance under Gaussian noise relative to Laplace at
    /// the same charge (`None` when Gaussian noise was not possible).
    pub gaussian_variance_ratio: Option<f64>,
    /// What the session asked for.
    pub chosen_by: Mechanism,
}

/// An output column's name and type.
#[derive(Clone, Debug, PartialEq)]
pub struct OutputColumn {
    /// Name (alias, or PostgreSQL's default such as `count`).
    pub name: String,
    /// Released type.
    pub ty: OutputType,
}

/// How the groups of a query are released.
#[derive(Clone, Debug)]
pub enum Grouping {
    /// No GROUP BY: one row.
    None,
    /// Every key of the declared public domain, zero counts included.
    Domain {
        /// Key types.
        keys: Vec<OutputType>,
        /// Every key tuple, in release order.
        groups: Vec<Vec<Option<String>>>,
    },
    /// Keys found in the data, released when their noisy row count passes
    /// the release's key selection ([`ReleasePlan::selection`]).
    Selection {
        /// Key types.
        keys: Vec<OutputType>,
    },
}

impl Grouping {
    /// The key types, in GROUP BY order.
    pub fn key_types(&self) -> &[OutputType] {
        match self {
            Grouping::None => &[],
            Grouping::Domain { keys, .. } | Grouping::Selection { keys } => keys,
        }
    }

    /// How many key columns the backend query returns before the measurements.
    pub fn key_count(&self) -> usize {
        self.key_types().len()
    }
}

impl Plan {
    /// What this query costs: the composition of its release's parts.
    pub fn cost(&self) -> Cost {
        self.release.cost()
    }
}

/// Post-processing after noise.
#[derive(Clone, Debug, Default)]
pub struct Post {
    /// One expression per output column.
    pub items: Vec<PostExpr>,
    /// HAVING.
    pub having: Option<PostExpr>,
    /// ORDER BY: expression, descending, nulls first.
    pub order: Vec<(PostExpr, bool, bool)>,
    /// SELECT DISTINCT over released rows.
    pub distinct: bool,
    /// LIMIT.
    pub limit: Option<u64>,
    /// OFFSET.
    pub offset: u64,
}

/// Most noise values one answer may draw (groups × measured values).
pub const MAX_NOISE_DRAWS: usize = 2_000_000;

/// Most columns a backend query may select (below PostgreSQL's 1 664 and
/// SQLite's 2 000).
pub const MAX_BACKEND_COLUMNS: usize = 1_600;

/// Largest declared key domain released in full; beyond it, keys go
/// through partition selection.
pub const MAX_DOMAIN_GROUPS: usize = 10_000;

/// Plans `query` at privacy cost `epsilon` (and the config's δ when keys
/// need partition selection), split to minimise the error.
pub fn plan(query: &Query, config: &Config, epsilon: f64) -> Result<Plan, Refusal> {
    plan_prepared(query, config, &Ask::at(epsilon), None, None)
}

/// [`plan`] with the top-level FROM already resolved under `config`
/// (see [`crate::front::Prepared`]). With `paired`, the plan whose backend
/// query also releases the neighbouring dataset without that privacy unit
/// (see [`crate::front::Prepared::bind_paired`]).
pub(crate) fn plan_prepared(
    query: &Query,
    config: &Config,
    ask: &Ask,
    source: Option<Source>,
    paired: Option<&str>,
) -> Result<Plan, Refusal> {
    let epsilon = ask.epsilon;
    let min = config.privacy.min_epsilon_per_query;
    // The noise is calibrated for ε on the ledger's grid, which the ledger
    // then charges exactly (see `epsilon_on_ledger_grid`).
    let (_, eps) = epsilon_on_ledger_grid(epsilon)
        .filter(|_| epsilon >= min)
        .ok_or_else(|| {
            Refusal::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("dp.epsilon {epsilon} is below the smallest ε a query may spend, {min}"),
                format!("SET dp.epsilon to a number from {min} up, e.g. 0.1"),
            )
        })?;
    let mut ctes: Ctes<'_> = Vec::new();
    if let Some(with) = &query.with {
        if with.recursive {
            return Err(Refusal::unsupported(
                "WITH RECURSIVE is not supported",
                "use non-recursive, row-level CTEs",
            ));
        }
        push_ctes(&mut ctes, with);
    }
    if !query.locks.is_empty() || query.fetch.is_some() {
        return Err(raw_rows());
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(Refusal::unsupported(
            "UNION, INTERSECT, EXCEPT and VALUES are not supported",
            "send one SELECT with aggregates",
        ));
    };
    if select.into.is_some() {
        return Err(raw_rows());
    }
    let source = match source {
        Some(s) => s,
        None => resolve_from(&select.from, config, &ctes)?,
    };
    let mut scope = source.scope.clone();
    let predicate = match &select.selection {
        Some(p) => {
            let t = compile(p, &source.scope)?;
            if !matches!(t.ty, SqlType::Bool | SqlType::Unknown) {
                return Err(Refusal::new(
                    sqlstate::DATATYPE_MISMATCH,
                    "argument of WHERE must be boolean",
                    "write a condition, e.g. WHERE age > 40",
                ));
            }
            narrow(&mut scope, p);
            Some(t.sql)
        }
        None => None,
    };

    let items = select_items(&select.projection)?;
    let mut group_exprs: Vec<Expr> = match &select.group_by {
        GroupByExpr::Expressions(e, m) if m.is_empty() => e.clone(),
        _ => {
            return Err(Refusal::unsupported(
                "GROUP BY ALL, ROLLUP, CUBE and GROUPING SETS are not supported",
                "list the grouping expressions",
            ))
        }
    };
    let mut distinct = match &select.distinct {
        None => false,
        Some(Distinct::Distinct) => true,
        Some(_) => {
            return Err(Refusal::unsupported(
                "DISTINCT ON is not supported",
                "use GROUP BY",
            ))
        }
    };
    let has_aggregate = items.iter().any(|(e, _)| contains_aggregate(e))
        || select.having.as_ref().is_some_and(contains_aggregate);
    if group_exprs.is_empty() && !has_aggregate {
        if !distinct {
            return Err(raw_rows());
        }
        // SELECT DISTINCT a, b FROM t is GROUP BY a, b.
        group_exprs = items.iter().map(|(e, _)| e.clone()).collect();
        distinct = false;
    }

    let mut keys = Vec::new();
    for g in &group_exprs {
        let e = resolve_group_expr(g, &items, &scope)?;
        let typed = compile(&e, &scope)?;
        if typed.is_unit {
            return Err(Refusal::new(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                format!("grouping by {e} would make one group per person"),
                "group by attributes shared by many people, and count people with COUNT(DISTINCT ...)",
            ));
        }
        keys.push(Key { expr: e, typed });
    }

    let bound = Bound {
        max_rows: if source.one_row_per_unit {
            1
        } else {
            source.max_rows.max(1)
        },
        grouped: !keys.is_empty(),
    };
    let mut ctx = Planner {
        scope: &scope,
        keys: &keys,
        bound,
        measures: Measures::default(),
        outputs: Vec::new(),
        aliases: Vec::new(),
    };
    let mut post = Post {
        distinct,
        ..Post::default()
    };
    let mut columns = Vec::new();
    for (expr, alias) in &items {
        let (p, ty) = compile_post(expr, &mut ctx)?;
        let name = alias.clone().unwrap_or_else(|| default_name(expr));
        ctx.aliases.push((name.clone(), p.clone(), ty));
        post.items.push(p);
        columns.push(OutputColumn { name, ty });
    }
    if let Some(h) = &select.having {
        let (p, ty) = compile_post(h, &mut ctx)?;
        if ty != OutputType::Bool {
            return Err(Refusal::new(
                sqlstate::DATATYPE_MISMATCH,
                "argument of HAVING must be boolean",
                "write a condition, e.g. HAVING COUNT(*) > 100",
            ));
        }
        post.having = Some(p);
    }
    if let Some(order) = &query.order_by {
        let OrderByKind::Expressions(list) = &order.kind else {
            return Err(Refusal::unsupported(
                "ORDER BY ALL is not supported",
                "list the ordering expressions",
            ));
        };
        for o in list {
            let p = match position(&o.expr) {
                Some(i) if (1..=post.items.len()).contains(&i) => post.items[i - 1].clone(),
                Some(i) => {
                    return Err(Refusal::new(
                        sqlstate::INVALID_COLUMN_REFERENCE,
                        format!("ORDER BY position {i} is not in select list"),
                        format!("order by a position from 1 to {}", post.items.len()),
                    ))
                }
                None => compile_post(&o.expr, &mut ctx)?.0,
            };
            let desc = matches!(o.options.sort, Some(sqlparser::ast::OrderBySort::Desc));
            post.order
                .push((p, desc, o.options.nulls_first.unwrap_or(desc)));
        }
    }
    (post.limit, post.offset) = limit_offset(query.limit_clause.as_ref())?;

    let Planner {
        mut measures,
        mut outputs,
        ..
    } = ctx;
    measures.share_sums(&mut outputs);
    let key_types: Vec<OutputType> = keys.iter().map(|k| k.typed.ty.output()).collect();
    let domain = domain_groups(&keys);
    let delta = config.privacy.delta;
    let selection_count = match (&domain, keys.is_empty()) {
        (_, true) | (Some(_), false) => None,
        (None, false) => {
            if delta <= 0.0 {
                return Err(Refusal::unsupported(
                    "grouping by keys without a declared domain needs δ > 0 for partition selection",
                    "declare the key's values in proxy.toml, or ask the data owner to set privacy.delta",
                ));
            }
            Some(measures.count_rows(bound.max_rows))
        }
    };
    if measures.specs.is_empty() {
        // Keys alone (SELECT DISTINCT ward): a count decides nothing but
        // keeps every release a measured one.
        measures.count_rows(bound.max_rows);
    }
    // Both backends cap the columns of a select list (PostgreSQL at 1 664,
    // SQLite at 2 000): a plan beyond is refused now, not charged and then
    // failed.
    let outer_columns = keys.len() + measures.specs.iter().map(|s| s.sqls.len()).sum::<usize>();
    // (Per-unit pairs carry the outer columns and four more: still below
    // PostgreSQL's 1 664.)
    let inner_columns = keys.len() + measures.args.len() + 1;
    if outer_columns.max(inner_columns) > MAX_BACKEND_COLUMNS {
        return Err(Refusal::new(
            sqlstate::PROGRAM_LIMIT_EXCEEDED,
            format!(
                "this query needs {} backend columns (each percentile measures a {}-bin histogram); the limit is {MAX_BACKEND_COLUMNS}",
                outer_columns.max(inner_columns),
                crate::aggregate::HISTOGRAM_BINS
            ),
            "ask for fewer aggregates or percentiles in one query",
        ));
    }
    // Noise values one answer draws: a bound on the work (and memory) a
    // charged query costs dpgate, checked before the charge.
    let raw_len: usize = measures.specs.iter().map(|s| s.sqls.len()).sum();
    let groups = match (&domain, keys.is_empty()) {
        (_, true) => 1,
        (Some(g), false) => g.len(),
        (None, false) => config.privacy.max_groups,
    };
    if groups.saturating_mul(raw_len) > MAX_NOISE_DRAWS {
        return Err(Refusal::new(
            sqlstate::PROGRAM_LIMIT_EXCEEDED,
            format!(
                "this query would draw {} noise values ({groups} groups × {raw_len} measured values); the limit is {MAX_NOISE_DRAWS}",
                groups.saturating_mul(raw_len)
            ),
            "ask for fewer aggregates or percentiles, or group by fewer keys",
        ));
    }
    let input = noise::NoiseInput {
        specs: &measures.specs,
        outputs: &outputs,
        selection_count,
        max_rows: bound.max_rows,
        delta,
        split: ask.split,
    };
    let (noised, mechanism) = noise::noise(&input, &eps, ask.mechanism)?;
    let grouping = match (selection_count, domain) {
        (Some(_), _) => Grouping::Selection { keys: key_types },
        (None, Some(groups)) => Grouping::Domain {
            keys: key_types,
            groups,
        },
        (None, None) => Grouping::None,
    };
    // Keys found by partition selection stream in key order, so that the
    // first `privacy.max_groups` selected are a function of the selected
    // set alone (see `collect`).
    let ordered = matches!(grouping, Grouping::Selection { .. });
    let bounding = Bounding::choose(&source, &measures, bound.max_rows, !keys.is_empty());
    let backend_sql = source.scope.dialect.finish(render(
        &source,
        predicate.as_deref(),
        &keys,
        &measures,
        bounding,
        bound.max_rows,
        ordered,
        paired,
    ));
    Ok(Plan {
        backend_sql,
        columns,
        release: ReleasePlan {
            measurements: noised.measurements,
            outputs,
            selection: noised.selection,
            zcdp: noised.zcdp,
        },
        grouping,
        post,
        mechanism,
        target: None,
        bounding,
        max_rows: bound.max_rows,
    })
}

/// Resolves aggregates and keys while the select list, HAVING and ORDER
/// BY are compiled.
struct Planner<'a> {
    scope: &'a Scope,
    keys: &'a [Key],
    bound: Bound,
    measures: Measures,
    outputs: Vec<Output>,
    aliases: Vec<(String, PostExpr, OutputType)>,
}

impl PostScope for Planner<'_> {
    fn aggregate(&mut self, f: &Function) -> Result<(usize, OutputType), Refusal> {
        let (output, ty) = plan_aggregate(f, self.scope, self.bound, &mut self.measures)?;
        let ty = match ty {
            AggType::Int => OutputType::Int,
            AggType::Float => OutputType::Float,
        };
        let i = self.outputs.len();
        self.outputs.push(output);
        Ok((i, ty))
    }

    fn key(&self, e: &Expr) -> Option<(usize, OutputType)> {
        let wanted = compile(e, self.scope).ok()?;
        self.keys
            .iter()
            .position(|k| k.typed.sql == wanted.sql || k.expr == *e)
            .map(|i| (i, self.keys[i].typed.ty.output()))
    }

    fn alias(&self, name: &str) -> Option<(PostExpr, OutputType)> {
        self.aliases
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, p, t)| (p.clone(), *t))
    }
}

/// A mechanism parameter beyond dpgate's limits (a noise scale above 2⁵²
/// units): refused before anything is charged, never saturated.
fn beyond_limits(e: dpgate_dp::MechanismError) -> Refusal {
    Refusal::new(
        sqlstate::PROGRAM_LIMIT_EXCEEDED,
        format!("this query's noise would be beyond dpgate's limits: {e}"),
        "raise dp.epsilon, narrow the aggregated expression's bounds (e.g. SUM(age) * 1e6 instead of SUM(age * 1e6)), or ask for fewer aggregates",
    )
}
