//! `dpgate evaluate`: runs the evaluator (`dpgate_evaluate`) on the data
//! owner's workload with a progress bar, writes the HTML and JSON reports,
//! leaves one audit entry, and exits 0 when every test passes, 1 when any
//! fails, 2 on a usage or config error.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use dpgate_config::Config;
use dpgate_evaluate::{Event, Options};
use dpgate_ledger::{Amount, AuditEntry, Ledger, Outcome};

/// The environment variable of the self-check: calibrates every noise for
/// a sensitivity this many times too small, so that the privacy test must
/// fail. Only the evaluator reads it (its own releases; nothing served).
pub const UNDERSTATE_VARIABLE: &str = "DPGATE_EVALUATE_UNDERSTATE_SENSITIVITY";

/// What `dpgate evaluate` is asked.
#[derive(clap::Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub config: crate::ConfigArg,
    /// The workload: private queries separated by `;`, with
    /// `SET dp.epsilon = …` (or dp.mechanism, dp.split) lines between.
    #[arg(long)]
    pub queries: PathBuf,
    /// Releases on each of D and D − u per query.
    #[arg(long, default_value_t = 1000)]
    pub trials: usize,
    /// Backend runs per side when the backend query samples rows.
    #[arg(long, default_value_t = 5)]
    pub backend_runs: usize,
    /// Family-wise error of the privacy and bias tests over the run (the
    /// chance that a correct build fails one).
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Write a self-contained HTML report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the numbers as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn usage(message: String) -> ExitCode {
    eprintln!("{message}");
    ExitCode::from(2)
}

/// Evaluates, reports, and maps the outcome to the exit status.
pub async fn run(args: EvaluateArgs, config: Config) -> Result<(), ExitCode> {
    if !(10..=1_000_000).contains(&args.trials) {
        return Err(usage("--trials must lie between 10 and 1000000".into()));
    }
    if !(args.alpha > 0.0 && args.alpha < 1.0) {
        return Err(usage("--alpha must lie between 0 and 1, e.g. 0.05".into()));
    }
    let text = std::fs::read_to_string(&args.queries)
        .map_err(|e| usage(format!("cannot read {}: {e}", args.queries.display())))?;
    let understate = match std::env::var(UNDERSTATE_VARIABLE) {
        Ok(v) => Some(v.parse::<u64>().ok().filter(|f| *f >= 2).ok_or_else(|| {
            usage(format!(
                "{UNDERSTATE_VARIABLE} must be an integer of 2 or more"
            ))
        })?),
        Err(_) => None,
    };
    if let Some(f) = understate {
        eprintln!("SELF-CHECK: every noise is calibrated for a sensitivity {f}× too small ({UNDERSTATE_VARIABLE}); the privacy test should fail");
    }
    let backend = dpgate_backend::connect(&config)
        .await
        .map_err(|e| usage(format!("{e} ([backend] in the config)")))?;
    // Planned as the server plans: a unique unit the schema cannot prove
    // is bounded as one row per unit there, so here too.
    let mut config = config;
    dpgate_backend::read_schema(&mut config, backend.as_ref()).await;
    let workload = dpgate_evaluate::parse_workload(&text, &config)
        .map_err(|e| usage(format!("{}: {e}", args.queries.display())))?;
    let ledger = Ledger::open(&config.ledger)
        .await
        .map_err(|e| usage(format!("cannot open the ledger {}: {e}", config.ledger)))?;
    let options = Options {
        trials: args.trials,
        backend_runs: args.backend_runs.max(1),
        alpha: args.alpha,
        understate,
        ..Options::default()
    };
    eprintln!(
        "evaluating {} queries, {} releases on each of D and D − u per query (data owner only: reads the backend directly, charges no analyst)",
        workload.len(),
        options.trials
    );
    let (progress, bar) = progress(workload.len());
    let evaluation =
        dpgate_evaluate::evaluate(&config, backend, &workload, &options, progress).await;
    bar.finish_and_clear();
    // In the self-check, success is the privacy test failing wherever the
    // broken noise must show.
    let passed = evaluation
        .self_check_caught()
        .unwrap_or_else(|| evaluation.passed());
    println!("{}", crate::evaluate_report::summary(&evaluation));
    if let Some(path) = &args.report {
        write(path, &crate::evaluate_report::html(&evaluation))?;
        println!("report: {}", path.display());
    }
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&evaluation).expect("serializable");
        write(path, &json)?;
        println!("json: {}", path.display());
    }
    let failed = evaluation.queries.iter().filter(|q| !q.passed()).count();
    ledger
        .record(AuditEntry {
            at_ms: dpgate_ledger::now_ms(),
            user: "(dpgate)".into(),
            client: format!(
                "dpgate evaluate ({})",
                std::env::var("USER").unwrap_or_else(|_| "unknown".into())
            ),
            statement: format!(
                "evaluate {}: {} queries, {} trials",
                args.queries.display(),
                workload.len(),
                options.trials
            ),
            backend_sql: None,
            cost: Amount::default(),
            rho: 0.0,
            outcome: Outcome::Ok,
            code: None,
            detail: Some(match (failed, understate) {
                (0, None) => "every test passed".into(),
                (n, None) => format!("{n} queries failed a test"),
                (_, Some(f)) => format!(
                    "self-check (sensitivity understated {f}×): the privacy test {} the broken noise",
                    if passed { "caught" } else { "MISSED" }
                ),
            }),
            rows: None,
        })
        .await;
    ledger.flush().await;
    if passed {
        Ok(())
    } else {
        Err(ExitCode::FAILURE)
    }
}

fn write(path: &std::path::Path, text: &str) -> Result<(), ExitCode> {
    std::fs::write(path, text).map_err(|e| {
        eprintln!("cannot write {}: {e}", path.display());
        ExitCode::from(2)
    })
}

/// A progress bar on a terminal (queries done, the current query and its
/// releases), else one line per query on stderr.
fn progress(total: usize) -> (dpgate_evaluate::Progress, indicatif::ProgressBar) {
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new(total as u64);
    if terminal {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} queries {elapsed_precise} {wide_msg}",
            )
            .expect("valid template"),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let current = Arc::new(std::sync::Mutex::new(String::new()));
    let shown = bar.clone();
    let progress = Arc::new(move |event: Event<'_>| match event {
        Event::Query { index, total, sql } => {
            bar.set_position(index as u64);
            let short: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
            let short = if short.chars().count() > 60 {
                format!("{}…", short.chars().take(59).collect::<String>())
            } else {
                short
            };
            if !terminal {
                eprintln!("[{}/{total}] {short}", index + 1);
            }
            bar.set_message(short.clone());
            *current.lock().unwrap() = short;
        }
        Event::Step(step) => bar.set_message(format!("{}: {step}", current.lock().unwrap())),
        Event::Trials { done, total } => bar.set_message(format!(
            "{}: {done}/{total} releases",
            current.lock().unwrap()
        )),
    });
    (progress, shown)
}
