//! How the bounding step's arithmetic is spelled per backend: exact
//! sums, a unit's partial sums and their scaling, the order rows are
//! ranked in, random draws and truncation.

use super::Dialect;

impl Dialect {
    /// The sum of integer (or integral float) values, each inside bigint
    /// (clamped values, grid units and clip bounds all are). Exact in
    /// PostgreSQL: each value is cast to bigint (an integral float8 is
    /// whole, so the cast is exact) and SUM of bigint is numeric; a
    /// float8 SUM would round once it passed 2^53. SQLite's SUM raises an error on integer overflow, which
    /// would depend on the data, so it sums as a float with TOTAL: exact
    /// while the sum stays below 2^53 grid units. Spark's SUM of a bigint
    /// is a bigint and raises on overflow, so it sums DECIMAL(38, 0): the
    /// summed values are integers below 2^63 (clip bounds and clamps stay
    /// inside bigint), so the sum cannot reach 10^38 before some 10^19
    /// rows.
    pub fn sum(self, sql: &str) -> String {
        match self {
            Dialect::Postgres => format!("SUM(CAST({sql} AS bigint))"),
            Dialect::Sqlite => format!("TOTAL({sql})"),
            Dialect::Spark => format!("SUM(CAST({sql} AS DECIMAL(38, 0)))"),
        }
    }

    /// Whether per-unit pre-aggregation that reads nothing but the unit
    /// (a COUNT(*) without GROUP BY) should feed its GROUP BY rows
    /// sorted by the unit. PostgreSQL (15 and later) sorts a lone column
    /// as bare values and then groups in one pass; its planner prefers
    /// hashing the units instead, which with one group per few rows
    /// misses the cache on every row: measured on 1M rows (≤ 5 per
    /// unit), 100 ms sorted against 210 ms hashed in unit order, 170
    /// against 420 ms shuffled, and 1.0 against 1.15 ms on 10 000 rows.
    /// With more columns the sort carries whole tuples and gains nothing,
    /// so it is not asked for. SQLite groups by sorting anyway; Spark
    /// would sort globally across executors.
    pub fn sorts_lone_units(self) -> bool {
        self == Dialect::Postgres
    }

    /// Whether row sampling ranks only the rows of the units that have
    /// more than `max_rows` rows, found first in a materialized CTE
    /// (one hash aggregation by unit), while every other unit's rows pass
    /// unranked: the same rows are kept as ranking every unit would keep
    /// (a unit with at most `max_rows` rows keeps them all either way),
    /// without sorting them. Measured on 10 000 visits (≤ 5 per unit,
    /// k = 5, grouped by ward): PostgreSQL 3.3 ms against 5.4 ms, SQLite
    /// 4.3 ms against 8.4 ms. Where most units pass the bound it costs one
    /// more scan and hash aggregation (PostgreSQL, k = 1: 7.9 against
    /// 4.2 ms): `max_rows_per_unit` is meant to hold for most units.
    /// Spark has no MATERIALIZED and would compute the units twice.
    pub fn samples_large_units_only(self) -> bool {
        self != Dialect::Spark
    }

    /// One unit's (and group's) partial sum of `summand`, whole grid units
    /// of magnitude at most `magnitude` each, for per-unit pre-aggregation,
    /// where the partial is cut to `[w·lower, w·upper]` afterwards
    /// whatever it holds. PostgreSQL sums values that fit an integer as
    /// integers: SUM(integer) keeps an int8 running total by value, where
    /// SUM(bigint) allocates a 128-bit state and makes a numeric for every
    /// unit (25 % of a 10 000-row SUM, measured). The int8 total passes
    /// bigint only past 2³² rows of one unit at the extreme: there it
    /// wraps (PostgreSQL builds with -fwrapv; a parallel plan's combine
    /// step would raise instead), and a wrapped partial is still cut to
    /// the unit's bounds, so only accuracy could suffer, never privacy.
    /// Other backends, and wider values, sum as [`Dialect::sum`] does.
    pub fn unit_sum(self, summand: &str, magnitude: u64) -> String {
        match self {
            Dialect::Postgres if magnitude <= i32::MAX as u64 => {
                format!("SUM(CAST({summand} AS integer))")
            }
            _ => self.sum(summand),
        }
    }

    /// `trunc(p · w / c)` for a unit's partial sum `p` over `c` rows scaled
    /// to its allowance `w < c`. PostgreSQL computes it in numeric (a
    /// bigint product could overflow: an error that would depend on the
    /// data) with `div`, which truncates (numeric `/` rounds its last
    /// digit, to a whole number past 10¹⁶), and casts back to bigint,
    /// which cannot fail: the result is
    /// at most |p|, a bigint when p is one, and at most w·max(|lower|,
    /// |upper|) ≤ 2⁶² when p is an exact numeric sum.
    pub fn scaled_partial(self, p: &str, w: &str, c: &str) -> String {
        match self {
            Dialect::Postgres => {
                format!("CAST(div(CAST({p} AS numeric) * {w}, {c}) AS bigint)")
            }
            _ => self.truncate(&format!("{p} * {w} / {c}")),
        }
    }

    /// An ORDER BY item that ranks a unit's rows (or groups) for the
    /// bounding step, given the columns `values` that tell them apart.
    /// PostgreSQL and SQLite run a query once, so a random order is drawn.
    /// Spark may run a stage again after losing an executor; a new draw
    /// could then keep other rows of a unit (or give its allowance to
    /// other groups) in the attempt some downstream tasks read than in
    /// the one others read, and the unit would count beyond its bound.
    /// There the order is a hash of the values themselves, the same in
    /// every attempt (rows with equal values are interchangeable). Any
    /// rule that picks a unit's rows from that unit's own rows keeps the
    /// sensitivity; the random draw only spreads the choice.
    pub fn bounding_order(self, values: &[String]) -> String {
        match (self, values) {
            (Dialect::Spark, []) => "0".into(),
            (Dialect::Spark, values) => format!("xxhash64({})", values.join(", ")),
            _ => "random()".into(),
        }
    }

    /// A uniformly random whole number in `[0, n)` for a positive integer
    /// expression `n` (randomized rounding of scaled counts).
    pub fn random_below(self, n: &str) -> String {
        match self {
            Dialect::Postgres | Dialect::Spark => format!("floor(random() * {n})"),
            Dialect::Sqlite => format!("abs(random() % {n})"),
        }
    }

    /// `x` rounded toward zero (an integer for SQLite, a whole number of
    /// the same type for PostgreSQL).
    pub fn truncate(self, x: &str) -> String {
        match self {
            Dialect::Postgres => format!("trunc({x})"),
            Dialect::Sqlite => format!("CAST({x} AS INTEGER)"),
            // floor and ceil of a decimal are exact decimals.
            Dialect::Spark => format!("(CASE WHEN {x} >= 0 THEN floor({x}) ELSE ceil({x}) END)"),
        }
    }
}
