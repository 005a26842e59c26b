//! The network face of the job library: a QUIC endpoint speaking spec/protocol.md with
//! mutual TLS, per-request authorization and audit logging.
//!
//! Structure (one concern per file):
//! - TLS settings, certificate loading and the identity-checking verifier are
//!   `qexec-tls`'s ([`qexec_tls::server_crypto`]), shared with the client;
//! - `authz`: the authorization table ([`authorize`]);
//! - `config`: [`ServerConfig`] and its defaults;
//! - `caps`: handshake and connection slots, per-identity caps (spec/security.md
//!   QX-SRV-9, QX-SRV-10);
//! - `escape`: peer-controlled text made safe for one log line (QX-SRV-13);
//! - `request`: decode → validate → authorize as plain functions (fuzzable);
//! - `conn`: one task per connection, one per control stream;
//! - `output`: output streams (job output → `OutputFrame`s);
//! - `handlers/`: one file per request kind.
//!
//! Task ownership: [`Server::run`] owns one task per connection (a `JoinSet`); a
//! connection task owns one task per control stream; a control-stream task runs its
//! output stream and stdin pump inline. Closing a connection ends its stream tasks
//! (every wait also watches the connection); [`Server::shutdown`] stops jobs, closes
//! every connection with `ShuttingDown` and ends all tasks.
//!
//! Flow control (spec/security.md, "Flow control"): the server advertises a per-stream
//! receive window of [`STREAM_RECEIVE_WINDOW`] (one maximum frame plus headroom) and a
//! per-connection window of [`CONNECTION_RECEIVE_WINDOW`] (eight streams' worth), so a
//! client whose job does not read its stdin stalls only that stream. On output the
//! server writes each stream only as far as the *client's* per-stream window allows;
//! a follower that stops reading blocks its own stream, while the others keep the
//! connection window. Control streams are sent at a higher priority than output.

mod authz;
mod caps;
mod config;
mod conn;
mod escape;
mod handlers;
mod output;
pub mod request;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qexec_protocol::{ErrorCode, JobId, StopReason, limits};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::job::{JobManager, ManagerConfig};

pub use authz::{Decision, Op, authorize, visible};
pub use config::{DEFAULT_DETACH_GRACE, ServerConfig, default_state_dir, request_buffer_minimum};
pub use qexec_tls::{
    CLIENT_CONNECTION_RECEIVE_WINDOW, CLIENT_STREAM_RECEIVE_WINDOW, CONNECTION_RECEIVE_WINDOW,
    SEND_WINDOW, STREAM_RECEIVE_WINDOW, TlsError, TlsSource,
};

/// Send priority of control streams (higher is sent first).
const CONTROL_PRIORITY: i32 = 1;
/// Send priority of output streams (one that has carried more than 1 MiB drops one
/// lower, see `output::pump`).
const OUTPUT_PRIORITY: i32 = 0;
/// Send priority of a terminal job's output stream opened by its own `StartTerminal`
/// (keystroke echoes): above bulk output, below control streams.
const TERMINAL_OUTPUT_PRIORITY: i32 = 1;

/// Failure to start serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP socket could not be bound.
    #[error("cannot listen on {addr}: {source} (is another qexecd running? use --listen)")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The job manager could not be created.
    #[error("cannot start the job manager in {state_dir}: {source}")]
    Manager {
        /// The state directory.
        state_dir: PathBuf,
        /// The manager's error.
        source: crate::job::ManagerError,
    },
    /// A transport setting is out of range.
    #[error("invalid transport setting {setting}: {reason}")]
    Transport {
        /// Which setting.
        setting: &'static str,
        /// Why.
        reason: String,
    },
}

/// A set of tasks owned by one owner: finished ones are reaped as new ones start;
/// [`Tasks::shutdown`] aborts and joins the rest.
#[derive(Debug, Default)]
pub(crate) struct Tasks(Mutex<JoinSet<()>>);

impl Tasks {
    pub(crate) fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
        while set.try_join_next().is_some() {}
        set.spawn(fut);
    }

    pub(crate) async fn shutdown(&self) {
        let mut set = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        set.abort_all();
        while set.join_next().await.is_some() {}
    }
}

