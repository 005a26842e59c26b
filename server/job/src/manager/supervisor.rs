//! The supervisor: the one task per job that waits on its pidfd, its output pipes,
//! its timeout, stop requests, a cgroup kill and the OOM check, and records its end
//! (see the module docs of `manager`).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use qexec_protocol::{OutputStream, StopReason, Termination};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cgroup::{CgroupError, JobCgroup};
use crate::lifecycle::{Action, Lifecycle};
use crate::output::{
    Appended, FINAL_DRAIN_READS, HEADER_LEN, LogWriter, Pump, PumpEvent, READ_BUF,
};

/// How long a dropped supervisor waits for its SIGKILLed main process to be reaped.
const DROP_REAP_WAIT_MS: u16 = 2000;
/// How often the OOM flag of a running v1 job with a memory limit is read.
const OOM_CHECK: Duration = Duration::from_millis(250);
use super::cgroups::read_accounting;
use super::table::{Job, ProcessHandle, Shared, lock, now_ms};

/// The next event of a running output pump (never ready when there is none).
async fn pump_event(pump: Option<&mut Pump>) -> Option<PumpEvent> {
    match pump {
        Some(pump) => pump.next().await,
        None => std::future::pending().await,
    }
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
pub(super) struct Supervisor {
    shared: Arc<Shared>,
    job: Arc<Job>,
    /// The main process; `None` once the job ended (closes the pidfd).
    handle: Option<Arc<ProcessHandle>>,
    /// The reactor's duplicate of the main process' pidfd.
    pidfd: Option<AsyncFd<OwnedFd>>,
    /// A terminal job's output (its master), read on the runtime; `None` once closed.
    stdout: Option<pipe::Receiver>,
    /// The thread that moves a pipe job's stdout and stderr into the log; `None`
    /// once it handed the log back.
    pump: Option<Pump>,
    /// The log; `None` while the pump holds it.
    log: Option<LogWriter>,
    /// Read buffer of a terminal's output, allocated on first use.
    buf: Vec<u8>,
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
    /// The output is a terminal's master: `EIO` is its end (every slave closed).
    terminal: bool,
    finished: bool,
}

impl Supervisor {
    /// The supervisor of a job just spawned; `check_oom` asks for the periodic OOM
    /// check (a v1 job with a memory limit). From here on it owns the job's cleanup:
    /// its drop kills and reaps the job.
    pub(super) fn new(
        shared: Arc<Shared>,
        job: Arc<Job>,
        handle: Arc<ProcessHandle>,
        log: LogWriter,
        timeout_at: Option<Instant>,
        cgroup: Option<Arc<JobCgroup>>,
        check_oom: bool,
    ) -> Self {
        let oom_check = check_oom.then(|| {
            let mut tick = tokio::time::interval(OOM_CHECK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        });
        Self {
            shared,
            job,
            handle: Some(handle),
            pidfd: None,
            stdout: None,
            pump: None,
            log: Some(log),
            buf: Vec::new(),
            life: Lifecycle::new(),
            timeout_at,
            drain_until: None,
            cgroup,
            kill_task: None,
            oom_check,
            oom_handled: false,
            terminal: false,
            finished: false,
        }
    }

    /// Registers the job's pidfd (a duplicate) with the reactor and starts moving
    /// its output into the log: a pipe job's stdout and stderr by its output pump
    /// thread (the log's writes never run on the runtime), a terminal job's master
    /// on the runtime. A terminal job has no `stderr`: its `stdout` is the
    /// terminal's master, read like a pipe but never spliced (splice needs a pipe),
    /// on the runtime so a keystroke's echo takes no thread hop (spec: QX-TERM-8).
    pub(super) fn register(
        &mut self,
        pidfd: io::Result<OwnedFd>,
        stdout: OwnedFd,
        stderr: Option<OwnedFd>,
    ) -> io::Result<()> {
        self.pidfd = Some(crate::sys::async_fd(pidfd?, Interest::READABLE)?);
        match stderr {
            Some(stderr) => {
                let log = self
                    .log
                    .take()
                    .ok_or_else(|| io::Error::other("the output log is already taken"))?;
                self.pump = Some(Pump::start(self.job.id, log, stdout, stderr)?);
            }
            None => {
                self.stdout = Some(pipe::Receiver::from_owned_fd_unchecked(stdout)?);
                self.terminal = true;
            }
        }
        Ok(())
    }

    /// Runs the job to its end (the task's body).
    pub(super) async fn run(mut self) {
        let job = Arc::clone(&self.job);
        loop {
            if self.life.exited() && self.stdout.is_none() && self.pump.is_none() {
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
                () = readable(self.stdout.as_ref()) => { self.pump_terminal(); }
                event = pump_event(self.pump.as_mut()) => self.on_pump(event),
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

    /// An event of the output pump.
    fn on_pump(&mut self, event: Option<PumpEvent>) {
        match event {
            Some(PumpEvent::CapReached) => self.cap_reached(),
            Some(PumpEvent::Done(log)) => {
                self.log = Some(log);
                self.pump = None;
            }
            None => {
                // The thread is gone without handing the log back (it panicked):
                // the log ended with it.
                tracing::error!(job = %self.job.id, "the job's output pump ended unexpectedly");
                self.pump = None;
            }
        }
    }

    /// The output cap was reached.
    fn cap_reached(&mut self) {
        if !self.life.stopping() {
            // spec: past the cap the job is stopped and marked truncated.
            let grace = self.shared.config.default_grace;
            self.stop(StopReason::OutputLimit, grace);
        }
    }

    /// One read from a terminal's master into the log.
    fn pump_terminal(&mut self) -> Pumped {
        let stream = OutputStream::Stdout;
        let Some(fd) = self.stdout.as_ref() else {
            return Pumped::Eof;
        };
        if self.buf.is_empty() {
            self.buf.resize(HEADER_LEN + READ_BUF, 0);
        }
        let read = fd.try_read(&mut self.buf[HEADER_LEN..]);
        match read {
            Ok(0) => {
                self.stdout = None;
                Pumped::Eof
            }
            Ok(n) => {
                let appended = self
                    .log
                    .as_mut()
                    .map(|log| log.append_framed(stream, &mut self.buf, n));
                match appended {
                    Some(Ok(Appended::CapReached)) => self.cap_reached(),
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
            // A terminal's master reads EIO once no process holds the slave: its EOF.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                self.stdout = None;
                Pumped::Eof
            }
            Err(e) => {
                tracing::warn!(job = %self.job.id, ?stream, error = %e, "reading the job's terminal failed; closing it");
                self.stdout = None;
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
        let reaped = {
            let mut process = lock(&handle.process);
            process
                .try_reap()
                .map(|t| t.map(|t| (t, process.init_failed())))
        };
        match reaped {
            Ok(Some((termination, None))) => self.on_main_exit(termination),
            Ok(Some((termination, Some(code)))) => {
                // The job died before its program ran: say so, not a bare code.
                let why = format!(
                    "the job's init exited with code {code} before the program started (too \
                     little memory for it to load? the server log may say more)"
                );
                tracing::warn!(job = %self.job.id, code, "a job's init died before its program ran");
                self.life.on_exit_before_program(termination, why);
                self.after_main_exit();
            }
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
        self.after_main_exit();
    }

    /// What follows the main process's exit, however it ended.
    fn after_main_exit(&mut self) {
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
    /// take what is already in the pipes, close them (the pump does so for a pipe
    /// job, then hands the log back).
    fn end_drain(&mut self) {
        self.drain_until = None;
        if self.stdout.is_some() || self.pump.is_some() {
            self.apply(Action::Kill);
        }
        for _ in 0..FINAL_DRAIN_READS {
            if !matches!(self.pump_terminal(), Pumped::Data) {
                break;
            }
        }
        self.stdout = None;
        if let Some(pump) = &mut self.pump {
            pump.end();
        }
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
        // A pump still running (the supervisor is being dropped) is asked to end;
        // it ends the log itself when it is done, after the status above.
        if let Some(pump) = &mut self.pump {
            pump.end();
        }
        self.pidfd = None;
        // The last reference: closes the pidfd (the process was reaped; if it was
        // not, `ChildProcess`'s drop kills and reaps it).
        self.handle = None;
        // Free the slot before anyone learns of the end, so a caller of `wait` or
        // `stop` can start a job in its place at once.
        self.shared.job_finished(&self.job);
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
