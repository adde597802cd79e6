//! Sorts what a client sends into session commands, constant selects
//! (answered by dpgate itself) and private queries (planned), refusing the
//! rest before anything else happens.

use sqlparser::ast::{
    Expr, ObjectName, ObjectNamePart, Query, SelectItem, SetExpr, Statement, Value,
};

use crate::error::{sqlstate, Refusal};

/// A statement sorted by who answers it.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `SET name = value` (lower-cased name, value as text).
    Set {
        /// Parameter name, lower-cased.
        name: String,
        /// Value as text, or `None` for `SET name TO DEFAULT`.
        value: Option<String>,
    },
    /// A SET form dpgate accepts and ignores (`SET TIME ZONE`, `SET ROLE`...).
    IgnoredSet,
    /// `SHOW name` / `SHOW ALL`.
    Show(String),
    /// `RESET name` / `RESET ALL` (`None`).
    Reset(Option<String>),
    /// `DISCARD ALL`: every setting back to its default.
    Discard,
    /// BEGIN / START TRANSACTION.
    Begin,
    /// COMMIT / END.
    Commit,
    /// ROLLBACK / ABORT.
    Rollback,
    /// Accepted with this command tag and nothing to do: SAVEPOINT,
    /// RELEASE, ROLLBACK TO (nothing to undo), CLOSE, DEALLOCATE, LISTEN,
    /// UNLISTEN (no cursors, server-side state or notifications exist).
    Ack(&'static str),
    /// `EXPLAIN query`: the plan, without running or charging.
    Explain(Box<Query>),
    /// A SELECT without FROM: literals and session functions.
    Constant(Vec<SelectItem>),
    /// A query over declared tables: to be planned.
    Private(Box<Query>),
}

/// Parses `sql` and classifies each statement.
pub fn classify(sql: &str) -> Result<Vec<Command>, Refusal> {
    let statements = crate::limits::parse_bounded(sql)?;
    let commands = statements
        .into_iter()
        .map(classify_statement)
        .collect::<Result<Vec<_>, _>>()?;
    let private = commands
        .iter()
        .filter(|c| matches!(c, Command::Private(_)))
        .count();
    if commands.len() > 1 && private > 0 {
        return Err(Refusal::unsupported(
            "a private query must be sent on its own, not with other statements in one string",
            "send each statement separately",
        ));
    }
    Ok(commands)
}

fn classify_statement(statement: Statement) -> Result<Command, Refusal> {
    Ok(match statement {
        Statement::Query(query) => classify_query(query)?,
        Statement::Set(set) => classify_set(set),
        Statement::ShowVariable { variable } => Command::Show(join_idents(&variable)),
        Statement::Reset(reset) => {
            let text = reset.to_string().to_ascii_lowercase();
            let name = text.trim_start_matches("reset").trim();
            Command::Reset((name != "all").then(|| name.to_string()))
        }
        Statement::Discard { .. } => Command::Discard,
        Statement::StartTransaction { .. } => Command::Begin,
        Statement::Commit { .. } => Command::Commit,
        Statement::Rollback {
            savepoint: None, ..
        } => Command::Rollback,
        Statement::Rollback {
            savepoint: Some(_), ..
        } => Command::Ack("ROLLBACK"),
        Statement::Savepoint { .. } => Command::Ack("SAVEPOINT"),
        Statement::ReleaseSavepoint { .. } => Command::Ack("RELEASE"),
        Statement::Close { .. } => Command::Ack("CLOSE CURSOR ALL"),
        Statement::Deallocate { .. } => Command::Ack("DEALLOCATE"),
        Statement::LISTEN { .. } => Command::Ack("LISTEN"),
        Statement::UNLISTEN { .. } => Command::Ack("UNLISTEN"),
        Statement::Explain {
            analyze: true, ..
        } => {
            return Err(Refusal::unsupported(
                "EXPLAIN ANALYZE would run the query against the data",
                "write EXPLAIN without ANALYZE: it shows the plan, the mechanisms and the cost without running or charging",
            ))
        }
        Statement::Explain { statement, .. } => match *statement {
            Statement::Query(query) => Command::Explain(query),
            _ => {
                return Err(Refusal::unsupported(
                    "only queries can be explained",
                    "write EXPLAIN SELECT …",
                ))
            }
        },
        Statement::Insert(_)
        | Statement::Update(_)
        | Statement::Delete(_)
        | Statement::Merge(_)
        | Statement::Truncate(_)
        | Statement::Copy { .. }
        | Statement::CreateTable(_)
        | Statement::CreateView(_)
        | Statement::CreateIndex(_)
        | Statement::AlterTable(_)
        | Statement::Drop { .. } => return Err(Refusal::new(
            sqlstate::INSUFFICIENT_PRIVILEGE,
            "dpgate is read-only: writes and schema changes are not allowed",
            "ask the data owner to change the data; through dpgate, run aggregate SELECT queries",
        )),
        other => {
            let first = other.to_string();
            let keyword = first
                .split_whitespace()
                .next()
                .unwrap_or("this")
                .to_uppercase();
            return Err(Refusal::unsupported(
                format!("{keyword} statements are not supported by dpgate"),
                "run aggregate SELECT queries such as SELECT COUNT(*) FROM table",
            ));
        }
    })
}

