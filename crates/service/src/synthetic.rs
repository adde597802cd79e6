//! Synthetic rows: one differentially private MST fit of a table
//! (`dpgate_dp::mst`), charged once to the dataset budget, kept in the
//! ledger's database and sampled into the rows that answer row-level
//! SELECTs. Analysts' samples are post-processing of that one release and
//! cost them nothing.
//!
//! **Privacy.** The fit reads only the raw counts of ordinary private
//! plans (`dpgate_sql::synth::marginal_sql`, bounded per unit like every
//! plan: one unit adds at most `max_rows_per_unit` = k rows to each
//! marginal, checked against each plan's own sensitivity before anything
//! runs). With ρ the largest zCDP budget that `(synthetic.epsilon,
//! privacy.delta)` covers (`dp::accounting::zcdp_for`, rounded against
//! the data owner), the fit is ρ-zCDP (its doc comment), hence
//! (ε, δ)-DP. A text column without a declared domain (or a date or
//! timestamp column, by month) first gets its values from an ordinary
//! partition-selection release (`SELECT col, COUNT(*) … GROUP BY col`,
//! audited `select_group`) at a share of ε,
//! (ε_s, δ_s)-DP; the values it did not release fall into one `other`
//! value, a function of the released set. The parts compose by addition,
//! and the ledger charges their exact sum to the dataset account before
//! the first query of the fit runs. Sampling rows, loading them and every
//! query over them read only the released parts.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use dpgate_config::{Budget, Config, Synthetic, Table, TablePrivacy, SYNTHETIC_ACCOUNT};
use dpgate_dp::mst::{self, Fit, RawMarginals};
use dpgate_dp::rational::Rational;
use dpgate_ledger::{
    Amount, AuditEntry, ChargeRequest, Finish, LedgerError, Outcome as AuditOutcome, Release,
};
use dpgate_sql::synth::{
    attributes, marginal_sql, Attribute, Attributes, SyntheticRead, Values, OTHER,
};
use dpgate_sql::{sqlstate, Cell, Command, Refusal};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::refusals::{exhausted, failed_after_charge, ledger_failure};
use crate::{Context, Service};

/// A fitted model of one table and what an answer from it must say.
#[derive(Clone, Debug)]
pub struct SyntheticModel {
    /// `(schema, name)` of the table.
    pub table: (String, String),
    /// The fit's key: a digest of the table's declaration and the fit's
    /// settings (a changed declaration is a new fit).
    pub key: String,
    /// What the fit was charged: ε and δ.
    pub cost: Amount,
    /// When it was fitted (ms since the epoch).
    pub fitted_at_ms: i64,
    /// The columns modelled and those left NULL.
    pub attributes: Attributes,
    /// The fitted model.
    pub fit: Fit,
    /// Seed of the sampled rows: every replica and restart shows the same.
    pub seed: u64,
    /// Whether this request fitted it (and so spent the dataset budget).
    pub fresh: bool,
}

impl SyntheticModel {
    /// `n` rows of the modelled columns (in [`Attributes::modelled`]
    /// order), the same for the same model.
    pub fn rows(&self, n: usize) -> Vec<Vec<Cell>> {
        let (indices, mut rng) = self.sample(n);
        let attrs = &self.attributes.modelled;
        indices
            .into_iter()
            .map(|row| {
                row.iter()
                    .zip(attrs)
                    .map(|(&i, a)| a.cell(i, rng.gen::<f64>()))
                    .collect()
            })
            .collect()
    }

    /// `n` rows as attribute value indices (what [`Self::rows`] turns
    /// into cells), and the generator to continue with.
    pub fn sample(&self, n: usize) -> (Vec<Vec<usize>>, rand::rngs::StdRng) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
        (self.fit.sample(n, &mut rng), rng)
    }

    /// The text every answer from these rows carries.
    pub fn notice(&self) -> String {
        let (schema, name) = &self.table;
        let at = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(self.fitted_at_ms as u64),
        );
        let mut text = format!(
            "these rows are synthetic: drawn from a differentially private model of {schema}.{name} \
             (MST over {} columns) fitted at ε = {}, δ = {:e} on {at}, paid from the dataset's account; \
             no row is a real person's (any likeness is chance), and this answer cost you nothing",
            self.attributes.modelled.len(),
            dpgate_sql::explain::fmt_eps(self.cost.epsilon),
            self.cost.delta,
        );
        if !self.attributes.unmodelled.is_empty() {
            text.push_str(&format!(
                "; not modelled, so NULL: {}",
                self.attributes.unmodelled.join(", ")
            ));
        }
        text.push_str(". Use aggregates for answers about the real data.");
        text
    }
}

