//! Shared helpers of the CLI tests: the shared in-process qexecd (its PKI on disk as
//! `qexec certs init` writes it), and the `qexec` binary pointed at it.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use qexec_client::ClientConfig;
use qexec_server::local::{BlockingLocalServer, LocalServer};
use qexec_server::service::ServerConfig;
use qexec_tls::InitOptions;

/// Generous bound for anything a test waits for.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// The shared in-process qexecd ([`LocalServer`]: default client `tester`, isolation
/// off — the CLI is under test here, not isolation) in a runtime of its own, so the
/// tests stay synchronous.
pub(crate) struct TestServer {
    pub(crate) addr: std::net::SocketAddr,
    inner: BlockingLocalServer,
}

/// A fresh PKI directory (CA, server, default client `tester`, default users).
pub(crate) fn make_pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    qexec_tls::init(
        dir.path(),
        &InitOptions {
            client_name: Some("tester".into()),
            ..InitOptions::default()
        },
    )
    .expect("pki init");
    dir
}

impl TestServer {
    pub(crate) fn start() -> Self {
        Self::start_with(|_| {})
    }

    pub(crate) fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> Self {
        let inner = BlockingLocalServer::start(adjust).expect("start the in-process qexecd");
        Self {
            addr: inner.local().addr,
            inner,
        }
    }

    fn local(&self) -> &LocalServer {
        self.inner.local()
    }

    pub(crate) fn dir(&self) -> &Path {
        self.local().pki_dir()
    }

    /// Client settings for the default identity (`None`) or `users/<name>`.
    pub(crate) fn config(&self, user: Option<&str>) -> ClientConfig {
        let base = match user {
            Some(u) => ClientConfig::for_user(self.dir(), u),
            None => ClientConfig::from_pki_dir(self.dir()),
        };
        base.with_addr(self.addr.to_string())
    }

    /// The `qexec` binary with the connection settings of this server in its env.
    pub(crate) fn qexec(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_qexec"));
        cmd.env("QEXEC_ADDR", self.addr.to_string())
            .env("QEXEC_CONFIG_DIR", self.dir())
            .env_remove("QEXEC_CA")
            .env_remove("QEXEC_CERT")
            .env_remove("QEXEC_KEY")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `qexec ARGS` to completion (bounded by [`WAIT`]).
    pub(crate) fn run(&self, args: &[&str]) -> Output {
        let mut cmd = self.qexec();
        cmd.args(args);
        output_within(cmd, WAIT)
    }
}

/// Runs a command, killing it and failing the test if it takes longer than `limit`.
pub(crate) fn output_within(mut cmd: Command, limit: Duration) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn qexec");
    wait_child(child, limit)
}

/// Waits for a spawned child (stdout/stderr piped) with a bound.
pub(crate) fn wait_child(child: Child, limit: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("wait for qexec"),
        Err(_) => {
            // SIGKILL the stuck child so the test binary does not hang.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("qexec (pid {pid}) did not finish within {limit:?}");
        }
    }
}

/// Reads a child's pipe on a thread, delivering chunks through a channel, so a test
/// can wait for specific output with a timeout.
pub(crate) struct PipeReader {
    rx: mpsc::Receiver<Vec<u8>>,
    pub(crate) seen: Vec<u8>,
}

impl PipeReader {
    pub(crate) fn new(mut pipe: impl Read + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits until the output so far contains `needle`.
    pub(crate) fn wait_for(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !String::from_utf8_lossy(&self.seen).contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(_) => panic!(
                    "did not see {needle:?} within {limit:?}; got {:?}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
    }

    /// Reads until the pipe closes.
    pub(crate) fn read_to_end(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(chunk) => self.seen.extend_from_slice(&chunk),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("pipe still open after {limit:?}"),
            }
        }
        String::from_utf8_lossy(&self.seen).into_owned()
    }
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
