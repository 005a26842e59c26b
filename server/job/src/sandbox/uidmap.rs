//! The host uid/gid range qexecd owns for sandboxed jobs, cut into slots of
//! [`SLOT_IDS`] ids: each running sandboxed job gets its own slot, mapped as
//! `0 <slot base> 65536` in its user namespace, so root in a job is host uid
//! `<slot base>` and no two concurrently running jobs share a host uid.
//! spec: QX-SBX-2

use std::sync::{Arc, Mutex, PoisonError};

/// Ids per slot: a whole 16-bit id space, so `--job-user` ids and the usual system
/// ids (`nobody` = 65534) exist inside every job.
pub const SLOT_IDS: u32 = 65536;

/// Default first host id of the range: `0x7000_0000` (1879048192), just above the
/// range systemd reserves for containers (524288 to 1879048191, used by
/// `systemd-nspawn --private-users=pick`), so the two never collide.
pub const DEFAULT_UID_BASE: u32 = 0x7000_0000;

/// A host uid/gid range `[base, base + count)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    /// First host id.
    pub base: u32,
    /// Number of ids; a multiple of [`SLOT_IDS`].
    pub count: u32,
}

/// Why a [`UidRange`] cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UidRangeError {
    /// The range starts below 65536: it would overlap the host's own users (and
    /// root, uid 0).
    #[error(
        "job uid range {base}:{count} starts below 65536 and would overlap the host's own \
         users (uid 0 included); give a base of at least 65536, e.g. 1879048192"
    )]
    OverlapsHostUsers {
        /// The base given.
        base: u32,
        /// The count given.
        count: u32,
    },
    /// The count is not a positive multiple of 65536.
    #[error("job uid range {base}:{count}: the count must be a positive multiple of 65536")]
    BadCount {
        /// The base given.
        base: u32,
        /// The count given.
        count: u32,
    },
    /// The range runs past the last valid id (4294967294).
    #[error("job uid range {base}:{count} runs past the last valid uid 4294967294")]
    TooHigh {
        /// The base given.
        base: u32,
        /// The count given.
        count: u32,
    },
}

impl UidRange {
    /// The default range for `max_running_jobs` jobs: [`DEFAULT_UID_BASE`], one slot
    /// per job (capped so the range stays below `u32::MAX`).
    pub fn default_for(max_running_jobs: usize) -> Self {
        let max_slots = (u32::MAX - 1 - DEFAULT_UID_BASE) / SLOT_IDS;
        let slots = u32::try_from(max_running_jobs)
            .unwrap_or(u32::MAX)
            .clamp(1, max_slots);
        Self {
            base: DEFAULT_UID_BASE,
            count: slots * SLOT_IDS,
        }
    }

    /// Checks the range: never below 65536 (so never uid 0), whole slots, below the
    /// invalid id `u32::MAX`.
    pub fn validate(&self) -> Result<(), UidRangeError> {
        let (base, count) = (self.base, self.count);
        if base < SLOT_IDS {
            return Err(UidRangeError::OverlapsHostUsers { base, count });
        }
        if count == 0 || count % SLOT_IDS != 0 {
            return Err(UidRangeError::BadCount { base, count });
        }
        // The last id of the range must be at most u32::MAX - 1 ((uid_t)-1 is invalid).
        if base
            .checked_add(count - 1)
            .is_none_or(|last| last == u32::MAX)
        {
            return Err(UidRangeError::TooHigh { base, count });
        }
        Ok(())
    }

    /// Number of slots.
    pub fn slots(&self) -> u32 {
        self.count / SLOT_IDS
    }
}

impl std::str::FromStr for UidRange {
    type Err = String;

    /// `BASE:COUNT`, decimal, e.g. `1879048192:67108864`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (base, count) = s
            .split_once(':')
            .ok_or_else(|| format!("expected BASE:COUNT (e.g. 1879048192:67108864), got {s:?}"))?;
        let parse = |v: &str, what: &str| {
            v.trim()
                .parse::<u32>()
                .map_err(|e| format!("invalid {what} {v:?} in job uid range {s:?}: {e}"))
        };
        let range = Self {
            base: parse(base, "BASE")?,
            count: parse(count, "COUNT")?,
        };
        range.validate().map_err(|e| e.to_string())?;
        Ok(range)
    }
}

/// Which slots are in use. Pure bookkeeping (no system call), unit-tested.
#[derive(Debug)]
pub(crate) struct UidAllocator {
    range: UidRange,
    used: Vec<bool>,
    /// Where the next search starts: slots are handed out round-robin, so a slot
    /// just given back is the last to be reused.
    next: usize,
    in_use: usize,
}

impl UidAllocator {
    /// An allocator over a validated range.
    pub(crate) fn new(range: UidRange) -> Self {
        Self {
            range,
            used: vec![false; range.slots() as usize],
            next: 0,
            in_use: 0,
        }
    }

    /// Takes a free slot; returns its first host id, or `None` when all are in use.
    pub(crate) fn allocate(&mut self) -> Option<u32> {
        let n = self.used.len();
        for i in 0..n {
            let slot = (self.next + i) % n;
            if !self.used[slot] {
                self.used[slot] = true;
                self.next = (slot + 1) % n;
                self.in_use += 1;
                return Some(self.range.base + slot as u32 * SLOT_IDS);
            }
        }
        None
    }

