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
//! timestamp column, by quarter) first gets its values from an ordinary
//! partition-selection release (`SELECT col, COUNT(*) … GROUP BY col`,
//! audited `select_group`) at a share of ε,
//! (ε_s, δ_s)-DP; the values it did not release fall into one `other`
//! value, a function of the released set. The parts compose by addition,
//! and the ledger charges their exact sum to the dataset account before
//! the first query of the fit runs. Sampling rows, loading them and every
//! query over them read only the released parts.

mod fit;
mod stored;

use std::collections::HashMap;
use std::sync::Arc;

use dpgate_config::{Table, SYNTHETIC_ACCOUNT};
use dpgate_dp::mst::Fit;
use dpgate_ledger::Amount;
use dpgate_sql::synth::{attributes, Attributes, SyntheticRead};
use dpgate_sql::{sqlstate, Cell, Refusal};
use rand::{Rng, SeedableRng};

use crate::refusals::ledger_failure;
use crate::{Context, Service};

use fit::FitJob;
pub use fit::{marginal_plans, read_marginals};
use stored::{decode, fit_key};

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
        if self.catalog.is_none() && config.tables.iter().any(|t| t.synthetic.is_some()) {
            // Nothing could serve the rows: spend nothing until something
            // can (`dpgate synth` still fits on demand).
            tracing::warn!("synthetic rows are not fitted: they are served from the catalog cluster, which is not running");
            return;
        }
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
                        let result = job.run().await.map(Arc::new);
                        let mut state = slot.lock().await;
                        state.running = None;
                        match &result {
                            Ok(m) => state.model = Some(m.clone()),
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
                .map(Some),
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
            let notice = model.notice();
            catalog
                .load_synthetic(
                    table,
                    self.backend.as_ref(),
                    &model.key,
                    &notice,
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
            notices.push(notice);
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
