//! One job in flight: start it on its worker, feed its stdin, read its output to the
//! end, report.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use qexec_protocol::{ErrorCode, ErrorResponse, JobId};

use crate::client::{Client, StartedJob};
use crate::error::ClientError;
use crate::output::OutputEvent;
use crate::pool::state::Slot;
use crate::pool::{JobResult, Outcome, Queued, Shared};

/// What to do with a start that failed.
#[derive(Debug, PartialEq)]
enum StartFailure {
    /// Not started for want of room (or because the server shuts down): back to the
    /// front of the queue, the worker marked full.
    Requeue,
    /// The request itself was refused.
    Refused(ErrorResponse),
    /// The connection failed: the job may have started.
    Lost(String),
}

fn classify(e: &ClientError) -> StartFailure {
    match e {
        // spec: QX-SRV-2 (a limit reached: ResourceExhausted, nothing started)
        _ if e.code() == Some(ErrorCode::ResourceExhausted) => StartFailure::Requeue,
        ClientError::ShuttingDown { .. } => StartFailure::Requeue,
        // The control stream could not even be opened: nothing was sent.
        ClientError::RequestTimeout {
            request: "stream-open",
            ..
        } => StartFailure::Requeue,
        ClientError::Spawn { failure, message } => StartFailure::Refused(ErrorResponse {
            code: ErrorCode::SpawnFailed,
            message: message.clone(),
            spawn: Some(*failure),
        }),
        ClientError::Server { code, message } => StartFailure::Refused(ErrorResponse {
            code: *code,
            message: message.clone(),
            spawn: None,
        }),
        ClientError::NotFound { .. } => StartFailure::Refused(ErrorResponse {
            code: ErrorCode::NotFound,
            message: e.to_string(),
            spawn: None,
        }),
        other => StartFailure::Lost(other.to_string()),
    }
}

/// Puts `queued`, which never started on worker `index`, back at the front of the
/// queue: the worker's slot stops counting it, `mark` records why on the slot, and the
/// dispatcher is woken to place it again.
fn requeue(shared: &Shared, index: usize, queued: Queued, mark: impl FnOnce(&mut Slot)) {
    let mut state = shared.lock();
    let slot = &mut state.slots[index];
    slot.running = slot.running.saturating_sub(1);
    mark(slot);
    state.retry.push_front(queued);
    drop(state);
    shared.changed.notify_one();
}

/// Runs `queued` on worker `index` (its slot already counts it) and reports: a
/// result on `results`, or the submission back in the retry queue.
pub(crate) async fn run(
    shared: Arc<Shared>,
    index: usize,
    name: String,
    client: Arc<Client>,
    queued: Queued,
    results: mpsc::Sender<JobResult>,
) {
    let placed = Instant::now();
    if client.is_closed() {
        // The worker's connection went away since its last `Info`: nothing was sent,
        // so the submission goes back to the front of the queue for another worker.
        requeue(&shared, index, queued, |slot| {
            slot.lost_one("its connection closed".into());
        });
        return;
    }
    let ticket = queued.ticket;
    let mut request = queued.submission.request.clone();
    request.follow = true;
    request.stdin = queued.submission.stdin.is_some();
    let started = match client.start(request).await {
        Ok(started) => started,
        Err(e) => {
            let outcome = match classify(&e) {
                StartFailure::Requeue => {
                    requeue(&shared, index, queued, |slot| {
                        slot.refused();
                        slot.last_error = Some(e.to_string());
                    });
                    return;
                }
                StartFailure::Refused(r) => Outcome::Refused(r),
                StartFailure::Lost(reason) => Outcome::Lost { reason },
            };
            let result = JobResult {
                ticket,
                worker: Some(name),
                job: None,
                outcome,
                output: Vec::new(),
                output_truncated: false,
                elapsed: placed.elapsed(),
            };
            report(&shared, index, false, result, &results).await;
            return;
        }
    };
    let job = started.job;
    let (outcome, output, output_truncated) = follow(
        started,
        queued.submission.stdin,
        queued.submission.keep_output,
    )
    .await;
    let ended = matches!(outcome, Outcome::Ended(_));
    let result = JobResult {
        ticket,
        worker: Some(name),
        job: Some(job),
        outcome,
        output,
        output_truncated,
        elapsed: placed.elapsed(),
    };
    report(&shared, index, ended, result, &results).await;
}

