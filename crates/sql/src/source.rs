//! FROM: declared tables, row-level subqueries and CTEs over them, joins
//! of private tables on their shared privacy unit, and joins with public
//! lookup tables. The result is one row source whose privacy unit and
//! per-unit row bound are known before any data is read.

use dpgate_config::{quote_ident, Config, TablePrivacy};
use sqlparser::ast::{Expr, GroupByExpr, Query, SelectItem, SetExpr, TableFactor, TableWithJoins};

use crate::dialect::Dialect;
use crate::error::{sqlstate, Refusal};
use crate::expr::compile;
use crate::narrow::narrow;
use crate::resolve::resolve_table;
use crate::scope::{Scope, ScopeColumn};
use join::join_sources;

mod join;

/// The rows a query aggregates.
#[derive(Clone, Debug)]
pub struct Source {
    /// The FROM clause as backend SQL.
    pub from_sql: String,
    /// Visible columns.
    pub scope: Scope,
    /// SQL of the privacy unit (`None` when only public tables are read).
    pub unit: Option<String>,
    /// Rows kept per unit.
    pub max_rows: u64,
    /// Each unit is provably one row (a table without a privacy unit
    /// column, or one whose unit is declared unique, read directly or
    /// joined on the unit with another such table), so no bounding is
    /// needed.
    pub one_row_per_unit: bool,
    /// `from_sql` itself keeps at most `max_rows` rows per unit, whatever
    /// the data: one row per unit, or private tables each cut to their
    /// `max_rows_per_unit` rows per unit and joined on the unit (a left
    /// row of unit u meets only right rows of u, so at most the product),
    /// then filtered or projected. A public side can repeat rows, so a
    /// join with one is not bounded.
    pub units_bounded: bool,
    /// The unit is each row's physical identity (a table without a
    /// privacy unit column): it cannot be joined on.
    pub row_level: bool,
    /// `from_sql` reads one stored table (filtered or projected) whose
    /// rows every read within a statement returns alike, and whose
    /// unit's `=` holds equal what GROUP BY puts together
    /// ([`UnitType::compares_as_grouped`]), on a dialect that can name
    /// the large units once ([`Dialect::samples_large_units_only`]):
    /// the bounding step may read it again to rank only the units with
    /// more rows than their bound ([`crate::dialect::Sample`]). Not a
    /// join, which a second read would run again.
    pub rereadable: bool,
    /// The backend's type of the unit column and how it is compared;
    /// `None` where the backend's schema was never read (planning
    /// without a backend).
    pub unit_type: Option<UnitType>,
}

/// A privacy unit column's type in the backend and how its `=` compares
/// ([`dpgate_config::Table::unit_type`],
/// [`dpgate_config::Table::unit_equality`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnitType {
    /// The PostgreSQL name of the type; `None` if it could not be read.
    pub name: Option<String>,
    /// A collation, or [`dpgate_config::UNKNOWN_EQUALITY`]; `None`: plain.
    pub equality: Option<String>,
}

impl UnitType {
    /// Whether the backend's `=` on the unit (a value against another of
    /// the same column) holds equal exactly what GROUP BY and PARTITION
    /// BY put together. PostgreSQL: for its own types, whose `=` is the
    /// default operator class's equality, with the column's collation on
    /// both sides; dpgate's connections search `pg_catalog` only, so an
    /// extension's type (named with its schema, e.g. `public.citext`)
    /// would resolve `=` through a cast to text, case-sensitive where
    /// its GROUP BY is not. SQLite: for a table's declared column (one
    /// affinity and collation on both sides); a view's or an ANY column
    /// is unknown. Spark is never asked.
    pub fn compares_as_grouped(&self, dialect: Dialect) -> bool {
        let known = self.name.is_some()
            && !matches!(
                self.equality.as_deref(),
                Some(dpgate_config::UNKNOWN_EQUALITY | dpgate_config::UNGROUPABLE_EQUALITY)
            );
        match dialect {
            Dialect::Postgres => known && self.name.as_deref().is_some_and(|n| !n.contains('.')),
            Dialect::Sqlite => known,
            Dialect::Spark => false,
        }
    }

    /// `table`'s, if its schema was read.
    fn of(table: &dpgate_config::Table) -> Option<UnitType> {
        if table.unit_type.is_none() && table.unit_equality.is_none() {
            return None;
        }
        Some(UnitType {
            name: table.unit_type.clone(),
            equality: table.unit_equality.clone(),
        })
    }
}

