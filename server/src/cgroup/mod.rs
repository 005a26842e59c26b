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

mod device;
mod fs;
mod parse;
mod v1;
mod v2;

use std::collections::BTreeSet;
use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use qexec_protocol::{Limits, ResourceUsage};

use parse::MountEntry;

pub use device::{DeviceNumber, block_device_of};

/// Name of the directory that holds qexec's job cgroups in each hierarchy.
pub const DEFAULT_SUBTREE: &str = "qexec";

/// CFS period used for CPU limits, in microseconds.
const CPU_PERIOD_USEC: u64 = 100_000;

/// Smallest CPU limit: the kernel refuses quotas below 1 ms per period.
const MIN_CPU_MILLIS: u32 = 10;

/// How long [`JobCgroup::kill_all`] keeps trying before it reports failure.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the host mounts at `/sys/fs/cgroup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostLayout {
    /// cgroup2 only.
    Unified,
    /// v1 controller hierarchies plus a cgroup2 mount (usually `/sys/fs/cgroup/unified`).
    Hybrid,
    /// v1 controller hierarchies only.
    Legacy,
    /// Nothing usable is mounted.
    None,
}

impl fmt::Display for HostLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unified => "unified (cgroup v2)",
            Self::Hybrid => "hybrid (cgroup v1 + v2)",
            Self::Legacy => "legacy (cgroup v1)",
            Self::None => "none",
        })
    }
}

/// Which cgroup interface qexec drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Per-controller v1 hierarchies.
    V1,
    /// The unified v2 hierarchy.
    V2,
}

/// A controller qexec uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Controller {
    /// CPU bandwidth (`cpu`).
    Cpu,
    /// CPU accounting (`cpuacct`, v1 only; v2 accounts CPU in every cgroup).
    Cpuacct,
    /// Memory (`memory`).
    Memory,
    /// Block IO (`io` on v2, `blkio` on v1).
    Io,
    /// Number of tasks (`pids`).
    Pids,
    /// Freezing (`freezer`, v1 only; v2 has `cgroup.freeze` in every cgroup).
    Freezer,
}

impl Controller {
    /// The controllers qexec uses on v1.
    pub const V1: [Self; 6] = [
        Self::Cpu,
        Self::Cpuacct,
        Self::Memory,
        Self::Io,
        Self::Pids,
        Self::Freezer,
    ];
    /// The controllers qexec enables on v2.
    pub const V2: [Self; 4] = [Self::Cpu, Self::Memory, Self::Io, Self::Pids];

    /// Its name in a v1 mount's options.
    pub fn v1_name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cpuacct => "cpuacct",
            Self::Memory => "memory",
            Self::Io => "blkio",
            Self::Pids => "pids",
            Self::Freezer => "freezer",
        }
    }

    /// Its name in v2 `cgroup.controllers`.
    pub fn v2_name(self) -> &'static str {
        match self {
            Self::Io => "io",
            other => other.v1_name(),
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.v1_name())
    }
}

/// Whether one controller can be used, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerStatus {
    /// The controller.
    pub controller: Controller,
    /// `None` when usable, else why not.
    pub unusable: Option<String>,
}

/// How [`JobCgroup::kill_all`] empties a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KillMethod {
    /// v2 `cgroup.kill`.
    CgroupKill,
    /// Freeze, SIGKILL every pid, thaw, until empty (v2 `cgroup.freeze`, v1 freezer).
    FreezeAndKill,
    /// SIGKILL every pid until empty (no freezer: a racing fork may need more rounds).
    KillLoop,
}

/// What cgroup support the host offers qexec; printed in the start-up log and
/// returned by the library's capabilities query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupCapabilities {
    /// What is mounted.
    pub host: HostLayout,
    /// The interface qexec uses, `None` when cgroups are unavailable.
    pub version: Option<CgroupVersion>,
    /// Why cgroups are unavailable, when they are.
    pub unavailable: Option<String>,
    /// Where qexec's job cgroups live (one directory per hierarchy).
    pub subtree: Vec<PathBuf>,
    /// Each controller qexec would use.
    pub controllers: Vec<ControllerStatus>,
    /// How jobs are killed.
    pub kill: Option<KillMethod>,
}

