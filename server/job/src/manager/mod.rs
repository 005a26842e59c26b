//! The job manager: its public face ([`JobManager`]) and its internals — the job table
//! (`table`), the limits mapping (`limits`), the cgroup glue (`cgroups`), a start
//! (`start`), and one supervisor task per job (`supervisor`).
//!
//! # Ownership
//! [`JobManager`] is an `Arc` of a manager core holding a
//! `Shared` (config + job table) and the [`JoinSet`] of supervisor tasks.
//! Supervisors hold the `Shared`, never the core, so dropping the last manager clone
//! drops the `JoinSet`, which aborts every supervisor; a supervisor dropped before
//! its job ended SIGKILLs the job, reaps it and records `Stopped { Shutdown }`
//! ([`JobManager::shutdown`] is the graceful path:
//! SIGTERM, grace, SIGKILL). The job table is a `std::sync::Mutex`, never held
//! across an `.await`.
//!
//! # One supervisor per job
//! It owns the job's pidfd, the timeout, the `Lifecycle`, the job's cgroup and,
//! through the job's output pump, both output pipes (non-blocking, resized to 1 MiB)
//! and the `LogWriter`. The pump is a plain thread per job (`output::Pump`), so a
//! log write the kernel makes sleep (dirty-page throttling, a preempted copy) never
//! stalls a runtime worker: output moves from a pipe into the log with `splice(2)`
//! (no copy through user space, no buffer per job); past the output cap, or on a
//! file system that cannot splice, it is read into a buffer allocated on first use
//! (discarded, or appended with one write per record). The pump tells the supervisor
//! when the cap is reached and hands the `LogWriter` back once both pipes are closed.
//! A terminal job's master is read by the supervisor itself. It waits on all of them
//! at once (`tokio::select!`), on stop requests (a `Notify`), on a running cgroup
//! kill and, for v1 jobs with a memory limit, on the OOM check.
//!
//! # When a job ends
//! A job has ended when its main process was reaped **and** both output pipes were
//! closed. Other processes of the job may hold the pipes open (a daemonised
//! grandchild): once the main process was reaped, the pipes are drained for at most
//! [`ManagerConfig::output_drain`](crate::ManagerConfig::output_drain); then whatever is left of the job is SIGKILLed
//! (through its cgroup — which also catches processes that called `setsid` — and the
//! process group), a last non-blocking read takes what is already in the pipes, and
//! the pipes are closed. Output written after that is lost, and the writer sees EPIPE.
//! Then, with or without a drain, whatever is still in the job's cgroup is killed
//! (a daemonised grandchild that closed its output does not outlive the job), the
//! final usage and OOM flag are read from it, and it is removed.
//!
//! # Cgroups
//! Every job gets a cgroup when the host offers them ([`Cgroups::create`](crate::cgroup::Cgroups::create), named after
//! the job id, created before the spawn; the child joins it before it executes
//! anything). A stop sends SIGTERM to every process in it, and at the kill deadline
//! empties it with [`JobCgroup::kill_all`](crate::cgroup::JobCgroup::kill_all) on a blocking thread. On cgroup v1 there
//! is no `memory.oom.group`: while a job with a memory limit runs, the supervisor
//! checks the OOM flag every `OOM_CHECK` (v1 offers no event without an eventfd
//! registration) and when the main process exits; once set, the whole job is killed.
//! Managers sharing a cgroup subtree coordinate through a `flock` on it
//! (`SubtreeLock`): only a manager alone there cleans up stale cgroups at start or
//! removes the subtree when it goes.
//!
//! # Records and retention
//! Every job has a record in the job database (`store`, SQLite in the state
//! directory), written when it starts (or fails to start) and when it ends, by one
//! writer thread off the runtime; its output log stays a file beside it
//! (`jobs/<id>/output`). At start-up the records and logs of an earlier manager come
//! back (`recovery`); jobs that were running end as stopped by `Shutdown`. Ended jobs
//! stay listed, with their output, until a retention rule forgets them (`retention`:
//! count per owner, age, total disk budget). An ended job keeps no fd and no buffer:
//! its status (with argv) and the output index (< 16 KiB) only.

mod cgroups;
mod limits;
pub(crate) mod query;
mod recovery;
mod retention;
mod start;
pub(crate) mod store;
mod supervisor;
pub(crate) mod table;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use qexec_protocol::{JobId, JobStatus, StopReason};
use tokio::task::JoinSet;

use self::query::{ListFilter, ListPage, collect_page};
use self::table::Shared;
use crate::output::LogReader;
use crate::{
    Capabilities, Follower, JobError, JobSpec, JobStdin, ManagerConfig, ManagerError, StartError,
};

/// A started job.
#[derive(Debug)]
pub struct StartedJob {
    /// Its id.
    pub id: JobId,
    /// Host pid of its first process.
    pub pid: u32,
    /// Writer for its stdin, when the spec asked for one; a terminal job's
    /// keystrokes.
    pub stdin: Option<JobStdin>,
    /// A terminal job's window (spec: QX-TERM-7).
    pub terminal: Option<crate::JobTerminal>,
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
        start::start(&self.inner.shared, &self.inner.tasks, spec).await
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

    /// The job's owner: all an authorization needs, without building its status
    /// (no argv copy, no cgroupfs read).
    pub fn owner(&self, id: JobId) -> Result<String, JobError> {
        Ok(self.inner.shared.job(id)?.owner.clone())
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

    /// One page of the jobs `filter` selects, in sequence-number order
    /// (spec: QX-MSG-CTRL-9, QX-LIST-1).
    pub fn list_page(&self, filter: &ListFilter) -> ListPage {
        let mut jobs: Vec<_> = self
            .inner
            .shared
            .jobs()
            .into_iter()
            .filter(|j| filter.admits(j.seq, j.id, &j.owner, j.started_at_ms))
            .collect();
        if filter.newest_first {
            jobs.reverse();
        }
        collect_page(filter, jobs.into_iter().map(|j| (j.seq, j.status())))
    }

    /// How many jobs count against [`ManagerConfig::max_running_jobs`] now: the ones
    /// running and the ones being started. One short lock, no per-job work.
    pub fn running_jobs(&self) -> usize {
        self.inner.shared.running_count()
    }

    /// Follows the job's combined output from byte `from`.
    pub fn follow(&self, id: JobId, from: u64) -> Result<Follower, JobError> {
        let job = self.inner.shared.job(id)?;
        let reader = LogReader::open(&job.log, from).map_err(|source| JobError::Output {
            id,
            path: job.log.path().to_path_buf(),
            source,
        })?;
        Ok(Follower::new(job, reader))
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
        self.flush_records().await;
    }

    /// Waits until every job record written so far is committed to the job database
    /// (spec: QX-DUR-1).
    pub async fn flush_records(&self) {
        let shared = Arc::clone(&self.inner.shared);
        let _ = tokio::task::spawn_blocking(move || shared.store.flush()).await;
    }
}