/// Running-job counts per user, for `max_jobs_per_user`.
#[derive(Debug, Default)]
pub(crate) struct UserJobs(Arc<Mutex<std::collections::HashMap<String, usize>>>);

/// One reserved running-job slot of a user; released on drop.
#[derive(Debug)]
pub(crate) struct UserSlot {
    counts: Arc<Mutex<std::collections::HashMap<String, usize>>>,
    user: String,
}

impl UserJobs {
    /// `user`'s reserved slots now: its running jobs and the ones being started
    /// (spec: QX-INFO-4).
    pub(crate) fn running(&self, user: &str) -> usize {
        let counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(user).copied().unwrap_or(0)
    }

    /// Reserves a slot for `user`, `None` when it already has `max` running.
    pub(crate) fn reserve(&self, user: &str, max: usize) -> Option<UserSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(user.to_owned()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(UserSlot {
            counts: self.0.clone(),
            user: user.to_owned(),
        })
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.user);
            }
        }
    }
}

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) manager: JobManager,
    pub(crate) request_timeout: Duration,
    pub(crate) max_jobs_per_user: usize,
    /// See [`ServerConfig::max_jobs`] (answered in `Info`, spec: QX-INFO-3).
    pub(crate) max_jobs: usize,
    /// CPUs the jobs can use, probed once at start-up (spec: QX-INFO-5).
    pub(crate) cpus: u32,
    pub(crate) max_subscriptions_per_connection: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) request_buffer_per_connection: usize,
    pub(crate) idle_connection_timeout: Option<Duration>,
    /// Authenticated connections (spec: QX-SRV-1).
    pub(crate) authenticated: caps::Slots,
    /// Per-identity caps (spec: QX-SRV-9).
    pub(crate) identities: caps::Identities,
    /// One log line a second for refusals before the handshake (spec: QX-SRV-13).
    pub(crate) refusals: caps::Throttle,
    /// One log line a second for abandoned handshakes (spec: QX-SRV-13).
    pub(crate) abandoned: caps::Throttle,
    pub(crate) user_jobs: UserJobs,
    /// One watcher per running job (releases its user slot when it ends).
    pub(crate) job_watchers: Tasks,
    /// Set once shutdown began: new requests are refused, output streams reset.
    pub(crate) shutting_down: watch::Sender<bool>,
    /// See [`ServerConfig::detach_grace`].
    pub(crate) detach_grace: Duration,
    /// Who follows which job (for the detach grace period).
    pub(crate) follows: Follows,
}

/// How many output subscriptions (`Attach`) each identity holds on each job, and a
/// counter bumped on every change: a `stop_on_detach` job in its grace period is kept
/// while its owner follows it anywhere (spec: QX-STREAM-24).
#[derive(Debug)]
pub(crate) struct Follows {
    counts: Mutex<std::collections::HashMap<(JobId, String), usize>>,
    changed: watch::Sender<u64>,
}

