//! The owner task of one worker: connects, asks `Info` every interval, and when the
//! connection is lost closes it and reconnects with doubling back-off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::client::Client;
use crate::config::ClientConfig;
use crate::pool::Shared;
use crate::pool::probe::{NoAnswer, probe};

/// How long a finished pool waits for a connection's close frame to leave.
const GOODBYE: Duration = Duration::from_millis(200);

/// Runs worker `index` until the pool is finished (`finished` turns true or its
/// sender goes) or, after the close, the worker gave up reconnecting. `first` is
/// told when the first connection attempt is over, either way.
pub(crate) async fn run(
    shared: Arc<Shared>,
    index: usize,
    config: ClientConfig,
    mut finished: watch::Receiver<bool>,
    first: oneshot::Sender<()>,
) {
    let options = &shared.options;
    let mut first = Some(first);
    let mut backoff = options.backoff_min;
    let mut dead_since = Instant::now();
    loop {
        let attempt = tokio::select! {
            a = connect(&shared, index, &config) => a,
            _ = finished.wait_for(|f| *f) => return,
        };
        match attempt {
            Ok(client) => {
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
                backoff = options.backoff_min;
                let lost = serve(&shared, index, &client, &mut finished).await;
                // Closing the connection ends the reads of the jobs still on it: each
                // reports itself lost.
                client.close();
                let Some(reason) = lost else {
                    client.wait_closed(GOODBYE).await;
                    return;
                };
                shared.lock().slots[index].died(reason);
                shared.changed.notify_one();
                dead_since = Instant::now();
                // Reconnect at once: a restarted server answers, a dead one refuses
                // fast (then back-off).
            }
            Err(reason) => {
                let gave_up = {
                    let mut state = shared.lock();
                    let closed_at = state.closed_at;
                    let slot = &mut state.slots[index];
                    slot.died(reason);
                    let gave_up = closed_at.is_some_and(|closed| {
                        closed.max(dead_since) + options.give_up_after <= Instant::now()
                    });
                    slot.gone = gave_up;
                    gave_up
                };
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
                if gave_up {
                    shared.changed.notify_one();
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = finished.wait_for(|f| *f) => return,
                }
                backoff = (backoff * 2).min(options.backoff_max);
            }
        }
    }
}

/// Connects and asks `Info` once; on success the worker is live.
async fn connect(
    shared: &Shared,
    index: usize,
    config: &ClientConfig,
) -> Result<Arc<Client>, String> {
    let client = Arc::new(Client::connect(config).await.map_err(|e| e.to_string())?);
    let n = shared.lock().slots[index].probe_sent();
    let load = probe(&client, shared.options.info_timeout)
        .await
        .map_err(NoAnswer::reason)?;
    {
        let mut state = shared.lock();
        let slot = &mut state.slots[index];
        slot.up(Arc::clone(&client));
        slot.probed(
            n,
            load.as_ref(),
            shared.options.default_capacity,
            shared.options.max_per_worker,
        );
        slot.last_error = None;
    }
    shared.changed.notify_one();
    Ok(client)
}

/// Asks `Info` every interval while the connection works; returns why it failed, or
/// `None` when the pool is finished. A late answer only stops placements until a
/// later `Info` answers.
async fn serve(
    shared: &Shared,
    index: usize,
    client: &Client,
    finished: &mut watch::Receiver<bool>,
) -> Option<String> {
    let interval = shared.options.info_interval;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = finished.wait_for(|f| *f) => return None,
        }
        let n = shared.lock().slots[index].probe_sent();
        let answer = tokio::select! {
            a = probe(client, shared.options.info_timeout) => a,
            _ = finished.wait_for(|f| *f) => return None,
        };
        match answer {
            Ok(load) => {
                shared.lock().slots[index].probed(
                    n,
                    load.as_ref(),
                    shared.options.default_capacity,
                    shared.options.max_per_worker,
                );
                shared.changed.notify_one();
            }
            Err(NoAnswer::Late(reason)) => {
                // Slow is not dead: no new jobs until it answers, but its connection
                // (and the jobs on it) stay until QUIC finds the connection lost.
                shared.lock().slots[index].lost_one(reason);
            }
            Err(NoAnswer::Failed(reason)) => return Some(reason),
        }
    }
}