/// The fits this process knows of, one slot per fit key.
#[derive(Default)]
pub struct Fits {
    slots: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot>>>>,
}

impl Fits {
    fn slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Slot>> {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.to_string())
            .or_default()
            .clone()
    }
}

/// One fit key's state in this process.
#[derive(Default)]
struct Slot {
    /// The model, once fitted or read from the ledger.
    model: Option<Arc<SyntheticModel>>,
    /// When a fit running now started.
    running: Option<std::time::Instant>,
    /// When the last fit failed (after its charge): no new fit, and no
    /// new charge, until [`RETRY_AFTER`] has passed.
    failed: Option<std::time::Instant>,
}

/// How long a failed fit keeps the next one from starting.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// What a lookup may do when no model is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Nothing: report that there is none (EXPLAIN).
    Peek,
    /// Start a fit in the background and refuse for now (an analyst's
    /// query: its response time never depends on the fit's).
    Start,
    /// Start a fit (or join the running one) and wait for it (the data
    /// owner's CLI and the start-up fit).
    Wait,
}

/// What the ledger keeps of a fit (JSON in the releases table).
#[derive(Serialize, Deserialize)]
struct Stored {
    version: u32,
    epsilon: f64,
    delta: f64,
    rho: f64,
    fitted_at_ms: i64,
    seed: u64,
    sizes: Vec<usize>,
    edges: Vec<(usize, usize)>,
    noisy_one: Vec<Vec<i64>>,
    noisy_two: Vec<Vec<i64>>,
    one: Vec<Vec<f64>>,
    two: Vec<Vec<f64>>,
    rows: f64,
    /// Per attribute, the values partition selection chose (text columns
    /// without a declared domain; empty for the others).
    selected: Vec<Vec<String>>,
}

impl Service {
    /// The synthetic model of `schema.name` for an analyst's query: the
    /// one this process holds, else the one the ledger keeps (fitted by
    /// any process sharing it, not older than `synthetic.refresh`). When
    /// there is none, a fit charged once to the dataset starts in the
    /// background and the query is refused with 55000 until it is done:
    /// no analyst's response time depends on the fit's, and a cancelled
    /// query cannot lose a charged fit.
    pub async fn synthetic(
        &self,
        ctx: &Context,
        schema: &str,
        name: &str,
    ) -> Result<Arc<SyntheticModel>, Refusal> {
        self.lookup(ctx, schema, name, Mode::Start)
            .await
            .map(|m| m.expect("Start returns a model or a refusal"))
    }

    /// [`Self::synthetic`] for the data owner: fits now (or joins the fit
    /// running) and waits for it.
    pub async fn synthetic_now(
        &self,
        ctx: &Context,
        schema: &str,
        name: &str,
    ) -> Result<Arc<SyntheticModel>, Refusal> {
        self.lookup(ctx, schema, name, Mode::Wait)
            .await
            .map(|m| m.expect("Wait returns a model or a refusal"))
    }

    /// The model [`Self::synthetic`] would use, without fitting one (for
    /// EXPLAIN): `None` when the next query would fit.
    pub async fn synthetic_kept(
        &self,
        ctx: &Context,
        schema: &str,
        name: &str,
    ) -> Result<Option<Arc<SyntheticModel>>, Refusal> {
        self.lookup(ctx, schema, name, Mode::Peek).await
    }

