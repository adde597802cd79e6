//! The private query path: repeat a kept release, or charge, query the
//! backend, release, report. Nothing reaches the backend unless the charge
//! is durable; after the charge, every failure is the same uninformative
//! error.

use dpgate_config::Budget;
use dpgate_dp::release::{NoiseDraw, ReleasePlan};
use dpgate_ledger::{
    now_ms, Amount, AuditEntry, ChargeRequest, Exhausted, Finish, LedgerError,
    Outcome as AuditOutcome, Release, Resource, Standing,
};
use dpgate_sql::{sqlstate, Plan, Refusal};
use pgwire::api::Type;

use crate::audit::Who;
use crate::handler::QueryHandler;
use crate::repeat::{self, Kept};
use crate::report::{add_interval_columns, cost_text, fmt_eps, widths_text, Accuracy};
use crate::wire::{output_type, Outcome};

impl QueryHandler {
    /// `user`'s standing now (spent, limit with grants, refresh window).
    pub(crate) async fn standing(&self, user: &str) -> Result<Standing, Refusal> {
        let config = self.shared.config();
        let budget = config.user(user).ok_or_else(|| unknown_user(user))?.budget;
        self.shared
            .ledger
            .standing(user, budget, now_ms())
            .await
            .map_err(|e| ledger_failure(&e.to_string()))
    }

    /// Repeat, or charge, query and release; every path records its audit
    /// entry. A cancel request drops this future, which cancels the
    /// backend query; the charge stands.
    pub(crate) async fn answer(
        &self,
        who: &Who,
        plan: Plan,
        sql: &str,
        accuracy: Accuracy,
    ) -> Outcome {
        let config = self.shared.config();
        let mut entry = who.entry(sql);
        entry.backend_sql = Some(plan.backend_sql.clone());
        let Some(user) = config.user(&who.user) else {
            return self.refused(entry, unknown_user(&who.user)).await;
        };
        // The plan was made under the config of a moment ago; the charge
        // obeys the one in force now.
        let range = (
            config.privacy.min_epsilon_per_query,
            user.max_epsilon_per_query,
        );
        if let Err(e) = crate::handler::check_epsilon(plan.epsilon, range) {
            return self.refused(entry, e).await;
        }
        let confidence = config.privacy.confidence;
        let key = config.cache.enabled.then(|| repeat::key(&plan, confidence));
        if let Some(key) = &key {
            let not_before = config
                .cache
                .max_age
                .map(|a| entry.at_ms.saturating_sub(a.as_millis() as i64))
                .unwrap_or(i64::MIN);
            if let Some(kept) = self.kept(&who.user, key, not_before).await {
                return self.repeat(entry, user.budget, &plan, kept, accuracy).await;
            }
        }
        entry.cost = Amount {
            epsilon: plan.epsilon,
            delta: plan.delta,
        };
        entry.outcome = AuditOutcome::Charged;
        let request = ChargeRequest {
            budget: user.budget,
            dataset: config.privacy.dataset_budget,
            entry: entry.clone(),
        };
        let charge = match self.shared.ledger.charge(request).await {
            Ok(c) => c,
            Err(LedgerError::Exhausted(x)) => {
                entry.cost = Amount::default();
                return self.refused(entry, exhausted(&x)).await;
            }
            Err(e) => return Outcome::Error(ledger_failure(&e.to_string())),
        };
        // Noise is drawn off the request path while the backend query runs
        // (sampling time grows with the magnitude drawn), and only once
        // the charge stands: a refused query must not cost dpgate work.
        // Keys found by partition selection are drawn as they arrive.
        let early_noise = plan
            .groups_before_data()
            .map(|n| draw_noise(plan.release.clone(), n));
        tracing::info!(
            user = who.user,
            epsilon = plan.epsilon,
            delta = plan.delta,
            remaining = charge.remaining.epsilon,
            "charged"
        );
        let answer = match self.release(&plan, early_noise).await {
            Ok(a) => a,
            Err(detail) => {
                let refusal = failed_after_charge();
                let finish = Finish {
                    audit_id: charge.audit_id,
                    outcome: AuditOutcome::Failed,
                    rows: None,
                    error: Some((refusal.code.to_string(), detail)),
                    cache: None,
                };
                if let Err(e) = self.shared.ledger.finish(finish).await {
                    tracing::error!("the failure could not be audited: {e}");
                }
                return Outcome::Error(refusal);
            }
        };
        let kept = Kept {
            rows: answer.rows,
            half_widths: answer.half_widths,
        };
        let finish = Finish {
            audit_id: charge.audit_id,
            outcome: AuditOutcome::Answered,
            rows: Some(kept.rows.len() as i64),
            error: None,
            cache: key.map(|key| Release {
                user: who.user.clone(),
                key,
                at_ms: entry.at_ms,
                body: kept.encode(),
            }),
        };
        // The charge is durable already; a failure here loses only the
        // outcome line and the free repeat, so the answer still goes out.
        if let Err(e) = self.shared.ledger.finish(finish).await {
            tracing::error!("the answer could not be audited: {e}");
        }
        let notice = format!(
            "dpgate: this answer cost {}; {}.{}",
            cost_text(&plan),
            left_text(charge.remaining, charge.limit, plan.delta > 0.0),
            widths_text(&plan, &kept.half_widths, confidence),
        );
        rows_outcome(&plan, kept, accuracy, notice)
    }

