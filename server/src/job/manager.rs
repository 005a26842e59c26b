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
//! It owns the job's pidfd, both output pipes (non-blocking, resized to 1 MiB,
//! read into one buffer per job straight after the record header space), the
//! [`LogWriter`], the timeout and the [`Lifecycle`]. It waits on all of them at once
//! (`tokio::select!`) and on stop requests (a [`Notify`]).
//!
//! # When a job ends
//! A job has ended when its main process was reaped **and** both output pipes were
//! closed. Other processes of the job may hold the pipes open (a daemonised
//! grandchild): once the main process was reaped, the pipes are drained for at most
//! [`ManagerConfig::output_drain`]; then whatever is left of the job is SIGKILLed
//! (through the process group today, the cgroup once it lands — which also catches
//! processes that called `setsid`), a last non-blocking read takes what is already in
//! the pipes, and the pipes are closed. Output written after that is lost, and the
//! writer sees EPIPE.
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
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qexec_protocol::{JobId, JobState, JobStatus, Limits, OutputStream, StopReason, Termination};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::lifecycle::{Action, Lifecycle};
use super::output::{Appended, HEADER_LEN, LogShared, LogWriter};
use super::spawn::{self, ChildProcess, SpawnConfig};
use super::{JobError, JobSpec, JobStdin, ManagerConfig, ManagerError, StartError, StartedJob};

/// `PATH` given to a job whose environment has none.
pub(crate) const DEFAULT_PATH: &[u8] =
    b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Size asked for each output pipe (the unprivileged maximum by default).
const PIPE_SIZE: i32 = 1 << 20;
/// Read buffer of a running job (the header space comes in front of it).
const READ_BUF: usize = 128 << 10;
/// Reads per pipe in the final non-blocking drain, so a writer that never stops
/// cannot keep a job alive.
const FINAL_DRAIN_READS: usize = 64;
/// How long a dropped supervisor waits for its SIGKILLed main process to be reaped.
const DROP_REAP_WAIT_MS: u16 = 2000;

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
}

