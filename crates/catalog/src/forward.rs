//! Running catalog queries on the shadow database, each in a read-only
//! transaction that is rolled back, under the analyst's search_path.

use tokio_postgres::types::{Kind, Type};
use tokio_postgres::{Client, SimpleQueryMessage, Statement};

use dpgate_sql::quote_literal;

use crate::params::{literal, Raw, RawValue};
use crate::{Catalog, CatalogError};

/// A bound parameter as the client sent it.
#[derive(Debug, Clone)]
pub struct Param {
    /// True for the binary format, false for text.
    pub binary: bool,
    /// The bytes, or `None` for NULL.
    pub value: Option<Vec<u8>>,
}

/// Which database of the catalog cluster a query runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Database {
    /// The shadow catalog: empty tables mirroring proxy.toml.
    Shadow,
    /// The synthetic rows of tables that declare them.
    Synthetic,
}

/// Parameter and result types of a catalog statement.
#[derive(Debug, Clone)]
pub struct Described {
    /// Types of `$1`, `$2`, …
    pub params: Vec<Type>,
    /// Result columns: name and type.
    pub columns: Vec<(String, Type)>,
}

/// The answer to a catalog query: each cell in the format asked for.
#[derive(Debug, Clone)]
pub struct CatalogRows {
    /// Result columns: name and type.
    pub columns: Vec<(String, Type)>,
    /// Rows of cells (`None` is NULL).
    pub rows: Vec<Vec<Option<Vec<u8>>>>,
    /// The command tag, e.g. `SELECT 3`.
    pub tag: String,
}

impl Catalog {
    /// Parameter and result types of `sql`; `declared` are the types the
    /// client gave in Parse (`None`: let PostgreSQL infer).
    pub async fn describe(
        &self,
        sql: &str,
        declared: &[Option<Type>],
        search_path: &str,
    ) -> Result<Described, CatalogError> {
        let client = self.pool.get().await?;
        let result = async {
            self.begin(&client, search_path).await?;
            let stmt = client.prepare_typed(sql, &unspecified(declared)).await?;
            Ok::<_, CatalogError>(described(&stmt))
        }
        .await;
        finish(&client).await;
        result
    }

    /// Runs `sql` on `database` with `params` (of the `declared` types,
    /// where given); `binary(i)` tells the format of result column `i`.
    pub async fn query(
        &self,
        database: Database,
        sql: &str,
        declared: &[Option<Type>],
        params: &[Param],
        binary: &(dyn Fn(usize) -> bool + Sync),
        search_path: &str,
    ) -> Result<CatalogRows, CatalogError> {
        let pool = match database {
            Database::Shadow => &self.pool,
            Database::Synthetic => &self.synthetic,
        };
        let client = pool.get().await?;
        let result = async {
            self.begin(&client, search_path).await?;
            let stmt = client.prepare_typed(sql, &unspecified(declared)).await?;
            let d = described(&stmt);
            let any_binary = (0..d.columns.len()).any(binary);
            let any_text = (0..d.columns.len()).any(|i| !binary(i)) || d.columns.is_empty();
            let bin = match any_binary {
                true => Some(binary_rows(&client, &stmt, params).await?),
                false => None,
            };
            let text = match any_text {
                true => Some(text_rows(&client, sql, &d.params, params).await?),
                false => None,
            };
            let (rows, tag) = match (bin, text) {
                (Some((b, tag)), Some((t, _))) => (
                    b.into_iter()
                        .zip(t)
                        .map(|(b, t)| {
                            b.into_iter()
                                .zip(t)
                                .enumerate()
                                .map(|(i, (b, t))| if binary(i) { b } else { t })
                                .collect()
                        })
                        .collect(),
                    tag,
                ),
                (Some(b), None) => b,
                (None, Some(t)) => t,
                (None, None) => (Vec::new(), "SELECT 0".into()),
            };
            Ok(CatalogRows {
                columns: d.columns,
                rows,
                tag,
            })
        }
        .await;
        finish(&client).await;
        result
    }