    /// Gives back the slot starting at `base` (ignored if it is not one in use).
    pub(crate) fn free(&mut self, base: u32) {
        let Some(offset) = base.checked_sub(self.range.base) else {
            return;
        };
        if offset % SLOT_IDS != 0 {
            return;
        }
        if let Some(used) = self.used.get_mut((offset / SLOT_IDS) as usize)
            && *used
        {
            *used = false;
            self.in_use -= 1;
        }
    }

    /// Slots in use.
    #[cfg(test)]
    pub(crate) fn in_use(&self) -> usize {
        self.in_use
    }
}

/// A slot held by one job; given back when dropped (after the job's init was reaped,
/// so no process with these ids is left: they all lived in the job's PID namespace,
/// which the kernel empties before the init becomes a zombie).
#[derive(Debug)]
pub(crate) struct UidSlot {
    pool: Arc<Mutex<UidAllocator>>,
    base: u32,
}

impl UidSlot {
    /// Takes a slot from `pool`.
    pub(crate) fn take(pool: &Arc<Mutex<UidAllocator>>) -> Option<Self> {
        let base = pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .allocate()?;
        Some(Self {
            pool: Arc::clone(pool),
            base,
        })
    }

    /// First host id of the slot (host uid and gid of root in the job).
    pub(crate) fn base(&self) -> u32 {
        self.base
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        self.pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .free(self.base);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(slots: u32) -> UidRange {
        UidRange {
            base: DEFAULT_UID_BASE,
            count: slots * SLOT_IDS,
        }
    }

    #[test]
    fn slots_are_distinct_until_exhausted_then_reused_after_free() {
        let mut a = UidAllocator::new(range(3));
        let s: Vec<u32> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(
            s,
            vec![
                DEFAULT_UID_BASE,
                DEFAULT_UID_BASE + SLOT_IDS,
                DEFAULT_UID_BASE + 2 * SLOT_IDS
            ]
        );
        assert_eq!(a.in_use(), 3);
        assert_eq!(a.allocate(), None, "a fourth job must not share a slot");
        a.free(s[1]);
        assert_eq!(a.in_use(), 2);
        assert_eq!(a.allocate(), Some(s[1]));
        assert_eq!(a.allocate(), None);
    }

    #[test]
    fn allocation_is_round_robin() {
        let mut a = UidAllocator::new(range(3));
        let first = a.allocate().unwrap();
        a.free(first);
        // The slot just given back is not the next one handed out.
        let second = a.allocate().unwrap();
        assert_ne!(second, first);
        assert_eq!(second, DEFAULT_UID_BASE + SLOT_IDS);
    }

    #[test]
    fn freeing_an_unknown_or_free_slot_changes_nothing() {
        let mut a = UidAllocator::new(range(2));
        let s = a.allocate().unwrap();
        a.free(s + 1);
        a.free(DEFAULT_UID_BASE - SLOT_IDS);
        a.free(DEFAULT_UID_BASE + 5 * SLOT_IDS);
        assert_eq!(a.in_use(), 1);
        a.free(s);
        a.free(s);
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    fn slot_guard_gives_back_on_drop() {
        let pool = Arc::new(Mutex::new(UidAllocator::new(range(1))));
        let slot = UidSlot::take(&pool).unwrap();
        assert_eq!(slot.base(), DEFAULT_UID_BASE);
        assert!(UidSlot::take(&pool).is_none());
        drop(slot);
        assert!(UidSlot::take(&pool).is_some());
    }

    #[test]
    fn ranges_are_validated() {
        assert!(range(1).validate().is_ok());
        for (base, count, want) in [
            (0, SLOT_IDS, "below 65536"),
            (65535, SLOT_IDS, "below 65536"),
            (65536, 0, "multiple"),
            (65536, 1000, "multiple"),
            (u32::MAX - SLOT_IDS + 1, SLOT_IDS, "past"),
        ] {
            let e = UidRange { base, count }.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{base}:{count}: {e}");
        }
        // The highest valid range ends at u32::MAX - 1.
        let top = UidRange {
            base: u32::MAX - SLOT_IDS,
            count: SLOT_IDS,
        };
        assert!(top.validate().is_ok());
        assert_eq!(
            UidRange {
                base: 65536,
                count: SLOT_IDS
            }
            .validate(),
            Ok(())
        );
    }

    #[test]
    fn parse_and_default() {
        let r: UidRange = "1879048192:131072".parse().unwrap();
        assert_eq!(r.slots(), 2);
        assert!("1879048192".parse::<UidRange>().is_err());
        assert!("0:65536".parse::<UidRange>().is_err());
        assert!("x:65536".parse::<UidRange>().is_err());
        let d = UidRange::default_for(1024);
        assert_eq!(d.base, DEFAULT_UID_BASE);
        assert_eq!(d.slots(), 1024);
        d.validate().unwrap();
        // Far more jobs than fit: capped, still valid.
        UidRange::default_for(usize::MAX).validate().unwrap();
        assert_eq!(UidRange::default_for(0).slots(), 1);
    }
}
