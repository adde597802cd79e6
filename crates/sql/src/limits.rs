//! Size limits checked before anything recursive touches a statement
//! (invariant 9: no input crashes or hangs the process).
//!
//! sqlparser builds left-associative chains (`1+1+…+1`, `a AND b AND …`)
//! iteratively, so a short statement can still produce an expression tree
//! thousands of levels deep; every later pass (cloning, checking,
//! compiling, rendering) recurses over that tree. The parse therefore
//! happens in three bounded steps: the text's length, then the number of
//! tokens (an upper bound on the number of nodes), then the tree's depth,
//! measured by a visitor that stops as soon as the limit is passed. Only
//! a statement within all three reaches the rest of dpgate. Each refusal
//! is SQLSTATE 54001 (statement too complex).

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Query, Statement, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::error::{sqlstate, Refusal};
use dpgate_config::{is_reserved_name, RESERVED_PREFIX};

/// Longest statement text accepted, in bytes.
pub const MAX_STATEMENT_BYTES: usize = 1 << 20;
/// Most tokens (words, literals, operators; not whitespace) in one request.
pub const MAX_TOKENS: usize = 100_000;
/// Deepest nesting of expressions and subqueries in one statement.
pub const MAX_DEPTH: usize = 128;
/// The parser's own limit on nested parentheses, subqueries and prefix
/// operators (each counts one level of its recursion).
const PARSER_RECURSION: usize = 64;

/// Parses `sql` within the limits above.
pub fn parse_bounded(sql: &str) -> Result<Vec<Statement>, Refusal> {
    if sql.len() > MAX_STATEMENT_BYTES {
        return Err(too_complex(format!(
            "the statement is {} bytes long; dpgate accepts at most {MAX_STATEMENT_BYTES}",
            sql.len()
        )));
    }
    let dialect = PostgreSqlDialect {};
    let mut tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| syntax(e.to_string()))?;
    tokens.retain(|t| !matches!(t.token, Token::Whitespace(_)));
    if tokens.len() > MAX_TOKENS {
        return Err(too_complex(format!(
            "the statement has {} tokens; dpgate accepts at most {MAX_TOKENS}",
            tokens.len()
        )));
    }
    // The rewritten backend query names its own columns and relations
    // __dp_…; a user's name there could stand in for one of them.
    if let Some(word) = tokens.iter().find_map(|t| match &t.token {
        Token::Word(w) if is_reserved_name(&w.value) => Some(w.value.clone()),
        _ => None,
    }) {
        return Err(Refusal::new(
            sqlstate::RESERVED_NAME,
            format!("the name \"{word}\" is reserved: dpgate's rewritten queries use names that begin with {RESERVED_PREFIX}"),
            "choose another name for the column, alias or table",
        ));
    }
    if tokens.len() <= SHALLOW_TOKENS {
        return parse_tokens(tokens);
    }
    // A long statement may parse into a tree as deep as it has tokens, and
    // dropping a refused tree recurses once per level: do both on a thread
    // whose stack is known to hold the deepest tree MAX_TOKENS allow.
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("dpgate-parse".into())
            .stack_size(PARSE_STACK_BYTES)
            .spawn_scoped(s, || parse_tokens(tokens))
            .map_err(|e| too_complex(format!("no thread to parse a long statement: {e}")))?
            .join()
            .unwrap_or_else(|_| Err(too_complex("the statement could not be parsed".into())))
    })
}

/// Statements with at most this many tokens are parsed on the caller's
/// thread: their trees are at most this deep, which any stack holds.
const SHALLOW_TOKENS: usize = 2_000;
/// Stack of the thread that parses longer statements (reserved, not
/// committed: only the pages a deep tree touches are ever used).
const PARSE_STACK_BYTES: usize = 256 << 20;

fn parse_tokens(tokens: Vec<TokenWithSpan>) -> Result<Vec<Statement>, Refusal> {
    let statements = Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(PARSER_RECURSION)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|e| match e {
            ParserError::RecursionLimitExceeded => too_complex(format!(
                "the statement nests parentheses, subqueries or operators more than {PARSER_RECURSION} levels deep"
            )),
            other => syntax(other.to_string()),
        })?;
    let mut depth = Depth::default();
    if statements.visit(&mut depth).is_break() {
        return Err(too_complex(format!(
            "an expression in the statement is nested more than {MAX_DEPTH} levels deep"
        )));
    }
    Ok(statements)
}

