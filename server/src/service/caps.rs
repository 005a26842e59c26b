//! Counted slots: handshakes and authenticated connections (spec: QX-SRV-1,
//! QX-SRV-10), and the caps of one identity over all its connections — connections,
//! subscriptions, requests in flight (spec: QX-SRV-9).
//!
//! Every slot is an owned permit released on drop, so a task that ends on any path
//! gives its slots back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// A fixed number of slots.
#[derive(Debug)]
pub(crate) struct Slots {
    sem: Arc<Semaphore>,
    max: usize,
}

/// One taken slot of a [`Slots`]; given back on drop.
#[derive(Debug)]
pub(crate) struct Slot(#[allow(dead_code, reason = "held for its drop")] OwnedSemaphorePermit);

impl Slots {
    pub(crate) fn new(max: usize) -> Self {
        let max = max.min(Semaphore::MAX_PERMITS);
        Self {
            sem: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A slot, `None` when all are taken.
    pub(crate) fn try_take(&self) -> Option<Slot> {
        match self.sem.clone().try_acquire_owned() {
            Ok(p) => Some(Slot(p)),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => None,
        }
    }

    /// Slots taken now.
    pub(crate) fn in_use(&self) -> usize {
        self.max - self.sem.available_permits()
    }

    /// Whether every slot is taken.
    pub(crate) fn is_full(&self) -> bool {
        self.sem.available_permits() == 0
    }

    /// The number of slots.
    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

/// The per-identity caps (see `ServerConfig`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdentityCaps {
    pub(crate) connections: usize,
    pub(crate) subscriptions: usize,
    pub(crate) requests: usize,
}

/// Which per-identity cap was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cap {
    Connections,
    Subscriptions,
    Requests,
}

/// The slots of one identity, shared by all its connections; forgotten when its
/// last connection ends.
#[derive(Debug)]
pub(crate) struct IdentitySlots {
    name: String,
    caps: IdentityCaps,
    connections: Slots,
    subscriptions: Slots,
    requests: Slots,
    registry: Weak<Mutex<HashMap<String, Weak<IdentitySlots>>>>,
}

impl IdentitySlots {
    /// A slot under `cap`, `None` when the identity is at it.
    pub(crate) fn try_take(&self, cap: Cap) -> Option<Slot> {
        match cap {
            Cap::Connections => self.connections.try_take(),
            Cap::Subscriptions => self.subscriptions.try_take(),
            Cap::Requests => self.requests.try_take(),
        }
    }

    /// The value of `cap`.
    pub(crate) fn max(&self, cap: Cap) -> usize {
        match cap {
            Cap::Connections => self.caps.connections,
            Cap::Subscriptions => self.caps.subscriptions,
            Cap::Requests => self.caps.requests,
        }
    }
}

impl Drop for IdentitySlots {
    fn drop(&mut self) {
        let Some(registry) = self.registry.upgrade() else {
            return;
        };
        let mut map = registry.lock().unwrap_or_else(|e| e.into_inner());
        // Another connection may have registered a fresh entry under this name since
        // the last strong reference went: remove only a dead one.
        if map.get(&self.name).is_some_and(|w| w.strong_count() == 0) {
            map.remove(&self.name);
        }
    }
}

/// Every connected identity's slots.
#[derive(Debug)]
pub(crate) struct Identities {
    caps: IdentityCaps,
    map: Arc<Mutex<HashMap<String, Weak<IdentitySlots>>>>,
}

impl Identities {
    pub(crate) fn new(caps: IdentityCaps) -> Self {
        Self {
            caps,
            map: Arc::default(),
        }
    }

    /// The slots of identity `name` (created on first use); hold the `Arc` for the
    /// life of a connection.
    pub(crate) fn of(&self, name: &str) -> Arc<IdentitySlots> {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slots) = map.get(name).and_then(Weak::upgrade) {
            return slots;
        }
        let slots = Arc::new(IdentitySlots {
            name: name.to_owned(),
            caps: self.caps,
            connections: Slots::new(self.caps.connections),
            subscriptions: Slots::new(self.caps.subscriptions),
            requests: Slots::new(self.caps.requests),
            registry: Arc::downgrade(&self.map),
        });
        map.insert(name.to_owned(), Arc::downgrade(&slots));
        slots
    }

    /// Identities with at least one live connection (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// At most one log line per interval for an event a peer can repeat at will (a
/// refused connection attempt, an abandoned handshake), so a flood cannot flood the
/// log too; the line that is written says how many were left out (spec: QX-SRV-13).
#[derive(Debug)]
pub(crate) struct Throttle {
    interval: Duration,
    /// When a line was last written, and how many events were left out since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// An event at `now`: `Some(left_out)` when it is to be logged (with the number
    /// of events not logged since the last line), `None` when it is left out.
    pub(crate) fn hit(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.0 {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                s.1 += 1;
                None
            }
            _ => {
                let left_out = s.1;
                *s = (Some(now), 0);
                Some(left_out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_logs_once_per_interval_and_counts_the_rest() {
        let t = Throttle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(t.hit(t0), Some(0));
        assert_eq!(t.hit(t0 + Duration::from_millis(10)), None);
        assert_eq!(t.hit(t0 + Duration::from_millis(999)), None);
        assert_eq!(t.hit(t0 + Duration::from_secs(1)), Some(2));
        assert_eq!(t.hit(t0 + Duration::from_millis(1500)), None);
        assert_eq!(t.hit(t0 + Duration::from_secs(3)), Some(1));
        assert_eq!(t.hit(t0 + Duration::from_secs(5)), Some(0));
    }

    #[test]
    fn slots_count_and_release() {
        let slots = Slots::new(2);
        assert_eq!(slots.max(), 2);
        assert_eq!(slots.in_use(), 0);
        assert!(!slots.is_full());
        let a = slots.try_take().unwrap();
        assert_eq!(slots.in_use(), 1);
        assert!(!slots.is_full());
        let _b = slots.try_take().unwrap();
        assert_eq!(slots.in_use(), 2);
        assert!(slots.is_full());
        assert!(slots.try_take().is_none());
        drop(a);
        assert_eq!(slots.in_use(), 1);
        assert!(slots.try_take().is_some());
        // More slots than a semaphore can count are capped, not a panic.
        assert_eq!(Slots::new(usize::MAX).max(), Semaphore::MAX_PERMITS);
    }

    #[test]
    fn identities_are_capped_apart_and_forgotten() {
        let ids = Identities::new(IdentityCaps {
            connections: 1,
            subscriptions: 2,
            requests: 3,
        });
        let alice = ids.of("alice");
        let held = alice.try_take(Cap::Connections).unwrap();
        assert!(alice.try_take(Cap::Connections).is_none());
        // Another connection of alice shares her slots; bob has his own.
        assert!(ids.of("alice").try_take(Cap::Connections).is_none());
        let bob = ids.of("bob");
        assert!(bob.try_take(Cap::Connections).is_some());
        assert_eq!(alice.max(Cap::Subscriptions), 2);
        let _r: Vec<_> = (0..3)
            .map(|_| alice.try_take(Cap::Requests).unwrap())
            .collect();
        assert!(alice.try_take(Cap::Requests).is_none());
        drop(held);
        assert_eq!(ids.len(), 2);
        drop((alice, _r));
        assert_eq!(ids.len(), 1, "alice's entry outlived her last reference");
        drop(bob);
        assert_eq!(ids.len(), 0);
    }
}