    /// A kept release of `key`, if any and readable; a ledger failure
    /// only means the query is charged afresh.
    async fn kept(&self, user: &str, key: &str, not_before: i64) -> Option<Kept> {
        match self.shared.ledger.cached(user, key, not_before).await {
            Ok(body) => body.as_deref().and_then(Kept::decode),
            Err(e) => {
                tracing::warn!("the release cache could not be read: {e}");
                None
            }
        }
    }

    /// Answers from a kept release at no cost.
    async fn repeat(
        &self,
        mut entry: AuditEntry,
        budget: Budget,
        plan: &Plan,
        kept: Kept,
        accuracy: Accuracy,
    ) -> Outcome {
        entry.outcome = AuditOutcome::Cached;
        entry.rows = Some(kept.rows.len() as i64);
        let left = match self
            .shared
            .ledger
            .standing(&entry.user, budget, entry.at_ms)
            .await
        {
            Ok(s) => format!("; {}", left_text(s.remaining(), s.limit, false)),
            Err(_) => String::new(),
        };
        if let Err(e) = self.shared.ledger.append(entry).await {
            return Outcome::Error(ledger_failure(&e.to_string()));
        }
        let notice =
            format!(
            "dpgate: this answer repeats an earlier release of the same query, at no cost{left}.{}",
            widths_text(plan, &kept.half_widths, self.shared.config().privacy.confidence),
        );
        rows_outcome(plan, kept, accuracy, notice)
    }

    /// Records a refusal and returns it.
    async fn refused(&self, mut entry: AuditEntry, refusal: Refusal) -> Outcome {
        entry.outcome = AuditOutcome::Refused;
        entry.code = Some(refusal.code.to_string());
        entry.detail = Some(refusal.message.clone());
        self.shared.ledger.record(entry).await;
        Outcome::Error(refusal)
    }

    /// Runs the backend query and releases its groups; on failure, the
    /// detail for the log and the audit (never for the analyst).
    async fn release(
        &self,
        plan: &Plan,
        early_noise: Option<tokio::task::JoinHandle<Vec<NoiseDraw>>>,
    ) -> Result<dpgate_sql::Answer, String> {
        let config = self.shared.config();
        // Rows stream into a sink that keeps only what can be released
        // (and draws the noise of keys found by selection as they arrive).
        let collected = self
            .shared
            .backend
            .fetch_into(plan, plan.collector(config.privacy.max_groups))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, sql = %plan.backend_sql, "backend query failed after charge");
                e.to_string()
            })?
            .finish();
        if collected.truncated {
            tracing::info!(
                max_groups = config.privacy.max_groups,
                "more keys passed partition selection than privacy.max_groups; the first in key order are released"
            );
        }
        let draws = match early_noise {
            Some(draws) => draws.await.map_err(|e| {
                tracing::error!("noise sampling failed: {e}");
                format!("noise sampling failed: {e}")
            })?,
            None => collected.draws,
        };
        Ok(plan.finish(&collected.groups, &draws, config.privacy.confidence))
    }
}

