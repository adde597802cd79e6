//! The private path: repeat a kept release, or charge, query the backend,
//! release. Nothing reaches the backend unless the charge is durable;
//! after the charge, every failure is the same uninformative error. Every
//! path leaves its audit entry. Everything is read from the statement's
//! [`Context`], never from the config in force later.

use dpgate_dp::release::{Cost, NoiseDraw, ReleasePlan};
use dpgate_ledger::{
    Amount, AuditEntry, ChargeRequest, Finish, LedgerError, Outcome as AuditOutcome, Release,
    Standing,
};
use dpgate_sql::Cell;
use dpgate_sql::{Plan, Prepared, Refusal, TargetMet};

use crate::kept::Kept;
use crate::refusals::{
    check_epsilon, exhausted, failed_after_charge, ledger_failure, uncharged_rho, unknown_user,
};
use crate::{Context, Service};

/// A private answer, with what it cost and how accurate it is, for a
/// front end to frame.
#[derive(Clone, Debug)]
pub struct PrivateAnswer {
    /// Released rows, after post-processing.
    pub rows: Vec<Vec<Cell>>,
    /// Per row, per column: the interval half-width where one is known.
    pub half_widths: Vec<Vec<Option<f64>>>,
    /// What this answer was charged; `None` for a free repeat.
    pub cost: Option<Cost>,
    /// The user's remaining budget and limit after it, when known.
    pub standing: Option<(Amount, Amount)>,
    /// Confidence level of the half-widths (from the statement's config).
    pub confidence: f64,
    /// The accuracy target the charged ε was chosen to meet, if any.
    pub target: Option<TargetMet>,
    /// The audit log's id of the charge (`None` for a free repeat).
    pub query_id: Option<i64>,
}

/// A query whose cost is durably charged, ready to be released.
pub struct Charged {
    plan: Plan,
    entry: AuditEntry,
    audit_id: i64,
    key: Option<String>,
    remaining: Amount,
    limit: Amount,
    early_noise: Option<tokio::task::JoinHandle<Vec<NoiseDraw>>>,
}

/// Either an answer already (a free repeat) or a charge to release.
enum Admitted {
    Repeat(Box<PrivateAnswer>),
    Charged(Box<Charged>),
}

impl Service {
    /// The plan of `prepared` bound to `values` at the context's ε, which
    /// must lie in the user's range in the context's config; or, with an
    /// accuracy target, at the least ε that meets it, which must lie in
    /// that range and within the user's remaining budget.
    pub async fn plan(
        &self,
        ctx: &Context,
        prepared: &Prepared,
        values: &[Cell],
    ) -> Result<Plan, Refusal> {
        let Some(target) = &ctx.ask.target else {
            check_epsilon(ctx.ask.epsilon, ctx.epsilon_range())?;
            return prepared.bind(values, &ctx.ask, &ctx.config);
        };
        let (min, per_query) = ctx.epsilon_range();
        let remaining = self.standing(ctx).await?.remaining().epsilon;
        let (max, why) = if remaining < per_query {
            (remaining, "left in your budget")
        } else {
            (per_query, "one query may spend")
        };
        prepared.bind_to_target(
            values,
            &ctx.ask,
            &ctx.config,
            target,
            (min, max),
            why,
            ctx.config.privacy.confidence,
        )
    }

    /// `user`'s standing now (spent, limit with grants, refresh window).
    pub async fn standing(&self, ctx: &Context) -> Result<Standing, Refusal> {
        let budget = ctx.account().ok_or_else(|| unknown_user(&ctx.user))?.budget;
        self.ledger
            .standing(&ctx.user, budget, dpgate_ledger::now_ms())
            .await
            .map_err(|e| ledger_failure(&e.to_string()))
    }

