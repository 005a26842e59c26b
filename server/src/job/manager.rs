//! The job manager's internals: the job table, one supervisor task per job, retention.
//!
//! # Ownership
//! [`JobManager`](super::JobManager) is an `Arc` of a manager core holding a
//! [`Shared`] (config + job table) and the [`JoinSet`] of supervisor tasks.
//! Supervisors hold the `Shared`, never the core, so dropping the last manager clone
//! drops the `JoinSet`, which aborts every supervisor; a supervisor dropped before
//! its job ended SIGKILLs the job, reaps it and records `Stopped { Shutdown }`
//! ([`JobManager::shutdown`](super::JobManager::shutdown) is the graceful path:
//! SIGTERM, grace, SIGKILL). The job table is a `std::sync::Mutex`, never held
//! across an `.await`.
//!
//! # One supervisor per job
//! It owns the job's pidfd, both output pipes (non-blocking, resized to 1 MiB), the
//! [`LogWriter`], the timeout, the [`Lifecycle`] and the job's cgroup. Output moves
//! from a pipe into the log with `splice(2)` (no copy through user space, no buffer
//! per job); past the output cap, or on a file system that cannot splice, it is read
//! into a buffer allocated on first use (discarded, or appended with one write per
//! record). It waits on all of them at once (`tokio::select!`), on stop requests (a
//! [`Notify`]), on a running cgroup kill and, for v1 jobs with a memory limit, on the
//! OOM check.
//!
//! # When a job ends
//! A job has ended when its main process was reaped **and** both output pipes were
//! closed. Other processes of the job may hold the pipes open (a daemonised
//! grandchild): once the main process was reaped, the pipes are drained for at most
//! [`ManagerConfig::output_drain`]; then whatever is left of the job is SIGKILLed
//! (through its cgroup — which also catches processes that called `setsid` — and the
//! process group), a last non-blocking read takes what is already in the pipes, and
//! the pipes are closed. Output written after that is lost, and the writer sees EPIPE.
//! Then, with or without a drain, whatever is still in the job's cgroup is killed
//! (a daemonised grandchild that closed its output does not outlive the job), the
//! final usage and OOM flag are read from it, and it is removed.
//!
//! # Cgroups
//! Every job gets a cgroup when the host offers them ([`Cgroups::create`], named after
//! the job id, created before the spawn; the child joins it before it executes
//! anything). A stop sends SIGTERM to every process in it, and at the kill deadline
//! empties it with [`JobCgroup::kill_all`] on a blocking thread. On cgroup v1 there
//! is no `memory.oom.group`: while a job with a memory limit runs, the supervisor
//! checks the OOM flag every [`OOM_CHECK`] (v1 offers no event without an eventfd
//! registration) and when the main process exits; once set, the whole job is killed.
//! Managers sharing a cgroup subtree coordinate through a `flock` on it
//! ([`SubtreeLock`]): only a manager alone there cleans up stale cgroups at start or
//! removes the subtree when it goes.
//!
//! # Retention
//! Finished jobs stay listed, with their output file, until more than
//! [`ManagerConfig::retain_finished`] jobs finished after them; then the oldest is
//! forgotten and its directory deleted. A finished job keeps no fd and no buffer:
//! its status (with argv) and the output index (< 16 KiB) only. Job directories do
//! not outlive the manager: [`JobManager::new`](super::JobManager::new) deletes those
//! left by an earlier manager and dropping the manager deletes its own.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use qexec_protocol::{
    JobId, JobState, JobStatus, Limits, OutputStream, ResourceUsage, StopReason, Termination,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::lifecycle::{Action, Lifecycle};
use super::output::{Appended, HEADER_LEN, LogShared, LogWriter, SpliceError};
use super::spawn::{self, ChildProcess, IsolationConfig, SpawnConfig};
use super::{
    Capabilities, JobError, JobSpec, JobStdin, ManagerConfig, ManagerError, StartError, StartedJob,
};
use crate::cgroup::{
    CgroupCapabilities, CgroupError, CgroupVersion, Cgroups, DeviceNumber, HostLayout, JobCgroup,
    LimitError, LimitKind, block_device_of,
};

/// Size asked for each output pipe (the unprivileged maximum by default).
const PIPE_SIZE: i32 = 1 << 20;
/// Read buffer of the copy path (the header space comes in front of it).
const READ_BUF: usize = 128 << 10;
/// Largest record moved by one splice (the pipe holds at most its size).
const SPLICE_MAX: usize = PIPE_SIZE as usize;
/// Reads per pipe in the final non-blocking drain, so a writer that never stops
/// cannot keep a job alive.
const FINAL_DRAIN_READS: usize = 64;
/// How long a dropped supervisor waits for its SIGKILLed main process to be reaped.
const DROP_REAP_WAIT_MS: u16 = 2000;
/// How often the OOM flag of a running v1 job with a memory limit is read.
const OOM_CHECK: Duration = Duration::from_millis(250);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The job table and everything supervisors need.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ManagerConfig,
    /// What the host offers, probed once at start-up.
    pub(crate) capabilities: Capabilities,
    /// The host's cgroups; `None` when turned off by configuration.
    cgroups: Option<Cgroups>,
    /// Held while this manager uses the cgroup subtree.
    subtree_lock: Option<SubtreeLock>,
    jobs_dir: PathBuf,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    jobs: HashMap<JobId, Arc<Job>>,
    running: usize,
    finished: VecDeque<JobId>,
    next_seq: u64,
    shutting_down: bool,
}

