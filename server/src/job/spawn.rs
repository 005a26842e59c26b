//! Starting a job's process tree: fork/clone, child set-up, exec (owned by the spawn
//! work; this file holds the agreed interface).
//!
//! The manager calls [`spawn`] with everything prepared; the child side runs only
//! async-signal-safe code. Cgroup placement happens in the child before exec by
//! writing `0` to each file in [`SpawnConfig::cgroup_procs`].

use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;

use qexec_protocol::{SpawnFailure, Termination};

/// Namespace isolation settings for one job.
#[derive(Debug, Clone)]
pub(crate) struct IsolationConfig {
    /// Hostname inside the job's UTS namespace.
    pub(crate) hostname: String,
}

/// Everything one spawn needs.
#[derive(Debug)]
pub(crate) struct SpawnConfig<'a> {
    /// Program and arguments; `argv[0]` is resolved against `PATH` in `env` unless it
    /// contains a `/`.
    pub(crate) argv: &'a [Vec<u8>],
    /// The whole environment.
    pub(crate) env: &'a [(Vec<u8>, Vec<u8>)],
    /// Working directory.
    pub(crate) cwd: &'a Path,
    /// Create a stdin pipe (else stdin is /dev/null).
    pub(crate) stdin: bool,
    /// New PID/mount/net/UTS/IPC namespaces with an init as PID 1, when set.
    pub(crate) isolation: Option<&'a IsolationConfig>,
    /// Open `cgroup.procs` files the child joins before exec.
    pub(crate) cgroup_procs: &'a [BorrowedFd<'a>],
    /// Run the job as this uid/gid (no supplementary groups), when set.
    pub(crate) credentials: Option<(u32, u32)>,
}

/// A spawned job process.
#[derive(Debug)]
pub(crate) struct SpawnedChild {
    /// Host pid of the first process (the init when isolated).
    pub(crate) pid: u32,
    /// pidfd of that process: readable when it exits.
    pub(crate) pidfd: OwnedFd,
    /// Write end of the stdin pipe (non-blocking, close-on-exec).
    pub(crate) stdin: Option<OwnedFd>,
    /// Read end of the stdout pipe (non-blocking, close-on-exec).
    pub(crate) stdout: OwnedFd,
    /// Read end of the stderr pipe (non-blocking, close-on-exec).
    pub(crate) stderr: OwnedFd,
}

/// A typed spawn failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct SpawnError {
    pub(crate) failure: SpawnFailure,
    pub(crate) message: String,
}

/// Starts a job. Returns once the target program was exec'd (or failed to be).
pub(crate) fn spawn(_config: &SpawnConfig<'_>) -> Result<SpawnedChild, SpawnError> {
    todo!("spawn")
}

/// Reaps the process behind `pidfd` if it has exited (non-blocking).
pub(crate) fn try_reap(_pidfd: BorrowedFd<'_>) -> std::io::Result<Option<Termination>> {
    todo!("try_reap")
}

/// Sends `signal` to the process behind `pidfd` (no pid-reuse race).
pub(crate) fn send_signal(_pidfd: BorrowedFd<'_>, _signal: i32) -> std::io::Result<()> {
    todo!("send_signal")
}