impl CgroupCapabilities {
    /// True when `controller` can be used.
    pub fn usable(&self, controller: Controller) -> bool {
        self.controllers
            .iter()
            .any(|c| c.controller == controller && c.unusable.is_none())
    }

    fn reason(&self, controller: Controller) -> String {
        if let Some(r) = &self.unavailable {
            return format!("cgroups are unavailable: {r}");
        }
        self.controllers
            .iter()
            .find(|c| c.controller == controller)
            .and_then(|c| c.unusable.clone())
            .unwrap_or_else(|| format!("the {controller} controller is not mounted"))
    }
}

impl fmt::Display for CgroupCapabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cgroup layout {}", self.host)?;
        if let Some(r) = &self.unavailable {
            return write!(f, "; unavailable: {r}");
        }
        match self.version {
            Some(CgroupVersion::V1) => f.write_str(", using v1")?,
            Some(CgroupVersion::V2) => f.write_str(", using v2")?,
            None => {}
        }
        for c in &self.controllers {
            let name = match self.version {
                Some(CgroupVersion::V2) => c.controller.v2_name(),
                _ => c.controller.v1_name(),
            };
            match &c.unusable {
                None => write!(f, "; {name} yes")?,
                Some(r) => write!(f, "; {name} no ({r})")?,
            }
        }
        if let Some(k) = self.kill {
            write!(f, "; kill by {k:?}")?;
        }
        Ok(())
    }
}

/// A failure of a cgroup operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    /// cgroups cannot be used at all on this host.
    #[error(
        "cgroups are unavailable: {reason}; jobs can run without limits, or run qexecd as \
         root on a host with cgroups mounted"
    )]
    Unavailable {
        /// Why.
        reason: String,
    },
    /// A cgroupfs/procfs/sysfs file operation failed.
    #[error("failed to {action} {path}: {source}")]
    Io {
        /// What was attempted ("read", "write", "create", "remove", ...).
        action: &'static str,
        /// On which file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A job cgroup name that is not one path component.
    #[error("invalid cgroup name {name:?}: use letters, digits, '-', '_' or '.' only")]
    InvalidName {
        /// The rejected name.
        name: String,
    },
    /// The job's cgroup already exists.
    #[error("cgroup {path} already exists; is a job with this id still running?")]
    AlreadyExists {
        /// Its path.
        path: PathBuf,
    },
    /// A limit needs a controller that cannot be used.
    #[error("the {controller} controller is needed for this limit but {reason}")]
    ControllerUnavailable {
        /// The controller.
        controller: Controller,
        /// Why it cannot be used.
        reason: String,
    },
    /// No block device backs a path (tmpfs, overlay, network filesystem).
    #[error(
        "no block device backs {path} (device {device}); name the disks to throttle in \
         the server configuration"
    )]
    NoBlockDevice {
        /// The path.
        path: PathBuf,
        /// Its filesystem's device number.
        device: DeviceNumber,
    },
    /// IO limits were given but no device to apply them to.
    #[error("an IO limit was requested for job cgroup {name} but no block device was given")]
    NoIoDevice {
        /// The job cgroup.
        name: String,
    },
    /// Processes stayed in a cgroup despite repeated SIGKILL rounds.
    #[error(
        "processes {remaining:?} are still in {path} after {rounds} kill rounds; they may be \
         stuck in the kernel (D state): check them and remove the cgroup by hand"
    )]
    KillIncomplete {
        /// The cgroup directory.
        path: PathBuf,
        /// Kill rounds done.
        rounds: u32,
        /// Pids still listed.
        remaining: Vec<u32>,
    },
}

/// Which limit a [`LimitError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LimitKind {
    /// `cpu_millis`.
    Cpu,
    /// `memory_bytes`.
    Memory,
    /// `io_read_bps`.
    IoReadBps,
    /// `io_write_bps`.
    IoWriteBps,
    /// `io_read_iops`.
    IoReadIops,
    /// `io_write_iops`.
    IoWriteIops,
    /// `pids`.
    Pids,
}

impl LimitKind {
    fn controller(self) -> Controller {
        match self {
            Self::Cpu => Controller::Cpu,
            Self::Memory => Controller::Memory,
            Self::Pids => Controller::Pids,
            _ => Controller::Io,
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Cpu => "cpu_millis",
            Self::Memory => "memory_bytes",
            Self::IoReadBps => "io_read_bps",
            Self::IoWriteBps => "io_write_bps",
            Self::IoReadIops => "io_read_iops",
            Self::IoWriteIops => "io_write_iops",
            Self::Pids => "pids",
        })
    }
}