    /// Answers `plan` (the statement `text`): a free repeat, or charge →
    /// backend → release. A dropped future cancels the backend query; the
    /// charge stands.
    pub async fn answer(
        &self,
        ctx: &Context,
        plan: Plan,
        text: &str,
    ) -> Result<PrivateAnswer, Refusal> {
        use crate::metrics::QueryOutcome;
        let started = std::time::Instant::now();
        let result = match self.admit(ctx, plan, text).await {
            Ok(Admitted::Repeat(answer)) => Ok(*answer),
            Ok(Admitted::Charged(charged)) => self.release(ctx, *charged).await,
            Err(e) => Err(e),
        };
        let (outcome, epsilon) = match &result {
            Ok(a) => match &a.cost {
                Some(c) => (QueryOutcome::Answered, c.epsilon_f64()),
                None => (QueryOutcome::Repeated, 0.0),
            },
            Err(e) if e.code == dpgate_sql::sqlstate::BACKEND_FAILED => (QueryOutcome::Failed, 0.0),
            Err(_) => (QueryOutcome::Refused, 0.0),
        };
        self.metrics.query(outcome, epsilon, started.elapsed());
        result
    }

    /// The first half of [`Self::answer`]: the durable charge (refused
    /// if it does not fit), or `Err` with the answer when a kept release
    /// repeats it for free.
    pub async fn charge(
        &self,
        ctx: &Context,
        plan: Plan,
        text: &str,
    ) -> Result<Result<Charged, PrivateAnswer>, Refusal> {
        Ok(match self.admit(ctx, plan, text).await? {
            Admitted::Charged(c) => Ok(*c),
            Admitted::Repeat(a) => Err(*a),
        })
    }

    async fn admit(&self, ctx: &Context, plan: Plan, text: &str) -> Result<Admitted, Refusal> {
        let config = &ctx.config;
        let mut entry = ctx.entry(text);
        entry.backend_sql = Some(plan.backend_sql.clone());
        let Some(user) = ctx.account() else {
            return Err(self.refused(entry, unknown_user(&ctx.user)).await);
        };
        let confidence = config.privacy.confidence;
        let key = config.cache.enabled.then(|| plan.fingerprint(confidence));
        if let Some(key) = &key {
            let not_before = config
                .cache
                .max_age
                .map(|a| entry.at_ms.saturating_sub(a.as_millis() as i64))
                .unwrap_or(i64::MIN);
            if let Some(kept) = self.kept(&ctx.user, key, not_before).await {
                return self.repeat(entry, user.budget, kept, confidence).await;
            }
        }
        // The ledger charges exactly what the release reports: ε and δ,
        // a Gaussian part as the (ε, δ) that covers its ρ. A plan whose ρ
        // is not covered is refused rather than half-charged.
        let cost = plan.cost();
        if !cost.covered {
            return Err(self.refused(entry, uncharged_rho()).await);
        }
        entry.rho = cost.rho.to_f64();
        entry.cost = Amount {
            epsilon: cost.epsilon_f64(),
            delta: cost.delta,
        };
        entry.outcome = AuditOutcome::Charged;
        let request = ChargeRequest {
            budget: user.budget,
            dataset: config.privacy.dataset_budget,
            entry: entry.clone(),
        };
        let charge = match self.ledger.charge(request).await {
            Ok(c) => c,
            Err(LedgerError::Exhausted(x)) => {
                entry.cost = Amount::default();
                return Err(self.refused(entry, exhausted(&x)).await);
            }
            Err(e) => return Err(ledger_failure(&e.to_string())),
        };
        tracing::info!(
            user = ctx.user,
            epsilon = entry.cost.epsilon,
            delta = entry.cost.delta,
            remaining = charge.remaining.epsilon,
            "charged"
        );
        // Noise is drawn off the request path while the backend query runs
        // (sampling time grows with the magnitude drawn), and only once
        // the charge stands: a refused query must not cost dpgate work.
        // Keys found by partition selection are drawn as they arrive.
        let early_noise = plan
            .groups_before_data()
            .map(|n| draw_noise(plan.release.clone(), n));
        Ok(Admitted::Charged(Box::new(Charged {
            plan,
            entry,
            audit_id: charge.audit_id,
            key,
            remaining: charge.remaining,
            limit: charge.limit,
            early_noise,
        })))
    }