    /// Starts the fit of every table with synthetic rows that has none
    /// kept, in the background (at start and after a reload), so that
    /// analysts find the rows ready. Each is charged once to the dataset.
    pub async fn prefit_synthetic(&self) {
        let config = self.config();
        for table in config.tables.iter().filter(|t| t.synthetic.is_some()) {
            let ctx = Context::new(
                config.clone(),
                "dpgate",
                "start-up fit",
                dpgate_sql::Ask::at(1.0),
            );
            match self
                .lookup(&ctx, &table.schema, &table.name, Mode::Start)
                .await
            {
                Ok(_) => {}
                Err(e) if e.code == sqlstate::NOT_READY => {
                    tracing::info!(table = %table.qualified_name(), "fitting synthetic rows in the background")
                }
                Err(e) => {
                    tracing::warn!(table = %table.qualified_name(), "synthetic rows cannot be fitted: {} ({})", e.message, e.hint)
                }
            }
        }
    }

    async fn lookup(
        &self,
        ctx: &Context,
        schema: &str,
        name: &str,
        mode: Mode,
    ) -> Result<Option<Arc<SyntheticModel>>, Refusal> {
        let config = &ctx.config;
        let table = config
            .table(Some(schema), name)
            .ok_or_else(|| Refusal::unsupported(format!("{schema}.{name} is not declared"), ""))?;
        let spec = table.synthetic.as_ref().ok_or_else(|| {
            Refusal::unsupported(
                format!("{schema}.{name} has no synthetic rows"),
                "the data owner can declare [tables.synthetic] for it",
            )
        })?;
        let key = fit_key(table, spec, config);
        let now = dpgate_ledger::now_ms();
        let not_before = spec
            .refresh
            .map(|r| now.saturating_sub(r.as_millis() as i64))
            .unwrap_or(i64::MIN);
        let slot = self.fits.slot(&key);
        let started = {
            let mut state = slot.lock().await;
            if let Some(m) = state
                .model
                .as_ref()
                .filter(|m| m.fitted_at_ms >= not_before)
            {
                return Ok(Some(m.clone()));
            }
            let attrs = attributes(table, spec.bins)?;
            let kept = self
                .ledger
                .cached(SYNTHETIC_ACCOUNT, &key, not_before)
                .await
                .map_err(|e| ledger_failure(&e.to_string()))?;
            if let Some(m) = kept.as_deref().and_then(|b| decode(b, table, &key, &attrs)) {
                let m = Arc::new(m);
                state.model = Some(m.clone());
                return Ok(Some(m));
            }
            if mode == Mode::Peek {
                return Ok(None);
            }
            match (state.running, state.failed) {
                (Some(since), _) => {
                    if mode == Mode::Start {
                        return Err(in_progress(table, since.elapsed()));
                    }
                    None
                }
                (None, Some(at)) if at.elapsed() < RETRY_AFTER => {
                    return Err(failed_recently(table, RETRY_AFTER - at.elapsed()))
                }
                _ => {
                    state.running = Some(std::time::Instant::now());
                    let job = FitJob {
                        ledger: self.ledger.clone(),
                        backend: self.backend.clone(),
                        ctx: ctx.clone(),
                        table: table.clone(),
                        spec: spec.clone(),
                        key: key.clone(),
                        attrs,
                    };
                    let slot = slot.clone();
                    // Detached: a cancelled query cannot drop a charged fit.
                    Some(tokio::spawn(async move {
                        let result = job.run().await;
                        let mut state = slot.lock().await;
                        state.running = None;
                        match &result {
                            Ok(m) => state.model = Some(Arc::new(m.clone())),
                            Err(_) => state.failed = Some(std::time::Instant::now()),
                        }
                        result
                    }))
                }
            }
        };
        if mode == Mode::Start {
            return Err(in_progress(table, std::time::Duration::ZERO));
        }
        match started {
            Some(task) => task
                .await
                .map_err(|e| ledger_failure(&format!("the fit stopped: {e}")))?
                .map(|m| Some(Arc::new(m))),
            // Another request's fit: wait until it is done, then look again.
            None => loop {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                let state = slot.lock().await;
                if state.running.is_none() {
                    return match &state.model {
                        Some(m) => Ok(Some(m.clone())),
                        None => Err(failed_recently(table, RETRY_AFTER)),
                    };
                }
            },
        }
    }