impl Job {
    /// The job's status now.
    pub(crate) fn status(&self) -> JobStatus {
        let committed = self.log.committed();
        let run = lock(&self.run);
        JobStatus {
            id: self.id,
            owner: self.owner.clone(),
            argv: self.argv.clone(),
            state: run.state.clone(),
            pid: Some(self.pid),
            started_at_ms: self.started_at_ms,
            ended_at_ms: run.ended_at_ms,
            stdout_bytes: committed.stdout,
            stderr_bytes: committed.stderr,
            // spec: the cap (and a failing log) is visible, never silent.
            output_truncated: committed.discarded > 0,
            // Seam: read from the job's cgroup once it lands (issue 4).
            oom_killed: false,
            limits: self.limits.clone(),
            usage: Default::default(),
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

    /// Sends `signal` to the main program; `Ok(false)` when the job already ended.
    pub(crate) fn signal(&self, signal: i32) -> io::Result<bool> {
        let process = lock(&self.process).clone();
        match process {
            Some(p) => lock(&p.process).signal(signal).map(|()| true),
            None => Ok(false),
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
    pidfd: RawFd,
}

/// Lets the reactor watch the pidfd while the process stays shared.
#[derive(Debug)]
struct PidFd(Arc<ProcessHandle>);

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.pidfd
    }
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
        Ok(Self {
            config,
            jobs_dir,
            table: Mutex::new(Table::default()),
        })
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

/// Applies server defaults and maxima to requested limits.
fn effective_limits(req: &Limits, config: &ManagerConfig) -> Result<Limits, StartError> {
    fn pick<T: Copy + PartialOrd + Into<u64>>(
        field: &'static str,
        req: Option<T>,
        default: Option<T>,
        max: Option<T>,
    ) -> Result<Option<T>, StartError> {
        if let (Some(r), Some(m)) = (req, max)
            && r > m
        {
            return Err(StartError::InvalidLimits {
                field,
                requested: r.into(),
                max: m.into(),
            });
        }
        Ok(req.or(default))
    }
    let (d, m) = (&config.default_limits, &config.max_limits);
    Ok(Limits {
        cpu_millis: pick("cpu_millis", req.cpu_millis, d.cpu_millis, m.cpu_millis)?,
        memory_bytes: pick(
            "memory_bytes",
            req.memory_bytes,
            d.memory_bytes,
            m.memory_bytes,
        )?,
        io_read_bps: pick("io_read_bps", req.io_read_bps, d.io_read_bps, m.io_read_bps)?,
        io_write_bps: pick(
            "io_write_bps",
            req.io_write_bps,
            d.io_write_bps,
            m.io_write_bps,
        )?,
        io_read_iops: pick(
            "io_read_iops",
            req.io_read_iops,
            d.io_read_iops,
            m.io_read_iops,
        )?,
        io_write_iops: pick(
            "io_write_iops",
            req.io_write_iops,
            d.io_write_iops,
            m.io_write_iops,
        )?,
        pids: pick("pids", req.pids, d.pids, m.pids)?,
    })
}

/// Starts a job and its supervisor (owned by `tasks`).
pub(crate) async fn start(
    shared: &Arc<Shared>,
    tasks: &Mutex<JoinSet<()>>,
    spec: JobSpec,
) -> Result<StartedJob, StartError> {
    let limits = effective_limits(&spec.limits, &shared.config)?;
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
        env.push((b"PATH".to_vec(), DEFAULT_PATH.to_vec()));
    }
    let cwd = spec.cwd.unwrap_or_else(|| PathBuf::from("/"));
    let argv = spec.argv;
    let want_stdin = spec.stdin;
    // spawn() blocks until exec (or its failure); keep it off the runtime threads.
    let (argv, spawned) = tokio::task::spawn_blocking(move || {
        let config = SpawnConfig {
            argv: &argv,
            env: &env,
            cwd: &cwd,
            stdin: want_stdin,
            // Seam: isolation (issue 5) and the job's cgroup (issue 4) plug in here.
            isolation: None,
            cgroup_procs: &[],
            credentials: None,
        };
        let r = spawn::spawn(&config);
        (argv, r)
    })
    .await
    .map_err(|e| StartError::Internal {
        what: "spawn task",
        message: e.to_string(),
    })?;
    let child = match spawned {
        Ok(child) => child,
        Err(e) => {
            remove_dir(&dir);
            return Err(StartError::Spawn {
                failure: e.failure,
                message: e.message,
            });
        }
    };
    let started_at_ms = now_ms();
    let pid = child.pid;
    let pidfd = child.process.as_raw_fd();
    let handle = Arc::new(ProcessHandle {
        process: Mutex::new(child.process),
        pidfd,
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
        }),
        pending_stop: Mutex::new(None),
        stop_notify: Notify::new(),
        process: Mutex::new(Some(Arc::clone(&handle))),
    });
    lock(&shared.table).jobs.insert(id, Arc::clone(&job));
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
        buf: vec![0; HEADER_LEN + READ_BUF],
        life: Lifecycle::new(),
        timeout_at: spec.timeout.map(|t| Instant::now() + t),
        drain_until: None,
        finished: false,
    };
    let registered = (|| -> io::Result<Option<JobStdin>> {
        // `AsyncFd::with_interest` is deprecated because it cannot know that an
        // arbitrary `AsRawFd` keeps its fd open; `PidFd` does (it owns an `Arc` of the
        // `ChildProcess` that owns the pidfd), and the unsafe replacement is not
        // allowed outside `sys`.
        #[allow(deprecated, reason = "sound here, see above")]
        let pidfd = AsyncFd::with_interest(PidFd(Arc::clone(&handle)), Interest::READABLE)?;
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
    pidfd: Option<AsyncFd<PidFd>>,
    stdout: Option<pipe::Receiver>,
    stderr: Option<pipe::Receiver>,
    log: Option<LogWriter>,
    buf: Vec<u8>,
    life: Lifecycle,
    timeout_at: Option<Instant>,
    drain_until: Option<Instant>,
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
            }
        }
        self.finish();
    }

    /// One read from a pipe into the log.
    fn pump(&mut self, stream: OutputStream) -> Pumped {
        let Self {
            stdout,
            stderr,
            buf,
            log,
            ..
        } = self;
        let pipe = match stream {
            OutputStream::Stdout => stdout,
            OutputStream::Stderr => stderr,
        };
        let Some(fd) = pipe.as_ref() else {
            return Pumped::Eof;
        };
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
        self.drain_until = Some(Instant::now() + self.shared.config.output_drain);
    }

    /// Starts (or tightens) a stop.
    fn stop(&mut self, reason: StopReason, grace: Duration) {
        // Reap first: a job that already exited by itself is reported `Exited`.
        self.reap();
        let action = self.life.request_stop(reason, grace, Instant::now());
        self.apply(action);
    }

    fn apply(&self, action: Action) {
        let Some(handle) = &self.handle else {
            return;
        };
        let process = lock(&handle.process);
        let result = match action {
            Action::Nothing => return,
            // Seam: with a cgroup, `signal_all`/`kill_all` on it come first.
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
        {
            let mut run = lock(&self.job.run);
            run.state = self.life.state();
            run.ended_at_ms = Some(now_ms());
        }
        lock(&self.job.process).take();
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
        self.apply(Action::Kill);
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
