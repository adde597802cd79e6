//! The shadow catalog from the wire: catalog queries run there with the
//! client's parameters and result formats passed through byte for byte,
//! session functions replaced by the analyst's values.

use dpgate_catalog::{CatalogError, CatalogRows, Database, Param};
use dpgate_sql::catalog::prepare_catalog_sql;
use dpgate_sql::{sqlstate, Refusal};
use pgwire::api::results::{Response, Tag};
use pgwire::api::Type;

use crate::handler::{Bound, QueryHandler};
use crate::statement::ClientSession;
use crate::wire::{Fields, Outcome};

impl QueryHandler {
    /// Sends a catalog query to the shadow catalog.
    pub(crate) async fn browse(
        &self,
        info: &ClientSession,
        sql: &str,
        bound: Bound<'_>,
    ) -> Outcome {
        match self.forward(info, sql, bound, Database::Shadow).await {
            Ok(rows) if rows.columns.is_empty() => {
                Outcome::Tag(Response::Execution(Tag::new(&rows.tag)))
            }
            Ok(rows) => Outcome::Encoded {
                fields: rows.columns,
                rows: rows.rows,
                notice: None,
            },
            Err(e) => Outcome::Error(e),
        }
    }

    /// Runs `sql` on one of the catalog cluster's databases with the
    /// client's parameters and result formats.
    pub(crate) async fn forward(
        &self,
        info: &ClientSession,
        sql: &str,
        bound: Bound<'_>,
        database: Database,
    ) -> Result<CatalogRows, Refusal> {
        let catalog = self.service().catalog.as_ref().ok_or_else(catalog_off)?;
        let sql = prepare_catalog_sql(sql, info)?;
        let params: Vec<Param> = bound
            .portal
            .map(|p| {
                p.parameters
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Param {
                        binary: p.parameter_format.is_binary(i),
                        value: v.as_ref().map(|b| b.to_vec()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let declared = bound
            .portal
            .map(|p| p.statement.parameter_types.clone())
            .unwrap_or_default();
        let search_path = info.session.lock().unwrap().search_path();
        let binary = |i: usize| bound.format.is_binary(i);
        catalog
            .query(database, &sql, &declared, &params, &binary, &search_path)
            .await
            .map_err(catalog_refusal)
    }

    /// Parameter types and result columns of a catalog query.
    pub(crate) async fn describe_catalog(
        &self,
        info: &ClientSession,
        sql: &str,
        declared: &[Option<Type>],
    ) -> Result<(Vec<Type>, Fields), Refusal> {
        let catalog = self.service().catalog.as_ref().ok_or_else(catalog_off)?;
        let sql = prepare_catalog_sql(sql, info)?;
        let search_path = info.session.lock().unwrap().search_path();
        let d = catalog
            .describe(&sql, declared, &search_path)
            .await
            .map_err(catalog_refusal)?;
        Ok((d.params, d.columns))
    }
}

pub(crate) fn catalog_off() -> Refusal {
    Refusal::new(
        sqlstate::FEATURE_NOT_SUPPORTED,
        "catalog browsing is off: dpgate could not start its catalog cluster (see its log) or catalog.enabled is false",
        "the data owner can install PostgreSQL's server binaries (Debian: apt install postgresql) or set catalog.bin_dir in proxy.toml; `dpgate check` lists the declared tables and columns",
    )
}

/// A catalog-cluster failure as the analyst sees it: PostgreSQL's own
/// refusal (it holds no data), or one uninformative 58000.
pub fn catalog_refusal(e: CatalogError) -> Refusal {
    match e {
        CatalogError::Query {
            code,
            message,
            hint,
        } => Refusal::new(code, message, hint.unwrap_or_default()),
        other => {
            tracing::warn!(error = %other, "catalog query failed");
            Refusal::new(
                "58000",
                format!("the catalog query failed: {other}"),
                "retry; if it keeps failing, the data owner should check the catalog database",
            )
        }
    }
}