    /// Fits (or finds) every table `read` reads and loads its rows into the
    /// catalog cluster's synthetic database; the notice of each.
    pub async fn load_synthetic(
        &self,
        ctx: &Context,
        read: &SyntheticRead,
    ) -> Result<Vec<String>, Refusal> {
        let catalog = self.catalog.as_ref().ok_or_else(|| {
            Refusal::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "synthetic rows are served from dpgate's catalog cluster, which is not running (see dpgate's log, or catalog.enabled)",
                "the data owner can install PostgreSQL's server binaries (Debian: apt install postgresql) or set catalog.bin_dir; `dpgate synth` writes synthetic rows to a CSV file meanwhile",
            )
        })?;
        let mut notices = Vec::new();
        for (schema, name) in &read.tables {
            let model = self.synthetic(ctx, schema, name).await?;
            let table = ctx
                .config
                .table(Some(schema), name)
                .expect("routed under this config");
            let rows = table.synthetic.as_ref().map_or(0, |s| s.rows);
            let columns: Vec<String> = model
                .attributes
                .modelled
                .iter()
                .map(|a| a.column.clone())
                .collect();
            catalog
                .load_synthetic(
                    table,
                    self.backend.as_ref(),
                    &model.key,
                    &model.notice(),
                    &columns,
                    || model.rows(rows),
                )
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "synthetic rows could not be loaded");
                    Refusal::new(
                        sqlstate::BACKEND_FAILED,
                        "the synthetic rows could not be loaded into dpgate's catalog database",
                        "retry; if it keeps failing, the data owner should read dpgate's log",
                    )
                })?;
            notices.push(model.notice());
        }
        Ok(notices)
    }

    /// EXPLAIN of a row-level SELECT over synthetic rows, fitting nothing.
    pub async fn explain_synthetic(
        &self,
        ctx: &Context,
        read: &SyntheticRead,
    ) -> Result<Vec<String>, Refusal> {
        let mut lines = Vec::new();
        for (schema, name) in &read.tables {
            lines.push(format!(
                "Synthetic rows of {schema}.{name}: drawn from a model, no row is a real person's"
            ));
            let spec = ctx
                .config
                .table(Some(schema), name)
                .and_then(|t| t.synthetic.clone());
            match (self.synthetic_kept(ctx, schema, name).await?, spec) {
                (Some(m), _) => lines.push(format!("Fit: {}", m.notice())),
                (None, Some(s)) => lines.push(format!(
                    "Fit: none yet (or running); dpgate fits an MST model at ε = {}, paid once from the dataset's account, and queries wait for it",
                    dpgate_sql::explain::fmt_eps(s.epsilon)
                )),
                (None, None) => {}
            }
        }
        lines.push("Cost to you: nothing (synthetic rows are post-processing of one fit)".into());
        lines.push(format!("Query on the synthetic rows: {}", read.sql));
        Ok(lines)
    }
}

/// Everything one fit needs, owned, so that it runs to its end in a task
/// of its own whatever happens to the request that started it.
struct FitJob {
    ledger: Arc<dpgate_ledger::Ledger>,
    backend: Arc<dyn dpgate_backend::Backend>,
    ctx: Context,
    table: Table,
    spec: Synthetic,
    key: String,
    attrs: Attributes,
}

