//! The pool's shared picture of its workers and the placement rule. Pure data: the
//! tasks lock it briefly (never across an await) and the rule is unit-tested here.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use crate::client::Client;
use qexec_protocol::ServerInfo;

use crate::pool::Queued;

/// How many of the pool's jobs a server can hold, given that `ours` of the jobs its
/// `Info` answer counted may be the pool's own: the answer's free slots with our jobs
/// not counted as taken, i.e. min(max_jobs − others, max_jobs_per_user − our
/// identity's others). Jobs the pool counts that the server did not (still starting,
/// or ended and not yet reported) make the others look fewer; a start refused for it
/// is put back in the queue (see `Slot::refused`).
pub(crate) fn limit(info: &ServerInfo, ours: u32) -> u32 {
    ServerInfo {
        running_jobs: info.running_jobs.saturating_sub(ours),
        caller_running_jobs: info.caller_running_jobs.saturating_sub(ours),
        ..info.clone()
    }
    .free_slots()
}

/// One worker as the pool sees it.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Its name.
    pub(crate) name: String,
    /// The connection, while live.
    pub(crate) client: Option<Arc<Client>>,
    /// Connected and answered its first `Info` (`client` is set).
    pub(crate) live: bool,
    /// How many of our jobs it may hold now; `None` until its first `Info` answer.
    pub(crate) limit: Option<u32>,
    /// Our jobs placed on it and not yet reported.
    pub(crate) running: u32,
    /// A start was refused for capacity: place nothing more until one of our jobs on
    /// it ends or an `Info` sent after the refusal answers.
    pub(crate) full: bool,
    /// One of our jobs on it was lost with its connection, or it answered `Info` late:
    /// place nothing more until an `Info` sent after that answers (or the worker task
    /// finds the connection lost and reconnects).
    pub(crate) suspect: bool,
    /// `suspect` holds until the answer to a probe numbered above this one.
    pub(crate) suspect_until_probe: u64,
    /// `Info` requests sent so far.
    pub(crate) probes_sent: u64,
    /// `full` holds until the answer to probe number `full_until_probe` or later.
    pub(crate) full_until_probe: u64,
    /// Results it produced.
    pub(crate) done: u64,
    /// Starts it refused for capacity (each put back in the queue).
    pub(crate) refusals: u64,
    /// It stopped reconnecting (after the close, see `PoolOptions::give_up_after`).
    pub(crate) gone: bool,
    /// Why its last connection or request failed.
    pub(crate) last_error: Option<String>,
}

impl Slot {
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            client: None,
            live: false,
            limit: None,
            running: 0,
            full: false,
            suspect: false,
            suspect_until_probe: 0,
            probes_sent: 0,
            full_until_probe: 0,
            done: 0,
            refusals: 0,
            gone: false,
            last_error: None,
        }
    }

    /// Jobs it may take now; 0 when dead or full.
    pub(crate) fn free(&self) -> u32 {
        match self.limit {
            Some(limit) if self.live && !self.full && !self.suspect => {
                limit.saturating_sub(self.running)
            }
            _ => 0,
        }
    }

    /// An `Info` request goes out; returns its number.
    pub(crate) fn probe_sent(&mut self) -> u64 {
        self.probes_sent += 1;
        self.probes_sent
    }

    /// The answer to probe number `probe`: the new limit (`None`: the server does not
    /// say, `default` applies), never above `cap`.
    pub(crate) fn probed(
        &mut self,
        probe: u64,
        info: Option<&ServerInfo>,
        default: u32,
        cap: Option<u32>,
    ) {
        let limit = info.map_or(default, |i| limit(i, self.running));
        self.limit = Some(cap.map_or(limit, |cap| limit.min(cap)));
        if probe > self.full_until_probe {
            self.full = false;
        }
        if probe > self.suspect_until_probe {
            self.suspect = false;
        }
    }

    /// A start was refused for capacity: full until one of our jobs ends or a later
    /// `Info` answers.
    pub(crate) fn refused(&mut self) {
        self.refusals += 1;
        self.full = true;
        self.full_until_probe = self.probes_sent;
    }

    /// One of our jobs on it is done (`ended`: it ran to an end on the server, so
    /// room was made).
    pub(crate) fn finished(&mut self, ended: bool) {
        self.running = self.running.saturating_sub(1);
        self.done += 1;
        if ended {
            self.full = false;
        }
    }

    /// It is connected and answered its first `Info`.
    pub(crate) fn up(&mut self, client: Arc<Client>) {
        self.client = Some(client);
        self.live = true;
    }

    /// A job on it was lost with the connection, its connection was found closed, or
    /// it did not answer `Info` in time: no placement until a later `Info` answers.
    pub(crate) fn lost_one(&mut self, reason: String) {
        self.suspect = true;
        self.suspect_until_probe = self.probes_sent;
        self.last_error = Some(reason);
    }

    /// Its connection was lost.
    pub(crate) fn died(&mut self, reason: String) {
        self.client = None;
        self.live = false;
        self.limit = None;
        self.last_error = Some(reason);
    }
}