/// A requested limit the server will not apply. `AboveMax` and `BelowMin` are the
/// client's fault (wire code InvalidArgument); `Unsupported` is the host's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// Above the server's maximum (never clamped).
    #[error("{limit} {requested} is above the server maximum {max}; ask for at most {max}")]
    AboveMax {
        /// Which limit.
        limit: LimitKind,
        /// Requested value.
        requested: u64,
        /// Server maximum.
        max: u64,
    },
    /// Below the smallest value the kernel can enforce.
    #[error("{limit} {requested} is below the smallest enforceable value {min}")]
    BelowMin {
        /// Which limit.
        limit: LimitKind,
        /// Requested value.
        requested: u64,
        /// Smallest value.
        min: u64,
    },
    /// The host cannot enforce this limit.
    #[error("{limit} cannot be enforced on this server: {reason}; start the job without it")]
    Unsupported {
        /// Which limit.
        limit: LimitKind,
        /// Why.
        reason: String,
    },
}

/// One stale cgroup [`Cgroups::cleanup_stale`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleCgroup {
    /// Its job name.
    pub name: String,
    /// Processes that were killed to empty it.
    pub killed: Vec<u32>,
}

/// Task counts of a job cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidsStats {
    /// Tasks now.
    pub current: u64,
    /// Most tasks at once, when the kernel reports it (`pids.peak`, Linux 6.12+ on v1).
    pub peak: Option<u64>,
    /// Times a fork was refused by the limit (`pids.events` `max`).
    pub limit_hits: u64,
}

/// One controller's files in a job's cgroup directory: one small type per controller
/// implements it, in `v1` and in `v2` (each layout names its files differently).
trait ControllerFiles: fmt::Debug + Sync {
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
        (LimitKind::Memory, l.memory_bytes, max.memory_bytes, 1),
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
fn check_name(name: &str) -> Result<(), CgroupError> {
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

#[derive(Debug)]
enum Inner {
    V1(v1::Job),
    V2(v2::Job),
}

/// The cgroup(s) of one job: one directory on v2, one per controller on v1.
///
/// Dropping it without [`remove`](Self::remove) kills what is left in it and removes
/// it, as a last resort.
#[derive(Debug)]
pub struct JobCgroup {
    name: String,
    inner: Inner,
    procs: Vec<File>,
    removed: bool,
}

impl JobCgroup {
    /// The job name it was created with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its directories (one per hierarchy).
    pub fn paths(&self) -> Vec<PathBuf> {
        match &self.inner {
            Inner::V1(j) => j.dirs(),
            Inner::V2(j) => vec![j.dir().to_owned()],
        }
    }

    fn open_procs(&self) -> Result<Vec<File>, CgroupError> {
        self.paths()
            .into_iter()
            .map(|d| {
                let path = d.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    // Tempdir fixtures have no kernel-made cgroup.procs.
                    .create(cfg!(test))
                    .truncate(false)
                    .open(&path)
                    .map_err(|source| CgroupError::Io {
                        action: "open",
                        path,
                        source,
                    })
            })
            .collect()
    }

    /// `cgroup.procs` files opened for writing (close-on-exec), one per hierarchy.
    /// The spawner writes `0` to each in the child before exec (one `write(2)` each,
    /// async-signal-safe), so the job's program never runs outside its cgroup.
    pub fn procs_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.procs.iter().map(|f| f.as_fd()).collect()
    }

    /// Closes the fds of [`procs_fds`](Self::procs_fds) once the job was spawned.
    pub fn release_procs_fds(&mut self) {
        self.procs.clear();
    }

    /// Moves process `pid` (and, on v2, all its threads) into the job's cgroup(s).
    pub fn attach(&self, pid: u32) -> Result<(), CgroupError> {
        for dir in self.paths() {
            fs::write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Every process in the job's cgroup (and any cgroup the job made below it).
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut all = BTreeSet::new();
        for dir in self.paths() {
            collect_pids(&dir, &mut all)?;
        }
        Ok(all.into_iter().collect())
    }

    /// Sends `signal` to every process of the job; returns how many were signalled.
    /// A process forking at that moment may miss it: use [`kill_all`](Self::kill_all)
    /// for a stop that must not miss any.
    pub fn signal_all(&self, signal: nix::sys::signal::Signal) -> Result<usize, CgroupError> {
        let pids = self.pids()?;
        Ok(pids.iter().filter(|&&p| send(p, signal)).count())
    }

    /// Kills every process of the job and waits until the cgroup is empty: v2
    /// `cgroup.kill` where present, else freeze → SIGKILL every pid → thaw, repeated
    /// until empty (bounded; [`CgroupError::KillIncomplete`] past that). Blocking:
    /// call it from a blocking thread.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        match &self.inner {
            Inner::V1(j) => j.kill_all(),
            Inner::V2(j) => j.kill_all(),
        }
    }

