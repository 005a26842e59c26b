//! The job library: start, follow, stop and report Linux processes. No network code.
//!
//! API contract (shared by the service, the CLI demo and the tests):
//! - [`JobManager::new`] prepares the state directory and the cgroup subtree
//!   (removing stale job cgroups a crashed server left).
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
//! - Isolation ([`ManagerConfig::isolation`], on by default when the host allows it):
//!   each job runs in its own PID, mount, network, UTS and IPC namespaces under an
//!   init (the `spawn` module); the status' pid is the init's host pid.
//! - Cgroups ([`ManagerConfig::cgroups`], on by default when the host allows it):
//!   every job gets its own cgroup, created before the spawn and joined by the child
//!   before it executes anything, with the job's effective limits; it is used for
//!   accounting ([`JobStatus::usage`], `oom_killed`), to stop the job as a whole and
//!   is removed when the job ended. Without cgroups a start that asks for limits is
//!   refused ([`StartError::LimitUnavailable`]).
//! - Stop: SIGTERM to every process of the job, `grace`, then SIGKILL (`lifecycle`
//!   module docs). "Every process" means every process of the job's cgroup (the
//!   primary mechanism; a `setsid` or double-fork does not escape it), plus, isolated,
//!   every process of the job's PID namespace and, not isolated, the job's process
//!   group. The job has ended when its main process was reaped and its cgroup is
//!   empty.
//! - A job has ended when its main process was reaped and its output pipes were
//!   closed, or a bounded drain after the main process' exit ran out
//!   ([`ManagerConfig::output_drain`]); what is left of the job (its cgroup) is then
//!   killed, so no daemonised grandchild outlives its job.
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

use crate::cgroup::{CgroupCapabilities, CgroupError, DeviceNumber, HostLayout};
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
    /// Run each job in its own PID, mount, network, UTS and IPC namespaces when the
    /// host allows it (root, kernel support); when it does not, jobs run without and
    /// [`Capabilities::isolation_unavailable`] says why. Default: on.
    pub isolation: bool,
    /// Put each job in its own cgroup (limits, usage, whole-job kill) when the host
    /// allows it (root, cgroups mounted); when it does not, jobs without limits still
    /// run and [`Capabilities::cgroups`] says why. Default: on.
    pub cgroups: bool,
    /// Name of the directory holding the job cgroups in each hierarchy. Default
    /// [`crate::cgroup::DEFAULT_SUBTREE`] (`qexec`). Job cgroups found there at start-up
    /// are stale (a crashed server's): their processes are killed and they are removed.
    /// Managers using one subtree at once hold a lock on it: a manager that is not
    /// alone there skips that cleanup (and leaves the subtree in place when it goes),
    /// so it never touches the jobs of another; still, give each its own subtree.
    pub cgroup_subtree: String,
    /// Disks (whole-disk `major:minor`) IO limits apply to when no block device backs
    /// the job's working directory (tmpfs, overlay). Empty: such a start with IO
    /// limits is refused.
    pub io_devices: Vec<DeviceNumber>,
    /// Run every job's program as this `(uid, gid)` with no supplementary groups,
    /// when set. Default `None`: jobs run as the server's own user (root in the
    /// intended deployment), because the commands people send to a remote machine
    /// (package installs, device access, reading any file) often need it; namespaces
    /// and cgroups confine a job but are no security boundary against root. Set it
    /// (qexecd `--job-user nobody`) for untrusted work such as fuzzing farms. The
    /// isolated init keeps the server's identity to set up the namespaces; only the
    /// target program drops to these credentials, with `no_new_privs`.
    pub job_credentials: Option<(u32, u32)>,
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
            isolation: true,
            cgroups: true,
            cgroup_subtree: crate::cgroup::DEFAULT_SUBTREE.to_owned(),
            io_devices: Vec::new(),
            job_credentials: None,
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
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Jobs run in their own PID, mount, network, UTS and IPC namespaces under an
    /// init (issue 5).
    pub isolation: bool,
    /// Why isolation is off although the configuration asked for it.
    pub isolation_unavailable: Option<String>,
    /// The cgroup report: host layout, the interface used, each controller, the kill
    /// method, and why cgroups are unavailable when they are (`unavailable`; then
    /// jobs run without cgroups and starts asking for limits are refused). Its
    /// `Display` is the start-up log line.
    pub cgroups: CgroupCapabilities,
}

impl Default for Capabilities {
    /// Nothing probed yet: no isolation, no cgroups.
    fn default() -> Self {
        Self {
            isolation: false,
            isolation_unavailable: None,
            cgroups: CgroupCapabilities {
                host: HostLayout::None,
                version: None,
                unavailable: Some("not probed".to_owned()),
                subtree: Vec::new(),
                controllers: Vec::new(),
                kill: None,
            },
        }
    }
}

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
        self.inner.shared.capabilities.clone()
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
        // spec: QX-MSG-CTRL-2 (stopping an ended job answers its status unchanged)
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
}