/// Everything the pool's tasks share.
#[derive(Debug)]
pub(crate) struct State {
    /// The workers, in the order given.
    pub(crate) slots: Vec<Slot>,
    /// Submissions refused for capacity, placed before anything from the queue.
    /// Bounded by the jobs in flight (each came from one).
    pub(crate) retry: VecDeque<Queued>,
    /// When the submission queue closed.
    pub(crate) closed_at: Option<Instant>,
}

/// Where the next submission goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// On this worker.
    On(usize),
    /// Nowhere yet: wait for a change.
    Wait,
    /// Nowhere ever: every worker gave up.
    NoWorker,
}

impl State {
    pub(crate) fn new(names: impl IntoIterator<Item = String>) -> Self {
        Self {
            slots: names.into_iter().map(Slot::new).collect(),
            retry: VecDeque::new(),
            closed_at: None,
        }
    }

    /// The least-loaded live worker: the most free capacity, then the fewest of our
    /// jobs in flight, then the first given.
    pub(crate) fn place(&self) -> Placement {
        let best = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.free() > 0)
            .min_by_key(|(i, s)| (std::cmp::Reverse(s.free()), s.running, *i));
        match best {
            Some((i, _)) => Placement::On(i),
            None if self.slots.iter().all(|s| s.gone) => Placement::NoWorker,
            None => Placement::Wait,
        }
    }

    /// Why nothing could be placed: each worker's last error.
    pub(crate) fn why_no_worker(&self) -> String {
        let reasons: Vec<String> = self
            .slots
            .iter()
            .map(|s| {
                format!(
                    "{}: {}",
                    s.name,
                    s.last_error.as_deref().unwrap_or("no connection")
                )
            })
            .collect();
        format!(
            "the pool closed and every worker gave up reconnecting ({})",
            reasons.join("; ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(running: u32, max: u32, mine: u32, max_user: u32) -> ServerInfo {
        ServerInfo {
            server_version: "0.1.0".into(),
            running_jobs: running,
            max_jobs: max,
            caller_running_jobs: mine,
            max_jobs_per_user: max_user,
            cpus: 2,
        }
    }

    #[test]
    fn limit_is_the_smaller_of_both_limits_minus_others() {
        // An idle server: its --max-jobs.
        assert_eq!(limit(&load(0, 8, 0, 256), 0), 8);
        // The per-user limit below it.
        assert_eq!(limit(&load(0, 8, 0, 3), 0), 3);
        // Three foreign jobs leave five.
        assert_eq!(limit(&load(3, 8, 0, 256), 0), 5);
        // Our own four jobs are not "others": the limit stays 8.
        assert_eq!(limit(&load(4, 8, 4, 256), 4), 8);
        // Two of our identity's jobs come from elsewhere (another client).
        assert_eq!(limit(&load(6, 8, 6, 6), 4), 4);
        // Overfull (a limit lowered under load): nothing, no underflow.
        assert_eq!(limit(&load(10, 8, 0, 256), 0), 0);
        // We count more than the server (starts in flight): never negative others.
        assert_eq!(limit(&load(1, 8, 1, 256), 5), 8);
    }

    /// A live slot (as if connected) with this limit and our jobs in flight.
    fn live(name: &str, limit: u32, running: u32) -> Slot {
        let mut s = Slot::new(name.into());
        s.live = true;
        s.limit = Some(limit);
        s.running = running;
        s
    }

    fn state(slots: Vec<Slot>) -> State {
        State {
            slots,
            retry: VecDeque::new(),
            closed_at: None,
        }
    }

    #[test]
    fn dead_slot_has_no_room() {
        let mut s = live("a", 8, 0);
        assert_eq!(s.free(), 8);
        s.died("lost".into());
        assert_eq!(s.free(), 0);
        assert_eq!(state(vec![s]).place(), Placement::Wait);
    }

    #[test]
    fn most_free_wins_then_fewest_in_flight() {
        let st = state(vec![live("a", 8, 6), live("b", 8, 2), live("c", 4, 0)]);
        // b: 6 free, c: 4, a: 2.
        assert_eq!(st.place(), Placement::On(1));
        // Equal free room (4 each): fewer of our jobs in flight wins.
        let st = state(vec![live("a", 8, 4), live("b", 4, 0)]);
        assert_eq!(st.place(), Placement::On(1));
        // Equal in everything: the first given.
        let st = state(vec![live("a", 4, 1), live("b", 4, 1)]);
        assert_eq!(st.place(), Placement::On(0));
    }

    #[test]
    fn full_workers_wait_and_gone_workers_end() {
        let st = state(vec![live("a", 2, 2), live("b", 1, 1)]);
        assert_eq!(st.place(), Placement::Wait);
        let mut gone = Slot::new("a".into());
        gone.gone = true;
        assert_eq!(state(vec![gone]).place(), Placement::NoWorker);
    }

    #[test]
    fn refusal_marks_full_until_a_job_ends_or_a_later_probe() {
        let mut s = live("a", 8, 3);
        let first = s.probe_sent();
        s.refused();
        assert!(s.full);
        // The answer to a probe sent before the refusal does not clear it.
        s.probed(first, Some(&load(3, 8, 3, 256)), 4, None);
        assert!(s.full);
        assert_eq!(s.free(), 0);
        // A later probe does.
        let later = s.probe_sent();
        s.probed(later, Some(&load(3, 8, 3, 256)), 4, None);
        assert!(!s.full);
        assert_eq!(s.free(), 5);
        // So does one of our jobs ending; a lost one does not.
        s.refused();
        s.finished(false);
        assert!(s.full);
        s.finished(true);
        assert!(!s.full);
        assert_eq!((s.running, s.done, s.refusals), (1, 2, 2));
    }

    #[test]
    fn a_lost_job_stops_placement_until_info_answers() {
        let mut s = live("a", 8, 3);
        s.lost_one("connection lost".into());
        assert_eq!(s.free(), 0);
        assert_eq!(state(vec![s]).place(), Placement::Wait);
        let mut s = live("a", 8, 3);
        let before = s.probe_sent();
        s.lost_one("connection lost".into());
        // The answer to a probe sent before the loss says nothing about it.
        s.probed(before, Some(&load(3, 8, 3, 256)), 4, None);
        assert_eq!(s.free(), 0);
        let after = s.probe_sent();
        s.probed(after, Some(&load(3, 8, 3, 256)), 4, None);
        assert_eq!(s.free(), 5);
    }

    #[test]
    fn unknown_capacity_takes_the_default() {
        let mut s = live("a", 0, 0);
        let p = s.probe_sent();
        s.probed(p, None, 4, None);
        assert_eq!(s.limit, Some(4));
    }

    #[test]
    fn the_pools_own_cap_applies_below_the_servers() {
        let mut s = live("a", 0, 0);
        let p = s.probe_sent();
        s.probed(p, Some(&load(0, 1024, 0, 256)), 4, Some(8));
        assert_eq!(s.limit, Some(8));
        // A server below the cap keeps its own limit.
        s.probed(p, Some(&load(0, 2, 0, 256)), 4, Some(8));
        assert_eq!(s.limit, Some(2));
        s.probed(p, None, 4, Some(2));
        assert_eq!(s.limit, Some(2));
    }

    #[test]
    fn no_worker_reason_names_each_worker() {
        let mut st = State::new(["a".to_owned(), "b".to_owned()]);
        st.slots[0].last_error = Some("refused".into());
        let why = st.why_no_worker();
        assert!(
            why.contains("a: refused") && why.contains("b: no connection"),
            "{why}"
        );
    }
}
