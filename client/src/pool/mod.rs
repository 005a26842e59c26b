//! A worker pool: many qexecd, one queue of jobs, results as they end.
//!
//! [`Pool::connect`] opens one connection (a [`Client`]) per
//! [`Worker`]; [`Pool::submit`] queues a [`Submission`] and returns its ticket;
//! [`PoolResults::next`] yields one [`JobResult`] per ticket, in the order jobs end,
//! naming the worker that ran it.
//!
//! ```no_run
//! # async fn demo(workers: Vec<qexec_client::pool::Worker>) -> Result<(), qexec_client::pool::PoolError> {
//! use qexec_client::pool::{Outcome, Pool, PoolOptions, Submission};
//! use qexec_protocol::{Limits, StartRequest};
//!
//! let (pool, mut results) = Pool::connect(workers, PoolOptions::default()).await?;
//! let producer = {
//!     let pool = pool.clone();
//!     tokio::spawn(async move {
//!         for i in 0..10_000u32 {
//!             let request = StartRequest {
//!                 argv: vec![b"echo".to_vec(), i.to_string().into_bytes()],
//!                 env: vec![],
//!                 cwd: None,
//!                 limits: Limits::default(),
//!                 timeout_ms: Some(10_000),
//!                 stdin: false,
//!                 follow: true,
//!                 stop_on_detach: true,
//!             };
//!             // Waits while `PoolOptions::queue` submissions are queued.
//!             pool.submit(Submission { request, stdin: None, keep_output: 4096 }).await?;
//!         }
//!         pool.close();
//!         Ok::<_, qexec_client::pool::PoolError>(())
//!     })
//! };
//! while let Some(result) = results.next().await {
//!     match result.outcome {
//!         Outcome::Ended(status) => println!("{} on {:?}: {:?}", result.ticket, result.worker, status.state),
//!         other => println!("{}: {other:?}", result.ticket),
//!     }
//! }
//! # let _ = producer; Ok(()) }
//! ```
//!
//! # Design
//!
//! - **Tasks.** One owner task per worker keeps its connection: connects, asks `Info`
//!   every [`PoolOptions::info_interval`], reconnects with doubling back-off. One
//!   dispatcher task takes submissions from the bounded queue and places them; one
//!   task per job in flight starts it, feeds its stdin, reads its output and reports.
//!   So the pool runs `workers + 1 + jobs in flight` tasks, however many submissions
//!   wait: the queue ([`PoolOptions::queue`]) and the results channel
//!   ([`PoolOptions::results`]) are bounded, and [`Pool::submit`] waits while the
//!   queue is full (backpressure).
//! - **Placement.** A worker's capacity is what its last `Info` answer says:
//!   min(`max_jobs` − others' running jobs, `max_jobs_per_user` − our identity's
//!   other running jobs), kept up to date locally as the pool places jobs and sees
//!   them end. A submission goes to the live worker with the most free capacity
//!   (ties: the fewest of our jobs in flight, then the first given), never beyond it;
//!   with no free capacity anywhere it waits. A server that answers `Info` with
//!   `Unsupported` (older than the request) gets [`PoolOptions::default_capacity`];
//!   [`PoolOptions::max_per_worker`] caps every worker below its server's limits.
//! - **Refusals.** A `Start` refused for capacity (`ResourceExhausted`: another client
//!   took the room since the last `Info`) or because the server shuts down goes back to
//!   the front of the queue and marks that worker full until one of our jobs on it
//!   ends or a later `Info` answers; it is not a failure and not an attempt. Any other
//!   refusal of the request itself is [`Outcome::Refused`], not retried.
//! - **Slow workers.** An `Info` unanswered within [`PoolOptions::info_timeout`]
//!   stops placements on that worker until a later `Info` answers; its connection and
//!   jobs stay (slow is not dead).
//! - **Dead workers.** A failed connection attempt or a lost connection (silent for
//!   [`PoolOptions::dead_after`], 10 s, despite keep-alives every third of it, or
//!   sooner when the port is closed) makes the worker dead: its connection is closed and each of its
//!   unfinished jobs comes back
//!   [`Outcome::Lost`] with its job id (it may have run: never resubmitted). A job lost
//!   that way stops placements on its worker until the worker answers `Info` again, and
//!   a submission placed on a connection found closed before its `Start` was sent goes
//!   back to the queue, so a dying worker does not swallow the queue. The owner
//!   task reconnects with back-off from [`PoolOptions::backoff_min`] doubling to
//!   [`PoolOptions::backoff_max`]; the others keep serving. With no live worker the
//!   queue waits; only after [`Pool::close`] and once every worker gave up
//!   ([`PoolOptions::give_up_after`]) do the submissions left come back
//!   [`Outcome::NoWorker`].
//! - **Waits.** Connecting is bounded by each worker's `connect_timeout`, a `Start`
//!   by its `request_timeout`, `Info` by `info_timeout`, a silent connection by the
//!   client's QUIC idle timeout; a job's output is read until it ends (its own
//!   `timeout_ms` bounds it). Dropping [`PoolResults`] aborts every task and closes
//!   every connection; dropping every [`Pool`] handle is a [`Pool::close`].
//! - **Jobs.** `follow` is forced on (the pool reads each job's output to know it
//!   ended); with [`Submission::stdin`] the pool writes it and then end-of-input;
//!   the first [`Submission::keep_output`] bytes of combined output are kept in the
//!   result and the rest only counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use qexec_protocol::{ErrorResponse, JobId, JobStatus, StartRequest};

