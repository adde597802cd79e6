//! The Apache Spark backend, through Spark Connect: one gRPC channel and
//! one server session, shared by every query (Spark runs concurrent
//! operations of a session side by side). Each planned query is sent as
//! SQL in Spark's dialect and its Arrow batches are read back as text.
//! A query that outlives the statement timeout, or whose future is
//! dropped (the analyst cancelled), is interrupted in the server.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, RecordBatch};
use dpgate_sql::{Dialect, GroupSink};
use futures::StreamExt;
use spark_connect_core::{ChannelBuilder, RetryPolicy, SparkConnectClient};
use spark_connect_proto as pb;

use crate::{parse_row, Backend, BackendError, BackendQuery};

/// Session settings every rendered statement relies on, set once when
/// the session opens: ANSI semantics (the dialect's totality argument is
/// made for them), backslash escapes read in strings and no `${var}`
/// substitution (what [`Dialect::finish`] writes for), and UTC (dates and
/// timestamps read and print as PostgreSQL's do with `TimeZone = UTC`).
const SESSION: [(&str, &str); 5] = [
    ("spark.sql.ansi.enabled", "true"),
    ("spark.sql.parser.escapedStringLiterals", "false"),
    ("spark.sql.variable.substitute", "false"),
    ("spark.sql.session.timeZone", "UTC"),
    ("spark.sql.caseSensitive", "false"),
];

/// One server session: the client bound to it and the id the server gave
/// it. The id goes with every request, so that a session the server
/// dropped and made anew (with default settings, after its idle timeout
/// or a restart) is refused rather than used.
#[derive(Clone)]
struct Session {
    client: Arc<SparkConnectClient>,
    server_side_id: Option<String>,
}

/// A Spark Connect session that runs dpgate's own SELECTs.
pub struct SparkBackend {
    session: std::sync::Mutex<Session>,
    statement_timeout: Duration,
}

impl SparkBackend {
    /// Connects to `url` (`sc://host:port`), opens a session with the
    /// settings above and checks that it answers.
    pub async fn connect(
        url: &str,
        config: &dpgate_config::Backend,
    ) -> Result<SparkBackend, BackendError> {
        let at = |e: String| {
            BackendError::Connect(format!(
                "Spark Connect at {}: {e}",
                dpgate_config::redact_password(url)
            ))
        };
        let mut builder = ChannelBuilder::parse(url).map_err(|e| at(e.to_string()))?;
        // Spark keys a session by user and session id: every request
        // (settings, queries, interrupts) must name the same user.
        if builder.user_id().is_none() {
            builder.set("user_id", "dpgate");
        }
        let mut client = SparkConnectClient::connect(&builder)
            .await
            .map_err(|e| at(e.to_string()))?;
        // The client's default retries an unreachable server for up to an
        // hour; dpgate reports it within seconds instead.
        client.set_retry_policy(RetryPolicy {
            max_retries: Some(3),
            initial_backoff_ms: 200,
            max_backoff_ms: Some(2_000),
            max_retry_exception_elapsed_time_ms: Some(10_000),
            ..RetryPolicy::default()
        });
        let statement_timeout = Duration::from_millis(config.statement_timeout_ms);
        let session = open(Arc::new(client), statement_timeout)
            .await
            .map_err(|e| at(e.to_string()))?;
        Ok(SparkBackend {
            session: std::sync::Mutex::new(session),
            statement_timeout,
        })
    }

    /// Ends the server session, as the server does after its idle
    /// timeout; the next query opens a new one with the same settings.
    pub async fn close_session(&self) -> Result<(), BackendError> {
        let client = self.current().client;
        client.release_session().await.map_err(query_error)
    }

