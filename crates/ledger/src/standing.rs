//! The budget rule, apart from storage: what an account has spent, what it
//! may spend, and whether a cost fits. Both stores read an account's row
//! (and, under a refresh window, the sum of its recent charges) inside
//! their locking transaction and ask [`check`].

use std::time::Duration;

use dpgate_config::Budget;

use crate::units::{Amount, Units};
use crate::{ChargeRequest, Exhausted, LedgerError, Resource, Standing, DATASET};

/// One account as stored.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Row {
    /// Spent since the last reset (all time).
    pub spent: Units,
    /// Charged queries since the account was opened.
    pub queries: i64,
    /// Added to the configured budget by `dpgate budget grant`.
    pub granted: Units,
    /// Charges at or before this instant (ms) no longer count.
    pub reset_at_ms: i64,
}

/// Where the counted charges start: `None` counts the running total since
/// the last reset; under a refresh window, only charges after
/// `max(reset, now − refresh)` count.
pub(crate) fn window_start(budget: &Budget, row: &Row, now_ms: i64) -> Option<i64> {
    budget
        .refresh
        .map(|r| row.reset_at_ms.max(now_ms.saturating_sub(duration_ms(r))))
}

/// The account's limit in units: the configured budget (rounded down)
/// plus grants.
pub(crate) fn limit(budget: &Budget, row: &Row) -> Units {
    Units::limit(Amount {
        epsilon: budget.epsilon,
        delta: budget.delta,
    })
    .plus(row.granted)
}

/// Whether `cost` fits in `account`'s budget given what it spent; on
/// success, what remains after the charge.
pub(crate) fn check(
    account: &str,
    budget: &Budget,
    row: &Row,
    spent: Units,
    cost: Units,
) -> Result<Units, LedgerError> {
    let limit = limit(budget, row);
    let after = spent.plus(cost);
    let exhausted = |resource: Resource, pick: fn(Units) -> i64| {
        let value = |u: Units| resource.value(pick(u));
        LedgerError::Exhausted(Exhausted {
            dataset: account == DATASET,
            resource,
            spent: value(spent),
            budget: value(limit),
            cost: value(cost),
            refresh: budget.refresh,
        })
    };
    if after.epsilon > limit.epsilon {
        return Err(exhausted(Resource::Epsilon, |u| u.epsilon));
    }
    if after.delta > limit.delta {
        return Err(exhausted(Resource::Delta, |u| u.delta));
    }
    Ok(limit.minus_or_zero(after))
}

/// The accounts a charge is added to, in locking order (the dataset, ""
/// first): the dataset account always — so a dataset budget set later
/// counts all earlier spending — with its budget if one is set, then the
/// user with theirs.
pub(crate) fn accounts(request: &ChargeRequest) -> [(&str, Option<&Budget>); 2] {
    [
        (DATASET, request.dataset.as_ref()),
        (request.entry.user.as_str(), Some(&request.budget)),
    ]
}

/// The admin view of an account.
pub(crate) fn view(budget: &Budget, row: &Row, spent: Units) -> Standing {
    Standing {
        limit: limit(budget, row).amount(),
        spent: spent.amount(),
        granted: row.granted.amount(),
        queries: row.queries,
        reset_at_ms: row.reset_at_ms,
    }
}

pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(refresh: Option<Duration>) -> Budget {
        Budget {
            epsilon: 1.0,
            delta: 1e-6,
            refresh,
        }
    }

    #[test]
    fn a_cost_fits_up_to_the_limit_and_grants_extend_it() {
        let b = budget(None);
        let row = Row::default();
        let cost = Units::cost(Amount {
            epsilon: 0.5,
            delta: 0.0,
        });
        let left = check("ann", &b, &row, cost, cost).unwrap();
        assert_eq!(left.epsilon, 0);
        let err = check("ann", &b, &row, cost.plus(cost), cost).unwrap_err();
        assert!(matches!(
            err,
            LedgerError::Exhausted(Exhausted {
                resource: Resource::Epsilon,
                dataset: false,
                ..
            })
        ));
        let granted = Row {
            granted: cost,
            ..row
        };
        assert!(check("ann", &b, &granted, cost.plus(cost), cost).is_ok());
    }

    #[test]
    fn delta_is_capped_on_its_own() {
        let b = budget(None);
        let cost = Units::cost(Amount {
            epsilon: 0.1,
            delta: 6e-7,
        });
        assert!(check("", &b, &Row::default(), Units::default(), cost).is_ok());
        let err = check("", &b, &Row::default(), cost, cost).unwrap_err();
        assert!(matches!(
            err,
            LedgerError::Exhausted(Exhausted {
                resource: Resource::Delta,
                dataset: true,
                ..
            })
        ));
    }

    #[test]
    fn the_window_starts_at_the_later_of_reset_and_refresh() {
        let day = Duration::from_secs(86_400);
        let row = Row {
            reset_at_ms: 5_000,
            ..Row::default()
        };
        assert_eq!(window_start(&budget(None), &row, 1_000_000_000), None);
        let b = budget(Some(day));
        assert_eq!(window_start(&b, &row, 86_400_000 + 1_000), Some(5_000));
        assert_eq!(window_start(&b, &row, 86_400_000 + 9_000), Some(9_000));
    }
}