/// The rows of an answer with their notice, and interval columns if asked.
fn rows_outcome(plan: &Plan, kept: Kept, accuracy: Accuracy, notice: String) -> Outcome {
    let mut fields: Vec<(String, Type)> = plan
        .columns
        .iter()
        .map(|c| (c.name.clone(), output_type(c.ty)))
        .collect();
    let mut rows = kept.rows;
    if accuracy == Accuracy::Columns {
        add_interval_columns(plan, &mut fields, &mut rows, &kept.half_widths);
    }
    Outcome::Rows {
        fields,
        rows,
        notice: Some(notice),
    }
}

/// `0.4 of ε = 3 remain` (and δ when the query spent δ).
fn left_text(remaining: Amount, limit: Amount, with_delta: bool) -> String {
    let mut s = format!(
        "{} of ε = {} remain",
        fmt_eps(remaining.epsilon),
        fmt_eps(limit.epsilon)
    );
    if with_delta {
        s.push_str(&format!(", {:e} of δ = {:e}", remaining.delta, limit.delta));
    }
    s
}

/// The refusal for a charge that does not fit, saying which budget and
/// what to do.
fn exhausted(x: &Exhausted) -> Refusal {
    let window = match x.refresh {
        Some(r) => format!(" in the last {}", humantime_short(r)),
        None => String::new(),
    };
    let left = (x.budget - x.spent).max(0.0);
    let (amount, left) = match x.resource {
        Resource::Epsilon => (fmt_eps(x.cost), fmt_eps(left)),
        Resource::Delta => (format!("{:e}", x.cost), format!("{left:e}")),
    };
    let symbol = x.resource.symbol();
    let (message, hint) = if x.dataset {
        (
            // What the others spent is theirs: say only that it is spent.
            format!("the dataset's privacy budget, shared by all analysts, does not cover this query ({symbol} = {amount}); nothing was run or charged{window}"),
            "the data owner caps what all analysts together may learn; ask them, or wait for the refresh window if there is one",
        )
    } else if x.resource == Resource::Delta {
        (
            format!("privacy budget exhausted: this query costs δ = {amount} because its groups are found in the data, but only {left} of δ = {:e} remain{window}", x.budget),
            "declare the group column's values in proxy.toml (then no δ is spent), or ask the data owner for more δ budget",
        )
    } else {
        (
            format!("privacy budget exhausted: this query costs ε = {amount}, but only {left} of ε = {} remain{window}", fmt_eps(x.budget)),
            "lower the cost with SET dp.epsilon = <smaller value>, or ask the data owner for more budget",
        )
    };
    Refusal::new(sqlstate::BUDGET_EXHAUSTED, message, hint)
}

/// `30d`, `12h`: a refresh window as proxy.toml would write it.
fn humantime_short(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn unknown_user(user: &str) -> Refusal {
    Refusal::new(
        sqlstate::INVALID_AUTHORIZATION,
        format!("user {user:?} is no longer declared in proxy.toml"),
        "ask the data owner to declare the user again; reconnect afterwards",
    )
}

/// Draws noise for `groups` groups in a blocking task.
fn draw_noise(release: ReleasePlan, groups: usize) -> tokio::task::JoinHandle<Vec<NoiseDraw>> {
    tokio::task::spawn_blocking(move || {
        let mut rng = dpgate_dp::secure_rng();
        (0..groups).map(|_| release.draw_noise(&mut rng)).collect()
    })
}

/// The one error every failure after the charge gets: it must not depend
/// on the data, so it carries no detail (the log has it).
fn failed_after_charge() -> Refusal {
    Refusal::new(
        sqlstate::BACKEND_FAILED,
        "the private query could not be completed; its cost has been charged",
        "retry later; if it keeps failing, ask the data owner to check the backend",
    )
}

pub(crate) fn ledger_failure(detail: &str) -> Refusal {
    tracing::error!(detail, "ledger failure");
    Refusal::new(
        sqlstate::LEDGER_FAILED,
        "the privacy ledger could not be read or written, so nothing was run or charged",
        "retry later; the data owner should check the ledger (dpgate's log has the cause)",
    )
}
