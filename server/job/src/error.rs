//! The library's typed errors.

use crate::sandbox::SandboxConfigError;
use std::path::PathBuf;

use qexec_protocol::{JobId, SpawnFailure};

#[cfg(doc)]
use crate::JobManager;
use crate::cgroup::CgroupError;
use crate::seccomp::SeccompError;

/// Failure to create a [`JobManager`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {
    /// The state directory could not be prepared.
    #[error(
        "cannot prepare the job state directory {}: {source}; check that it is writable or choose another one",
        path.display()
    )]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The job seccomp filter cannot be used (architecture or kernel).
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// The sandbox configuration cannot be used.
    #[error("invalid job sandbox configuration: {0}")]
    Sandbox(#[from] SandboxConfigError),
    /// The job database cannot be created or written at all (a damaged one is moved
    /// aside instead, spec: QX-DUR-6).
    #[error("{0}; check that the state directory is writable or choose another one")]
    Store(#[from] crate::StoreError),
    /// An internal task failed.
    #[error("internal failure while preparing the job manager: {message}")]
    Internal {
        /// Details.
        message: String,
    },
}

/// Failure to start a job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The program could not be started.
    #[error("{message}")]
    Spawn {
        /// Which failure.
        failure: SpawnFailure,
        /// Details (for a recorded failure, ending with the job id).
        message: String,
        /// The job recorded in state `FailedToStart` for it, when one was
        /// (spec: QX-DUR-5).
        job: Option<JobId>,
    },
    /// As many jobs run as the server allows.
    #[error("too many jobs: {max} are running, the server's maximum; wait for one to end")]
    TooManyJobs {
        /// The maximum.
        max: usize,
    },
    /// A requested limit is above the server's maximum.
    #[error("limit {field} = {requested} is above the server's maximum {max}; ask for less")]
    InvalidLimits {
        /// The limit's field name in `Limits`.
        field: &'static str,
        /// What was asked.
        requested: u64,
        /// The server's maximum.
        max: u64,
    },
    /// A requested limit is below the smallest value the kernel can enforce.
    #[error(
        "limit {field} = {requested} is below the smallest enforceable value {min}; ask for more"
    )]
    LimitTooSmall {
        /// The limit's field name in `Limits`.
        field: &'static str,
        /// What was asked.
        requested: u64,
        /// The smallest value.
        min: u64,
    },
    /// A limit was requested that this server cannot enforce (resource limits need
    /// cgroups, and the needed controller must be usable).
    #[error(
        "resource limits need cgroups: {field} cannot be enforced on this server ({reason}); start the job without it"
    )]
    LimitUnavailable {
        /// The limit's field name in `Limits`.
        field: &'static str,
        /// Why it cannot be enforced.
        reason: String,
    },
    /// The job's cgroup could not be created or prepared.
    #[error("cannot set up the cgroup of job {id}: {source}")]
    Cgroup {
        /// The job that was being started.
        id: JobId,
        /// Why.
        #[source]
        source: CgroupError,
    },
    /// The job's state (output log) could not be created.
    #[error(
        "cannot create the job's output log at {}: {source}; check the state directory",
        path.display()
    )]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The manager is shutting down.
    #[error("the job manager is shutting down; no new jobs are started")]
    ShuttingDown,
    /// The job would run as host root (the sandbox is not active and no job user is
    /// configured) and its caller may not do that. spec: QX-SBX-13
    #[error(
        "refused: this job would run as root on the host because the job sandbox is not \
         active ({reason}); ask an admin, or have the operator fix the sandbox, set \
         --job-user, or accept the risk with --insecure-root-jobs"
    )]
    HostRootRefused {
        /// Why the sandbox is not active.
        reason: String,
    },
    /// Every host uid slot of the sandbox is in use.
    #[error("{message}")]
    NoUidSlot {
        /// What to do.
        message: String,
    },
    /// An internal step failed.
    #[error("internal failure while starting a job ({what}): {message}")]
    Internal {
        /// The step.
        what: &'static str,
        /// Details.
        message: String,
    },
}

impl StartError {
    /// The wire-level spawn failure this maps to, if it is one.
    pub fn spawn_failure(&self) -> Option<SpawnFailure> {
        match self {
            Self::Spawn { failure, .. } => Some(*failure),
            Self::TooManyJobs { .. } | Self::NoUidSlot { .. } => Some(SpawnFailure::TooManyJobs),
            // spec: QX-MSG-TYPE-5 (`Setup`: limits or isolation could not be set up)
            Self::LimitUnavailable { .. } | Self::Cgroup { .. } => Some(SpawnFailure::Setup),
            _ => None,
        }
    }
}

/// Failure of an operation on an existing job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// No such job.
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The job's output log could not be read.
    #[error("cannot read the output log of job {id} at {}: {source}", path.display())]
    Output {
        /// The job.
        id: JobId,
        /// The log file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing to the job's stdin failed (EPIPE: the job closed its stdin or ended).
    #[error("cannot write to the stdin of job {id}: {source}")]
    Stdin {
        /// The job.
        id: JobId,
        /// Why.
        source: std::io::Error,
    },
    /// Not a signal number.
    #[error("cannot send signal {signal} to job {id}: signals are numbered 1 to 64")]
    InvalidSignal {
        /// The job.
        id: JobId,
        /// The number given.
        signal: i32,
    },
    /// Sending the signal failed.
    #[error("cannot send signal {signal} to job {id}: {source}")]
    Signal {
        /// The job.
        id: JobId,
        /// The signal.
        signal: i32,
        /// Why.
        source: std::io::Error,
    },
    /// Setting the window size of the job's terminal failed.
    #[error("cannot resize the terminal of job {id} to {rows}x{cols}: {source}")]
    Resize {
        /// The job.
        id: JobId,
        /// Rows asked for.
        rows: u16,
        /// Columns asked for.
        cols: u16,
        /// Why.
        source: std::io::Error,
    },
}
