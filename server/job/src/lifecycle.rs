//! The stop/timeout state machine of one job, without I/O (the supervisor applies
//! the [`Action`]s it returns).
//!
//! Rules:
//! - The first stop (a request, the timeout, the output cap, shutdown) fixes the
//!   [`StopReason`]; it asks for SIGTERM to every process of the job and arms a kill
//!   deadline `grace` later. Later stops keep the reason and may only bring the kill
//!   deadline closer. A zero grace kills at once.
//! - At the kill deadline, if the main process has not been reaped: SIGKILL all.
//! - Once the main process was reaped nothing more happens; the job is
//!   [`JobState::Stopped`] if a stop was under way, else [`JobState::Exited`]. The
//!   supervisor reaps (non-blocking) before applying a stop, so a job that exited on
//!   its own before the stop is reported `Exited`, never `Stopped`.

use std::time::Duration;

use qexec_protocol::{JobState, StopReason, Termination};
use tokio::time::Instant;

/// What the supervisor must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Nothing.
    Nothing,
    /// SIGTERM to every process of the job.
    Terminate,
    /// SIGKILL to every process of the job.
    Kill,
}

#[derive(Debug)]
struct Stop {
    reason: StopReason,
    kill_at: Instant,
    killed: bool,
}

/// Where a job is between start and end.
#[derive(Debug, Default)]
pub(crate) struct Lifecycle {
    stop: Option<Stop>,
    exited: Option<Termination>,
}

impl Lifecycle {
    /// A running job.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// A stop was asked for (or the timeout/cap fired).
    pub(crate) fn request_stop(
        &mut self,
        reason: StopReason,
        grace: Duration,
        now: Instant,
    ) -> Action {
        if self.exited.is_some() {
            return Action::Nothing;
        }
        let kill_at = now + grace;
        match &mut self.stop {
            None => {
                let killed = grace.is_zero();
                self.stop = Some(Stop {
                    reason,
                    kill_at,
                    killed,
                });
                if killed {
                    Action::Kill
                } else {
                    Action::Terminate
                }
            }
            Some(stop) => {
                if !stop.killed && kill_at < stop.kill_at {
                    stop.kill_at = kill_at;
                }
                self.on_deadline(now)
            }
        }
    }

    /// When [`Lifecycle::on_deadline`] must be called next, if ever.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match (&self.stop, self.exited) {
            (Some(stop), None) if !stop.killed => Some(stop.kill_at),
            _ => None,
        }
    }

    /// The clock reached (or passed) [`Lifecycle::deadline`].
    pub(crate) fn on_deadline(&mut self, now: Instant) -> Action {
        match (&mut self.stop, self.exited) {
            (Some(stop), None) if !stop.killed && now >= stop.kill_at => {
                stop.killed = true;
                Action::Kill
            }
            _ => Action::Nothing,
        }
    }

    /// The main process was reaped.
    pub(crate) fn on_exit(&mut self, termination: Termination) {
        if self.exited.is_none() {
            self.exited = Some(termination);
        }
    }

    /// A stop is under way or happened.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.is_some()
    }

    /// The main process was reaped.
    pub(crate) fn exited(&self) -> bool {
        self.exited.is_some()
    }

    /// The job's state as reported.
    /// spec: QX-MSG-TYPE-6 (`Exited`: ended without a stop by qexec, a client's `Signal`
    /// included, QX-MSG-CTRL-9; `Stopped`: qexec stopped it)
    pub(crate) fn state(&self) -> JobState {
        match (self.exited, &self.stop) {
            (None, _) => JobState::Running,
            (Some(termination), None) => JobState::Exited { termination },
            (Some(termination), Some(stop)) => JobState::Stopped {
                reason: stop.reason.clone(),
                termination,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by(who: &str) -> StopReason {
        StopReason::Requested { by: who.into() }
    }

    #[test]
    fn stop_terminates_then_kills_at_the_deadline() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new();
        assert_eq!(l.deadline(), None);
        assert_eq!(
            l.request_stop(by("alice"), Duration::from_secs(5), t0),
            Action::Terminate
        );
        assert_eq!(l.deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(l.on_deadline(t0 + Duration::from_secs(4)), Action::Nothing);
        assert_eq!(l.on_deadline(t0 + Duration::from_secs(5)), Action::Kill);
        assert_eq!(l.deadline(), None);
        assert_eq!(l.on_deadline(t0 + Duration::from_secs(6)), Action::Nothing);
        assert_eq!(l.state(), JobState::Running);
        l.on_exit(Termination::Signaled(9));
        assert_eq!(
            l.state(),
            JobState::Stopped {
                reason: by("alice"),
                termination: Termination::Signaled(9)
            }
        );
    }

    #[test]
    fn second_stop_keeps_the_first_reason_and_may_only_shorten_grace() {
        let t0 = Instant::now();
        let mut l = Lifecycle::new();
        l.request_stop(StopReason::Timeout, Duration::from_secs(10), t0);
        assert_eq!(
            l.request_stop(by("bob"), Duration::from_secs(20), t0),
            Action::Nothing
        );
        assert_eq!(l.deadline(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(
            l.request_stop(by("bob"), Duration::from_secs(2), t0),
            Action::Nothing
        );
        assert_eq!(l.deadline(), Some(t0 + Duration::from_secs(2)));
        assert_eq!(
            l.request_stop(by("carol"), Duration::ZERO, t0 + Duration::from_secs(1)),
            Action::Kill
        );
        l.on_exit(Termination::Exited(0));
        assert_eq!(
            l.state(),
            JobState::Stopped {
                reason: StopReason::Timeout,
                termination: Termination::Exited(0)
            }
        );
    }

    #[test]
    fn zero_grace_kills_at_once() {
        let mut l = Lifecycle::new();
        assert_eq!(
            l.request_stop(StopReason::Shutdown, Duration::ZERO, Instant::now()),
            Action::Kill
        );
        assert_eq!(l.deadline(), None);
    }

    #[test]
    fn stop_after_exit_changes_nothing() {
        let mut l = Lifecycle::new();
        l.on_exit(Termination::Exited(3));
        assert_eq!(
            l.request_stop(by("alice"), Duration::from_secs(1), Instant::now()),
            Action::Nothing
        );
        assert!(!l.stopping());
        assert_eq!(
            l.state(),
            JobState::Exited {
                termination: Termination::Exited(3)
            }
        );
    }
}
