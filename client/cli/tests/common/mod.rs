//! Shared helpers of the client tests: an in-process qexecd with a throwaway PKI on
//! disk (as `qexec certs init` writes it), and the `qexec` binary pointed at it.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use qexec_client::ClientConfig;
use qexec_server::pki::{self, InitOptions};
use qexec_server::service::{Server, ServerConfig};

/// Generous bound for anything a test waits for.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// qexecd on 127.0.0.1 (random port) in its own runtime, with a PKI in a temp dir.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) pki: tempfile::TempDir,
    _state: tempfile::TempDir,
    server: Arc<Server>,
    serve: Option<tokio::task::JoinHandle<()>>,
    rt: Option<tokio::runtime::Runtime>,
}

/// A fresh PKI directory (CA, server, default client `tester`, default users).
pub(crate) fn make_pki() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    pki::init(
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
        let pki = make_pki();
        let state = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut config = ServerConfig::from_pki_dir(pki.path());
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.state_dir = state.path().to_owned();
        // The CLI is under test here, not isolation: the service's own tests cover it.
        config.isolation = false;
        adjust(&mut config);
        let server = Arc::new(rt.block_on(Server::bind(config)).expect("bind qexecd"));
        let addr = server.local_addr();
        let serve = rt.spawn({
            let server = server.clone();
            async move { server.run().await }
        });
        Self {
            addr,
            pki,
            _state: state,
            server,
            serve: Some(serve),
            rt: Some(rt),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        self.pki.path()
    }

    /// Client settings for the default identity (`None`) or `users/<name>`.
    pub(crate) fn config(&self, user: Option<&str>) -> ClientConfig {
        let base = match user {
            Some(u) => ClientConfig::for_user(self.dir(), u),
            None => ClientConfig::from_pki_dir(self.dir()),
        };
        base.with_addr(self.addr.to_string())
    }

    /// Runs a future on the server's runtime (library-level tests).
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.as_ref().expect("runtime").block_on(f)
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

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            let server = self.server.clone();
            let serve = self.serve.take();
            rt.block_on(async move {
                server.shutdown().await;
                if let Some(s) = serve {
                    let _ = tokio::time::timeout(WAIT, s).await;
                }
            });
            rt.shutdown_timeout(Duration::from_secs(5));
        }
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
