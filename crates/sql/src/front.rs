//! The front door: one function takes a statement string, the config
//! snapshot and whether a shadow catalog runs, and decides once, for each
//! statement, who answers it — the session, dpgate itself (constants),
//! the shadow catalog, or the private path — and prepares private
//! statements (FROM and scope resolved once, parameter types known).
//! Every front end (the wire protocol's Describe and Execute, HTTP) runs
//! what this returns; none routes on its own.

use dpgate_config::{ColumnType, Config};
use sqlparser::ast::{Query, SelectItem, SetExpr};

use crate::catalog::unparsed_catalog_candidate;
use crate::catalog::{
    has_unicode_identifier, is_catalog_query, reads_declared_table, split_statements,
    unicode_identifier_refused,
};
use crate::classify::{classify, Command};
use crate::constant::{evaluate_constant, SessionInfo};
use crate::error::{sqlstate, Refusal};
use crate::params::{bind_parameters, parameter_types_in};
use crate::plan::{plan_prepared, Ask, Plan};
use crate::source::{top_source, Source};
use crate::synth::synthetic_read;
use crate::types::Cell;
use crate::Dialect;

/// One statement of a string, with who answers it.
#[derive(Clone, Debug)]
pub struct Routed {
    /// The statement's own text (for the audit log and the catalog).
    pub text: String,
    /// What it is.
    pub statement: Statement,
}

/// A statement sorted by who answers it, decided once.
#[derive(Clone, Debug)]
pub enum Statement {
    /// Session state: SET, SHOW, RESET, DISCARD, transaction control and
    /// the commands dpgate acknowledges (a [`Command`] of those kinds).
    Session(Command),
    /// A SELECT without FROM that dpgate evaluates from session state.
    Constant(Vec<SelectItem>),
    /// A question about the schema, for the shadow catalog (the text is
    /// [`Routed::text`]).
    Catalog,
    /// `EXPLAIN` of a private query: planned, never run or charged.
    Explain(Box<Prepared>),
    /// A private query.
    Private(Box<Prepared>),
    /// A row-level SELECT over tables with synthetic rows (the text is
    /// [`Routed::text`]): run on the synthetic database, costs nothing.
    /// `explain` when it was asked as `EXPLAIN` (then never run).
    Synthetic {
        /// What it reads.
        read: crate::synth::SyntheticRead,
        /// Whether it came as `EXPLAIN …`.
        explain: bool,
    },
    /// Refused when routed; reported when its turn comes, so statements
    /// before it in the same string still run.
    Refused(Refusal),
}

/// A private query prepared once: FROM resolved, parameter types
/// inferred. [`Prepared::bind`] gives the plan for parameter values and ε.
#[derive(Clone, Debug)]
pub struct Prepared {
    query: Query,
    parameter_types: Vec<Option<ColumnType>>,
    /// The resolved FROM, unless it holds a placeholder (then it is
    /// resolved after binding) or does not resolve (then planning says why).
    source: Option<Source>,
    /// Plans already made from it (shared by its clones).
    plans: Plans,
}

/// Plans bound most recently, by the ask and the values they were bound
/// to. A plan is a pure function of the statement, the config it was
/// prepared under, the ask and the values (no clock, no randomness, no
/// budget: [`Prepared::bind_to_target`] is never kept), so a repeat of
/// the same execution takes a copy instead of planning again, which was
/// most of dpgate's own CPU time for a repeated statement.
#[derive(Clone, Debug, Default)]
struct Plans(std::sync::Arc<std::sync::Mutex<Vec<KeptPlan>>>);

/// A plan with the config (its address: a check against binding under
/// another config than the statement's, which [`Prepared::bind`] does
/// not allow), the ask and the values it was bound to.
type KeptPlan = (usize, Ask, Vec<Cell>, Plan);

/// Plans kept per prepared statement.
const KEPT_PLANS: usize = 4;

/// Largest plan kept, in bytes of bound values plus backend SQL, and in
/// declared key tuples: kept plans outlive a connection (the statement
/// is kept with its routing), so an analyst must not be able to pin
/// large values or domains in memory with them. Larger plans are made
/// afresh each time.
const MAX_KEPT_BYTES: usize = 16 * 1024;
const MAX_KEPT_GROUPS: usize = 1024;

