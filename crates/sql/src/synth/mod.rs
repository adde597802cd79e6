//! What an MST fit of a table reads (`dpgate_dp::mst`): its attributes —
//! each declared column as finitely many values, bins of its declared
//! bounds or its declared domain, never values found in the data — and
//! one ordinary private query per marginal, `SELECT k1[, k2], COUNT(*)
//! FROM t GROUP BY …`, which the planner bounds per unit like any other:
//! one unit adds at most `max_rows_per_unit` rows to a marginal, the `k`
//! the fit's sensitivities use. The raw counts of these plans feed the
//! fit; only its noisy release leaves dpgate.

mod route;

use dpgate_config::{ColumnType, Table, TablePrivacy};

use crate::error::{sqlstate, Refusal};
use crate::types::{canonical_key, Cell, OutputType};

pub use route::{synthetic_read, SyntheticRead};

/// How an attribute's values map to a column's.
#[derive(Clone, Debug, PartialEq)]
pub enum Values {
    /// `bins` equal bins of `[lower, upper]` (`width_bucket`); a sampled
    /// value is drawn uniformly in its bin.
    Bins {
        /// Declared lower bound.
        lower: f64,
        /// Declared upper bound.
        upper: f64,
        /// Number of bins.
        bins: usize,
        /// Whether the column holds integers.
        integer: bool,
    },
    /// The declared domain, in order.
    Domain(Vec<String>),
    /// `false` and `true`.
    Bool,
    /// A text column without a declared domain: the values partition
    /// selection released (filled in by the fit, in order), then one
    /// `other` value that every other non-NULL value falls into.
    Selected(Vec<String>),
    /// A date (or, `true`, timestamp) column by calendar quarter: the
    /// quarters (`YYYY-MM` of their first month) partition selection
    /// released, then one value for every other quarter, sampled as NULL.
    /// A sampled value is drawn uniformly inside its quarter. (Quarters,
    /// not months: a year of months makes 2-way marginals of 12 × 16 cells
    /// whose noise swamps them at the ε a fit has.)
    Quarters(Vec<String>, bool),
}

/// The value rare (unselected) text values are shown as.
pub const OTHER: &str = "other";

/// One column as a finite attribute.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    /// The column.
    pub column: String,
    /// Its values.
    pub values: Values,
}

impl Attribute {
    /// Number of values.
    pub fn size(&self) -> usize {
        match &self.values {
            Values::Bins { bins, .. } => *bins,
            Values::Domain(v) => v.len(),
            Values::Bool => 2,
            Values::Selected(v) | Values::Quarters(v, _) => v.len() + 1,
        }
    }

    /// Whether the fit selects this attribute's values from the data.
    pub fn is_selected(&self) -> bool {
        matches!(self.values, Values::Selected(_) | Values::Quarters(..))
    }

    /// This attribute with `values` selected (keys as released).
    pub fn with_selected(&self, values: Vec<String>) -> Attribute {
        let values = match &self.values {
            Values::Quarters(_, timestamp) => {
                let mut months: Vec<String> = values.iter().filter_map(|k| month_of(k)).collect();
                months.sort();
                months.dedup();
                Values::Quarters(months, *timestamp)
            }
            _ => Values::Selected(values),
        };
        Attribute {
            column: self.column.clone(),
            values,
        }
    }

    /// The group key the marginal queries use for it.
    fn key_sql(&self) -> String {
        let column = quote_ident(&self.column);
        match &self.values {
            Values::Bins {
                lower, upper, bins, ..
            } => format!("width_bucket({column}, {lower:?}, {upper:?}, {bins})"),
            Values::Domain(_) | Values::Bool | Values::Selected(_) => column,
            Values::Quarters(..) => format!("date_trunc('quarter', {column})"),
        }
    }