impl std::fmt::Display for UnitType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name.as_deref().unwrap_or("an unknown type"))?;
        match &self.equality {
            Some(equality) => write!(f, " with {equality}"),
            None => Ok(()),
        }
    }
}

/// Named row-level subqueries from WITH, in order. The `usize` is how many
/// entries before this one its body may see: a non-recursive CTE sees only
/// the CTEs defined before it (as in PostgreSQL), so a body that names
/// itself or a later CTE means a table, and resolution cannot loop.
pub type Ctes<'q> = Vec<(String, &'q Query, usize)>;

/// The CTE a one-part table name means, with the CTEs its body may see:
/// the innermost WITH that names it wins.
fn lookup_cte<'q>(
    ctes: &Ctes<'q>,
    name: &sqlparser::ast::ObjectName,
) -> Option<(&'q Query, Ctes<'q>)> {
    if name.0.len() != 1 {
        return None;
    }
    let n = crate::classify::object_name(name);
    ctes.iter()
        .rev()
        .find(|(c, _, _)| c.eq_ignore_ascii_case(&n))
        .map(|(_, q, visible)| (*q, ctes[..*visible].to_vec()))
}

/// Appends the CTEs of one WITH list, each seeing only what precedes it.
pub fn push_ctes<'q>(ctes: &mut Ctes<'q>, with: &'q sqlparser::ast::With) {
    for cte in &with.cte_tables {
        let visible = ctes.len();
        ctes.push((cte.alias.name.value.clone(), cte.query.as_ref(), visible));
    }
}

/// Most references to private tables one query may make, CTEs expanded
/// where they are used: each is a scan whose rows a person multiplies.
pub const MAX_PRIVATE_TABLES: usize = 8;

/// Counts the private table references of a FROM list, expanding CTEs
/// where they are named, and refuses more than [`MAX_PRIVATE_TABLES`].
/// Runs before resolution, and stops counting at the limit, so a WITH
/// list whose CTEs name each other many times cannot make planning slow.
pub fn count_private_tables(
    from: &[TableWithJoins],
    config: &Config,
    ctes: &Ctes<'_>,
) -> Result<usize, Refusal> {
    let mut n = 0;
    count_in_from(from, config, ctes, &mut n)?;
    Ok(n)
}

fn count_in_from(
    from: &[TableWithJoins],
    config: &Config,
    ctes: &Ctes<'_>,
    n: &mut usize,
) -> Result<(), Refusal> {
    for t in from {
        count_in_factor(&t.relation, config, ctes, n)?;
        for j in &t.joins {
            count_in_factor(&j.relation, config, ctes, n)?;
        }
    }
    Ok(())
}

fn count_in_query(
    q: &Query,
    config: &Config,
    ctes: &Ctes<'_>,
    n: &mut usize,
) -> Result<(), Refusal> {
    let mut inner = ctes.clone();
    if let Some(with) = &q.with {
        push_ctes(&mut inner, with);
    }
    match q.body.as_ref() {
        SetExpr::Select(s) => count_in_from(&s.from, config, &inner, n),
        _ => Ok(()),
    }
}

fn count_in_factor(
    f: &TableFactor,
    config: &Config,
    ctes: &Ctes<'_>,
    n: &mut usize,
) -> Result<(), Refusal> {
    match f {
        TableFactor::Table { name, .. } => {
            if let Some((q, visible)) = lookup_cte(ctes, name) {
                return count_in_query(q, config, &visible, n);
            }
            if let Ok(t) = resolve_table(config, name) {
                if !matches!(t.privacy, TablePrivacy::Public) {
                    *n += 1;
                    if *n > MAX_PRIVATE_TABLES {
                        return Err(Refusal::new(
                            sqlstate::STATEMENT_TOO_COMPLEX,
                            format!(
                                "the query reads private tables more than {MAX_PRIVATE_TABLES} times (CTEs count once per use)"
                            ),
                            "join fewer private tables; a self-join repeats what one read of the table already tells",
                        ));
                    }
                }
            }
            Ok(())
        }
        TableFactor::Derived { subquery, .. } => count_in_query(subquery, config, ctes, n),
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => count_in_from(std::slice::from_ref(table_with_joins), config, ctes, n),
        _ => Ok(()),
    }
}

/// Resolves the FROM list of a SELECT.
pub fn resolve_from(
    from: &[TableWithJoins],
    config: &Config,
    ctes: &Ctes<'_>,
) -> Result<Source, Refusal> {
    let private = count_private_tables(from, config, ctes)?;
    resolve(from, config, ctes, private > 1)
}

