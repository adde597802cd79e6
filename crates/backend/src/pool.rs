//! A small pool of PostgreSQL connections, each set up once with session
//! settings (statement timeout, read-only) when opened, and each keeping
//! the statements it was sent more than once prepared.

use std::num::NonZeroUsize;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use lru::LruCache;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Statement};

use crate::tls::Outbound;

/// Up to `size` connections to one database.
pub struct Pool {
    outbound: Outbound,
    setup: String,
    idle: Mutex<Vec<Conn>>,
    permits: Semaphore,
}

/// Statement texts one connection remembers: the most recently used
/// ones, bounding what the server holds per session.
const STATEMENTS_PER_CONNECTION: usize = 32;

/// An open connection and what it remembers of the statements sent on it.
struct Conn {
    client: Client,
    /// Texts run on this connection: `None` once seen, the prepared
    /// statement from the second time on. A text seen once costs nothing
    /// but its slot (an ad hoc query is not worth an extra round trip to
    /// prepare); a repeated one skips the server's parsing and planning.
    statements: LruCache<String, Option<Statement>>,
}

/// A connection taken from the pool; it goes back when dropped, unless
/// it was closed, or dropped between [`Pooled::begin`] and
/// [`Pooled::finished`].
pub struct Pooled<'a> {
    conn: Option<Conn>,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
    /// Whether the connection's state is known (no request abandoned
    /// midway), so that it may serve the next request.
    reusable: bool,
}

impl Pool {
    /// A pool for `config`; every new connection first runs `setup`.
    /// Opens one connection to check that the database answers.
    pub async fn connect(
        outbound: Outbound,
        setup: impl Into<String>,
        size: usize,
    ) -> Result<Pool, tokio_postgres::Error> {
        let pool = Pool {
            outbound,
            setup: setup.into(),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size.max(1)),
        };
        let first = pool.open().await?;
        pool.idle.lock().unwrap().push(first);
        Ok(pool)
    }

    /// The connection settings (host, port, user, database).
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.outbound.config
    }

    async fn open(&self) -> Result<Conn, tokio_postgres::Error> {
        let client = self.outbound.connect().await?;
        if !self.setup.is_empty() {
            client.batch_execute(&self.setup).await?;
        }
        let capacity = NonZeroUsize::new(STATEMENTS_PER_CONNECTION).expect("not zero");
        Ok(Conn {
            client,
            statements: LruCache::new(capacity),
        })
    }

    /// Waits for a free slot and returns an open connection.
    pub async fn get(&self) -> Result<Pooled<'_>, tokio_postgres::Error> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closed");
        let pooled = self.idle.lock().unwrap().pop();
        let conn = match pooled {
            Some(c) if !c.client.is_closed() => c,
            _ => self.open().await?,
        };
        Ok(Pooled {
            conn: Some(conn),
            pool: self,
            _permit: permit,
            reusable: true,
        })
    }
}

impl Pooled<'_> {
    /// Marks the start of a request whose abandonment would leave the
    /// connection in an unknown state: if this is dropped before
    /// [`Pooled::finished`] (the request timed out, or its caller went
    /// away), the connection is closed instead of returned. Its session
    /// then ends in the server, with whatever the request left there (a
    /// statement prepared under a name no one will close, a query still
    /// running), and a cancel aimed at it cannot reach anyone else's.
    pub fn begin(&mut self) {
        self.reusable = false;
    }

    /// Marks the request begun by [`Pooled::begin`] as over, one way or
    /// another: the connection may serve the next one.
    pub fn finished(&mut self) {
        self.reusable = true;
    }

    /// Closes the connection now rather than returning it to the pool:
    /// nothing of it runs in the server, but its state is not known.
    pub fn close(mut self) {
        self.conn = None;
    }

    /// `sql` prepared on this connection if it was run here before
    /// (`None` the first time: run it unnamed, in one round trip), with
    /// its parameters of `types` (the server infers the rest, so a caller
    /// binding typed values names their types, as it did running it
    /// unnamed). The statement stays prepared until it is the least
    /// recently used of [`STATEMENTS_PER_CONNECTION`]; dropping it closes
    /// it in the server.
    pub async fn prepared(
        &mut self,
        sql: &str,
        types: &[Type],
    ) -> Result<Option<Statement>, tokio_postgres::Error> {
        let conn = self.conn.as_mut().expect("present until dropped");
        match conn.statements.get(sql) {
            Some(Some(statement)) => Ok(Some(statement.clone())),
            Some(None) => {
                let statement = conn.client.prepare_typed(sql, types).await?;
                conn.statements
                    .put(sql.to_string(), Some(statement.clone()));
                Ok(Some(statement))
            }
            None => {
                conn.statements.put(sql.to_string(), None);
                Ok(None)
            }
        }
    }

    /// Forgets `sql`'s prepared statement (after an error that may mean
    /// the server no longer holds it as it was).
    pub fn forget(&mut self, sql: &str) {
        if let Some(conn) = self.conn.as_mut() {
            conn.statements.pop(sql);
        }
    }
}

impl Deref for Pooled<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.conn.as_ref().expect("present until dropped").client
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.conn.as_mut().expect("present until dropped").client
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        if conn.client.is_closed() {
            return;
        }
        if self.reusable {
            self.pool.idle.lock().unwrap().push(conn);
            return;
        }
        // Abandoned midway: what it sent still runs in the server (a
        // query, or a statement waiting for a lock), and its session
        // stays open until that ends, outside the pool's bound. Cancel
        // it; the session is closed, so the cancel reaches no one else's
        // statement. (Dropped outside a runtime, as the process ends, the
        // session ends with it.)
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        tracing::info!("cancelling an abandoned request");
        runtime.spawn(self.pool.outbound.cancel(conn.client.cancel_token()));
    }
}
