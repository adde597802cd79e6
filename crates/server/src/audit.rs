//! Who sent a statement, and the audit entry each statement leaves. The
//! private path writes its own entries (inside the charge); every other
//! statement is recorded here from its outcome.

use dpgate_ledger::{now_ms, Amount, AuditEntry, Outcome as AuditOutcome};

use crate::wire::Outcome;

/// The analyst and the client address of a connection.
#[derive(Debug, Clone)]
pub(crate) struct Who {
    /// Login name.
    pub user: String,
    /// `ip:port` of the client.
    pub client: String,
}

impl Who {
    /// A fresh entry for `statement`, stamped now, costing nothing.
    pub fn entry(&self, statement: &str) -> AuditEntry {
        AuditEntry {
            at_ms: now_ms(),
            user: self.user.clone(),
            client: self.client.clone(),
            statement: statement.to_string(),
            backend_sql: None,
            cost: Amount::default(),
            outcome: AuditOutcome::Ok,
            code: None,
            detail: None,
            rows: None,
        }
    }
}

/// Fills in how a statement that spent nothing ended.
pub(crate) fn settle(entry: &mut AuditEntry, outcome: &Outcome) {
    match outcome {
        Outcome::Rows { rows, .. } => {
            entry.outcome = AuditOutcome::Answered;
            entry.rows = Some(rows.len() as i64);
        }
        Outcome::Encoded { rows, .. } => {
            entry.outcome = AuditOutcome::Answered;
            entry.rows = Some(rows.len() as i64);
        }
        Outcome::Tag(_) => entry.outcome = AuditOutcome::Ok,
        Outcome::Error(r) => {
            entry.outcome = AuditOutcome::Refused;
            entry.code = Some(r.code.to_string());
            entry.detail = Some(r.message.clone());
        }
    }
}
