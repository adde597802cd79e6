//! The `dpgate` command: serve the proxy, check a config, inspect budgets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use dpgate_backend::Backend;
use dpgate_config::Config;
use dpgate_ledger::Ledger;
use dpgate_server::Shared;

mod admin;
mod demo;
mod evaluate;
mod evaluate_report;
mod html;
mod synth;
mod verify;

/// A differentially private SQL proxy that speaks the PostgreSQL protocol.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve a generated hospital dataset from embedded SQLite: no database needed.
    Demo {
        /// Where the demo's proxy.toml, data and ledger live (default:
        /// examples/demo in a dpgate checkout, else ./dpgate-demo).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Listen on this address instead of the config's (host:port).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Serve the HTTP API and console on this address instead of the
        /// config's (host:port).
        #[arg(long)]
        http_listen: Option<std::net::SocketAddr>,
    },
    /// Start the proxy (SIGHUP rereads proxy.toml, SIGTERM stops).
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Validate proxy.toml and exit.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Also count, on the backend, whether the data holds what the
        /// tables declare (units per person, unique units, bounds,
        /// not_null). For the data owner: prints counts, releases nothing
        /// to analysts, and fails if a unit declared unique is not.
        #[arg(long)]
        verify: bool,
    },
    /// Write a table's synthetic rows (from its [tables.synthetic] fit,
    /// charged once to the dataset budget) to CSV, with a quality report.
    Synth {
        #[command(flatten)]
        config: ConfigArg,
        /// The table (name or schema.name).
        #[arg(long)]
        table: String,
        /// Rows to write (default: synthetic.rows).
        #[arg(long)]
        rows: Option<usize>,
        /// The CSV file to write.
        #[arg(long)]
        out: Option<PathBuf>,
        /// An HTML report: each column's and each tree edge's synthetic
        /// marginal beside the one the fit measured, with total variation.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Also compare with the real table's marginals (data owner only:
        /// reads the backend directly; never give this report to analysts).
        #[arg(long)]
        compare_real: bool,
    },
    /// Test, on the backend, that the workload's answers keep their
    /// privacy, accuracy, utility and bias promises (data owner only:
    /// reads the backend directly, charges no analyst). Exit status 0
    /// when every test passes, 1 when one fails, 2 on a usage error.
    Evaluate(evaluate::EvaluateArgs),
    /// Inspect and change privacy budgets in the ledger (also while dpgate runs).
    Budget {
        #[command(subcommand)]
        action: BudgetCmd,
    },
    /// List the audit log: every statement, who sent it, what it cost, how it ended.
    #[command(args_conflicts_with_subcommands = true)]
    Audit {
        #[command(subcommand)]
        action: Option<AuditCmd>,
        #[command(flatten)]
        config: ConfigArg,
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
        /// Only entries since a time: RFC 3339 (2026-11-23T09:00:00Z) or
        /// a duration ago (30m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// At most this many entries, the most recent.
        #[arg(long)]
        limit: Option<u64>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Delete audit entries older than a time (charges, the budget
    /// records, are kept). The prune itself is recorded.
    Prune {
        #[command(flatten)]
        config: ConfigArg,
        /// RFC 3339 (2026-01-01T00:00:00Z) or a duration ago (90d).
        #[arg(long)]
        before: String,
    },
}

#[derive(Subcommand)]
enum BudgetCmd {
    /// Show what each user (and the dataset) has spent and has left.
    Show {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Add to a user's (or the dataset's) budget, for good.
    Grant {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        account: AccountArg,
        /// ε to add.
        #[arg(long, default_value_t = 0.0)]
        epsilon: f64,
        /// δ to add.
        #[arg(long, default_value_t = 0.0)]
        delta: f64,
    },
    /// Forget what a user (or the dataset) has spent so far.
    Reset {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        account: AccountArg,
    },
}

/// `--config`, shared by every command.
#[derive(clap::Args)]
struct ConfigArg {
    /// Path of proxy.toml.
    #[arg(long, short, default_value = "proxy.toml")]
    config: PathBuf,
}

/// `--user U` or `--dataset`.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct AccountArg {
    /// The user's account.
    #[arg(long)]
    user: Option<String>,
    /// The dataset-wide account shared by all analysts.
    #[arg(long)]
    dataset: bool,
}

