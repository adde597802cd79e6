//! The backend dialects. The planner decides what to compute (which rows,
//! which clamps, which measurements); this module decides how each
//! construct whose spelling differs is written for PostgreSQL, SQLite and
//! Spark SQL. Everything else the planner writes (arithmetic but integer
//! division, comparisons, CASE, COALESCE, COUNT, window functions) is the
//! same in all three. Quoting is written the standard way (`"ident"`,
//! `'text'`) and converted for Spark once the statement is complete
//! ([`Dialect::finish`]).
//!
//! Every rendering keeps the planner's guarantees: it cannot fail on any
//! row (for Spark: in ANSI mode, where overflow, invalid casts and
//! division by zero raise), and NULL stays NULL (a NULL value is not
//! counted or summed).

mod bounding;
mod sample;
mod spark;

pub use sample::{LargeUnits, Sample};

use dpgate_config::{quote_ident, BackendStore, Table};

use crate::types::{is_column_ref, quote_literal, SqlType};

/// The SQL dialect backend queries are written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    #[default]
    Postgres,
    /// SQLite (3.38 or later, with the functions `sqlite_functions` names).
    Sqlite,
    /// Spark SQL (Spark 4, ANSI mode, session time zone UTC), through
    /// Spark Connect.
    Spark,
}

/// Math functions PostgreSQL has and SQLite builds without
/// `SQLITE_ENABLE_MATH_FUNCTIONS` lack, and `round` with PostgreSQL's
/// float8 meaning (ties to even, where SQLite's rounds ties away from
/// zero); the SQLite backend registers them with one argument, and
/// `round`/`trunc` with two as PostgreSQL's numeric versions.
pub const SQLITE_FUNCTIONS: [&str; 7] =
    ["floor", "ceil", "ceiling", "trunc", "sqrt", "sign", "round"];

impl Dialect {
    /// The dialect of the configured backend.
    pub fn of(store: &BackendStore) -> Dialect {
        match store {
            BackendStore::Postgres(_) => Dialect::Postgres,
            BackendStore::Sqlite(_) => Dialect::Sqlite,
            BackendStore::Spark(_) => Dialect::Spark,
        }
    }

    /// The complete statement `sql`, written with standard quoting, as the
    /// backend must receive it (for Spark: backticked identifiers and
    /// backslash-escaped strings; see [`spark::requote`]).
    /// Takes the text by value: on PostgreSQL and SQLite it is returned
    /// as it is, with no copy on the query path.
    pub fn finish(self, sql: String) -> String {
        match self {
            Dialect::Spark => spark::requote(&sql),
            _ => sql,
        }
    }

