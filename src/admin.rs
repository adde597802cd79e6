//! The data owner's commands: `dpgate budget show|grant|reset` and
//! `dpgate audit`. They open the same ledger as the running proxy (SQLite
//! file or PostgreSQL), so changes apply to the next query without a
//! restart; grants and resets are themselves written to the audit log.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use dpgate_config::{Budget, Config};
use dpgate_ledger::{now_ms, Adjustment, Amount, AuditEntry, AuditFilter, Outcome, DATASET};
use serde_json::json;

use crate::{load, open_ledger, runtime, AccountArg, BudgetCmd, Format};

/// Runs a `dpgate budget` command.
pub fn budget(action: BudgetCmd) -> Result<(), ExitCode> {
    match action {
        BudgetCmd::Show {
            config,
            user,
            format,
        } => show(&config.config, user.as_deref(), format),
        BudgetCmd::Grant {
            config,
            account,
            epsilon,
            delta,
        } => {
            if !(epsilon.is_finite() && delta.is_finite() && epsilon >= 0.0 && delta >= 0.0)
                || epsilon + delta == 0.0
            {
                eprintln!("give a positive --epsilon and/or --delta to grant");
                return Err(ExitCode::from(2));
            }
            let grant = Amount { epsilon, delta };
            adjust(
                &config.config,
                &account,
                Adjustment::Grant(grant),
                Outcome::Granted,
                &format!("budget grant --epsilon {epsilon} --delta {delta}"),
            )
        }
        BudgetCmd::Reset { config, account } => adjust(
            &config.config,
            &account,
            Adjustment::Reset,
            Outcome::Reset,
            "budget reset",
        ),
    }
}

/// Every account `config` declares (users, then the dataset if it has a
/// budget), optionally only `only`.
fn accounts<'a>(config: &'a Config, only: Option<&str>) -> Vec<(&'a str, Budget)> {
    let mut list: Vec<(&str, Budget)> = config
        .users
        .iter()
        .filter(|u| only.is_none_or(|o| o == u.name))
        .map(|u| (u.name.as_str(), u.budget))
        .collect();
    if let (None, Some(d)) = (only, config.privacy.dataset_budget) {
        list.push((DATASET, d));
    }
    list
}

