//! The data owner's workload: a SQL file read as an analyst's psql session
//! would be. Each private query is evaluated with the ask in force when it
//! comes: `SET dp.epsilon`, `dp.mechanism` and `dp.split` change it for
//! the queries after them, `RESET` restores the default.

use dpgate_config::Config;
use dpgate_sql::{route, Ask, Command, Mechanism, Prepared, Split, Statement};

/// One query of the workload, with what it spends.
#[derive(Clone, Debug)]
pub struct WorkItem {
    /// Line of the file the statement starts on (1-based).
    pub line: usize,
    /// The statement's text.
    pub sql: String,
    /// The query, FROM resolved.
    pub prepared: Prepared,
    /// ε, split and mechanism in force.
    pub ask: Ask,
}

/// Reads `text` under `config`: every statement must be a private query or
/// a `SET`/`RESET` of `dp.epsilon`, `dp.mechanism` or `dp.split`. Errors
/// name the line and say what to write.
pub fn parse(text: &str, config: &Config) -> Result<Vec<WorkItem>, String> {
    let mut ask = Ask::at(config.privacy.default_epsilon);
    let mut items = Vec::new();
    let mut from = 0;
    for statement in dpgate_sql::catalog::split_statements(text) {
        let at = text[from..].find(&statement).map_or(from, |i| from + i);
        from = at + statement.len();
        // The line of the statement's first word, past blank and comment lines.
        let skipped: usize = statement
            .lines()
            .take_while(|l| l.trim().is_empty() || l.trim_start().starts_with("--"))
            .count();
        let line = text[..at].matches('\n').count() + 1 + skipped;
        let fail = |why: String| format!("line {line}: {why}");
        let routed = route(&statement, config, false)
            .map_err(|r| fail(format!("{} ({})", r.message, r.hint)))?;
        let Some(r) = routed.into_iter().next() else {
            continue;
        };
        match r.statement {
            Statement::Private(prepared) => items.push(WorkItem {
                // Planned once here, so that a query dpgate refuses is a
                // usage error naming its line, before anything runs.
                line: prepared
                    .bind(&[], &ask, config)
                    .map(|_| line)
                    .map_err(|r| fail(format!("dpgate refuses this query: {} ({})", r.message, r.hint)))?,
                sql: statement.lines().skip(skipped).collect::<Vec<_>>().join("\n").trim().to_string(),
                prepared: *prepared,
                ask: ask.clone(),
            }),
            Statement::Session(Command::Set { name, value }) => {
                set(&mut ask, &name, value.as_deref(), config).map_err(fail)?
            }
            Statement::Session(Command::Reset(name)) => {
                let default = Ask::at(config.privacy.default_epsilon);
                match name.as_deref() {
                    None => ask = default,
                    Some(n) => set(&mut ask, n, None, config).map_err(fail)?,
                }
            }
            Statement::Refused(refusal) => {
                return Err(fail(format!(
                    "dpgate refuses this query: {} ({})",
                    refusal.message, refusal.hint
                )))
            }
            _ => {
                return Err(fail(
                    "only private queries (SELECT with aggregates over declared tables) and SET dp.epsilon, dp.mechanism or dp.split are evaluated; remove this statement".into(),
                ))
            }
        }
    }
    if items.is_empty() {
        return Err("the workload holds no private query: write one SELECT with aggregates per line, ending with ;".into());
    }
    Ok(items)
}

/// `SET name = value` (`None`: back to the default) on the ask.
fn set(ask: &mut Ask, name: &str, value: Option<&str>, config: &Config) -> Result<(), String> {
    let p = &config.privacy;
    match name {
        "dp.epsilon" => {
            ask.epsilon = match value {
                None => p.default_epsilon,
                Some(v) => v
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|e| {
                        e.is_finite()
                            && *e >= p.min_epsilon_per_query
                            && *e <= p.max_epsilon_per_query
                    })
                    .ok_or_else(|| {
                        format!(
                            "dp.epsilon must be a number from {} to {} (privacy.min_epsilon_per_query and max_epsilon_per_query), got {v}",
                            p.min_epsilon_per_query, p.max_epsilon_per_query
                        )
                    })?,
            }
        }
        "dp.mechanism" => {
            ask.mechanism = match value {
                None => Mechanism::default(),
                Some(v) => Mechanism::parse(v).map_err(|r| r.message)?,
            }
        }
        "dp.split" => {
            ask.split = match value {
                None => Split::default(),
                Some(v) => Split::parse(v).map_err(|r| r.message)?,
            }
        }
        other => {
            return Err(format!(
                "SET {other} does not change what a query releases; the workload may SET dp.epsilon, dp.mechanism or dp.split"
            ))
        }
    }
    Ok(())
}
