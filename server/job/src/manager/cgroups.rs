//! Cgroup glue: preparing the host's cgroups for the manager, the subtree lock, a
//! job's cgroup and reading its accounting.

use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use qexec_protocol::{JobId, Limits, ResourceUsage};

use crate::ManagerConfig;
use crate::cgroup::{CgroupError, Cgroups, DeviceNumber, JobCgroup, block_device_of};

/// Detects the host's cgroups (unless turned off), logs what it found and removes the
/// job cgroups a previous server left.
pub(super) fn prepare_cgroups(config: &ManagerConfig) -> (Option<Cgroups>, Option<SubtreeLock>) {
    if !config.cgroups {
        tracing::info!("job cgroups are turned off by configuration; resource limits are refused");
        return (None, None);
    }
    let cgroups = Cgroups::detect_with_subtree(&config.cgroup_subtree);
    let caps = cgroups.capabilities();
    if !cgroups.is_available() {
        tracing::warn!("{caps}; jobs run without cgroups and starts with limits are refused");
        return (Some(cgroups), None);
    }
    tracing::info!("{caps}");
    let (lock, alone) = SubtreeLock::acquire(caps.subtree.first().map(PathBuf::as_path));
    if alone {
        // spec: stale job cgroups of a crashed server are emptied and removed at start.
        match cgroups.cleanup_stale() {
            Ok(stale) => {
                for s in &stale {
                    tracing::warn!(cgroup = %s.name, killed = ?s.killed, "removed a stale job cgroup left by an earlier server");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot clean up stale job cgroups"),
        }
    } else {
        tracing::warn!(
            subtree = %config.cgroup_subtree,
            "another qexecd uses this cgroup subtree; stale cgroups are not cleaned up (give each qexecd on this host its own --cgroup-subtree)"
        );
    }
    if let Some(l) = &lock
        && let Err(e) = l.0.relock(FlockArg::LockShared)
    {
        tracing::warn!(error = %e, "cannot take the shared lock on the job cgroup subtree");
    }
    (Some(cgroups), lock)
}

/// A `flock` on the cgroup subtree directory, held by every manager that uses the
/// subtree: shared while it runs, exclusive (non-blocking) for the two operations that
/// touch other jobs' cgroups — the stale cleanup at start and removing the subtree
/// when the manager goes — so a manager never kills or removes what a live manager
/// of the same subtree owns. A crashed server's lock goes with its process.
#[derive(Debug)]
pub(super) struct SubtreeLock(Flock<std::fs::File>);

impl SubtreeLock {
    /// Locks `dir`; `alone` is true when the lock was exclusive (no other manager).
    /// Without a lock (it cannot be taken) the manager behaves as if alone.
    pub(super) fn acquire(dir: Option<&Path>) -> (Option<Self>, bool) {
        let Some(dir) = dir else {
            return (None, true);
        };
        let file = match std::fs::File::open(dir) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %dir.display(), error = %e, "cannot open the job cgroup subtree to lock it");
                return (None, true);
            }
        };
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => (Some(Self(lock)), true),
            Err((file, Errno::EWOULDBLOCK)) => {
                // Waits only while another manager does its own stale cleanup.
                match Flock::lock(file, FlockArg::LockShared) {
                    Ok(lock) => (Some(Self(lock)), false),
                    Err((_, e)) => {
                        tracing::warn!(path = %dir.display(), error = %e, "cannot lock the job cgroup subtree");
                        (None, false)
                    }
                }
            }
            Err((_, e)) => {
                tracing::warn!(path = %dir.display(), error = %e, "cannot lock the job cgroup subtree");
                (None, true)
            }
        }
    }

    /// True when no other manager holds the subtree (the lock is exclusive now).
    pub(super) fn alone(&self) -> bool {
        self.0.relock(FlockArg::LockExclusiveNonblock).is_ok()
    }
}

/// Creates the cgroup of job `id` with `limits`; IO limits apply to the disk behind
/// `cwd`, else to the configured disks.
pub(super) fn create_cgroup(
    cgroups: &Cgroups,
    config: &ManagerConfig,
    id: JobId,
    limits: &Limits,
    cwd: &Path,
) -> Result<JobCgroup, CgroupError> {
    let wants_io = limits.io_read_bps.is_some()
        || limits.io_write_bps.is_some()
        || limits.io_read_iops.is_some()
        || limits.io_write_iops.is_some();
    let devices: Vec<DeviceNumber> = if wants_io {
        match block_device_of(cwd) {
            Ok(dev) => vec![dev],
            Err(e) if !config.io_devices.is_empty() => {
                tracing::debug!(job = %id, error = %e, "IO limits apply to the configured disks");
                config.io_devices.clone()
            }
            Err(e) => return Err(e),
        }
    } else {
        Vec::new()
    };
    cgroups.create(&id.to_string(), limits, &devices)
}

/// Usage and OOM flag of a job cgroup now (what cannot be read is left unknown).
/// spec: QX-MSG-TYPE-7 (`None` where not measured)
pub(super) fn read_accounting(cg: &JobCgroup, id: JobId) -> (ResourceUsage, bool) {
    let usage = cg.usage().unwrap_or_else(|e| {
        tracing::debug!(job = %id, error = %e, "cannot read the job's cgroup usage");
        ResourceUsage::default()
    });
    let oom = cg.oom_killed().unwrap_or_else(|e| {
        tracing::debug!(job = %id, error = %e, "cannot read the job's OOM flag");
        false
    });
    (usage, oom)
}
