//! The network face of the job library: a QUIC endpoint speaking spec/protocol.md with
//! mutual TLS, per-request authorization and audit logging.
//!
//! Structure (one concern per file):
//! - TLS settings, certificate loading and the identity-checking verifier are
//!   `qexec-tls`'s ([`qexec_tls::server_crypto`]), shared with the client;
//! - `authz`: the authorization table ([`authorize`]);
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
mod conn;
mod handlers;
mod output;
pub mod request;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qexec_protocol::{ErrorCode, JobId, Limits, limits};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::job::{JobManager, ManagerConfig, SandboxConfig};
use qexec_tls::PkiPaths;

pub use authz::{Decision, Op, authorize, visible};
pub use qexec_tls::{
    CLIENT_CONNECTION_RECEIVE_WINDOW, CLIENT_STREAM_RECEIVE_WINDOW, CONNECTION_RECEIVE_WINDOW,
    SEND_WINDOW, STREAM_RECEIVE_WINDOW, TlsError, TlsSource,
};

/// Send priority of control streams (higher is sent first).
const CONTROL_PRIORITY: i32 = 1;
/// Send priority of output streams.
const OUTPUT_PRIORITY: i32 = 0;

/// Everything a [`Server`] needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// CA, server certificate and key.
    pub tls: TlsSource,
    /// Job state directory: the job database and the output logs, kept across
    /// restarts (spec: QX-DUR-1).
    pub state_dir: PathBuf,
    /// Most output bytes kept per job; past it the job is stopped with
    /// `Stopped { OutputLimit }` and `output_truncated` (spec: QX-DUR-7). Default 8 GiB.
    pub output_cap: u64,
    /// Ended jobs kept per owner (spec: QX-DUR-3). Default 1000.
    pub retain_per_user: usize,
    /// Ended jobs are forgotten this long after their end; `None`: never by age.
    /// Default 30 days.
    pub retain_age: Option<Duration>,
    /// Total bytes of ended jobs' output logs; past it the oldest ended jobs of any
    /// owner are forgotten, each logged (spec: QX-DUR-4). Default 16 GiB.
    pub log_budget: u64,
    /// Run jobs in their own namespaces (when the host allows it; the job library
    /// reports why not otherwise).
    pub isolation: bool,
    /// Run every job's program under the default seccomp filter (see
    /// `ManagerConfig::seccomp`). Default: on; off weakens isolation.
    pub seccomp: bool,
    /// Most jobs running at once.
    pub max_jobs: usize,
    /// Most jobs one user may have running at once (→ `ResourceExhausted`).
    pub max_jobs_per_user: usize,
    /// Most connections at once; more are refused before the handshake.
    pub max_connections: usize,
    /// Most concurrent client-opened (control) streams per connection.
    pub max_streams_per_connection: u32,
    /// Most concurrent subscriptions (output streams) per connection; past it
    /// `Attach`/`Start{follow}` are answered `ResourceExhausted`.
    pub max_subscriptions_per_connection: usize,
    /// A request must arrive complete this soon after its stream opened (→ `Timeout`).
    pub request_timeout: Duration,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Interval of keep-alive pings.
    pub keep_alive: Duration,
    /// Run jobs as this `(uid, gid)` (see `ManagerConfig::job_credentials`); `None`:
    /// as the server's user.
    pub job_credentials: Option<(u32, u32)>,
    /// Limits a job gets when its start request leaves one unset. Default: none (an
    /// unset limit stays unlimited, up to `max_limits`).
    pub default_limits: Limits,
    /// Largest limits a start request may ask for; a request above one is refused with
    /// `InvalidArgument` naming the maximum, never clamped. Default: none set, i.e. no
    /// maximum on any limit.
    pub max_limits: Limits,
    /// The job sandbox (see `ManagerConfig::sandbox`; spec/security.md QX-SBX-*). The
    /// server adds its TLS files and their directories to the masked paths.
    pub sandbox: SandboxConfig,
    /// Name of the directory holding this server's job cgroups in each hierarchy (see
    /// `ManagerConfig::cgroup_subtree`). Default `qexec`; give every qexecd on one host
    /// its own.
    pub cgroup_subtree: String,
}