/// How admin commands print.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document for programs.
    Json,
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Serve { config } => load(&config.config).and_then(|c| serve(&config.config, c, None)),
        Cmd::Demo {
            dir,
            listen,
            http_listen,
        } => run_demo(dir, listen, http_listen),
        Cmd::Check { config, verify } => load(&config.config).and_then(|c| {
            println!(
                "{}: ok ({} users, {} tables)",
                config.config.display(),
                c.users.len(),
                c.tables.len()
            );
            if !verify {
                return Ok(());
            }
            runtime()?.block_on(async {
                let backend = dpgate_backend::connect(&c).await.map_err(|e| {
                    eprintln!("{e} ([backend] in {})", config.config.display());
                    ExitCode::FAILURE
                })?;
                verify::verify(&c, backend.as_ref()).await
            })
        }),
        Cmd::Synth {
            config,
            table,
            rows,
            out,
            report,
            compare_real,
        } => load(&config.config).and_then(|c| {
            if rows.is_some_and(|n| !(1..=dpgate_config::Synthetic::MAX_ROWS).contains(&n)) {
                eprintln!(
                    "--rows must lie between 1 and {}",
                    dpgate_config::Synthetic::MAX_ROWS
                );
                return Err(ExitCode::from(2));
            }
            let args = synth::SynthArgs {
                config_path: config.config.clone(),
                table,
                rows,
                out,
                report,
                compare_real,
            };
            runtime()?.block_on(synth::run(args, c))
        }),
        Cmd::Evaluate(args) => {
            load(&args.config.config).and_then(|c| runtime()?.block_on(evaluate::run(args, c)))
        }
        Cmd::Budget { action } => admin::budget(action),
        Cmd::Audit {
            action: Some(AuditCmd::Prune { config, before }),
            ..
        } => admin::prune(&config.config, &before),
        Cmd::Audit {
            action: None,
            config,
            user,
            since,
            limit,
            format,
        } => admin::audit(&config.config, user, since.as_deref(), limit, format),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// At start and every hour: audit entries older than `[audit] retention`
/// are deleted (charges stay) and the prune is recorded; and a SQLite
/// ledger's disk is checked, with a warning below `ledger.min_free_mib`
/// (a full disk would fail every charge).
async fn prune_audit_log(shared: Arc<Shared>, ledger: Arc<dpgate_ledger::Ledger>) {
    loop {
        let config = shared.config();
        if let dpgate_config::LedgerStore::Sqlite(path) = &config.ledger {
            let want = config.ledger_min_free_mib.saturating_mul(1 << 20);
            match dpgate_config::files::free_bytes(path) {
                Ok(free) if free < want => tracing::warn!(
                    "the ledger's disk has {} MiB free, less than ledger.min_free_mib = {}: when it is full every charge fails; free space or move the ledger",
                    free >> 20,
                    config.ledger_min_free_mib
                ),
                Ok(_) => {}
                Err(e) => tracing::warn!("cannot measure the ledger's free disk space: {e}"),
            }
        }
        if let Some(retention) = shared.config().audit_retention {
            let before = dpgate_ledger::now_ms().saturating_sub(retention.as_millis() as i64);
            match admin::prune_before(&ledger, before, "audit.retention").await {
                Ok(n) => tracing::info!(pruned = n, "audit entries past audit.retention deleted"),
                Err(_) => tracing::warn!("the audit log could not be pruned"),
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
    }
}

/// Prepares the demo directory and serves it, printing how to connect.
fn run_demo(
    dir: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
    http_listen: Option<std::net::SocketAddr>,
) -> Result<(), ExitCode> {
    let dir = dir.unwrap_or_else(|| {
        let checkout = PathBuf::from("examples/demo");
        if checkout.join("proxy.toml").exists() {
            checkout
        } else {
            PathBuf::from("dpgate-demo")
        }
    });
    let path = demo::prepare(&dir).map_err(|e| {
        eprintln!("cannot prepare the demo in {}: {e}", dir.display());
        ExitCode::FAILURE
    })?;
    let mut config = load(&path)?;
    if let Some(addr) = listen {
        config.listen = addr;
    }
    if let (Some(addr), Some(http)) = (http_listen, config.http.as_mut()) {
        http.listen = addr;
    }
    let shown = path.clone();
    serve(
        &path,
        config,
        Some(Box::new(move |addr, http| {
            println!("{}", demo::banner(addr, http, &shown))
        })),
    )
}

/// Called once dpgate listens, with the wire address and the HTTP one.
type OnReady = Box<dyn FnOnce(std::net::SocketAddr, Option<std::net::SocketAddr>) + Send>;

fn serve(path: &Path, config: Config, on_ready: Option<OnReady>) -> Result<(), ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DPGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = runtime()?;
    runtime.block_on(async move {
        let mut config = config;
        let ledger = open_ledger(&config).await?;
        let backend = dpgate_backend::connect(&config).await.map_err(|e| {
            eprintln!("{e} ([backend] in {})", path.display());
            ExitCode::FAILURE
        })?;
        dpgate_backend::read_schema(&mut config, backend.as_ref()).await;
        check_backend_role(&config, backend.as_ref(), path).await?;
        let catalog = match config.catalog.enabled {
            false => None,
            true => match dpgate_catalog::Catalog::open(&config, backend.as_ref()).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!("catalog browsing is off: {e}");
                    None
                }
            },
        };
        let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| {
            eprintln!("cannot listen on {}: {e}", config.listen);
            ExitCode::FAILURE
        })?;
        let addr = listener.local_addr().unwrap_or(config.listen);
        let http_listener = match &config.http {
            Some(http) => Some(tokio::net::TcpListener::bind(http.listen).await.map_err(|e| {
                eprintln!("cannot listen for HTTP on {}: {e}", http.listen);
                ExitCode::FAILURE
            })?),
            None => None,
        };
        if let Some(l) = &http_listener {
            let scheme = if config.server.tls.is_some() { "https" } else { "http" };
            if let Ok(a) = l.local_addr() {
                tracing::info!(listen = %a, "HTTP API and console at {scheme}://{a}/");
            }
        }
        tracing::info!(listen = %addr, backend = %config.backend.store, ledger = %config.ledger, "dpgate is ready");
        if let Some(ready) = on_ready {
            ready(addr, http_listener.as_ref().and_then(|l| l.local_addr().ok()));
        }
        // SCRAM salts of password users and of unknown names derive from
        // one secret kept in the ledger: stable across reloads, restarts
        // and replicas, so a salt never tells a real name from a made-up one.
        let salt_key = ledger.secret("scram-salt").await.map_err(|e| {
            eprintln!("cannot read the server secret from the ledger: {e}");
            ExitCode::FAILURE
        })?;
        let ledger = Arc::new(ledger);
        let shared = Arc::new(
            Shared::new(config, ledger.clone(), backend, catalog, salt_key).map_err(|e| {
                eprintln!("{e}");
                ExitCode::FAILURE
            })?,
        );
        tokio::spawn(reload_on_sighup(shared.clone(), path.to_path_buf()));
        tokio::spawn(prune_audit_log(shared.clone(), ledger.clone()));
        // Synthetic rows are fitted once, now, so analysts find them ready.
        let prefit = shared.clone();
        tokio::spawn(async move { prefit.service.prefit_synthetic().await });
        // One signal stops both front ends.
        let (stop, stopping) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
            let _ = stop.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let http = http_listener.map(|l| {
            tokio::spawn(dpgate_http::serve(shared.clone(), l, stopped(stopping.clone())))
        });
        let served = dpgate_server::serve(shared, listener, stopped(stopping)).await;
        if let Some(http) = http {
            match http.await {
                Ok(Err(e)) => tracing::error!("HTTP server error: {e}"),
                Err(e) => tracing::error!("HTTP server failed: {e}"),
                Ok(Ok(())) => {}
            }
        }
        ledger.flush().await;
        served.map_err(|e| {
            eprintln!("server error: {e}");
            ExitCode::FAILURE
        })
    })
}

