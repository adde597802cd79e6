//! Keeping what the backend returns bounded while it streams in, so that
//! no query's answer, however many groups the data holds, can exhaust
//! memory (invariant 9), and without changing what is released.
//!
//! - Without GROUP BY there is one row.
//! - With declared domains only rows whose key is in the domain are kept
//!   (the others are never released anyway): at most the domain's size.
//! - With partition selection each group's noise is drawn and the audited
//!   decision (`PartitionSelection::passes`) made as the group arrives;
//!   failing groups are dropped at once, and once `max_groups` groups have
//!   passed the rest are not kept. The backend returns groups in key order
//!   (`ORDER BY` in the plan), so the answer is "the first `max_groups`
//!   selected keys in key order": a function of the selected set alone,
//!   hence post-processing of the (ε, δ)-DP selection. (Cutting the
//!   candidate set *before* selection would not be: one person's new keys
//!   could push another group out.)

use std::collections::HashSet;
use std::ops::ControlFlow;

use dpgate_dp::release::NoiseDraw;

use crate::answer::RawGroup;
use crate::plan::{Grouping, Plan};
use crate::types::canonical_keys;

/// Where the backend puts each row it reads; `Break` means nothing more
/// will be kept (the backend may stop reading).
pub trait GroupSink {
    /// Takes one backend row.
    fn push(&mut self, group: RawGroup) -> ControlFlow<()>;
}

impl GroupSink for Vec<RawGroup> {
    fn push(&mut self, group: RawGroup) -> ControlFlow<()> {
        Vec::push(self, group);
        ControlFlow::Continue(())
    }
}

/// The bounded sink of one plan.
pub struct Collector {
    plan: Plan,
    max_groups: usize,
    domain: HashSet<Vec<Option<String>>>,
    groups: Vec<RawGroup>,
    draws: Vec<NoiseDraw>,
    truncated: bool,
}

/// What a collector kept: the groups in release order, and for partition
/// selection the noise already drawn for each (the same noise that
/// decided it passed).
pub struct Collected {
    /// Arranged groups (declared domains in full, zeros included).
    pub groups: Vec<RawGroup>,
    /// Noise of the selected groups (empty for other groupings).
    pub draws: Vec<NoiseDraw>,
    /// Whether more groups passed selection than `max_groups`.
    pub truncated: bool,
}

impl Plan {
    /// A sink that keeps at most what this plan can release, and at most
    /// `max_groups` groups found by partition selection.
    pub fn collector(&self, max_groups: usize) -> Collector {
        let domain = match &self.grouping {
            Grouping::Domain { keys, groups } => {
                groups.iter().map(|g| canonical_keys(g, keys)).collect()
            }
            _ => HashSet::new(),
        };
        Collector {
            plan: self.clone(),
            max_groups: max_groups.max(1),
            domain,
            groups: Vec::new(),
            draws: Vec::new(),
            truncated: false,
        }
    }
}

impl GroupSink for Collector {
    fn push(&mut self, group: RawGroup) -> ControlFlow<()> {
        match &self.plan.grouping {
            Grouping::None => {
                self.groups.push(group);
                ControlFlow::Break(())
            }
            Grouping::Domain { keys, .. } => {
                if self.domain.contains(&canonical_keys(&group.keys, keys)) {
                    self.groups.push(group);
                }
                ControlFlow::Continue(())
            }
            Grouping::Selection { .. } => {
                // The audited step: the deciding count's noise first, the
                // rest of the group's noise only if it passes.
                let rng = &mut dpgate_dp::secure_rng();
                let Some(draw) = self.plan.release.select_group(&group.values, rng) else {
                    return ControlFlow::Continue(());
                };
                if self.groups.len() == self.max_groups {
                    // One more group passed: the answer is the first
                    // `max_groups`, and nothing after can change it.
                    self.truncated = true;
                    return ControlFlow::Break(());
                }
                self.draws.push(draw);
                self.groups.push(group);
                ControlFlow::Continue(())
            }
        }
    }
}

impl Collector {
    /// The kept groups, arranged for release.
    pub fn finish(self) -> Collected {
        let Collector {
            plan,
            groups,
            draws,
            truncated,
            ..
        } = self;
        Collected {
            groups: plan.arrange(groups),
            draws,
            truncated,
        }
    }
}
