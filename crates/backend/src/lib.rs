//! The database behind dpgate. Connections are read-only, carry a
//! statement timeout, and are pooled; the only thing asked of them is the
//! planned query, whose single row of integer measurements comes back.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_postgres::{Client, NoTls};

/// Backend failures. Callers must not forward the detail to analysts
/// once a charge was made (it may depend on data); they log it.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Connecting failed.
    #[error("cannot connect to the backend: {0}")]
    Connect(tokio_postgres::Error),
    /// The query failed or timed out.
    #[error("backend query failed: {0}")]
    Query(tokio_postgres::Error),
    /// The query returned something other than one row of integers.
    #[error("backend returned an unexpected result: {0}")]
    Shape(String),
}

/// A pool of PostgreSQL connections.
pub struct Backend {
    url: String,
    statement_timeout_ms: u64,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
}

impl Backend {
    /// Connects once to check the URL, then keeps up to `pool_size` connections.
    pub async fn connect(config: &dpgate_config::Backend) -> Result<Backend, BackendError> {
        let backend = Backend {
            url: config.url.clone(),
            statement_timeout_ms: config.statement_timeout_ms,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(config.pool_size),
        };
        let first = backend.open().await?;
        backend.idle.lock().unwrap().push(first);
        Ok(backend)
    }

    async fn open(&self) -> Result<Client, BackendError> {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .map_err(BackendError::Connect)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("backend connection closed: {e}");
            }
        });
        client
            .batch_execute(&format!(
                "SET statement_timeout = {}; SET default_transaction_read_only = on; SET application_name = 'dpgate'",
                self.statement_timeout_ms
            ))
            .await
            .map_err(BackendError::Connect)?;
        Ok(client)
    }

    /// Runs `sql`, which must return one row of `count` bigint columns.
    pub async fn measure(&self, sql: &str, count: usize) -> Result<Vec<i64>, BackendError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .expect("semaphore never closed");
        let pooled = self.idle.lock().unwrap().pop();
        let client = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => self.open().await?,
        };
        let timeout = Duration::from_millis(self.statement_timeout_ms.saturating_add(5_000));
        let result = tokio::time::timeout(timeout, client.query_one(sql, &[])).await;
        let row = match result {
            Ok(Ok(row)) => row,
            Ok(Err(e)) => {
                if !client.is_closed() {
                    self.idle.lock().unwrap().push(client);
                }
                return Err(BackendError::Query(e));
            }
            Err(_) => return Err(BackendError::Shape("timed out".into())),
        };
        self.idle.lock().unwrap().push(client);
        (0..count)
            .map(|i| {
                row.try_get::<_, Option<i64>>(i)
                    .map(|v| v.unwrap_or(0))
                    .map_err(|e| BackendError::Shape(e.to_string()))
            })
            .collect()
    }
}
