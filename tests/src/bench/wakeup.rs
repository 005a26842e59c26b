//! A wake-up probe: what the machine itself adds to any latency measured at the same
//! time (as `cyclictest` does). A thread sleeps 1 ms at a time and records how much
//! later than asked it ran again. It takes no part in the transfer, so its delays are
//! the scheduler's and the kernel's: other threads on both cores, kernel work that
//! cannot be preempted (this kernel runs with `preempt=none`), the virtual machine's
//! own work. Sections 4 and 7 run it beside their loaded measurements, for qexec and
//! for OpenSSH alike, so an echo's p99 can be read against the machine's.
//!
//! The kernel's free-page reporting to the hypervisor (virtio-balloon,
//! `page_reporting`) is counted too: after a transfer frees memory, its kernel worker
//! can hold a core for hundreds of milliseconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::stats::percentile;

/// How long the probe sleeps each time.
const TICK: Duration = Duration::from_millis(1);
/// Where the kernel counts the memory it reported free to the hypervisor.
const REPORTED_KIB: &str = "/sys/module/page_reporting/parameters/reported_kib";

/// A running probe; [`Probe::finish`] stops it.
#[derive(Debug)]
pub(crate) struct Probe {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<f64>>,
    reported_before: Option<u64>,
}

/// What a probe saw.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Wakeups {
    /// Lateness of the probe's wake-ups, µs: 99th percentile and maximum.
    pub(crate) p99: f64,
    pub(crate) max: f64,
    /// Memory reported free to the hypervisor meanwhile, MiB (`None` where the
    /// kernel does not report).
    pub(crate) reported_mib: Option<u64>,
}

fn reported_kib() -> Option<u64> {
    std::fs::read_to_string(REPORTED_KIB)
        .ok()?
        .trim()
        .parse()
        .ok()
}

impl Probe {
    /// Starts the probe thread.
    pub(crate) fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut late = Vec::with_capacity(1 << 14);
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                std::thread::sleep(TICK);
                late.push(t.elapsed().saturating_sub(TICK).as_secs_f64() * 1e6);
            }
            late
        });
        Self {
            stop,
            thread,
            reported_before: reported_kib(),
        }
    }

    /// Stops the probe; what it saw.
    pub(crate) fn finish(self) -> Wakeups {
        self.stop.store(true, Ordering::Relaxed);
        let late = self.thread.join().unwrap_or_default();
        let reported_mib = match (self.reported_before, reported_kib()) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) >> 10),
            _ => None,
        };
        Wakeups {
            p99: percentile(&late, 0.99),
            max: late.iter().copied().fold(f64::NAN, f64::max),
            reported_mib,
        }
    }
}

/// Wake-up figures of several runs, one value per run.
#[derive(Debug, Default)]
pub(crate) struct Runs {
    pub(crate) p99: Vec<f64>,
    pub(crate) max: Vec<f64>,
    pub(crate) reported_mib: u64,
}

impl Runs {
    /// Adds one run's figures.
    pub(crate) fn push(&mut self, w: Wakeups) {
        self.p99.push(w.p99);
        self.max.push(w.max);
        self.reported_mib += w.reported_mib.unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_sees_its_own_sleeps() {
        let p = Probe::start();
        std::thread::sleep(Duration::from_millis(30));
        let w = p.finish();
        // Some wake-ups were recorded, and none was early.
        assert!(w.p99 >= 0.0 && w.max >= w.p99, "{w:?}");
    }
}
