//! The job table: every job the manager knows, its status, the running-slot
//! bookkeeping, the job records (`store`) and retention of ended jobs.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qexec_protocol::{JobId, JobState, JobStatus, Limits, ResourceUsage, StopReason};
use tokio::sync::Notify;

use crate::cgroup::{CgroupCapabilities, Cgroups, HostLayout, JobCgroup};
use crate::output::LogShared;
use crate::seccomp::{self, Program, SeccompError};
use crate::spawn::ChildProcess;
use crate::{Capabilities, JobError, ManagerConfig, ManagerError, StartError};

use super::cgroups::{SubtreeLock, prepare_cgroups, read_accounting};
use super::retention::{Ended, EndedIndex, Policy};
use super::store::{Record, SEQ_BLOCK, StartFacts, Store};
use crate::sandbox::Sandbox;
use crate::sandbox::uidmap::UidSlot;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The job table and everything supervisors need.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(super) config: ManagerConfig,
    /// What the host offers, probed once at start-up.
    pub(super) capabilities: Capabilities,
    /// The host's cgroups; `None` when turned off by configuration.
    pub(super) cgroups: Option<Cgroups>,
    /// Held while this manager uses the cgroup subtree.
    pub(super) subtree_lock: Option<SubtreeLock>,
    /// The jobs' seccomp filter, built once before any job starts; `None` when turned
    /// off by configuration.
    pub(super) seccomp: Option<Program>,
    /// The job sandbox, when active.
    pub(super) sandbox: Option<Sandbox>,
    pub(super) jobs_dir: PathBuf,
    /// The durable job records.
    pub(super) store: Store,
    pub(super) table: Mutex<Table>,
}

#[derive(Debug, Default)]
pub(super) struct Table {
    pub(super) jobs: HashMap<JobId, Arc<Job>>,
    pub(super) running: usize,
    /// Ended jobs, for retention.
    pub(super) ended: EndedIndex,
    /// The last sequence number handed out.
    pub(super) next_seq: u64,
    /// Sequence numbers below this are reserved in the store.
    pub(super) seq_reserved: u64,
    pub(super) shutting_down: bool,
}

/// Mutable part of a job's status.
#[derive(Debug)]
pub(super) struct RunState {
    pub(super) state: JobState,
    pub(super) ended_at_ms: Option<u64>,
    /// Final usage, read from the cgroup when the job ended.
    pub(super) usage: ResourceUsage,
    /// Final OOM flag.
    pub(super) oom_killed: bool,
}

/// One job, shared by the table, its supervisor and its followers.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: JobId,
    pub(super) seq: u64,
    pub(super) owner: String,
    pub(super) argv: Vec<Vec<u8>>,
    pub(super) limits: Limits,
    /// `None` for a job that failed to start.
    pub(super) pid: Option<u32>,
    pub(super) started_at_ms: u64,
    pub(super) dir: PathBuf,
    pub(crate) log: Arc<LogShared>,
    pub(super) run: Mutex<RunState>,
    /// A stop not yet seen by the supervisor: first reason, shortest grace.
    pub(super) pending_stop: Mutex<Option<(StopReason, Duration)>>,
    pub(super) stop_notify: Notify,
    /// The main process, for `signal`; `None` once the job ended.
    pub(super) process: Mutex<Option<Arc<ProcessHandle>>>,
    /// The job's cgroup while it runs, for live usage; `None` once the job ended.
    pub(super) cgroup: Mutex<Option<Arc<JobCgroup>>>,
}

impl Job {
    /// The job's status now.
    pub(crate) fn status(&self) -> JobStatus {
        self.snapshot(true)
    }

