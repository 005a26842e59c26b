//! Per-job resource control with cgroups, on both layouts hosts have: the unified v2
//! hierarchy and the v1 (legacy or hybrid) per-controller hierarchies.
//!
//! How the job manager uses it:
//! 1. [`Cgroups::detect`] once at start-up (its [`Cgroups::capabilities`] go to the
//!    start-up log and the library's capabilities query), then
//!    [`Cgroups::cleanup_stale`] to empty and remove cgroups a crashed server left.
//! 2. Per start: [`Cgroups::resolve`] ([`Cgroups::validate`] then
//!    [`Cgroups::apply_defaults`]: a request above the server maximum is refused, never
//!    clamped), then [`Cgroups::create`] with the disk of the job's cwd
//!    ([`block_device_of`]) or the configured disks.
//! 3. The spawner writes `0` to every fd of [`JobCgroup::procs_fds`] in the child
//!    before exec, so the program never runs outside its cgroup; the manager then calls
//!    [`JobCgroup::release_procs_fds`].
//! 4. [`JobCgroup::usage`] / [`JobCgroup::oom_killed`] for status,
//!    [`JobCgroup::signal_all`] / [`JobCgroup::kill_all`] to stop,
//!    [`JobCgroup::remove`] once the job ended.
//!
//! Layout on the host: v2 `<root>/qexec/<job>` with `+cpu +memory +io +pids` enabled in
//! `<root>/qexec/cgroup.subtree_control` (the `qexec` cgroup holds no process, as the
//! no-internal-process rule wants); v1 `<mount>/qexec/<job>` in each controller used
//! (cpu, cpuacct, memory, blkio, pids, freezer).

mod common;
mod device;
mod device_number;
mod error;
mod fs;
mod job;
mod parse;
mod report;
mod v1;
mod v2;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use qexec_protocol::Limits;

use parse::MountEntry;

pub use device::block_device_of;
pub use device_number::DeviceNumber;
pub use error::{CgroupError, LimitError, LimitKind};
pub use job::{JobCgroup, PidsStats};
pub use report::{
    CgroupCapabilities, CgroupVersion, Controller, ControllerStatus, HostLayout, KillMethod,
};

use job::Inner;

/// Name of the directory that holds qexec's job cgroups in each hierarchy.
pub const DEFAULT_SUBTREE: &str = "qexec";

/// Smallest CPU limit: the kernel refuses quotas below 1 ms per period.
const MIN_CPU_MILLIS: u32 = 10;

/// One stale cgroup [`Cgroups::cleanup_stale`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleCgroup {
    /// Its job name.
    pub name: String,
    /// Processes that were killed to empty it.
    pub killed: Vec<u32>,
}

#[derive(Debug)]
enum Backend {
    V1(v1::Tree),
    V2(v2::Tree),
    Unavailable,
}

/// The host's cgroups as qexec uses them. Cheap to share behind an `Arc`: every
/// method takes `&self` and keeps no lock.
#[derive(Debug)]
pub struct Cgroups {
    backend: Backend,
    caps: CgroupCapabilities,
}

/// Where and what [`Cgroups::detect`] looks at.
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";

impl Cgroups {
    /// Detects the host's layout and prepares the `qexec` subtree.
    ///
    /// Never fails for lack of cgroups: a host without access yields a value whose
    /// [`capabilities`](Self::capabilities) say "unavailable" and why, so jobs without
    /// limits still run.
    pub fn detect() -> Self {
        Self::detect_with_subtree(DEFAULT_SUBTREE)
    }

