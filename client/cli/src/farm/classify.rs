//! What an input did to the target: its class, from the job's final status (or from
//! what the pool says happened to the job).

use qexec_protocol::{JobState, JobStatus, SpawnFailure, StopReason, Termination};

use crate::render::{signal_name, spawn_failure_name};

/// The signals that mean the target crashed (a memory error, an abort, a trap, a
/// seccomp kill): SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS.
pub(super) const CRASH_SIGNALS: [i32; 7] = [4, 5, 6, 7, 8, 11, 31];

/// The class of one input's run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Class {
    /// Exit status 0.
    Ok,
    /// A non-zero exit status (not a crash).
    Exit(i32),
    /// Killed by one of [`CRASH_SIGNALS`].
    Crash(i32),
    /// The kernel's OOM killer killed a process of the job (its memory limit).
    Oom,
    /// The job ran past `--timeout` and was stopped.
    Timeout,
    /// The program could not be started.
    FailedToStart(SpawnFailure),
    /// Killed by another signal (SIGKILL, SIGTERM, SIGPIPE …) that is not a crash.
    Killed(i32),
    /// Stopped by someone (`qexec stop`) or for its output (the server's output cap).
    Stopped(&'static str),
    /// The worker went away before the job ended (it may or may not have run).
    Lost,
}

impl Class {
    /// From a final status. A job the server stopped because the connection went away
    /// or because it shut down is [`Class::Lost`]: the input did not finish its run.
    pub(super) fn of(status: &JobStatus) -> Self {
        match &status.state {
            JobState::Stopped {
                reason: StopReason::Timeout,
                ..
            } => Self::Timeout,
            JobState::Stopped {
                reason: StopReason::Detached | StopReason::Shutdown,
                ..
            } => Self::Lost,
            // The OOM killer may have killed a child while the main process then exited
            // by itself: the memory limit was still what the input hit.
            _ if status.oom_killed => Self::Oom,
            JobState::Stopped { reason, .. } => Self::Stopped(match reason {
                StopReason::OutputLimit => "output_limit",
                _ => "requested",
            }),
            JobState::FailedToStart { failure, .. } => Self::FailedToStart(*failure),
            JobState::Exited {
                termination: Termination::Exited(0),
            } => Self::Ok,
            JobState::Exited {
                termination: Termination::Exited(code),
            } => Self::Exit(*code),
            JobState::Exited {
                termination: Termination::Signaled(sig),
            } if CRASH_SIGNALS.contains(sig) => Self::Crash(*sig),
            JobState::Exited {
                termination: Termination::Signaled(sig),
            } => Self::Killed(*sig),
            // A final status is never Running; say so rather than guess.
            JobState::Running => Self::Lost,
        }
    }

    /// True for what the farm keeps and reports: crashes, OOM kills, timeouts.
    pub(super) fn is_finding(&self) -> bool {
        matches!(self, Self::Crash(_) | Self::Oom | Self::Timeout)
    }

