//! The private-answer service without any wire protocol: one context per
//! statement, so a reload between the charge and the release changes
//! nothing the statement uses; and the cost charged is the release's.

use std::path::Path;
use std::sync::Arc;

use dpgate_config::{Config, LedgerStore};
use dpgate_ledger::{AuditFilter, Ledger, Outcome};
use dpgate_service::Service;
use dpgate_sql::{route, Statement};

fn config_text(dir: &Path, confidence: f64, max_epsilon: f64, with_user: bool) -> String {
    let user = if with_user {
        r#"
[[users]]
name = "analyst"
password = "env:P"
epsilon_budget = 10
"#
    } else {
        r#"
[[users]]
name = "other"
password = "env:P"
epsilon_budget = 10
"#
    };
    format!(
        r#"
[backend]
sqlite = "{}"
[ledger]
path = "{}"
[privacy]
default_epsilon = 0.05
max_epsilon_per_query = {max_epsilon}
confidence = {confidence}
{user}
[[tables]]
name = "visits"
csv = "{}"
privacy_unit = "patient_id"
max_rows_per_unit = 2
columns.age = {{ type = "int", lower = 0, upper = 100 }}
"#,
        dir.join("data.db").display(),
        dir.join("ledger.sqlite").display(),
        dir.join("visits.csv").display(),
    )
}

fn parse(text: &str) -> Config {
    Config::parse(text, &|_| Some("secret".into())).expect("valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_between_charge_and_release_changes_nothing_the_statement_uses() {
    let dir = tempfile::tempdir().unwrap();
    let mut csv = String::from("patient_id,age\n");
    for i in 0..500 {
        csv.push_str(&format!("{},{}\n", i % 200, 20 + i % 50));
    }
    std::fs::write(dir.path().join("visits.csv"), csv).unwrap();
    let before = parse(&config_text(dir.path(), 0.95, 1.0, true));
    let ledger = Arc::new(
        Ledger::open(&LedgerStore::Sqlite(dir.path().join("ledger.sqlite")))
            .await
            .unwrap(),
    );
    let backend = dpgate_backend::connect(&before).await.unwrap();
    let service = Service::new(before, ledger.clone(), backend, None);

    let text = "SELECT COUNT(*) AS n, SUM(age) AS s FROM visits";
    let ctx = service.context("analyst", "test", dpgate_sql::Ask::at(0.5));
    let routed = route(text, &ctx.config, false).unwrap();
    let Statement::Private(prepared) = &routed[0].statement else {
        panic!("{routed:?}")
    };
    let plan = service.plan(&ctx, prepared, &[]).await.unwrap();
    let cost = plan.cost();
    let expected_widths = plan.release.half_widths(0.95);
    let charged = match service.charge(&ctx, plan, text).await.unwrap() {
        Ok(c) => c,
        Err(_) => panic!("nothing was kept yet"),
    };

    // The data owner lowers confidence, caps ε below this statement's and
    // removes the analyst, all between the charge and the release.
    let after = parse(&config_text(dir.path(), 0.5, 0.1, false));
    service.reload(after).await.unwrap();

    let answer = service.release(&ctx, charged).await.unwrap();
    assert_eq!(answer.confidence, 0.95, "the release read the new config");
    assert_eq!(answer.cost.as_ref(), Some(&cost));
    for (got, want) in answer.half_widths[0].iter().zip(&expected_widths) {
        assert_eq!(got, want, "half-widths at the statement's confidence");
    }
    assert_eq!(answer.rows.len(), 1);

    // The ledger charged exactly what the release reports.
    ledger.flush().await;
    let records = ledger.audit(AuditFilter::default()).await.unwrap();
    let charged: Vec<_> = records
        .iter()
        .filter(|r| r.entry.outcome == Outcome::Answered)
        .collect();
    assert_eq!(charged.len(), 1, "{records:?}");
    assert_eq!(charged[0].entry.cost.epsilon, cost.epsilon_f64());
    assert_eq!(charged[0].entry.cost.delta, cost.delta);

    // The next statement takes the new config: the analyst is gone.
    let next = service.context("analyst", "test", dpgate_sql::Ask::at(0.05));
    assert_eq!(next.config.privacy.confidence, 0.5);
    let routed = route(text, &next.config, false).unwrap();
    let Statement::Private(prepared) = &routed[0].statement else {
        panic!()
    };
    let refused = match service.plan(&next, prepared, &[]).await {
        Ok(plan) => service.answer(&next, plan, text).await.unwrap_err(),
        Err(e) => e,
    };
    assert!(
        ["28000", "22023"].contains(&refused.code.as_ref()),
        "{refused:?}"
    );
}