/// Whether `plan`, bound to `values`, is small enough to keep.
fn small(values: &[Cell], plan: &Plan) -> bool {
    let value_bytes: usize = values
        .iter()
        .map(|v| match v {
            Cell::Text(t) => t.len(),
            _ => 8,
        })
        .sum();
    let groups = match &plan.grouping {
        crate::plan::Grouping::Domain { groups, .. } => groups.len(),
        _ => 0,
    };
    value_bytes + plan.backend_sql.len() <= MAX_KEPT_BYTES && groups <= MAX_KEPT_GROUPS
}

impl Plans {
    fn find(&self, config: &Config, ask: &Ask, values: &[Cell]) -> Option<Plan> {
        let kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        kept.iter()
            .find(|(c, a, v, _)| *c == address(config) && a == ask && same_values(v, values))
            .map(|(_, _, _, plan)| plan.clone())
    }

    fn keep(&self, config: &Config, ask: &Ask, values: &[Cell], plan: &Plan) {
        if !small(values, plan) {
            return;
        }
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= KEPT_PLANS {
            kept.remove(0);
        }
        kept.push((address(config), ask.clone(), values.to_vec(), plan.clone()));
    }
}

fn address(config: &Config) -> usize {
    config as *const Config as usize
}

/// Whether two lists of bound values are the same values, floats bit for
/// bit (`-0.0` is not `0.0` here, and NaN is never the same).
fn same_values(a: &[Cell], b: &[Cell]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|pair| match pair {
            (Cell::Float(x), Cell::Float(y)) => !x.is_nan() && x.to_bits() == y.to_bits(),
            (x, y) => x == y,
        })
}

impl Prepared {
    /// Resolves `query`'s FROM under `config` and infers its parameter types.
    pub fn new(query: Query, config: &Config) -> Prepared {
        let source = top_source(&query, config);
        let parameter_types = parameter_types_in(&query, source.as_ref().map(|s| &s.scope));
        let source = source.filter(|_| !from_has_placeholder(&query));
        Prepared {
            query,
            parameter_types,
            source,
            plans: Plans::default(),
        }
    }

    /// The type each `$n` is compared with (`None`: unknown, read as text).
    pub fn parameter_types(&self) -> &[Option<ColumnType>] {
        &self.parameter_types
    }

    /// The plan at `epsilon` for these parameter values, under the same
    /// config the statement was prepared with.
    pub fn bind(&self, values: &[Cell], ask: &Ask, config: &Config) -> Result<Plan, Refusal> {
        if let Some(plan) = self.plans.find(config, ask, values) {
            return Ok(plan);
        }
        let plan = self.plan(values, ask, config)?;
        self.plans.keep(config, ask, values, &plan);
        Ok(plan)
    }

    /// [`Self::bind`] without keeping the plan.
    pub(crate) fn plan(
        &self,
        values: &[Cell],
        ask: &Ask,
        config: &Config,
    ) -> Result<Plan, Refusal> {
        if self.parameter_types.is_empty() && values.is_empty() {
            return plan_prepared(&self.query, config, ask, self.source.clone(), None);
        }
        let mut query = self.query.clone();
        bind_parameters(&mut query, values)?;
        plan_prepared(&query, config, ask, self.source.clone(), None)
    }

    /// The plan of [`Self::bind`] whose backend query releases D and its
    /// neighbour D − u (without the unit whose value reads `unit` as text,
    /// [`crate::Dialect::unit_text`]) together: the rows come back with one
    /// more key column before the plan's keys, `d` or `n`. The bounding
    /// step runs once (a materialized CTE) and the two sides aggregate it
    /// with and without the unit, so every other unit's random draws are
    /// the same on both sides. For the data owner's evaluator (`dpgate
    /// evaluate`); no analyst's statement is ever planned this way.
    pub fn bind_paired(&self, ask: &Ask, config: &Config, unit: &str) -> Result<Plan, Refusal> {
        if Dialect::of(&config.backend.store) == Dialect::Spark {
            // Spark inlines CTEs: the two sides would draw their own
            // randomness, and the pair would not be coupled.
            return Err(Refusal::unsupported(
                "the evaluator's paired query needs a materialized CTE, which Spark SQL lacks",
                "evaluate the workload on a PostgreSQL or SQLite copy of the data",
            ));
        }
        plan_prepared(&self.query, config, ask, self.source.clone(), Some(unit))
    }

