//! dpgate's SQL vocabulary: the types of row-level and released values,
//! numeric ranges, literals as written, a checked row-level expression,
//! and the one value type ([`Cell`]) that constants, bound parameters,
//! released values, group keys and kept answers all share. Every other
//! module of the crate builds on these; this module depends on none of
//! them except [`crate::error`].

use dpgate_config::ColumnType;
use dpgate_dp::release::Released;

use crate::error::{sqlstate, Refusal};

/// Types of row-level values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqlType {
    /// Integers (computed as bigint).
    Int,
    /// Real numbers (float8).
    Float,
    /// Text.
    Text,
    /// Booleans.
    Bool,
    /// Dates.
    Date,
    /// Timestamps.
    Timestamp,
    /// NULL, an untyped string literal, or a privacy unit of undeclared type.
    Unknown,
}

impl From<ColumnType> for SqlType {
    fn from(t: ColumnType) -> SqlType {
        match t {
            ColumnType::Int => SqlType::Int,
            ColumnType::Float => SqlType::Float,
            ColumnType::Text => SqlType::Text,
            ColumnType::Bool => SqlType::Bool,
            ColumnType::Date => SqlType::Date,
            ColumnType::Timestamp => SqlType::Timestamp,
        }
    }
}

impl SqlType {
    /// Int or Float.
    pub fn is_numeric(self) -> bool {
        matches!(self, SqlType::Int | SqlType::Float)
    }

    /// PostgreSQL's name for the type, for messages (the catalog's name
    /// for the declared type, so a message and `\d` agree).
    pub fn pg_name(self) -> &'static str {
        match self {
            SqlType::Int => ColumnType::Int.pg_name(),
            SqlType::Float => ColumnType::Float.pg_name(),
            SqlType::Text => ColumnType::Text.pg_name(),
            SqlType::Bool => ColumnType::Bool.pg_name(),
            SqlType::Date => ColumnType::Date.pg_name(),
            SqlType::Timestamp => ColumnType::Timestamp.pg_name(),
            SqlType::Unknown => "unknown",
        }
    }

    /// The type a value of this type is released as.
    pub fn output(self) -> OutputType {
        match self {
            SqlType::Int => OutputType::Int,
            SqlType::Float => OutputType::Float,
            SqlType::Bool => OutputType::Bool,
            _ => OutputType::Text,
        }
    }
}

/// A closed numeric interval; infinite ends mean "no bound".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Range {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Range {
    /// No bound at all.
    pub const ALL: Range = Range {
        lo: f64::NEG_INFINITY,
        hi: f64::INFINITY,
    };

    /// `[lo, hi]`.
    pub fn new(lo: f64, hi: f64) -> Range {
        Range { lo, hi }
    }

    /// Both ends finite.
    pub fn is_finite(&self) -> bool {
        self.lo.is_finite() && self.hi.is_finite()
    }

    /// The smallest interval holding both.
    pub fn hull(self, other: Range) -> Range {
        Range::new(self.lo.min(other.lo), self.hi.max(other.hi))
    }

    /// The largest absolute value.
    pub fn max_abs(&self) -> f64 {
        self.lo.abs().max(self.hi.abs())
    }

    pub(crate) fn contains_zero(&self) -> bool {
        self.lo <= 0.0 && self.hi >= 0.0
    }
}

/// A literal as written in a row-level expression, before it has a type:
/// `3` may yet be compared with a float column and `'2024-01-31'` with a
/// date, so unlike a [`Cell`] it holds a number and an untyped string.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// NULL.
    Null,
    /// A number.
    Number(f64),
    /// A string (untyped until compared).
    Text(String),
    /// TRUE or FALSE.
    Bool(bool),
}