fn too_complex(message: String) -> Refusal {
    Refusal::new(
        sqlstate::STATEMENT_TOO_COMPLEX,
        message,
        "split the statement or simplify its expressions (e.g. SUM(age) * 3 instead of SUM(age + age + age))",
    )
}

fn syntax(detail: String) -> Refusal {
    Refusal::new(
        sqlstate::SYNTAX_ERROR,
        format!("cannot parse the statement: {detail}"),
        "check the SQL syntax; dpgate reads the PostgreSQL dialect",
    )
}

/// Tracks the current nesting of expressions and queries and breaks as
/// soon as it passes [`MAX_DEPTH`], so the visit itself stays shallow.
#[derive(Default)]
struct Depth {
    now: usize,
}

impl Depth {
    fn enter(&mut self) -> ControlFlow<()> {
        self.now += 1;
        if self.now > MAX_DEPTH {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }
}

impl Visitor for Depth {
    type Break = ();

    fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.enter()
    }

    fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.enter()
    }

    fn post_visit_expr(&mut self, _: &Expr) -> ControlFlow<()> {
        self.now -= 1;
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(sql: &str) -> String {
        parse_bounded(sql).unwrap_err().code.into_owned()
    }

    #[test]
    fn names_of_the_rewrite_are_reserved() {
        for sql in [
            "SELECT COUNT(*) FROM (SELECT patient_id AS __dp_unit FROM visits) s",
            "SELECT COUNT(*) FROM visits AS \"__DP_rows\"",
            "SELECT __dp_a0 FROM visits",
        ] {
            assert_eq!(code(sql), "42939", "{sql}");
        }
        // Only names: a string may hold anything.
        assert!(parse_bounded("SELECT COUNT(*) FROM visits WHERE ward = '__dp_x'").is_ok());
        assert!(parse_bounded("SELECT COUNT(*) FROM visits v, _dp_x").is_ok());
    }

    #[test]
    fn long_chains_are_refused_before_recursion() {
        let chain = format!("SELECT {}", vec!["1"; 2000].join("+"));
        assert_eq!(code(&chain), "54001");
        let filter = format!(
            "SELECT COUNT(*) FROM visits WHERE {} > 0",
            vec!["age"; 2000].join(" + ")
        );
        assert_eq!(code(&filter), "54001");
        let ands = format!(
            "SELECT COUNT(*) FROM visits WHERE {}",
            vec!["age > 1"; 5000].join(" AND ")
        );
        assert_eq!(code(&ands), "54001");
    }

    #[test]
    fn the_largest_inputs_are_refused_without_overflowing() {
        // Near the byte limit: a chain as deep as the tokens allow.
        let deep = format!("SELECT {}", vec!["1"; MAX_TOKENS / 2 - 2].join("+"));
        assert_eq!(code(&deep), "54001");
        let many = format!("SELECT {}", vec!["1"; MAX_TOKENS].join(","));
        assert_eq!(code(&many), "54001");
        assert_eq!(code(&"x".repeat(MAX_STATEMENT_BYTES + 1)), "54001");
        let parens = format!("SELECT {}1{}", "(".repeat(500), ")".repeat(500));
        assert_eq!(code(&parens), "54001");
        let negations = format!("SELECT {}1", "-".repeat(5000));
        assert!(parse_bounded(&negations).is_err());
        let nots = format!("SELECT {}TRUE", "NOT ".repeat(5000));
        assert!(parse_bounded(&nots).is_err());
        let casts = format!("SELECT 1{}", "::int".repeat(20_000));
        assert_eq!(code(&casts), "54001");
    }

    #[test]
    fn ordinary_statements_pass() {
        let wide = format!(
            "SELECT COUNT(*) FROM visits WHERE age IN ({})",
            (0..10_000)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(parse_bounded(&wide).is_ok());
        let chain = format!("SELECT {}", vec!["1"; 100].join("+"));
        assert!(parse_bounded(&chain).is_ok());
        assert!(parse_bounded("SELECT ward, COUNT(*) FROM visits GROUP BY ward").is_ok());
    }
}