use crate::Client;

mod dispatch;
mod job;
mod options;
mod probe;
mod state;
mod worker;

pub use options::{PoolOptions, Worker};

use state::State;

/// A failure of the pool itself (a job's failures are [`Outcome`]s).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// [`Pool::connect`] got an empty list of workers.
    #[error("a pool needs at least one worker: give it one qexecd or more")]
    NoWorkers,
    /// The options cannot work.
    #[error("invalid pool options: {reason}")]
    InvalidOptions {
        /// Which option and why.
        reason: String,
    },
    /// The pool takes no more submissions: [`Pool::close`] was called, or its
    /// [`PoolResults`] were dropped.
    #[error(
        "the pool is closed: it takes no more submissions (Pool::close was called or its results were dropped)"
    )]
    Closed,
}

/// One job for the pool.
#[derive(Debug, Clone)]
pub struct Submission {
    /// What to run. The pool forces `follow` on, and `stdin` to whether
    /// [`Submission::stdin`] is set.
    pub request: StartRequest,
    /// Written to the job's standard input, then end-of-input; `None`: the job's stdin
    /// is `/dev/null`.
    pub stdin: Option<bytes::Bytes>,
    /// How many bytes of the job's combined output (stdout and stderr in the order
    /// the server captured them) the result keeps; the rest is only counted. 0: none.
    pub keep_output: usize,
}

/// What became of one submission.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// The ticket [`Pool::submit`] returned.
    pub ticket: u64,
    /// The worker it was placed on (`None` only for [`Outcome::NoWorker`]).
    pub worker: Option<String>,
    /// The job's id on that worker, once it started.
    pub job: Option<JobId>,
    /// How it ended.
    pub outcome: Outcome,
    /// The first [`Submission::keep_output`] bytes of its combined output.
    pub output: Vec<u8>,
    /// True when the job wrote more than was kept.
    pub output_truncated: bool,
    /// From its placement on the worker to its end.
    pub elapsed: Duration,
}

/// How a submission ended.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Outcome {
    /// The job ran to an end state: exit, signal, timeout, OOM, stopped (read
    /// [`JobStatus::state`] and its flags).
    Ended(Box<JobStatus>),
    /// It was placed on a worker whose connection was lost (or which stopped answering)
    /// before the job's end reached us: it may or may not have run, and it is not
    /// resubmitted. [`JobResult::job`] names it when it started.
    Lost {
        /// What happened to the connection.
        reason: String,
    },
    /// The worker refused the request itself (invalid argument, permission, a program
    /// that cannot start…): not retried.
    Refused(ErrorResponse),
    /// Never placed: the pool was closed while no worker was live, and every worker
    /// gave up reconnecting ([`PoolOptions::give_up_after`]).
    NoWorker {
        /// Each worker's last error.
        reason: String,
    },
}

/// One worker as the pool sees it now ([`Pool::workers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSnapshot {
    /// Its name.
    pub name: String,
    /// Connected, and answered `Info`.
    pub live: bool,
    /// The pool's jobs placed on it and not yet ended.
    pub running: u32,
    /// How many of the pool's jobs it may hold at once, from its last `Info` answer
    /// (or [`PoolOptions::default_capacity`]), at most [`PoolOptions::max_per_worker`];
    /// `None` before the first answer.
    pub capacity: Option<u32>,
    /// True while a start was refused for capacity and nothing freed room since.
    pub full: bool,
    /// Results it produced (ended, lost or refused jobs).
    pub done: u64,
    /// Starts it refused for capacity, each put back at the front of the queue.
    pub refused: u64,
    /// It stopped reconnecting (only after [`Pool::close`]).
    pub gave_up: bool,
    /// Why its last connection attempt or request failed.
    pub last_error: Option<String>,
}

/// A submission with its ticket.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) ticket: u64,
    pub(crate) submission: Submission,
}

/// What the pool's tasks share.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the dispatcher: a worker came or went, room was made, a refused
    /// submission came back.
    changed: Notify,
    options: PoolOptions,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A handle on a worker pool: cheap to clone, every clone submits to the same queue.
#[derive(Debug, Clone)]
pub struct Pool {
    inner: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    /// `None` once closed.
    queue: Mutex<Option<mpsc::Sender<Queued>>>,
    tickets: AtomicU64,
    shared: Arc<Shared>,
}

impl Handle {
    /// No more submissions: the queue ends once drained, and from now on dead
    /// workers may give up (`PoolOptions::give_up_after`).
    fn close(&self) {
        self.queue.lock().unwrap_or_else(|p| p.into_inner()).take();
        self.shared
            .lock()
            .closed_at
            .get_or_insert_with(std::time::Instant::now);
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.close();
    }
}