fn show(path: &Path, only: Option<&str>, format: Format) -> Result<(), ExitCode> {
    let config = load(path)?;
    if let Some(u) = only {
        if config.user(u).is_none() {
            eprintln!("user {u:?} is not declared in {}", path.display());
            return Err(ExitCode::from(2));
        }
    }
    runtime()?.block_on(async {
        let ledger = open_ledger(&config).await?;
        let now = now_ms();
        let mut rows = Vec::new();
        for (account, budget) in accounts(&config, only) {
            let standing = ledger.standing(account, budget, now).await.map_err(fail)?;
            rows.push((account, budget, standing));
        }
        match format {
            Format::Json => {
                let list: Vec<_> = rows
                    .iter()
                    .map(|(account, budget, s)| {
                        json!({
                            "account": display_account(account),
                            "epsilon_budget": s.limit.epsilon,
                            "epsilon_spent": s.spent.epsilon,
                            "epsilon_remaining": s.remaining().epsilon,
                            "delta_budget": s.limit.delta,
                            "delta_spent": s.spent.delta,
                            "delta_remaining": s.remaining().delta,
                            "epsilon_granted": s.granted.epsilon,
                            "delta_granted": s.granted.delta,
                            "queries": s.queries,
                            "refresh": budget.refresh.map(|r| humantime::format_duration(r).to_string()),
                            "reset_at": (s.reset_at_ms > 0).then(|| time_text(s.reset_at_ms)),
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            }
            Format::Table => {
                println!(
                    "{:<20} {:>10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
                    "account", "ε budget", "ε spent", "ε left", "δ budget", "δ spent", "queries", "refresh"
                );
                for (account, budget, s) in &rows {
                    println!(
                        "{:<20} {:>10} {:>10} {:>10} {:>10.1e} {:>10.1e} {:>8} {:>8}",
                        display_account(account),
                        num(s.limit.epsilon),
                        num(s.spent.epsilon),
                        num(s.remaining().epsilon),
                        s.limit.delta,
                        s.spent.delta,
                        s.queries,
                        budget
                            .refresh
                            .map(|r| humantime::format_duration(r).to_string())
                            .unwrap_or_else(|| "never".into()),
                    );
                }
            }
        }
        Ok(())
    })
}

fn adjust(
    path: &Path,
    account: &AccountArg,
    adjustment: Adjustment,
    outcome: Outcome,
    what: &str,
) -> Result<(), ExitCode> {
    let config = load(path)?;
    let (name, budget) = match (&account.user, account.dataset) {
        (Some(u), _) => match config.user(u) {
            Some(user) => (u.as_str(), user.budget),
            None => {
                eprintln!("user {u:?} is not declared in {}", path.display());
                return Err(ExitCode::from(2));
            }
        },
        (None, _) => match config.privacy.dataset_budget {
            Some(d) => (DATASET, d),
            None => {
                eprintln!(
                    "{} sets no dataset budget (privacy.dataset_epsilon_budget)",
                    path.display()
                );
                return Err(ExitCode::from(2));
            }
        },
    };
    runtime()?.block_on(async {
        let ledger = open_ledger(&config).await?;
        let cost = match adjustment {
            Adjustment::Grant(a) => a,
            Adjustment::Reset => Amount::default(),
        };
        let entry = AuditEntry {
            at_ms: now_ms(),
            user: name.to_string(),
            client: format!(
                "dpgate admin ({})",
                std::env::var("USER").unwrap_or_else(|_| "unknown".into())
            ),
            statement: what.to_string(),
            backend_sql: None,
            cost,
            rho: 0.0,
            outcome,
            code: None,
            detail: None,
            rows: None,
        };
        ledger.adjust(name, adjustment, entry).await.map_err(fail)?;
        let s = ledger
            .standing(name, budget, now_ms())
            .await
            .map_err(fail)?;
        println!(
            "{}: ε {} of {} left, δ {:e} of {:e} left",
            display_account(name),
            num(s.remaining().epsilon),
            num(s.limit.epsilon),
            s.remaining().delta,
            s.limit.delta
        );
        Ok(())
    })
}

/// Runs `dpgate audit prune --before`.
pub fn prune(path: &Path, before: &str) -> Result<(), ExitCode> {
    let config = load(path)?;
    let before_ms = parse_since(before).map_err(|e| {
        eprintln!("--before: {e}");
        ExitCode::from(2)
    })?;
    runtime()?.block_on(async {
        let ledger = open_ledger(&config).await?;
        let pruned = prune_before(&ledger, before_ms, "dpgate audit prune").await?;
        println!(
            "pruned {pruned} audit entries before {}; charges are kept",
            time_text(before_ms)
        );
        Ok(())
    })
}

/// Deletes audit entries before `before_ms` and records that it did, in
/// the log itself: who pruned, up to when, how many.
pub async fn prune_before(
    ledger: &dpgate_ledger::Ledger,
    before_ms: i64,
    by: &str,
) -> Result<u64, ExitCode> {
    let pruned = ledger.prune_audit(before_ms).await.map_err(fail)?;
    let entry = AuditEntry {
        at_ms: now_ms(),
        user: "(dpgate)".into(),
        client: format!(
            "{by} ({})",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        ),
        statement: format!("prune audit entries before {}", time_text(before_ms)),
        backend_sql: None,
        cost: Amount::default(),
        rho: 0.0,
        outcome: Outcome::Ok,
        code: None,
        detail: Some(format!("{pruned} entries deleted; charges kept")),
        rows: Some(pruned as i64),
    };
    ledger.append(entry).await.map_err(fail)?;
    Ok(pruned)
}

/// Runs `dpgate audit`.
pub fn audit(
    path: &Path,
    user: Option<String>,
    since: Option<&str>,
    limit: Option<u64>,
    format: Format,
) -> Result<(), ExitCode> {
    let config = load(path)?;
    let since_ms = match since.map(parse_since).transpose() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("--since: {e}");
            return Err(ExitCode::from(2));
        }
    };
    runtime()?.block_on(async {
        let ledger = open_ledger(&config).await?;
        let records = ledger
            .audit(AuditFilter {
                user,
                since_ms,
                limit,
            })
            .await
            .map_err(fail)?;
        match format {
            Format::Json => {
                let list: Vec<_> = records
                    .iter()
                    .map(|r| {
                        let e = &r.entry;
                        json!({
                            "id": r.id,
                            "time": time_text(e.at_ms),
                            "user": display_account(&e.user),
                            "client": e.client,
                            "statement": e.statement,
                            "backend_sql": e.backend_sql,
                            "epsilon": e.cost.epsilon,
                            "delta": e.cost.delta,
                            "rho": e.rho,
                            "outcome": e.outcome.as_str(),
                            "sqlstate": e.code,
                            "detail": e.detail,
                            "rows": e.rows,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(list));
            }
            Format::Table => {
                println!(
                    "{:>6} {:<24} {:<12} {:<21} {:<9} {:>8} {:>5}  statement",
                    "id", "time (UTC)", "user", "client", "outcome", "ε", "rows"
                );
                for r in &records {
                    let e = &r.entry;
                    let mut statement = one_line(&e.statement, 100);
                    if let (Some(code), Some(detail)) = (&e.code, &e.detail) {
                        statement.push_str(&format!("  [{code}: {}]", one_line(detail, 100)));
                    }
                    println!(
                        "{:>6} {:<24} {:<12} {:<21} {:<9} {:>8} {:>5}  {}",
                        r.id,
                        time_text(e.at_ms),
                        one_line(display_account(&e.user), 24),
                        one_line(&e.client, 40),
                        e.outcome.as_str(),
                        num(e.cost.epsilon),
                        e.rows.map(|n| n.to_string()).unwrap_or_default(),
                        statement
                    );
                }
            }
        }
        Ok(())
    })
}

/// `--since`: an RFC 3339 time, or a duration before now.
fn parse_since(text: &str) -> Result<i64, String> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .map_err(|e| e.to_string());
    }
    humantime::parse_duration(text)
        .map(|d| now_ms().saturating_sub(d.as_millis() as i64))
        .map_err(|_| {
            format!(
                "{text:?} is neither a time (2026-11-23T09:00:00Z) nor a duration (30m, 2h, 7d)"
            )
        })
}

fn time_text(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn display_account(name: &str) -> &str {
    if name == DATASET {
        "(dataset)"
    } else {
        name
    }
}

fn num(x: f64) -> String {
    let s = format!("{x:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `text` on one line of at most `max` characters, with every control
/// character and text-direction override escaped (`\u{1b}`): analysts
/// write the statements, and raw escape codes would let one clear the
/// data owner's screen or overwrite lines to hide a query.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let shown = match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    };
    shown
        .chars()
        .flat_map(|c| {
            let hidden = c.is_control()
                || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
            if hidden {
                c.escape_unicode().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn fail(e: dpgate_ledger::LedgerError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::FAILURE
}