/// Rereads proxy.toml on every SIGHUP. A file that does not validate is
/// logged and ignored: the running config stays.
async fn reload_on_sighup(shared: Arc<Shared>, path: PathBuf) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("SIGHUP cannot be caught; proxy.toml will not be reloaded");
        return;
    };
    while hup.recv().await.is_some() {
        let config = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(
                    "{} was not reloaded; the running config stays. {e}",
                    path.display()
                );
                continue;
            }
        };
        let (users, tables) = (config.users.len(), config.tables.len());
        match shared.reload(config).await {
            Ok(restart) => {
                tracing::info!(users, tables, "reloaded {}", path.display());
                // A changed [tables.synthetic] is a new fit.
                shared.service.prefit_synthetic().await;
                if !restart.is_empty() {
                    tracing::warn!(
                        "changes to {} take effect only after a restart",
                        restart.join(", ")
                    );
                }
            }
            Err(e) => tracing::error!(
                "{} was not reloaded; the running config stays: {e}",
                path.display()
            ),
        }
    }
}

/// A runtime for commands that talk to the ledger or serve.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("cannot start the runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Opens the ledger `config` names, with an error that says which.
async fn open_ledger(config: &Config) -> Result<Ledger, ExitCode> {
    Ledger::open(&config.ledger).await.map_err(|e| {
        eprintln!("cannot open the ledger {}: {e}", config.ledger);
        ExitCode::FAILURE
    })
}

/// Refuses to serve through a backend role that could do more than read
/// the declared tables (superuser, server files or programs, writes to a
/// declared table), unless `backend.allow_privileged_role` says to, which
/// is then logged at every start.
async fn check_backend_role(
    config: &dpgate_config::Config,
    backend: &dyn Backend,
    path: &std::path::Path,
) -> Result<(), ExitCode> {
    let Some(pg) = backend.postgres() else {
        return Ok(());
    };
    let problems = pg.role_problems(&config.tables).await.map_err(|e| {
        eprintln!(
            "cannot check the backend role: {e} ([backend] in {})",
            path.display()
        );
        ExitCode::FAILURE
    })?;
    if problems.is_empty() {
        return Ok(());
    }
    if config.backend.allow_privileged_role {
        for p in &problems {
            tracing::warn!(
                "UNSAFE: {p}; serving anyway because backend.allow_privileged_role = true"
            );
        }
        return Ok(());
    }
    for p in &problems {
        eprintln!("{p}");
    }
    eprintln!(
        "dpgate will not serve through this role ([backend] url in {}): connect as a role that may only SELECT the declared tables (see examples/postgres/readonly_role.sql), or set backend.allow_privileged_role = true to serve anyway",
        path.display()
    );
    Err(ExitCode::FAILURE)
}
