//! Creating and synchronising the shadow database.

use dpgate_backend::Backend;
use dpgate_config::{quote_ident, Column, Config, Table, TablePrivacy};
use dpgate_sql::quote_literal;
use tokio_postgres::Client;

use crate::CatalogError;

/// Marks a database as dpgate's, so that sync never drops tables of a
/// database it did not create.
const MARKER: &str = "dpgate shadow catalog: empty tables mirroring proxy.toml";

/// Serialises syncs of several dpgate processes sharing one catalog.
const SYNC_LOCK: i64 = 0x6470_6761_7465; // "dpgate"

pub(crate) async fn sync(
    client: &Client,
    config: &Config,
    backend: &dyn Backend,
) -> Result<(), CatalogError> {
    let mut ddl = vec![
        "BEGIN READ WRITE".to_string(),
        format!("SELECT pg_advisory_xact_lock({SYNC_LOCK})"),
    ];
    let marked: Option<String> = client
        .query_one(
            "SELECT pg_catalog.shobj_description(d.oid, 'pg_database') FROM pg_catalog.pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await?
        .get(0);
    let existing = client
        .query(
            "SELECT n.nspname, c.relname, c.relkind::text, pg_catalog.obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' AND c.relkind IN ('r','v','m','p','f','S')",
            &[],
        )
        .await?;
    // Ours: the database carries the marker, or (when dpgate may not
    // comment on the database) every table carries one of our comments.
    let ours = marked.as_deref() == Some(MARKER)
        || existing.iter().all(|r| {
            r.get::<_, Option<String>>(3)
                .is_some_and(|c| c.starts_with("private table:") || c.starts_with("public table:"))
        });
    if !ours {
        let db: String = client
            .query_one("SELECT current_database()", &[])
            .await?
            .get(0);
        return Err(CatalogError::NotShadow(format!(
            "the catalog database {db:?} holds {} relations that dpgate did not create; dpgate will not overwrite them",
            existing.len()
        )));
    }
    for row in &existing {
        let (schema, name, kind): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let what = match kind.as_str() {
            "v" => "VIEW",
            "m" => "MATERIALIZED VIEW",
            "f" => "FOREIGN TABLE",
            "S" => "SEQUENCE",
            _ => "TABLE",
        };
        ddl.push(format!(
            "DROP {what} IF EXISTS {}.{} CASCADE",
            quote_ident(&schema),
            quote_ident(&name)
        ));
    }
    let schemas = client
        .query(
            "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname !~ '^pg_' AND nspname NOT IN ('information_schema', 'public')",
            &[],
        )
        .await?;
    for row in &schemas {
        let schema: String = row.get(0);
        if !config
            .tables
            .iter()
            .any(|t| t.schema.eq_ignore_ascii_case(&schema))
        {
            ddl.push(format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(&schema)
            ));
        }
    }
    for table in &config.tables {
        let unit_type = unit_type(table, backend).await;
        ddl.extend(table_ddl(table, unit_type.as_deref()));
    }
    // The reader sees the shadow tables (tools read `SELECT * ... LIMIT 0`
    // for a result's columns) and nothing it could change.
    let mut schemas: Vec<&str> = config.tables.iter().map(|t| t.schema.as_str()).collect();
    schemas.sort_unstable();
    schemas.dedup();
    for schema in schemas {
        ddl.push(format!(
            "GRANT USAGE ON SCHEMA {s} TO {r}; GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {r}",
            s = quote_ident(schema),
            r = crate::cluster::READER_ROLE
        ));
    }
    ddl.push(format!(
        "DO $$ BEGIN EXECUTE format('COMMENT ON DATABASE %I IS %L', current_database(), '{MARKER}'); \
         EXCEPTION WHEN insufficient_privilege THEN NULL; END $$"
    ));
    ddl.push("COMMIT".into());
    if let Err(e) = client.batch_execute(&ddl.join(";\n")).await {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(e.into());
    }
    tracing::info!(tables = config.tables.len(), "shadow catalog in sync");
    Ok(())
}

/// A type name as `format_type` writes it: letters, digits, spaces,
/// parentheses, commas, brackets and underscores; nothing that could end
/// the statement it is written into.
fn is_type_name(t: &str) -> bool {
    !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _(),[]".contains(c))
}

/// The type of a privacy unit column proxy.toml leaves undeclared, as the
/// backend's catalog names it: read with the rest of the schema
/// (`dpgate_backend::read_schema`), else asked now; text when it cannot
/// tell.
pub(crate) async fn unit_type(table: &Table, backend: &dyn Backend) -> Option<String> {
    match &table.privacy {
        TablePrivacy::Private {
            privacy_unit: Some(unit),
            ..
        } if table.column(unit).is_none() => {
            let read = match &table.unit_type {
                Some(t) => Some(t.clone()),
                None => backend.column_type(table, unit).await.map(|t| t.name),
            };
            Some(
                read.filter(|t| is_type_name(t))
                    .unwrap_or_else(|| "text".into()),
            )
        }
        _ => None,
    }
}

/// CREATE statements and comments for one declared table.
pub(crate) fn table_ddl(table: &Table, unit_type: Option<&str>) -> Vec<String> {
    let name = table.qualified_name();
    let mut columns: Vec<String> = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let (table_comment, unit) = match &table.privacy {
        TablePrivacy::Public => ("public table: rows may be read as they are".to_string(), None),
        TablePrivacy::Private {
            privacy_unit,
            max_rows_per_unit,
            ..
        } => (
            match privacy_unit {
                Some(u) => format!(
                    "private table: aggregates only; privacy unit {u}, at most {max_rows_per_unit} rows per unit"
                ),
                None => format!(
                    "private table: aggregates only; each row is a privacy unit (at most {max_rows_per_unit} per unit)"
                ),
            },
            privacy_unit.as_deref(),
        ),
    };
    if let (Some(unit), Some(ty)) = (unit, unit_type) {
        columns.push(format!("{} {ty}", quote_ident(unit)));
        comments.push(column_comment(
            &name,
            unit,
            "privacy unit: identifies a person; join private tables on it",
        ));
    }
    for column in &table.columns {
        columns.push(format!(
            "{} {}",
            quote_ident(&column.name),
            column.ty.pg_name()
        ));
        let mut text = describe_column(column);
        if unit.is_some_and(|u| u.eq_ignore_ascii_case(&column.name)) {
            text = format!("privacy unit; {text}");
        }
        if !text.is_empty() {
            comments.push(column_comment(&name, &column.name, &text));
        }
    }
    let mut out = Vec::new();
    if table.schema != "public" {
        out.push(format!(
            "CREATE SCHEMA IF NOT EXISTS {}",
            quote_ident(&table.schema)
        ));
    }
    out.push(format!("CREATE TABLE {name} ({})", columns.join(", ")));
    out.push(format!(
        "COMMENT ON TABLE {name} IS {}",
        quote_literal(&table_comment)
    ));
    out.extend(comments);
    out
}

fn describe_column(column: &Column) -> String {
    let mut parts = Vec::new();
    if let Some((lo, hi)) = column.bounds {
        parts.push(format!("bounds [{lo}, {hi}]: values are clamped to them"));
    }
    if let Some(values) = &column.values {
        parts.push(format!("values: {}", values.join(", ")));
    }
    parts.join("; ")
}

fn column_comment(table: &str, column: &str, text: &str) -> String {
    format!(
        "COMMENT ON COLUMN {table}.{} IS {}",
        quote_ident(column),
        quote_literal(text)
    )
}