/// Mutable part of a job's status.
#[derive(Debug)]
struct RunState {
    state: JobState,
    ended_at_ms: Option<u64>,
    /// Final usage, read from the cgroup when the job ended.
    usage: ResourceUsage,
    /// Final OOM flag.
    oom_killed: bool,
}

/// One job, shared by the table, its supervisor and its followers.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: JobId,
    seq: u64,
    owner: String,
    argv: Vec<Vec<u8>>,
    limits: Limits,
    pid: u32,
    started_at_ms: u64,
    dir: PathBuf,
    pub(crate) log: Arc<LogShared>,
    run: Mutex<RunState>,
    /// A stop not yet seen by the supervisor: first reason, shortest grace.
    pending_stop: Mutex<Option<(StopReason, Duration)>>,
    stop_notify: Notify,
    /// The main process, for `signal`; `None` once the job ended.
    process: Mutex<Option<Arc<ProcessHandle>>>,
    /// The job's cgroup while it runs, for live usage; `None` once the job ended.
    cgroup: Mutex<Option<Arc<JobCgroup>>>,
}

impl Job {
    /// The job's status now.
    pub(crate) fn status(&self) -> JobStatus {
        let committed = self.log.committed();
        // The cgroup before the state: the supervisor stores the final figures before
        // it lets go of the cgroup, so a running state seen after this has its cgroup.
        let cgroup = lock(&self.cgroup).clone();
        let (state, ended_at_ms, mut usage, mut oom_killed) = {
            let run = lock(&self.run);
            (
                run.state.clone(),
                run.ended_at_ms,
                run.usage.clone(),
                run.oom_killed,
            )
        };
        if state.is_running() {
            // Live figures: a few small cgroupfs reads, no lock held meanwhile.
            if let Some(cg) = cgroup {
                (usage, oom_killed) = read_accounting(&cg, self.id);
            }
        }
        JobStatus {
            id: self.id,
            owner: self.owner.clone(),
            argv: self.argv.clone(),
            state,
            pid: Some(self.pid),
            started_at_ms: self.started_at_ms,
            ended_at_ms,
            // spec: QX-MSG-TYPE-8 (their sum is the combined output length so far)
            stdout_bytes: committed.stdout,
            stderr_bytes: committed.stderr,
            // spec: the cap (and a failing log) is visible, never silent.
            output_truncated: committed.discarded > 0,
            // spec: QX-MSG-TYPE-8 (the kernel OOM killer killed a process of the job)
            oom_killed,
            // spec: QX-MSG-TYPE-1 (the limits in force after defaults were applied)
            limits: self.limits.clone(),
            usage,
        }
    }

    fn is_running(&self) -> bool {
        lock(&self.run).state.is_running()
    }

    /// Asks the supervisor to stop the job (merged with any pending request).
    pub(crate) fn request_stop(&self, reason: StopReason, grace: Duration) {
        {
            let mut pending = lock(&self.pending_stop);
            match &mut *pending {
                Some((_, g)) => *g = (*g).min(grace),
                None => *pending = Some((reason, grace)),
            }
        }
        self.stop_notify.notify_one();
    }

    /// Sends `signal` to the main program; `Ok(false)` when it already ended.
    pub(crate) fn signal(&self, signal: i32) -> io::Result<bool> {
        let process = lock(&self.process).clone();
        let Some(p) = process else {
            return Ok(false);
        };
        let result = lock(&p.process).signal(signal);
        match result {
            Ok(()) => Ok(true),
            // Exited (perhaps reaped) but the job has not ended yet (output drain).
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until the job ended (its status is final then).
    pub(crate) async fn wait(&self) {
        self.log.wait_ended().await;
    }
}

/// The main process, shared by the supervisor (reap, stop) and `signal`.
#[derive(Debug)]
pub(crate) struct ProcessHandle {
    process: Mutex<ChildProcess>,
}

impl Shared {
    /// Prepares `<state_dir>/jobs`, deleting job directories a previous manager left.
    pub(crate) fn new(config: ManagerConfig) -> Result<Self, ManagerError> {
        let jobs_dir = config.state_dir.join("jobs");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&jobs_dir)
            .map_err(|source| ManagerError::StateDir {
                path: jobs_dir.clone(),
                source,
            })?;
        let entries = std::fs::read_dir(&jobs_dir).map_err(|source| ManagerError::StateDir {
            path: jobs_dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| n.parse::<JobId>().is_ok()) {
                let path = entry.path();
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot delete a stale job directory");
                }
            }
        }
        let mut capabilities = probe_capabilities(&config);
        let (cgroups, subtree_lock) = prepare_cgroups(&config);
        capabilities.cgroups = match &cgroups {
            Some(cg) => cg.capabilities().clone(),
            None => CgroupCapabilities {
                host: HostLayout::None,
                version: None,
                unavailable: Some("turned off by configuration (ManagerConfig::cgroups)".into()),
                subtree: Vec::new(),
                controllers: Vec::new(),
                kill: None,
            },
        };
        Ok(Self {
            config,
            capabilities,
            cgroups,
            subtree_lock,
            jobs_dir,
            table: Mutex::new(Table::default()),
        })
    }

