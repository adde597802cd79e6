//! The PostgreSQL backend: a pool of read-only connections with a
//! statement timeout; a dropped query is cancelled in the server.

use std::time::Duration;

use dpgate_sql::{Dialect, GroupSink};

use crate::{parse_row, Backend, BackendError, BackendQuery, Pool};

/// The read-only pool of connections to the data.
pub struct PgBackend {
    pool: Pool,
    statement_timeout_ms: u64,
}

impl PgBackend {
    /// Connects once to check the URL, then keeps up to `pool_size` connections.
    pub async fn connect(
        url: &str,
        config: &dpgate_config::Backend,
    ) -> Result<PgBackend, BackendError> {
        let url = crate::tls::Outbound::parse(url).map_err(BackendError::Connect)?;
        // Every setting the rendered SQL relies on is pinned per session,
        // whatever the role's or database's defaults: quoting
        // (standard_conforming_strings, backslash_quote), the text form of
        // dates and floats that keys and measurements are read back in
        // (DateStyle, IntervalStyle, extra_float_digits, TimeZone), and a
        // search_path under which no other schema's function can shadow
        // the built-ins dpgate calls (tables are schema-qualified).
        let setup = format!(
            "SET statement_timeout = {}; SET default_transaction_read_only = on; SET application_name = 'dpgate'; \
             SET standard_conforming_strings = on; SET backslash_quote = off; SET client_encoding = 'UTF8'; \
             SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; \
             SET TimeZone = 'UTC'; SET search_path = pg_catalog",
            config.statement_timeout_ms
        );
        Ok(PgBackend {
            pool: Pool::connect(url, setup, config.pool_size)
                .await
                .map_err(connect_error)?,
            statement_timeout_ms: config.statement_timeout_ms,
        })
    }

    /// The connection settings, from which the catalog database is derived.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// What the backend role may do beyond reading the declared tables:
    /// superuser, reading or writing the server's files or running
    /// programs (which a data-dependent SQL path could abuse), or writing
    /// any declared table. Empty when the role is as plain as it should be.
    pub async fn role_problems(
        &self,
        tables: &[dpgate_config::Table],
    ) -> Result<Vec<String>, BackendError> {
        let client = self.pool.get().await.map_err(connect_error)?;
        let role = client
            .query_one(
                "SELECT current_user::text, r.rolsuper, \
                        pg_catalog.pg_has_role(current_user, 'pg_read_server_files', 'MEMBER'), \
                        pg_catalog.pg_has_role(current_user, 'pg_write_server_files', 'MEMBER'), \
                        pg_catalog.pg_has_role(current_user, 'pg_execute_server_program', 'MEMBER') \
                 FROM pg_catalog.pg_roles r WHERE r.rolname = current_user",
                &[],
            )
            .await
            .map_err(|e| BackendError::Query(e.to_string()))?;
        let name: String = role.get(0);
        let mut problems = Vec::new();
        for (i, what) in [
            (1, "is a superuser"),
            (2, "may read the server's files (pg_read_server_files)"),
            (3, "may write the server's files (pg_write_server_files)"),
            (
                4,
                "may run programs on the server (pg_execute_server_program)",
            ),
        ] {
            if role.get::<_, bool>(i) {
                problems.push(format!("the backend role {name:?} {what}"));
            }
        }
        for t in tables {
            let writable: Option<bool> = client
                .query_one(
                    "SELECT CASE WHEN pg_catalog.to_regclass($1) IS NULL THEN NULL \
                     ELSE pg_catalog.has_table_privilege(current_user, pg_catalog.to_regclass($1), 'INSERT, UPDATE, DELETE, TRUNCATE') END",
                    &[&t.qualified_name()],
                )
                .await
                .map_err(|e| BackendError::Query(e.to_string()))?
                .get(0);
            if writable == Some(true) {
                problems.push(format!(
                    "the backend role {name:?} may write the declared table {}",
                    t.qualified_name()
                ));
            }
        }
        Ok(problems)
    }