fn classify_set(set: sqlparser::ast::Set) -> Command {
    use sqlparser::ast::Set;
    match set {
        Set::SingleAssignment {
            variable, values, ..
        } => {
            let name = object_name(&variable).to_ascii_lowercase();
            let value = values
                .iter()
                .map(setting_text)
                .collect::<Vec<_>>()
                .join(", ");
            let value = (!value.eq_ignore_ascii_case("default")).then_some(value);
            Command::Set { name, value }
        }
        _ => Command::IgnoredSet,
    }
}

/// Text of a SET value: strings unquoted, everything else as written.
fn setting_text(expr: &Expr) -> String {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(ident) => ident.value.clone(),
        other => other.to_string(),
    }
}

fn classify_query(query: Box<Query>) -> Result<Command, Refusal> {
    if let SetExpr::Select(select) = query.body.as_ref() {
        if select.from.is_empty()
            && query.with.is_none()
            && select.selection.is_none()
            && query.order_by.is_none()
        {
            return Ok(Command::Constant(select.projection.clone()));
        }
    }
    Ok(Command::Private(query))
}

/// `a.b.c` as text.
pub fn object_name(name: &ObjectName) -> String {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The parameter a SHOW names: PostgreSQL's multi-word names map to their
/// settings; anything else was a dotted name such as `dp.budget`.
fn join_idents(idents: &[sqlparser::ast::Ident]) -> String {
    let words: Vec<String> = idents
        .iter()
        .map(|i| i.value.to_ascii_lowercase())
        .collect();
    match words.join(" ").as_str() {
        "transaction isolation level" => "transaction_isolation".into(),
        "time zone" => "timezone".into(),
        "session authorization" => "session_authorization".into(),
        _ => words.join("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_commands() {
        assert_eq!(
            classify("SET dp.epsilon = 0.2").unwrap(),
            [Command::Set {
                name: "dp.epsilon".into(),
                value: Some("0.2".into())
            }]
        );
        assert_eq!(
            classify("set extra_float_digits to 3").unwrap(),
            [Command::Set {
                name: "extra_float_digits".into(),
                value: Some("3".into())
            }]
        );
        assert_eq!(
            classify("SET application_name = 'psql'").unwrap(),
            [Command::Set {
                name: "application_name".into(),
                value: Some("psql".into())
            }]
        );
        assert_eq!(
            classify("SHOW search_path").unwrap(),
            [Command::Show("search_path".into())]
        );
        assert_eq!(classify("RESET ALL").unwrap(), [Command::Reset(None)]);
        assert_eq!(
            classify("RESET dp.epsilon").unwrap(),
            [Command::Reset(Some("dp.epsilon".into()))]
        );
        assert_eq!(
            classify("BEGIN; COMMIT").unwrap(),
            [Command::Begin, Command::Commit]
        );
        assert_eq!(classify("ROLLBACK").unwrap(), [Command::Rollback]);
        assert!(matches!(
            classify("SELECT version()").unwrap()[0],
            Command::Constant(_)
        ));
    }

    #[test]
    fn refusals_carry_codes() {
        assert_eq!(classify("DELETE FROM visits").unwrap_err().code, "42501");
        assert_eq!(classify("DROP TABLE visits").unwrap_err().code, "42501");
        assert_eq!(classify("SELEC 1").unwrap_err().code, "42601");
        assert_eq!(
            classify("SELECT COUNT(*) FROM visits; SELECT 1")
                .unwrap_err()
                .code,
            "0A000"
        );
    }
}
