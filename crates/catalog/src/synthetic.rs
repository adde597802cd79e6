//! The synthetic database: for each table declaring `[tables.synthetic]`,
//! a table of the same name and columns holding rows sampled from its
//! differentially private fit, and nothing else. Row-level SELECTs over
//! such tables run here as the unprivileged reader, read-only and rolled
//! back like catalog queries: PostgreSQL evaluates every filter, join,
//! ordering and function exactly, and whatever a query computes is a
//! function of the fit alone (post-processing).

use dpgate_backend::Backend;
use dpgate_config::{quote_ident, Table};
use dpgate_sql::{quote_literal, Cell};

use crate::shadow::{table_ddl, unit_type};
use crate::{cluster, connect, Catalog, CatalogError};

/// Rows per INSERT statement while loading.
const BATCH: usize = 500;

impl Catalog {
    /// Makes `table`'s synthetic rows those of the fit `key` (nothing to
    /// do when they already are): `columns` named in order, each row of
    /// `rows()` (called only to load) in that order; other columns NULL. `comment` describes the
    /// fit (psql's `\dt+` shows it).
    pub async fn load_synthetic(
        &self,
        table: &Table,
        backend: &dyn Backend,
        key: &str,
        comment: &str,
        columns: &[String],
        rows: impl FnOnce() -> Vec<Vec<Cell>>,
    ) -> Result<(), CatalogError> {
        let id = (table.schema.clone(), table.name.clone());
        let mut loaded = self.loaded.lock().await;
        if loaded.get(&id).is_some_and(|k| k == key) {
            return Ok(());
        }
        let admin = connect(
            &self
                .cluster
                .config(cluster::ADMIN_ROLE, cluster::SYNTHETIC_DATABASE),
        )
        .await?;
        let name = table.qualified_name();
        let mut sql = vec!["BEGIN".to_string()];
        if table.schema != "public" {
            sql.push(format!(
                "CREATE SCHEMA IF NOT EXISTS {s}; GRANT USAGE ON SCHEMA {s} TO {r}",
                s = quote_ident(&table.schema),
                r = cluster::READER_ROLE
            ));
        }
        sql.push(format!("DROP TABLE IF EXISTS {name}"));
        let ddl = table_ddl(table, unit_type(table, backend).await.as_deref());
        sql.extend(
            ddl.into_iter()
                .filter(|s| !s.starts_with("COMMENT ON TABLE")),
        );
        sql.push(format!(
            "COMMENT ON TABLE {name} IS {}",
            quote_literal(comment)
        ));
        sql.push(format!(
            "GRANT SELECT ON {name} TO {}",
            cluster::READER_ROLE
        ));
        let names: Vec<String> = columns.iter().map(|c| quote_ident(c)).collect();
        let rows = rows();
        for chunk in rows.chunks(BATCH) {
            let values: Vec<String> = chunk
                .iter()
                .map(|row| {
                    let cells: Vec<String> = row.iter().map(literal).collect();
                    format!("({})", cells.join(", "))
                })
                .collect();
            sql.push(format!(
                "INSERT INTO {name} ({}) VALUES {}",
                names.join(", "),
                values.join(", ")
            ));
        }
        sql.push(format!("ANALYZE {name}"));
        sql.push("COMMIT".into());
        if let Err(e) = admin.batch_execute(&sql.join(";\n")).await {
            let _ = admin.batch_execute("ROLLBACK").await;
            return Err(e.into());
        }
        tracing::info!(table = %name, rows = rows.len(), "synthetic rows loaded");
        loaded.insert(id, key.to_string());
        Ok(())
    }
}

/// A cell as an SQL literal (the column's type converts it on insert).
fn literal(cell: &Cell) -> String {
    match cell {
        Cell::Null => "NULL".into(),
        Cell::Int(i) => i.to_string(),
        Cell::Float(f) if f.is_finite() => format!("{f:?}"),
        Cell::Float(_) => "NULL".into(),
        Cell::Bool(b) => b.to_string(),
        Cell::Text(t) => quote_literal(t),
    }
}
