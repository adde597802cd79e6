//! Refusals: every query dpgate will not answer gets a PostgreSQL SQLSTATE,
//! a message that says why and a hint that says what to write instead.

use std::borrow::Cow;
use std::fmt;

/// SQLSTATE codes dpgate uses (see README "Error codes").
pub mod sqlstate {
    /// The SQL does not parse.
    pub const SYNTAX_ERROR: &str = "42601";
    /// A construct dpgate cannot make private (yet).
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// The table is not declared in proxy.toml.
    pub const UNDEFINED_TABLE: &str = "42P01";
    /// The column is not declared in proxy.toml.
    pub const UNDEFINED_COLUMN: &str = "42703";
    /// Raw rows, writes and DDL: never allowed.
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    /// A column name that matches columns of several tables.
    pub const AMBIGUOUS_COLUMN: &str = "42702";
    /// An ORDER BY or GROUP BY position outside the select list.
    pub const INVALID_COLUMN_REFERENCE: &str = "42P10";
    /// An aggregate or expression that is not allowed here.
    pub const GROUPING_ERROR: &str = "42803";
    /// A type mismatch (e.g. SUM over a text column).
    pub const DATATYPE_MISMATCH: &str = "42804";
    /// A bad value for a setting or parameter.
    pub const INVALID_PARAMETER_VALUE: &str = "22023";
    /// The query would exceed the user's privacy budget.
    pub const BUDGET_EXHAUSTED: &str = "53000";
    /// The backend failed after the charge; deliberately uninformative.
    pub const BACKEND_FAILED: &str = "58000";
    /// The user is not (or no longer) allowed in.
    pub const INVALID_AUTHORIZATION: &str = "28000";
    /// The ledger could not be read or written.
    pub const LEDGER_FAILED: &str = "58030";
    /// Unknown SET/SHOW parameter.
    pub const UNDEFINED_OBJECT: &str = "42704";
    /// undefined_function: no operator the query needs exists for a type.
    pub const UNDEFINED_FUNCTION: &str = "42883";
    /// A `$n` with no bound value.
    pub const UNDEFINED_PARAMETER: &str = "42P02";
    /// internal_error: a bug in dpgate; nothing was charged.
    pub const INTERNAL_ERROR: &str = "XX000";
    /// object_not_in_prerequisite_state: not ready yet (a synthetic fit
    /// running); retry later.
    pub const NOT_READY: &str = "55000";
    /// A statement beyond dpgate's size, depth or fan-out limits.
    pub const STATEMENT_TOO_COMPLEX: &str = "54001";
    /// A plan beyond a stated limit (noise scale, sensitivity, backend columns).
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    /// A name reserved for dpgate's own use.
    pub const RESERVED_NAME: &str = "42939";
}

/// A refusal with its SQLSTATE, message and hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Five-character SQLSTATE (dpgate's own, or PostgreSQL's for
    /// catalog queries).
    pub code: Cow<'static, str>,
    /// Why the statement is refused.
    pub message: String,
    /// What to write instead.
    pub hint: String,
}

impl Refusal {
    /// A refusal with the given code, message and hint.
    pub fn new(
        code: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Refusal {
            code: code.into(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// Shorthand for [`sqlstate::FEATURE_NOT_SUPPORTED`].
    pub fn unsupported(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Refusal::new(sqlstate::FEATURE_NOT_SUPPORTED, message, hint)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}); hint: {}", self.message, self.code, self.hint)
    }
}

impl std::error::Error for Refusal {}
