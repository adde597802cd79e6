//! One fit, start to end: the value selections and marginal plans made
//! before the charge, the charge, the backend queries, the MST fit and
//! the kept result, in a task no request can cancel.

use std::collections::BTreeMap;
use std::sync::Arc;

use dpgate_config::{Budget, Config, Synthetic, Table, TablePrivacy, SYNTHETIC_ACCOUNT};
use dpgate_dp::mst::{self, Fit, RawMarginals};
use dpgate_dp::rational::Rational;
use dpgate_ledger::{
    Amount, AuditEntry, ChargeRequest, Finish, LedgerError, Outcome as AuditOutcome, Release,
};
use dpgate_sql::synth::{marginal_sql, Attribute, Attributes, OTHER};
use dpgate_sql::{sqlstate, Cell, Command, Refusal};
use rand::Rng;

use crate::refusals::{exhausted, failed_after_charge, ledger_failure};
use crate::Context;

use super::stored::encode;
use super::SyntheticModel;

/// Everything one fit needs, owned, so that it runs to its end in a task
/// of its own whatever happens to the request that started it.
pub(super) struct FitJob {
    pub ledger: Arc<dpgate_ledger::Ledger>,
    pub backend: Arc<dyn dpgate_backend::Backend>,
    pub ctx: Context,
    pub table: Table,
    pub spec: Synthetic,
    pub key: String,
    pub attrs: Attributes,
}

impl FitJob {
    /// Charges the dataset budget for a fit of the table, reads its
    /// marginals, fits and keeps the model.
    pub(super) async fn run(self) -> Result<SyntheticModel, Refusal> {
        let FitJob {
            ledger,
            backend,
            ctx,
            table,
            spec,
            key,
            attrs,
        } = self;
        let (ctx, table, spec) = (&ctx, &table, &spec);
        let config = &ctx.config;
        // The planner's bound of one unit: each row is a unit in a table
        // without a unit column.
        let k = match &table.privacy {
            TablePrivacy::Private {
                privacy_unit: None, ..
            } => 1,
            TablePrivacy::Private {
                max_rows_per_unit, ..
            } => u64::from(*max_rows_per_unit),
            TablePrivacy::Public => unreachable!("validated: public tables have no synthetic rows"),
        };
        let delta = config.privacy.delta;
        // Text columns without a declared domain first get their values
        // from partition selection, each at a share of ε (and its own δ);
        // the MST fit gets the rest.
        let open: Vec<usize> = (0..attrs.modelled.len())
            .filter(|&i| attrs.modelled[i].is_selected())
            .collect();
        let share = if open.is_empty() {
            0.0
        } else {
            SELECTION_SHARE.min(0.5 / open.len() as f64)
        };
        let selections = open
            .iter()
            .map(|&i| selection_plan(table, &attrs.modelled[i], config, spec.epsilon * share))
            .collect::<Result<Vec<_>, Refusal>>()?;
        let mst_epsilon = spec.epsilon * (1.0 - share * open.len() as f64);
        let (_, epsilon) = dpgate_dp::accounting::epsilon_on_ledger_grid(mst_epsilon)
            .ok_or_else(|| bad_setting("synthetic.epsilon is not a usable ε"))?;
        let rho = dpgate_dp::accounting::zcdp_for(&epsilon, delta).ok_or_else(|| {
            bad_setting("a synthetic fit spends δ: privacy.delta must lie between 0 and 1")
        })?;
        let d = attrs.modelled.len();
        mst::cost(&rho, d, k).map_err(|e| bad_setting(&e.to_string()))?;
        let plans = marginal_plans(table, &attrs.modelled, config, Some(k))?;
        // The whole fit is one release: its parts compose by addition.
        let mut total = epsilon.clone();
        let mut total_delta = delta;
        let mut total_rho = rho.clone();
        for p in &selections {
            let cost = p.cost();
            total = total.add(&cost.epsilon);
            total_delta += cost.delta;
            total_rho = total_rho.add(&cost.rho);
        }

        // Charge first: nothing reads the data before the charge is durable.
        let mut entry = AuditEntry {
            user: SYNTHETIC_ACCOUNT.to_string(),
            client: format!("{} at {}", ctx.user, ctx.client),
            ..ctx.entry(&format!(
                "fit synthetic rows of {}.{} (MST, {d} columns, {} marginal queries, {} value selections)",
                table.schema,
                table.name,
                plans.len(),
                selections.len()
            ))
        };
        entry.cost = Amount {
            epsilon: total.to_f64(),
            delta: total_delta,
        };
        entry.rho = total_rho.to_f64();
        entry.outcome = AuditOutcome::Charged;
        let request = ChargeRequest {
            // The fit's own account only records; the dataset pays.
            budget: Budget {
                epsilon: 1e9,
                delta: 1.0,
                refresh: None,
            },
            dataset: config.privacy.dataset_budget,
            entry: entry.clone(),
        };
        let charge = match ledger.charge(request).await {
            Ok(c) => c,
            Err(LedgerError::Exhausted(x)) => {
                let mut refusal = exhausted(&x);
                refusal.message =
                    format!("the synthetic fit of {}: {}", table.name, refusal.message);
                return Err(refusal);
            }
            Err(e) => return Err(ledger_failure(&e.to_string())),
        };
        tracing::info!(table = %table.name, epsilon = entry.cost.epsilon, "charged a synthetic fit");

        let mut attrs = attrs;
        let fitted = match select_values(backend.as_ref(), ctx, &selections).await {
            Ok(values) => {
                for (&i, v) in open.iter().zip(values) {
                    attrs.modelled[i] = attrs.modelled[i].with_selected(v);
                }
                measure_and_fit(backend.as_ref(), &plans, &attrs, &rho, k).await
            }
            Err(e) => Err(e),
        };
        let (fit, seed) = match fitted {
            Ok(f) => f,
            Err(detail) => {
                tracing::warn!(table = %table.name, %detail, "synthetic fit failed after its charge");
                let refusal = failed_after_charge();
                let finish = Finish {
                    audit_id: charge.audit_id,
                    outcome: AuditOutcome::Failed,
                    rows: None,
                    error: Some((refusal.code.to_string(), detail)),
                    cache: None,
                };
                if let Err(e) = ledger.finish(finish).await {
                    tracing::error!("the failed fit could not be audited: {e}");
                }
                return Err(refusal);
            }
        };
        let model = SyntheticModel {
            table: (table.schema.clone(), table.name.clone()),
            key,
            cost: entry.cost,
            // Its age counts from its end, so a refresh shorter than a fit
            // cannot make every query refit.
            fitted_at_ms: dpgate_ledger::now_ms(),
            attributes: attrs,
            fit,
            seed,
        };
        let finish = Finish {
            audit_id: charge.audit_id,
            outcome: AuditOutcome::Answered,
            rows: Some(spec.rows as i64),
            error: None,
            cache: Some(Release {
                user: SYNTHETIC_ACCOUNT.to_string(),
                key: model.key.clone(),
                at_ms: model.fitted_at_ms,
                body: encode(&model),
            }),
        };
        // The charge stands either way; without the kept fit the next
        // process would fit (and pay) again, so say so loudly.
        if let Err(e) = ledger.finish(finish).await {
            tracing::error!("the synthetic fit could not be kept in the ledger: {e}");
        }
        Ok(model)
    }
}