    /// The short name of the class, as in the summary and the `kind` of JSON and of
    /// stored entries: `ok`, `exit`, `crash`, `oom`, `timeout`, `failed-to-start`,
    /// `killed`, `stopped`, `lost`.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Exit(_) => "exit",
            Self::Crash(_) => "crash",
            Self::Oom => "oom",
            Self::Timeout => "timeout",
            Self::FailedToStart(_) => "failed-to-start",
            Self::Killed(_) => "killed",
            Self::Stopped(_) => "stopped",
            Self::Lost => "lost",
        }
    }

    /// The detail that goes with the kind: `SIGSEGV`, `exit 3`, `not_found`,
    /// `output_limit`; empty when the kind says it all.
    pub(super) fn detail(&self) -> String {
        match self {
            Self::Exit(code) => format!("exit {code}"),
            Self::Crash(sig) | Self::Killed(sig) => signal_name(*sig),
            Self::FailedToStart(f) => spawn_failure_name(*f).to_owned(),
            Self::Stopped(why) => (*why).to_owned(),
            Self::Ok | Self::Oom | Self::Timeout | Self::Lost => String::new(),
        }
    }

    /// The kind with its detail: `crash SIGSEGV`, `exit 3`, `timeout`.
    pub(super) fn label(&self) -> String {
        match self {
            Self::Exit(code) => format!("exit {code}"),
            _ => {
                let detail = self.detail();
                if detail.is_empty() {
                    self.kind().to_owned()
                } else {
                    format!("{} {detail}", self.kind())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qexec_protocol::{JobId, Limits, ResourceUsage};

    fn status(state: JobState, oom_killed: bool) -> JobStatus {
        JobStatus {
            id: JobId::from_u128(7),
            owner: "tester".into(),
            argv: vec![b"target".to_vec()],
            state,
            pid: Some(10),
            started_at_ms: 1,
            ended_at_ms: Some(2),
            stdout_bytes: 0,
            stderr_bytes: 0,
            output_truncated: false,
            oom_killed,
            limits: Limits::default(),
            usage: ResourceUsage::default(),
        }
    }

    fn exited(t: Termination) -> JobState {
        JobState::Exited { termination: t }
    }

    fn stopped(reason: StopReason) -> JobState {
        JobState::Stopped {
            reason,
            termination: Termination::Signaled(15),
        }
    }

    #[test]
    fn every_end_state_has_its_class() {
        let of = |state, oom| Class::of(&status(state, oom));
        assert_eq!(of(exited(Termination::Exited(0)), false), Class::Ok);
        assert_eq!(of(exited(Termination::Exited(3)), false), Class::Exit(3));
        assert_eq!(
            of(exited(Termination::Exited(139)), false),
            Class::Exit(139)
        );
        for sig in CRASH_SIGNALS {
            assert_eq!(
                of(exited(Termination::Signaled(sig)), false),
                Class::Crash(sig)
            );
        }
        assert_eq!(
            of(exited(Termination::Signaled(9)), false),
            Class::Killed(9)
        );
        assert_eq!(
            of(exited(Termination::Signaled(13)), false),
            Class::Killed(13)
        );
        assert_eq!(of(exited(Termination::Signaled(9)), true), Class::Oom);
        // A child OOM-killed, the main process then exiting 1: still the memory limit.
        assert_eq!(of(exited(Termination::Exited(1)), true), Class::Oom);
        assert_eq!(of(stopped(StopReason::Timeout), false), Class::Timeout);
        // Past the timeout with the OOM flag set: the timeout is what stopped it.
        assert_eq!(of(stopped(StopReason::Timeout), true), Class::Timeout);
        assert_eq!(of(stopped(StopReason::Detached), false), Class::Lost);
        assert_eq!(of(stopped(StopReason::Shutdown), false), Class::Lost);
        assert_eq!(
            of(stopped(StopReason::OutputLimit), false),
            Class::Stopped("output_limit")
        );
        assert_eq!(
            of(stopped(StopReason::Requested { by: "bob".into() }), false),
            Class::Stopped("requested")
        );
        assert_eq!(
            of(
                JobState::FailedToStart {
                    failure: SpawnFailure::NotFound,
                    message: "no".into()
                },
                false
            ),
            Class::FailedToStart(SpawnFailure::NotFound)
        );
        assert_eq!(of(JobState::Running, false), Class::Lost);
    }

    #[test]
    fn findings_are_crashes_ooms_and_timeouts() {
        let findings: Vec<_> = [
            Class::Ok,
            Class::Exit(1),
            Class::Crash(11),
            Class::Oom,
            Class::Timeout,
            Class::FailedToStart(SpawnFailure::Setup),
            Class::Killed(9),
            Class::Stopped("requested"),
            Class::Lost,
        ]
        .into_iter()
        .filter(Class::is_finding)
        .collect();
        assert_eq!(findings, [Class::Crash(11), Class::Oom, Class::Timeout]);
    }

    #[test]
    fn labels_name_the_detail() {
        assert_eq!(Class::Crash(11).label(), "crash SIGSEGV");
        assert_eq!(Class::Crash(6).label(), "crash SIGABRT");
        assert_eq!(Class::Exit(3).label(), "exit 3");
        assert_eq!(Class::Timeout.label(), "timeout");
        assert_eq!(
            Class::FailedToStart(SpawnFailure::NotFound).label(),
            "failed-to-start not_found"
        );
        assert_eq!(Class::Killed(9).label(), "killed SIGKILL");
    }
}