    fn current(&self) -> Session {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `sql` (already in Spark's spelling) and hands each row's cells
    /// to `row` until it returns false. If the server no longer knows the
    /// session, a new one is opened (settings first) and `sql` runs there.
    async fn run(
        &self,
        sql: &str,
        row: &mut (dyn FnMut(Vec<Option<String>>) -> Result<bool, BackendError> + Send),
    ) -> Result<(), BackendError> {
        let session = self.current();
        let mut delivered = false;
        let mut counted = |cells: Vec<Option<String>>| {
            delivered = true;
            row(cells)
        };
        let first = run_on(&session, sql, self.statement_timeout, &mut counted).await;
        match first {
            // The server's error class for a session it no longer has (not
            // text quoted inside another error), before any row was read.
            Err(BackendError::Query(message))
                if message.starts_with("[INVALID_HANDLE.SESSION_") && !delivered =>
            {
                tracing::warn!(
                    "the Spark session ended on the server ({message}); opening a new one"
                );
                let fresh = open(
                    Arc::new(session.client.with_new_session_id()),
                    self.statement_timeout,
                )
                .await?;
                *self.session.lock().unwrap_or_else(|e| e.into_inner()) = fresh.clone();
                run_on(&fresh, sql, self.statement_timeout, row)
                    .await
                    .map(|_| ())
            }
            outcome => outcome.map(|_| ()),
        }
    }

    /// Runs data-owner statements (DDL, loads; standard quoting) one by
    /// one in this session. For tooling, tests and benches that prepare
    /// data: dpgate's query path runs nothing but its planned SELECTs.
    pub async fn execute(&self, statements: &[String]) -> Result<(), BackendError> {
        for sql in statements {
            self.rows(sql).await?;
        }
        Ok(())
    }

    /// Every row of `sql` (written with standard quoting) as text cells.
    pub async fn rows(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, BackendError> {
        let mut rows = Vec::new();
        self.run(&Dialect::Spark.finish(sql.to_string()), &mut |cells| {
            rows.push(cells);
            Ok(true)
        })
        .await?;
        Ok(rows)
    }
}

/// `client`'s session set up with [`SESSION`], and the server's id for it.
async fn open(client: Arc<SparkConnectClient>, timeout: Duration) -> Result<Session, BackendError> {
    for (key, value) in SESSION {
        client.set_config(key, value).await.map_err(query_error)?;
    }
    let mut session = Session {
        client,
        server_side_id: None,
    };
    let id = run_on(&session, "SELECT 1", timeout, &mut |_| Ok(true)).await?;
    session.server_side_id = id;
    // Read back under the server's id: a session the server made anew
    // between the settings and the id would not have them.
    for (key, value) in SESSION {
        let mut kept = None;
        run_on(&session, &format!("SET {key}"), timeout, &mut |cells| {
            kept = cells.get(1).cloned().flatten();
            Ok(true)
        })
        .await?;
        if kept.as_deref() != Some(value) {
            return Err(BackendError::Connect(format!(
                "the Spark session has {key} = {kept:?}, not {value}"
            )));
        }
    }
    Ok(session)
}

/// Runs `sql` on `session`, handing each row's cells to `row` until it
/// returns false; returns the server's id for the session. The operation
/// is interrupted unless every row was read: when the sink has enough,
/// when reading fails, when `timeout` passes, and when the future is
/// dropped (a gRPC stream needs no draining to be reused).
async fn run_on(
    session: &Session,
    sql: &str,
    timeout: Duration,
    row: &mut (dyn FnMut(Vec<Option<String>>) -> Result<bool, BackendError> + Send),
) -> Result<Option<String>, BackendError> {
    let client = &session.client;
    let operation_id = uuid::Uuid::new_v4().to_string();
    let request = pb::ExecutePlanRequest {
        session_id: client.session_id().to_string(),
        client_observed_server_side_session_id: session.server_side_id.clone(),
        user_context: Some(pb::UserContext {
            user_id: client.user_id().unwrap_or_default().to_string(),
            ..Default::default()
        }),
        operation_id: Some(operation_id.clone()),
        plan: Some(pb::Plan {
            op_type: Some(pb::plan::OpType::Root(pb::Relation {
                common: None,
                rel_type: Some(pb::relation::RelType::Sql(pb::Sql {
                    query: sql.to_string(),
                    ..Default::default()
                })),
            })),
        }),
        client_type: Some("dpgate".into()),
        ..Default::default()
    };
    let mut running = InterruptOnDrop(Some((client.clone(), operation_id)));
    let mut server_side_id = None;
    // Whether every row was read.
    let read = async {
        let mut stream = client.execute_plan(request).await.map_err(query_error)?;
        while let Some(message) = stream.next().await {
            let message = message
                .map_err(|s| query_error(spark_connect_core::SparkError::from_grpc_status(s)))?;
            if server_side_id.is_none() && !message.server_side_session_id.is_empty() {
                server_side_id = Some(message.server_side_session_id.clone());
            }
            let Some(pb::execute_plan_response::ResponseType::ArrowBatch(batch)) =
                message.response_type
            else {
                continue;
            };
            for batch in read_batches(&batch.data)? {
                for i in 0..batch.num_rows() {
                    let cells = batch
                        .columns()
                        .iter()
                        .map(|column| cell_text(column.as_ref(), i))
                        .collect::<Result<Vec<_>, _>>()?;
                    if !row(cells)? {
                        return Ok(false);
                    }
                }
            }
        }
        Ok::<_, BackendError>(true)
    };
    match tokio::time::timeout(timeout, read).await {
        // Every row was read: nothing runs on.
        Ok(Ok(true)) => {
            running.0 = None;
            Ok(server_side_id)
        }
        // The server's error ended the operation.
        Ok(Err(e @ BackendError::Query(_))) => {
            running.0 = None;
            Err(e)
        }
        // The guard stays armed and interrupts whatever still runs: the
        // sink had enough, or a batch could not be read.
        Ok(Ok(false)) => Ok(server_side_id),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BackendError::Timeout),
    }
}

#[async_trait::async_trait]
impl Backend for SparkBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Spark
    }