    /// Resource usage so far (what the kernel reports; `None` where not measured).
    pub fn usage(&self) -> Result<ResourceUsage, CgroupError> {
        match &self.inner {
            Inner::V1(j) => j.usage(),
            Inner::V2(j) => j.usage(),
        }
    }

    /// True when the kernel's OOM killer killed a process of the job.
    pub fn oom_killed(&self) -> Result<bool, CgroupError> {
        match &self.inner {
            Inner::V1(j) => j.oom_killed(),
            Inner::V2(j) => j.oom_killed(),
        }
    }

    /// Task counts, `None` without the pids controller.
    pub fn pids_stats(&self) -> Result<Option<PidsStats>, CgroupError> {
        let dir = match &self.inner {
            Inner::V1(j) => j.dir_of(Controller::Pids),
            Inner::V2(j) => j.has(Controller::Pids).then(|| j.dir().to_owned()),
        };
        let Some(dir) = dir else { return Ok(None) };
        let current = parse::single(&fs::read(&dir.join("pids.current"))?).unwrap_or(0);
        let peak = fs::read_optional(&dir.join("pids.peak"))?.and_then(|s| parse::single(&s));
        let limit_hits = fs::read_optional(&dir.join("pids.events"))?
            .and_then(|s| parse::keyed(&s, "max"))
            .unwrap_or(0);
        Ok(Some(PidsStats {
            current,
            peak,
            limit_hits,
        }))
    }

    /// Removes the job's cgroup directories (and any the job made below them). Call it
    /// after the job ended; it fails while processes remain. Idempotent.
    pub fn remove(&mut self) -> Result<(), CgroupError> {
        if self.removed {
            return Ok(());
        }
        self.procs.clear();
        for dir in self.paths() {
            rmdir_tree(&dir)?;
        }
        self.removed = true;
        Ok(())
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        if self.remove().is_ok() {
            return;
        }
        // Last resort: something is still running in it.
        if let Err(e) = self.kill_all() {
            tracing::warn!(cgroup = %self.name, error = %e, "killing a dropped job cgroup");
        }
        if let Err(e) = self.remove() {
            tracing::warn!(cgroup = %self.name, error = %e, "removing a dropped job cgroup");
        }
    }
}

/// Pids in `dir/cgroup.procs` and in every cgroup below it.
fn collect_pids(dir: &Path, out: &mut BTreeSet<u32>) -> Result<(), CgroupError> {
    match fs::read_optional(&dir.join("cgroup.procs"))? {
        Some(text) => out.extend(parse::pids(&text)),
        None => return Ok(()),
    }
    for child in fs::child_dirs(dir)? {
        collect_pids(&child, out)?;
    }
    Ok(())
}

/// Removes `dir` after every cgroup below it, deepest first.
fn rmdir_tree(dir: &Path) -> Result<(), CgroupError> {
    for child in fs::child_dirs(dir)? {
        rmdir_tree(&child)?;
    }
    fs::rmdir(dir)
}

/// Sends `signal` to `pid`; false when it is already gone.
fn send(pid: u32, signal: nix::sys::signal::Signal) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal).is_ok()
}

/// Polls `done` with a growing pause (1 ms .. 20 ms) until it holds or `timeout`
/// passes; returns whether it held. Used only where the kernel offers no event to wait
/// on without extra machinery (a cgroup emptying after SIGKILL, a freeze settling).
fn wait_for(
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
fn freeze_kill_loop(
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

#[cfg(test)]
mod tests;