    /// [`detect`](Self::detect) with another subtree name (tests use one per process,
    /// so they never clash with each other or a running qexecd).
    pub fn detect_with_subtree(subtree: &str) -> Self {
        if let Err(e) = check_name(subtree) {
            return Self::unavailable(HostLayout::None, e.to_string());
        }
        let host = match nix::sys::statfs::statfs(CGROUP_MOUNT) {
            Ok(s) => s.filesystem_type(),
            Err(e) => {
                return Self::unavailable(HostLayout::None, format!("statfs {CGROUP_MOUNT}: {e}"));
            }
        };
        let mountinfo = match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(m) => m,
            Err(e) => {
                return Self::unavailable(
                    HostLayout::None,
                    format!("reading /proc/self/mountinfo: {e}"),
                );
            }
        };
        let kind = if host == nix::sys::statfs::CGROUP2_SUPER_MAGIC {
            FsKind::Cgroup2
        } else if host == nix::sys::statfs::TMPFS_MAGIC {
            FsKind::Tmpfs
        } else {
            FsKind::Other
        };
        let mounts = parse::mountinfo(&mountinfo);
        match choose(kind, &mounts, Path::new(CGROUP_MOUNT)) {
            Choice::V2 { host, root } => Self::v2_at(host, &root, subtree),
            Choice::V1 { host, mounts } => Self::v1_at(host, &mounts, subtree),
            Choice::None { host, reason } => Self::unavailable(host, reason),
        }
    }

    /// Uses the v2 hierarchy mounted at `root` (a real mount, or a tempdir fixture),
    /// creating `<root>/<subtree>` and enabling the controllers in it.
    pub fn v2_at(host: HostLayout, root: &Path, subtree: &str) -> Self {
        if let Err(e) = check_name(subtree) {
            return Self::unavailable(host, e.to_string());
        }
        match v2::Tree::prepare(root, subtree) {
            Ok((tree, controllers)) => {
                let caps = CgroupCapabilities {
                    host,
                    version: Some(CgroupVersion::V2),
                    unavailable: None,
                    subtree: vec![tree.base().to_owned()],
                    controllers,
                    kill: Some(tree.kill_method()),
                };
                Self {
                    backend: Backend::V2(tree),
                    caps,
                }
            }
            Err(reason) => Self::unavailable(host, reason),
        }
    }

    /// Uses the v1 hierarchies `mounts` (controller, mount point), creating
    /// `<mount>/<subtree>` in each.
    pub fn v1_at(host: HostLayout, mounts: &[(Controller, PathBuf)], subtree: &str) -> Self {
        if let Err(e) = check_name(subtree) {
            return Self::unavailable(host, e.to_string());
        }
        match v1::Tree::prepare(mounts, subtree) {
            Ok((tree, controllers)) => {
                let caps = CgroupCapabilities {
                    host,
                    version: Some(CgroupVersion::V1),
                    unavailable: None,
                    subtree: tree.bases(),
                    controllers,
                    kill: Some(tree.kill_method()),
                };
                Self {
                    backend: Backend::V1(tree),
                    caps,
                }
            }
            Err(reason) => Self::unavailable(host, reason),
        }
    }

    fn unavailable(host: HostLayout, reason: String) -> Self {
        Self {
            backend: Backend::Unavailable,
            caps: CgroupCapabilities {
                host,
                version: None,
                unavailable: Some(reason),
                subtree: Vec::new(),
                controllers: Vec::new(),
                kill: None,
            },
        }
    }

    /// What the host offers.
    pub fn capabilities(&self) -> &CgroupCapabilities {
        &self.caps
    }

    /// The interface in use, `None` when unavailable.
    pub fn layout(&self) -> Option<CgroupVersion> {
        self.caps.version
    }

    /// True when job cgroups can be created.
    pub fn is_available(&self) -> bool {
        !matches!(self.backend, Backend::Unavailable)
    }

    /// The limits in force for a request: each one the request leaves unset takes the
    /// server default, else the server maximum (so a maximum always bounds the job).
    pub fn apply_defaults(requested: &Limits, defaults: &Limits, max: &Limits) -> Limits {
        Limits {
            cpu_millis: requested
                .cpu_millis
                .or(defaults.cpu_millis)
                .or(max.cpu_millis),
            memory_bytes: requested
                .memory_bytes
                .or(defaults.memory_bytes)
                .or(max.memory_bytes),
            io_read_bps: requested
                .io_read_bps
                .or(defaults.io_read_bps)
                .or(max.io_read_bps),
            io_write_bps: requested
                .io_write_bps
                .or(defaults.io_write_bps)
                .or(max.io_write_bps),
            io_read_iops: requested
                .io_read_iops
                .or(defaults.io_read_iops)
                .or(max.io_read_iops),
            io_write_iops: requested
                .io_write_iops
                .or(defaults.io_write_iops)
                .or(max.io_write_iops),
            pids: requested.pids.or(defaults.pids).or(max.pids),
        }
    }

    /// Checks `limits` against the server maximums `max` (`None` there: no maximum),
    /// the smallest enforceable values, and what this host can enforce. Never clamps.
    pub fn validate(&self, limits: &Limits, max: &Limits) -> Result<(), LimitError> {
        for (kind, value, max, min) in limit_table(limits, max) {
            let Some(v) = value else { continue };
            if v < min {
                return Err(LimitError::BelowMin {
                    limit: kind,
                    requested: v,
                    min,
                });
            }
            if let Some(m) = max
                && v > m
            {
                return Err(LimitError::AboveMax {
                    limit: kind,
                    requested: v,
                    max: m,
                });
            }
            if !self.caps.usable(kind.controller()) {
                return Err(LimitError::Unsupported {
                    limit: kind,
                    reason: self.caps.reason(kind.controller()),
                });
            }
        }
        Ok(())
    }

    /// The limits a start runs with, in one call: the request's own limits are
    /// checked by [`validate`](Self::validate) (so a request above a maximum, or one
    /// asking for limits this host cannot enforce, is refused), then unset ones are
    /// filled by [`apply_defaults`](Self::apply_defaults). Without cgroups, a request
    /// that asks for no limit gets none (the job runs unconstrained) instead of being
    /// refused over server defaults it did not ask for.
    pub fn resolve(
        &self,
        requested: &Limits,
        defaults: &Limits,
        max: &Limits,
    ) -> Result<Limits, LimitError> {
        self.validate(requested, max)?;
        if !self.is_available() {
            return Ok(requested.clone());
        }
        let effective = Self::apply_defaults(requested, defaults, max);
        self.validate(&effective, max)?;
        Ok(effective)
    }

    /// Creates the cgroup of job `name` with `limits`; IO limits apply to each of
    /// `io_devices` (whole disks, see [`block_device_of`]). The returned handle holds
    /// the `cgroup.procs` fds the spawner joins.
    pub fn create(
        &self,
        name: &str,
        limits: &Limits,
        io_devices: &[DeviceNumber],
    ) -> Result<JobCgroup, CgroupError> {
        check_name(name)?;
        let wants_io = limits.io_read_bps.is_some()
            || limits.io_write_bps.is_some()
            || limits.io_read_iops.is_some()
            || limits.io_write_iops.is_some();
        if wants_io && io_devices.is_empty() {
            return Err(CgroupError::NoIoDevice {
                name: name.to_owned(),
            });
        }
        for (kind, value, _, _) in limit_table(limits, &Limits::default()) {
            if value.is_some() && !self.caps.usable(kind.controller()) {
                return Err(CgroupError::ControllerUnavailable {
                    controller: kind.controller(),
                    reason: self.caps.reason(kind.controller()),
                });
            }
        }
        let inner = match &self.backend {
            Backend::V2(t) => Inner::V2(t.create(name, limits, io_devices)?),
            Backend::V1(t) => Inner::V1(t.create(name, limits, io_devices)?),
            Backend::Unavailable => {
                return Err(CgroupError::Unavailable {
                    reason: self.caps.unavailable.clone().unwrap_or_default(),
                });
            }
        };
        let mut job = JobCgroup {
            name: name.to_owned(),
            inner,
            procs: Vec::new(),
            removed: false,
        };
        match job.open_procs() {
            Ok(files) => job.procs = files,
            Err(e) => {
                if let Err(e2) = job.remove() {
                    tracing::warn!(error = %e2, "removing a half-created job cgroup");
                }
                return Err(e);
            }
        }
        Ok(job)
    }

    /// Handle on the existing cgroup of job `name` (e.g. after a server restart).
    fn open_existing(&self, name: &str) -> Option<JobCgroup> {
        let inner = match &self.backend {
            Backend::V2(t) => Inner::V2(t.open(name)),
            Backend::V1(t) => Inner::V1(t.open(name)),
            Backend::Unavailable => return None,
        };
        Some(JobCgroup {
            name: name.to_owned(),
            inner,
            procs: Vec::new(),
            removed: false,
        })
    }

    /// At start-up: kills the processes of, and removes, every job cgroup left in the
    /// qexec subtree (by a crashed server). Returns what it removed.
    pub fn cleanup_stale(&self) -> Result<Vec<StaleCgroup>, CgroupError> {
        let names: BTreeSet<String> = match &self.backend {
            Backend::V2(t) => t.job_names()?,
            Backend::V1(t) => t.job_names()?,
            Backend::Unavailable => return Ok(Vec::new()),
        };
        let mut out = Vec::new();
        for name in names {
            let Some(mut job) = self.open_existing(&name) else {
                continue;
            };
            let killed = job.pids()?;
            job.kill_all()?;
            job.remove()?;
            tracing::info!(cgroup = %name, killed = killed.len(), "removed stale job cgroup");
            out.push(StaleCgroup { name, killed });
        }
        Ok(out)
    }

    /// Removes the (empty) qexec subtree itself, e.g. when a test ends.
    pub fn remove_subtree(&self) -> Result<(), CgroupError> {
        for base in &self.caps.subtree {
            fs::rmdir(base)?;
        }
        Ok(())
    }
}

