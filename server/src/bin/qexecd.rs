//! `qexecd`, the qexec server.
// The doc comments of the command-line struct are clap's `--help` text, written for a
// terminal (`[::1]:7443`, `<pki-dir>`), not rustdoc markup.
#![allow(
    rustdoc::broken_intra_doc_links,
    rustdoc::invalid_html_tags,
    reason = "doc comments here are clap help text for a terminal, not rustdoc"
)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use qexec_protocol::Limits;
use qexec_protocol::units::{format_cpu, format_size, parse_cpu, parse_duration, parse_size};
use qexec_server::service::{
    Server, ServerConfig, TlsSource, default_state_dir, request_buffer_minimum,
};
use qexec_server::{JobNetwork, SandboxConfig, UidRange};
use qexec_tls as pki;

/// qexecd: run jobs for qexec clients over QUIC with mutual TLS.
///
/// With no flags it uses the PKI written by `qexec certs init` (ca.pem, server.pem,
/// server-key.pem in $QEXEC_CONFIG_DIR, else $XDG_CONFIG_HOME/qexec, else
/// ~/.config/qexec) and listens on 127.0.0.1:7443.
#[derive(Debug, Parser)]
#[command(
    name = "qexecd",
    version,
    after_help = "Examples:\n  qexec certs init && qexecd\n  qexecd --listen [::1]:7443\n  \
                  qexecd --ca pki/ca.pem --cert pki/server.pem --key pki/server-key.pem\n  \
                  qexecd --rw-path /srv/scratch --tmp-size 4G   (jobs may write /srv/scratch)\n\n\
                  As root, jobs are sandboxed: own user namespace and host uid, read-only host,\n\
                  fresh /proc /sys /dev /tmp, cgroup namespace (spec/security.md, QX-SBX-*).\n\n\
                  Job records: every job (also one that failed to start) is recorded in\n\
                  <state-dir>/jobs.db with its output in <state-dir>/jobs/<id>/; both survive\n\
                  restarts, and jobs running when qexecd died or stopped end as\n\
                  `stopped (shutdown)`. Ended jobs are forgotten in this order, checked when\n\
                  a job ends and at start: past --retain-per-user, that user's oldest; past\n\
                  --retain-age, any; past --log-budget, the oldest of any user (logged).\n\n\
                  Logs: RUST_LOG=info (default), RUST_LOG=qexec::audit=info,warn …"
)]
struct Args {
    /// UDP address to listen on (IPv6: [::1]:7443).
    #[arg(long, env = "QEXECD_LISTEN", default_value = "127.0.0.1:7443")]
    listen: SocketAddr,
    /// PKI directory to take ca.pem, server.pem and server-key.pem from.
    #[arg(long, env = "QEXECD_PKI_DIR")]
    pki_dir: Option<PathBuf>,
    /// CA certificate that signs client certificates (PEM) [default: <pki-dir>/ca.pem].
    #[arg(long, env = "QEXECD_CA")]
    ca: Option<PathBuf>,
    /// Server certificate chain (PEM) [default: <pki-dir>/server.pem].
    #[arg(long, env = "QEXECD_CERT")]
    cert: Option<PathBuf>,
    /// Server private key (PEM) [default: <pki-dir>/server-key.pem].
    #[arg(long, env = "QEXECD_KEY")]
    key: Option<PathBuf>,
    /// Where the job database (jobs.db) and job output logs are kept; both survive
    /// restarts [default: /var/lib/qexec for root, else $XDG_STATE_HOME/qexec].
    #[arg(long, env = "QEXECD_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Most output one job may keep (stdout and stderr together); past it the job is
    /// stopped, its state `stopped (output limit)`, its output truncated.
    #[arg(long, env = "QEXECD_MAX_OUTPUT", value_name = "SIZE", value_parser = parse_size, default_value = "8G")]
    max_output: u64,
    /// Ended jobs kept per user (status and output); past it that user's oldest is
    /// forgotten. Another user's jobs never are.
    #[arg(
        long,
        env = "QEXECD_RETAIN_PER_USER",
        value_name = "N",
        default_value_t = 1000
    )]
    retain_per_user: usize,
    /// Ended jobs are forgotten this long after they ended (e.g. 7d, 12h; 0: never).
    #[arg(long, env = "QEXECD_RETAIN_AGE", value_name = "DURATION", value_parser = parse_duration, default_value = "30d")]
    retain_age: Duration,
    /// Disk budget for the output of ended jobs (all users together); past it the
    /// oldest ended jobs of any user are forgotten, each logged as a warning.
    #[arg(long, env = "QEXECD_LOG_BUDGET", value_name = "SIZE", value_parser = parse_size, default_value = "16G")]
    log_budget: u64,
    /// Run jobs without namespace isolation (implies --no-sandbox).
    #[arg(long, env = "QEXECD_NO_ISOLATION")]
    no_isolation: bool,
    /// Run jobs WITHOUT the default seccomp filter. Weakens isolation: jobs may then
    /// call kexec, module loading, bpf, perf_event_open, keyctl, mount, unshare and
    /// the other system calls the filter answers with EPERM (spec/security.md
    /// QX-SBX-20..25). Only for hosts whose architecture or kernel cannot filter.
    #[arg(long, env = "QEXECD_NO_SECCOMP")]
    no_seccomp: bool,
    // The job sandbox (spec/security.md QX-SBX-*): on by default as root.
    /// Host directory jobs may write (bound read-write; everything else of the host
    /// is read-only in a sandboxed job). Repeatable; the environment variable takes
    /// a colon-separated list.
    #[arg(
        long = "rw-path",
        env = "QEXECD_RW_PATHS",
        value_name = "DIR",
        value_delimiter = ':'
    )]
    rw_paths: Vec<PathBuf>,
    /// Host uid/gid range for the jobs' user namespaces, BASE:COUNT; each running job
    /// gets 65536 ids of its own [default: 1879048192:<65536 × --max-jobs>].
    #[arg(long, env = "QEXECD_JOB_UID_RANGE", value_name = "BASE:COUNT")]
    job_uid_range: Option<UidRange>,
    /// Network of isolated jobs: none (own namespace with only lo) or host (the
    /// host's network; weakens isolation).
    #[arg(long, env = "QEXECD_JOB_NETWORK", value_name = "none|host", default_value = "none", value_parser = parse_network)]
    job_network: JobNetwork,
    /// Size of each sandboxed job's private /tmp, e.g. 1G.
    #[arg(long, env = "QEXECD_TMP_SIZE", value_name = "SIZE", value_parser = parse_size, default_value = "1G")]
    tmp_size: u64,
    /// Size of each sandboxed job's private /dev/shm, e.g. 64M.
    #[arg(long, env = "QEXECD_SHM_SIZE", value_name = "SIZE", value_parser = parse_size, default_value = "64M")]
    shm_size: u64,
    /// INSECURE: let `user` jobs run as host root when the sandbox is not active (no
    /// user namespaces, --no-sandbox, --no-isolation). Without it such starts are
    /// refused unless --job-user is set.
    #[arg(long, env = "QEXECD_INSECURE_ROOT_JOBS")]
    insecure_root_jobs: bool,
    /// INSECURE: run isolated jobs without the sandbox: they are host root with every
    /// capability, see and write the host's files (only admins may start them, see
    /// --insecure-root-jobs).
    #[arg(long, env = "QEXECD_NO_SANDBOX")]
    no_sandbox: bool,
    /// Directory holding this qexecd's job cgroups in each cgroup hierarchy (letters,
    /// digits, `-`, `_`, `.`). Give every qexecd on one host its own: job cgroups found
    /// there at start are a crashed server's and are removed.
    #[arg(long, env = "QEXECD_CGROUP_SUBTREE", value_name = "NAME", default_value = "qexec", value_parser = parse_subtree)]
    cgroup_subtree: String,
    /// Run every job's program as this user instead of qexecd's own (root): a name
    /// (its primary group), `USER:GROUP`, or `UID:GID`, e.g. `nobody` for untrusted
    /// work. Default: qexecd's user.
    #[arg(long, env = "QEXECD_JOB_USER", value_name = "USER[:GROUP]", value_parser = parse_job_user)]
    job_user: Option<(u32, u32)>,
    /// Most jobs running at once.
    #[arg(long, env = "QEXECD_MAX_JOBS", default_value_t = 1024)]
    max_jobs: usize,
    /// Most jobs one user may have running at once.
    #[arg(long, env = "QEXECD_MAX_JOBS_PER_USER", default_value_t = 256)]
    max_jobs_per_user: usize,
    /// Most authenticated client connections at once (handshakes are counted apart).
    #[arg(long, env = "QEXECD_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// Most connections of one user (certificate name) at once; past it a new one is
    /// closed with ResourceExhausted.
    #[arg(long, env = "QEXECD_MAX_CONNECTIONS_PER_USER", default_value_t = 64)]
    max_connections_per_user: usize,
    /// Most connections in their handshake at once; past it new ones are refused
    /// before any TLS work.
    #[arg(long, env = "QEXECD_MAX_HANDSHAKES", default_value_t = 256)]
    max_handshakes: usize,
    /// From this many handshakes in flight on, a client must first prove its address
    /// with a QUIC Retry (one more round trip); 0: always.
    #[arg(long, env = "QEXECD_RETRY_THRESHOLD", default_value_t = 32)]
    retry_threshold: usize,
    /// How long a handshake may take before it is abandoned (1s–60s; a bare number
    /// is seconds).
    #[arg(long, env = "QEXECD_HANDSHAKE_TIMEOUT", value_name = "DURATION", default_value = "5s",
          value_parser = parse_handshake_timeout)]
    handshake_timeout: Duration,
    /// Most concurrent control streams per connection.
    #[arg(long, env = "QEXECD_MAX_STREAMS", default_value_t = 256)]
    max_streams: u32,
    /// Most concurrent subscriptions (output streams) per connection.
    #[arg(long, env = "QEXECD_MAX_SUBSCRIPTIONS", default_value_t = 1024)]
    max_subscriptions: usize,
    /// Most concurrent subscriptions of one user over all its connections.
    #[arg(
        long,
        env = "QEXECD_MAX_SUBSCRIPTIONS_PER_USER",
        default_value_t = 1024
    )]
    max_subscriptions_per_user: usize,
    /// Most requests of one user in flight at once over all its connections (an
    /// open follow or run counts until it ends).
    #[arg(long, env = "QEXECD_MAX_REQUESTS_PER_USER", default_value_t = 2048)]
    max_requests_per_user: usize,
    /// Bytes of partly received request frames one connection may hold, e.g. 2M
    /// (at least one largest frame plus a read: 1 MiB + 64 KiB + 64 bytes per stream).
    #[arg(long, env = "QEXECD_REQUEST_BUFFER", value_name = "SIZE", value_parser = parse_size, default_value = "2M")]
    request_buffer: u64,
    /// Time without traffic after which a connection is closed (a bare number is
    /// seconds).
    #[arg(long, env = "QEXECD_IDLE_TIMEOUT", value_name = "DURATION", default_value = "60s",
          value_parser = parse_seconds_or_duration)]
    idle_timeout: Duration,
    /// How long a `qexec run` job outlives a lost connection (suspended laptop, network
    /// blip), waiting for its client to reconnect; 0 stops it at once. A client that
    /// closes its connection (or is stopped by Ctrl-C) is not waited for.
    #[arg(long, env = "QEXECD_DETACH_GRACE", value_name = "DURATION", default_value = "60s",
          value_parser = qexec_protocol::units::parse_duration)]
    detach_grace: Duration,
    /// How long a connection may stay open with no request or follow in progress
    /// before the server closes it (its keep-alives do not count); 0: never (a bare
    /// number is seconds).
    #[arg(long, env = "QEXECD_IDLE_CONNECTION_TIMEOUT", value_name = "DURATION", default_value = "300s",
          value_parser = parse_seconds_or_duration)]
    idle_connection_timeout: Duration,
    /// Log format on stderr: text (one line per event) or json (one object per line).
    /// Peer-controlled text is escaped in both.
    #[arg(long, env = "QEXECD_LOG_FORMAT", value_name = "text|json", default_value = "text", value_parser = parse_log_format)]
    log_format: LogFormat,
    // Server-side job limits (spec: QX-LIMIT-*): a start asking above a
    // maximum is refused with InvalidArgument, never clamped; a default fills a limit
    // the request leaves unset. Sizes take K, M, G, T (powers of 1024).
    /// Most CPU a job may ask for, in CPUs (0.5 = half a CPU, or 500m) [default: no maximum].
    #[arg(long, env = "QEXECD_MAX_CPU", value_name = "CPUS", value_parser = parse_cpu)]
    max_cpu: Option<u32>,
    /// Most memory a job may ask for, e.g. 4G [default: no maximum].
    #[arg(long, env = "QEXECD_MAX_MEMORY", value_name = "SIZE", value_parser = parse_size)]
    max_memory: Option<u64>,
    /// Most processes and threads a job may ask for [default: no maximum].
    #[arg(long, env = "QEXECD_MAX_PIDS", value_name = "N", value_parser = parse_count_u32)]
    max_pids: Option<u32>,
    /// Most disk read bandwidth a job may ask for, per second, e.g. 100M [default: no maximum].
    #[arg(long, env = "QEXECD_MAX_IO_READ", value_name = "SIZE", value_parser = parse_size)]
    max_io_read: Option<u64>,
    /// Most disk write bandwidth a job may ask for, per second, e.g. 100M [default: no maximum].
    #[arg(long, env = "QEXECD_MAX_IO_WRITE", value_name = "SIZE", value_parser = parse_size)]
    max_io_write: Option<u64>,
    /// Most disk read operations per second a job may ask for [default: no maximum].
    #[arg(long, env = "QEXECD_MAX_IO_READ_IOPS", value_name = "N", value_parser = parse_count_u64)]
    max_io_read_iops: Option<u64>,
    /// Most disk write operations per second a job may ask for [default: no maximum].
    #[arg(long, env = "QEXECD_MAX_IO_WRITE_IOPS", value_name = "N", value_parser = parse_count_u64)]
    max_io_write_iops: Option<u64>,
    /// CPU a job gets when it asks for none, in CPUs [default: unlimited].
    #[arg(long, env = "QEXECD_DEFAULT_CPU", value_name = "CPUS", value_parser = parse_cpu)]
    default_cpu: Option<u32>,
    /// Memory a job gets when it asks for none, e.g. 512M [default: unlimited].
    #[arg(long, env = "QEXECD_DEFAULT_MEMORY", value_name = "SIZE", value_parser = parse_size)]
    default_memory: Option<u64>,
    /// Processes and threads a job gets when it asks for none [default: unlimited].
    #[arg(long, env = "QEXECD_DEFAULT_PIDS", value_name = "N", value_parser = parse_count_u32)]
    default_pids: Option<u32>,
    /// Disk read bandwidth per second a job gets when it asks for none [default: unlimited].
    #[arg(long, env = "QEXECD_DEFAULT_IO_READ", value_name = "SIZE", value_parser = parse_size)]
    default_io_read: Option<u64>,
    /// Disk write bandwidth per second a job gets when it asks for none [default: unlimited].
    #[arg(long, env = "QEXECD_DEFAULT_IO_WRITE", value_name = "SIZE", value_parser = parse_size)]
    default_io_write: Option<u64>,
    /// Disk read operations per second a job gets when it asks for none [default: unlimited].
    #[arg(long, env = "QEXECD_DEFAULT_IO_READ_IOPS", value_name = "N", value_parser = parse_count_u64)]
    default_io_read_iops: Option<u64>,
    /// Disk write operations per second a job gets when it asks for none [default: unlimited].
    #[arg(long, env = "QEXECD_DEFAULT_IO_WRITE_IOPS", value_name = "N", value_parser = parse_count_u64)]
    default_io_write_iops: Option<u64>,
}

