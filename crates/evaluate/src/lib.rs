//! `dpgate evaluate`: the data owner's stochastic check that dpgate keeps
//! its promise on their own tables, bounds and queries. Each query of the
//! workload is planned exactly as an analyst's would be, its backend query
//! run on the real backend on D and on a neighbour D − u (one privacy unit
//! filtered out in the same backend query, [`neighbour`]), and released
//! many times through the query path's own collector, noise, derivation
//! and post-processing ([`trials`]); the plain query gives the true answer
//! ([`truth`]). Four tests follow ([`checks`]): privacy (an empirical ε
//! lower bound against the charge), accuracy (interval coverage of the
//! plain answer), utility and bias. Nothing is charged to any analyst and
//! nothing reaches analysts: the evaluator reads the backend with the
//! configured role, as `dpgate check --verify` does.

pub mod checks;
pub mod neighbour;
mod query;
pub mod stats;
pub mod trials;
pub mod truth;
pub mod workload;

use std::sync::Arc;
use std::time::Instant;

use dpgate_backend::Backend;
use dpgate_config::Config;
use serde::Serialize;

pub use checks::{Accuracy, CellBias, Privacy, Utility};
pub use workload::{parse as parse_workload, WorkItem};

/// How many times the charge a pair's loss must be for the self-check to
/// expect the privacy test to see it.
pub const EXPOSED_MARGIN: f64 = 1.5;

/// The privacy test's resolution: a loss this many over √trials above the
/// charge shows as a lower bound above it (measured on the demo: at 1 000
/// trials a side, losses of 2 and 1.1 gave bounds of 1.5 and 0.86, a loss
/// of 0.19 at ε = 0.1 gave 0).
pub const RESOLUTION: f64 = 16.0;

/// How hard to test.
#[derive(Clone, Debug)]
pub struct Options {
    /// Releases per side (D and D − u) per query.
    pub trials: usize,
    /// Backend runs per side when the backend query draws randomness of
    /// its own (per-unit row sampling, randomized rounding); the trials are
    /// spread evenly over them.
    pub backend_runs: usize,
    /// Candidate units tried per query.
    pub candidates: usize,
    /// Family-wise error of the run: the chance that a correct build fails
    /// one of its privacy, accuracy or bias tests (a third each).
    pub alpha: f64,
    /// Self-check: calibrate every noise for a sensitivity this many times
    /// smaller than the true one (a deliberately broken build), so that
    /// the privacy test must fail. Never set outside the self-check.
    pub understate: Option<u64>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            trials: 1000,
            backend_runs: 5,
            candidates: 6,
            alpha: 0.05,
            understate: None,
        }
    }
}

/// What the evaluator reports as it goes.
pub enum Event<'a> {
    /// Query `index` (0-based) of `total` starts.
    Query {
        /// Which.
        index: usize,
        /// Of how many.
        total: usize,
        /// Its text.
        sql: &'a str,
    },
    /// A step of the current query.
    Step(&'a str),
    /// `done` of the current query's `total` releases are made.
    Trials {
        /// Made.
        done: usize,
        /// To make.
        total: usize,
    },
}