    /// The host's cgroups in use, if any.
    pub(crate) fn cgroups(&self) -> Option<&Cgroups> {
        self.cgroups.as_ref().filter(|c| c.is_available())
    }

    /// A job by id.
    pub(crate) fn job(&self, id: JobId) -> Result<Arc<Job>, JobError> {
        lock(&self.table)
            .jobs
            .get(&id)
            .cloned()
            .ok_or(JobError::NotFound(id))
    }

    /// Every job, oldest first.
    pub(crate) fn jobs(&self) -> Vec<Arc<Job>> {
        let mut jobs: Vec<_> = lock(&self.table).jobs.values().cloned().collect();
        jobs.sort_by_key(|j| j.seq);
        jobs
    }

    /// Refuses new jobs from now on; returns the running ones.
    pub(crate) fn begin_shutdown(&self) -> Vec<Arc<Job>> {
        let mut table = lock(&self.table);
        table.shutting_down = true;
        table
            .jobs
            .values()
            .filter(|j| j.is_running())
            .cloned()
            .collect()
    }

    /// Deletes the directories of every job (the manager is going away).
    pub(crate) fn remove_all_dirs(&self) {
        let dirs: Vec<PathBuf> = lock(&self.table)
            .jobs
            .values()
            .map(|j| j.dir.clone())
            .collect();
        for dir in dirs {
            remove_dir(&dir);
        }
    }

    /// Books a running slot and a fresh id.
    fn reserve(self: &Arc<Self>) -> Result<Slot, StartError> {
        let mut table = lock(&self.table);
        if table.shutting_down {
            return Err(StartError::ShuttingDown);
        }
        let max = self.config.max_running_jobs;
        if table.running >= max {
            return Err(StartError::TooManyJobs { max });
        }
        let id = loop {
            // spec: QX-MSG-ID-1 (128 random bits)
            let id = JobId::from_u128(rand::random());
            if !table.jobs.contains_key(&id) {
                break id;
            }
        };
        table.running += 1;
        table.next_seq += 1;
        Ok(Slot {
            shared: Arc::clone(self),
            id,
            seq: table.next_seq,
            armed: true,
        })
    }

    /// Bookkeeping at a job's end: frees its slot, applies retention.
    fn job_finished(&self, id: JobId) {
        let mut forgotten = Vec::new();
        {
            let mut table = lock(&self.table);
            table.running = table.running.saturating_sub(1);
            table.finished.push_back(id);
            while table.finished.len() > self.config.retain_finished {
                let Some(old) = table.finished.pop_front() else {
                    break;
                };
                if let Some(job) = table.jobs.remove(&old) {
                    forgotten.push(job.dir.clone());
                }
            }
        }
        for dir in forgotten {
            remove_dir(&dir);
        }
    }
}

impl Drop for Shared {
    /// Every supervisor is gone (they hold this): remove the now empty subtree,
    /// unless another manager still uses it.
    fn drop(&mut self) {
        let alone = self.subtree_lock.as_ref().is_none_or(SubtreeLock::alone);
        if alone
            && let Some(cg) = self.cgroups()
            && let Err(e) = cg.remove_subtree()
        {
            tracing::debug!(error = %e, "cannot remove the job cgroup subtree");
        }
    }
}

/// Probes what the host offers and logs it.
fn probe_capabilities(config: &ManagerConfig) -> Capabilities {
    let mut caps = Capabilities::default();
    if !config.isolation {
        tracing::info!("job isolation (namespaces) is turned off by configuration");
        return caps;
    }
    match spawn::isolation_available() {
        Ok(()) => {
            caps.isolation = true;
            tracing::info!("jobs run isolated: own PID, mount, network, UTS and IPC namespaces");
        }
        Err(e) => {
            tracing::warn!(reason = %e, "job isolation is unavailable; jobs run without namespaces");
            caps.isolation_unavailable = Some(e.to_string());
        }
    }
    caps
}

fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %dir.display(), error = %e, "cannot delete a job directory");
    }
}

/// A booked running slot; given back on drop unless the job started.
#[derive(Debug)]
struct Slot {
    shared: Arc<Shared>,
    id: JobId,
    seq: u64,
    armed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            let mut table = lock(&self.shared.table);
            table.running = table.running.saturating_sub(1);
        }
    }
}

/// The limits a start runs with: the request checked against the server maximums and
/// what the host can enforce (never clamped), then completed with server defaults.
fn effective_limits(shared: &Shared, req: &Limits) -> Result<Limits, StartError> {
    let config = &shared.config;
    match &shared.cgroups {
        Some(cg) => cg
            .resolve(req, &config.default_limits, &config.max_limits)
            .map_err(limit_error),
        None => match first_limit(req) {
            // spec: a start asking for limits the server cannot enforce is refused.
            Some(field) => Err(StartError::LimitUnavailable {
                field,
                reason: "cgroups are turned off in the server configuration".into(),
            }),
            None => Ok(Limits::default()),
        },
    }
}

/// The field name of the first limit set in `l`.
fn first_limit(l: &Limits) -> Option<&'static str> {
    [
        ("cpu_millis", l.cpu_millis.is_some()),
        ("memory_bytes", l.memory_bytes.is_some()),
        ("io_read_bps", l.io_read_bps.is_some()),
        ("io_write_bps", l.io_write_bps.is_some()),
        ("io_read_iops", l.io_read_iops.is_some()),
        ("io_write_iops", l.io_write_iops.is_some()),
        ("pids", l.pids.is_some()),
    ]
    .into_iter()
    .find_map(|(name, set)| set.then_some(name))
}

fn limit_field(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::Cpu => "cpu_millis",
        LimitKind::Memory => "memory_bytes",
        LimitKind::IoReadBps => "io_read_bps",
        LimitKind::IoWriteBps => "io_write_bps",
        LimitKind::IoReadIops => "io_read_iops",
        LimitKind::IoWriteIops => "io_write_iops",
        LimitKind::Pids => "pids",
    }
}

fn limit_error(e: LimitError) -> StartError {
    match e {
        // spec: QX-ERR-5 (over a server maximum: refused, never clamped)
        LimitError::AboveMax {
            limit,
            requested,
            max,
        } => StartError::InvalidLimits {
            field: limit_field(limit),
            requested,
            max,
        },
        LimitError::BelowMin {
            limit,
            requested,
            min,
        } => StartError::LimitTooSmall {
            field: limit_field(limit),
            requested,
            min,
        },
        LimitError::Unsupported { limit, reason } => StartError::LimitUnavailable {
            field: limit_field(limit),
            reason,
        },
    }
}

