//! Catalog queries: what clients ask about the schema (`\d`, JDBC
//! metadata, `information_schema`) rather than about the data. They are
//! answered by a shadow database of empty tables that mirrors proxy.toml,
//! so this module decides which queries may go there and makes them safe
//! to send: names that would reveal statistics of the server's data
//! (`pg_stats`, `pg_stat_*`, sizes, activity) or run text as SQL are
//! refused, and session functions are replaced by the analyst's values.
//!
//! The check works on tokens, not on the parse tree, so it also covers
//! catalog SQL that sqlparser cannot parse but PostgreSQL can.

use std::ops::ControlFlow;

use dpgate_config::Config;
use sqlparser::ast::{ObjectName, Query, SetExpr, TableFactor, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::classify::object_name;
use crate::constant::SessionInfo;
use crate::error::{sqlstate, Refusal};
use crate::types::quote_literal;

/// Names (exact, or prefixes ending in `_`/`*`) that reveal something of
/// the data or the server's activity, write, or evaluate text as SQL.
/// Matched case-insensitively against every identifier in the query.
const HIDDEN_PREFIXES: &[&str] = &[
    "pg_stat",     // pg_stats, pg_statistic*, pg_stat_*, pg_statio_*, pg_stat_get_*
    "pg_ls_",      // directory listings
    "pg_read_",    // file reads
    "pg_file",     // pg_file_settings, pg_file_write
    "pg_current_", // WAL positions, transaction ids
    "pg_last_",    // replication and commit progress
    "pg_replication",
    "pg_logical",
    "pg_create_",
    "pg_drop_",
    "pg_terminate",
    "pg_cancel",
    "pg_advisory",
    "pg_try_advisory",
    "pg_notify",
    "pg_notification", // pg_notification_queue_usage: server-wide
    "pg_sleep",
    "pg_reload",
    "pg_rotate",
    "pg_switch",
    "pg_promote",
    "pg_backup",
    "pg_wal",
    "pg_walfile",
    "pg_xact",
    "pg_snapshot",
    "pg_visible",
    "pg_export",
    "pg_import",
    "pg_log_",
    "pg_hba",
    "pg_ident",
    "pg_shmem",
    "pg_backend_memory",
    "pg_prepared",
    "pg_locks",
    "pg_blocking",
    "pg_safe_snapshot",
    "pg_subscription",
    "pg_authid",
    "pg_shadow",
    "pg_user_mapping",
    "pg_largeobject",
    "pg_db_role_setting",
    "pg_control_",
    "pg_sequence_last_value",
    "pg_database_size",
    "pg_tablespace_size",
    "pg_relation_size",
    "pg_total_relation_size",
    "pg_table_size",
    "pg_indexes_size",
    "txid_",
    "lo_",
    "dblink",
    "query_to_",
    "table_to_",
    "schema_to_",
    "database_to_",
    "cursor_to_",
    "ts_stat",
    "mxid_age",
    "nextval",
    "currval",
    "setval",
    "lastval",
    "set_config",
];

/// Names under a hidden prefix that only describe the schema: psql's `\d`
/// lists extended-statistics *definitions* (the data behind them,
/// `pg_statistic_ext_data`, stays hidden).
const SCHEMA_ONLY: &[&str] = &["pg_statistic_ext"];

/// True when `query` belongs to the shadow catalog: it reads only system
/// relations (`pg_catalog`, `information_schema`, unqualified `pg_*`) or
/// set-returning functions, or it reads declared tables with `LIMIT 0`
/// (tools ask that for a result's columns). Queries over declared tables
/// are private; anything else is left to the planner, which names the
/// undeclared relation in its error.
pub fn is_catalog_query(query: &Query, config: &Config) -> bool {
    let mut names = Names::default();
    let _ = query.visit(&mut names);
    let mut declared = false;
    let mut other = false;
    for name in &names.relations {
        let text = object_name(name).to_ascii_lowercase();
        let parts: Vec<&str> = text.split('.').collect();
        let is_declared = is_declared(&parts, config);
        let is_system = names.functions.contains(name)
            || match parts.as_slice() {
                [t] => t.starts_with("pg_") || names.ctes.iter().any(|c| c == t),
                [s, _] | [_, s, _] => *s == "pg_catalog" || *s == "information_schema",
                _ => false,
            };
        declared |= is_declared;
        other |= !is_declared && !is_system;
    }
    if declared {
        return limit_zero(query) && !other;
    }
    !other
}

/// What a query reads, for routing it to synthetic rows.
pub(crate) struct Reads<'c> {
    /// The declared tables it reads (at any depth, each once).
    pub tables: Vec<&'c dpgate_config::Table>,
    /// Whether it reads any other relation besides its CTEs.
    pub other: bool,
    /// Whether a CTE takes the name of a declared table (CTE names are
    /// not scoped here, so which one a reference means is not known).
    pub shadowed: bool,
}