    /// The second half of [`Self::answer`]: backend → release, under the
    /// context the charge was made in.
    pub async fn release(&self, ctx: &Context, charged: Charged) -> Result<PrivateAnswer, Refusal> {
        let Charged {
            plan,
            entry,
            audit_id,
            key,
            remaining,
            limit,
            early_noise,
        } = charged;
        let confidence = ctx.config.privacy.confidence;
        let answer = match self.run(ctx, &plan, early_noise).await {
            Ok(a) => a,
            Err(detail) => {
                let refusal = failed_after_charge();
                let finish = Finish {
                    audit_id,
                    outcome: AuditOutcome::Failed,
                    rows: None,
                    error: Some((refusal.code.to_string(), detail)),
                    cache: None,
                };
                if let Err(e) = self.ledger.finish(finish).await {
                    tracing::error!("the failure could not be audited: {e}");
                }
                return Err(refusal);
            }
        };
        let kept = Kept {
            rows: answer.rows,
            half_widths: answer.half_widths,
        };
        let finish = Finish {
            audit_id,
            outcome: AuditOutcome::Answered,
            rows: Some(kept.rows.len() as i64),
            error: None,
            cache: key.map(|key| Release {
                user: ctx.user.clone(),
                key,
                at_ms: entry.at_ms,
                body: kept.encode(),
            }),
        };
        // The charge is durable already; a failure here loses only the
        // outcome line and the free repeat, so the answer still goes out.
        if let Err(e) = self.ledger.finish(finish).await {
            tracing::error!("the answer could not be audited: {e}");
        }
        Ok(PrivateAnswer {
            rows: kept.rows,
            half_widths: kept.half_widths,
            cost: Some(plan.cost()),
            standing: Some((remaining, limit)),
            confidence,
            target: plan.target.clone(),
            query_id: Some(audit_id),
        })
    }

    /// A kept release of `key`, if any and readable; a ledger failure
    /// only means the query is charged afresh.
    async fn kept(&self, user: &str, key: &str, not_before: i64) -> Option<Kept> {
        match self.ledger.cached(user, key, not_before).await {
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
        budget: dpgate_config::Budget,
        kept: Kept,
        confidence: f64,
    ) -> Result<Admitted, Refusal> {
        entry.outcome = AuditOutcome::Cached;
        entry.rows = Some(kept.rows.len() as i64);
        let standing = self
            .ledger
            .standing(&entry.user, budget, entry.at_ms)
            .await
            .ok()
            .map(|s| (s.remaining(), s.limit));
        if let Err(e) = self.ledger.append(entry).await {
            return Err(ledger_failure(&e.to_string()));
        }
        Ok(Admitted::Repeat(Box::new(PrivateAnswer {
            rows: kept.rows,
            half_widths: kept.half_widths,
            cost: None,
            standing,
            confidence,
            target: None,
            query_id: None,
        })))
    }

    /// Records a refusal and returns it.
    pub async fn refused(&self, mut entry: AuditEntry, refusal: Refusal) -> Refusal {
        entry.outcome = AuditOutcome::Refused;
        entry.code = Some(refusal.code.to_string());
        entry.detail = Some(refusal.message.clone());
        self.ledger.record(entry).await;
        refusal
    }

    /// Runs the backend query and releases its groups; on failure, the
    /// detail for the log and the audit (never for the analyst).
    async fn run(
        &self,
        ctx: &Context,
        plan: &Plan,
        early_noise: Option<tokio::task::JoinHandle<Vec<NoiseDraw>>>,
    ) -> Result<dpgate_sql::Answer, String> {
        let privacy = &ctx.config.privacy;
        // Rows stream into a sink that keeps only what can be released
        // (and draws the noise of keys found by selection as they arrive).
        let mut collector = plan.collector(privacy.max_groups);
        self.backend
            .fetch_into(dpgate_backend::BackendQuery::of(plan), &mut collector)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, sql = %plan.backend_sql, "backend query failed after charge");
                e.to_string()
            })?;
        let collected = collector.finish();
        if collected.truncated {
            tracing::info!(
                max_groups = privacy.max_groups,
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
        Ok(plan.finish(&collected.groups, &draws, privacy.confidence))
    }
}

/// Draws noise for `groups` groups in a blocking task.
fn draw_noise(release: ReleasePlan, groups: usize) -> tokio::task::JoinHandle<Vec<NoiseDraw>> {
    tokio::task::spawn_blocking(move || {
        let mut rng = dpgate_dp::secure_rng();
        (0..groups).map(|_| release.draw_noise(&mut rng)).collect()
    })
}
