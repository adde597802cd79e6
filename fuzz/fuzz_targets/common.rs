//! What the SQL targets share: the catalog they plan against, and the
//! whole front end run on one statement text.

use dpgate_config::Config;
use dpgate_sql::Statement;

/// A config with private, row-level and public tables of every type.
pub fn config() -> Config {
    Config::parse(
        r#"
[backend]
url = "postgres://x@127.0.0.1/db"
[privacy]
delta = 1e-6
[[users]]
name = "a"
password = "env:P"
epsilon_budget = 1
[[tables]]
name = "visits"
privacy_unit = "patient_id"
max_rows_per_unit = 5
columns.age = { type = "int", lower = 0, upper = 110 }
columns.cost = { type = "float", lower = 0, upper = 5000 }
columns.ward = { type = "text", values = ["A", "B"] }
columns.visit_date = { type = "date" }
columns.at = { type = "timestamp" }
columns.diagnosis = { type = "text" }
columns.urgent = { type = "bool" }
[tables.synthetic]
epsilon = 1
[[tables]]
name = "patients"
privacy_unit = "patient_id"
max_rows_per_unit = 1
columns.birth_year = { type = "int", lower = 1900, upper = 2025 }
columns.sex = { type = "text", values = ["F", "M"] }
[[tables]]
name = "events"
columns.score = { type = "int", lower = -10, upper = 3 }
[[tables]]
name = "wards"
public = true
columns.ward = { type = "text" }
"#,
        &|_| Some("x".into()),
    )
    .expect("the fuzz config is valid")
}

/// What a catalog query and a constant may read about the session.
struct Session;

impl dpgate_sql::constant::SessionInfo for Session {
    fn user(&self) -> String {
        "analyst".into()
    }
    fn database(&self) -> String {
        "db".into()
    }
    fn setting(&self, name: &str) -> Option<String> {
        (name == "search_path").then(|| "*/ ; SELECT 1; /*".into())
    }
}

/// Routes `sql` through the front door as the server does (with a shadow
/// catalog), rewrites catalog statements, evaluates constants, and plans
/// every private statement at a few ε, with its parameters bound to NULL;
/// then post-processes an empty and a one-group backend answer. Any
/// refusal is fine; a panic, an overflow or a hang is the bug.
pub fn front_end(sql: &str, config: &Config) {
    let _ = dpgate_sql::catalog::split_statements(sql);
    let Ok(routed) = dpgate_sql::route(sql, config, true) else {
        return;
    };
    for r in routed {
        let prepared = match r.statement {
            Statement::Catalog => {
                let _ = dpgate_sql::catalog::prepare_catalog_sql(&r.text, &Session);
                continue;
            }
            Statement::Constant(items) => {
                let _ = dpgate_sql::constant::evaluate_constant(&items, &Session);
                continue;
            }
            Statement::Synthetic { read, .. } => {
                let _ = dpgate_sql::catalog::prepare_catalog_sql(&read.sql, &Session);
                continue;
            }
            Statement::Private(p) | Statement::Explain(p) => p,
            Statement::Session(_) | Statement::Refused(_) => continue,
        };
        use dpgate_sql::{Mechanism, Split};
        for (epsilon, split, mechanism) in [
            (1e-3, Split::Optimal, Mechanism::Auto),
            (0.1, Split::Equal, Mechanism::Gaussian),
            (1.0, Split::Optimal, Mechanism::Laplace),
        ] {
            let ask = dpgate_sql::Ask {
                split,
                mechanism,
                ..dpgate_sql::Ask::at(epsilon)
            };
            let Ok(p) = prepared.describe(&ask, config) else {
                continue;
            };
            let _ = p.explain_lines(0.95);
            let raw = vec![dpgate_sql::RawGroup {
                keys: vec![Some("1".into()); p.grouping.key_count()],
                values: vec![3; p.release.raw_len()],
            }];
            for groups in [vec![], raw] {
                let arranged = p.arrange(groups);
                let mut rng = dpgate_dp::secure_rng();
                let draws: Vec<_> = arranged
                    .iter()
                    .map(|_| p.release.draw_noise(&mut rng))
                    .collect();
                let _ = p.finish(&arranged, &draws, 0.95);
            }
        }
    }
}