/// The relations `query` reads, sorted into declared tables and others.
pub(crate) fn declared_reads<'c>(query: &Query, config: &'c Config) -> Reads<'c> {
    let mut names = Names::default();
    let _ = query.visit(&mut names);
    let mut reads = Reads {
        tables: Vec::new(),
        other: false,
        shadowed: false,
    };
    for name in &names.relations {
        let text = object_name(name).to_ascii_lowercase();
        let parts: Vec<&str> = text.split('.').collect();
        let cte = matches!(parts.as_slice(), [t] if names.ctes.iter().any(|c| c == t));
        let table = match parts.as_slice() {
            [t] => config.table(None, t),
            [s, t] | [_, s, t] => config.table(Some(s), t),
            _ => None,
        };
        match (cte, table) {
            (true, Some(_)) => reads.shadowed = true,
            (true, None) => {}
            (false, Some(t)) if !reads.tables.iter().any(|x| std::ptr::eq(*x, t)) => {
                reads.tables.push(t)
            }
            (false, Some(_)) => {}
            (false, None) => reads.other |= !names.functions.contains(name),
        }
    }
    reads
}

/// True when the dotted name `parts` (lower-cased) is a declared table.
fn is_declared(parts: &[&str], config: &Config) -> bool {
    match parts {
        [t] => config.table(None, t).is_some(),
        [s, t] | [_, s, t] => config.table(Some(s), t).is_some(),
        _ => false,
    }
}

/// True when `node` reads a declared table anywhere (in a subquery of an
/// expression too): such a statement is about the data, and the shadow
/// catalog's empty tables would answer it wrongly.
pub fn reads_declared_table<V: Visit>(node: &V, config: &Config) -> bool {
    let mut names = Names::default();
    let _ = node.visit(&mut names);
    names.relations.iter().any(|name| {
        let text = object_name(name).to_ascii_lowercase();
        is_declared(&text.split('.').collect::<Vec<_>>(), config)
    })
}

/// Relations, CTE names and FROM functions of a query, at any depth.
#[derive(Default)]
struct Names {
    relations: Vec<ObjectName>,
    ctes: Vec<String>,
    functions: Vec<ObjectName>,
}

impl Visitor for Names {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            self.ctes.extend(
                with.cte_tables
                    .iter()
                    .map(|c| c.alias.name.value.to_ascii_lowercase()),
            );
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        self.relations.push(relation.clone());
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            args: Some(_),
            ..
        } = factor
        {
            self.functions.push(name.clone());
        }
        ControlFlow::Continue(())
    }
}