/// `(kind, requested, max, min)` for every limit.
fn limit_table(l: &Limits, max: &Limits) -> [(LimitKind, Option<u64>, Option<u64>, u64); 7] {
    [
        (
            LimitKind::Cpu,
            l.cpu_millis.map(u64::from),
            max.cpu_millis.map(u64::from),
            u64::from(MIN_CPU_MILLIS),
        ),
        // spec: QX-LIMIT-17 (below it no program can start: refused, not a bare 127)
        (
            LimitKind::Memory,
            l.memory_bytes,
            max.memory_bytes,
            qexec_protocol::limits::MIN_MEMORY_BYTES,
        ),
        (LimitKind::IoReadBps, l.io_read_bps, max.io_read_bps, 1),
        (LimitKind::IoWriteBps, l.io_write_bps, max.io_write_bps, 1),
        (LimitKind::IoReadIops, l.io_read_iops, max.io_read_iops, 1),
        (
            LimitKind::IoWriteIops,
            l.io_write_iops,
            max.io_write_iops,
            1,
        ),
        (
            LimitKind::Pids,
            l.pids.map(u64::from),
            max.pids.map(u64::from),
            1,
        ),
    ]
}

/// Job cgroup names are one path component of safe characters.
/// Checks that `name` can be a cgroup directory name (a job id, or the subtree that
/// holds the job cgroups): 1–200 bytes of ASCII letters, digits, `-`, `_` and `.`, not
/// `.` or `..`, not starting with `cgroup.` (the kernel's interface files).
///
/// # Errors
/// [`CgroupError::InvalidName`] naming the (truncated) name.
pub fn check_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && !name.starts_with("cgroup.")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidName {
            name: name.chars().take(64).collect(),
        })
    }
}

