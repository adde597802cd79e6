//! The audit entry each statement leaves. The
//! private path writes its own entries (inside the charge); every other
//! statement is recorded here from its outcome.

use dpgate_ledger::{AuditEntry, Outcome as AuditOutcome};

use crate::wire::Outcome;

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
