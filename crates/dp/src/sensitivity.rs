//! Sensitivities from contribution bounds, never from data.
//!
//! A privacy unit (person) touches at most `max_partitions` groups (L0) and
//! at most `max_rows` rows in each (L∞ in rows). A measurement's per-group
//! change is then bounded by the rows times the largest |value|; its L1
//! norm across groups by L0 times that, and its L2 norm by √L0 times that
//! (kept squared, so it stays an integer).

/// How much one privacy unit can contribute, as enforced by the backend query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contribution {
    /// Groups one unit may appear in (1 for ungrouped queries).
    pub max_partitions: u64,
    /// Rows one unit may contribute to each group.
    pub max_rows: u64,
}

/// The sensitivity of an integer-valued (vector) measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sensitivity {
    /// Largest change in one group.
    pub l_inf: u64,
    /// Largest L1 change across all groups.
    pub l1: u64,
    /// Largest squared L2 change across all groups.
    pub l2_squared: u64,
}

impl Contribution {
    /// An ungrouped query keeping `max_rows` rows per unit.
    pub fn ungrouped(max_rows: u64) -> Contribution {
        Contribution {
            max_partitions: 1,
            max_rows,
        }
    }

    /// A per-group quantity where each row changes the value by at most
    /// `per_row` (1 for counts, the grid magnitude for sums).
    pub fn per_row(&self, per_row: u64) -> Sensitivity {
        let l_inf = self.max_rows.saturating_mul(per_row);
        Sensitivity {
            l_inf,
            l1: l_inf.saturating_mul(self.max_partitions),
            l2_squared: l_inf
                .saturating_mul(l_inf)
                .saturating_mul(self.max_partitions),
        }
    }

    /// Row counts (`COUNT(*)`, `COUNT(col)`).
    pub fn count(&self) -> Sensitivity {
        self.per_row(1)
    }

    /// Sums of values bounded by `max_abs_units` in grid units.
    pub fn sum(&self, max_abs_units: u64) -> Sensitivity {
        self.per_row(max_abs_units)
    }

    /// `COUNT(DISTINCT col)`: one unit adds at most its rows' values, or
    /// exactly one when the column is the privacy unit itself.
    pub fn count_distinct(&self, column_is_unit: bool) -> Sensitivity {
        if column_is_unit {
            Contribution {
                max_rows: 1,
                ..*self
            }
            .count()
        } else {
            self.count()
        }
    }

    /// A histogram over disjoint bins within one group: a unit's rows fall
    /// into at most `max_rows` bins, one row each, so the L1 change of the
    /// whole vector is the rows (times the groups), not rows × bins.
    pub fn histogram(&self) -> Sensitivity {
        let l1 = self.max_rows.saturating_mul(self.max_partitions);
        Sensitivity {
            l_inf: self.max_rows,
            l1,
            // Worst case: all rows in one bin of each group.
            l2_squared: self
                .max_rows
                .saturating_mul(self.max_rows)
                .saturating_mul(self.max_partitions),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norms_follow_from_l0_and_linf() {
        let c = Contribution {
            max_partitions: 4,
            max_rows: 3,
        };
        assert_eq!(
            c.count(),
            Sensitivity {
                l_inf: 3,
                l1: 12,
                l2_squared: 36
            }
        );
        assert_eq!(c.sum(10).l1, 120);
        assert_eq!(c.count_distinct(true).l1, 4);
        assert_eq!(c.histogram().l1, 12);
        assert_eq!(Contribution::ungrouped(5).count().l1, 5);
    }
}
