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
//!
//! # Design
//! - The manager is an `Arc`; jobs live in a table behind a `std::sync::Mutex` that
//!   is never held across an `.await`. Each job has a random 128-bit id and **one
//!   supervisor task**, owned by the manager, that waits at once on the job's pidfd,
//!   its stdout/stderr pipes, its timeout and stop requests (`manager` module docs).
//! - Output goes to an append-only file per job, `<state_dir>/jobs/<id>/output`;
//!   followers read that file at their own pace and are woken by a watch channel of
//!   the committed length, never by polling. Memory does not grow with output
//!   (`output` module docs).
//! - Stop: SIGTERM to every process of the job, `grace`, then SIGKILL (`lifecycle`
//!   module docs). Without cgroups "every process" means the job's process group /
//!   session; a process that left it with `setsid` is only reached once the job's
//!   cgroup (issue 4) or PID namespace (issue 5) is used.
//! - A job has ended when its main process was reaped and its output pipes were
//!   closed, or a bounded drain after the main process' exit ran out
//!   ([`ManagerConfig::output_drain`]); what is left of the job is then killed.
//! - Output cap: past [`ManagerConfig::output_cap`] combined bytes the job is stopped
//!   with `StopReason::OutputLimit`; bytes up to the cap are kept, the rest is read
//!   and discarded, and the status has `output_truncated = true`. `stdout_bytes` and
//!   `stderr_bytes` count the bytes kept.
//! - Retention: the last [`ManagerConfig::retain_finished`] finished jobs are kept
//!   (status and output file), older ones are forgotten and their files deleted.

mod init;
mod lifecycle;
mod manager;
mod namespace;
mod output;
pub(crate) mod spawn;
mod stdin;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use qexec_protocol::{JobId, JobStatus, Limits, OutputStream, SpawnFailure, StopReason};
use tokio::task::JoinSet;

use self::manager::{Job, Shared};
use self::output::{LogReader, ReadEvent};

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
    /// Grace period used when a stop does not give one (also for timeouts, the
    /// output cap and shutdown).
    pub default_grace: Duration,
    /// Limits applied when a request leaves one unset.
    pub default_limits: Limits,
    /// Largest limits a request may ask for; above them a start is refused.
    pub max_limits: Limits,
    /// Finished jobs kept (status and output); older ones are forgotten and their
    /// output files deleted.
    pub retain_finished: usize,
    /// How long output pipes are still read after the job's main process exited,
    /// when other processes of the job keep them open; then they are killed and the
    /// job ends.
    pub output_drain: Duration,
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
            retain_finished: 1000,
            output_drain: Duration::from_secs(1),
        }
    }

    /// The default state directory: `/var/lib/qexec` for root;
    /// `$XDG_STATE_HOME/qexec` (when set and absolute), else
    /// `$HOME/.local/state/qexec`, else `/tmp/qexec-<uid>` for other users.
    pub fn default_state_dir() -> PathBuf {
        let uid = nix::unistd::geteuid();
        if uid.is_root() {
            return PathBuf::from("/var/lib/qexec");
        }
        if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").map(PathBuf::from)
            && xdg.is_absolute()
        {
            return xdg.join("qexec");
        }
        if let Some(home) = std::env::var_os("HOME").map(PathBuf::from)
            && home.is_absolute()
        {
            return home.join(".local/state/qexec");
        }
        PathBuf::from(format!("/tmp/qexec-{uid}"))
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
pub struct JobStdin {
    job: JobId,
    pipe: tokio::net::unix::pipe::Sender,
}

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
///
/// It holds its own handle on the job's output file and a position; it never holds
/// back the job or other followers. Dropping it releases everything it held.
#[derive(Debug)]
pub struct Follower {
    job: Arc<Job>,
    reader: LogReader,
    ended: bool,
}

/// The manager core; its drop aborts every supervisor (which kills its job).
#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    tasks: Mutex<JoinSet<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Abort every supervisor: each kills and reaps its job when dropped.
        self.tasks
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .abort_all();
        self.shared.remove_all_dirs();
    }
}

/// The job manager. Cheap to clone (all clones share one set of jobs).
#[derive(Debug, Clone)]
pub struct JobManager {
    inner: Arc<Inner>,
}

impl JobManager {
    /// Prepares the state directory and probes the host (cgroups, namespaces).
    pub async fn new(config: ManagerConfig) -> Result<Self, ManagerError> {
        let shared = tokio::task::spawn_blocking(move || Shared::new(config))
            .await
            .map_err(|e| ManagerError::Internal {
                message: e.to_string(),
            })??;
        Ok(Self {
            inner: Arc::new(Inner {
                shared: Arc::new(shared),
                tasks: Mutex::new(JoinSet::new()),
            }),
        })
    }