/// Where progress goes (a terminal progress bar, a log, nothing).
pub type Progress = Arc<dyn Fn(Event<'_>) + Send + Sync>;

/// The evaluation of a workload.
#[derive(Clone, Debug, Serialize)]
pub struct Evaluation {
    /// One result per query, in workload order.
    pub queries: Vec<QueryResult>,
    /// Releases per side per query.
    pub trials: usize,
    /// Family-wise error of the privacy and bias tests.
    pub alpha: f64,
    /// The configured confidence of intervals.
    pub confidence: f64,
    /// The backend (`postgres` or `sqlite`).
    pub backend: String,
    /// The self-check's understatement factor, when it ran.
    pub self_check: Option<u64>,
    /// Wall time of the run.
    pub seconds: f64,
}

impl Evaluation {
    /// Whether every test of every query passed.
    pub fn passed(&self) -> bool {
        self.queries.iter().all(QueryResult::passed)
    }

    /// The queries whose privacy test the self-check expects to fail.
    pub fn exposed(&self) -> Vec<&QueryResult> {
        self.queries
            .iter()
            .filter(|q| q.exposed(self.trials))
            .collect()
    }

    /// In the self-check: whether the privacy test failed on every
    /// [`exposed`](Self::exposed) query, and there was at least one
    /// (`None` outside the self-check).
    pub fn self_check_caught(&self) -> Option<bool> {
        self.self_check?;
        let exposed = self.exposed();
        Some(
            !exposed.is_empty()
                && exposed
                    .iter()
                    .all(|q| q.privacy.as_ref().is_some_and(|p| !p.pass)),
        )
    }
}

/// One query's evaluation.
#[derive(Clone, Debug, Serialize)]
pub struct QueryResult {
    /// Line of the workload file.
    pub line: usize,
    /// The statement.
    pub sql: String,
    /// ε charged.
    pub epsilon: f64,
    /// δ charged.
    pub delta: f64,
    /// Noise and bounding, as EXPLAIN names them.
    pub plan: String,
    /// Why the query could not be evaluated, if it could not.
    pub error: Option<String>,
    /// The unit removed: why it was picked, and how far its removal moved
    /// the raw measurements (in noise standard deviations).
    pub neighbour: Option<(String, f64)>,
    /// The privacy test.
    pub privacy: Option<Privacy>,
    /// The accuracy test.
    pub accuracy: Option<Accuracy>,
    /// The utility report.
    pub utility: Option<Utility>,
    /// Per released value, its bias.
    pub bias: Vec<CellBias>,
    /// The share of a measurement's sensitivity the neighbour moved it by
    /// (1: the whole sensitivity, where a broken bound must show).
    pub reach: f64,
    /// The privacy loss the tracked value's noise admits on this pair of
    /// neighbours, when it is a count or sum released as measured
    /// ([`neighbour::pair_loss`]): at most the charge in an honest build.
    pub pair_loss: Option<f64>,
    /// Whether the bias test passed (set once every query's p-values are
    /// known, Bonferroni over all of them).
    pub bias_pass: bool,
    /// Wall time.
    pub seconds: f64,
}

impl QueryResult {
    /// Whether the privacy, accuracy and bias tests passed (utility only
    /// flags answers that are too noisy to use; it breaks no promise).
    pub fn passed(&self) -> bool {
        self.error.is_none()
            && self.privacy.as_ref().is_some_and(|p| p.pass)
            && self.accuracy.as_ref().is_some_and(|a| a.pass)
            && self.bias_pass
    }

    /// Whether the self-check expects this query's privacy test, run on
    /// `trials` releases a side, to fail: the tracked value's noise, as
    /// run, admits a loss on this pair of at least [`EXPOSED_MARGIN`] times
    /// the charge, and more than the test resolves at these trials above
    /// it ([`RESOLUTION`]/√trials). Derived values such as means mix
    /// several measurements and are never expected.
    pub fn exposed(&self, trials: usize) -> bool {
        let resolved = self.epsilon + RESOLUTION / (trials.max(1) as f64).sqrt();
        self.pair_loss
            .is_some_and(|loss| loss >= resolved.max(EXPOSED_MARGIN * self.epsilon))
    }
}

/// Evaluates `workload` on `backend` under `config`.
pub async fn evaluate(
    config: &Config,
    backend: Arc<dyn Backend>,
    workload: &[WorkItem],
    options: &Options,
    progress: Progress,
) -> Evaluation {
    let started = Instant::now();
    let mut queries = Vec::new();
    for (index, item) in workload.iter().enumerate() {
        progress(Event::Query {
            index,
            total: workload.len(),
            sql: &item.sql,
        });
        // α is shared by the three tests that can fail a correct build
        // (privacy, accuracy, bias), then by the queries.
        let alpha = options.alpha / 3.0 / workload.len() as f64;
        queries.push(
            query::evaluate_one(query::Job {
                config,
                backend: &backend,
                item,
                options,
                alpha,
                progress: &progress,
            })
            .await,
        );
    }
    // Bias: Bonferroni over every value tested in the run.
    let tested = queries
        .iter()
        .flat_map(|q| &q.bias)
        .filter(|b| b.expected.is_none() && b.p_value.is_some())
        .count()
        .max(1);
    let cut = options.alpha / 3.0 / tested as f64;
    for q in &mut queries {
        q.bias_pass = q.error.is_none()
            && q.bias
                .iter()
                .all(|b| b.expected.is_some() || b.p_value.is_none_or(|p| p >= cut));
    }
    Evaluation {
        queries,
        trials: options.trials,
        alpha: options.alpha,
        confidence: config.privacy.confidence,
        backend: dpgate_sql::Dialect::of(&config.backend.store).name().into(),
        self_check: options.understate,
        seconds: started.elapsed().as_secs_f64(),
    }
}
