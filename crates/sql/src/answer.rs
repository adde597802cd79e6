//! From the backend's raw groups to the analyst's rows: arrange groups
//! (declared domains in full), add the noise drawn beforehand, drop keys
//! that fail partition selection, derive aggregates, then post-process
//! (select-list arithmetic, HAVING, DISTINCT, ORDER BY, OFFSET, LIMIT).
//! Pure: the server does the I/O and draws the noise.

use std::cmp::Ordering;
use std::collections::HashMap;

use dpgate_dp::release::{NoiseDraw, ReleasedColumn};

use crate::plan::{Grouping, Plan};
use crate::post::{compare, PostExpr};
use crate::types::{canonical_keys, key_value, Cell};

/// One row of the backend query: key texts and raw measured values.
#[derive(Clone, Debug, PartialEq)]
pub struct RawGroup {
    /// Group keys as text (`None` is NULL).
    pub keys: Vec<Option<String>>,
    /// Raw values of every measurement, concatenated.
    pub values: Vec<i64>,
}

/// Released rows, each value with the half-width of its interval where
/// one is known (aggregates selected directly).
#[derive(Clone, Debug, Default)]
pub struct Answer {
    /// Rows in release order.
    pub rows: Vec<Vec<Cell>>,
    /// Per row, per column: the half-width at the configured confidence.
    pub half_widths: Vec<Vec<Option<f64>>>,
}

/// One group's row before the clauses that choose and order rows.
#[derive(Clone, Debug)]
pub struct GroupRow {
    /// The derived aggregates.
    pub aggs: Vec<Cell>,
    /// The group keys, typed.
    pub keys: Vec<Cell>,
    /// The output columns.
    pub values: Vec<Cell>,
    /// Per output column, the half-width of a column that is one aggregate.
    pub widths: Vec<Option<f64>>,
}

/// A released row: values, half-widths, and its ORDER BY values.
type Row = (Vec<Cell>, Vec<Option<f64>>, Vec<Cell>);

impl Plan {
    /// Groups whose noise can be drawn before any data is read: 1 without
    /// GROUP BY, the domain size for declared domains, `None` when keys
    /// come from partition selection.
    pub fn groups_before_data(&self) -> Option<usize> {
        match &self.grouping {
            Grouping::None => Some(1),
            Grouping::Domain { groups, .. } => Some(groups.len()),
            Grouping::Selection { .. } => None,
        }
    }

    /// Puts raw groups in release order. Declared domains yield every key,
    /// with zeros where the backend returned no row, and drop keys outside
    /// the domain; without GROUP BY there is exactly one group.
    pub fn arrange(&self, raw: Vec<RawGroup>) -> Vec<RawGroup> {
        let zeros = vec![0; self.release.raw_len()];
        match &self.grouping {
            Grouping::None => vec![raw.into_iter().next().unwrap_or(RawGroup {
                keys: vec![],
                values: zeros,
            })],
            Grouping::Domain { keys, groups } => {
                // One pass over the backend's rows, then one lookup per
                // domain key: domains reach 10 000 groups.
                let canonical = |g: &[Option<String>]| canonical_keys(g, keys);
                // Backend rows whose keys read as one value are one group:
                // their measurements add up (each person's rows are bounded
                // in total, so the sum keeps the sensitivity), and no row is
                // silently preferred over another.
                let mut found: HashMap<Vec<Option<String>>, Vec<i64>> = HashMap::new();
                for r in &raw {
                    let values = found
                        .entry(canonical(&r.keys))
                        .or_insert_with(|| zeros.clone());
                    for (v, x) in values.iter_mut().zip(&r.values) {
                        *v = v.saturating_add(*x);
                    }
                }
                groups
                    .iter()
                    .map(|g| RawGroup {
                        keys: g.clone(),
                        values: found
                            .get(&canonical(g))
                            .cloned()
                            .unwrap_or_else(|| zeros.clone()),
                    })
                    .collect()
            }
            Grouping::Selection { .. } => raw,
        }
    }

    /// For each output column, the noisy aggregate it shows directly
    /// (such columns carry an interval); `None` for keys and expressions.
    pub fn column_sources(&self) -> Vec<Option<usize>> {
        self.post
            .items
            .iter()
            .map(|p| match p {
                PostExpr::Agg(i) => Some(*i),
                _ => None,
            })
            .collect()
    }

    /// One group's row from its derived outputs, before HAVING, DISTINCT,
    /// ORDER BY and LIMIT.
    pub fn group_row(&self, keys: &[Option<String>], derived: &[ReleasedColumn]) -> GroupRow {
        let aggs: Vec<Cell> = derived.iter().map(|d| Cell::from(d.value)).collect();
        let keys: Vec<Cell> = keys
            .iter()
            .zip(self.grouping.key_types())
            .map(|(k, ty)| key_value(k.as_deref(), *ty))
            .collect();
        let values = self
            .post
            .items
            .iter()
            .map(|p| p.eval(&aggs, &keys))
            .collect();
        let widths = self
            .post
            .items
            .iter()
            .map(|p| match p {
                PostExpr::Agg(i) => Some(derived[*i].half_width),
                _ => None,
            })
            .collect();
        GroupRow {
            aggs,
            keys,
            values,
            widths,
        }
    }

    /// Noises arranged groups with one draw each, selects, derives and
    /// post-processes.
    pub fn finish(&self, groups: &[RawGroup], draws: &[NoiseDraw], confidence: f64) -> Answer {
        let mut rows: Vec<Row> = Vec::new();
        for (g, draw) in groups.iter().zip(draws) {
            let Some(derived) = self.release.apply(&g.values, draw, confidence) else {
                continue;
            };
            let GroupRow {
                aggs,
                keys,
                values,
                widths,
            } = self.group_row(&g.keys, &derived);
            if let Some(h) = &self.post.having {
                if h.eval(&aggs, &keys) != Cell::Bool(true) {
                    continue;
                }
            }
            let sort_keys = self
                .post
                .order
                .iter()
                .map(|(p, _, _)| p.eval(&aggs, &keys))
                .collect();
            rows.push((values, widths, sort_keys));
        }
        if self.post.distinct {
            let mut seen: Vec<Vec<Cell>> = Vec::new();
            rows.retain(|(v, _, _)| {
                let new = !seen.contains(v);
                if new {
                    seen.push(v.clone());
                }
                new
            });
        }
        if !self.post.order.is_empty() {
            rows.sort_by(|a, b| {
                for (i, (_, desc, nulls_first)) in self.post.order.iter().enumerate() {
                    let o = order_values(&a.2[i], &b.2[i], *desc, *nulls_first);
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                Ordering::Equal
            });
        }
        let limit = self.post.limit.map_or(usize::MAX, |l| l as usize);
        let (rows, half_widths) = rows
            .into_iter()
            .skip(self.post.offset as usize)
            .take(limit)
            .map(|(v, w, _)| (v, w))
            .unzip();
        Answer { rows, half_widths }
    }
}

fn order_values(a: &Cell, b: &Cell, desc: bool, nulls_first: bool) -> Ordering {
    match (a, b) {
        (Cell::Null, Cell::Null) => Ordering::Equal,
        (Cell::Null, _) => {
            if nulls_first {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (_, Cell::Null) => {
            if nulls_first {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        _ => {
            let o = compare(a, b).unwrap_or(Ordering::Equal);
            if desc {
                o.reverse()
            } else {
                o
            }
        }
    }
}