/// True when `sql` may be sent to the shadow catalog although sqlparser
/// could not parse it: one statement, starting with SELECT/WITH/VALUES/
/// TABLE/SHOW, naming no declared table.
pub fn unparsed_catalog_candidate(sql: &str, config: &Config) -> bool {
    let Ok(tokens) = tokens(sql) else {
        return false;
    };
    let words: Vec<String> = tokens
        .iter()
        .filter_map(|t| match &t.token {
            Token::Word(w) => Some(w.value.to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    let first_ok = matches!(
        words.first().map(String::as_str),
        Some("select" | "with" | "values" | "table" | "show")
    );
    let semicolons = tokens
        .iter()
        .rposition(|t| !matches!(t.token, Token::Whitespace(_) | Token::SemiColon))
        .map(|last| {
            tokens[..last]
                .iter()
                .any(|t| matches!(t.token, Token::SemiColon))
        })
        .unwrap_or(false);
    let names_declared = config
        .tables
        .iter()
        .any(|t| words.iter().any(|w| w.eq_ignore_ascii_case(&t.name)));
    first_ok && !semicolons && !names_declared
}

/// True when `sql` spells an identifier with Unicode escapes
/// (`U&"vi\0073its"`). PostgreSQL reads that as one name; sqlparser reads
/// `U & "vi\0073its"`, so a declared table could be named past every check
/// here. Such statements never go to the catalog.
pub fn has_unicode_identifier(sql: &str) -> bool {
    let Ok(tokens) = tokens(sql) else {
        return false;
    };
    tokens.windows(3).any(|w| {
        matches!(&w[0].token, Token::Word(u) if u.quote_style.is_none() && u.value.eq_ignore_ascii_case("u"))
            && w[1].token == Token::Ampersand
            && matches!(&w[2].token, Token::Word(q) if q.quote_style == Some('"'))
    })
}

/// The refusal for [`has_unicode_identifier`].
pub fn unicode_identifier_refused() -> Refusal {
    Refusal::unsupported(
        "identifiers with Unicode escapes (U&\"...\") are not supported",
        "write the name itself, in double quotes if it needs them",
    )
}

/// Checks `sql` for hidden names and replaces session functions
/// (`current_user`, `session_user`, `current_setting('…')`) by the
/// analyst's values, returning the SQL to send to the shadow catalog.
pub fn prepare_catalog_sql(sql: &str, session: &dyn SessionInfo) -> Result<String, Refusal> {
    let tokens = tokens(sql)?;
    let offsets = byte_offsets(sql, &tokens);
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    while i < tokens.len() {
        let text = &sql[offsets[i]..offsets[i + 1]];
        if let Token::Word(w) = &tokens[i].token {
            let lower = w.value.to_ascii_lowercase();
            let hidden_prefix = HIDDEN_PREFIXES.iter().find(|p| lower.starts_with(*p));
            if let Some(prefix) = hidden_prefix.filter(|_| !SCHEMA_ONLY.contains(&lower.as_str())) {
                return Err(hidden(&lower, prefix));
            }
            if w.quote_style.is_none() {
                if let Some((value, next)) = session_value(&tokens, i, &lower, session) {
                    strip_catalog_qualifier(&mut out);
                    out.push_str(&quote_literal(&value));
                    i = next;
                    continue;
                }
            }
        }
        out.push_str(text);
        i += 1;
    }
    Ok(out)
}

/// The text of each statement in `sql`, split at top-level semicolons,
/// without empty statements.
pub fn split_statements(sql: &str) -> Vec<String> {
    let Ok(tokens) = tokens(sql) else {
        return vec![sql.to_string()];
    };
    let offsets = byte_offsets(sql, &tokens);
    let mut out = Vec::new();
    let mut start = 0;
    for (i, t) in tokens.iter().enumerate() {
        if matches!(t.token, Token::SemiColon) {
            out.push(sql[start..offsets[i]].to_string());
            start = offsets[i + 1];
        }
    }
    out.push(sql[start..].to_string());
    out.retain(|s| tokens_nonblank(s));
    out
}

/// True when `sql` holds more than whitespace and comments.
fn tokens_nonblank(sql: &str) -> bool {
    tokens(sql).is_ok_and(|t| t.iter().any(|t| !matches!(t.token, Token::Whitespace(_))))
}

fn tokens(sql: &str) -> Result<Vec<TokenWithSpan>, Refusal> {
    Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| {
            Refusal::new(
                sqlstate::SYNTAX_ERROR,
                format!("cannot read the statement: {e}"),
                "check the SQL syntax; dpgate reads the PostgreSQL dialect",
            )
        })
}

/// Byte offset where each token starts, plus the end of the text.
fn byte_offsets(sql: &str, tokens: &[TokenWithSpan]) -> Vec<usize> {
    let mut line_starts = vec![0];
    line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
    let mut offsets: Vec<usize> = tokens
        .iter()
        .map(|t| {
            let line = (t.span.start.line.max(1) - 1) as usize;
            let start = line_starts.get(line).copied().unwrap_or(sql.len());
            let col = (t.span.start.column.max(1) - 1) as usize;
            sql[start..]
                .char_indices()
                .nth(col)
                .map(|(o, _)| start + o)
                .unwrap_or(sql.len())
        })
        .collect();
    offsets.push(sql.len());
    offsets
}

/// The value of a session function starting at token `i`, and the index
/// of the token after it.
fn session_value(
    tokens: &[TokenWithSpan],
    i: usize,
    word: &str,
    session: &dyn SessionInfo,
) -> Option<(String, usize)> {
    let after_period = prev_significant(tokens, i).is_some_and(|t| matches!(t, Token::Period));
    match word {
        "current_user" | "session_user" | "current_role" => Some((session.user(), i + 1)),
        "user" if !after_period && !next_is(tokens, i, &Token::Period) => {
            Some((session.user(), i + 1))
        }
        "current_setting" => {
            // current_setting ( 'name' [ , missing_ok ] )
            let mut j = skip_ws(tokens, i + 1);
            if tokens.get(j).map(|t| &t.token) != Some(&Token::LParen) {
                return None;
            }
            j = skip_ws(tokens, j + 1);
            let Some(Token::SingleQuotedString(name)) = tokens.get(j).map(|t| &t.token) else {
                return None;
            };
            let value = session.setting(&name.to_ascii_lowercase())?;
            let mut k = skip_ws(tokens, j + 1);
            if tokens.get(k).map(|t| &t.token) == Some(&Token::Comma) {
                k = skip_ws(tokens, k + 1);
                k = skip_ws(tokens, k + 1);
            }
            (tokens.get(k).map(|t| &t.token) == Some(&Token::RParen)).then_some((value, k + 1))
        }
        _ => None,
    }
}

fn skip_ws(tokens: &[TokenWithSpan], mut j: usize) -> usize {
    while matches!(tokens.get(j).map(|t| &t.token), Some(Token::Whitespace(_))) {
        j += 1;
    }
    j
}

fn next_is(tokens: &[TokenWithSpan], i: usize, want: &Token) -> bool {
    tokens.get(skip_ws(tokens, i + 1)).map(|t| &t.token) == Some(want)
}

fn prev_significant(tokens: &[TokenWithSpan], i: usize) -> Option<&Token> {
    tokens[..i]
        .iter()
        .rev()
        .map(|t| &t.token)
        .find(|t| !matches!(t, Token::Whitespace(_)))
}

/// Drops a trailing `pg_catalog.` written before a replaced function.
fn strip_catalog_qualifier(out: &mut String) {
    let trimmed = out.trim_end();
    if let Some(rest) = trimmed.strip_suffix('.') {
        let rest = rest.trim_end();
        for q in ["pg_catalog", "\"pg_catalog\""] {
            // `get`, not slicing: the text before may end in a multi-byte
            // character, and no analyst input may panic the proxy.
            let tail = rest
                .len()
                .checked_sub(q.len())
                .and_then(|at| rest.get(at..));
            if tail.is_some_and(|t| t.eq_ignore_ascii_case(q)) {
                out.truncate(rest.len() - q.len());
                return;
            }
        }
    }
}

fn hidden(name: &str, prefix: &str) -> Refusal {
    let why = if prefix.starts_with("pg_stat")
        || prefix.ends_with("_size")
        || prefix == "pg_locks"
        || prefix == "pg_prepared"
    {
        "it would reveal statistics of the data or of the server's activity"
    } else {
        "dpgate answers catalog questions from the declared schema only"
    };
    Refusal::new(
        sqlstate::INSUFFICIENT_PRIVILEGE,
        format!("\"{name}\" is not visible through dpgate: {why}"),
        "browse tables and columns with \\d, pg_class, pg_attribute or information_schema; ask for counts and sizes with a private aggregate such as SELECT COUNT(*) FROM table",
    )
}

fn limit_zero(query: &Query) -> bool {
    let zero = |e: &sqlparser::ast::Expr| e.to_string().trim() == "0";
    let limited = match &query.limit_clause {
        Some(sqlparser::ast::LimitClause::LimitOffset { limit: Some(l), .. }) => zero(l),
        Some(sqlparser::ast::LimitClause::OffsetCommaLimit { limit, .. }) => zero(limit),
        _ => false,
    };
    limited && matches!(query.body.as_ref(), SetExpr::Select(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Info;
    impl SessionInfo for Info {
        fn user(&self) -> String {
            "ana".into()
        }
        fn database(&self) -> String {
            "warehouse".into()
        }
        fn setting(&self, name: &str) -> Option<String> {
            (name == "search_path").then(|| "public".into())
        }
    }

    #[test]
    fn statistics_are_hidden() {
        for sql in [
            "SELECT * FROM pg_stats",
            "SELECT * FROM pg_catalog.pg_statistic",
            "SELECT n_live_tup FROM pg_stat_user_tables",
            "select PG_TOTAL_RELATION_SIZE('visits')",
            "SELECT * FROM \"pg_stat_activity\"",
            "SELECT query_to_xml('select 1', true, true, '')",
            "SELECT pg_database_size(current_database())",
            "SELECT * FROM pg_locks",
        ] {
            let e = prepare_catalog_sql(sql, &Info).unwrap_err();
            assert_eq!(e.code, "42501", "{sql}");
        }
    }

    #[test]
    fn session_functions_become_the_analysts_values() {
        let sql = "SELECT current_schema(), session_user, pg_catalog.current_setting('search_path'), u.usename FROM pg_user u WHERE u.usename = CURRENT_USER";
        let out = prepare_catalog_sql(sql, &Info).unwrap();
        assert_eq!(
            out,
            "SELECT current_schema(), 'ana', 'public', u.usename FROM pg_user u WHERE u.usename = 'ana'"
        );
        assert_eq!(
            split_statements("SELECT ';'; -- x;\nSELECT 2;;"),
            ["SELECT ';'", " -- x;\nSELECT 2"]
        );
        // A multi-byte character right before `.current_user` (the
        // qualifier check once sliced inside it and panicked).
        for sql in [
            "SELECT ☃☃☃☃.current_user FROM pg_class",
            "SELECT é.current_user",
            "SELECT \"☃pg_catalog\".current_user",
        ] {
            let _ = prepare_catalog_sql(sql, &Info);
        }
        // Unknown settings are left to the catalog database.
        let sql = "SELECT current_setting('max_index_keys')";
        assert_eq!(prepare_catalog_sql(sql, &Info).unwrap(), sql);
    }

    #[test]
    fn routing() {
        let config = crate::tests::config();
        let q = |sql: &str| match crate::classify(sql).unwrap().remove(0) {
            crate::Command::Private(q) => is_catalog_query(&q, &config),
            other => panic!("{other:?}"),
        };
        assert!(q("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE relkind = 'r'"));
        assert!(q("SELECT table_name FROM information_schema.tables"));
        assert!(q("SELECT * FROM visits LIMIT 0"));
        assert!(q("WITH x AS (SELECT oid FROM pg_type) SELECT * FROM x"));
        assert!(q("SELECT * FROM generate_series(1, 3)"));
        assert!(!q("SELECT COUNT(*) FROM visits"));
        assert!(!q("SELECT COUNT(*) FROM visits v JOIN pg_class c ON true"));
        assert!(!q("SELECT * FROM secrets"));
        assert!(unparsed_catalog_candidate(
            "SELECT x FROM pg_class WHERE y",
            &config
        ));
        assert!(!unparsed_catalog_candidate(
            "SELECT 1; DO $$ begin end $$",
            &config
        ));
        assert!(!unparsed_catalog_candidate(
            "SELECT age FROM Visits",
            &config
        ));
        assert!(!unparsed_catalog_candidate("DO $$ begin end $$", &config));
    }
}
