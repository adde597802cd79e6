//! The refusals of the private path, each with what to do instead.

use dpgate_ledger::{Exhausted, Resource};
use dpgate_sql::explain::fmt_eps;
use dpgate_sql::{sqlstate, Refusal};

/// Refuses a session ε outside the user's range in this statement's
/// config (a reload may have lowered the maximum since the session set it).
pub fn check_epsilon(epsilon: f64, (min, max): (f64, f64)) -> Result<(), Refusal> {
    if epsilon >= min && epsilon <= max {
        return Ok(());
    }
    Err(Refusal::new(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!("this session's dp.epsilon {epsilon} is outside the range one query may spend now, [{min}, {max}]; nothing was charged"),
        format!("SET dp.epsilon to a value in [{min}, {max}], or RESET dp.epsilon"),
    ))
}

/// The refusal for a charge that does not fit, saying which budget and
/// what to do.
pub(crate) fn exhausted(x: &Exhausted) -> Refusal {
    let window = match x.refresh {
        Some(r) => format!(" in the last {}", humantime::format_duration(r)),
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

pub(crate) fn unknown_user(user: &str) -> Refusal {
    Refusal::new(
        sqlstate::INVALID_AUTHORIZATION,
        format!("user {user:?} is no longer declared in proxy.toml"),
        "ask the data owner to declare the user again; reconnect afterwards",
    )
}

/// The one error every failure after the charge gets: it must not depend
/// on the data, so it carries no detail (the log has it).
pub fn failed_after_charge() -> Refusal {
    Refusal::new(
        sqlstate::BACKEND_FAILED,
        "the private query could not be completed; its cost has been charged",
        "retry later; if it keeps failing, ask the data owner to check the backend",
    )
}

/// The ledger could not be read or written: nothing ran.
pub fn ledger_failure(detail: &str) -> Refusal {
    tracing::error!(detail, "ledger failure");
    Refusal::new(
        sqlstate::LEDGER_FAILED,
        "the privacy ledger could not be read or written, so nothing was run or charged",
        "retry later; the data owner should check the ledger (dpgate's log has the cause)",
    )
}

/// A release whose Gaussian measurements spend more ρ than its (ε, δ)
/// charge covers (a planner bug): refused before anything is read, never
/// answered under-charged.
pub(crate) fn uncharged_rho() -> Refusal {
    Refusal::new(
        sqlstate::INTERNAL_ERROR,
        "this plan's Gaussian noise is not covered by its charge; nothing was charged",
        "SET dp.mechanism = 'laplace' and run the query again, and report this to the data owner",
    )
}