/// A checked row-level expression.
#[derive(Clone, Debug)]
pub struct Typed {
    /// Backend SQL (bare columns unclamped; see [`Typed::operand`]).
    pub sql: String,
    /// Its type.
    pub ty: SqlType,
    /// Proven range of numeric values (before NULLs).
    pub range: Range,
    /// Every value it can take, when that is a public, finite list
    /// (`None` in the list is NULL). Keys with a domain are released in full.
    pub domain: Option<Vec<Option<String>>>,
    /// It is a privacy unit column.
    pub is_unit: bool,
    /// It is a bare column reference.
    pub column: bool,
    /// It is a literal.
    pub literal: Option<Literal>,
    /// It is never NULL on any row (a column declared `not_null`, a
    /// non-NULL literal, arithmetic on such, or a column the WHERE clause
    /// only lets through when it has a value). Used for accuracy only: the
    /// count of its values is then the count of rows.
    pub not_null: bool,
}

impl Typed {
    pub(crate) fn new(sql: String, ty: SqlType, range: Range) -> Typed {
        Typed {
            sql,
            ty,
            range,
            domain: None,
            is_unit: false,
            column: false,
            literal: None,
            not_null: false,
        }
    }

    pub(crate) fn with_domain(mut self, domain: Option<Vec<Option<String>>>) -> Typed {
        self.domain = domain;
        self
    }

    /// The numeric range, which must be finite (for sums, means, quantiles).
    pub fn finite_range(&self, what: &str) -> Result<Range, Refusal> {
        if !self.ty.is_numeric() {
            return Err(Refusal::new(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "{what} needs a number, but {} is {}",
                    self.sql,
                    self.ty.pg_name()
                ),
                "aggregate an int or float column or expression",
            ));
        }
        if self.is_unit {
            return Err(Refusal::new(
                sqlstate::DATATYPE_MISMATCH,
                format!(
                    "{} identifies a person and has no bounds to {what}",
                    self.sql
                ),
                "count it with COUNT(DISTINCT ...) instead",
            ));
        }
        if !self.range.is_finite() {
            return Err(Refusal::unsupported(
                format!("{what} of {} is unbounded: dpgate cannot prove a finite range for it", self.sql),
                "clamp it, e.g. LEAST(GREATEST(expr, 0), 100), or ask the data owner to declare bounds for its columns",
            ));
        }
        // Summed values are scaled onto a grid fine enough for the range,
        // and variances square them: beyond these magnitudes a product
        // could underflow to 0, which PostgreSQL reports as an error for
        // some rows' values and not others (a data-dependent error).
        let m = self.range.max_abs();
        if m > SUMMED_MAGNITUDE_MAX || (m > 0.0 && m < SUMMED_MAGNITUDE_MIN) {
            return Err(Refusal::new(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!(
                    "{what} of {} would sum values up to {m:e} in magnitude; dpgate sums magnitudes from {SUMMED_MAGNITUDE_MIN:e} to {SUMMED_MAGNITUDE_MAX:e}",
                    self.sql
                ),
                "rescale outside the aggregate, e.g. SUM(x) * 1e-120 instead of SUM(x * 1e-120), or ask the data owner to narrow the column's bounds",
            ));
        }
        Ok(self.range)
    }
}

/// Largest magnitude of a range that is summed, averaged or squared: its
/// grid scale stays above 2⁻³¹³, so a value of at least 1e-100 (smaller
/// ones are flushed to 0) never underflows when scaled.
const SUMMED_MAGNITUDE_MAX: f64 = 1.0e100;
/// Smallest non-zero magnitude of such a range: a centred value of a
/// range at least this wide is 0 or at least ~1e-116, so its square
/// (≥ 1e-232) never underflows.
const SUMMED_MAGNITUDE_MIN: f64 = 1.0e-100;

/// Quotes a string literal for SQL.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Whether `sql` is a column reference: dot-separated names, each a plain
/// identifier or a double-quoted one without embedded quotes. Reading such
/// a reference again costs nothing; anything else may be an expression.
pub fn is_column_ref(sql: &str) -> bool {
    !sql.is_empty()
        && sql.split('.').all(|part| {
            let quoted = part.len() >= 2
                && part.starts_with('"')
                && part.ends_with('"')
                && !part[1..part.len() - 1].contains('"');
            let plain = !part.is_empty()
                && !part.starts_with(|c: char| c.is_ascii_digit())
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            quoted || plain
        })
}

