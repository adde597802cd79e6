//! The database behind dpgate. Connections are read-only, carry a
//! statement timeout, and are pooled; the only thing asked of them is the
//! planned query, whose single row of integer measurements comes back.

pub mod pool;

use std::time::Duration;

pub use pool::{Pool, Pooled};

/// Backend failures. Callers must not forward the detail to analysts
/// once a charge was made (it may depend on data); they log it.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Connecting failed.
    #[error("cannot connect to the backend: {0}")]
    Connect(tokio_postgres::Error),
    /// The query failed.
    #[error("backend query failed: {0}")]
    Query(tokio_postgres::Error),
    /// The query returned something other than one row of integers.
    #[error("backend returned an unexpected result: {0}")]
    Shape(String),
    /// The query did not finish within the statement timeout.
    #[error("backend query timed out")]
    Timeout,
}

/// The read-only pool of connections to the data.
pub struct Backend {
    pool: Pool,
    statement_timeout_ms: u64,
}

impl Backend {
    /// Connects once to check the URL, then keeps up to `pool_size` connections.
    pub async fn connect(config: &dpgate_config::Backend) -> Result<Backend, BackendError> {
        let url: tokio_postgres::Config = config.url.parse().map_err(BackendError::Connect)?;
        let setup = format!(
            "SET statement_timeout = {}; SET default_transaction_read_only = on; SET application_name = 'dpgate'",
            config.statement_timeout_ms
        );
        Ok(Backend {
            pool: Pool::connect(url, setup, config.pool_size)
                .await
                .map_err(BackendError::Connect)?,
            statement_timeout_ms: config.statement_timeout_ms,
        })
    }

    /// The connection settings, from which the catalog database is derived.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The type PostgreSQL gives `column` of `table` (`schema.name`), as
    /// `format_type` writes it; catalog metadata only, never data.
    pub async fn column_type(&self, schema: &str, table: &str, column: &str) -> Option<String> {
        let client = self.pool.get().await.ok()?;
        let row = client
            .query_opt(
                "SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) FROM pg_catalog.pg_attribute a \
                 JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 AND NOT a.attisdropped",
                &[&schema, &table, &column],
            )
            .await
            .ok()??;
        row.try_get(0).ok()
    }

    /// Runs `sql`, which returns one row per group: `keys` key columns as
    /// text, then `count` integer columns rendered as text (so that no
    /// cast can fail in the backend). If the returned future is dropped
    /// (the analyst cancelled), the backend query is cancelled too.
    pub async fn fetch_groups(
        &self,
        sql: &str,
        keys: usize,
        count: usize,
    ) -> Result<Vec<Group>, BackendError> {
        let client = self.pool.get().await.map_err(BackendError::Connect)?;
        let timeout = Duration::from_millis(self.statement_timeout_ms.saturating_add(5_000));
        let mut running = CancelOnDrop(Some(client.cancel_token()));
        let rows = match tokio::time::timeout(timeout, client.query(sql, &[])).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => return Err(BackendError::Query(e)),
            Err(_) => {
                client.discard();
                return Err(BackendError::Timeout);
            }
        };
        running.0 = None;
        drop(client);
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

/// Cancels the backend query it guards unless disarmed: a dropped query
/// future would otherwise leave the query running in PostgreSQL.
struct CancelOnDrop(Option<tokio_postgres::CancelToken>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(token) = self.0.take() {
            tracing::info!("cancelling the backend query");
            tokio::spawn(async move {
                let _ = token.cancel_query(tokio_postgres::NoTls).await;
            });
        }
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