    /// What the host offers (cgroup layout, isolation).
    pub fn capabilities(&self) -> Capabilities {
        // Seam: filled from the cgroup and namespace probes (issues 4 and 5).
        Capabilities::default()
    }

    /// Starts a job; returns once its program was exec'd or failed to start.
    pub async fn start(&self, spec: JobSpec) -> Result<StartedJob, StartError> {
        manager::start(&self.inner.shared, &self.inner.tasks, spec).await
    }

    /// Stops a job: SIGTERM to all its processes, `grace` (or the default), then SIGKILL.
    /// Returns the final status; stopping a finished job returns its status unchanged.
    /// Concurrent stops of one job all return the same final status (the first
    /// reason is recorded; the shortest grace applies).
    pub async fn stop(
        &self,
        id: JobId,
        grace: Option<Duration>,
        reason: StopReason,
    ) -> Result<JobStatus, JobError> {
        let job = self.inner.shared.job(id)?;
        let status = job.status();
        if !status.state.is_running() {
            return Ok(status);
        }
        let grace = grace.unwrap_or(self.inner.shared.config.default_grace);
        job.request_stop(reason, grace);
        job.wait().await;
        Ok(job.status())
    }

    /// Sends a signal to the job's main program. A finished job gets no signal; its
    /// status is returned unchanged.
    pub fn signal(&self, id: JobId, signal: i32) -> Result<JobStatus, JobError> {
        let job = self.inner.shared.job(id)?;
        if !(1..=64).contains(&signal) {
            return Err(JobError::InvalidSignal { id, signal });
        }
        job.signal(signal)
            .map_err(|source| JobError::Signal { id, signal, source })?;
        Ok(job.status())
    }

    /// The job's current status.
    pub fn status(&self, id: JobId) -> Result<JobStatus, JobError> {
        Ok(self.inner.shared.job(id)?.status())
    }

    /// Every job the manager knows, oldest first.
    pub fn list(&self) -> Vec<JobStatus> {
        self.inner
            .shared
            .jobs()
            .iter()
            .map(|j| j.status())
            .collect()
    }

    /// Follows the job's combined output from byte `from`.
    pub fn follow(&self, id: JobId, from: u64) -> Result<Follower, JobError> {
        let job = self.inner.shared.job(id)?;
        let reader = LogReader::open(&job.log, from).map_err(|source| JobError::Output {
            id,
            path: job.log.path().to_path_buf(),
            source,
        })?;
        Ok(Follower {
            job,
            reader,
            ended: false,
        })
    }

    /// Waits until the job has ended and returns its final status.
    pub async fn wait(&self, id: JobId) -> Result<JobStatus, JobError> {
        let job = self.inner.shared.job(id)?;
        job.wait().await;
        Ok(job.status())
    }

    /// Stops every running job (reason `Shutdown`, default grace) and waits for them
    /// to end; later starts fail with [`StartError::ShuttingDown`].
    pub async fn shutdown(&self) {
        let running = self.inner.shared.begin_shutdown();
        let grace = self.inner.shared.config.default_grace;
        for job in &running {
            job.request_stop(StopReason::Shutdown, grace);
        }
        for job in &running {
            job.wait().await;
        }
        let mut tasks = std::mem::take(
            &mut *self
                .inner
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        while tasks.join_next().await.is_some() {}
    }
}

impl Follower {
    /// The next event; `Ok(None)` never happens before `End` was returned.
    /// Cancel-safe: dropping the future loses no output.
    pub async fn next(&mut self) -> Result<Option<FollowEvent>, JobError> {
        if self.ended {
            return Ok(None);
        }
        match self.reader.next().await {
            Ok(ReadEvent::Data {
                stream,
                offset,
                data,
            }) => Ok(Some(FollowEvent::Data {
                stream,
                offset,
                data,
            })),
            Ok(ReadEvent::End) => {
                self.ended = true;
                Ok(Some(FollowEvent::End(Box::new(self.job.status()))))
            }
            Err(source) => Err(JobError::Output {
                id: self.job.id,
                path: self.job.log.path().to_path_buf(),
                source,
            }),
        }
    }
}

impl JobStdin {
    /// Writes all of `data` to the job's stdin (waits while the pipe is full).
    /// Cancel-safe in the sense that dropping the future stops writing; how much was
    /// written is then unknown.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), JobError> {
        self.write_all_impl(data).await
    }

    /// Closes the job's stdin (EOF).
    pub fn close(self) {}
}

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
        /// Details.
        message: String,
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
            Self::TooManyJobs { .. } => Some(SpawnFailure::TooManyJobs),
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
}
