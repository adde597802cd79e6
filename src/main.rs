//! The `dpgate` command: serve the proxy, check a config, inspect budgets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use dpgate_backend::Backend;
use dpgate_config::Config;
use dpgate_ledger::Ledger;
use dpgate_server::Shared;

/// A differentially private SQL proxy that speaks the PostgreSQL protocol.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the proxy.
    Serve {
        /// Path of proxy.toml.
        #[arg(long, short, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Validate proxy.toml and exit.
    Check {
        /// Path of proxy.toml.
        #[arg(long, short, default_value = "proxy.toml")]
        config: PathBuf,
    },
    /// Inspect privacy budgets.
    Budget {
        #[command(subcommand)]
        action: BudgetCmd,
    },
}

#[derive(Subcommand)]
enum BudgetCmd {
    /// Show what each user has spent and has left.
    Show {
        /// Path of proxy.toml.
        #[arg(long, short, default_value = "proxy.toml")]
        config: PathBuf,
        /// Only this user.
        #[arg(long)]
        user: Option<String>,
    },
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
        Cmd::Serve { config } => serve(&config),
        Cmd::Check { config } => load(&config).map(|c| {
            println!(
                "{}: ok ({} users, {} tables)",
                config.display(),
                c.users.len(),
                c.tables.len()
            )
        }),
        Cmd::Budget {
            action: BudgetCmd::Show { config, user },
        } => budget_show(&config, user.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn budget_show(path: &Path, only: Option<&str>) -> Result<(), ExitCode> {
    let config = load(path)?;
    let ledger = Ledger::open(std::path::Path::new(&config.ledger_path)).map_err(|e| {
        eprintln!("cannot open the ledger {}: {e}", config.ledger_path);
        ExitCode::FAILURE
    })?;
    let accounts = ledger.accounts().map_err(|e| {
        eprintln!("{e}");
        ExitCode::FAILURE
    })?;
    println!(
        "{:<20} {:>12} {:>12} {:>12} {:>8}",
        "user", "budget", "spent", "remaining", "queries"
    );
    for u in config
        .users
        .iter()
        .filter(|u| only.is_none_or(|o| o == u.name))
    {
        let (spent, queries) = accounts
            .iter()
            .find(|a| a.user == u.name)
            .map(|a| (a.spent, a.queries))
            .unwrap_or((0.0, 0));
        println!(
            "{:<20} {:>12.6} {:>12.6} {:>12.6} {:>8}",
            u.name,
            u.epsilon_budget,
            spent,
            (u.epsilon_budget - spent).max(0.0),
            queries
        );
    }
    Ok(())
}

fn serve(path: &Path) -> Result<(), ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DPGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = load(path)?;
    let runtime = tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("cannot start the runtime: {e}");
        ExitCode::FAILURE
    })?;
    runtime.block_on(async move {
        let ledger = Ledger::open(std::path::Path::new(&config.ledger_path)).map_err(|e| {
            eprintln!("cannot open the ledger {}: {e}", config.ledger_path);
            ExitCode::FAILURE
        })?;
        let backend = Backend::connect(&config.backend).await.map_err(|e| {
            eprintln!("{e} (backend.url in {})", path.display());
            ExitCode::FAILURE
        })?;
        let catalog = match dpgate_catalog::Catalog::open(&config, &backend).await {
            Ok(c) => Some(c),
            Err(e) if config.catalog_url.is_some() => {
                eprintln!("{e} (catalog.url in {})", path.display());
                return Err(ExitCode::FAILURE);
            }
            Err(e) => {
                tracing::warn!("catalog browsing is off: {e}");
                None
            }
        };
        let listener = tokio::net::TcpListener::bind(config.listen).await.map_err(|e| {
            eprintln!("cannot listen on {}: {e}", config.listen);
            ExitCode::FAILURE
        })?;
        tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "dpgate is ready");
        let shared = Arc::new(Shared {
            config: Arc::new(config),
            ledger: Arc::new(ledger),
            backend,
            catalog,
        });
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down");
        };
        dpgate_server::serve(shared, listener, shutdown).await.map_err(|e| {
            eprintln!("server error: {e}");
            ExitCode::FAILURE
        })
    })
}
