//! Errors of the cgroup module.

use std::fmt;
use std::path::PathBuf;

use super::device_number::DeviceNumber;
use super::report::Controller;

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
    pub(super) fn controller(self) -> Controller {
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