impl Args {
    /// The CA, certificate and key qexecd will read, and the PKI directory they
    /// default from.
    fn pki_files(&self) -> (PathBuf, [(&'static str, PathBuf); 3]) {
        let dir = self.pki_dir.clone().unwrap_or_else(pki::default_dir);
        let paths = pki::PkiPaths::new(&dir);
        let files = [
            ("CA certificate", self.ca.clone().unwrap_or(paths.ca)),
            (
                "server certificate",
                self.cert.clone().unwrap_or(paths.server),
            ),
            (
                "server private key",
                self.key.clone().unwrap_or(paths.server_key),
            ),
        ];
        (dir, files)
    }

    /// Start-up checks with one clear line each: a missing PKI (the first start on a
    /// new host) is refused with the command that makes one; a server certificate
    /// outside its validity period is a warning (clients will refuse it).
    fn check_pki(&self) -> Result<(), String> {
        let (dir, files) = self.pki_files();
        let missing: Vec<&(&str, PathBuf)> = files.iter().filter(|(_, p)| !p.exists()).collect();
        if missing.len() == files.len() && self.ca.is_none() && self.cert.is_none() {
            let init = match &self.pki_dir {
                Some(d) => format!("qexec certs init --dir {}", d.display()),
                None => "qexec certs init".to_owned(),
            };
            return Err(format!(
                "no PKI in {}: run `{init}` first (as the user qexecd runs as), or point \
                 --pki-dir at one",
                dir.display()
            ));
        }
        if let Some((what, path)) = missing.first() {
            return Err(format!(
                "no {what} at {}: run `qexec certs init`, or give the file with --pki-dir / \
                 --ca / --cert / --key",
                path.display()
            ));
        }
        if let Some(warning) = validity_warning(&files[1].1, std::time::SystemTime::now()) {
            tracing::warn!(cert = %files[1].1.display(), "{warning}");
        }
        Ok(())
    }

    fn config(&self) -> anyhow::Result<ServerConfig> {
        let dir = self.pki_dir.clone().unwrap_or_else(pki::default_dir);
        let paths = pki::PkiPaths::new(&dir);
        let tls = TlsSource::Files {
            ca: self.ca.clone().unwrap_or(paths.ca),
            cert: self.cert.clone().unwrap_or(paths.server),
            key: self.key.clone().unwrap_or(paths.server_key),
        };
        let mut c = ServerConfig::new(tls);
        c.listen = self.listen;
        c.state_dir = self.state_dir.clone().unwrap_or_else(default_state_dir);
        anyhow::ensure!(self.max_output > 0, "--max-output must be at least 1 byte");
        c.output_cap = self.max_output;
        c.retain_per_user = self.retain_per_user;
        c.retain_age = (!self.retain_age.is_zero()).then_some(self.retain_age);
        c.log_budget = self.log_budget;
        c.isolation = !self.no_isolation;
        c.seccomp = !self.no_seccomp;
        c.cgroup_subtree = self.cgroup_subtree.clone();
        c.job_credentials = self.job_user;
        c.sandbox = SandboxConfig {
            enabled: !self.no_sandbox,
            rw_paths: self
                .rw_paths
                .iter()
                .map(|p| {
                    std::fs::canonicalize(p).with_context(|| {
                        format!(
                            "--rw-path {}: cannot resolve it; create it first",
                            p.display()
                        )
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            masked_paths: Vec::new(),
            uid_range: self.job_uid_range,
            tmp_size: self.tmp_size,
            shm_size: self.shm_size,
            network: self.job_network,
            insecure_root_jobs: self.insecure_root_jobs,
        };
        c.max_jobs = self.max_jobs;
        c.max_jobs_per_user = self.max_jobs_per_user;
        c.max_connections = self.max_connections;
        c.max_connections_per_identity = self.max_connections_per_user;
        c.max_handshakes = self.max_handshakes;
        c.retry_threshold = self.retry_threshold;
        c.handshake_timeout = self.handshake_timeout;
        c.max_streams_per_connection = self.max_streams;
        c.max_subscriptions_per_connection = self.max_subscriptions;
        c.max_subscriptions_per_identity = self.max_subscriptions_per_user;
        c.max_requests_per_identity = self.max_requests_per_user;
        c.request_buffer_per_connection = usize::try_from(self.request_buffer)
            .context("--request-buffer is too large for this machine")?;
        let least = request_buffer_minimum(self.max_streams);
        if c.request_buffer_per_connection < least {
            anyhow::bail!(
                "--request-buffer ({}) is less than one largest request frame plus a read \
                 ({least} bytes with --max-streams {}): raise it",
                format_size(self.request_buffer),
                self.max_streams
            );
        }
        c.idle_timeout = self.idle_timeout;
        c.detach_grace = self.detach_grace;
        c.idle_connection_timeout =
            (!self.idle_connection_timeout.is_zero()).then_some(self.idle_connection_timeout);
        c.max_limits = Limits {
            cpu_millis: self.max_cpu,
            memory_bytes: self.max_memory,
            io_read_bps: self.max_io_read,
            io_write_bps: self.max_io_write,
            io_read_iops: self.max_io_read_iops,
            io_write_iops: self.max_io_write_iops,
            pids: self.max_pids,
        };
        c.default_limits = Limits {
            cpu_millis: self.default_cpu,
            memory_bytes: self.default_memory,
            io_read_bps: self.default_io_read,
            io_write_bps: self.default_io_write,
            io_read_iops: self.default_io_read_iops,
            io_write_iops: self.default_io_write_iops,
            pids: self.default_pids,
        };
        if let Some((flag, default, max)) = default_above_max(&c.default_limits, &c.max_limits) {
            // A default above its maximum would refuse every start that leaves it unset.
            anyhow::bail!(
                "--default-{flag} ({default}) is above --max-{flag} ({max}): lower the default \
                 or raise the maximum"
            );
        }
        Ok(c)
    }
}

/// The warning for a server certificate outside its validity period at `now`, if any
/// (an unreadable one is left to the TLS set-up, which says why).
fn validity_warning(cert: &std::path::Path, now: std::time::SystemTime) -> Option<String> {
    let (not_before, not_after) = pki::cert_validity(cert).ok()?;
    if now > not_after {
        Some(
            "the server certificate has expired: clients will refuse it; reissue it with \
             `qexec certs issue-server`"
                .to_owned(),
        )
    } else if now < not_before {
        Some(
            "the server certificate is not valid yet: clients will refuse it; check the \
             clock, or reissue it with `qexec certs issue-server`"
                .to_owned(),
        )
    } else {
        None
    }
}

/// The first limit whose default is above its maximum: (flag suffix, default, max),
/// the values shown in the flag's units.
fn default_above_max(defaults: &Limits, max: &Limits) -> Option<(&'static str, String, String)> {
    fn cpu(v: u64) -> String {
        u32::try_from(v).map_or_else(|_| v.to_string(), format_cpu)
    }
    fn plain(v: u64) -> String {
        v.to_string()
    }
    type Show = fn(u64) -> String;
    let pairs: [(&str, Option<u64>, Option<u64>, Show); 7] = [
        (
            "cpu",
            defaults.cpu_millis.map(u64::from),
            max.cpu_millis.map(u64::from),
            cpu,
        ),
        (
            "memory",
            defaults.memory_bytes,
            max.memory_bytes,
            format_size,
        ),
        (
            "pids",
            defaults.pids.map(u64::from),
            max.pids.map(u64::from),
            plain,
        ),
        (
            "io-read",
            defaults.io_read_bps,
            max.io_read_bps,
            format_size,
        ),
        (
            "io-write",
            defaults.io_write_bps,
            max.io_write_bps,
            format_size,
        ),
        (
            "io-read-iops",
            defaults.io_read_iops,
            max.io_read_iops,
            plain,
        ),
        (
            "io-write-iops",
            defaults.io_write_iops,
            max.io_write_iops,
            plain,
        ),
    ];
    pairs
        .into_iter()
        .find_map(|(flag, d, m, show)| match (d, m) {
            (Some(d), Some(m)) if d > m => Some((flag, show(d), show(m))),
            _ => None,
        })
}

/// A limit given as a plain count is not a positive whole number.
#[derive(Debug, thiserror::Error)]
#[error("invalid count {text:?}: expected a whole number from 1 to {max}, e.g. 64")]
struct CountError {
    text: String,
    max: u64,
}

/// Parses a positive count (pids, IOPS); zero would forbid everything, so it is refused.
fn parse_count(text: &str, max: u64) -> Result<u64, CountError> {
    let err = || CountError {
        text: text.to_owned(),
        max,
    };
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    match t.parse::<u64>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(err()),
    }
}

fn parse_count_u32(text: &str) -> Result<u32, CountError> {
    parse_count(text, u32::MAX.into()).map(|n| n as u32)
}

fn parse_count_u64(text: &str) -> Result<u64, CountError> {
    parse_count(text, u64::MAX)
}

async fn shutdown_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    log::init(args.log_format);
    // One line for a failure to start, not anyhow's report with its cause twice; a
    // closed stderr loses the line but never panics.
    let fatal = |e: String| -> ! {
        let _ = writeln!(std::io::stderr(), "qexecd: {e}");
        std::process::exit(1)
    };
    if let Err(e) = args.check_pki() {
        fatal(e);
    }
    let config = args.config().unwrap_or_else(|e| fatal(format!("{e:#}")));
    let server = Server::bind(config)
        .await
        .unwrap_or_else(|e| fatal(e.to_string()));
    let run = server.run();
    tokio::pin!(run);
    tokio::select! {
        () = &mut run => server.shutdown().await,
        sig = shutdown_signal() => {
            tracing::info!(signal = sig?, "shutdown requested");
            // The accept loop keeps owning its connection tasks until they end.
            tokio::join!(server.shutdown(), run);
        }
    }
    Ok(())
}

#[path = "qexecd/log.rs"]
mod log;
use log::{LogFormat, parse_log_format};

/// A duration (`30s`, `5m`, `1.5s`) or, as these flags took before, a bare number of
/// seconds.
fn parse_seconds_or_duration(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<u64>() {
        Ok(secs) => Ok(Duration::from_secs(secs)),
        Err(_) => parse_duration(text).map_err(|e| e.to_string()),
    }
}

/// `--handshake-timeout`: a duration from 1 s to 60 s.
fn parse_handshake_timeout(text: &str) -> Result<Duration, String> {
    let d = parse_seconds_or_duration(text)?;
    if (Duration::from_secs(1)..=Duration::from_secs(60)).contains(&d) {
        Ok(d)
    } else {
        Err(format!("{d:?} is outside 1s–60s"))
    }
}

/// Parses `--job-network`.
fn parse_network(text: &str) -> Result<JobNetwork, String> {
    match text {
        "none" => Ok(JobNetwork::None),
        "host" => Ok(JobNetwork::Host),
        _ => Err(format!("expected none or host, got {text:?}")),
    }
}

/// Parses `--job-user`: `NAME`, `NAME:GROUP`, `UID:GID` (names looked up in the
/// system's user and group databases).
fn parse_subtree(text: &str) -> Result<String, String> {
    qexec_server::cgroup::check_name(text).map_err(|e| e.to_string())?;
    Ok(text.to_owned())
}

fn parse_job_user(text: &str) -> Result<(u32, u32), String> {
    use nix::unistd::{Group, User};
    let (user, group) = match text.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (text, None),
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (uid, None),
        Err(_) => match User::from_name(user) {
            Ok(Some(u)) => (u.uid.as_raw(), Some(u.gid.as_raw())),
            Ok(None) => return Err(format!("no user named {user:?} on this system")),
            Err(e) => return Err(format!("cannot look up user {user:?}: {e}")),
        },
    };
    let gid = match group {
        None => {
            primary.ok_or_else(|| format!("give a group for uid {uid}: --job-user {uid}:GID"))?
        }
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => match Group::from_name(g) {
                Ok(Some(grp)) => grp.gid.as_raw(),
                Ok(None) => return Err(format!("no group named {g:?} on this system")),
                Err(e) => return Err(format!("cannot look up group {g:?}: {e}")),
            },
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> anyhow::Result<ServerConfig> {
        let mut argv = vec!["qexecd", "--pki-dir", "/nonexistent/pki"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv)?.config()
    }

    #[test]
    fn a_missing_pki_is_one_line_with_the_command_that_makes_one() {
        let args = Args::try_parse_from(["qexecd", "--pki-dir", "/nonexistent/pki"]).unwrap();
        assert_eq!(
            args.check_pki().unwrap_err(),
            "no PKI in /nonexistent/pki: run `qexec certs init --dir /nonexistent/pki` first \
             (as the user qexecd runs as), or point --pki-dir at one"
        );
        let args = Args::try_parse_from([
            "qexecd",
            "--pki-dir",
            "/nonexistent/pki",
            "--ca",
            "/nonexistent/ca.pem",
        ])
        .unwrap();
        assert!(
            args.check_pki()
                .unwrap_err()
                .starts_with("no CA certificate at /nonexistent/ca.pem: run `qexec certs init`"),
        );
    }

    #[test]
    fn a_server_certificate_outside_its_validity_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(dir.path(), &pki::InitOptions::default()).unwrap();
        let cert = dir.path().join("server.pem");
        let (not_before, not_after) = pki::cert_validity(&cert).unwrap();
        let second = Duration::from_secs(1);
        assert_eq!(validity_warning(&cert, not_before + second), None);
        assert!(
            validity_warning(&cert, not_after + second)
                .unwrap()
                .starts_with("the server certificate has expired")
        );
        assert!(
            validity_warning(&cert, not_before - second)
                .unwrap()
                .starts_with("the server certificate is not valid yet")
        );
        let args =
            Args::try_parse_from(["qexecd", "--pki-dir", dir.path().to_str().unwrap()]).unwrap();
        args.check_pki().unwrap();
    }

    #[test]
    fn version_names_qexecd() {
        use clap::CommandFactory;
        assert_eq!(Args::command().get_name(), "qexecd");
    }

    /// The seccomp filter is on unless `--no-seccomp` says otherwise.
    #[test]
    fn seccomp_is_on_by_default() {
        assert!(config(&[]).unwrap().seccomp);
        assert!(!config(&["--no-seccomp"]).unwrap().seccomp);
    }

    #[test]
    fn sandbox_flags() {
        let c = config(&[]).unwrap();
        assert_eq!(c.sandbox, SandboxConfig::default());
        let dir = tempfile::tempdir_in(std::env::current_exe().unwrap().parent().unwrap()).unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        let rw = dir.path().to_str().unwrap();
        let c = config(&[
            "--rw-path",
            rw,
            "--rw-path",
            "/",
            "--job-uid-range",
            "2000000000:131072",
            "--job-network",
            "host",
            "--tmp-size",
            "2G",
            "--shm-size",
            "1M",
            "--insecure-root-jobs",
            "--no-sandbox",
        ])
        .unwrap();
        assert_eq!(
            c.sandbox,
            SandboxConfig {
                enabled: false,
                rw_paths: vec![real, "/".into()],
                masked_paths: vec![],
                uid_range: Some(UidRange {
                    base: 2_000_000_000,
                    count: 131072
                }),
                tmp_size: 2 << 30,
                shm_size: 1 << 20,
                network: JobNetwork::Host,
                insecure_root_jobs: true,
            }
        );
        for bad in [
            &["--job-uid-range", "0:65536"][..],
            &["--job-uid-range", "70000"],
            &["--job-network", "bridge"],
            &["--rw-path", "/nonexistent/qexec-rw"],
        ] {
            let e = config(bad).unwrap_err().to_string();
            assert!(e.contains(bad[0]) || e.contains(bad[1]), "{bad:?}: {e}");
        }
    }

    #[test]
    fn cgroup_subtree_is_one_valid_directory_name() {
        assert_eq!(config(&[]).unwrap().cgroup_subtree, "qexec");
        let c = config(&["--cgroup-subtree", "qexec-bench.2"]).unwrap();
        assert_eq!(c.cgroup_subtree, "qexec-bench.2");
        for bad in ["a/b", "..", "", "cgroup.procs", "sp ace"] {
            let e = config(&["--cgroup-subtree", bad]).unwrap_err().to_string();
            assert!(e.contains("--cgroup-subtree"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn job_user_takes_names_and_numbers() {
        assert_eq!(config(&[]).unwrap().job_credentials, None);
        let c = config(&["--job-user", "1234:5678"]).unwrap();
        assert_eq!(c.job_credentials, Some((1234, 5678)));
        let c = config(&["--job-user", "root"]).unwrap();
        assert_eq!(c.job_credentials, Some((0, 0)));
        let c = config(&["--job-user", "root:0"]).unwrap();
        assert_eq!(c.job_credentials, Some((0, 0)));
        for bad in ["1234", "no-such-user-qexec", "root:no-such-group-qexec"] {
            let e = config(&["--job-user", bad]).unwrap_err().to_string();
            assert!(e.contains("--job-user"), "{bad}: {e}");
        }
    }

    #[test]
    fn limit_flags_take_human_units() {
        let c = config(&[
            "--max-cpu",
            "1.5",
            "--max-memory",
            "1G",
            "--max-pids",
            "512",
            "--max-io-read",
            "100M",
            "--max-io-write",
            "50M",
            "--max-io-read-iops",
            "2000",
            "--max-io-write-iops",
            "1000",
            "--default-cpu",
            "500m",
            "--default-memory",
            "256M",
            "--default-pids",
            "64",
            "--default-io-read",
            "10M",
            "--default-io-write",
            "5M",
            "--default-io-read-iops",
            "200",
            "--default-io-write-iops",
            "100",
        ])
        .unwrap();
        assert_eq!(
            c.max_limits,
            Limits {
                cpu_millis: Some(1500),
                memory_bytes: Some(1 << 30),
                io_read_bps: Some(100 << 20),
                io_write_bps: Some(50 << 20),
                io_read_iops: Some(2000),
                io_write_iops: Some(1000),
                pids: Some(512),
            }
        );
        assert_eq!(
            c.default_limits,
            Limits {
                cpu_millis: Some(500),
                memory_bytes: Some(256 << 20),
                io_read_bps: Some(10 << 20),
                io_write_bps: Some(5 << 20),
                io_read_iops: Some(200),
                io_write_iops: Some(100),
                pids: Some(64),
            }
        );
    }

    #[test]
    fn hostile_client_bounds_have_defaults_and_flags() {
        let c = config(&[]).unwrap();
        let d = ServerConfig::new(c.tls.clone());
        assert_eq!(
            c.max_connections_per_identity,
            d.max_connections_per_identity
        );
        assert_eq!(c.max_handshakes, d.max_handshakes);
        assert_eq!(c.retry_threshold, d.retry_threshold);
        assert_eq!(c.handshake_timeout, d.handshake_timeout);
        assert_eq!(
            c.max_subscriptions_per_identity,
            d.max_subscriptions_per_identity
        );
        assert_eq!(c.max_requests_per_identity, d.max_requests_per_identity);
        assert_eq!(
            c.request_buffer_per_connection,
            d.request_buffer_per_connection
        );
        assert_eq!(c.idle_connection_timeout, d.idle_connection_timeout);
        let c = config(&[
            "--max-connections-per-user",
            "3",
            "--max-handshakes",
            "7",
            "--retry-threshold",
            "0",
            "--handshake-timeout",
            "2",
            "--max-subscriptions-per-user",
            "5",
            "--max-requests-per-user",
            "6",
            "--request-buffer",
            "4M",
            "--idle-connection-timeout",
            "0",
            "--idle-timeout",
            "90s",
        ])
        .unwrap();
        assert_eq!(c.max_connections_per_identity, 3);
        assert_eq!(c.max_handshakes, 7);
        assert_eq!(c.retry_threshold, 0);
        assert_eq!(c.handshake_timeout, Duration::from_secs(2));
        assert_eq!(c.max_subscriptions_per_identity, 5);
        assert_eq!(c.max_requests_per_identity, 6);
        assert_eq!(c.request_buffer_per_connection, 4 << 20);
        assert_eq!(c.idle_connection_timeout, None);
        assert_eq!(c.idle_timeout, Duration::from_secs(90));
        let c = config(&[
            "--idle-connection-timeout",
            "2m",
            "--handshake-timeout",
            "1500ms",
        ])
        .unwrap();
        assert_eq!(c.idle_connection_timeout, Some(Duration::from_secs(120)));
        assert_eq!(c.handshake_timeout, Duration::from_millis(1500));
        assert!(config(&["--handshake-timeout", "61s"]).is_err());
        assert!(config(&["--handshake-timeout", "0"]).is_err());
        let e = config(&["--request-buffer", "1M"]).unwrap_err().to_string();
        assert!(
            e.starts_with("--request-buffer (1 MiB) is less than"),
            "{e}"
        );
        assert!(config(&["--handshake-timeout", "0"]).is_err());
    }

    #[test]
    fn log_format_is_text_or_json() {
        let args = |a: &[&str]| Args::try_parse_from([&["qexecd"][..], a].concat());
        assert_eq!(args(&[]).unwrap().log_format, LogFormat::Text);
        assert_eq!(
            args(&["--log-format", "json"]).unwrap().log_format,
            LogFormat::Json
        );
        let e = args(&["--log-format", "xml"]).unwrap_err().to_string();
        assert!(e.contains("expected text or json"), "{e}");
    }

    #[test]
    fn json_log_lines_escape_control_characters() {
        use tracing_subscriber::fmt::MakeWriter;
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl MakeWriter<'_> for Buf {
            type Writer = Buf;
            fn make_writer(&self) -> Buf {
                self.clone()
            }
        }
        let buf = Buf::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(buf.clone())
            .event_format(log::JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "qexec::audit", user = "alice", n = 3u64, reason = %"a\nb\u{1b}", "request");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["target"], "qexec::audit");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["message"], "request");
        assert_eq!(v["user"], "alice");
        assert_eq!(v["n"], 3);
        assert_eq!(v["reason"], "a\nb\u{1b}");
    }

    #[test]
    fn no_limit_flags_mean_no_limits() {
        let c = config(&[]).unwrap();
        assert!(c.max_limits.is_empty());
        assert!(c.default_limits.is_empty());
    }

    #[test]
    fn bad_limit_values_are_refused_with_the_expected_form() {
        for arg in [
            "--max-memory=12X",
            "--max-memory=1.5",
            "--max-cpu=0",
            "--max-cpu=half",
            "--max-pids=0",
            "--max-pids=-1",
            "--default-io-read-iops=1e3",
            "--max-pids=4294967296",
        ] {
            let err = Args::try_parse_from(["qexecd", arg])
                .expect_err(&format!("{arg} should be refused"));
            let text = err.to_string();
            let flag = arg.split('=').next().unwrap_or(arg);
            assert!(text.contains(flag), "{arg}: {text}");
            assert!(text.contains("expected"), "{arg}: {text}");
        }
    }

    #[test]
    fn a_default_above_its_maximum_is_refused_at_start() {
        let err = config(&["--max-memory", "64M", "--default-memory", "128M"])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "--default-memory (128 MiB) is above --max-memory (64 MiB): lower the default \
             or raise the maximum"
        );
        let err = config(&["--max-cpu", "1", "--default-cpu", "1.5"])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("--default-cpu (1.5) is above --max-cpu (1)"),
            "{err}"
        );
        // Equal is fine.
        config(&["--max-pids", "64", "--default-pids", "64"]).unwrap();
    }
}