/// Detects the host's cgroups (unless turned off), logs what it found and removes the
/// job cgroups a previous server left.
fn prepare_cgroups(config: &ManagerConfig) -> (Option<Cgroups>, Option<SubtreeLock>) {
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
            "another job manager uses this cgroup subtree; stale cgroups are not cleaned up (give each manager its own ManagerConfig::cgroup_subtree)"
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
struct SubtreeLock(Flock<std::fs::File>);

impl SubtreeLock {
    /// Locks `dir`; `alone` is true when the lock was exclusive (no other manager).
    /// Without a lock (it cannot be taken) the manager behaves as if alone.
    fn acquire(dir: Option<&Path>) -> (Option<Self>, bool) {
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
    fn alone(&self) -> bool {
        self.0.relock(FlockArg::LockExclusiveNonblock).is_ok()
    }
}

/// Creates the cgroup of job `id` with `limits`; IO limits apply to the disk behind
/// `cwd`, else to the configured disks.
fn create_cgroup(
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
fn read_accounting(cg: &JobCgroup, id: JobId) -> (ResourceUsage, bool) {
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

/// Starts a job and its supervisor (owned by `tasks`).
pub(crate) async fn start(
    shared: &Arc<Shared>,
    tasks: &Mutex<JoinSet<()>>,
    spec: JobSpec,
) -> Result<StartedJob, StartError> {
    let limits = effective_limits(shared, &spec.limits)?;
    let mut slot = shared.reserve()?;
    let id = slot.id;
    let dir = shared.jobs_dir.join(id.to_string());
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|source| StartError::Io {
            path: dir.clone(),
            source,
        })?;
    let output = dir.join("output");
    let log = LogWriter::create(output.clone(), shared.config.output_cap).map_err(|source| {
        remove_dir(&dir);
        StartError::Io {
            path: output,
            source,
        }
    })?;

    let mut env = spec.env;
    if !env.iter().any(|(k, _)| k == b"PATH") {
        env.push((b"PATH".to_vec(), spawn::DEFAULT_PATH.as_bytes().to_vec()));
    }
    let cwd = spec.cwd.unwrap_or_else(|| PathBuf::from("/"));
    let argv = spec.argv;
    let want_stdin = spec.stdin;
    let isolation = shared
        .capabilities
        .isolation
        .then(|| IsolationConfig::for_job(&id));
    let blocking_shared = Arc::clone(shared);
    let job_limits = limits.clone();
    // Creating the cgroup and spawn() block (cgroupfs writes; spawn until exec or its
    // failure); keep them off the runtime threads.
    let (argv, spawned) = tokio::task::spawn_blocking(move || {
        let shared = blocking_shared;
        let cgroups = shared.cgroups();
        // spec: the job is in its cgroup before it executes anything (the child writes
        // to these fds before exec), so it never runs unconstrained.
        let mut cgroup = match cgroups
            .map(|c| create_cgroup(c, &shared.config, id, &job_limits, &cwd))
            .transpose()
        {
            Ok(cgroup) => cgroup,
            Err(source) => return (argv, Err(StartError::Cgroup { id, source })),
        };
        let procs = cgroup.as_ref().map(JobCgroup::procs_fds).unwrap_or_default();
        let config = SpawnConfig {
            argv: &argv,
            env: &env,
            cwd: &cwd,
            stdin: want_stdin,
            isolation: isolation.as_ref(),
            cgroup_procs: &procs,
            credentials: shared.config.job_credentials,
        };
        let r = spawn::spawn(&config);
        drop(procs);
        let r = match r {
            Ok(child) => {
                if let Some(cg) = &mut cgroup {
                    cg.release_procs_fds();
                }
                Ok((child, cgroup))
            }
            Err(e) => {
                if let Some(mut cg) = cgroup
                    && let Err(err) = cg.remove()
                {
                    tracing::warn!(job = %id, error = %err, "cannot remove the cgroup of a job that failed to start");
                }
                Err(StartError::Spawn {
                    failure: e.failure,
                    message: e.message,
                })
            }
        };
        (argv, r)
    })
    .await
    .map_err(|e| StartError::Internal {
        what: "spawn task",
        message: e.to_string(),
    })?;
    let (child, cgroup) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => {
            remove_dir(&dir);
            return Err(e);
        }
    };
    let cgroup = cgroup.map(Arc::new);
    let oom_check = cgroup.as_ref().and_then(|_| {
        let v1 = shared.cgroups().and_then(Cgroups::layout) == Some(CgroupVersion::V1);
        (v1 && limits.memory_bytes.is_some()).then(|| {
            let mut tick = tokio::time::interval(OOM_CHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        })
    });
    let started_at_ms = now_ms();
    let pid = child.pid;
    // The reactor watches a duplicate of the pidfd (same open file description), so
    // the process itself stays shared with `signal`.
    let watched_pidfd = child.process.as_fd().try_clone_to_owned();
    let handle = Arc::new(ProcessHandle {
        process: Mutex::new(child.process),
    });
    let job = Arc::new(Job {
        id,
        seq: slot.seq,
        owner: spec.owner,
        argv,
        limits,
        pid,
        started_at_ms,
        dir,
        log: Arc::clone(log.shared()),
        run: Mutex::new(RunState {
            state: JobState::Running,
            ended_at_ms: None,
            usage: ResourceUsage::default(),
            oom_killed: false,
        }),
        pending_stop: Mutex::new(None),
        stop_notify: Notify::new(),
        process: Mutex::new(Some(Arc::clone(&handle))),
        cgroup: Mutex::new(cgroup.clone()),
    });
    {
        let mut table = lock(&shared.table);
        table.jobs.insert(id, Arc::clone(&job));
        if table.shutting_down {
            // A shutdown began while this job was being spawned: it did not see it.
            job.request_stop(StopReason::Shutdown, shared.config.default_grace);
        }
    }
    slot.armed = false;
    // From here on the supervisor owns the cleanup (its Drop kills and reaps).
    let mut sup = Supervisor {
        shared: Arc::clone(shared),
        job: Arc::clone(&job),
        handle: Some(Arc::clone(&handle)),
        pidfd: None,
        stdout: None,
        stderr: None,
        log: Some(log),
        buf: Vec::new(),
        splice: true,
        life: Lifecycle::new(),
        timeout_at: spec.timeout.map(|t| Instant::now() + t),
        drain_until: None,
        cgroup,
        kill_task: None,
        oom_check,
        oom_handled: false,
        finished: false,
    };
    let registered = (|| -> io::Result<Option<JobStdin>> {
        let pidfd = crate::sys::async_fd(watched_pidfd?, Interest::READABLE)?;
        sup.pidfd = Some(pidfd);
        sup.stdout = Some(output_pipe(child.stdout)?);
        sup.stderr = Some(output_pipe(child.stderr)?);
        child.stdin.map(|fd| JobStdin::new(id, fd)).transpose()
    })();
    let stdin = match registered {
        Ok(stdin) => stdin,
        Err(source) => {
            drop(sup);
            return Err(StartError::Internal {
                what: "registering the job's pipes with the runtime",
                message: source.to_string(),
            });
        }
    };
    let mut set = lock(tasks);
    while set.try_join_next().is_some() {}
    set.spawn(sup.run());
    Ok(StartedJob { id, pid, stdin })
}

fn output_pipe(fd: OwnedFd) -> io::Result<pipe::Receiver> {
    // A bigger pipe means fewer wake-ups and a writer that blocks less often.
    if let Err(e) = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
        tracing::debug!(error = %e, "cannot enlarge an output pipe; keeping its size");
    }
    pipe::Receiver::from_owned_fd(fd)
}

/// Waits for readability of an optional fd (never ready when `None`).
async fn readable(fd: Option<&pipe::Receiver>) {
    match fd {
        Some(fd) => {
            // An error here (the reactor is gone) surfaces on the read that follows.
            let _ = fd.readable().await;
        }
        None => std::future::pending().await,
    }
}

/// Waits for a running cgroup kill (never ready when there is none).
async fn killed(task: Option<&mut JoinHandle<Result<(), CgroupError>>>) -> Option<String> {
    match task {
        Some(task) => match task.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        },
        None => std::future::pending().await,
    }
}

async fn tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Result of one read on an output pipe.
enum Pumped {
    Data,
    Eof,
    WouldBlock,
}

/// The task that runs one job from spawn to end.
#[derive(Debug)]
struct Supervisor {
    shared: Arc<Shared>,
    job: Arc<Job>,
    /// The main process; `None` once the job ended (closes the pidfd).
    handle: Option<Arc<ProcessHandle>>,
    /// The reactor's duplicate of the main process' pidfd.
    pidfd: Option<AsyncFd<OwnedFd>>,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    log: Option<LogWriter>,
    /// Read buffer of the copy path, allocated on first use.
    buf: Vec<u8>,
    /// Output is spliced into the log (until the file system says it cannot).
    splice: bool,
    life: Lifecycle,
    timeout_at: Option<Instant>,
    drain_until: Option<Instant>,
    /// The job's cgroup; `None` without cgroups and once the job ended.
    cgroup: Option<Arc<JobCgroup>>,
    /// A running [`JobCgroup::kill_all`] (on a blocking thread).
    kill_task: Option<JoinHandle<Result<(), CgroupError>>>,
    /// OOM flag checks of a v1 job with a memory limit.
    oom_check: Option<tokio::time::Interval>,
    /// The OOM flag was seen and the job killed for it.
    oom_handled: bool,
    finished: bool,
}

impl Supervisor {
    async fn run(mut self) {
        let job = Arc::clone(&self.job);
        loop {
            if self.life.exited() && self.stdout.is_none() && self.stderr.is_none() {
                break;
            }
            let kill_at = self.life.deadline();
            let timeout_at = if self.life.stopping() || self.life.exited() {
                None
            } else {
                self.timeout_at
            };
            let pidfd = if self.life.exited() {
                None
            } else {
                self.pidfd.as_ref()
            };
            tokio::select! {
                () = readable(self.stdout.as_ref()) => { self.pump(OutputStream::Stdout); }
                () = readable(self.stderr.as_ref()) => { self.pump(OutputStream::Stderr); }
                () = async {
                    match pidfd {
                        Some(fd) => { let _ = fd.readable().await.map(|mut g| g.clear_ready()); }
                        None => std::future::pending().await,
                    }
                } => self.reap(),
                () = job.stop_notify.notified() => {
                    let pending = lock(&job.pending_stop).take();
                    if let Some((reason, grace)) = pending {
                        self.stop(reason, grace);
                    }
                }
                () = sleep_until(timeout_at) => {
                    // spec: a job past its timeout is stopped like any other stop.
                    let grace = self.shared.config.default_grace;
                    self.stop(StopReason::Timeout, grace);
                }
                () = sleep_until(kill_at) => {
                    let action = self.life.on_deadline(Instant::now());
                    self.apply(action);
                }
                () = sleep_until(self.drain_until) => self.end_drain(),
                failed = killed(self.kill_task.as_mut()) => {
                    self.kill_task = None;
                    if let Some(e) = failed {
                        tracing::error!(job = %job.id, error = %e, "cannot kill every process of the job's cgroup");
                    }
                }
                () = tick(self.oom_check.as_mut()) => self.check_oom(),
            }
        }
        self.empty_cgroup().await;
        self.finish();
    }

    /// Kills whatever is left in the job's cgroup and waits until it is empty.
    async fn empty_cgroup(&mut self) {
        if let Some(mut task) = self.kill_task.take()
            && let Some(e) = killed(Some(&mut task)).await
        {
            tracing::error!(job = %self.job.id, error = %e, "cannot kill every process of the job's cgroup");
        }
        let Some(cg) = self.cgroup.clone() else {
            return;
        };
        let left = cg.pids().map_or(true, |p| !p.is_empty());
        if !left {
            return;
        }
        let mut task = tokio::task::spawn_blocking(move || cg.kill_all());
        if let Some(e) = killed(Some(&mut task)).await {
            tracing::error!(job = %self.job.id, error = %e, "cannot kill every process of the job's cgroup");
        }
    }

    /// On cgroup v1 an OOM kill hits one process only: kill the rest of the job too.
    fn check_oom(&mut self) {
        if self.oom_handled {
            return;
        }
        let Some(cg) = &self.cgroup else {
            return;
        };
        if cg.oom_killed().unwrap_or(false) {
            tracing::info!(job = %self.job.id, "the OOM killer hit the job; killing all of it");
            self.oom_handled = true;
            self.oom_check = None;
            self.start_cgroup_kill();
        }
    }

    /// Starts [`JobCgroup::kill_all`] on a blocking thread unless one runs already.
    fn start_cgroup_kill(&mut self) {
        if self.kill_task.is_some() {
            return;
        }
        if let Some(cg) = self.cgroup.clone() {
            self.kill_task = Some(tokio::task::spawn_blocking(move || cg.kill_all()));
        }
    }

    /// One read from a pipe into the log.
    fn pump(&mut self, stream: OutputStream) -> Pumped {
        let Self {
            stdout,
            stderr,
            buf,
            log,
            splice,
            ..
        } = self;
        let pipe = match stream {
            OutputStream::Stdout => stdout,
            OutputStream::Stderr => stderr,
        };
        let Some(fd) = pipe.as_ref() else {
            return Pumped::Eof;
        };
        // Fast path: pipe → file in the kernel, while there is room under the cap.
        if let Some(log) = log.as_mut().filter(|l| *splice && l.room() > 0) {
            let moved = fd.try_io(|| match log.splice_from(stream, fd.as_fd(), SPLICE_MAX) {
                Ok(n) => Ok(Ok(n)),
                Err(SpliceError::Io(e)) => Err(e),
                Err(other) => Ok(Err(other)),
            });
            match moved {
                Ok(Ok(0)) => {
                    *pipe = None;
                    return Pumped::Eof;
                }
                Ok(Ok(_)) => return Pumped::Data,
                Ok(Err(SpliceError::Log(e))) => {
                    tracing::error!(
                        job = %self.job.id,
                        path = %self.job.log.path().display(),
                        error = %e,
                        "cannot write the job's output log; further output is discarded and the status says output_truncated"
                    );
                    return Pumped::Data;
                }
                Ok(Err(_unsupported)) => {
                    tracing::debug!(job = %self.job.id, "the state directory cannot splice; copying output instead");
                    *splice = false;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Pumped::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Pumped::WouldBlock,
                Err(e) => {
                    tracing::warn!(job = %self.job.id, ?stream, error = %e, "reading an output pipe failed; closing it");
                    *pipe = None;
                    return Pumped::Eof;
                }
            }
        }
        // Copy path: past the cap (read and discard), or where splicing is unsupported.
        if buf.is_empty() {
            buf.resize(HEADER_LEN + READ_BUF, 0);
        }
        let read = fd.try_read(&mut buf[HEADER_LEN..]);
        match read {
            Ok(0) => {
                *pipe = None;
                Pumped::Eof
            }
            Ok(n) => {
                let appended = log.as_mut().map(|log| log.append_framed(stream, buf, n));
                match appended {
                    Some(Ok(Appended::CapReached)) if !self.life.stopping() => {
                        // spec: past the cap the job is stopped and marked truncated.
                        let grace = self.shared.config.default_grace;
                        self.stop(StopReason::OutputLimit, grace);
                    }
                    Some(Err(e)) => tracing::error!(
                        job = %self.job.id,
                        path = %self.job.log.path().display(),
                        error = %e,
                        "cannot write the job's output log; further output is discarded and the status says output_truncated"
                    ),
                    _ => {}
                }
                Pumped::Data
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Pumped::WouldBlock,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Pumped::WouldBlock,
            Err(e) => {
                tracing::warn!(job = %self.job.id, ?stream, error = %e, "reading an output pipe failed; closing it");
                *pipe = None;
                Pumped::Eof
            }
        }
    }

    /// Reaps the main process if it exited.
    fn reap(&mut self) {
        if self.life.exited() {
            return;
        }
        let Some(handle) = &self.handle else {
            return;
        };
        let reaped = lock(&handle.process).try_reap();
        match reaped {
            Ok(Some(termination)) => self.on_main_exit(termination),
            Ok(None) => {}
            Err(e) => {
                // Cannot happen unless someone else reaped our child; do not hang.
                tracing::error!(job = %self.job.id, error = %e, "cannot reap the job's main process; killing the job");
                self.apply(Action::Kill);
                self.on_main_exit(Termination::Signaled(libc::SIGKILL));
            }
        }
    }

    fn on_main_exit(&mut self, termination: Termination) {
        self.life.on_exit(termination);
        if self.oom_check.is_some() {
            self.check_oom();
            self.oom_check = None;
        }
        self.drain_until = Some(Instant::now() + self.shared.config.output_drain);
    }

    /// Starts (or tightens) a stop.
    fn stop(&mut self, reason: StopReason, grace: Duration) {
        // Reap first: a job that already exited by itself is reported `Exited`.
        self.reap();
        let action = self.life.request_stop(reason, grace, Instant::now());
        self.apply(action);
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::Nothing => return,
            // spec: QX-MSG-CTRL-2 (SIGTERM to every process of the job, then SIGKILL)
            Action::Terminate => {
                // The cgroup first: it holds every process of the job, wherever it went.
                if let Some(cg) = &self.cgroup
                    && let Err(e) = cg.signal_all(nix::sys::signal::Signal::SIGTERM)
                {
                    tracing::debug!(job = %self.job.id, error = %e, "SIGTERM to the job's cgroup failed");
                }
            }
            Action::Kill => self.start_cgroup_kill(),
        }
        self.signal_main(action);
    }

    /// The process-level part of an action: the main process (or the init) and,
    /// not isolated, its process group.
    fn signal_main(&self, action: Action) {
        let Some(handle) = &self.handle else {
            return;
        };
        let process = lock(&handle.process);
        let result = match action {
            Action::Nothing => return,
            Action::Terminate => process.terminate(),
            Action::Kill => process.kill(),
        };
        if let Err(e) = result {
            tracing::debug!(job = %self.job.id, ?action, error = %e, "signalling the job failed");
        }
    }

    /// The drain after the main process' exit is over: kill what is left of the job,
    /// take what is already in the pipes, close them.
    fn end_drain(&mut self) {
        self.drain_until = None;
        if self.stdout.is_some() || self.stderr.is_some() {
            self.apply(Action::Kill);
        }
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            for _ in 0..FINAL_DRAIN_READS {
                if !matches!(self.pump(stream), Pumped::Data) {
                    break;
                }
            }
        }
        self.stdout = None;
        self.stderr = None;
    }

    /// Publishes the final status and frees everything the job held.
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        let cgroup = self.cgroup.take();
        let (usage, oom_killed) = cgroup
            .as_deref()
            .map(|cg| read_accounting(cg, self.job.id))
            .unwrap_or_default();
        {
            let mut run = lock(&self.job.run);
            run.state = self.life.state();
            run.ended_at_ms = Some(now_ms());
            run.usage = usage;
            run.oom_killed = oom_killed;
        }
        lock(&self.job.process).take();
        lock(&self.job.cgroup).take();
        if let Some(cg) = cgroup {
            // Another holder (a concurrent status read) removes it when it lets go
            // (`JobCgroup`'s drop).
            if let Ok(mut cg) = Arc::try_unwrap(cg)
                && let Err(e) = cg.remove()
            {
                tracing::warn!(job = %self.job.id, error = %e, "cannot remove the job's cgroup");
            }
        }
        self.stdout = None;
        self.stderr = None;
        self.pidfd = None;
        // The last reference: closes the pidfd (the process was reaped; if it was
        // not, `ChildProcess`'s drop kills and reaps it).
        self.handle = None;
        // Free the slot before anyone learns of the end, so a caller of `wait` or
        // `stop` can start a job in its place at once.
        self.shared.job_finished(self.job.id);
        // Dropping the writer publishes the end to followers, after the status is final.
        self.log = None;
    }
}

