//! A small pool of PostgreSQL connections, each set up once with session
//! settings (statement timeout, read-only) when opened.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_postgres::Client;

use crate::tls::Outbound;

/// Up to `size` connections to one database.
pub struct Pool {
    outbound: Outbound,
    setup: String,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
}

/// A connection taken from the pool; it goes back when dropped, unless
/// it was closed or [`Pooled::discard`]ed.
pub struct Pooled<'a> {
    client: Option<Client>,
    pool: &'a Pool,
    _permit: SemaphorePermit<'a>,
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

    async fn open(&self) -> Result<Client, tokio_postgres::Error> {
        let client = self.outbound.connect().await?;
        if !self.setup.is_empty() {
            client.batch_execute(&self.setup).await?;
        }
        Ok(client)
    }

    /// Waits for a free slot and returns an open connection.
    pub async fn get(&self) -> Result<Pooled<'_>, tokio_postgres::Error> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closed");
        let pooled = self.idle.lock().unwrap().pop();
        let client = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => self.open().await?,
        };
        Ok(Pooled {
            client: Some(client),
            pool: self,
            _permit: permit,
        })
    }
}

impl Pooled<'_> {
    /// Drops the connection instead of returning it (its state is unknown,
    /// e.g. after a timeout in the middle of a query).
    pub fn discard(mut self) {
        self.client = None;
    }
}

impl Deref for Pooled<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if !client.is_closed() {
                self.pool.idle.lock().unwrap().push(client);
            }
        }
    }
}