    /// Opens the read-only transaction with the analyst's search_path and
    /// the catalog's statement timeout, in one round trip.
    async fn begin(&self, client: &Client, search_path: &str) -> Result<(), CatalogError> {
        // standard_conforming_strings is on for catalog connections (see
        // `Catalog::open`), so doubling quotes is the whole escaping.
        client
            .batch_execute(&format!(
                "BEGIN READ ONLY; SELECT pg_catalog.set_config('search_path', {}, true), pg_catalog.set_config('statement_timeout', '{}', true)",
                quote_literal(search_path),
                self.statement_timeout_ms
            ))
            .await?;
        Ok(())
    }
}

/// Declared parameter types, with OID 0 ("infer it") where none was given.
fn unspecified(declared: &[Option<Type>]) -> Vec<Type> {
    declared
        .iter()
        .map(|t| {
            t.clone()
                .unwrap_or_else(|| Type::new(String::new(), 0, Kind::Simple, String::new()))
        })
        .collect()
}

/// Ends the transaction; settings made inside it go with it.
async fn finish(client: &Client) {
    let _ = client.batch_execute("ROLLBACK").await;
}

fn described(stmt: &Statement) -> Described {
    Described {
        params: stmt.params().to_vec(),
        columns: stmt
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().clone()))
            .collect(),
    }
}

type Rows = (Vec<Vec<Option<Vec<u8>>>>, String);

async fn binary_rows(
    client: &Client,
    stmt: &Statement,
    params: &[Param],
) -> Result<Rows, CatalogError> {
    let raw: Vec<Raw> = params.iter().map(Raw).collect();
    let rows = client
        .query(stmt, &raw.iter().map(|r| r as _).collect::<Vec<_>>())
        .await?;
    let cells = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.try_get::<_, Option<RawValue>>(i)
                        .map(|v| v.map(|v| v.0))
                        .map_err(|e| CatalogError::Parameter(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tag = format!("SELECT {}", cells.len());
    Ok((cells, tag))
}

/// Name of the server-side prepared statement of [`text_rows`].
const TEXT_STATEMENT: &str = "dpgate_catalog_text";

/// Rows in text format, through the simple protocol. With parameters, the
/// analyst's text is handed to PostgreSQL's own `PREPARE` unchanged and
/// the values to `EXECUTE` as typed literals, so PostgreSQL's lexer, not
/// another, decides where each `$n` is: values are never written into the
/// analyst's text, where a tokenizer that disagreed with PostgreSQL's
/// (about a comment, say) could let a value end the statement and start
/// another. The text is one statement: the extended-protocol Parse that
/// described it (which refuses more) accepted it.
async fn text_rows(
    client: &Client,
    sql: &str,
    types: &[Type],
    params: &[Param],
) -> Result<Rows, CatalogError> {
    if params.is_empty() {
        return collect_text(client.simple_query(sql).await?);
    }
    let literals = params
        .iter()
        .zip(types)
        .map(|(p, t)| literal(p, t))
        .collect::<Result<Vec<_>, _>>()?;
    let type_names: Vec<String> = types.iter().map(type_name).collect();
    client
        .batch_execute(&format!(
            "PREPARE {TEXT_STATEMENT} ({}) AS {sql}",
            type_names.join(", ")
        ))
        .await?;
    let result = client
        .simple_query(&format!(
            "EXECUTE {TEXT_STATEMENT} ({})",
            literals.join(", ")
        ))
        .await;
    if result.is_err() {
        // An aborted transaction refuses DEALLOCATE; end it first.
        let _ = client.batch_execute("ROLLBACK").await;
    }
    // Prepared statements outlive transactions; the pooled session must
    // not keep this one for the next analyst.
    client
        .batch_execute(&format!("DEALLOCATE {TEXT_STATEMENT}"))
        .await?;
    collect_text(result?)
}

/// `"schema"."type"`, as PREPARE's parameter list and casts spell it.
pub(crate) fn type_name(ty: &Type) -> String {
    format!(
        "{}.{}",
        dpgate_config::quote_ident(ty.schema()),
        dpgate_config::quote_ident(ty.name())
    )
}

fn collect_text(messages: Vec<SimpleQueryMessage>) -> Result<Rows, CatalogError> {
    let mut rows = Vec::new();
    let mut tag = String::from("SELECT 0");
    for message in messages {
        match message {
            SimpleQueryMessage::Row(row) => rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(|v| v.as_bytes().to_vec()))
                    .collect(),
            ),
            SimpleQueryMessage::CommandComplete(n) => tag = format!("SELECT {n}"),
            _ => {}
        }
    }
    Ok((rows, tag))
}