impl Drop for Supervisor {
    /// The task was aborted (manager dropped) before the job ended: SIGKILL the job,
    /// reap it (waiting up to a bound), record `Stopped { Shutdown }`.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Records the reason (unless a stop was under way); always SIGKILL now.
        let _ = self
            .life
            .request_stop(StopReason::Shutdown, Duration::ZERO, Instant::now());
        self.signal_main(Action::Kill);
        if let Some(cg) = &self.cgroup
            && let Err(e) = cg.kill_all()
        {
            // Bounded (it gives up after a while); `JobCgroup`'s drop tries again.
            tracing::error!(job = %self.job.id, error = %e, "cannot kill every process of the job's cgroup");
        }
        if let Some(handle) = self.handle.as_ref().filter(|_| !self.life.exited()) {
            {
                let process = lock(&handle.process);
                let mut fds = [nix::poll::PollFd::new(
                    process.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                // Bounded: SIGKILL ends a process at once unless it sleeps in the kernel.
                let _ = nix::poll::poll(&mut fds, DROP_REAP_WAIT_MS);
            }
            self.reap();
        }
        if !self.life.exited() {
            // The ChildProcess' own Drop is the last resort for reaping.
            self.life.on_exit(Termination::Signaled(libc::SIGKILL));
        }
        self.finish();
    }
}