/// The filesystem at `/sys/fs/cgroup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FsKind {
    Cgroup2,
    Tmpfs,
    Other,
}

#[derive(Debug, PartialEq, Eq)]
enum Choice {
    V2 {
        host: HostLayout,
        root: PathBuf,
    },
    V1 {
        host: HostLayout,
        mounts: Vec<(Controller, PathBuf)>,
    },
    None {
        host: HostLayout,
        reason: String,
    },
}

/// Decides which hierarchy to use from what is mounted. On a hybrid host the v1
/// controllers win when any is mounted (a controller lives in one hierarchy only, so
/// the cgroup2 mount of such a host is empty); else its cgroup2 mount is used.
fn choose(kind: FsKind, mounts: &[MountEntry], base: &Path) -> Choice {
    let under = |m: &MountEntry| m.mount_point.starts_with(base);
    if kind == FsKind::Cgroup2 {
        return Choice::V2 {
            host: HostLayout::Unified,
            root: base.to_owned(),
        };
    }
    let mut v1 = Vec::new();
    for c in Controller::V1 {
        if let Some(m) = mounts.iter().find(|m| {
            under(m) && m.fs_type == "cgroup" && m.super_options.iter().any(|o| o == c.v1_name())
        }) {
            v1.push((c, m.mount_point.clone()));
        }
    }
    let v2 = mounts
        .iter()
        .find(|m| under(m) && m.fs_type == "cgroup2")
        .map(|m| m.mount_point.clone());
    let host = match (v1.is_empty(), &v2) {
        (false, Some(_)) => HostLayout::Hybrid,
        (false, None) => HostLayout::Legacy,
        (true, Some(_)) => HostLayout::Hybrid,
        (true, None) => HostLayout::None,
    };
    if kind == FsKind::Other {
        return Choice::None {
            host: HostLayout::None,
            reason: format!(
                "{} is neither cgroup2 nor a tmpfs of v1 mounts",
                base.display()
            ),
        };
    }
    if !v1.is_empty() {
        Choice::V1 { host, mounts: v1 }
    } else if let Some(root) = v2 {
        Choice::V2 { host, root }
    } else {
        Choice::None {
            host,
            reason: format!("no cgroup hierarchy is mounted under {}", base.display()),
        }
    }
}

#[cfg(test)]
mod tests;