/// Frees the job's place on its worker, then hands the result over (waiting while
/// the results channel is full; dropped when the results are gone).
async fn report(
    shared: &Shared,
    index: usize,
    ended: bool,
    result: JobResult,
    results: &mpsc::Sender<JobResult>,
) {
    {
        let mut state = shared.lock();
        let slot = &mut state.slots[index];
        slot.finished(ended);
        if let Outcome::Lost { reason } = &result.outcome {
            // Its connection failed: place nothing more there until it answers again.
            slot.lost_one(reason.clone());
        }
    }
    shared.changed.notify_one();
    let _ = results.send(result).await;
}

/// Writes `stdin` then end-of-input while reading the output to its end; keeps the
/// first `keep` bytes.
async fn follow(
    mut started: StartedJob,
    stdin: Option<bytes::Bytes>,
    keep: usize,
) -> (Outcome, Vec<u8>, bool) {
    let job = started.job;
    let mut kept = Vec::new();
    let mut total: u64 = 0;
    let Some(mut output) = started.output.take() else {
        // `Client::start` with `follow` always subscribes.
        let reason = format!("job {job}: the server opened no output stream");
        return (Outcome::Lost { reason }, kept, false);
    };
    let writer = started.stdin.take();
    let feed = async move {
        if let (Some(mut writer), Some(data)) = (writer, stdin) {
            // A job that exits without reading all of it stops the stream: its output
            // and end status still come, so a failed write is not the job's outcome.
            if writer.write(&data).await.is_ok() {
                let _ = writer.eof().await;
            }
        }
    };
    tokio::pin!(feed);
    let mut feeding = true;
    let outcome = loop {
        let event = tokio::select! {
            () = &mut feed, if feeding => {
                feeding = false;
                continue;
            }
            e = output.next() => e,
        };
        match event {
            Ok(Some(OutputEvent::Data { data, .. })) => {
                total += data.len() as u64;
                let room = keep.saturating_sub(kept.len());
                kept.extend_from_slice(&data[..room.min(data.len())]);
            }
            Ok(Some(OutputEvent::End(status))) => break Outcome::Ended(status),
            Ok(None) => {
                break Outcome::Lost {
                    reason: format!("job {job}: its output stream ended without an end status"),
                };
            }
            Err(e) => break lost(job, &e),
        }
    };
    // `started` (its control stream) lives until here: a `stop_on_detach` job is
    // only stopped when the pool really goes away.
    drop(started);
    let truncated = total > kept.len() as u64;
    (outcome, kept, truncated)
}

fn lost(job: JobId, e: &ClientError) -> Outcome {
    Outcome::Lost {
        reason: format!("job {job}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use qexec_protocol::SpawnFailure;

    use super::*;

    #[test]
    fn capacity_refusals_go_back_to_the_queue() {
        let full = ClientError::Server {
            code: ErrorCode::ResourceExhausted,
            message: "user alice already has 8 running jobs".into(),
        };
        assert_eq!(classify(&full), StartFailure::Requeue);
        let shutting = ClientError::ShuttingDown { addr: "a:1".into() };
        assert_eq!(classify(&shutting), StartFailure::Requeue);
        let unopened = ClientError::RequestTimeout {
            addr: "a:1".into(),
            request: "stream-open",
            after: std::time::Duration::from_secs(1),
        };
        assert_eq!(classify(&unopened), StartFailure::Requeue);
    }

    #[test]
    fn request_refusals_are_results() {
        let bad = ClientError::Server {
            code: ErrorCode::InvalidArgument,
            message: "empty argv".into(),
        };
        assert_eq!(
            classify(&bad),
            StartFailure::Refused(ErrorResponse {
                code: ErrorCode::InvalidArgument,
                message: "empty argv".into(),
                spawn: None,
            })
        );
        let spawn = ClientError::Spawn {
            failure: SpawnFailure::NotFound,
            message: "no such program".into(),
        };
        assert_eq!(
            classify(&spawn),
            StartFailure::Refused(ErrorResponse {
                code: ErrorCode::SpawnFailed,
                message: "no such program".into(),
                spawn: Some(SpawnFailure::NotFound),
            })
        );
    }

    #[test]
    fn connection_failures_are_lost() {
        let gone = ClientError::ConnectionLost {
            addr: "a:1".into(),
            reason: "reset".into(),
        };
        assert!(matches!(classify(&gone), StartFailure::Lost(r) if r.contains("reset")));
        // The start was sent and not answered: it may have run.
        let slow = ClientError::RequestTimeout {
            addr: "a:1".into(),
            request: "start",
            after: std::time::Duration::from_secs(1),
        };
        assert!(matches!(classify(&slow), StartFailure::Lost(_)));
    }
}
