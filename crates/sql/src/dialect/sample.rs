//! Row sampling's SQL: at most `max_rows` rows kept per unit at random,
//! for the bounding step of a query and for each private table cut per
//! unit before a join.

use super::Dialect;

/// Rows of one relation with at most `max_rows` kept per unit.
pub struct Sample<'a> {
    /// The columns to keep, `SQL AS name` comma-separated, or `*`.
    pub selected: &'a str,
    /// The FROM clause.
    pub from: &'a str,
    /// The WHERE clause, which leaves out rows without a unit (so it is
    /// never empty).
    pub filter: &'a str,
    /// The unit's SQL.
    pub unit: &'a str,
    /// The ORDER BY item that ranks a unit's rows
    /// ([`Dialect::bounding_order`]).
    pub order: String,
    /// The name of the rank column the relation carries besides
    /// `selected` (1 to `max_rows` where ranked, 0 where not).
    pub rank: &'a str,
    pub max_rows: u64,
}

impl Sample<'_> {
    /// The sampled rows as a parenthesized SELECT (to be given an alias).
    /// `rereadable`: `from` may be read again
    /// ([`crate::source::Source::rereadable`]), so only the large units
    /// are ranked.
    pub fn sql(&self, d: Dialect, rereadable: bool) -> String {
        let Sample {
            selected,
            from,
            filter,
            unit,
            order,
            rank,
            max_rows,
        } = self;
        let ranked = |filter: &str| {
            format!(
                "SELECT * FROM (SELECT {selected}, ROW_NUMBER() OVER (PARTITION BY {unit} ORDER BY {order}) AS {rank} FROM {from}{filter}) AS __dp_ranked WHERE {rank} <= {max_rows}"
            )
        };
        if !rereadable {
            return format!("({})", ranked(filter));
        }
        // Only the rows of units with more than `max_rows` rows are
        // ranked; the others' rows pass whole, as ranking would keep
        // them.
        let large = LargeUnits::of(d, unit, &format!("{from}{filter}"), *max_rows);
        format!(
            "({} SELECT {selected}, 0 AS {rank} FROM {from}{filter} AND NOT {} UNION ALL {})",
            large.with,
            large.test,
            ranked(&format!("{filter} AND {}", large.test))
        )
    }
}

/// The units with more than `max_rows` rows, for a bounding step that
/// treats them apart: the few that need cutting, while every other
/// unit's rows pass whole.
///
/// A unit is large when GROUP BY counts more than `max_rows` rows for it,
/// its rows are those whose unit `=` its grouped value, and a query's two
/// branches are a row's `test` and `NOT test`, so each row is in exactly
/// one. A row could only pass uncut from a large unit if `=` told apart
/// values that GROUP BY puts together; both use the column's own
/// equality (its type and collation, the same operand on each side, no
/// conversion between them), so they agree where
/// [`crate::source::UnitType::compares_as_grouped`] says so. EXISTS,
/// not IN: PostgreSQL plans it as a hash join that spills to disk where
/// the large units outgrow memory, where NOT IN would rescan them for
/// every row. The rows are read more than once, so every read must
/// return the same rows, as one stored table does under one snapshot
/// ([`crate::source::Source::rereadable`]).
pub struct LargeUnits {
    /// `WITH __dp_large AS MATERIALIZED (…)`, to open a SELECT with.
    pub with: String,
    /// Whether a row's `unit` is a large unit's: an EXISTS.
    pub test: String,
}

impl LargeUnits {
    /// The large units of `rows` (a FROM item with its WHERE clause), by
    /// `unit`, a column of `rows` written as each row names it. Only the
    /// unit is read, so where the dialect groups a lone sorted column
    /// faster than it hashes it ([`Dialect::sorts_lone_units`]) the units
    /// come sorted: on 1M rows of ≤ 5 per unit, 130–260 ms against
    /// 220–430 ms hashed (PostgreSQL, 64 MB and 4 MB of work_mem).
    pub fn of(d: Dialect, unit: &str, rows: &str, max_rows: u64) -> LargeUnits {
        let sorted = if d.sorts_lone_units() {
            " ORDER BY 1"
        } else {
            ""
        };
        LargeUnits {
            with: format!(
                "WITH __dp_large AS MATERIALIZED (SELECT __dp_lu FROM (SELECT {unit} AS __dp_lu FROM {rows}{sorted}) AS __dp_units GROUP BY 1 HAVING COUNT(*) > {max_rows})"
            ),
            test: format!("EXISTS (SELECT 1 FROM __dp_large WHERE __dp_large.__dp_lu = {unit})"),
        }
    }
}
