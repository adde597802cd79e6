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

    /// Runs `sql`, which returns one row per group: `keys` key columns as
    /// text, then `count` integer columns rendered as text (so that no
    /// cast can fail in the backend).
    pub async fn fetch_groups(
        &self,
        sql: &str,
        keys: usize,
        count: usize,
    ) -> Result<Vec<Group>, BackendError> {
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
        let result = tokio::time::timeout(timeout, client.query(sql, &[])).await;
        let rows = match result {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                if !client.is_closed() {
                    self.idle.lock().unwrap().push(client);
                }
                return Err(BackendError::Query(e));
            }
            Err(_) => return Err(BackendError::Shape("timed out".into())),
        };
        self.idle.lock().unwrap().push(client);
        rows.iter()
            .map(|row| {
                let text = |i: usize| {
                    row.try_get::<_, Option<&str>>(i)
                        .map_err(|e| BackendError::Shape(e.to_string()))
                };
                Ok(Group {
                    keys: (0..keys)
                        .map(|i| text(i).map(|v| v.map(str::to_string)))
                        .collect::<Result<_, _>>()?,
                    values: (keys..keys + count)
                        .map(|i| text(i).and_then(|v| parse_measurement(v.unwrap_or("0"))))
                        .collect::<Result<_, _>>()?,
                })
            })
            .collect()
    }
}

/// One row of a grouped backend query.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    /// Key values as text (`None` is NULL).
    pub keys: Vec<Option<String>>,
    /// Raw measured values.
    pub values: Vec<i64>,
}

/// Parses an integer measurement rendered as text (bigint, numeric or
/// float8 text), saturating at the i64 range: a saturated value only
/// means the clamped sum is beyond any useful noise scale.
pub fn parse_measurement(text: &str) -> Result<i64, BackendError> {
    let text = text.trim();
    if let Ok(v) = text.parse::<i64>() {
        return Ok(v);
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_nan() => Ok(0),
        Ok(f) => Ok(f.round().clamp(i64::MIN as f64, i64::MAX as f64) as i64),
        Err(_) => Err(BackendError::Shape(format!("not a number: {text:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_measurement;

    #[test]
    fn measurements_parse_and_saturate() {
        assert_eq!(parse_measurement("42").unwrap(), 42);
        assert_eq!(parse_measurement("-7").unwrap(), -7);
        assert_eq!(
            parse_measurement("123456789012345678901234567890").unwrap(),
            i64::MAX
        );
        assert_eq!(parse_measurement("1.5e+20").unwrap(), i64::MAX);
        assert_eq!(parse_measurement("-1e30").unwrap(), i64::MIN);
        assert_eq!(parse_measurement("12.0").unwrap(), 12);
        assert!(parse_measurement("x").is_err());
    }
}