    /// The attribute value a released group key stands for (`None` for
    /// keys outside the attribute: NULL).
    pub fn index_of(&self, key: Option<&str>) -> Option<usize> {
        let key = key?;
        match &self.values {
            Values::Bins { bins, .. } => {
                // Values are clamped to the bounds, so buckets run 1..=bins,
                // and bins + 1 holds the upper bound itself.
                let b: usize = key.trim().parse().ok()?;
                (1..=bins + 1).contains(&b).then(|| (b - 1).min(bins - 1))
            }
            Values::Domain(values) => {
                let k = canonical_key(Some(key), OutputType::Text);
                values
                    .iter()
                    .position(|v| canonical_key(Some(v), OutputType::Text) == k)
            }
            Values::Selected(values) => Some(
                values
                    .iter()
                    .position(|v| v.as_str() == key)
                    .unwrap_or(values.len()),
            ),
            Values::Quarters(months, _) => {
                let month = month_of(key)?;
                Some(
                    months
                        .iter()
                        .position(|m| *m == month)
                        .unwrap_or(months.len()),
                )
            }
            Values::Bool => match key.trim() {
                "f" | "false" | "0" => Some(0),
                "t" | "true" | "1" => Some(1),
                _ => None,
            },
        }
    }

    /// A column value for attribute value `index`: uniform in its bin for
    /// numbers (`u` uniform in [0, 1)), the domain entry otherwise.
    pub fn cell(&self, index: usize, u: f64) -> Cell {
        match &self.values {
            Values::Bins {
                lower,
                upper,
                bins,
                integer,
            } => {
                let width = (upper - lower) / *bins as f64;
                let x = lower + width * (index as f64 + u);
                if *integer {
                    // Integers whose bin this is: [ceil(start), end).
                    let start = (lower + width * index as f64).ceil();
                    let end = (lower + width * (index + 1) as f64).ceil().max(start + 1.0);
                    let end = if index + 1 == *bins {
                        upper.floor() + 1.0
                    } else {
                        end
                    };
                    Cell::Int((start + ((end - start) * u).floor()).min(*upper) as i64)
                } else {
                    // Three significant digits of the bin width (at least
                    // two decimals) read better than a double's seventeen.
                    let digits = (3 - width.log10().floor() as i32).clamp(2, 9);
                    let scale = 10f64.powi(digits);
                    Cell::Float(((x * scale).round() / scale).clamp(*lower, *upper))
                }
            }
            Values::Domain(values) => Cell::Text(values[index].clone()),
            Values::Selected(values) => {
                Cell::Text(values.get(index).map_or(OTHER, String::as_str).to_string())
            }
            Values::Quarters(months, timestamp) => match months.get(index) {
                Some(m) => in_month(m, u, *timestamp),
                None => Cell::Null,
            },
            Values::Bool => Cell::Bool(index == 1),
        }
    }
}

/// `YYYY-MM` of the first month of the quarter of a date or timestamp
/// key (`YYYY-MM-DD…`).
fn month_of(key: &str) -> Option<String> {
    let k = key.trim();
    let (y, m) = (k.get(0..4)?, k.get(5..7)?);
    let ok = y.bytes().all(|b| b.is_ascii_digit())
        && m.bytes().all(|b| b.is_ascii_digit())
        && k.as_bytes().get(4) == Some(&b'-');
    let month: u32 = m.parse().ok()?;
    (ok && (1..=12).contains(&month)).then(|| format!("{y}-{:02}", (month - 1) / 3 * 3 + 1))
}

