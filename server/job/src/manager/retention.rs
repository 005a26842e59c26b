//! Which ended jobs to forget (spec: QX-DUR-3, QX-DUR-4).
//!
//! Three rules, applied in this order whenever a job ends and once at start-up:
//! 1. **count per owner**: an owner keeps at most
//!    [`ManagerConfig::retain_finished`](crate::ManagerConfig::retain_finished) ended
//!    jobs; past it, that owner's oldest (lowest `seq`) goes;
//! 2. **age**: an ended job whose end is older than
//!    [`ManagerConfig::retain_age`](crate::ManagerConfig::retain_age) goes;
//! 3. **disk budget**: while the output logs of all ended jobs together exceed
//!    [`ManagerConfig::log_budget`](crate::ManagerConfig::log_budget), the oldest ended
//!    job of any owner goes (logged as a warning: the only rule by which one owner's
//!    activity removes another's records).
//!
//! Running jobs are never evicted and their logs do not count toward the budget
//! (each is bounded by the per-job output cap).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use qexec_protocol::JobId;

/// Why a job was evicted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    /// Its owner has more ended jobs than the count allows.
    Count,
    /// It ended longer ago than the age allows.
    Age,
    /// The logs of all ended jobs exceed the disk budget.
    DiskBudget,
}

impl Rule {
    /// Lowercase name for logs.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Rule::Count => "count per owner",
            Rule::Age => "age",
            Rule::DiskBudget => "disk budget",
        }
    }
}

/// What retention needs to know about one ended job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    pub(crate) id: JobId,
    pub(crate) owner: String,
    pub(crate) ended_at_ms: u64,
    pub(crate) log_len: u64,
}

/// The limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) per_owner: usize,
    pub(crate) max_age: Option<Duration>,
    pub(crate) log_budget: u64,
}

/// Every ended job, by owner and by `seq`.
#[derive(Debug, Default)]
pub(crate) struct EndedIndex {
    by_seq: BTreeMap<u64, Ended>,
    by_owner: HashMap<String, BTreeMap<u64, ()>>,
    /// `(ended_at_ms, seq)`, for the age rule.
    by_end: BTreeSet<(u64, u64)>,
    log_bytes: u64,
}

impl EndedIndex {
    /// Notes an ended job.
    pub(crate) fn insert(&mut self, seq: u64, e: Ended) {
        self.remove(seq);
        self.by_owner
            .entry(e.owner.clone())
            .or_default()
            .insert(seq, ());
        self.by_end.insert((e.ended_at_ms, seq));
        self.log_bytes += e.log_len;
        self.by_seq.insert(seq, e);
    }

    /// Forgets an ended job.
    fn remove(&mut self, seq: u64) -> Option<Ended> {
        let e = self.by_seq.remove(&seq)?;
        self.log_bytes -= e.log_len;
        self.by_end.remove(&(e.ended_at_ms, seq));
        if let Some(m) = self.by_owner.get_mut(&e.owner) {
            m.remove(&seq);
            if m.is_empty() {
                self.by_owner.remove(&e.owner);
            }
        }
        Some(e)
    }

    /// Bytes of the logs of every ended job.
    #[cfg(test)]
    pub(crate) fn log_bytes(&self) -> u64 {
        self.log_bytes
    }

    /// Ended jobs known.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_seq.len()
    }

    /// Removes and returns what `policy` evicts now, in eviction order.
    pub(crate) fn evict(&mut self, policy: &Policy, now_ms: u64) -> Vec<(u64, Ended, Rule)> {
        let mut out = Vec::new();
        // 1. count per owner
        let over: Vec<u64> = self
            .by_owner
            .values()
            .filter(|m| m.len() > policy.per_owner)
            .flat_map(|m| {
                m.keys()
                    .take(m.len() - policy.per_owner)
                    .copied()
                    .collect::<Vec<_>>()
            })
            .collect();
        for seq in over {
            if let Some(e) = self.remove(seq) {
                out.push((seq, e, Rule::Count));
            }
        }
        // 2. age
        if let Some(age) = policy.max_age {
            let limit = now_ms.saturating_sub(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
            let old: Vec<u64> = self.by_end.range(..(limit, 0)).map(|(_, s)| *s).collect();
            for seq in old {
                if let Some(e) = self.remove(seq) {
                    out.push((seq, e, Rule::Age));
                }
            }
        }
        // 3. disk budget, oldest first
        while self.log_bytes > policy.log_budget {
            let Some(seq) = self.by_seq.keys().next().copied() else {
                break;
            };
            if let Some(e) = self.remove(seq) {
                out.push((seq, e, Rule::DiskBudget));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(n: u128, owner: &str, ended_at_ms: u64, log_len: u64) -> Ended {
        Ended {
            id: JobId::from_u128(n),
            owner: owner.into(),
            ended_at_ms,
            log_len,
        }
    }

    const OPEN: Policy = Policy {
        per_owner: 1000,
        max_age: None,
        log_budget: u64::MAX,
    };

    #[test]
    fn one_owners_activity_never_evicts_another_by_count() {
        let mut idx = EndedIndex::default();
        idx.insert(1, ended(1, "bob", 10, 1));
        idx.insert(2, ended(2, "bob", 10, 1));
        for s in 3..1013 {
            idx.insert(s, ended(s as u128, "alice", 10, 1));
        }
        let gone = idx.evict(&OPEN, 20);
        assert_eq!(gone.len(), 10);
        assert!(
            gone.iter()
                .all(|(_, e, r)| e.owner == "alice" && *r == Rule::Count)
        );
        // alice's oldest ten went.
        assert_eq!(
            gone.iter().map(|g| g.0).collect::<Vec<_>>(),
            (3..13).collect::<Vec<_>>()
        );
        assert_eq!(idx.len(), 1002);
        assert_eq!(idx.log_bytes(), 1002);
    }

    #[test]
    fn age_and_budget_evict_oldest_first() {
        let mut idx = EndedIndex::default();
        idx.insert(1, ended(1, "bob", 100, 50));
        idx.insert(2, ended(2, "alice", 5_000, 50));
        idx.insert(3, ended(3, "alice", 9_000, 50));
        let policy = Policy {
            max_age: Some(Duration::from_secs(5)),
            ..OPEN
        };
        let gone = idx.evict(&policy, 10_000);
        assert_eq!(
            gone.iter().map(|g| (g.0, g.2)).collect::<Vec<_>>(),
            vec![(1, Rule::Age)]
        );
        // Exactly at the limit stays.
        let policy = Policy {
            max_age: Some(Duration::from_secs(5)),
            ..OPEN
        };
        assert!(idx.evict(&policy, 10_000).is_empty());
        idx.insert(4, ended(4, "bob", 9_500, 50));
        let policy = Policy {
            log_budget: 100,
            ..OPEN
        };
        let gone = idx.evict(&policy, 10_000);
        assert_eq!(
            gone.iter().map(|g| (g.0, g.2)).collect::<Vec<_>>(),
            vec![(2, Rule::DiskBudget)]
        );
        assert_eq!(idx.log_bytes(), 100);
        // At the budget exactly nothing goes.
        assert!(idx.evict(&policy, 10_000).is_empty());
    }
}