/// Types of released values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputType {
    /// bigint
    Int,
    /// double precision
    Float,
    /// text (also dates and timestamps of group keys)
    Text,
    /// boolean
    Bool,
}

impl OutputType {
    /// PostgreSQL's name for the released type (as front ends describe it).
    pub fn pg_name(self) -> &'static str {
        match self {
            OutputType::Int => ColumnType::Int.pg_name(),
            OutputType::Float => ColumnType::Float.pg_name(),
            OutputType::Text => ColumnType::Text.pg_name(),
            OutputType::Bool => ColumnType::Bool.pg_name(),
        }
    }
}

/// One SQL value, as dpgate holds it outside the backend: a constant of a
/// constant select, a bound parameter, a released value or group key, a
/// cell of a kept answer. Dates and timestamps are text in PostgreSQL's
/// spelling.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A real number.
    Float(f64),
    /// Text (also dates and timestamps).
    Text(String),
    /// A boolean.
    Bool(bool),
}

impl From<Released> for Cell {
    /// A released number; a non-finite float (the mechanisms never give
    /// one, but a post-processed ratio may) is NULL, which every client
    /// can read.
    fn from(r: Released) -> Cell {
        match r {
            Released::Int(i) => Cell::Int(i),
            Released::Float(f) if f.is_finite() => Cell::Float(f),
            Released::Float(_) => Cell::Null,
        }
    }
}

/// One spelling per key value of a type, the same for the backend's text
/// and for a declared or derived domain entry (`01`, `001` and `1` are one
/// int; `-0` and `0` one float), so each backend group matches at most one
/// released key.
pub fn canonical_key(text: Option<&str>, ty: OutputType) -> Option<String> {
    text.map(|t| match key_value(Some(t), ty) {
        Cell::Float(0.0) => format!("{:?}", Cell::Float(0.0)),
        other => format!("{other:?}"),
    })
}

/// [`canonical_key`] of each key of a group.
pub fn canonical_keys(g: &[Option<String>], keys: &[OutputType]) -> Vec<Option<String>> {
    g.iter()
        .zip(keys)
        .map(|(k, ty)| canonical_key(k.as_deref(), *ty))
        .collect()
}

/// A key's text as a typed value.
pub fn key_value(text: Option<&str>, ty: OutputType) -> Cell {
    let Some(t) = text else {
        return Cell::Null;
    };
    match ty {
        // An integral float text (SQLite's 3.0) is that int; anything else
        // stays text, so two different values never read as one key.
        OutputType::Int => {
            t.trim()
                .parse()
                .map(Cell::Int)
                .unwrap_or_else(|_| match t.trim().parse::<f64>() {
                    Ok(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Cell::Int(f as i64),
                    _ => Cell::Text(t.into()),
                })
        }
        OutputType::Float => t.trim().parse().map_or(Cell::Text(t.into()), Cell::Float),
        OutputType::Bool => match t.trim().to_ascii_lowercase().as_str() {
            "t" | "true" => Cell::Bool(true),
            "f" | "false" => Cell::Bool(false),
            _ => Cell::Text(t.into()),
        },
        OutputType::Text => Cell::Text(t.into()),
    }
}

/// Aggregate functions dpgate knows (answered or refused with a reason).
pub fn is_aggregate(name: &str) -> bool {
    matches!(
        name,
        "count"
            | "sum"
            | "avg"
            | "mean"
            | "variance"
            | "var_samp"
            | "var_pop"
            | "stddev"
            | "stddev_samp"
            | "stddev_pop"
            | "median"
            | "percentile_cont"
            | "percentile_disc"
            | "min"
            | "max"
            | "array_agg"
            | "string_agg"
            | "json_agg"
            | "jsonb_agg"
            | "bool_and"
            | "bool_or"
            | "every"
            | "mode"
            | "corr"
            | "covar_pop"
            | "covar_samp"
            | "bit_and"
            | "bit_or"
    )
}