    /// The column's Spark type (from `DESCRIBE TABLE`, catalog metadata
    /// only) under its PostgreSQL name.
    async fn column_type(
        &self,
        table: &dpgate_config::Table,
        column: &str,
    ) -> Option<crate::ColumnType> {
        let rows = self
            .rows(&format!("DESCRIBE TABLE {}", Dialect::Spark.table(table)))
            .await
            .ok()?;
        rows.into_iter()
            .find(|r| {
                r.first()
                    .and_then(|c| c.as_deref())
                    .is_some_and(|c| c.eq_ignore_ascii_case(column))
            })
            .and_then(|r| r.get(1).cloned().flatten())
            .map(|spark| column_type(&spark))
    }

    async fn fetch_into(
        &self,
        query: BackendQuery<'_>,
        sink: &mut (dyn GroupSink + Send),
    ) -> Result<(), BackendError> {
        let keys = query.keys;
        let width = query.keys + query.measurements;
        // Planned queries are in Spark's spelling already (`Plan::backend_sql`).
        self.run(query.sql, &mut |cells| {
            if cells.len() != width {
                return Err(BackendError::Shape(format!(
                    "{} columns, expected {width}",
                    cells.len()
                )));
            }
            Ok(sink.push(parse_row(cells, keys)?).is_continue())
        })
        .await
    }
}

/// The record batches of one Arrow IPC stream.
fn read_batches(data: &[u8]) -> Result<Vec<RecordBatch>, BackendError> {
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(data), None)
        .map_err(|e| BackendError::Shape(format!("Arrow stream: {e}")))?;
    reader
        .map(|b| b.map_err(|e| BackendError::Shape(format!("Arrow batch: {e}"))))
        .collect()
}

/// Row `i` of `column` as text, as PostgreSQL would print it. Planned
/// queries return text, except float group keys, which are printed here
/// with the shortest digits that read back the same (as PostgreSQL does).
fn cell_text(column: &dyn Array, i: usize) -> Result<Option<String>, BackendError> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
    use arrow_schema::DataType;
    if column.is_null(i) {
        return Ok(None);
    }
    Ok(Some(match column.data_type() {
        DataType::Utf8 => column.as_string::<i32>().value(i).to_string(),
        DataType::LargeUtf8 => column.as_string::<i64>().value(i).to_string(),
        DataType::Utf8View => column.as_string_view().value(i).to_string(),
        DataType::Float64 => column.as_primitive::<Float64Type>().value(i).to_string(),
        DataType::Float32 => column.as_primitive::<Float32Type>().value(i).to_string(),
        DataType::Int64 => column.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::Int32 => column.as_primitive::<Int32Type>().value(i).to_string(),
        DataType::Boolean => column.as_boolean().value(i).to_string(),
        other => {
            return Err(BackendError::Shape(format!(
                "a column of Arrow type {other}"
            )))
        }
    }))
}

