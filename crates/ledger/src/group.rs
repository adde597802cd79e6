//! Group commit for the SQLite ledger: writes that arrive while another
//! commit holds the connection wait in a queue, and whoever takes the
//! connection next runs all of them in one transaction, each inside a
//! savepoint of its own, and commits once. A write that fails (an
//! exhausted budget) rolls back only itself, and the writes run one
//! after another in the transaction, so each charge reads the budgets as
//! the charges before it left them.
//!
//! Charges and audit entries are synced to the disk before their caller
//! hears back (one `fsync` now covers a whole group). A statement's
//! outcome (and its kept release) is written to the WAL without its own
//! `fsync` ([`Sync::Os`]): it survives a crash of dpgate at once, and
//! power loss from the next synced commit on, since the WAL is synced in
//! order. Power loss in between can only leave a charged statement
//! marked `charged` instead of `answered` and forget its free repeat, so
//! the next identical query is charged again: never a lost charge.

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

/// How far a write must be on disk when its caller hears back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sync {
    /// Synced to the disk (`synchronous = FULL`): survives power loss.
    Disk,
    /// Written to the WAL file but not synced (`synchronous = NORMAL`):
    /// survives a crash of dpgate, and reaches the disk with the next
    /// synced commit (the WAL is synced in order).
    Os,
}

/// Writes waiting for the connection.
#[derive(Default)]
pub(crate) struct Queue {
    jobs: Mutex<Vec<(Sync, Job)>>,
    /// The connection's current `synchronous` setting (`None`: unknown).
    mode: Mutex<Option<Sync>>,
}

impl Queue {
    /// Runs `write` in a transaction on `conn` that commits before this
    /// returns, together with whatever other writes queued meanwhile.
    pub fn write<T: Send + 'static>(
        &self,
        conn: &Mutex<Connection>,
        sync: Sync,
        write: impl FnOnce(&Transaction<'_>) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let (reply, outcome) = sync_channel::<Result<T, LedgerError>>(1);
        self.push(
            sync,
            Box::new(move |tx| match tx {
                Some((tx, poisoned)) => {
                    let out = in_savepoint(tx, poisoned, write);
                    Box::new(move |commit| deliver(reply, commit, out))
                }
                None => Box::new(move |commit| deliver(reply, commit, Err(not_run()))),
            }),
        );
        {
            // Whoever gets the connection commits everything queued so far
            // (ours included, unless an earlier holder already did).
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            let jobs = std::mem::take(&mut *self.lock());
            if !jobs.is_empty() {
                // The group is synced if any of its writes must be.
                let sync = match jobs.iter().any(|(s, _)| *s == Sync::Disk) {
                    true => Sync::Disk,
                    false => Sync::Os,
                };
                self.set_mode(&conn, sync);
                commit_group(&mut conn, jobs.into_iter().map(|(_, j)| j).collect());
            }
        }
        outcome.recv().unwrap_or_else(|_| Err(not_run()))
    }

    fn push(&self, sync: Sync, job: Job) {
        self.lock().push((sync, job));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Sync, Job)>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the connection's `synchronous` for the next commit; on any
    /// doubt it is set to FULL.
    pub fn set_mode(&self, conn: &Connection, sync: Sync) {
        let mut mode = self.mode.lock().unwrap_or_else(|p| p.into_inner());
        if *mode == Some(sync) {
            return;
        }
        let value = match sync {
            Sync::Disk => "FULL",
            Sync::Os => "NORMAL",
        };
        *mode = match conn.pragma_update(None, "synchronous", value) {
            Ok(()) => Some(sync),
            Err(_) => {
                let _ = conn.pragma_update(None, "synchronous", "FULL");
                None
            }
        };
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
    if let Err(e) = tx
        .prepare_cached("SAVEPOINT dpgate_write")
        .and_then(|mut s| s.execute([]))
    {
        *poisoned = true;
        return Err(e.into());
    }
    let out = write(tx);
    let closed = match out {
        Ok(_) => tx
            .prepare_cached("RELEASE dpgate_write")
            .and_then(|mut s| s.execute([])),
        Err(_) => tx
            .execute_batch("ROLLBACK TO dpgate_write; RELEASE dpgate_write")
            .map(|()| 0),
    };
    if let Err(e) = closed {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A group with a charge in it is synced (FULL), whatever the group
    /// before it was; a group of outcomes only is not (NORMAL). A write
    /// that fails rolls back alone, and the rest of its group commits.
    #[test]
    fn groups_sync_as_their_strictest_write_needs() {
        let conn = Mutex::new(Connection::open_in_memory().unwrap());
        conn.lock()
            .unwrap()
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .unwrap();
        let queue = Queue::default();
        let synchronous = |conn: &Mutex<Connection>| -> i64 {
            conn.lock()
                .unwrap()
                .query_row("PRAGMA synchronous", [], |r| r.get(0))
                .unwrap()
        };
        let insert = |x: i64| {
            move |tx: &Transaction<'_>| {
                tx.execute("INSERT INTO t VALUES (?1)", [x])?;
                Ok(())
            }
        };
        queue.write(&conn, Sync::Os, insert(1)).unwrap();
        assert_eq!(synchronous(&conn), 1, "NORMAL");
        queue.write(&conn, Sync::Disk, insert(2)).unwrap();
        assert_eq!(synchronous(&conn), 2, "FULL");
        let failed = queue.write(&conn, Sync::Disk, |tx| {
            tx.execute("INSERT INTO t VALUES (3)", [])?;
            Err::<(), _>(LedgerError::Storage("refused".into()))
        });
        assert!(failed.is_err());
        let rows: Vec<i64> = conn
            .lock()
            .unwrap()
            .prepare("SELECT x FROM t ORDER BY x")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, [1, 2]);
    }
}
