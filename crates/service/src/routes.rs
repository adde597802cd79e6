//! Routed statement strings kept for reuse. Routing a string (parsing,
//! sorting each statement, resolving a private statement's FROM and
//! parameter types) is a pure function of the string and the config, and
//! it was a fifth of dpgate's CPU time per query; clients send the same
//! strings again and again (dashboards, pools, drivers' simple protocol).
//!
//! Each user has a cache of their own, bounded in entries and in the
//! length of the strings it keeps, and emptied whole when full (the
//! statements in use come back at once): how fast one analyst's statement
//! is routed says nothing about what another sent or how much, and no
//! analyst can empty another's. Users are those proxy.toml declares, so
//! the whole is bounded too. An entry holds the config it was routed
//! under and is used only while that config is in force: a reload routes
//! every string again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use dpgate_config::Config;
use dpgate_sql::{Refusal, Routed};

/// Entries kept at most per user.
const CAPACITY: usize = 64;

/// Longest string kept; longer ones are routed on every use.
const MAX_TEXT: usize = 4096;

/// A string's statements under one config, or why it cannot be read.
#[derive(Debug)]
pub struct Routing {
    /// The config it was routed under.
    pub config: Arc<Config>,
    /// Its statements, shared by every use.
    pub routed: Result<Arc<[Routed]>, Refusal>,
}

/// Whether a shadow catalog answers schema queries, and the string.
type Key = (bool, String);

/// One user's routed strings.
type Entries = HashMap<Key, Arc<Routing>>;

/// The cache ([`crate::Service::route`]), per user.
#[derive(Default)]
pub(crate) struct Routes {
    users: Mutex<HashMap<String, Entries>>,
}

impl Routes {
    /// `text` routed under `config`: kept, or routed now and kept.
    pub fn get(&self, user: &str, text: &str, config: &Arc<Config>, catalog: bool) -> Arc<Routing> {
        let key = (catalog, text.to_string());
        if let Some(hit) = self.lock().get(user).and_then(|e| e.get(&key)) {
            if Arc::ptr_eq(&hit.config, config) {
                return hit.clone();
            }
        }
        // Routed outside the lock: a long statement takes a while.
        let routing = Arc::new(Routing {
            config: config.clone(),
            routed: dpgate_sql::route(text, config, catalog).map(Arc::from),
        });
        if text.len() <= MAX_TEXT {
            let mut users = self.lock();
            let entries = users.entry(user.to_string()).or_default();
            // Freed after the lock is released.
            let full = (entries.len() >= CAPACITY).then(|| std::mem::take(entries));
            entries.insert(key, routing.clone());
            drop(users);
            drop(full);
        }
        routing
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entries>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Arc<Config> {
        Arc::new(
            Config::parse(
                r#"
[backend]
url = "postgres://reader:r@localhost/db"
[ledger]
path = "ledger.sqlite"
[[users]]
name = "analyst"
password = "env:PW"
epsilon_budget = 1.0
[[tables]]
name = "visits"
privacy_unit = "patient_id"
max_rows_per_unit = 5
columns.age = { type = "int", lower = 0, upper = 110 }
"#,
                &|_| Some("pw".into()),
            )
            .unwrap(),
        )
    }

    /// A string is routed once per user and config: the same user gets
    /// the kept routing, another user and a reloaded config do not.
    #[test]
    fn kept_per_user_and_config() {
        let routes = Routes::default();
        let (a, b) = (config(), config());
        let sql = "SELECT COUNT(*) FROM visits";
        let first = routes.get("ann", sql, &a, true);
        assert!(Arc::ptr_eq(&first, &routes.get("ann", sql, &a, true)));
        assert!(!Arc::ptr_eq(&first, &routes.get("bob", sql, &a, true)));
        assert!(!Arc::ptr_eq(&first, &routes.get("ann", sql, &a, false)));
        let reloaded = routes.get("ann", sql, &b, true);
        assert!(!Arc::ptr_eq(&first, &reloaded));
        assert!(Arc::ptr_eq(&reloaded.config, &b));
        assert!(Arc::ptr_eq(&reloaded, &routes.get("ann", sql, &b, true)));
        assert_eq!(first.routed.as_ref().unwrap().len(), 1);
    }

    /// A user's cache never holds more than its capacity, nor long
    /// strings, and filling it leaves other users' entries alone.
    #[test]
    fn bounded_per_user() {
        let routes = Routes::default();
        let c = config();
        let sql = "SELECT COUNT(*) FROM visits";
        let bob = routes.get("bob", sql, &c, false);
        for i in 0..CAPACITY * 3 {
            let text = format!("SELECT COUNT(*) + {i} FROM visits");
            routes.get("ann", &text, &c, false);
            let kept = routes.lock()["ann"].len();
            assert!(kept <= CAPACITY && kept == i % CAPACITY + 1, "{i}: {kept}");
        }
        assert!(Arc::ptr_eq(&bob, &routes.get("bob", sql, &c, false)));
        let long = format!(
            "SELECT COUNT(*) FROM visits WHERE age > {}",
            "1".repeat(MAX_TEXT)
        );
        let first = routes.get("ann", &long, &c, false);
        assert!(!Arc::ptr_eq(&first, &routes.get("ann", &long, &c, false)));
    }
}