/// Runs the value selections (after the charge): each column's values
/// that passed partition selection, the `MAX_SELECTED` with the largest
/// noisy counts (post-processing), in order.
async fn select_values(
    backend: &dyn dpgate_backend::Backend,
    ctx: &Context,
    selections: &[dpgate_sql::Plan],
) -> Result<Vec<Vec<String>>, String> {
    let privacy = &ctx.config.privacy;
    let mut out = Vec::new();
    for plan in selections {
        let mut collector = plan.collector(privacy.max_groups);
        backend
            .fetch_into(dpgate_backend::BackendQuery::of(plan), &mut collector)
            .await
            .map_err(|e| e.to_string())?;
        let collected = collector.finish();
        let answer = plan.finish(&collected.groups, &collected.draws, privacy.confidence);
        let mut counted: Vec<(f64, String)> = answer
            .rows
            .iter()
            .filter_map(|r| match (&r[0], &r[1]) {
                (Cell::Text(v), Cell::Int(n)) => Some((*n as f64, v.clone())),
                (Cell::Text(v), Cell::Float(n)) => Some((*n, v.clone())),
                _ => None,
            })
            .collect();
        counted.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut values: Vec<String> = counted
            .into_iter()
            .take(MAX_SELECTED)
            .map(|(_, v)| v)
            .filter(|v| v != OTHER)
            .collect();
        values.sort();
        out.push(values);
    }
    Ok(out)
}

