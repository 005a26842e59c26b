//! Each connection on a thread of its own.
//!
//! A connection's QUIC driver (packets decrypted and encrypted, streams framed) and
//! every task of the connection (its control streams, output streams and stdin
//! pumps) run on a single-threaded runtime, on an OS thread of the connection's own.
//!
//! Why: a bulk transfer keeps the threads that serve it busy all the time, and the
//! kernel preempts them like any CPU-bound thread; a terminal's connection sleeps
//! between keystrokes, and the scheduler runs a thread that wakes from sleep ahead of
//! those that have been running (sshd has the same from its process per
//! connection). On one runtime shared by all connections, a keystroke's tasks waited
//! in the workers' queues behind the bulk connection's, on workers that were
//! themselves preempted: bench/README.md, "Keystrokes behind bulk output".
//!
//! What stays on the main runtime: the endpoint's driver (it receives every datagram
//! and hands it to its connection's thread), the jobs' supervisors and the
//! detached-job watchers (a job outlives the connection that started it).
//!
//! Ownership: [`serve`] is the connection's task in [`super::Server::run`]'s set. It
//! waits for the thread; dropping it (aborted at shutdown) tells the thread to stop
//! serving. The thread keeps its runtime after serving until the connection's driver
//! has ended (the close sent, the connection drained), at most [`DRAIN_LIMIT`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Shared;
use super::caps::Slot;
use super::conn;

/// Longest a connection's thread waits for its QUIC driver after serving (the
/// draining period is three probe timeouts: well under this on any usable path).
const DRAIN_LIMIT: Duration = Duration::from_secs(10);
/// How often the thread looks whether its driver has ended.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// Serves the connection `incoming` on a new thread; returns once the thread ends.
pub(crate) async fn serve(shared: Arc<Shared>, incoming: quinn::Incoming, handshake: Slot) {
    let peer = incoming.remote_address();
    let (stop, stopped) = oneshot::channel::<()>();
    let (done, ended) = oneshot::channel::<()>();
    // The thread logs where this task would have: the same subscriber (a test's
    // thread-local one too) and span.
    let dispatch = tracing::dispatcher::get_default(Clone::clone);
    let span = tracing::Span::current();
    let spawned = std::thread::Builder::new()
        .name("qexec-conn".into())
        .spawn(move || {
            let _done = done;
            tracing::dispatcher::with_default(&dispatch, || {
                span.in_scope(|| run(shared, incoming, handshake, stopped));
            });
        });
    if let Err(e) = spawned {
        // The closure, and with it `incoming`, is dropped: quinn refuses it.
        tracing::warn!(%peer, error = %e, "connection refused: cannot start its thread");
        return;
    }
    // Dropped when this task ends or is aborted: the thread stops serving.
    let _stop = stop;
    let _ = ended.await;
}

/// The connection thread: serves until the connection ends or `stopped` fires (its
/// sender dropped), then waits for the driver.
fn run(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    handshake: Slot,
    stopped: oneshot::Receiver<()>,
) {
    let peer = incoming.remote_address();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "connection refused: cannot build its runtime");
            return;
        }
    };
    runtime.block_on(async {
        tokio::select! {
            // `incoming.accept()` inside spawns the connection's driver on this
            // thread's runtime (quinn spawns on the current one).
            () = conn::serve(shared, incoming, handshake) => {}
            _ = stopped => {}
        }
        drained().await;
    });
}

/// Waits until no task is left on this thread's runtime: the connection's driver
/// ends once its close was sent and the connection drained. At most
/// [`DRAIN_LIMIT`]; dropping the runtime after that drops the driver, which tells
/// the endpoint the connection is gone.
async fn drained() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let deadline = Instant::now() + DRAIN_LIMIT;
    while metrics.num_alive_tasks() > 0 {
        if Instant::now() >= deadline {
            tracing::debug!(
                tasks = metrics.num_alive_tasks(),
                "a connection's tasks outlived its drain limit; dropping them"
            );
            return;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}
