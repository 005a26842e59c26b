//! The job library: start, follow, stop and report Linux processes. No network code.
//!
//! API contract (shared by the service, the CLI demo and the tests):
//! - [`JobManager::new`] prepares the state directory (and, later, cgroups).
//! - [`JobManager::start`] runs argv directly (no shell) and returns at once with the
//!   job id and, if asked, a stdin writer.
//! - [`JobManager::follow`] returns a [`Follower`] that yields the job's output from a
//!   combined-output byte offset, then the final status.
//! - [`JobManager::stop`] sends SIGTERM to every process of the job, waits the grace
//!   period, then SIGKILLs what remains; stopping a finished job returns its status.
//! - Dropping or [`JobManager::shutdown`] stops every running job.

mod output;
mod init;
mod namespace;
pub(crate) mod spawn;

use std::path::PathBuf;
use std::time::Duration;

use qexec_protocol::{JobId, JobStatus, Limits, OutputStream, SpawnFailure, StopReason};

/// Server-side settings of a [`JobManager`].
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Where per-job output logs live. Default: `/var/lib/qexec` for root,
    /// `$XDG_STATE_HOME/qexec` (or `~/.local/state/qexec`) otherwise.
    pub state_dir: PathBuf,
    /// Maximum number of jobs running at once.
    pub max_running_jobs: usize,
    /// Maximum combined output bytes kept per job; past it the job is stopped with
    /// `StopReason::OutputLimit` and `output_truncated` is set.
    pub output_cap: u64,
    /// Grace period used when a stop does not give one.
    pub default_grace: Duration,
    /// Limits applied when a request leaves one unset.
    pub default_limits: Limits,
    /// Largest limits a request may ask for; above them a start is refused.
    pub max_limits: Limits,
}

impl ManagerConfig {
    /// Defaults for a state directory.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            max_running_jobs: 1024,
            output_cap: 8 << 30,
            default_grace: Duration::from_secs(5),
            default_limits: Limits::default(),
            max_limits: Limits::default(),
        }
    }
}

/// What one start asks for.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Program and arguments, raw bytes.
    pub argv: Vec<Vec<u8>>,
    /// The whole environment (a default `PATH` is added if absent).
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// Working directory (`/` when `None`).
    pub cwd: Option<PathBuf>,
    /// Give the job a stdin pipe (else `/dev/null`).
    pub stdin: bool,
    /// Wall-clock timeout.
    pub timeout: Option<Duration>,
    /// Identity of whoever started it.
    pub owner: String,
    /// Requested limits.
    pub limits: Limits,
}

/// What the host offers the job library (reported at start-up and on request).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {}

/// A started job.
#[derive(Debug)]
pub struct StartedJob {
    /// Its id.
    pub id: JobId,
    /// Host pid of its first process.
    pub pid: u32,
    /// Writer for its stdin, when the spec asked for one.
    pub stdin: Option<JobStdin>,
}

/// Writer to a job's standard input. Dropping it (or [`JobStdin::close`]) sends EOF.
#[derive(Debug)]
pub struct JobStdin {}

/// One event of a [`Follower`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    /// Output bytes starting at combined offset `offset`.
    Data {
        /// Which stream wrote them.
        stream: OutputStream,
        /// Combined-output offset of `data[0]`.
        offset: u64,
        /// The bytes.
        data: bytes::Bytes,
    },
    /// The job ended and every byte was delivered.
    End(Box<JobStatus>),
}

/// A reader of one job's output, at its own pace.
#[derive(Debug)]
pub struct Follower {}

/// The job manager. Cheap to clone (all clones share one set of jobs).
#[derive(Debug, Clone)]
pub struct JobManager {}

impl JobManager {
    /// Prepares the state directory and probes the host (cgroups, namespaces).
    pub async fn new(_config: ManagerConfig) -> Result<Self, ManagerError> {
        todo!()
    }

    /// What the host offers (cgroup layout, isolation).
    pub fn capabilities(&self) -> Capabilities {
        todo!()
    }

    /// Starts a job; returns once its program was exec'd or failed to start.
    pub async fn start(&self, _spec: JobSpec) -> Result<StartedJob, StartError> {
        todo!()
    }

    /// Stops a job: SIGTERM to all its processes, `grace` (or the default), then SIGKILL.
    /// Returns the final status; stopping a finished job returns its status unchanged.
    pub async fn stop(
        &self,
        _id: JobId,
        _grace: Option<Duration>,
        _reason: StopReason,
    ) -> Result<JobStatus, JobError> {
        todo!()
    }

    /// Sends a signal to the job's main program.
    pub fn signal(&self, _id: JobId, _signal: i32) -> Result<JobStatus, JobError> {
        todo!()
    }

    /// The job's current status.
    pub fn status(&self, _id: JobId) -> Result<JobStatus, JobError> {
        todo!()
    }

    /// Every job the manager knows, oldest first.
    pub fn list(&self) -> Vec<JobStatus> {
        todo!()
    }

    /// Follows the job's combined output from byte `from`.
    pub fn follow(&self, _id: JobId, _from: u64) -> Result<Follower, JobError> {
        todo!()
    }

    /// Waits until the job has ended and returns its final status.
    pub async fn wait(&self, _id: JobId) -> Result<JobStatus, JobError> {
        todo!()
    }

    /// Stops every running job (reason `Shutdown`) and waits for them to end.
    pub async fn shutdown(&self) {
        todo!()
    }
}

impl Follower {
    /// The next event; `Ok(None)` never happens before `End` was returned.
    pub async fn next(&mut self) -> Result<Option<FollowEvent>, JobError> {
        todo!()
    }
}

impl JobStdin {
    /// Writes all of `data` to the job's stdin (waits while the pipe is full).
    pub async fn write_all(&mut self, _data: &[u8]) -> Result<(), JobError> {
        todo!()
    }

    /// Closes the job's stdin (EOF).
    pub fn close(self) {}
}

/// Failure to create a [`JobManager`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagerError {}

/// Failure to start a job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The program could not be started.
    #[error("{message}")]
    Spawn {
        /// Which failure.
        failure: SpawnFailure,
        /// Details.
        message: String,
    },
}

/// Failure of an operation on an existing job.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// No such job.
    #[error("job {0} not found")]
    NotFound(JobId),
}