    /// The statement as parsed.
    pub fn query(&self) -> &Query {
        &self.query
    }

    /// The declared tables the statement reads (CTE names excluded).
    pub fn tables<'c>(&self, config: &'c Config) -> Vec<&'c dpgate_config::Table> {
        crate::catalog::declared_reads(&self.query, config).tables
    }

    /// The plan's shape (columns and types) without values: every
    /// parameter bound to NULL.
    pub fn describe(&self, ask: &Ask, config: &Config) -> Result<Plan, Refusal> {
        self.bind(&vec![Cell::Null; self.parameter_types.len()], ask, config)
    }
}

/// Routes every statement of `sql`. `catalog` says whether a shadow
/// catalog runs (statements sqlparser cannot read, and constants dpgate
/// cannot evaluate, go there only then).
pub fn route(sql: &str, config: &Config, catalog: bool) -> Result<Vec<Routed>, Refusal> {
    let escaped = has_unicode_identifier(sql);
    let commands = match classify(sql) {
        Ok(c) => c,
        Err(_) if escaped && catalog => return Err(unicode_identifier_refused()),
        Err(e)
            if e.code != sqlstate::STATEMENT_TOO_COMPLEX
                && catalog
                && unparsed_catalog_candidate(sql, config) =>
        {
            return Ok(vec![Routed {
                text: sql.to_string(),
                statement: Statement::Catalog,
            }]);
        }
        Err(e) => return Err(e),
    };
    // Each statement's own text; a single statement is the whole string.
    let texts = match commands.len() {
        1 => vec![sql.to_string()],
        _ => split_statements(sql),
    };
    let aligned = texts.len() == commands.len();
    Ok(commands
        .into_iter()
        .enumerate()
        .map(|(i, command)| Routed {
            text: if aligned {
                texts[i].clone()
            } else {
                sql.to_string()
            },
            statement: match statement(command, config, catalog) {
                Statement::Catalog if escaped => Statement::Refused(unicode_identifier_refused()),
                s => s,
            },
        })
        .collect())
}

fn statement(command: Command, config: &Config, catalog: bool) -> Statement {
    let (query, explain) = match command {
        Command::Private(q) => (q, false),
        Command::Explain(q) => (q, true),
        Command::Constant(items) => return constant(items, config, catalog),
        session => return Statement::Session(session),
    };
    if is_catalog_query(&query, config) {
        return Statement::Catalog;
    }
    match synthetic_read(&query, config) {
        Some(Ok(read)) => Statement::Synthetic { read, explain },
        Some(Err(refusal)) => Statement::Refused(refusal),
        None if explain => Statement::Explain(Box::new(Prepared::new(*query, config))),
        None => Statement::Private(Box::new(Prepared::new(*query, config))),
    }
}

/// A SELECT without FROM: dpgate's own when it can evaluate it (tried on a
/// session that holds nothing; the real evaluation comes later), the
/// catalog's when it cannot and it reads no declared table. One that
/// reads a declared table in a subquery is about the data: refused.
fn constant(items: Vec<SelectItem>, config: &Config, catalog: bool) -> Statement {
    match evaluate_constant(&items, &NoSession) {
        Err(e) if e.code == sqlstate::FEATURE_NOT_SUPPORTED => {
            if reads_declared_table(&items, config) {
                Statement::Refused(Refusal::unsupported(
                    "subqueries in expressions are not supported",
                    "run the aggregate as a query of its own, e.g. SELECT COUNT(*) FROM visits WHERE age = 37",
                ))
            } else if catalog {
                Statement::Catalog
            } else {
                Statement::Refused(e)
            }
        }
        _ => Statement::Constant(items),
    }
}

