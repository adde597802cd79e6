//! Group commit for the SQLite ledger: writes that arrive while another
//! commit holds the connection wait in a queue, and whoever takes the
//! connection next runs all of them in one transaction, each inside a
//! savepoint of its own, and commits once. Every write is still on disk
//! before its caller hears back (one `fsync` now covers many), a write
//! that fails (an exhausted budget) rolls back only itself, and the
//! writes run one after another in the transaction, so each charge reads
//! the budgets as the charges before it left them.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;

use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::LedgerError;

/// Delivers a queued write's outcome once its transaction has committed
/// (or failed to).
type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

/// A queued write: runs in the group's transaction (`None` when the
/// transaction could not begin), setting the flag if it could not undo
/// its own failure, and returns how to deliver its outcome.
type Job = Box<dyn FnOnce(Option<(&Transaction<'_>, &mut bool)>) -> Completion + Send>;

/// Writes waiting for the connection.
#[derive(Default)]
pub(crate) struct Queue {
    jobs: Mutex<Vec<Job>>,
}

impl Queue {
    /// Runs `write` in a transaction on `conn` that commits before this
    /// returns, together with whatever other writes queued meanwhile.
    pub fn write<T: Send + 'static>(
        &self,
        conn: &Mutex<Connection>,
        write: impl FnOnce(&Transaction<'_>) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let (reply, outcome) = sync_channel::<Result<T, LedgerError>>(1);
        self.push(Box::new(move |tx| match tx {
            Some((tx, poisoned)) => {
                let out = in_savepoint(tx, poisoned, write);
                Box::new(move |commit| deliver(reply, commit, out))
            }
            None => Box::new(move |commit| deliver(reply, commit, Err(not_run()))),
        }));
        {
            // Whoever gets the connection commits everything queued so far
            // (ours included, unless an earlier holder already did).
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            let jobs = std::mem::take(&mut *self.lock());
            if !jobs.is_empty() {
                commit_group(&mut conn, jobs);
            }
        }
        outcome.recv().unwrap_or_else(|_| Err(not_run()))
    }

    fn push(&self, job: Job) {
        self.lock().push(job);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Job>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs `jobs` in one immediate transaction and delivers each outcome
/// after the commit.
fn commit_group(conn: &mut Connection, jobs: Vec<Job>) {
    match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => {
            let mut poisoned = false;
            let completions: Vec<Completion> = jobs
                .into_iter()
                .map(|job| job(Some((&tx, &mut poisoned))))
                .collect();
            // A write whose failure could not be undone must not be kept
            // half-done: then nothing of the group is (drop rolls back).
            let commit = match poisoned {
                false => tx.commit().map_err(|e| e.to_string()),
                true => Err("a failed write could not be rolled back".to_string()),
            };
            for done in completions {
                done(commit.clone());
            }
        }
        Err(e) => {
            let e = e.to_string();
            for job in jobs {
                job(None)(Err(e.clone()));
            }
        }
    }
}

/// `write` inside a savepoint: rolled back alone if it fails; if that
/// cannot be done, `poisoned` is set and the whole group is dropped.
fn in_savepoint<T>(
    tx: &Transaction<'_>,
    poisoned: &mut bool,
    write: impl FnOnce(&Transaction<'_>) -> Result<T, LedgerError>,
) -> Result<T, LedgerError> {
    if let Err(e) = tx.execute_batch("SAVEPOINT dpgate_write") {
        *poisoned = true;
        return Err(e.into());
    }
    let out = write(tx);
    let close = match out {
        Ok(_) => "RELEASE dpgate_write",
        Err(_) => "ROLLBACK TO dpgate_write; RELEASE dpgate_write",
    };
    if let Err(e) = tx.execute_batch(close) {
        *poisoned = true;
        return Err(e.into());
    }
    out
}

fn deliver<T>(
    reply: SyncSender<Result<T, LedgerError>>,
    commit: Result<(), String>,
    out: Result<T, LedgerError>,
) {
    let result = match commit {
        // A write that failed was rolled back on its own; the rest stand.
        Ok(()) => out,
        // Nothing of the group was kept, whatever each write returned.
        Err(e) => Err(LedgerError::Storage(format!("ledger commit failed: {e}"))),
    };
    let _ = reply.send(result);
}

fn not_run() -> LedgerError {
    LedgerError::Storage("the ledger write could not run".into())
}
