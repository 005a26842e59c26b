//! The dispatcher task: takes one submission at a time (refused ones first, then the
//! queue), waits until a worker has room, places it and spawns its job task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::pool::state::Placement;
use crate::pool::{JobResult, Outcome, Queued, Shared, job};

/// Runs until the queue is closed and every submission has its result; then sets
/// `finished` (the worker tasks end) and drops its results sender (the results end
/// after the last job task's).
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Queued>,
    results: mpsc::Sender<JobResult>,
    finished: watch::Sender<bool>,
) {
    // Job tasks in flight: at most the workers' total capacity. Dropping the set (the
    // pool's results dropped, this task aborted) aborts them.
    let mut jobs = JoinSet::new();
    let mut pending: Option<Queued> = None;
    let mut queue_open = true;
    loop {
        if pending.is_none() {
            pending = shared.lock().retry.pop_front();
        }
        if let Some(next) = pending.take() {
            match place(&shared, next, &results, &mut jobs).await {
                None => continue,
                Some(waiting) => pending = Some(waiting),
            }
        } else if !queue_open && jobs.is_empty() && shared.lock().retry.is_empty() {
            break;
        }
        tokio::select! {
            Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
            () = shared.changed.notified() => {}
            next = queue.recv(), if queue_open && pending.is_none() => match next {
                Some(next) => pending = Some(next),
                None => queue_open = false,
            },
        }
    }
    let _ = finished.send(true);
}

/// Places `next` on the least-loaded live worker (spawning its job task), or reports
/// it `NoWorker`; gives it back when it must wait.
async fn place(
    shared: &Arc<Shared>,
    next: Queued,
    results: &mpsc::Sender<JobResult>,
    jobs: &mut JoinSet<()>,
) -> Option<Queued> {
    let placed = {
        let mut state = shared.lock();
        match state.place() {
            Placement::On(index) => {
                let slot = &mut state.slots[index];
                let client = slot.client.clone().expect("a live slot has its client");
                slot.running += 1;
                Ok((index, slot.name.clone(), client))
            }
            Placement::Wait => return Some(next),
            Placement::NoWorker => Err(state.why_no_worker()),
        }
    };
    match placed {
        Ok((index, name, client)) => {
            jobs.spawn(job::run(
                Arc::clone(shared),
                index,
                name,
                client,
                next,
                results.clone(),
            ));
        }
        Err(reason) => {
            let result = JobResult {
                ticket: next.ticket,
                worker: None,
                job: None,
                outcome: Outcome::NoWorker { reason },
                output: Vec::new(),
                output_truncated: false,
                elapsed: Duration::ZERO,
            };
            let _ = results.send(result).await;
        }
    }
    None
}