    /// The dialect's short name (`postgres`, `sqlite`, `spark`), for reports.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::Sqlite => "sqlite",
            Dialect::Spark => "spark",
        }
    }

    /// The table as it is named in FROM.
    pub fn table(self, table: &Table) -> String {
        match self {
            Dialect::Postgres => table.qualified_name(),
            // One schema: validation refuses any other than public.
            Dialect::Sqlite => quote_ident(&table.name),
            // As declared by backend_name; else in the session's catalog,
            // PostgreSQL's default schema being Spark's default database.
            Dialect::Spark => match &table.backend_name {
                Some(parts) => parts
                    .iter()
                    .map(|p| quote_ident(p))
                    .collect::<Vec<_>>()
                    .join("."),
                None => {
                    let database = if table.schema.eq_ignore_ascii_case("public") {
                        "default"
                    } else {
                        &table.schema
                    };
                    format!("{}.{}", quote_ident(database), quote_ident(&table.name))
                }
            },
        }
    }

    /// The physical row identity under `qualifier`, standing for the
    /// privacy unit of a table whose rows are each one person.
    /// PostgreSQL's `ctid` is unique within one physical table only: a
    /// partitioned table, or a parent under legacy inheritance, has a
    /// row at `(0,1)` in each partition, so the identity is the pair
    /// with the row's own table (`tableoid`); `ctid` alone pooled
    /// several people as one unit.
    pub fn row_id(self, qualifier: &str) -> String {
        let q = quote_ident(qualifier);
        match self {
            Dialect::Postgres => format!("ROW({q}.tableoid, {q}.ctid)"),
            Dialect::Sqlite => format!("{q}.rowid"),
            // Spark has no row identity: validation refuses row-level
            // tables on Spark, and this name fails analysis (before any
            // row is read) should one reach it.
            Dialect::Spark => format!("{q}.\"__dp_no_row_identity\""),
        }
    }

    /// An ORDER BY item for a key's text (`key_text`), in byte order on
    /// both backends, NULL first.
    pub fn order_key(self, text: &str) -> String {
        match self {
            Dialect::Postgres => format!("{text} COLLATE \"C\" NULLS FIRST"),
            // Spark's default collation (UTF8_BINARY) orders by bytes.
            Dialect::Sqlite | Dialect::Spark => format!("{text} NULLS FIRST"),
        }
    }

    /// A declared column `sql` read as its declared type `ty`. PostgreSQL
    /// and SQLite read it as stored (a PostgreSQL column has its type;
    /// every SQLite spelling tolerates any stored value). Spark reads it
    /// through TRY_CAST: a column whose Spark type is not the declared one
    /// (text in a declared int, a decimal beyond bigint) gives NULL for
    /// values that do not convert, where an implicit cast in ANSI mode
    /// would raise; on a column of the declared type it is no cast at all.
    pub fn column(self, sql: String, ty: SqlType) -> String {
        let spark_type = match ty {
            SqlType::Int => "BIGINT",
            SqlType::Float => "DOUBLE",
            SqlType::Text => "STRING",
            SqlType::Bool => "BOOLEAN",
            SqlType::Date => "DATE",
            SqlType::Timestamp => "TIMESTAMP",
            SqlType::Unknown => return sql,
        };
        match self {
            Dialect::Spark => format!("TRY_CAST({sql} AS {spark_type})"),
            _ => sql,
        }
    }

    /// A date or timestamp column read so that every later date function
    /// is total: values outside years 1–9999 (PostgreSQL's ±infinity and
    /// its BC and far-future dates, which raise in casts, `extract` and
    /// `date_trunc`; in SQLite any text that does not sort as an ISO date)
    /// read as NULL.
    pub fn guarded_date(self, sql: &str, ty: SqlType) -> String {
        match (self, ty) {
            (Dialect::Postgres | Dialect::Spark, SqlType::Date) => format!(
                "(CASE WHEN {sql} BETWEEN DATE '0001-01-01' AND DATE '9999-12-31' THEN {sql} END)"
            ),
            (Dialect::Postgres | Dialect::Spark, _) => format!(
                "(CASE WHEN {sql} BETWEEN TIMESTAMP '0001-01-01 00:00:00' AND TIMESTAMP '9999-12-31 23:59:59.999999' THEN {sql} END)"
            ),
            (Dialect::Sqlite, _) => format!(
                "(CASE WHEN {sql} BETWEEN '0001-01-01' AND '9999-12-31 23:59:59.999999' THEN {sql} END)"
            ),
        }
    }

    /// `sql` clamped into `[lo, hi]` and read as an integer or a float.
    /// NULL stays NULL: a missing value is neither counted nor summed.
    pub fn clamp(self, sql: &str, ty: SqlType, lo: f64, hi: f64) -> String {
        let (lo_f, hi_f) = (lo, hi);
        let int = ty == SqlType::Int;
        let (lo, hi) = if int {
            ((lo as i64).to_string(), (hi as i64).to_string())
        } else {
            (format!("{lo:e}"), format!("{hi:e}"))
        };
        match self {
            // A column is read again at no cost, so it is compared with
            // each bound: a NULL fails every test and stays NULL, and this
            // costs the backend less per row than a NULL test and
            // LEAST(GREATEST(..)) (82 -> 67 ms over 1M float8 values
            // here). An expression is computed once in LEAST(GREATEST(..))
            // instead; GREATEST skips NULLs, so NULL is tested first. NaN
            // sorts above every number in PostgreSQL, so it lands on hi.
            // Each branch is a bigint, so the CASE is one whatever the
            // column's stored type: a float column declared int would
            // otherwise make the CASE a float, in which a bound such as
            // 2³¹ − 1 rounds past itself. The cast is reached only
            // strictly inside the bounds (a float at the top bound, which
            // may have rounded past bigint, takes the bound).
            Dialect::Postgres if int && is_column_ref(sql) => format!(
                "CASE WHEN {sql} <= {lo} THEN {lo} WHEN {sql} >= {hi} THEN {hi} ELSE CAST({sql} AS bigint) END"
            ),
            Dialect::Postgres if int => format!(
                "CASE WHEN {sql} IS NULL THEN NULL ELSE CAST(LEAST(GREATEST({sql}, {lo}), {hi}) AS bigint) END"
            ),
            // Cast only inside the bounds (a numeric column beyond float8
            // would fail to cast), and values nearer zero than 1e-100 read
            // as 0 (a tiny numeric fails to cast; a tiny float8 makes
            // products underflow); compared, not abs(): abs of the smallest
            // bigint raises. No stored value can make the read raise.
            Dialect::Postgres if is_column_ref(sql) => format!(
                "CASE WHEN {sql} > -1e-100 AND {sql} < 1e-100 THEN {zero:e} WHEN {sql} < {lo} THEN {lo} WHEN {sql} > {hi} THEN {hi} ELSE CAST({sql} AS float8) END",
                zero = 0f64.clamp(lo_f, hi_f)
            ),
            Dialect::Postgres => format!(
                "CASE WHEN {sql} IS NULL THEN NULL WHEN {sql} > -1e-100 AND {sql} < 1e-100 THEN {zero:e} ELSE CAST(LEAST(GREATEST({sql}, {lo}), {hi}) AS float8) END",
                zero = 0f64.clamp(lo_f, hi_f)
            ),
            // Scalar MIN and MAX return NULL for a NULL argument; text or a
            // blob stored in a numeric column sorts above numbers, so it
            // lands on hi.
            Dialect::Sqlite if int => format!("CAST(MIN(MAX({sql}, {lo}), {hi}) AS INTEGER)"),
            Dialect::Sqlite => format!("MIN(MAX(CAST({sql} AS REAL), {lo}), {hi})"),
            Dialect::Spark => spark::clamp(sql, int, &lo, &hi, 0f64.clamp(lo_f, hi_f)),
        }
    }

    /// `sql` (an integer or a float) as a float.
    pub fn to_float(self, sql: &str) -> String {
        match self {
            Dialect::Postgres => format!("CAST({sql} AS float8)"),
            Dialect::Sqlite => format!("CAST({sql} AS REAL)"),
            Dialect::Spark => format!("CAST({sql} AS DOUBLE)"),
        }
    }

    /// A float with a proven finite range as an integer, rounded.
    pub fn float_to_int(self, sql: &str) -> String {
        match self {
            Dialect::Postgres => format!("CAST({sql} AS bigint)"),
            // SQLite's CAST truncates; PostgreSQL's rounds.
            Dialect::Sqlite => format!("CAST(ROUND({sql}) AS INTEGER)"),
            // Spark's CAST truncates too; BROUND rounds ties to even, as
            // PostgreSQL's float8 to bigint cast does.
            Dialect::Spark => format!("CAST(BROUND({sql}) AS BIGINT)"),
        }
    }

    /// An integer literal's digits as a 64-bit integer. Spark reads digits
    /// that fit 32 bits as INT, whose arithmetic overflows at 2^31, where
    /// every planner range assumes bigint; and Spark leaves a failing
    /// constant inside CASE to run per row, so an overflow there would
    /// depend on the data. (PostgreSQL folds such constants while
    /// planning, the same for any data, and the planner folds integer
    /// literal arithmetic itself: see `operator::binary`.)
    pub fn int_literal(self, digits: &str) -> String {
        match self {
            Dialect::Spark => format!("CAST({digits} AS BIGINT)"),
            _ => digits.to_string(),
        }
    }

    /// An integer expression that is already bounded, typed as integer.
    pub fn int(self, sql: &str) -> String {
        match self {
            Dialect::Postgres => format!("CAST({sql} AS bigint)"),
            Dialect::Sqlite => format!("CAST({sql} AS INTEGER)"),
            Dialect::Spark => format!("CAST({sql} AS BIGINT)"),
        }
    }

    /// `a / b` of integers, rounded toward zero (Spark's `/` gives a
    /// double; its `div` is the integer quotient). The caller keeps `b`
    /// from being zero.
    pub fn int_div(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Spark => format!("({a} div {b})"),
            _ => format!("({a} / {b})"),
        }
    }

    /// A value of type `from` as text, spelled as PostgreSQL prints it
    /// (group keys are compared with declared domains in that spelling).
    pub fn to_text(self, sql: &str, from: SqlType) -> String {
        match (self, from) {
            (Dialect::Postgres, _) => format!("CAST({sql} AS text)"),
            // SQLite stores booleans as 0 and 1.
            (Dialect::Sqlite, SqlType::Bool) => {
                format!("CASE WHEN {sql} THEN 'true' WHEN NOT {sql} THEN 'false' END")
            }
            (Dialect::Sqlite, _) => format!("CAST({sql} AS TEXT)"),
            // Booleans print as true and false, dates and timestamps as
            // PostgreSQL prints them (session time zone UTC).
            (Dialect::Spark, _) => format!("CAST({sql} AS STRING)"),
        }
    }

    /// A privacy unit's value (a column, or a row identity) as text: how
    /// the data owner's tools name one unit to the backend.
    pub fn unit_text(self, sql: &str) -> String {
        self.to_text(sql, SqlType::Text)
    }

    /// A group key of type `ty` in the form rows are grouped by and the
    /// backend returns: text compared byte by byte, except SQLite's and
    /// Spark's floats, which the backend crate formats as PostgreSQL does
    /// (shortest round-trip digits; their text would say `1200.0`).
    ///
    /// Rows are grouped by this form, never by the value with its own
    /// equality: where that equality joins values that print differently
    /// (a case-insensitive collation's 'A' and 'a', a float's -0 and 0,
    /// a numeric's 0.5 and 0.50), the group would be released under the
    /// spelling of whichever row the backend met first, so one person's
    /// rows could rename a group, or empty a declared one, without
    /// noise. Grouped by its text, each row's group is a function of its
    /// own value. (`character(n)` loses its trailing spaces in the cast,
    /// as its equality ignores them; Spark already groups -0.0 with 0.0
    /// and NaN with NaN, and SQLite's floats add 0.0, which turns -0.0
    /// into 0.0.)
    pub fn key_text(self, sql: &str, ty: SqlType) -> String {
        match (self, ty) {
            (Dialect::Sqlite, SqlType::Float) => format!("({sql} + 0.0)"),
            (Dialect::Spark, SqlType::Float) => sql.to_string(),
            (Dialect::Postgres, _) => format!("{} COLLATE \"C\"", self.to_text(sql, ty)),
            (Dialect::Sqlite, _) => format!("{} COLLATE BINARY", self.to_text(sql, ty)),
            (Dialect::Spark, _) => format!("collate({}, 'UTF8_BINARY')", self.to_text(sql, ty)),
        }
    }

    /// A date or timestamp as `to` (Date or Timestamp).
    pub fn to_datetime(self, sql: &str, to: SqlType) -> String {
        match (self, to) {
            (Dialect::Postgres, SqlType::Date) => format!("CAST({sql} AS date)"),
            (Dialect::Postgres, _) => format!("CAST({sql} AS timestamp)"),
            // Only dates, timestamps and checked literals reach here.
            (Dialect::Spark, SqlType::Date) => format!("CAST({sql} AS DATE)"),
            (Dialect::Spark, _) => format!("CAST({sql} AS TIMESTAMP)"),
            // SQLite keeps dates as ISO text; date() and datetime() give
            // NULL for text that is not a date, never an error.
            (Dialect::Sqlite, SqlType::Date) => format!("date({sql})"),
            (Dialect::Sqlite, _) => format!("datetime({sql})"),
        }
    }

    /// A checked date or timestamp literal.
    pub fn datetime_literal(self, text: &str, ty: SqlType) -> String {
        self.to_datetime(&quote_literal(text), ty)
    }

    /// A boolean literal.
    pub fn bool_literal(self, b: bool) -> String {
        match self {
            Dialect::Postgres | Dialect::Spark => b.to_string().to_uppercase(),
            Dialect::Sqlite => u8::from(b).to_string(),
        }
    }

    /// `extract(field FROM sql)` for an integer field (lower case, one
    /// `expr::extract` accepts), as an integer.
    pub fn extract(self, field: &str, sql: &str) -> String {
        if self == Dialect::Spark {
            return spark::extract(field, sql);
        }
        if self == Dialect::Postgres {
            // Through timestamp: PostgreSQL refuses time fields of a date.
            return format!(
                "CAST(EXTRACT({} FROM CAST({sql} AS timestamp)) AS bigint)",
                field.to_uppercase()
            );
        }
        let part = |f: &str| format!("CAST(strftime('{f}', {sql}) AS INTEGER)");
        match field {
            "year" => part("%Y"),
            "isoyear" => part("%G"),
            "quarter" => format!("(({} + 2) / 3)", part("%m")),
            "month" => part("%m"),
            "week" => part("%V"),
            "day" => part("%d"),
            "doy" => part("%j"),
            "dow" => part("%w"),
            "isodow" => part("%u"),
            "hour" => part("%H"),
            "minute" => part("%M"),
            "decade" => format!("({} / 10)", part("%Y")),
            "century" => format!("(({} + 99) / 100)", part("%Y")),
            "millennium" => format!("(({} + 999) / 1000)", part("%Y")),
            other => unreachable!("extract field {other} is checked by the planner"),
        }
    }

    /// Seconds since 1970-01-01 as a float.
    pub fn epoch(self, sql: &str) -> String {
        match self {
            Dialect::Postgres => format!("CAST(EXTRACT(EPOCH FROM {sql}) AS float8)"),
            Dialect::Sqlite => format!("((julianday({sql}) - 2440587.5) * 86400.0)"),
            Dialect::Spark => {
                format!("(CAST(unix_micros(CAST({sql} AS TIMESTAMP)) AS DOUBLE) / 1e6)")
            }
        }
    }

    /// `date_trunc(unit, sql)` as a timestamp (`YYYY-MM-DD HH:MM:SS`).
    pub fn date_trunc(self, unit: &str, sql: &str) -> String {
        if self == Dialect::Spark {
            return spark::date_trunc(unit, sql);
        }
        if self == Dialect::Postgres {
            return format!(
                "date_trunc({}, CAST({sql} AS timestamp))",
                quote_literal(unit)
            );
        }
        // Each form gives NULL for NULL or non-date text.
        let back = |start: &str, amount: String, what: &str| {
            format!("datetime({sql}, '{start}', printf('-%d {what}', {amount}))")
        };
        let field = |f: &str| format!("CAST(strftime('{f}', {sql}) AS INTEGER)");
        match unit {
            "year" => format!("datetime({sql}, 'start of year')"),
            "quarter" => back(
                "start of month",
                format!("({} - 1) % 3", field("%m")),
                "months",
            ),
            "month" => format!("datetime({sql}, 'start of month')"),
            "week" => back("start of day", format!("({} + 6) % 7", field("%w")), "days"),
            "day" => format!("datetime({sql}, 'start of day')"),
            "hour" => format!("strftime('%Y-%m-%d %H:00:00', {sql})"),
            "minute" => format!("strftime('%Y-%m-%d %H:%M:00', {sql})"),
            "decade" => back("start of year", format!("{} % 10", field("%Y")), "years"),
            "century" => back(
                "start of year",
                format!("({} - 1) % 100", field("%Y")),
                "years",
            ),
            other => unreachable!("date_trunc unit {other} is checked by the planner"),
        }
    }

    /// `width_bucket(x, lo, hi, n)` for a finite float `x`, as an integer
    /// from 0 (below) to n + 1 (at or above the upper edge).
    pub fn width_bucket(self, x: &str, lo: f64, hi: f64, n: i64) -> String {
        match self {
            Dialect::Postgres => {
                format!("CAST(width_bucket({x}, {lo:e}, {hi:e}, {n}) AS bigint)")
            }
            // The same arithmetic as PostgreSQL's, so edges fall alike;
            // NULL first, as Spark's LEAST would skip it.
            Dialect::Sqlite | Dialect::Spark => {
                let (min, int) = match self {
                    Dialect::Sqlite => ("MIN", "INTEGER"),
                    _ => ("LEAST", "BIGINT"),
                };
                if lo < hi {
                    format!(
                        "(CASE WHEN {x} IS NULL THEN NULL WHEN {x} < {lo:e} THEN 0 WHEN {x} >= {hi:e} THEN {} \
                         ELSE {min}(CAST(({x} - {lo:e}) * {n} / ({hi:e} - {lo:e}) AS {int}) + 1, {n}) END)",
                        n + 1
                    )
                } else {
                    format!(
                        "(CASE WHEN {x} IS NULL THEN NULL WHEN {x} > {lo:e} THEN 0 WHEN {x} <= {hi:e} THEN {} \
                         ELSE {min}(CAST(({lo:e} - {x}) * {n} / ({lo:e} - {hi:e}) AS {int}) + 1, {n}) END)",
                        n + 1
                    )
                }
            }
        }
    }

    /// `round(x, digits)` or `trunc(x, digits)` of a float, as a float.
    pub fn round_digits(self, name: &str, x: &str, digits: i64) -> String {
        let f = if name == "trunc" { "TRUNC" } else { "ROUND" };
        match self {
            // float8 has no round(x, n): go through numeric, then back.
            Dialect::Postgres => {
                format!("CAST({f}(CAST({x} AS numeric), {digits}) AS float8)")
            }
            // The registered two-argument round and trunc work on the
            // 15 significant digits float8 becomes as numeric, as
            // PostgreSQL does.
            Dialect::Sqlite => format!("{}({x}, {digits})", f.to_lowercase()),
            Dialect::Spark => spark::round_digits(name == "trunc", x, digits),
        }
    }

    /// `round`, `trunc`, `floor`, `ceil` or `ceiling` (`name`, lower case)
    /// of a float, as a float.
    pub fn round_whole(self, name: &str, x: &str) -> String {
        match self {
            Dialect::Spark => spark::round_whole(name, x),
            _ => format!("{}({x})", name.to_uppercase()),
        }
    }

    /// `x` (never NULL) clipped to `[lo, hi]`, `x` written once.
    pub fn clip(self, x: &str, lo: &str, hi: &str) -> String {
        match self {
            Dialect::Postgres | Dialect::Spark => format!("LEAST(GREATEST({x}, {lo}), {hi})"),
            Dialect::Sqlite => format!("MIN(MAX({x}, {lo}), {hi})"),
        }
    }

    /// LEAST or GREATEST over `args` with PostgreSQL's meaning: NULLs are
    /// skipped, and the result is NULL only when every argument is.
    pub fn least_greatest(self, greatest: bool, args: &[String]) -> String {
        match self {
            // Spark's LEAST and GREATEST skip NULLs too.
            Dialect::Postgres | Dialect::Spark => {
                let f = if greatest { "GREATEST" } else { "LEAST" };
                format!("{f}({})", args.join(", "))
            }
            Dialect::Sqlite if args.len() == 1 => args[0].clone(),
            Dialect::Sqlite => {
                // Scalar MIN/MAX return NULL if any argument is NULL, so
                // each argument falls back on the others.
                let f = if greatest { "MAX" } else { "MIN" };
                let rotated: Vec<String> = (0..args.len())
                    .map(|i| {
                        let order: Vec<&str> = args[i..]
                            .iter()
                            .chain(&args[..i])
                            .map(String::as_str)
                            .collect();
                        format!("COALESCE({})", order.join(", "))
                    })
                    .collect();
                format!("{f}({})", rotated.join(", "))
            }
        }
    }

    /// `subject [NOT] LIKE pattern` (or ILIKE), with PostgreSQL's meaning:
    /// LIKE is case-sensitive and backslash escapes.
    pub fn like(self, subject: &str, pattern: &str, negated: bool, ilike: bool) -> String {
        let not = if negated { "NOT " } else { "" };
        match (self, ilike) {
            // Spark's LIKE is case-sensitive and escapes with backslash,
            // but only before %, _ and itself: PostgreSQL's `\b` means b.
            (Dialect::Spark, _) => {
                let op = if ilike { "ILIKE" } else { "LIKE" };
                format!(
                    "{subject} {not}{op} {}",
                    quote_literal(&spark::like_pattern(pattern))
                )
            }
            (Dialect::Postgres, false) => {
                format!("{subject} {not}LIKE {}", quote_literal(pattern))
            }
            (Dialect::Postgres, true) => {
                format!("{subject} {not}ILIKE {}", quote_literal(pattern))
            }
            // SQLite's LIKE ignores ASCII case; GLOB is the case-sensitive one.
            (Dialect::Sqlite, false) => {
                format!(
                    "{subject} {not}GLOB {}",
                    quote_literal(&like_to_glob(pattern))
                )
            }
            (Dialect::Sqlite, true) => {
                format!("{subject} {not}LIKE {} ESCAPE '\\'", quote_literal(pattern))
            }
        }
    }

    /// A measurement (an aggregate, possibly NULL) as text, 0 for NULL.
    pub fn measurement_text(self, sql: &str) -> String {
        self.to_text(&format!("COALESCE({sql}, 0)"), SqlType::Int)
    }
}

/// A LIKE pattern (backslash escapes) as an equivalent GLOB pattern.
fn like_to_glob(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        let literal = match c {
            '%' => {
                out.push('*');
                continue;
            }
            '_' => {
                out.push('?');
                continue;
            }
            '\\' => chars.next().unwrap_or('\\'),
            c => c,
        };
        match literal {
            '*' | '?' | '[' => {
                out.push('[');
                out.push(literal);
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_become_globs() {
        assert_eq!(like_to_glob("A%"), "A*");
        assert_eq!(like_to_glob("_b\\%c"), "?b%c");
        assert_eq!(like_to_glob("x*y?[z]"), "x[*]y[?][[]z]");
        assert_eq!(like_to_glob("a\\\\b"), "a\\b");
    }

    #[test]
    fn sqlite_least_skips_nulls_as_postgres_does() {
        let sql = Dialect::Sqlite.least_greatest(false, &["a".into(), "b".into(), "c".into()]);
        assert_eq!(
            sql,
            "MIN(COALESCE(a, b, c), COALESCE(b, c, a), COALESCE(c, a, b))"
        );
    }
}