    /// The type PostgreSQL gives `column` of `table` (`schema.name`), as
    /// `format_type` writes it (a domain's base type: its `=` is the
    /// base type's), with its collation unless it is the database's
    /// default (0: not collatable, 100: default); catalog metadata only,
    /// never data.
    pub async fn column_type(
        &self,
        schema: &str,
        table: &str,
        column: &str,
    ) -> Option<crate::ColumnType> {
        let client = self.pool.get().await.ok()?;
        let row = client
            .query_opt(
                "SELECT CASE WHEN t.typtype = 'd' \
                   THEN pg_catalog.format_type(t.typbasetype, t.typtypmod) \
                   ELSE pg_catalog.format_type(a.atttypid, a.atttypmod) END, \
                 CASE WHEN a.attcollation IN (0, 100) THEN NULL ELSE a.attcollation::pg_catalog.regcollation::text END, \
                 COALESCE((SELECT NOT co.collisdeterministic FROM pg_catalog.pg_collation co WHERE co.oid = a.attcollation), false) \
                 FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid \
                 JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 AND NOT a.attisdropped",
                &[&schema, &table, &column],
            )
            .await
            .ok()??;
        let name: String = row.try_get(0).ok()?;
        let collation: Option<String> = row.try_get(1).ok()?;
        let nondeterministic: bool = row.try_get(2).ok()?;
        // Whether the column can be grouped and sorted by (every bounding
        // step needs one or the other): asked of the planner, which knows
        // operator classes, domains and binary-coercible types alike;
        // EXPLAIN reads no data.
        let probe = format!(
            "EXPLAIN SELECT {col} FROM {}.{} GROUP BY 1 ORDER BY 1",
            dpgate_config::quote_ident(schema),
            dpgate_config::quote_ident(table),
            col = dpgate_config::quote_ident(column),
        );
        let groupable = !matches!(
            client.simple_query(&probe).await,
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_FUNCTION)
        ) && (!nondeterministic || hashes_by_collation(&name));
        Some(crate::ColumnType {
            name,
            equality: if groupable {
                collation.map(|c| format!("collation {c}"))
            } else {
                Some(dpgate_config::UNGROUPABLE_EQUALITY.into())
            },
        })
    }

    /// [`crate::Backend::fetch_into`] on PostgreSQL: rows stream into
    /// `sink`; a dropped future cancels the query in the server and
    /// closes its connection.
    async fn fetch_groups(
        &self,
        query: BackendQuery<'_>,
        sink: &mut (dyn GroupSink + Send),
    ) -> Result<(), BackendError> {
        use futures::StreamExt;
        let (sql, keys, count) = (query.sql, query.keys, query.measurements);
        let mut client = self.pool.get().await.map_err(connect_error)?;
        // Until the read is over, a drop (timeout, or the caller gone)
        // cancels the query and closes the connection rather than pooling
        // it half-used.
        client.begin();
        let timeout = Duration::from_millis(self.statement_timeout_ms.saturating_add(5_000));
        let read = async {
            let rows = match client.prepared(sql, &[]).await.map_err(query_error)? {
                // Run before on this connection: bind and execute the
                // statement prepared then, without parsing and planning.
                Some(statement) => match client.query_raw(&statement, no_parameters()).await {
                    Ok(rows) => rows,
                    // A statement the server no longer holds as prepared
                    // (its tables changed under it) is prepared afresh.
                    Err(e) if stale_statement(&e) => {
                        client.forget(sql);
                        unnamed(&client, sql).await.map_err(query_error)?
                    }
                    Err(e) => return Err(query_error(e)),
                },
                // Parse, bind and execute in one round trip; the extended
                // protocol still takes one statement only.
                None => unnamed(&client, sql).await.map_err(query_error)?,
            };
            futures::pin_mut!(rows);
            let mut open = true;
            // After the sink breaks the remaining rows are read and
            // dropped, so the connection is left clean for the pool.
            while let Some(row) = rows.next().await {
                let row = row.map_err(query_error)?;
                if !open {
                    continue;
                }
                let cells = (0..keys + count)
                    .map(|i| {
                        row.try_get::<_, Option<&str>>(i)
                            .map_err(|e| BackendError::Shape(e.to_string()))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                open = sink.push(parse_row(cells, keys)?).is_continue();
            }
            Ok::<_, BackendError>(())
        };
        let outcome = match tokio::time::timeout(timeout, read).await {
            Ok(outcome) => outcome,
            // Dropping `client` unfinished cancels the query and closes
            // the connection.
            Err(_) => return Err(BackendError::Timeout),
        };
        client.finished();
        outcome
    }
}

#[async_trait::async_trait]
impl Backend for PgBackend {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn column_type(
        &self,
        table: &dpgate_config::Table,
        column: &str,
    ) -> Option<crate::ColumnType> {
        PgBackend::column_type(self, &table.schema, &table.name, column).await
    }

    async fn is_stored(&self, table: &dpgate_config::Table) -> bool {
        let Ok(client) = self.pool.get().await else {
            return false;
        };
        // A table (partitioned: with only tables among its partitions;
        // plain: without children of legacy inheritance, which may be
        // foreign) or a materialized view, without row-level security,
        // whose policies may call anything. One statement reads it under
        // one snapshot.
        client
            .query_one(
                "SELECT COALESCE((SELECT (c.relkind = 'm' OR c.relkind = 'r' AND NOT c.relhassubclass \
                   OR c.relkind = 'p' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_partition_tree(c.oid) AS t \
                     JOIN pg_catalog.pg_class p ON p.oid = t.relid WHERE p.relkind NOT IN ('r', 'p'))) \
                   AND NOT c.relrowsecurity \
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2), false)",
                &[&table.schema, &table.name],
            )
            .await
            .ok()
            .and_then(|row| row.try_get(0).ok())
            .unwrap_or(false)
    }

    async fn unit_is_unique(&self, table: &dpgate_config::Table, column: &str) -> bool {
        let Ok(client) = self.pool.get().await else {
            return false;
        };
        let proven = client
            .query_one(
                // A valid one-column unique index without a predicate on
                // a NOT NULL column, comparing as the column's `=` does
                // (its collation, the type's default operator class), on a
                // table without children of legacy inheritance (whose rows
                // the parent's index does not cover; a partitioned table's
                // unique index covers its partitions).
                "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i \
                 JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = i.indkey[0] \
                 JOIN pg_catalog.pg_opclass o ON o.oid = i.indclass[0] \
                 WHERE n.nspname = $1 AND c.relname = $2 AND a.attname = $3 \
                 AND i.indisunique AND i.indisvalid AND i.indisready AND i.indislive \
                 AND i.indnkeyatts = 1 AND i.indpred IS NULL AND i.indexprs IS NULL AND a.attnotnull \
                 AND i.indcollation[0] = a.attcollation AND o.opcdefault \
                 AND (c.relkind = 'p' OR NOT EXISTS \
                   (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhparent = c.oid)))",
                &[&table.schema, &table.name, &column],
            )
            .await;
        proven.and_then(|row| row.try_get(0)).unwrap_or(false)
    }

    async fn fetch_into(
        &self,
        query: BackendQuery<'_>,
        sink: &mut (dyn GroupSink + Send),
    ) -> Result<(), BackendError> {
        self.fetch_groups(query, sink).await
    }

    fn postgres(&self) -> Option<&PgBackend> {
        Some(self)
    }
}

/// The server's own message (for the log and the audit entry; clients
/// only ever see the one uniform 58000).
fn query_error(e: tokio_postgres::Error) -> BackendError {
    BackendError::Query(e.as_db_error().map_or_else(
        || e.to_string(),
        |d| format!("{}: {}", d.code().code(), d.message()),
    ))
}

/// Runs `sql` as the unnamed statement: parse, bind and execute in one
/// round trip.
async fn unnamed(
    client: &tokio_postgres::Client,
    sql: &str,
) -> Result<tokio_postgres::RowStream, tokio_postgres::Error> {
    client
        .query_typed_raw(
            sql,
            std::iter::empty::<(&str, tokio_postgres::types::Type)>(),
        )
        .await
}

fn no_parameters() -> std::iter::Empty<&'static (dyn tokio_postgres::types::ToSql + Sync)> {
    std::iter::empty()
}

/// An error that a prepared statement gives once the server no longer
/// holds it as it was prepared: `cached plan must not change result
/// type` (0A000) after its tables changed, or an unknown statement
/// (26000). Either comes before the first row.
fn stale_statement(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::FEATURE_NOT_SUPPORTED || *c == SqlState::INVALID_SQL_STATEMENT_NAME
    })
}

fn connect_error(e: tokio_postgres::Error) -> BackendError {
    BackendError::Connect(e.to_string())
}

/// Whether PostgreSQL hashes values of the type `name` (as `format_type`
/// writes it) the way a nondeterministic collation compares them. Text,
/// varchar and char do (their hash functions follow the collation). Other
/// collatable types may not: PostgreSQL 15's `name` compares 'alice' and
/// 'ALICE' equal under a case-insensitive collation but hashes their
/// bytes, so a hashed GROUP BY puts them apart where a sorted one or a
/// window puts them together, and a bounding step that groups twice
/// could count one person as several (measured: 64 rows passed a bound
/// of 10). Such a unit is treated as one the backend cannot group.
fn hashes_by_collation(name: &str) -> bool {
    let base = name.split('(').next().unwrap_or(name).trim();
    matches!(base, "text" | "character varying" | "character" | "bpchar")
}
