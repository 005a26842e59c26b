//! Getting a connection's CONNECTION_CLOSE onto the wire.
//!
//! quinn-proto 0.11.19 (the latest release) gates the packet that carries
//! CONNECTION_CLOSE by the congestion window whenever stream frames are still queued
//! in its space, and a closed connection processes no more acknowledgements, so a
//! window that was full when `close` was called never opens again: the close is never
//! sent and the peer learns of it only from its idle timeout (quinn-rs/quinn#2785,
//! fixed upstream by #2787, not released). It is common, not a corner case: a
//! `qexec` command closes right after its last answer, while the path-MTU probes of
//! up to [`MTU_UPPER_BOUND`](crate::MTU_UPPER_BOUND) bytes fill the initial window;
//! about a third of short commands lost their goodbye that way, so the server kept
//! their connections (and the user's connection slots) until its idle timeout.
//!
//! [`CloseGate`] works around it: the connection's congestion controller is quinn's
//! Cubic behind a gate that, once opened just before `close`, reports an unbounded
//! window (which also turns quinn's pacing off), so the close packet leaves at once.
//! Nothing else is sent after a close, so the gate changes no other traffic. Remove
//! it when a quinn-proto release carries the fix.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics, CubicConfig};
use quinn_proto::RttEstimator;

/// A switch, shared with the congestion controllers of the connections made with one
/// `TransportConfig`, that lets their close packets past the congestion window (see
/// the module docs).
///
/// Give [`CloseGate::controller_factory`] to a `TransportConfig` and call
/// [`CloseGate::open`] right before closing **every** connection made with it: a
/// client's one connection, or all of a server's at shutdown.
#[derive(Debug, Clone, Default)]
pub struct CloseGate {
    open: Arc<AtomicBool>,
}

impl CloseGate {
    /// A closed gate: the controller is plain Cubic until [`CloseGate::open`].
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on the connections' congestion windows are unbounded. Call it only
    /// when they are about to be closed.
    pub fn open(&self) {
        self.open.store(true, Ordering::Relaxed);
    }

    /// A congestion controller factory: quinn's Cubic (its defaults) behind this gate.
    pub fn controller_factory(&self) -> Arc<dyn ControllerFactory + Send + Sync> {
        Arc::new(GatedFactory {
            inner: Arc::new(CubicConfig::default()),
            open: Arc::clone(&self.open),
        })
    }
}

struct GatedFactory {
    inner: Arc<CubicConfig>,
    open: Arc<AtomicBool>,
}

impl ControllerFactory for GatedFactory {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Gated {
            inner: Arc::clone(&self.inner).build(now, current_mtu),
            open: Arc::clone(&self.open),
        })
    }
}

/// The wrapped controller: every event goes to the inner one; only `window` differs,
/// once the gate is open.
struct Gated {
    inner: Box<dyn Controller>,
    open: Arc<AtomicBool>,
}

impl Controller for Gated {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        if self.open.load(Ordering::Relaxed) {
            // Above u32::MAX quinn also stops pacing.
            u64::MAX
        } else {
            self.inner.window()
        }
    }

    fn metrics(&self) -> ControllerMetrics {
        self.inner.metrics()
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(Gated {
            inner: self.inner.clone_box(),
            open: Arc::clone(&self.open),
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window()
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_cubics_until_the_gate_opens() {
        let gate = CloseGate::new();
        let now = Instant::now();
        let controller = gate.controller_factory().build(now, 1200);
        let cubic = Arc::new(CubicConfig::default()).build(now, 1200);
        assert_eq!(controller.window(), cubic.window());
        assert_eq!(controller.initial_window(), cubic.initial_window());
        let copy = controller.clone_box();
        gate.open();
        assert_eq!(controller.window(), u64::MAX);
        assert_eq!(copy.window(), u64::MAX, "a clone shares the gate");
    }
}