/// Resolves a FROM list; with `join_bound`, each private table is bounded
/// per unit before it is joined, so a join's rows per person never exceed
/// the product of the tables' bounds (and its work per person neither).
fn resolve(
    from: &[TableWithJoins],
    config: &Config,
    ctes: &Ctes<'_>,
    join_bound: bool,
) -> Result<Source, Refusal> {
    let [first] = from else {
        return Err(Refusal::unsupported(
            if from.is_empty() {
                "a private query needs FROM".to_string()
            } else {
                "a comma-separated FROM list is a cross join, which dpgate does not answer".into()
            },
            "write JOIN ... ON with the condition that links the tables",
        ));
    };
    let mut source = factor(&first.relation, config, ctes, join_bound)?;
    for join in &first.joins {
        let right = factor(&join.relation, config, ctes, join_bound)?;
        source = join_sources(source, right, join)?;
    }
    if source.unit.is_none() {
        return Err(Refusal::unsupported(
            "the query reads only public lookup tables; dpgate answers aggregates over private tables",
            "query the lookup tables in the database directly, or join them to a private table",
        ));
    }
    Ok(source)
}

fn factor(
    f: &TableFactor,
    config: &Config,
    ctes: &Ctes<'_>,
    join_bound: bool,
) -> Result<Source, Refusal> {
    match f {
        TableFactor::Table {
            name,
            alias,
            args: None,
            with_hints,
            version: None,
            partitions,
            json_path: None,
            sample: None,
            index_hints,
            with_ordinality: false,
            ..
        } if with_hints.is_empty() && partitions.is_empty() && index_hints.is_empty() => {
            let alias_name = alias.as_ref().map(|a| a.name.value.clone());
            if alias.as_ref().is_some_and(|a| !a.columns.is_empty()) {
                return Err(Refusal::unsupported(
                    "column aliases on a table are not supported",
                    "alias columns in the select list instead",
                ));
            }
            if let Some((q, visible)) = lookup_cte(ctes, name) {
                let alias = alias_name.unwrap_or_else(|| crate::classify::object_name(name));
                return derived(q, &alias, config, &visible, join_bound);
            }
            table(name, alias_name, config, join_bound)
        }
        TableFactor::Table {
            sample: Some(_), ..
        }
        | TableFactor::Derived {
            sample: Some(_), ..
        } => Err(Refusal::unsupported(
            "TABLESAMPLE is not supported: a sample would not bound what one person adds",
            "query the whole table; dpgate's noise already hides any one person",
        )),
        TableFactor::Derived {
            lateral: false,
            subquery,
            alias,
            sample: None,
            ..
        } => {
            let alias = alias
                .as_ref()
                .map(|a| a.name.value.clone())
                .ok_or_else(|| {
                    Refusal::new(
                        sqlstate::SYNTAX_ERROR,
                        "subquery in FROM must have an alias",
                        "write FROM (SELECT ...) AS s",
                    )
                })?;
            derived(subquery, &alias, config, ctes, join_bound)
        }
        TableFactor::NestedJoin {
            table_with_joins,
            alias: None,
        } => resolve(
            std::slice::from_ref(table_with_joins),
            config,
            ctes,
            join_bound,
        ),
        other => Err(Refusal::unsupported(
            format!("FROM {other} is not supported"),
            "read declared tables, row-level subqueries over them, or joins of those",
        )),
    }
}

