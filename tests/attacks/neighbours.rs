//! D and D′ (D plus one person's rows) on PostgreSQL and on SQLite, and
//! the raw pre-noise groups of a planned query on both: the attack
//! tests that check a measurement, or the set of groups, against what
//! one person may change.

use std::sync::Arc;

use dpgate_backend::Backend;
use dpgate_config::Config;
use dpgate_sql::RawGroup;

use crate::common::*;

/// One backend's D and D′, and the config to plan for it.
pub(crate) struct Neighbours {
    pub config: Config,
    pub d: Arc<dyn Backend>,
    pub d_prime: Arc<dyn Backend>,
}

/// D = `pg.0` and D′ = `pg.0` then `pg.1` in PostgreSQL databases named
/// after `name`; the same from `lite` in SQLite files under `dir`
/// (each engine's own SQL: SQLite has no generate_series); `tables` is
/// the proxy.toml declaration of what they hold.
pub(crate) async fn on_both(
    name: &str,
    pg: (&str, &str),
    lite: (&str, &str),
    tables: &str,
    dir: &std::path::Path,
) -> Vec<Neighbours> {
    let toml = |backend: &str| {
        format!(
            "[backend]\n{backend}\n[ledger]\npath = \"{}\"\n[privacy]\ndelta = 1e-6\n\
             [[users]]\nname = \"a\"\npassword = \"env:P\"\nepsilon_budget = 1\n{tables}",
            dir.join("l.sqlite").display()
        )
    };
    let parse = |text: String| Config::parse(&text, &|_| Some("x".into())).unwrap();
    let mut backends = Vec::new();
    for (suffix, sql) in [
        ("d", pg.0.to_string()),
        ("dprime", format!("{} {}", pg.0, pg.1)),
    ] {
        let db = empty_database(&format!("{name}_{suffix}")).await;
        connect_direct(&cluster().url(&db))
            .await
            .batch_execute(&sql)
            .await
            .unwrap();
        backends.push(format!("url = \"{}\"", cluster().url(&db)));
    }
    for (suffix, sql) in [
        ("d", lite.0.to_string()),
        ("dprime", format!("{} {}", lite.0, lite.1)),
    ] {
        let file = dir.join(format!("{name}_{suffix}.db"));
        rusqlite::Connection::open(&file)
            .unwrap()
            .execute_batch(&sql)
            .unwrap();
        backends.push(format!("sqlite = \"{}\"", file.display()));
    }
    let mut pairs = Vec::new();
    for pair in backends.chunks(2) {
        let config = parse(toml(&pair[0]));
        let mut d_prime = parse(toml(&pair[1]));
        let d = dpgate_backend::connect(&config).await.unwrap();
        let d_prime_backend = dpgate_backend::connect(&d_prime).await.unwrap();
        dpgate_backend::read_schema(&mut d_prime, d_prime_backend.as_ref()).await;
        let mut config = config;
        dpgate_backend::read_schema(&mut config, d.as_ref()).await;
        pairs.push(Neighbours {
            config,
            d,
            d_prime: d_prime_backend,
        });
    }
    pairs
}

impl Neighbours {
    /// `sql` planned for this backend, and its raw groups on D and D′.
    pub(crate) async fn groups(
        &self,
        sql: &str,
    ) -> (dpgate_sql::Plan, Vec<RawGroup>, Vec<RawGroup>) {
        let dpgate_sql::Command::Private(q) = dpgate_sql::classify(sql).unwrap().remove(0) else {
            panic!("not private: {sql}")
        };
        let p = dpgate_sql::plan(&q, &self.config, 1.0).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        let a = self
            .d
            .fetch(&p)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let b = self
            .d_prime
            .fetch(&p)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        (p, a, b)
    }

    /// Where D′ moved a measurement of some group (present in either, a
    /// group missing from one counting as zeros there) further than its
    /// declared sensitivity: one line each.
    pub(crate) fn beyond(
        &self,
        sql: &str,
        p: &dpgate_sql::Plan,
        a: &[RawGroup],
        b: &[RawGroup],
    ) -> Vec<String> {
        let values = |groups: &[RawGroup], keys: &[Option<String>]| -> Vec<i64> {
            groups
                .iter()
                .find(|g| g.keys == keys)
                .map_or_else(|| vec![0; p.release.raw_len()], |g| g.values.clone())
        };
        let mut keys: Vec<&Vec<Option<String>>> = a.iter().chain(b).map(|g| &g.keys).collect();
        keys.sort();
        keys.dedup();
        let mut out = Vec::new();
        for k in keys {
            let (va, vb) = (values(a, k), values(b, k));
            let mut at = 0;
            for (i, m) in p.release.measurements.iter().enumerate() {
                let change: u64 = (at..at + m.len)
                    .map(|j| (vb[j] - va[j]).unsigned_abs())
                    .sum();
                at += m.len;
                if change > m.noise.sensitivity() {
                    out.push(format!(
                        "{:?} {sql} {k:?}: measurement {i} moved by {change} > {}",
                        self.d.dialect(),
                        m.noise.sensitivity()
                    ));
                }
            }
        }
        out
    }

    /// Each group of `before` (the data without the person) that
    /// `after` (with the person) no longer has under the same key: one
    /// person may add a group, never rename or drop another.
    pub(crate) fn vanished(
        &self,
        sql: &str,
        before: &[RawGroup],
        after: &[RawGroup],
    ) -> Vec<String> {
        before
            .iter()
            .filter(|g| !after.iter().any(|h| h.keys == g.keys))
            .map(|g| format!("{:?} {sql}: group {:?} vanished", self.d.dialect(), g.keys))
            .collect()
    }
}