    /// The job's status; with `live_usage` false a running job's usage is not read
    /// from its cgroup (the start record, written on the start's path).
    pub(super) fn snapshot(&self, live_usage: bool) -> JobStatus {
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
        if state.is_running() && live_usage {
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
            pid: self.pid,
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
    pub(super) process: Mutex<ChildProcess>,
    /// The job's host uid slot (sandboxed jobs). Declared after `process`, so it is
    /// given back only after the init was reaped (dropping a `ChildProcess` reaps it):
    /// then no process with these ids is left. spec: QX-SBX-2
    pub(super) _uid_slot: Option<UidSlot>,
}

impl Shared {
    /// Prepares `<state_dir>/jobs`, cleans up stale cgroups, opens the job database and
    /// recovers the records and logs a previous manager left (`recovery`).
    pub(crate) fn new(config: ManagerConfig) -> Result<Self, ManagerError> {
        let seccomp = prepare_seccomp(&config)?;
        let jobs_dir = config.state_dir.join("jobs");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&jobs_dir)
            .map_err(|source| ManagerError::StateDir {
                path: jobs_dir.clone(),
                source,
            })?;
        // spec: QX-SBX-13 (a bad sandbox configuration stops the start-up; an
        // unusable host only turns the sandbox off, and root jobs are refused then)
        let sandbox = (config.sandbox.enabled && config.isolation)
            .then(|| Sandbox::new(&config.sandbox, config.max_running_jobs, &config.state_dir))
            .transpose()?;
        let mut capabilities = probe_capabilities(&config, sandbox.as_ref());
        capabilities.seccomp = seccomp.is_some();
        let sandbox = sandbox.filter(|_| capabilities.sandbox);
        // Stale cgroups of a crashed server (and so its jobs' processes) go first,
        // then its records are recovered (spec: QX-DUR-2).
        let (cgroups, subtree_lock) = prepare_cgroups(&config);
        let (store, loaded) = Store::open(&config.state_dir, now_ms())?;
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
        let shared = Self {
            config,
            capabilities,
            cgroups,
            subtree_lock,
            seccomp,
            sandbox,
            jobs_dir,
            store,
            table: Mutex::new(Table::default()),
        };
        super::recovery::recover(&shared, loaded);
        Ok(shared)
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

    /// Running slots in use: jobs running or being started (spec: QX-INFO-3).
    pub(crate) fn running_count(&self) -> usize {
        lock(&self.table).running
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

    /// The retention limits of the configuration.
    pub(super) fn policy(&self) -> Policy {
        Policy {
            per_owner: self.config.retain_finished,
            max_age: self.config.retain_age,
            log_budget: self.config.log_budget,
        }
    }

    /// Writes a job's record (its start, or its end) to the store.
    pub(super) fn record(&self, job: &Job, facts: Option<StartFacts>) {
        self.store.put(
            Record {
                seq: job.seq,
                status: job.snapshot(false),
                log_len: job.log.committed().file_len,
            },
            facts,
        );
    }

    /// Adds an ended job to the table (a failed start, or one recovered at start-up)
    /// and applies retention.
    pub(super) fn insert_ended(&self, job: Arc<Job>) {
        {
            let mut table = lock(&self.table);
            table.ended.insert(job.seq, ended_of(&job));
            table.jobs.insert(job.id, job);
        }
        self.apply_retention();
    }

    /// Forgets what the retention rules evict now: records, table entries, logs.
    /// spec: QX-DUR-3, QX-DUR-4
    pub(super) fn apply_retention(&self) {
        let policy = self.policy();
        let mut forgotten = Vec::new();
        {
            let mut table = lock(&self.table);
            let evicted = table.ended.evict(&policy, now_ms());
            for (seq, e, rule) in evicted {
                if let Some(job) = table.jobs.remove(&e.id) {
                    forgotten.push(job.dir.clone());
                }
                self.store.delete(seq);
                if rule == super::retention::Rule::DiskBudget {
                    tracing::warn!(
                        job = %e.id,
                        owner = %e.owner,
                        log_bytes = e.log_len,
                        budget = policy.log_budget,
                        "forgot an ended job and deleted its output: the output logs of ended jobs exceed the disk budget (oldest first, any owner)"
                    );
                } else {
                    tracing::debug!(job = %e.id, owner = %e.owner, rule = rule.name(), "forgot an ended job");
                }
            }
        }
        for dir in forgotten {
            remove_dir(&dir);
        }
    }

    /// Books a running slot and a fresh id.
    pub(super) fn reserve(self: &Arc<Self>) -> Result<Slot, StartError> {
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
        table.next_seq += 1;
        if table.next_seq >= table.seq_reserved {
            // spec: QX-LIST-1 (never handed out twice, even across a crash)
            let upto = table.next_seq + SEQ_BLOCK;
            if let Err(e) = self.store.reserve_seqs(upto) {
                table.next_seq -= 1;
                return Err(StartError::Internal {
                    what: "reserving job sequence numbers in the job database",
                    message: e.to_string(),
                });
            }
            table.seq_reserved = upto;
        }
        table.running += 1;
        Ok(Slot {
            shared: Arc::clone(self),
            id,
            seq: table.next_seq,
            armed: true,
        })
    }

    /// Bookkeeping at a job's end (its status is final): frees its slot, writes its
    /// record, applies retention.
    pub(super) fn job_finished(&self, job: &Job) {
        self.record(job, None);
        {
            let mut table = lock(&self.table);
            table.running = table.running.saturating_sub(1);
            table.ended.insert(job.seq, ended_of(job));
        }
        self.apply_retention();
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

/// Builds the jobs' seccomp filter and checks the kernel can install it, unless the
/// configuration turned it off. spec: QX-SBX-20, QX-SBX-25
fn prepare_seccomp(config: &ManagerConfig) -> Result<Option<Program>, SeccompError> {
    if !config.seccomp {
        tracing::warn!(
            "the job seccomp filter is turned off by configuration: jobs may call kexec, \
             bpf, perf_event_open, keyctl, mount and other dangerous system calls"
        );
        return Ok(None);
    }
    let program = seccomp::build()?;
    crate::sys::seccomp_filter_available().map_err(|e| SeccompError::KernelUnsupported {
        reason: e.to_string(),
    })?;
    tracing::info!(
        instructions = program.instructions().len(),
        "jobs run under the default seccomp filter"
    );
    Ok(Some(program))
}

/// Probes what the host offers and logs it.
fn probe_capabilities(config: &ManagerConfig, sandbox: Option<&Sandbox>) -> Capabilities {
    let mut caps = Capabilities::default();
    if !config.isolation {
        tracing::info!("job isolation (namespaces) is turned off by configuration");
        caps.sandbox_unavailable = Some("job isolation is turned off by configuration".into());
        return caps;
    }
    match crate::probe::isolation_available() {
        Ok(()) => {
            caps.isolation = true;
            tracing::info!("jobs run isolated: own PID, mount, network, UTS and IPC namespaces");
        }
        Err(e) => {
            tracing::warn!(reason = %e, "job isolation is unavailable; jobs run without namespaces");
            caps.isolation_unavailable = Some(e.to_string());
            caps.sandbox_unavailable = Some(format!("job isolation is unavailable: {e}"));
            return caps;
        }
    }
    let Some(sandbox) = sandbox else {
        tracing::warn!("the job sandbox is turned off by configuration: jobs run as host root");
        caps.sandbox_unavailable = Some("the job sandbox is turned off by configuration".into());
        return caps;
    };
    // spec: QX-SBX-13 (probe at start, say so loudly when unavailable)
    match crate::probe::sandbox_available(sandbox.with_base(sandbox.range().base)) {
        Ok(()) => {
            caps.sandbox = true;
            let range = sandbox.range();
            tracing::info!(
                uid_base = range.base,
                uid_slots = range.slots(),
                "jobs run sandboxed: own user namespace and host uid, read-only host, cgroup namespace"
            );
        }
        Err(e) => {
            tracing::error!(
                reason = %e,
                "the job SANDBOX IS UNAVAILABLE: jobs would run as host root; starts by non-admin \
                 callers are refused unless insecure root jobs are allowed"
            );
            caps.sandbox_unavailable = Some(e.to_string());
        }
    }
    caps
}

/// What retention needs of an ended job.
fn ended_of(job: &Job) -> Ended {
    Ended {
        id: job.id,
        owner: job.owner.clone(),
        ended_at_ms: lock(&job.run).ended_at_ms.unwrap_or(job.started_at_ms),
        log_len: job.log.committed().file_len,
    }
}

pub(super) fn remove_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %dir.display(), error = %e, "cannot delete a job directory");
    }
}

/// A booked running slot; given back on drop unless the job started.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) shared: Arc<Shared>,
    pub(super) id: JobId,
    pub(super) seq: u64,
    pub(super) armed: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            let mut table = lock(&self.shared.table);
            table.running = table.running.saturating_sub(1);
        }
    }
}
