//! What the v1 and v2 layouts share: the per-controller trait, the CPU period, and
//! the kill helpers (signal, poll, freeze-kill loop). Depends on no layout.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use qexec_protocol::{Limits, ResourceUsage};

use super::device_number::DeviceNumber;
use super::error::CgroupError;
use super::{fs, parse};

/// CFS period used for CPU limits, in microseconds.
pub(super) const CPU_PERIOD_USEC: u64 = 100_000;

/// How long [`JobCgroup::kill_all`](super::JobCgroup::kill_all) keeps trying before it reports failure.
pub(super) const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// One controller's files in a job's cgroup directory: one small type per controller
/// implements it, in `v1` and in `v2` (each layout names its files differently).
pub(super) trait ControllerFiles: fmt::Debug + Sync {
    /// Writes this controller's part of `limits` (IO limits apply to `io_devices`).
    fn apply(
        &self,
        dir: &Path,
        limits: &Limits,
        io_devices: &[DeviceNumber],
    ) -> Result<(), CgroupError>;

    /// Adds what this controller measures to `usage`.
    fn read_usage(&self, _dir: &Path, _usage: &mut ResourceUsage) -> Result<(), CgroupError> {
        Ok(())
    }
}

/// Pids in `dir/cgroup.procs` and in every cgroup below it.
pub(super) fn collect_pids(dir: &Path, out: &mut BTreeSet<u32>) -> Result<(), CgroupError> {
    match fs::read_optional(&dir.join("cgroup.procs"))? {
        Some(text) => out.extend(parse::pids(&text)),
        None => return Ok(()),
    }
    for child in fs::child_dirs(dir)? {
        collect_pids(&child, out)?;
    }
    Ok(())
}

/// Sends `signal` to `pid`; false when it is already gone.
pub(super) fn send(pid: u32, signal: nix::sys::signal::Signal) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal).is_ok()
}

/// Polls `done` with a growing pause (1 ms .. 20 ms) until it holds or `timeout`
/// passes; returns whether it held. Used only where the kernel offers no event to wait
/// on without extra machinery (a cgroup emptying after SIGKILL, a freeze settling).
pub(super) fn wait_for(
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<bool, CgroupError> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if done()? {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Freeze → SIGKILL every pid → thaw, until `pids` is empty; shared by v1 (freezer)
/// and v2 without `cgroup.kill`. `freeze(true/false)` freezes/thaws and waits for it
/// to settle; without a freezer it does nothing (plain kill loop).
pub(super) fn freeze_kill_loop(
    path: &Path,
    pids: impl Fn() -> Result<Vec<u32>, CgroupError>,
    freeze: impl Fn(bool) -> Result<(), CgroupError>,
) -> Result<(), CgroupError> {
    let deadline = Instant::now() + KILL_TIMEOUT;
    let mut rounds = 0;
    loop {
        let now = pids()?;
        if now.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CgroupError::KillIncomplete {
                path: path.to_owned(),
                rounds,
                remaining: now,
            });
        }
        rounds += 1;
        freeze(true)?;
        // Frozen: no process can fork, so this list is complete.
        for pid in pids()? {
            send(pid, nix::sys::signal::Signal::SIGKILL);
        }
        freeze(false)?;
        wait_for(Duration::from_millis(500), || Ok(pids()?.is_empty()))?;
    }
}