fn table(
    name: &sqlparser::ast::ObjectName,
    alias: Option<String>,
    config: &Config,
    join_bound: bool,
) -> Result<Source, Refusal> {
    let t = resolve_table(config, name)?;
    if t.unit_equality.as_deref() == Some(dpgate_config::UNGROUPABLE_EQUALITY) {
        return Err(Refusal::new(
            sqlstate::UNDEFINED_FUNCTION,
            format!(
                "the privacy unit column of {} has type {}, which the database cannot group reliably (it can neither group nor sort by it, or hashes apart values its collation calls equal); dpgate bounds each person's rows by grouping on the privacy unit",
                t.qualified_name(),
                t.unit_type.as_deref().unwrap_or("an unknown type")
            ),
            "ask the data owner to declare a privacy unit column of a comparable type (text, an integer, uuid), e.g. through a view that casts it to text",
        ));
    }
    let dialect = Dialect::of(&config.backend.store);
    let q = alias.unwrap_or_else(|| t.name.clone());
    let unit_name = match &t.privacy {
        TablePrivacy::Private {
            privacy_unit: Some(u),
            ..
        } => Some(u.as_str()),
        _ => None,
    };
    // The unit may be declared under `columns` too (for its type); it is
    // one column, the unit, whose values are never released.
    let mut columns: Vec<ScopeColumn> = t
        .columns
        .iter()
        .filter(|c| unit_name.is_none_or(|u| !c.name.eq_ignore_ascii_case(u)))
        .map(|c| ScopeColumn::declared(&q, c, dialect))
        .collect();
    let (unit, max_rows, one_row) = match &t.privacy {
        TablePrivacy::Public => (None, 0, false),
        TablePrivacy::Private {
            privacy_unit: Some(u),
            max_rows_per_unit,
            unique_unit,
        } => {
            let sql = format!("{}.{}", quote_ident(&q), quote_ident(u));
            columns.push(ScopeColumn::unit(&q, u, sql.clone()));
            (Some(sql), u64::from(*max_rows_per_unit), *unique_unit)
        }
        // Each row is a unit: the row's physical identity stands for it
        // when a join could repeat the row.
        TablePrivacy::Private {
            privacy_unit: None, ..
        } => (Some(dialect.row_id(&q)), 1, true),
    };
    let rereadable = t.stored
        && dialect.samples_large_units_only()
        && UnitType::of(t).is_some_and(|u| u.compares_as_grouped(dialect));
    let read = match (&t.privacy, join_bound) {
        (
            TablePrivacy::Private {
                privacy_unit: Some(u),
                max_rows_per_unit,
                unique_unit: false,
            },
            true,
        ) => {
            let unit = quote_ident(u);
            crate::dialect::Sample {
                selected: "*",
                from: &dialect.table(t),
                // Rows without a unit are left out, as in any bounded
                // query (see `plan::render`).
                filter: &format!(" WHERE {unit} IS NOT NULL"),
                unit: &unit,
                order: dialect.bounding_order(&["*".to_string()]),
                rank: "\"__dp_rn_table\"",
                max_rows: u64::from(*max_rows_per_unit),
            }
            .sql(dialect, rereadable)
        }
        _ => dialect.table(t),
    };
    Ok(Source {
        from_sql: format!("{read} AS {}", quote_ident(&q)),
        scope: Scope { columns, dialect },
        unit,
        max_rows,
        one_row_per_unit: one_row,
        units_bounded: one_row || (join_bound && unit_name.is_some()),
        row_level: one_row && unit_name.is_none(),
        rereadable,
        unit_type: unit_name.and(UnitType::of(t)),
    })
}

