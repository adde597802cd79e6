//! Catalog escapes: escaped identifiers, SQL inside strings and functions
//! that run SQL or read files. Before dpgate ran its own catalog cluster,
//! catalog SQL ran on the data's server, where each of these read the
//! heap file, other tenants' database names or other analysts' SQL. Now
//! every one of them meets a server that holds only empty tables.

use tokio_postgres::SimpleQueryMessage;

use crate::common::*;

/// Every cell of every row `sql` returns, or the error text.
async fn cells(client: &tokio_postgres::Client, sql: &str) -> Result<Vec<String>, String> {
    match client.simple_query(sql).await {
        Ok(messages) => Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("NULL").to_string())
                        .collect::<Vec<_>>()
                        .join("|"),
                ),
                _ => None,
            })
            .collect()),
        Err(e) => Err(e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_sql_never_reaches_the_data_server() {
    let (db, _dir, gate) = gate_over_visits("escape", 300, 10.0, 0.1).await;
    // Another tenant's database and a table the config does not declare.
    let other = empty_database("other_tenant_secret").await;
    connect_direct(&cluster().url(&db))
        .await
        .batch_execute(
            "CREATE TABLE secrets (who text); INSERT INTO secrets VALUES ('diagnosis: rare')",
        )
        .await
        .unwrap();
    let (client, _notices) = gate.connect().await;
    let truth: i64 = connect_direct(&cluster().url(&db))
        .await
        .query_one("SELECT COUNT(*) FROM visits", &[])
        .await
        .unwrap()
        .get(0);
    let data_dir = cluster().dir.display().to_string();
    let leaks = |out: &[String]| -> Option<String> {
        out.iter()
            .find(|c| {
                c.contains(&db)
                    || c.contains(&other)
                    || c.contains("diagnosis: rare")
                    || c.contains(&data_dir)
                    || c.split('|').any(|v| v == truth.to_string())
            })
            .cloned()
    };
    let attempts = [
        // Escaped identifiers that a token denylist compared unescaped.
        r#"SELECT U&"pg\005Fread\005Fbinary\005Ffile"('global/pg_control')"#,
        r#"SELECT U&"pg\005Fls\005Fdir"('base')"#,
        r#"SELECT * FROM U&"pg\005Fstat\005Factivity""#,
        r#"SELECT datname FROM U&"pg\005Fdatabase""#,
        "SELECT datname FROM pg_database",
        "SELECT datname FROM pg_catalog.pg_database WHERE datname LIKE '%tenant%'",
        // SQL in strings, run by the server.
        "SELECT query_to_xml('SELECT COUNT(*) AS n FROM public.visits', true, true, '')",
        "SELECT query_to_xml('SELECT who FROM public.secrets', true, true, '')",
        "SELECT ts_rewrite('a & b'::tsquery, 'SELECT ''a''::tsquery, ''c''::tsquery')",
        "SELECT relname FROM pg_class WHERE relname = 'secrets'",
        "SELECT n_live_tup FROM pg_stat_user_tables",
        "SELECT reltuples FROM pg_class WHERE relname = 'visits'",
        "SHOW data_directory",
        "SELECT current_setting('data_directory')",
        "SELECT setting FROM pg_settings WHERE name = 'data_directory'",
        "SELECT inet_server_port()",
        "SELECT current_database()",
    ];
    let mut answered = 0;
    for sql in attempts {
        match cells(&client, sql).await {
            Ok(out) => {
                answered += 1;
                assert!(
                    leaks(&out).is_none(),
                    "{sql} leaked {:?} from the data server",
                    leaks(&out)
                );
            }
            Err(e) => assert!(!e.contains(&db) && !e.contains(&data_dir), "{sql}: {e}"),
        }
    }
    // Functions whose effects would outlive the rolled-back transaction or
    // reach other analysts' pooled sessions are not the reader's, however
    // they are spelled.
    for sql in [
        r#"SELECT U&"pg\005Fadvisory\005Flock"(1)"#,
        r#"SELECT U&"pg\005Fnotify"('c', 'x')"#,
        r#"SELECT U&"pg\005Fterminate\005Fbackend"(1)"#,
    ] {
        assert!(cells(&client, sql).await.is_err(), "{sql} ran");
    }
    // The shadow catalog answers from its own cluster: browsing works and
    // its tables are empty.
    assert!(answered >= 5, "only {answered} catalog queries answered");
    let n = cells(
        &client,
        "SELECT COUNT(*) FROM pg_catalog.pg_class WHERE relname = 'visits'",
    )
    .await
    .unwrap();
    assert_eq!(n, ["1"]);
    let xml = cells(
        &client,
        "SELECT query_to_xml('SELECT COUNT(*) AS n FROM public.visits', true, true, '')",
    )
    .await;
    if let Ok(xml) = xml {
        assert!(xml.concat().contains("<n>0</n>"), "{xml:?}");
    }
}

/// What one extended-protocol exchange (Parse, Bind with text values and
/// text results, Execute, Sync) returns: the rows' cells, or the error.
async fn extended_text(port: u16, sql: &str, values: &[&str]) -> Result<Vec<Vec<String>>, String> {
    use bytes::BytesMut;
    use postgres_protocol::message::{backend, frontend};
    use postgres_protocol::IsNull;
    use tokio::io::AsyncWriteExt;

    let mut stream = crate::protocol::raw_login(port).await;
    let mut out = BytesMut::new();
    frontend::parse("", sql, [], &mut out).unwrap();
    frontend::bind(
        "",
        "",
        [0i16],
        values.iter().copied(),
        |v: &str, buf: &mut BytesMut| {
            buf.extend_from_slice(v.as_bytes());
            Ok(IsNull::No)
        },
        [0i16],
        &mut out,
    )
    .map_err(|_| "bind")
    .unwrap();
    frontend::execute("", 0, &mut out).unwrap();
    frontend::sync(&mut out);
    stream.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let mut rows = Vec::new();
    let mut error = None;
    while let Some(m) = crate::protocol::message(&mut stream, &mut buf).await {
        match m {
            backend::Message::DataRow(body) => {
                let mut cells = Vec::new();
                let mut ranges = body.ranges();
                while let Ok(Some(r)) = fallible_iterator::FallibleIterator::next(&mut ranges) {
                    cells.push(r.map_or("NULL".into(), |r| {
                        String::from_utf8_lossy(&body.buffer()[r]).into_owned()
                    }));
                }
                rows.push(cells);
            }
            backend::Message::ErrorResponse(body) => {
                let mut fields = body.fields();
                while let Ok(Some(f)) = fallible_iterator::FallibleIterator::next(&mut fields) {
                    if f.type_() == b'M' {
                        error = Some(String::from_utf8_lossy(f.value_bytes()).into_owned());
                    }
                }
            }
            backend::Message::ReadyForQuery(_) => break,
            _ => {}
        }
    }
    error.map_or(Ok(rows), Err)
}

/// sqlparser reads `</*` as an operator and PostgreSQL as `<` and a
/// comment, so the two disagree on where `$1` is. Values written into the
/// statement's text could then close the comment and run more statements
/// (COMMIT out of the read-only transaction, SET statement_timeout = 0,
/// pg_sleep). PostgreSQL now finds the parameters itself (PREPARE and
/// EXECUTE), so a value stays a value. And the XML functions that run a
/// query given as a string are not the reader's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_parameters_stay_values() {
    let (_db, _dir, gate) = gate_over_visits("catparam", 30, 10.0, 0.1).await;
    let payload = "*/ 2; COMMIT; SELECT 4242, 1; SELECT 1 </*";
    let rows = extended_text(
        gate.port,
        "SELECT $1::text AS a, 1 </* $1 */ 2 AS b",
        &[payload],
    )
    .await
    .unwrap();
    assert_eq!(rows, [[payload.to_string(), "t".to_string()]]);
    // Ordinary parameters of catalog queries still work, typed by PostgreSQL.
    let rows = extended_text(
        gate.port,
        "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relname = $1 AND c.relkind = 'r'",
        &["visits"],
    )
    .await
    .unwrap();
    assert_eq!(rows, [["visits".to_string()]]);
    // And the pooled sessions keep no prepared statement between uses.
    for _ in 0..6 {
        let rows = extended_text(gate.port, "SELECT $1::int + 1", &["41"])
            .await
            .unwrap();
        assert_eq!(rows, [["42".to_string()]]);
    }
    let (client, _notices) = gate.connect().await;
    for sql in [
        "SELECT query_to_xml('SELECT count(*) FROM visits', true, true, '')",
        "SELECT table_to_xml('visits', true, true, '')",
    ] {
        // Hidden by name in dpgate, and revoked in the shadow cluster.
        let err = cells(&client, sql).await.expect_err(sql);
        assert!(
            err.contains("not visible") || err.contains("permission denied"),
            "{sql}: {err}"
        );
    }
}