/// The pool's results, one per ticket, in the order they come.
///
/// Dropping it stops the pool: every task ends and every connection closes (jobs
/// started with `stop_on_detach` are then stopped by their servers). The close
/// frames leave when the connections' drivers next run; [`PoolResults::shutdown`]
/// also waits for that.
#[derive(Debug)]
pub struct PoolResults {
    rx: mpsc::Receiver<JobResult>,
    tasks: Tasks,
}

/// The dispatcher and worker tasks, aborted when the results are dropped.
#[derive(Debug)]
struct Tasks {
    handles: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Tasks {
    /// Aborts every task and takes the connections the state holds, for the caller to
    /// close.
    fn stop(&mut self) -> Vec<Arc<Client>> {
        for h in &self.handles {
            h.abort();
        }
        // The dispatcher's job tasks end with it.
        let mut state = self.shared.lock();
        let mut closed = Vec::new();
        for slot in &mut state.slots {
            if let Some(client) = slot.client.take() {
                closed.push(client);
            }
            slot.live = false;
        }
        state.retry.clear();
        closed
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for client in self.stop() {
            client.close();
        }
    }
}

impl Pool {
    /// Starts a pool over `workers` and returns once each made its first connection
    /// attempt (bounded by its `connect_timeout` and [`PoolOptions::info_timeout`]).
    /// Unreachable workers are not an error: they are dead and retried with back-off.
    pub async fn connect(
        workers: Vec<Worker>,
        options: PoolOptions,
    ) -> Result<(Pool, PoolResults), PoolError> {
        if workers.is_empty() {
            return Err(PoolError::NoWorkers);
        }
        options.validate()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(workers.iter().map(|w| w.name.clone()))),
            changed: Notify::new(),
            options: options.clone(),
        });
        let (queue_tx, queue_rx) = mpsc::channel(options.queue);
        let (results_tx, results_rx) = mpsc::channel(options.results);
        let (finished_tx, finished_rx) = watch::channel(false);

        let mut handles = Vec::with_capacity(workers.len() + 1);
        let mut first_attempts = Vec::with_capacity(workers.len());
        for (index, worker) in workers.into_iter().enumerate() {
            let (first_tx, first_rx) = oneshot::channel();
            first_attempts.push(first_rx);
            let mut config = worker.config;
            config.idle_timeout = config.idle_timeout.min(options.dead_after);
            handles.push(tokio::spawn(worker::run(
                Arc::clone(&shared),
                index,
                config,
                finished_rx.clone(),
                first_tx,
            )));
        }
        handles.push(tokio::spawn(dispatch::run(
            Arc::clone(&shared),
            queue_rx,
            results_tx,
            finished_tx,
        )));
        let tasks = Tasks {
            handles,
            shared: Arc::clone(&shared),
        };
        for first in first_attempts {
            // An error: the worker task ended (it cannot before its first attempt).
            let _ = first.await;
        }
        let pool = Pool {
            inner: Arc::new(Handle {
                queue: Mutex::new(Some(queue_tx)),
                tickets: AtomicU64::new(0),
                shared,
            }),
        };
        let results = PoolResults {
            rx: results_rx,
            tasks,
        };
        Ok((pool, results))
    }

    /// Queues a job and returns its ticket (0, 1, 2… in submission order). Waits while
    /// [`PoolOptions::queue`] submissions are queued and not yet placed.
    pub async fn submit(&self, job: Submission) -> Result<u64, PoolError> {
        let queue = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(PoolError::Closed)?;
        let permit = queue.reserve().await.map_err(|_| PoolError::Closed)?;
        let ticket = self.inner.tickets.fetch_add(1, Ordering::Relaxed);
        permit.send(Queued {
            ticket,
            submission: job,
        });
        Ok(ticket)
    }

    /// Takes no more submissions. Those queued are still placed; [`PoolResults::next`]
    /// returns `None` after the last result.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Each worker's state now, in the order given to [`Pool::connect`].
    pub fn workers(&self) -> Vec<WorkerSnapshot> {
        self.inner
            .shared
            .lock()
            .slots
            .iter()
            .map(|s| WorkerSnapshot {
                name: s.name.clone(),
                live: s.live,
                running: s.running,
                capacity: s.limit,
                full: s.full,
                done: s.done,
                refused: s.refusals,
                gave_up: s.gone,
                last_error: s.last_error.clone(),
            })
            .collect()
    }
}

impl PoolResults {
    /// The next result; `None` once the pool is closed and every submission has its
    /// result.
    pub async fn next(&mut self) -> Option<JobResult> {
        self.rx.recv().await
    }

    /// Stops the pool as dropping the results does, then waits (at most `limit`) until
    /// every connection's close frame has left ([`Client::close_and_send`]). Servers
    /// then stop the pool's `stop_on_detach` jobs at once (QX-STREAM-17), not after
    /// their grace period for a lost connection; a process about to exit calls this
    /// rather than drop.
    pub async fn shutdown(mut self, limit: Duration) {
        let mut closing = tokio::task::JoinSet::new();
        for client in self.tasks.stop() {
            closing.spawn(async move { client.close_and_send(limit).await });
        }
        closing.join_all().await;
    }
}
