//! One statement's context, taken once when it starts and passed down:
//! the config snapshot, who sent it, and what the session asks each query
//! to spend (ε, and how to split it). A
//! reload while the statement runs changes nothing it uses.

use std::sync::Arc;

use dpgate_config::{Config, User};
use dpgate_ledger::{now_ms, Amount, AuditEntry, Outcome};
use dpgate_sql::{Ask, Mechanism};

/// The most of a statement's text an audit entry keeps. Longer texts
/// (dpgate refuses statements over 1 MiB, but records the refusal) keep
/// their start and say how long they were, so no statement, refused or
/// not, can grow the log by more than this.
pub const MAX_AUDIT_STATEMENT_BYTES: usize = 16 * 1024;

fn kept_text(statement: &str) -> String {
    if statement.len() <= MAX_AUDIT_STATEMENT_BYTES {
        return statement.to_string();
    }
    let mut end = MAX_AUDIT_STATEMENT_BYTES;
    while !statement.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… [{} bytes in all; the audit log keeps the first {MAX_AUDIT_STATEMENT_BYTES}]",
        &statement[..end],
        statement.len()
    )
}

/// A statement's snapshot of everything it reads besides the data.
#[derive(Clone, Debug)]
pub struct Context {
    /// The config in force when the statement started.
    pub config: Arc<Config>,
    /// Login name.
    pub user: String,
    /// Where the statement came from (`ip:port`, or a front end's label).
    pub client: String,
    /// What one private query of this statement spends, and how.
    pub ask: Ask,
}

impl Context {
    /// A context over `config`. `auto` noise never picks Gaussian noise
    /// (which spends δ) for a user, or a dataset, with no δ to spend.
    pub fn new(config: Arc<Config>, user: &str, client: &str, mut ask: Ask) -> Context {
        let no_delta = config.user(user).is_some_and(|u| u.budget.delta <= 0.0)
            || config
                .privacy
                .dataset_budget
                .as_ref()
                .is_some_and(|b| b.delta <= 0.0);
        if ask.mechanism == Mechanism::Auto && no_delta {
            ask.mechanism = Mechanism::Laplace;
        }
        Context {
            config,
            user: user.to_string(),
            client: client.to_string(),
            ask,
        }
    }

    /// The user's declaration in this context's config (`None` once a
    /// reload removed them).
    pub fn account(&self) -> Option<&User> {
        self.config.user(&self.user)
    }

    /// The smallest and largest ε one query of this user may spend.
    pub fn epsilon_range(&self) -> (f64, f64) {
        let max = self.account().map_or(0.0, |u| u.max_epsilon_per_query);
        (self.config.privacy.min_epsilon_per_query, max)
    }

    /// A fresh audit entry for `statement`, stamped now, costing nothing.
    pub fn entry(&self, statement: &str) -> AuditEntry {
        AuditEntry {
            at_ms: now_ms(),
            user: self.user.clone(),
            client: self.client.clone(),
            statement: kept_text(statement),
            backend_sql: None,
            cost: Amount::default(),
            rho: 0.0,
            outcome: Outcome::Ok,
            code: None,
            detail: None,
            rows: None,
        }
    }
}