impl Default for Follows {
    fn default() -> Self {
        Self {
            counts: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Follows {
    fn add(&self, key: (JobId, String), delta: isize) {
        {
            let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
            let n = counts.entry(key.clone()).or_default();
            *n = n.saturating_add_signed(delta);
            if *n == 0 {
                counts.remove(&key);
            }
        }
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Subscriptions `who` holds on `job` now.
    fn count(&self, job: JobId, who: &str) -> usize {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.get(&(job, who.to_owned())).copied().unwrap_or(0)
    }
}

/// One subscription of `who` on `job`, counted while alive.
#[derive(Debug)]
pub(crate) struct Following {
    shared: Arc<Shared>,
    key: (JobId, String),
}

impl Drop for Following {
    fn drop(&mut self) {
        self.shared.follows.add(self.key.clone(), -1);
    }
}

impl Shared {
    /// Counts a subscription of `who` on `job` until the returned guard is dropped.
    pub(crate) fn following(self: &Arc<Self>, job: JobId, who: &str) -> Following {
        let key = (job, who.to_owned());
        self.follows.add(key.clone(), 1);
        Following {
            shared: self.clone(),
            key,
        }
    }

    /// A `stop_on_detach` job whose connection was lost: kept while its owner follows
    /// it on any connection (`qexec run` reconnects and attaches from its offset), and
    /// stopped `Detached` once nobody of its owner has followed it for the grace
    /// period. `stdin` (held open so the job sees no EOF before a stop) is closed when
    /// the owner follows it again: no connection can write to it any more. Runs on a
    /// task of its own, not on the (ended) connection's. spec: QX-STREAM-24
    pub(crate) fn keep_detached(
        self: &Arc<Self>,
        id: JobId,
        owner: String,
        mut stdin: Option<crate::job::JobStdin>,
    ) {
        let shared = self.clone();
        self.job_watchers.spawn(async move {
            let mut changes = shared.follows.changed.subscribe();
            loop {
                // Followed by its owner somewhere: kept.
                while shared.follows.count(id, &owner) > 0 {
                    drop(stdin.take());
                    tokio::select! {
                        _ = shared.manager.wait(id) => return,
                        r = changes.changed() => if r.is_err() { return },
                    }
                }
                tracing::info!(job = %id, user = %owner, grace = ?shared.detach_grace,
                    "client gone: keeping its job through the grace period");
                let deadline = tokio::time::Instant::now() + shared.detach_grace;
                loop {
                    tokio::select! {
                        _ = shared.manager.wait(id) => return,
                        () = tokio::time::sleep_until(deadline) => {
                            tracing::info!(job = %id, user = %owner, "grace period over: stopping job");
                            if let Err(e) = shared.manager.stop(id, None, StopReason::Detached).await {
                                tracing::warn!(job = %id, error = %e, "stopping a detached job failed");
                            }
                            return;
                        }
                        r = changes.changed() => {
                            if r.is_err() {
                                return;
                            }
                            if shared.follows.count(id, &owner) > 0 {
                                tracing::info!(job = %id, user = %owner, "its owner follows the job again");
                                break;
                            }
                        }
                    }
                }
            }
        });
    }

    /// Holds `slot` until job `id` has ended.
    pub(crate) fn watch_job(&self, id: JobId, slot: UserSlot) {
        let manager = self.manager.clone();
        self.job_watchers.spawn(async move {
            let _slot = slot;
            let _ = manager.wait(id).await;
        });
    }
}

/// True when the peer closed `conn` itself (CONNECTION_CLOSE from the client): it
/// meant to go. A timeout, a reset or our own close is not that.
pub(crate) fn closed_by_client(conn: &quinn::Connection) -> bool {
    matches!(
        conn.close_reason(),
        Some(quinn::ConnectionError::ApplicationClosed(_))
    )
}

/// A bound qexec server.
#[derive(Debug)]
pub struct Server {
    endpoint: quinn::Endpoint,
    /// Shared by every connection's congestion controller; opened at shutdown so that
    /// each connection's close packet leaves ([`qexec_tls::CloseGate`]).
    close_gate: qexec_tls::CloseGate,
    shared: Arc<Shared>,
    /// Connections in their handshake (spec: QX-SRV-10).
    handshakes: caps::Slots,
    retry_threshold: usize,
}

impl Server {
    /// Loads TLS material, prepares the job manager and binds the UDP socket.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServeError> {
        let crypto = qexec_tls::server_crypto(&config.tls)?;
        // spec: QX-SRV-1, QX-SRV-3, QX-SRV-5
        let mut transport = quinn::TransportConfig::default();
        qexec_tls::tune_path(&mut transport);
        let close_gate = qexec_tls::CloseGate::new();
        transport.congestion_controller_factory(close_gate.controller_factory());
        transport
            .max_concurrent_bidi_streams(config.max_streams_per_connection.into())
            .max_concurrent_uni_streams(limits::MAX_CLIENT_UNI_STREAMS.into())
            .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
            .receive_window(CONNECTION_RECEIVE_WINDOW.into())
            .send_window(SEND_WINDOW)
            .keep_alive_interval(Some(config.keep_alive))
            .max_idle_timeout(Some(config.idle_timeout.try_into().map_err(|e| {
                ServeError::Transport {
                    setting: "idle timeout",
                    reason: format!("{e}"),
                }
            })?));
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        server_config.transport_config(Arc::new(transport));
        // spec: QX-SRV-11: room for one whole reservation besides every stream's first.
        let least = request_buffer_minimum(config.max_streams_per_connection);
        if config.request_buffer_per_connection < least {
            return Err(ServeError::Transport {
                setting: "request buffer per connection",
                reason: format!(
                    "{} bytes is less than one largest request frame plus a read ({least} \
                     bytes with {} streams per connection)",
                    config.request_buffer_per_connection, config.max_streams_per_connection
                ),
            });
        }

        let mut mc = ManagerConfig::new(config.state_dir.clone());
        mc.max_running_jobs = config.max_jobs;
        mc.output_cap = config.output_cap;
        mc.retain_finished = config.retain_per_user;
        mc.retain_age = config.retain_age;
        mc.log_budget = config.log_budget;
        mc.isolation = config.isolation;
        mc.seccomp = config.seccomp;
        mc.cgroup_subtree = config.cgroup_subtree.clone();
        mc.job_credentials = config.job_credentials;
        mc.default_limits = config.default_limits.clone();
        mc.max_limits = config.max_limits.clone();
        mc.sandbox = config.sandbox.clone();
        // spec: QX-SBX-10 (qexecd's PKI and configuration masked in every job)
        if let TlsSource::Files { ca, cert, key } = &config.tls {
            for file in [ca, cert, key] {
                let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.clone());
                if let Some(dir) = file.parent().filter(|d| d.parent().is_some()) {
                    mc.sandbox.masked_paths.push(dir.to_path_buf());
                }
                mc.sandbox.masked_paths.push(file);
            }
        }
        let manager = JobManager::new(mc)
            .await
            .map_err(|source| ServeError::Manager {
                state_dir: config.state_dir.clone(),
                source,
            })?;

        let endpoint =
            qexec_tls::bind_endpoint(config.listen, Some(server_config)).map_err(|source| {
                ServeError::Bind {
                    addr: config.listen,
                    source,
                }
            })?;
        let caps = manager.capabilities();
        if let Some(why) = &caps.isolation_unavailable {
            tracing::warn!(reason = %why, "jobs run WITHOUT namespace isolation");
        }
        // spec: QX-SBX-13
        if let Some(why) = &caps.sandbox_unavailable {
            if config.sandbox.insecure_root_jobs {
                tracing::warn!(
                    reason = %why,
                    "INSECURE: the job sandbox is not active and --insecure-root-jobs is set: \
                     every user's jobs run as host root"
                );
            } else {
                tracing::warn!(
                    reason = %why,
                    "the job sandbox is not active: only admins may start jobs that run as host root"
                );
            }
        }
        tracing::info!(
            listen = %endpoint.local_addr().unwrap_or(config.listen),
            state_dir = %config.state_dir.display(),
            isolation = caps.isolation,
            seccomp = caps.seccomp,
            sandbox = caps.sandbox,
            "qexecd listening"
        );
        Ok(Server {
            close_gate,
            endpoint,
            shared: Arc::new(Shared {
                manager,
                request_timeout: config.request_timeout,
                max_jobs_per_user: config.max_jobs_per_user,
                max_jobs: config.max_jobs,
                cpus: handlers::info::available_cpus(),
                max_subscriptions_per_connection: config.max_subscriptions_per_connection,
                handshake_timeout: config.handshake_timeout,
                request_buffer_per_connection: config.request_buffer_per_connection,
                idle_connection_timeout: config.idle_connection_timeout,
                authenticated: caps::Slots::new(config.max_connections),
                identities: caps::Identities::new(caps::IdentityCaps {
                    connections: config.max_connections_per_identity,
                    subscriptions: config.max_subscriptions_per_identity,
                    requests: config.max_requests_per_identity,
                }),
                refusals: caps::Throttle::new(Duration::from_secs(1)),
                abandoned: caps::Throttle::new(Duration::from_secs(1)),
                user_jobs: UserJobs::default(),
                job_watchers: Tasks::default(),
                shutting_down: watch::channel(false).0,
                detach_grace: config.detach_grace,
                follows: Follows::default(),
            }),
            handshakes: caps::Slots::new(config.max_handshakes),
            retry_threshold: config.retry_threshold,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint
            .local_addr()
            .expect("a bound quinn endpoint has a local address")
    }

    /// The job manager behind the server.
    pub fn manager(&self) -> &JobManager {
        &self.shared.manager
    }

    /// Accepts connections until [`Server::shutdown`]; returns once every connection
    /// task has ended.
    pub async fn run(&self) {
        let mut conns = JoinSet::new();
        let mut stop = self.shared.shutting_down.subscribe();
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    let Some(handshake) = self.admit(incoming) else { continue };
                    let (incoming, slot) = handshake;
                    let shared = self.shared.clone();
                    conns.spawn(conn::serve(shared, incoming, slot));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        // Connections end when shutdown closes the endpoint; bound the wait anyway.
        let drained = tokio::time::timeout(Duration::from_secs(30), async {
            while conns.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("connection tasks did not end in 30 s; aborting them");
            conns.shutdown().await;
        }
    }

    /// Decides what to do with a new connection attempt before any TLS work: a
    /// Retry for an unvalidated address under load, a refusal past the caps, or a
    /// handshake slot (spec: QX-SRV-1, QX-SRV-10).
    fn admit(&self, incoming: quinn::Incoming) -> Option<(quinn::Incoming, caps::Slot)> {
        let peer = incoming.remote_address();
        // spec: QX-SRV-10. A Retry costs the server no state and sends fewer bytes
        // than it received, so a flood of Initials from spoofed or silent sources
        // holds no handshake slot and is not amplified.
        if !incoming.remote_address_validated()
            && self.handshakes.in_use() >= self.retry_threshold
            && incoming.may_retry()
        {
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
            return None;
        }
        // spec: QX-SRV-1. No slot could be had after the handshake anyway.
        if self.shared.authenticated.is_full() {
            if let Some(left_out) = self.shared.refusals.hit(Instant::now()) {
                tracing::warn!(
                    %peer,
                    max = self.shared.authenticated.max(),
                    left_out,
                    "connection refused: too many connections"
                );
            }
            incoming.refuse();
            return None;
        }
        let Some(slot) = self.handshakes.try_take() else {
            if let Some(left_out) = self.shared.refusals.hit(Instant::now()) {
                tracing::warn!(
                    %peer,
                    max = self.handshakes.max(),
                    left_out,
                    "connection refused: too many handshakes in flight"
                );
            }
            incoming.refuse();
            return None;
        };
        Some((incoming, slot))
    }

    /// Graceful shutdown (spec: QX-ERR-8): stop accepting, answer new requests and
    /// reset open output streams with `ShuttingDown`, stop every job (reason
    /// `Shutdown`), close every connection with `ShuttingDown`, end all tasks.
    pub async fn shutdown(&self) {
        // spec: QX-SRV-8
        tracing::info!("shutting down: no new connections, stopping jobs");
        self.shared.shutting_down.send_replace(true);
        self.endpoint.set_server_config(None);
        self.shared.manager.shutdown().await;
        self.close_gate.open();
        self.endpoint.close(
            ErrorCode::ShuttingDown.as_u32().into(),
            b"qexecd is shutting down",
        );
        self.shared.job_watchers.shutdown().await;
        if tokio::time::timeout(Duration::from_secs(5), self.endpoint.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!("connections did not close cleanly within 5 s");
        }
        tracing::info!("shutdown complete");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_slots_are_counted_and_released() {
        let jobs = UserJobs::default();
        let a1 = jobs.reserve("alice", 2).unwrap();
        let _a2 = jobs.reserve("alice", 2).unwrap();
        assert!(jobs.reserve("alice", 2).is_none());
        let _b = jobs.reserve("bob", 2).unwrap();
        // spec: QX-INFO-4 — what Info reports per caller.
        assert_eq!((jobs.running("alice"), jobs.running("bob")), (2, 1));
        assert_eq!(jobs.running("carol"), 0);
        drop(a1);
        assert_eq!(jobs.running("alice"), 1);
        let _a3 = jobs.reserve("alice", 2).unwrap();
        assert!(jobs.reserve("alice", 2).is_none());
        assert_eq!(jobs.running("alice"), 2);
    }

    #[tokio::test]
    async fn tasks_are_reaped_and_aborted() {
        let tasks = Tasks::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        tasks.shutdown().await;
        // The task was aborted: its sender is dropped.
        assert!(rx.await.is_err());
    }
}
