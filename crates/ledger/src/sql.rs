//! The ledger's statements, written once for both stores with `$N`
//! placeholders (SQLite reads them as `?N` through [`sqlite`]). Table
//! definitions differ (types, sequences) and live with each store.

/// Opens an account with nothing spent, unless it exists.
pub const OPEN_ACCOUNT: &str = r#"INSERT INTO accounts ("user", spent_nano, queries) VALUES ($1, 0, 0) ON CONFLICT ("user") DO NOTHING"#;

/// An account's row (PostgreSQL appends `FOR UPDATE`).
pub const READ_ACCOUNT: &str = r#"SELECT spent_nano, spent_delta_atto, queries, granted_nano, granted_delta_atto, reset_at_ms FROM accounts WHERE "user" = $1"#;

/// One user's charges after an instant.
pub const USER_WINDOW: &str = r#"SELECT CAST(COALESCE(SUM(epsilon_nano), 0) AS BIGINT), CAST(COALESCE(SUM(delta_atto), 0) AS BIGINT) FROM charges WHERE "user" = $1 AND at_ms > $2"#;

/// Everyone's charges after an instant (the dataset's window).
pub const DATASET_WINDOW: &str = r#"SELECT CAST(COALESCE(SUM(epsilon_nano), 0) AS BIGINT), CAST(COALESCE(SUM(delta_atto), 0) AS BIGINT) FROM charges WHERE at_ms > $1"#;

/// Stores a server secret unless one of that name exists (hex text, so
/// both stores keep it the same way).
pub const INSERT_SECRET: &str =
    "INSERT INTO secrets (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING";

/// Reads a server secret.
pub const GET_SECRET: &str = "SELECT value FROM secrets WHERE name = $1";

/// Deletes audit entries older than an instant (charges stay).
pub const PRUNE_AUDIT: &str = "DELETE FROM audit WHERE at_ms < $1";

/// Appends an audit entry and returns its id.
pub const INSERT_AUDIT: &str = r#"INSERT INTO audit (at_ms, "user", client, statement, backend_sql, epsilon_nano, delta_atto, outcome, code, detail, "rows", rho_nano) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) RETURNING id"#;

/// Records a charge.
pub const INSERT_CHARGE: &str = r#"INSERT INTO charges ("user", at_ms, epsilon_nano, delta_atto, statement, audit_id) VALUES ($1, $2, $3, $4, $5, $6)"#;

/// Adds a charge to an account's running total.
pub const ADD_SPENT: &str = r#"UPDATE accounts SET spent_nano = spent_nano + $2, spent_delta_atto = spent_delta_atto + $3, queries = queries + 1 WHERE "user" = $1"#;

/// Records how a charged statement ended.
pub const FINISH_AUDIT: &str =
    r#"UPDATE audit SET outcome = $2, "rows" = $3, code = $4, detail = $5 WHERE id = $1"#;

/// Keeps a release for free repeats (a newer release of the same query
/// replaces an expired one).
pub const PUT_RELEASE: &str = r#"INSERT INTO releases ("user", key, at_ms, body) VALUES ($1, $2, $3, $4) ON CONFLICT ("user", key) DO UPDATE SET at_ms = excluded.at_ms, body = excluded.body"#;

/// A kept release, if recent enough.
pub const GET_RELEASE: &str =
    r#"SELECT body FROM releases WHERE "user" = $1 AND key = $2 AND at_ms >= $3"#;

/// Adds to an account's budget.
pub const GRANT: &str = r#"UPDATE accounts SET granted_nano = granted_nano + $2, granted_delta_atto = granted_delta_atto + $3 WHERE "user" = $1"#;

/// Forgets an account's spending up to an instant.
pub const RESET: &str = r#"UPDATE accounts SET spent_nano = 0, spent_delta_atto = 0, reset_at_ms = $2 WHERE "user" = $1"#;

/// The most recent audit entries of a user (NULL: everyone) since an instant.
pub const LIST_AUDIT: &str = r#"SELECT id, at_ms, "user", client, statement, backend_sql, epsilon_nano, delta_atto, outcome, code, detail, "rows", rho_nano FROM audit WHERE "user" = COALESCE($1, "user") AND at_ms >= $2 ORDER BY id DESC LIMIT $3"#;

/// An [`Row`](crate::standing::Row) from the columns of [`READ_ACCOUNT`];
/// `$r.$get(i)` reads column `i` as a `Result` (rusqlite's `get`,
/// tokio-postgres's `try_get`).
macro_rules! account_row {
    ($r:ident . $get:ident) => {
        crate::standing::Row {
            spent: crate::units::Units {
                epsilon: $r.$get(0)?,
                delta: $r.$get(1)?,
            },
            queries: $r.$get(2)?,
            granted: crate::units::Units {
                epsilon: $r.$get(3)?,
                delta: $r.$get(4)?,
            },
            reset_at_ms: $r.$get(5)?,
        }
    };
}

/// An [`AuditRecord`](crate::AuditRecord) from the columns of [`LIST_AUDIT`].
macro_rules! audit_record {
    ($r:ident . $get:ident) => {{
        let outcome: String = $r.$get(8)?;
        crate::AuditRecord {
            id: $r.$get(0)?,
            entry: crate::AuditEntry {
                at_ms: $r.$get(1)?,
                user: $r.$get(2)?,
                client: $r.$get(3)?,
                statement: $r.$get(4)?,
                backend_sql: $r.$get(5)?,
                cost: crate::units::Units {
                    epsilon: $r.$get(6)?,
                    delta: $r.$get(7)?,
                }
                .amount(),
                rho: crate::units::rho_from_units($r.$get(12)?),
                outcome: crate::Outcome::parse(&outcome).unwrap_or(crate::Outcome::Ok),
                code: $r.$get(9)?,
                detail: $r.$get(10)?,
                rows: $r.$get(11)?,
            },
        }
    }};
}

/// `sql` with SQLite's `?N` placeholders.
pub fn sqlite(sql: &str) -> String {
    sql.replace('$', "?")
}