/// Days in `month` of `year`.
fn days_in(year: i64, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A date (or timestamp) drawn uniformly inside the quarter starting in
/// month `m` (`YYYY-MM`), `u` uniform in [0, 1).
fn in_month(m: &str, u: f64, timestamp: bool) -> Cell {
    let (year, first): (i64, u32) = (
        m[0..4].parse().unwrap_or(1970),
        m[5..7].parse().unwrap_or(1),
    );
    let months: Vec<u32> = (first..first + 3).filter(|&x| x <= 12).collect();
    let days: u32 = months.iter().map(|&x| days_in(year, x)).sum();
    let mut seconds =
        ((u.clamp(0.0, 1.0) * f64::from(days) * 86_400.0) as u32).min(days * 86_400 - 1);
    let mut month = first;
    for &x in &months {
        let span = days_in(year, x) * 86_400;
        month = x;
        if seconds < span {
            break;
        }
        seconds -= span;
    }
    let day = 1 + seconds / 86_400;
    let rest = seconds % 86_400;
    let date = format!("{year:04}-{month:02}-{day:02}");
    Cell::Text(if timestamp {
        format!(
            "{date} {:02}:{:02}:{:02}",
            rest / 3600,
            rest / 60 % 60,
            rest % 60
        )
    } else {
        date
    })
}

/// The columns of a table a fit models, and those it cannot.
#[derive(Clone, Debug, PartialEq)]
pub struct Attributes {
    /// Modelled columns, in declaration order.
    pub modelled: Vec<Attribute>,
    /// Columns with neither bounds nor a domain (and the privacy unit):
    /// NULL in synthetic rows, named in every answer's notice.
    pub unmodelled: Vec<String>,
}

/// The attributes of `table`, `bins` bins per numeric column: every
/// declared column with bounds, a domain or boolean values, text columns
/// without a domain and dates and timestamps by quarter (their values
/// chosen by partition selection when the fit runs). Others — numbers
/// without bounds, and the privacy unit, which names people — are left
/// NULL; a table with no modelled column at all is refused with what to
/// declare.
pub fn attributes(table: &Table, bins: usize) -> Result<Attributes, Refusal> {
    if !(1..=1000).contains(&bins) {
        return Err(Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("{bins} bins per column is outside 1 to 1000"),
            "use e.g. 16 bins",
        ));
    }
    let unit = match &table.privacy {
        TablePrivacy::Public => {
            return Err(Refusal::unsupported(
                format!(
                    "{} is public: its rows need no synthetic stand-ins",
                    table.name
                ),
                "query it directly",
            ))
        }
        TablePrivacy::Private { privacy_unit, .. } => privacy_unit.as_deref(),
    };
    let mut modelled = Vec::new();
    let mut unmodelled = Vec::new();
    for c in &table.columns {
        if unit.is_some_and(|u| u.eq_ignore_ascii_case(&c.name)) {
            unmodelled.push(c.name.clone());
            continue;
        }
        let values = match (c.ty, c.bounds, &c.values) {
            (ColumnType::Bool, _, _) => Values::Bool,
            (_, _, Some(values)) if !values.is_empty() => Values::Domain(values.clone()),
            // Its values come from partition selection when the fit runs.
            (ColumnType::Text, _, None) => Values::Selected(Vec::new()),
            (ColumnType::Date, _, None) => Values::Quarters(Vec::new(), false),
            (ColumnType::Timestamp, _, None) => Values::Quarters(Vec::new(), true),
            (ColumnType::Int | ColumnType::Float, Some((lower, upper)), _) if lower < upper => {
                let integer = c.ty == ColumnType::Int;
                // Never more bins than integers in the range.
                let bins = if integer {
                    bins.min((upper - lower + 1.0).max(1.0) as usize)
                } else {
                    bins
                };
                Values::Bins {
                    lower,
                    upper,
                    bins,
                    integer,
                }
            }
            _ => {
                unmodelled.push(c.name.clone());
                continue;
            }
        };
        modelled.push(Attribute {
            column: c.name.clone(),
            values,
        });
    }
    if modelled.is_empty() {
        return Err(Refusal::unsupported(
            format!(
                "no column of {} has bounds or a domain, so synthetic rows cannot model it",
                table.name
            ),
            "declare lower and upper (numbers) or values = [...] (text) for the columns analysts should see",
        ));
    }
    Ok(Attributes {
        modelled,
        unmodelled,
    })
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The private query of the marginal over `attrs` (one or two).
pub fn marginal_sql(table: &Table, attrs: &[&Attribute]) -> String {
    let keys: Vec<String> = attrs.iter().map(|a| a.key_sql()).collect();
    let positions: Vec<String> = (1..=keys.len()).map(|i| i.to_string()).collect();
    format!(
        "SELECT {}, COUNT(*) FROM {}.{} GROUP BY {}",
        keys.join(", "),
        quote_ident(&table.schema),
        quote_ident(&table.name),
        positions.join(", ")
    )
}

#[cfg(test)]
mod tests;