/// A session with nothing in it, for deciding whether a constant can be
/// evaluated without evaluating it for real.
struct NoSession;

impl SessionInfo for NoSession {
    fn user(&self) -> String {
        String::new()
    }
    fn database(&self) -> String {
        String::new()
    }
    fn setting(&self, _: &str) -> Option<String> {
        None
    }
    fn set_setting(&self, _: &str, _: &str) -> Result<(), Refusal> {
        Ok(())
    }
}

/// Whether a `$n` appears in the FROM clause or a CTE (then the source
/// depends on the bound values).
fn from_has_placeholder(query: &Query) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return true;
    };
    crate::params::parameter_count(&select.from) > 0
        || query
            .with
            .as_ref()
            .is_some_and(|w| crate::params::parameter_count(w) > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::config;

    fn routed(sql: &str, catalog: bool) -> Statement {
        route(sql, &config(), catalog).unwrap().remove(0).statement
    }

    /// A statement that reads a declared table is never answered from
    /// the shadow catalog's empty tables, however it hides the read.
    #[test]
    fn reads_of_declared_tables_never_reach_the_catalog() {
        for sql in [
            "SELECT (SELECT COUNT(*) FROM visits)",
            "SELECT EXISTS (SELECT 1 FROM visits WHERE age = 37)",
            "SELECT (SELECT age FROM visits LIMIT 1)",
            "SELECT 1 + (SELECT MAX(age) FROM public.visits) AS x",
            "SELECT NOT EXISTS (SELECT 1 FROM events)",
        ] {
            match routed(sql, true) {
                Statement::Refused(e) => {
                    assert_eq!(e.code, sqlstate::FEATURE_NOT_SUPPORTED, "{sql}");
                    assert!(e.hint.contains("query of its own"), "{sql}: {e:?}");
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
        // True catalog questions still go there; constants stay dpgate's.
        assert!(matches!(
            routed("SELECT * FROM visits LIMIT 0", true),
            Statement::Catalog
        ));
        assert!(matches!(
            routed("SELECT pg_catalog.format_type(23, NULL)", true),
            Statement::Catalog
        ));
        assert!(matches!(
            routed("SELECT EXISTS (SELECT 1 FROM pg_class)", true),
            Statement::Catalog
        ));
        assert!(matches!(
            routed("SELECT version()", true),
            Statement::Constant(_)
        ));
        assert!(matches!(
            routed("SELECT set_config('search_path', 'public', false)", true),
            Statement::Constant(_)
        ));
        // Without a catalog, what dpgate cannot evaluate is refused.
        assert!(matches!(
            routed("SELECT pg_catalog.format_type(23, NULL)", false),
            Statement::Refused(_)
        ));
    }

    /// PostgreSQL reads `U&"vi\0073its"` as `visits`; sqlparser reads it
    /// as `U & "vi\0073its"` (or not at all), so no check here could see
    /// the table. Such statements never reach the catalog, parsed or not.
    #[test]
    fn unicode_escaped_names_never_reach_the_catalog() {
        for sql in [
            r#"SELECT count(*) FROM U&"vi\0073its""#,
            r#"SELECT count(*) FROM u&"vi\0073its" LIMIT 0"#,
            r#"SELECT U&"rel\006eame" FROM pg_class"#,
        ] {
            let refused = match route(sql, &config(), true) {
                Err(e) => e,
                Ok(r) => match r.into_iter().next().unwrap().statement {
                    Statement::Refused(e) => e,
                    other => panic!("{sql}: {other:?}"),
                },
            };
            assert_eq!(refused.code, sqlstate::FEATURE_NOT_SUPPORTED, "{sql}");
            assert!(refused.message.contains("Unicode escapes"), "{sql}");
        }
        // A bitwise AND with a quoted column is not an escape.
        assert!(!crate::catalog::has_unicode_identifier(
            r#"SELECT relpages & "relnatts" FROM pg_class"#
        ));
        assert!(matches!(
            routed(r#"SELECT relpages & "relnatts" FROM pg_class"#, true),
            Statement::Catalog
        ));
    }

    /// Each statement is routed once; a private one is prepared with its
    /// parameter types and gives the same plan as the text written out.
    #[test]
    fn prepared_statements_bind_like_written_queries() {
        let Statement::Private(p) = routed("SELECT COUNT(*) FROM visits WHERE age > $1", false)
        else {
            panic!()
        };
        assert_eq!(p.parameter_types(), [Some(ColumnType::Int)]);
        let bound = p.bind(&[Cell::Int(40)], &Ask::at(1.0), &config()).unwrap();
        let Statement::Private(w) = routed("SELECT COUNT(*) FROM visits WHERE age > 40", false)
        else {
            panic!()
        };
        let written = w.bind(&[], &Ask::at(1.0), &config()).unwrap();
        assert_eq!(bound.backend_sql, written.backend_sql);
        assert_eq!(bound.fingerprint(0.95), written.fingerprint(0.95));
        assert_ne!(bound.fingerprint(0.95), written.fingerprint(0.9));
        let several = route("SET dp.epsilon = 0.2; SHOW dp.epsilon", &config(), false).unwrap();
        assert_eq!(several.len(), 2);
        assert_eq!(several[1].text.trim(), "SHOW dp.epsilon");
    }

    fn prepared(sql: &str) -> Prepared {
        let config = config();
        match route(sql, &config, false).unwrap().remove(0).statement {
            Statement::Private(p) => *p,
            other => panic!("not private: {other:?}"),
        }
    }

    /// A kept plan is used only for the same ask and the same values
    /// (floats bit for bit), and is the plan binding would give.
    #[test]
    fn kept_plans_match_their_ask_and_values() {
        let config = config();
        let p = prepared("SELECT COUNT(*) FROM visits WHERE cost > $1");
        let bind = |eps: f64, v: Cell| p.bind(&[v], &Ask::at(eps), &config).unwrap();
        let first = bind(0.1, Cell::Float(1.0));
        assert_eq!(p.plans.0.lock().unwrap().len(), 1);
        let again = bind(0.1, Cell::Float(1.0));
        assert_eq!(
            p.plans.0.lock().unwrap().len(),
            1,
            "a repeat is not kept twice"
        );
        let fresh = p.plan(&[Cell::Float(1.0)], &Ask::at(0.1), &config).unwrap();
        for plan in [&first, &again] {
            assert_eq!(plan.backend_sql, fresh.backend_sql);
            assert_eq!(plan.cost(), fresh.cost());
        }
        // Another ε, another value, or -0.0 for 0.0 plan afresh.
        assert_ne!(bind(0.2, Cell::Float(1.0)).cost(), first.cost());
        assert_ne!(bind(0.1, Cell::Float(2.0)).backend_sql, first.backend_sql);
        bind(0.1, Cell::Float(0.0));
        bind(0.1, Cell::Float(-0.0));
        assert_eq!(p.plans.0.lock().unwrap().len(), KEPT_PLANS);
        assert!(!same_values(&[Cell::Float(0.0)], &[Cell::Float(-0.0)]));
        assert!(!same_values(
            &[Cell::Float(f64::NAN)],
            &[Cell::Float(f64::NAN)]
        ));
        // Clones share what is kept.
        assert_eq!(p.clone().plans.0.lock().unwrap().len(), KEPT_PLANS);
    }

    /// A plan bound to a large value is made afresh, never kept: kept
    /// plans outlive connections, so they must not pin what an analyst
    /// sends.
    #[test]
    fn large_plans_are_not_kept() {
        let config = config();
        let p = prepared("SELECT COUNT(*) FROM visits WHERE ward <> $1");
        let large = Cell::Text("x".repeat(MAX_KEPT_BYTES));
        p.bind(std::slice::from_ref(&large), &Ask::at(0.1), &config)
            .unwrap();
        p.bind(&[large], &Ask::at(0.1), &config).unwrap();
        assert!(p.plans.0.lock().unwrap().is_empty());
        p.bind(&[Cell::Text("A".into())], &Ask::at(0.1), &config)
            .unwrap();
        assert_eq!(p.plans.0.lock().unwrap().len(), 1);
    }
}