/// A row-level subquery: filter, project and derive, but no aggregation,
/// no DISTINCT, no ORDER BY or LIMIT (which would pick rows by value).
fn derived(
    q: &Query,
    alias: &str,
    config: &Config,
    ctes: &Ctes<'_>,
    join_bound: bool,
) -> Result<Source, Refusal> {
    let refuse = |what: &str| {
        Refusal::unsupported(
            format!("{what} inside a subquery or CTE is not supported: it would select rows by their values"),
            "keep subqueries row-level (SELECT expressions FROM ... WHERE ...) and aggregate in the outer query",
        )
    };
    let mut scope_ctes: Ctes<'_> = ctes.clone();
    if let Some(with) = &q.with {
        if with.recursive {
            return Err(refuse("WITH RECURSIVE"));
        }
        push_ctes(&mut scope_ctes, with);
    }
    if q.order_by.is_some() || q.limit_clause.is_some() || q.fetch.is_some() {
        return Err(refuse("ORDER BY, LIMIT or FETCH"));
    }
    let SetExpr::Select(select) = q.body.as_ref() else {
        return Err(refuse("UNION, INTERSECT, EXCEPT or VALUES"));
    };
    if select.distinct.is_some() {
        return Err(refuse("DISTINCT"));
    }
    let grouped = match &select.group_by {
        GroupByExpr::Expressions(e, m) => !e.is_empty() || !m.is_empty(),
        GroupByExpr::All(_) => true,
    };
    let aggregates = select.projection.iter().any(|item| match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
            crate::aggregate::contains_aggregate(e)
        }
        _ => false,
    });
    if grouped || aggregates || select.having.is_some() {
        return Err(refuse(
            "aggregation (GROUP BY, HAVING or an aggregate function)",
        ));
    }
    let inner = resolve(&select.from, config, &scope_ctes, join_bound)?;
    let mut inner_scope = inner.scope.clone();
    let filter = match &select.selection {
        Some(p) => {
            let t = compile(p, &inner.scope)?;
            if !matches!(
                t.ty,
                crate::types::SqlType::Bool | crate::types::SqlType::Unknown
            ) {
                return Err(Refusal::new(
                    sqlstate::DATATYPE_MISMATCH,
                    "argument of WHERE must be boolean",
                    "write a condition, e.g. WHERE age > 40",
                ));
            }
            narrow(&mut inner_scope, p);
            format!(" WHERE {}", t.sql)
        }
        None => String::new(),
    };
    let unit = inner.unit.clone().expect("resolve_from keeps a unit");
    let qa = quote_ident(alias);
    let mut items = vec![format!("{unit} AS \"__dp_unit\"")];
    let mut columns = Vec::new();
    let mut add = |name: String, mut typed: crate::types::Typed| {
        if typed.is_unit {
            typed.sql = format!("{qa}.\"__dp_unit\"");
        } else {
            items.push(format!("{} AS {}", typed.sql, quote_ident(&name)));
            typed.sql = format!("{qa}.{}", quote_ident(&name));
        }
        typed.column = true;
        typed.literal = None;
        columns.push(ScopeColumn {
            qualifier: alias.to_string(),
            name,
            typed,
        });
    };
    for item in &select.projection {
        match item {
            SelectItem::Wildcard(_) => {
                for c in &inner_scope.columns {
                    add(c.name.clone(), c.typed.clone());
                }
            }
            SelectItem::QualifiedWildcard(kind, _) => {
                let q = kind.to_string();
                let q = q
                    .rsplit('.')
                    .next()
                    .unwrap_or("")
                    .trim_matches('"')
                    .to_string();
                let matching: Vec<&ScopeColumn> = inner_scope
                    .columns
                    .iter()
                    .filter(|c| c.qualifier.eq_ignore_ascii_case(&q))
                    .collect();
                if matching.is_empty() {
                    return Err(Refusal::new(
                        sqlstate::UNDEFINED_TABLE,
                        format!("missing FROM-clause entry for table \"{q}\""),
                        "name a table of the subquery's FROM",
                    ));
                }
                for c in matching {
                    add(c.name.clone(), c.typed.clone());
                }
            }
            SelectItem::UnnamedExpr(e) => {
                let name = match e {
                    Expr::Identifier(i) => i.value.clone(),
                    Expr::CompoundIdentifier(p) => {
                        p.last().map(|i| i.value.clone()).unwrap_or_default()
                    }
                    _ => {
                        return Err(Refusal::new(
                            sqlstate::SYNTAX_ERROR,
                            format!("the subquery column {e} needs a name"),
                            format!("write {e} AS some_name"),
                        ))
                    }
                };
                // A column keeps its narrowed range but is read raw; it is
                // clamped wherever it is used in arithmetic.
                add(name, compile(e, &inner_scope)?);
            }
            SelectItem::ExprWithAlias { expr, alias: a } => {
                add(a.value.clone(), compile(expr, &inner_scope)?);
            }
            other => {
                return Err(Refusal::unsupported(
                    format!("{other} is not supported in a subquery"),
                    "name each subquery column with one alias",
                ))
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for c in &columns {
        if !seen.insert(c.name.to_ascii_lowercase()) {
            return Err(Refusal::new(
                sqlstate::AMBIGUOUS_COLUMN,
                format!(
                    "the subquery \"{alias}\" has two columns named \"{}\"",
                    c.name
                ),
                "give each column its own alias",
            ));
        }
    }
    Ok(Source {
        from_sql: format!(
            "(SELECT {} FROM {}{filter}) AS {qa}",
            items.join(", "),
            inner.from_sql
        ),
        scope: Scope {
            columns,
            dialect: inner.scope.dialect,
        },
        unit: Some(format!("{qa}.\"__dp_unit\"")),
        max_rows: inner.max_rows,
        one_row_per_unit: inner.one_row_per_unit,
        units_bounded: inner.units_bounded,
        row_level: inner.row_level,
        rereadable: inner.rereadable,
        unit_type: inner.unit_type.clone(),
    })
}

/// The top-level SELECT's FROM, resolved, if it resolves.
pub(crate) fn top_source(query: &Query, config: &Config) -> Option<Source> {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return None;
    };
    let mut ctes: Ctes<'_> = Vec::new();
    if let Some(with) = &query.with {
        push_ctes(&mut ctes, with);
    }
    resolve_from(&select.from, config, &ctes).ok()
}