/// Runs the marginal plans and fits (after the charge).
async fn measure_and_fit(
    backend: &dyn dpgate_backend::Backend,
    plans: &[(Vec<usize>, dpgate_sql::Plan)],
    attrs: &Attributes,
    rho: &Rational,
    k: u64,
) -> Result<(Fit, u64), String> {
    let raw = read_marginals(backend, plans, attrs).await?;
    let rho = rho.clone();
    tokio::task::spawn_blocking(move || {
        let mut rng = dpgate_dp::secure_rng();
        let seed = rng.gen::<u64>();
        mst::fit(&raw, &rho, k, &mut rng)
            .map(|f| (f, seed))
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Runs the marginal `plans` and adds up their raw counts per attribute
/// value (keys outside an attribute, NULL, count nowhere).
pub async fn read_marginals(
    backend: &dyn dpgate_backend::Backend,
    plans: &[(Vec<usize>, dpgate_sql::Plan)],
    attrs: &Attributes,
) -> Result<RawMarginals, String> {
    let a = &attrs.modelled;
    let sizes: Vec<usize> = a.iter().map(Attribute::size).collect();
    let mut raw = RawMarginals {
        sizes: sizes.clone(),
        one: sizes.iter().map(|&s| vec![0; s]).collect(),
        two: BTreeMap::new(),
    };
    for (which, plan) in plans {
        let rows = backend.fetch(plan).await.map_err(|e| e.to_string())?;
        match which.as_slice() {
            [i] => {
                for r in rows {
                    if let Some(x) = a[*i].index_of(r.keys[0].as_deref()) {
                        raw.one[*i][x] += r.values[0];
                    }
                }
            }
            [i, j] => {
                let mut cells = vec![0i64; sizes[*i] * sizes[*j]];
                for r in rows {
                    let x = a[*i].index_of(r.keys[0].as_deref());
                    let y = a[*j].index_of(r.keys[1].as_deref());
                    if let (Some(x), Some(y)) = (x, y) {
                        cells[x * sizes[*j] + y] += r.values[0];
                    }
                }
                raw.two.insert((*i, *j), cells);
            }
            _ => unreachable!("marginals are 1- or 2-way"),
        }
    }
    Ok(raw)
}

/// Share of ε each column whose values are selected (text without a
/// domain, dates by quarter) spends on it (at most half of ε for all).
const SELECTION_SHARE: f64 = 0.1;

/// Most selected values of one column (the rest fall into `other`).
const MAX_SELECTED: usize = 50;

/// The partition-selection plan that finds `attr`'s values, at `epsilon`.
fn selection_plan(
    table: &Table,
    attr: &Attribute,
    config: &Config,
    epsilon: f64,
) -> Result<dpgate_sql::Plan, Refusal> {
    let (_, plan) = plan_marginal(table, &[attr], config, epsilon)?;
    if !plan.cost().covered || plan.release.selection.is_none() {
        return Err(Refusal::new(
            sqlstate::INTERNAL_ERROR,
            format!("the values of {} cannot be selected privately", attr.column),
            "declare values = [...] for the column",
        ));
    }
    Ok(plan)
}

/// Every 1-way and 2-way marginal as a private plan, each checked to
/// bound one unit to `k` rows (the sensitivity the fit's noise assumes);
/// `k = None` checks nothing (the data owner's real marginals, planned
/// over a row-level copy of the table).
pub fn marginal_plans(
    table: &Table,
    attrs: &[Attribute],
    config: &Config,
    k: Option<u64>,
) -> Result<Vec<(Vec<usize>, dpgate_sql::Plan)>, Refusal> {
    let mut sets: Vec<Vec<usize>> = (0..attrs.len()).map(|i| vec![i]).collect();
    for i in 0..attrs.len() {
        for j in i + 1..attrs.len() {
            sets.push(vec![i, j]);
        }
    }
    sets.into_iter()
        .map(|set| {
            let chosen: Vec<&Attribute> = set.iter().map(|&i| &attrs[i]).collect();
            // Only the backend SQL is used: the ε does not matter.
            let (sql, plan) = plan_marginal(table, &chosen, config, 1.0)?;
            let one_count = plan.release.measurements.len() == 1
                && plan.grouping.key_count() == set.len()
                && k.is_none_or(|k| plan.release.measurements[0].noise.sensitivity() == k);
            if !one_count {
                return Err(Refusal::new(
                    sqlstate::INTERNAL_ERROR,
                    format!("the marginal query {sql} does not bound one unit to {k:?} rows"),
                    "report this to the dpgate developers",
                ));
            }
            Ok((set, plan))
        })
        .collect()
}

/// The private plan (and its text) of the marginal over `attrs`.
fn plan_marginal(
    table: &Table,
    attrs: &[&Attribute],
    config: &Config,
    epsilon: f64,
) -> Result<(String, dpgate_sql::Plan), Refusal> {
    let sql = marginal_sql(table, attrs);
    let Command::Private(query) = dpgate_sql::classify(&sql)?.remove(0) else {
        unreachable!("a marginal query is a private query")
    };
    let plan = dpgate_sql::plan(&query, config, epsilon)?;
    Ok((sql, plan))
}

fn bad_setting(why: &str) -> Refusal {
    Refusal::new(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!("synthetic rows cannot be fitted: {why}"),
        "the data owner should correct [tables.synthetic] or [privacy] in proxy.toml",
    )
}