impl FitJob {
    /// Charges the dataset budget for a fit of the table, reads its
    /// marginals, fits and keeps the model.
    async fn run(self) -> Result<SyntheticModel, Refusal> {
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
            fresh: true,
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
/// domain, dates by month) spends on it (at most half of ε for all).
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
    let sql = marginal_sql(table, &[attr]);
    let Command::Private(query) = dpgate_sql::classify(&sql)?.remove(0) else {
        unreachable!("a marginal query is a private query")
    };
    let plan = dpgate_sql::plan(&query, config, epsilon)?;
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
            let sql = marginal_sql(table, &chosen);
            let Command::Private(query) = dpgate_sql::classify(&sql)?.remove(0) else {
                unreachable!("a marginal query is a private query")
            };
            let plan = dpgate_sql::plan(&query, config, 1.0)?;
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

/// The key of `table`'s fit: its declaration, the fit's settings and δ
/// (not `rows` or `max_rows`, which only change how many rows are drawn
/// from the same fit).
fn fit_key(table: &Table, spec: &Synthetic, config: &Config) -> String {
    let declaration = format!(
        "mst-v1|{}|{}|{:?}|{:?}|{}|{}|{:?}",
        table.schema,
        table.name,
        table.privacy,
        table.columns,
        spec.epsilon,
        spec.bins,
        config.privacy.delta
    );
    let digest = Sha256::digest(declaration.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("synthetic:{}.{}:{hex}", table.schema, table.name)
}

fn encode(m: &SyntheticModel) -> String {
    let f = &m.fit;
    serde_json::to_string(&Stored {
        version: 1,
        epsilon: m.cost.epsilon,
        delta: m.cost.delta,
        rho: f.rho.to_f64(),
        fitted_at_ms: m.fitted_at_ms,
        seed: m.seed,
        sizes: f.sizes.clone(),
        edges: f.edges.clone(),
        noisy_one: f.noisy_one.clone(),
        noisy_two: f.noisy_two.clone(),
        one: f.one.clone(),
        two: f.two.clone(),
        rows: f.rows,
        selected: m
            .attributes
            .modelled
            .iter()
            .map(|a| match &a.values {
                Values::Selected(v) | Values::Months(v, _) => v.clone(),
                _ => Vec::new(),
            })
            .collect(),
    })
    .expect("a fit serializes")
}

/// A kept fit, if it matches the attributes (else it is refitted).
fn decode(body: &str, table: &Table, key: &str, attrs: &Attributes) -> Option<SyntheticModel> {
    let s: Stored = serde_json::from_str(body).ok()?;
    let mut attrs = attrs.clone();
    if s.selected.len() != attrs.modelled.len() {
        return None;
    }
    for (a, chosen) in attrs.modelled.iter_mut().zip(&s.selected) {
        if a.is_selected() {
            *a = a.with_selected(chosen.clone());
        }
    }
    let sizes: Vec<usize> = attrs.modelled.iter().map(Attribute::size).collect();
    if s.version != 1 || s.sizes != sizes {
        return None;
    }
    Some(SyntheticModel {
        table: (table.schema.clone(), table.name.clone()),
        key: key.to_string(),
        cost: Amount {
            epsilon: s.epsilon,
            delta: s.delta,
        },
        fitted_at_ms: s.fitted_at_ms,
        attributes: attrs,
        fit: Fit {
            sizes: s.sizes,
            edges: s.edges,
            noisy_one: s.noisy_one,
            noisy_two: s.noisy_two,
            one: s.one,
            two: s.two,
            rows: s.rows,
            rho: Rational::from_f64(s.rho).unwrap_or_else(|| Rational::integer(0)),
        },
        seed: s.seed,
        fresh: false,
    })
}

fn in_progress(table: &Table, running: std::time::Duration) -> Refusal {
    Refusal::new(
        sqlstate::NOT_READY,
        format!(
            "the synthetic rows of {}.{} are being fitted (for {} s so far); they are ready in a moment",
            table.schema,
            table.name,
            running.as_secs()
        ),
        "retry shortly; the fit runs once, paid from the dataset budget, and EXPLAIN shows when it is ready",
    )
}

fn failed_recently(table: &Table, wait: std::time::Duration) -> Refusal {
    Refusal::new(
        sqlstate::BACKEND_FAILED,
        format!(
            "the synthetic fit of {}.{} failed after its charge; dpgate tries again in {} s",
            table.schema,
            table.name,
            wait.as_secs()
        ),
        "the data owner should read dpgate's log (a marginal query over the backend's statement timeout, say) or fit ahead with `dpgate synth`",
    )
}

fn bad_setting(why: &str) -> Refusal {
    Refusal::new(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!("synthetic rows cannot be fitted: {why}"),
        "the data owner should correct [tables.synthetic] or [privacy] in proxy.toml",
    )
}