impl ServerConfig {
    /// Defaults with the given TLS material: listen on 127.0.0.1:7443, state in
    /// [`default_state_dir`], 1024 jobs, 256 per user, 1024 connections, 256 streams
    /// and 1024 subscriptions per connection, 10 s request timeout, 60 s idle
    /// timeout, 15 s keep-alive, no default or maximum job limits.
    pub fn new(tls: TlsSource) -> Self {
        let defaults = ManagerConfig::new(default_state_dir());
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            tls,
            state_dir: default_state_dir(),
            output_cap: defaults.output_cap,
            retain_per_user: defaults.retain_finished,
            retain_age: defaults.retain_age,
            log_budget: defaults.log_budget,
            isolation: true,
            seccomp: true,
            max_jobs: 1024,
            max_jobs_per_user: 256,
            max_connections: 1024,
            max_streams_per_connection: limits::DEFAULT_MAX_CONCURRENT_BIDI_STREAMS,
            max_subscriptions_per_connection: 1024,
            request_timeout: limits::REQUEST_DEADLINE,
            idle_timeout: Duration::from_secs(60),
            keep_alive: Duration::from_secs(15),
            job_credentials: None,
            default_limits: Limits::default(),
            max_limits: Limits::default(),
            sandbox: SandboxConfig::default(),
            cgroup_subtree: crate::job::cgroup::DEFAULT_SUBTREE.to_owned(),
        }
    }

    /// Defaults using the server files of the PKI directory `dir` (`ca.pem`,
    /// `server.pem`, `server-key.pem`, as written by `qexec certs init`).
    pub fn from_pki_dir(dir: &Path) -> Self {
        let p = PkiPaths::new(dir);
        Self::new(TlsSource::Files {
            ca: p.ca,
            cert: p.server,
            key: p.server_key,
        })
    }
}

/// The default job state directory (the job library's:
/// [`ManagerConfig::default_state_dir`]).
pub fn default_state_dir() -> PathBuf {
    ManagerConfig::default_state_dir()
}

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
    pub(crate) max_subscriptions_per_connection: usize,
    pub(crate) user_jobs: UserJobs,
    /// One watcher per running job (releases its user slot when it ends).
    pub(crate) job_watchers: Tasks,
    /// Set once shutdown began: new requests are refused, output streams reset.
    pub(crate) shutting_down: watch::Sender<bool>,
}

impl Shared {
    /// Holds `slot` until job `id` has ended.
    pub(crate) fn watch_job(&self, id: JobId, slot: UserSlot) {
        let manager = self.manager.clone();
        self.job_watchers.spawn(async move {
            let _slot = slot;
            let _ = manager.wait(id).await;
        });
    }
}

/// A bound qexec server.
#[derive(Debug)]
pub struct Server {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    max_connections: usize,
}

impl Server {
    /// Loads TLS material, prepares the job manager and binds the UDP socket.
    pub async fn bind(config: ServerConfig) -> Result<Server, ServeError> {
        let crypto = qexec_tls::server_crypto(&config.tls)?;
        // spec: QX-SRV-1, QX-SRV-3, QX-SRV-5
        let mut transport = quinn::TransportConfig::default();
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

        let endpoint = quinn::Endpoint::server(server_config, config.listen).map_err(|source| {
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
            endpoint,
            shared: Arc::new(Shared {
                manager,
                request_timeout: config.request_timeout,
                max_jobs_per_user: config.max_jobs_per_user,
                max_subscriptions_per_connection: config.max_subscriptions_per_connection,
                user_jobs: UserJobs::default(),
                job_watchers: Tasks::default(),
                shutting_down: watch::channel(false).0,
            }),
            max_connections: config.max_connections,
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
        let active = Arc::new(AtomicUsize::new(0));
        let mut stop = self.shared.shutting_down.subscribe();
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    // spec: QX-SRV-1
                    if active.load(Ordering::Relaxed) >= self.max_connections {
                        tracing::warn!(
                            peer = %incoming.remote_address(),
                            max = self.max_connections,
                            "connection refused: too many connections"
                        );
                        incoming.refuse();
                        continue;
                    }
                    let guard = ActiveGuard::new(&active);
                    let shared = self.shared.clone();
                    conns.spawn(async move {
                        let _guard = guard;
                        conn::serve(shared, incoming).await;
                    });
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

    /// Graceful shutdown (spec: QX-ERR-8): stop accepting, answer new requests and
    /// reset open output streams with `ShuttingDown`, stop every job (reason
    /// `Shutdown`), close every connection with `ShuttingDown`, end all tasks.
    pub async fn shutdown(&self) {
        // spec: QX-SRV-8
        tracing::info!("shutting down: no new connections, stopping jobs");
        self.shared.shutting_down.send_replace(true);
        self.endpoint.set_server_config(None);
        self.shared.manager.shutdown().await;
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

/// Counts a live connection until dropped.
struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    fn new(active: &Arc<AtomicUsize>) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        Self(active.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
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
        drop(a1);
        let _a3 = jobs.reserve("alice", 2).unwrap();
        assert!(jobs.reserve("alice", 2).is_none());
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
