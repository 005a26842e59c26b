//! [`ServerConfig`]: everything a [`Server`](super::Server) needs, with its defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qexec_protocol::{Limits, limits};

use super::conn;
use crate::job::{ManagerConfig, SandboxConfig};
use qexec_tls::{PkiPaths, TlsSource};

/// Everything a [`Server`](super::Server) needs.
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
    /// Most authenticated connections at once (spec: QX-SRV-1). Handshaking
    /// connections are counted apart ([`ServerConfig::max_handshakes`]), so
    /// unauthenticated traffic never takes one of these slots; past it a new
    /// connection is refused before its handshake, or closed with `ResourceExhausted`
    /// right after it if the last slot went in between.
    pub max_connections: usize,
    /// Most authenticated connections of one identity (user name) at once, below
    /// `max_connections` (spec: QX-SRV-9); past it the new connection is closed with
    /// application code `ResourceExhausted` and a reason naming the cap.
    pub max_connections_per_identity: usize,
    /// Most connections in their handshake at once (spec: QX-SRV-10); past it new
    /// ones are refused (QUIC `CONNECTION_REFUSED`) before any TLS work.
    pub max_handshakes: usize,
    /// From this many handshakes in flight on, a client whose address is not
    /// validated yet gets a QUIC Retry first (stateless; spec: QX-SRV-10). 0: always.
    pub retry_threshold: usize,
    /// A handshake not complete this soon after its first packet is abandoned
    /// (spec: QX-SRV-10).
    pub handshake_timeout: Duration,
    /// Most concurrent client-opened (control) streams per connection.
    pub max_streams_per_connection: u32,
    /// Most concurrent subscriptions (output streams) per connection; past it
    /// `Attach`/`Start{follow}` are answered `ResourceExhausted`.
    pub max_subscriptions_per_connection: usize,
    /// Most concurrent subscriptions of one identity over all its connections
    /// (spec: QX-SRV-9; → `ResourceExhausted`).
    pub max_subscriptions_per_identity: usize,
    /// Most requests of one identity being served at once over all its connections
    /// (a request is in flight from its complete first frame until its control stream
    /// is done: an `Attach` or a followed `Start` is in flight while it streams;
    /// spec: QX-SRV-9; → `ResourceExhausted`).
    pub max_requests_per_identity: usize,
    /// Bytes of partially received request frames one connection may hold (spec:
    /// QX-SRV-11): a stream reserves its whole frame from this budget once the
    /// frame's length prefix is read, and waits (within the request timeout) while
    /// the budget is spent. At least [`request_buffer_minimum`].
    pub request_buffer_per_connection: usize,
    /// A connection with no open stream for this long is closed with `NoError` and
    /// the reason `idle` (spec: QX-SRV-12): the server's keep-alives do not keep an
    /// unused connection, and the slot it holds, forever. `None`: never.
    pub idle_connection_timeout: Option<Duration>,
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
    /// How long a `stop_on_detach` job outlives a connection that was lost (not closed
    /// by its client) while its owner follows it nowhere: an `Attach` by the same
    /// identity keeps it; after the grace period without one the job is stopped
    /// `Detached`. Zero: stopped at once. Default 60 s (spec: QX-STREAM-24).
    pub detach_grace: Duration,
}

/// Default of [`ServerConfig::detach_grace`] (spec: QX-STREAM-24).
pub const DEFAULT_DETACH_GRACE: Duration = Duration::from_secs(60);

impl ServerConfig {
    /// Defaults with the given TLS material: listen on 127.0.0.1:7443, state in
    /// [`default_state_dir`], 1024 jobs, 256 per user, 1024 connections (64 per
    /// identity), 256 handshakes in flight (Retry from 32 on, 5 s handshake timeout),
    /// 256 streams and 1024 subscriptions per connection, 1024 subscriptions and
    /// 2048 requests in flight per identity, 2 MiB of partial request frames per
    /// connection, 10 s request timeout, 60 s idle timeout, 15 s keep-alive, idle
    /// connections (no open stream) closed after 300 s, 60 s detach grace, no default or maximum job
    /// limits.
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
            max_connections_per_identity: 64,
            max_handshakes: 256,
            retry_threshold: 32,
            handshake_timeout: Duration::from_secs(5),
            max_streams_per_connection: limits::DEFAULT_MAX_CONCURRENT_BIDI_STREAMS,
            max_subscriptions_per_connection: 1024,
            max_subscriptions_per_identity: 1024,
            max_requests_per_identity: 2048,
            request_buffer_per_connection: 2 << 20,
            idle_connection_timeout: Some(Duration::from_secs(300)),
            request_timeout: limits::REQUEST_DEADLINE,
            idle_timeout: Duration::from_secs(60),
            keep_alive: Duration::from_secs(15),
            job_credentials: None,
            default_limits: Limits::default(),
            max_limits: Limits::default(),
            sandbox: SandboxConfig::default(),
            cgroup_subtree: crate::job::cgroup::DEFAULT_SUBTREE.to_owned(),
            detach_grace: DEFAULT_DETACH_GRACE,
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

/// The smallest `request_buffer_per_connection` for `streams` control streams per
/// connection: one largest wire frame plus one read, besides every stream's first
/// reservation (spec: QX-SRV-11).
pub fn request_buffer_minimum(streams: u32) -> usize {
    qexec_protocol::MAX_WIRE_FRAME_LEN
        + conn::READ_CHUNK
        + conn::FIRST_READ * usize::try_from(streams).unwrap_or(usize::MAX)
}

/// The default job state directory (the job library's:
/// [`ManagerConfig::default_state_dir`]).
pub fn default_state_dir() -> PathBuf {
    ManagerConfig::default_state_dir()
}
