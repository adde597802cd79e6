//! What an MST fit of a table reads (`dpgate_dp::mst`): its attributes —
//! each declared column as finitely many values, bins of its declared
//! bounds or its declared domain, never values found in the data — and
//! one ordinary private query per marginal, `SELECT k1[, k2], COUNT(*)
//! FROM t GROUP BY …`, which the planner bounds per unit like any other:
//! one unit adds at most `max_rows_per_unit` rows to a marginal, the `k`
//! the fit's sensitivities use. The raw counts of these plans feed the
//! fit; only its noisy release leaves dpgate.

use dpgate_config::{ColumnType, Table, TablePrivacy};

use crate::error::{sqlstate, Refusal};
use crate::types::{canonical_key, Cell, OutputType};

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
}

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
        }
    }

    /// The group key the marginal queries use for it.
    fn key_sql(&self) -> String {
        let column = quote_ident(&self.column);
        match &self.values {
            Values::Bins {
                lower, upper, bins, ..
            } => format!("width_bucket({column}, {lower:?}, {upper:?}, {bins})"),
            Values::Domain(_) | Values::Bool => column,
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
                    Cell::Float(x.min(*upper))
                }
            }
            Values::Domain(values) => Cell::Text(values[index].clone()),
            Values::Bool => Cell::Bool(index == 1),
        }
    }
}

/// The attributes of `table`, `bins` bins per numeric column. Every
/// declared column takes part; one that has neither bounds nor a domain
/// cannot, and is refused with what to declare.
pub fn attributes(table: &Table, bins: usize) -> Result<Vec<Attribute>, Refusal> {
    if !(1..=1000).contains(&bins) {
        return Err(Refusal::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("{bins} bins per column is outside 1 to 1000"),
            "use e.g. 16 bins",
        ));
    }
    if matches!(table.privacy, TablePrivacy::Public) {
        return Err(Refusal::unsupported(
            format!(
                "{} is public: its rows need no synthetic stand-ins",
                table.name
            ),
            "query it directly",
        ));
    }
    let mut out = Vec::new();
    for c in &table.columns {
        let values = match (c.ty, c.bounds, &c.values) {
            (ColumnType::Bool, _, _) => Values::Bool,
            (_, _, Some(values)) if !values.is_empty() => Values::Domain(values.clone()),
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
                return Err(Refusal::new(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    format!(
                        "column {}.{} has neither bounds nor a domain, so synthetic rows cannot model it",
                        table.name, c.name
                    ),
                    format!(
                        "declare lower and upper (numbers) or values = [...] (text) for columns.{}",
                        c.name
                    ),
                ))
            }
        };
        out.push(Attribute {
            column: c.name.clone(),
            values,
        });
    }
    if out.is_empty() {
        return Err(Refusal::unsupported(
            format!("{} declares no columns to model", table.name),
            "declare the columns analysts may see under columns.NAME",
        ));
    }
    Ok(out)
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
mod tests {
    use super::*;
    use crate::tests::config;
    use crate::{classify, plan, Command, Grouping};

    fn visits() -> Table {
        config().table(None, "visits").unwrap().clone()
    }

    #[test]
    fn every_declared_column_is_an_attribute() {
        let attrs = attributes(&visits(), 16).unwrap();
        let names: Vec<&str> = attrs.iter().map(|a| a.column.as_str()).collect();
        assert_eq!(names, ["age", "cost", "ward", "stay"]);
        assert_eq!(attrs[0].size(), 16);
        assert_eq!(attrs[2].size(), 2);
        // stay: integers 0..30, 16 bins.
        assert_eq!(attrs[3].size(), 16);
        assert!(attributes(&visits(), 0).is_err());
    }

    #[test]
    fn bins_map_keys_and_values_both_ways() {
        let age = &attributes(&visits(), 10).unwrap()[0];
        assert_eq!(age.index_of(Some("1")), Some(0));
        assert_eq!(age.index_of(Some("10")), Some(9));
        // The upper bound itself falls in bucket bins + 1: the last bin.
        assert_eq!(age.index_of(Some("11")), Some(9));
        assert_eq!(age.index_of(Some("0")), None);
        assert_eq!(age.index_of(None), None);
        for i in 0..10 {
            for u in [0.0, 0.5, 0.999] {
                let Cell::Int(v) = age.cell(i, u) else {
                    panic!()
                };
                assert!((0..=110).contains(&v));
                // The value falls back into its own bin.
                let bucket = ((v as f64 - 0.0) / 11.0).floor() as usize + 1;
                assert_eq!(
                    age.index_of(Some(&bucket.to_string())),
                    Some(i),
                    "{i} {u} {v}"
                );
            }
        }
        let ward = &attributes(&visits(), 10).unwrap()[2];
        assert_eq!(ward.index_of(Some("B")), Some(1));
        assert_eq!(ward.cell(0, 0.3), Cell::Text("A".into()));
    }

    /// The marginal queries are ordinary private plans over declared
    /// domains: every cell released (none selected from the data), and
    /// the COUNT's sensitivity is max_rows_per_unit = 5, the k of the fit.
    #[test]
    fn marginal_queries_plan_with_the_units_bound() {
        let table = visits();
        let attrs = attributes(&table, 8).unwrap();
        let pairs = [
            vec![&attrs[0]],
            vec![&attrs[2]],
            vec![&attrs[0], &attrs[2]],
            vec![&attrs[1], &attrs[3]],
        ];
        for attrs in pairs {
            let sql = marginal_sql(&table, &attrs);
            let Command::Private(q) = classify(&sql).unwrap().remove(0) else {
                panic!("{sql} is not a private query")
            };
            let p = plan(&q, &config(), 1.0).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
            let Grouping::Domain { groups, .. } = &p.grouping else {
                panic!("{sql}: {:?}", p.grouping)
            };
            // width_bucket's domain is 0..=bins+1: two more than the bins.
            let expected: usize = attrs
                .iter()
                .map(|a| match a.values {
                    Values::Bins { bins, .. } => bins + 2,
                    _ => a.size(),
                })
                .product();
            assert_eq!(groups.len(), expected, "{sql}");
            assert_eq!(p.release.measurements.len(), 1, "{sql}");
            assert_eq!(p.release.measurements[0].noise.sensitivity(), 5, "{sql}");
            assert!(p.release.selection.is_none(), "{sql}");
        }
    }
}