/// A Spark SQL type as `DESCRIBE TABLE` writes it (`string collate
/// UTF8_LCASE` since Spark 4): its PostgreSQL name, and its collation
/// unless that is the default `UTF8_BINARY`.
fn column_type(spark: &str) -> crate::ColumnType {
    let (ty, collation) = match spark.to_ascii_lowercase().find(" collate ") {
        Some(at) => (&spark[..at], Some(spark[at + " collate ".len()..].trim())),
        None => (spark, None),
    };
    let collation = collation.filter(|c| !c.eq_ignore_ascii_case("UTF8_BINARY"));
    crate::ColumnType {
        name: pg_type(ty),
        equality: collation.map(|c| format!("collation {c}")),
    }
}

/// The PostgreSQL name of a Spark SQL type.
fn pg_type(spark: &str) -> String {
    let spark = spark.to_ascii_lowercase();
    let base = spark.split('(').next().unwrap_or("").trim();
    match base {
        "bigint" | "long" => "bigint",
        "int" | "integer" => "integer",
        "smallint" | "short" | "tinyint" | "byte" => "smallint",
        "double" => "double precision",
        "float" | "real" => "real",
        "decimal" | "numeric" | "dec" => "numeric",
        "boolean" => "boolean",
        "date" => "date",
        "timestamp" | "timestamp_ltz" | "timestamp_ntz" => "timestamp without time zone",
        // CHAR(n) is padded with spaces, and compared padded with a
        // string: blank-padded, as PostgreSQL's character(n).
        "char" | "character" => "bpchar",
        _ => "text",
    }
    .to_string()
}

/// The server's own message (for the log and the audit entry; clients
/// only ever see the one uniform 58000).
fn query_error(e: spark_connect_core::SparkError) -> BackendError {
    BackendError::Query(e.to_string())
}

/// Interrupts the operation it guards unless disarmed: a dropped or timed
/// out query would otherwise keep running on the cluster.
struct InterruptOnDrop(Option<(Arc<SparkConnectClient>, String)>);

impl Drop for InterruptOnDrop {
    fn drop(&mut self) {
        if let Some((client, operation_id)) = self.0.take() {
            tokio::spawn(async move {
                match client.interrupt_operation(&operation_id).await {
                    Ok(ids) if ids.contains(&operation_id) => {
                        tracing::warn!("interrupted the Spark operation {operation_id} (statement timeout, cancelled request, or rows no longer needed)")
                    }
                    Ok(_) => tracing::info!("the Spark operation {operation_id} had already ended"),
                    Err(e) => {
                        tracing::warn!(
                            "could not interrupt the Spark operation {operation_id}: {e}"
                        )
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{column_type, pg_type};

    /// A collation other than Spark's default is part of how the column
    /// compares.
    #[test]
    fn collations_are_read_from_the_type() {
        let t = column_type("string collate UTF8_LCASE");
        assert_eq!(t.name, "text");
        assert_eq!(t.equality.as_deref(), Some("collation UTF8_LCASE"));
        assert_eq!(column_type("string collate UTF8_BINARY").equality, None);
        assert_eq!(column_type("bigint"), crate::ColumnType::plain("bigint"));
    }

    #[test]
    fn spark_types_have_postgres_names() {
        assert_eq!(pg_type("bigint"), "bigint");
        assert_eq!(pg_type("decimal(10,2)"), "numeric");
        assert_eq!(pg_type("STRING"), "text");
        assert_eq!(pg_type("varchar(10)"), "text");
        assert_eq!(pg_type("char(10)"), "bpchar");
        assert_eq!(pg_type("timestamp_ntz"), "timestamp without time zone");
    }
}
