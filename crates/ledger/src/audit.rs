//! The audit log: one entry per statement. Charged statements write their
//! entry inside the charge transaction; everything else is queued here and
//! written in batches by one background task, so browsing a catalog costs
//! no disk flush per statement.

use tokio::sync::{mpsc, oneshot};

use crate::units::Amount;
use crate::{blocking, Store};

/// How a statement ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Charged; the answer was not yet recorded (if it stays so, dpgate
    /// stopped before the answer was complete).
    Charged,
    /// Answered: a private release, a catalog answer or a constant.
    Answered,
    /// Answered from the cache of earlier releases, at no cost.
    Cached,
    /// Refused before anything was charged.
    Refused,
    /// Failed after the charge (backend error or timeout); the charge stands.
    Failed,
    /// A session command (SET, SHOW, BEGIN, …).
    Ok,
    /// An administrator granted budget.
    Granted,
    /// An administrator reset the account.
    Reset,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Charged => "charged",
            Outcome::Answered => "answered",
            Outcome::Cached => "cached",
            Outcome::Refused => "refused",
            Outcome::Failed => "failed",
            Outcome::Ok => "ok",
            Outcome::Granted => "granted",
            Outcome::Reset => "reset",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Charged,
            Outcome::Answered,
            Outcome::Cached,
            Outcome::Refused,
            Outcome::Failed,
            Outcome::Ok,
            Outcome::Granted,
            Outcome::Reset,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// One statement, as the data owner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// When (ms since the epoch).
    pub at_ms: i64,
    /// The analyst (or, for grants and resets, the account changed;
    /// the dataset account is the empty name).
    pub user: String,
    /// The client's address, or who ran an admin command.
    pub client: String,
    /// The SQL text as received.
    pub statement: String,
    /// The SQL sent to the backend, for private queries.
    pub backend_sql: Option<String>,
    /// Privacy loss charged (zero unless charged).
    pub cost: Amount,
    /// zCDP ρ of the Gaussian noise in this release (0 for Laplace): a
    /// record of what `cost` covers, not a budget of its own.
    pub rho: f64,
    /// How it ended.
    pub outcome: Outcome,
    /// SQLSTATE of a refusal or failure.
    pub code: Option<String>,
    /// Why it was refused or failed.
    pub detail: Option<String>,
    /// Rows released.
    pub rows: Option<i64>,
}

/// A stored entry with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    /// Position in the log.
    pub id: i64,
    /// The entry.
    pub entry: AuditEntry,
}

/// Which entries to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only this user.
    pub user: Option<String>,
    /// Only entries at or after this instant (ms since the epoch).
    pub since_ms: Option<i64>,
    /// At most this many, the most recent.
    pub limit: Option<u64>,
}

/// The filter's limit as SQL wants it (no limit: the largest integer).
pub(crate) fn limit(filter: &AuditFilter) -> i64 {
    filter
        .limit
        .map(|l| i64::try_from(l).unwrap_or(i64::MAX))
        .unwrap_or(i64::MAX)
}

enum Message {
    Entry(Box<AuditEntry>),
    Flush(oneshot::Sender<()>),
}

/// The background writer of non-charged entries.
pub(crate) struct Writer {
    queue: mpsc::Sender<Message>,
}

/// Entries written in one transaction at most.
const BATCH: usize = 512;

impl Writer {
    pub fn start(store: Store) -> Writer {
        let (queue, mut inbox) = mpsc::channel::<Message>(4 * BATCH);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            let mut waiting = Vec::new();
            while let Some(first) = inbox.recv().await {
                let mut next = Some(first);
                while let Some(message) = next {
                    match message {
                        Message::Entry(e) => batch.push(*e),
                        Message::Flush(done) => waiting.push(done),
                    }
                    next = match batch.len() < BATCH {
                        true => inbox.try_recv().ok(),
                        false => None,
                    };
                }
                if !batch.is_empty() {
                    if let Err(e) = write(&store, std::mem::take(&mut batch)).await {
                        tracing::error!("audit entries could not be written: {e}");
                    }
                }
                for done in waiting.drain(..) {
                    let _ = done.send(());
                }
            }
        });
        Writer { queue }
    }

    pub async fn record(&self, entry: AuditEntry) {
        if self
            .queue
            .send(Message::Entry(Box::new(entry)))
            .await
            .is_err()
        {
            tracing::error!("the audit writer stopped; an entry was lost");
        }
    }

    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write(store: &Store, batch: Vec<AuditEntry>) -> Result<(), crate::LedgerError> {
    dispatch!(store, insert_audit(&batch))
}
