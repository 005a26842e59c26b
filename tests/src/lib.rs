//! Shared helpers for qexec's integration and conformance suites.
//!
//! [`TestServer`] runs a real `qexecd` service in-process on loopback with a throwaway
//! PKI and state directory (the shared harness, `qexec_server::local`); [`TestClient`] is a raw quinn client speaking the framing
//! directly (no client library), so tests see exactly what is on the wire.
#![warn(missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use qexec_protocol::{
    AttachRequest, ClientMessage, Decoder, JobId, JobStatus, Limits, OutputFrame, ServerMessage,
    StartRequest, StatusRequest, frame,
};
use qexec_server::local::LocalServer;
use qexec_server::service::ServerConfig;
use qexec_tls::{CertKeyPem, InMemoryPki, InitOptions};
use quinn::{Connection, Endpoint, RecvStream, SendStream};

/// Generous bound for any single network wait in tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// A throwaway PKI with the default users (alice, bob: user; admin: admin; auditor:
/// viewer) and a default client named `tester` (admin).
pub fn test_pki() -> anyhow::Result<InMemoryPki> {
    Ok(qexec_tls::generate_in_memory(&InitOptions {
        client_name: Some("tester".into()),
        ..Default::default()
    })?)
}

/// A qexec server running in-process on loopback: the shared harness
/// ([`LocalServer`], default client `tester`, isolation off) plus raw-wire connects.
/// Its fields (`server`, `pki`, `addr`) are the harness's, through `Deref`.
#[derive(Debug)]
pub struct TestServer(LocalServer);

impl std::ops::Deref for TestServer {
    type Target = LocalServer;

    fn deref(&self) -> &LocalServer {
        &self.0
    }
}

impl TestServer {
    /// Starts a server with default settings on 127.0.0.1 (any port).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Starts a server after `adjust` changed its configuration.
    pub async fn start_with(adjust: impl FnOnce(&mut ServerConfig)) -> anyhow::Result<Self> {
        Ok(Self(LocalServer::start(adjust).await?))
    }

    /// The certificate of a default user (`alice`, `bob`, `admin`, `auditor`) or of the
    /// default client (`tester`).
    pub fn identity(&self, user: &str) -> anyhow::Result<&CertKeyPem> {
        self.0
            .identity(user)
            .with_context(|| format!("no test identity {user}"))
    }

    /// The shared client TLS configuration, trusting this server's CA and presenting
    /// `identity`.
    pub fn client_tls(
        &self,
        identity: Option<&CertKeyPem>,
    ) -> anyhow::Result<rustls::ClientConfig> {
        Ok(self.0.client_tls(identity)?.config)
    }

    /// Connects as a default user.
    pub async fn connect(&self, user: &str) -> anyhow::Result<TestClient> {
        let tls = self.client_tls(Some(self.identity(user)?))?;
        TestClient::connect(self.addr, tls).await
    }

    /// Graceful shutdown; waits for the accept loop to end.
    pub async fn stop(self) -> anyhow::Result<()> {
        Ok(self.0.shutdown().await?)
    }
}

/// The client transport settings qexec recommends (the shared windows of
/// [`qexec_tls::client_transport`]).
pub fn client_transport() -> quinn::TransportConfig {
    qexec_tls::client_transport()
}

/// A raw QUIC client.
#[derive(Debug)]
pub struct TestClient {
    /// The connection.
    pub conn: Connection,
    /// Its endpoint (kept alive with the connection).
    pub endpoint: Endpoint,
}

impl TestClient {
    /// Connects to `addr` with `tls` and waits for the handshake.
    pub async fn connect(addr: SocketAddr, tls: rustls::ClientConfig) -> anyhow::Result<Self> {
        let (endpoint, connecting) = Self::connecting(addr, tls)?;
        let conn = tokio::time::timeout(WAIT, connecting)
            .await
            .context("handshake timed out")??;
        Ok(Self { conn, endpoint })
    }

    /// Starts a connection without waiting for it.
    pub fn connecting(
        addr: SocketAddr,
        tls: rustls::ClientConfig,
    ) -> anyhow::Result<(Endpoint, quinn::Connecting)> {
        let bind: SocketAddr = if addr.is_ipv6() {
            "[::1]:0".parse()?
        } else {
            "127.0.0.1:0".parse()?
        };
        let mut endpoint = Endpoint::client(bind)?;
        let mut cfg = qexec_tls::quic_client_config(tls)?;
        cfg.transport_config(Arc::new(client_transport()));
        endpoint.set_default_client_config(cfg);
        let connecting = endpoint.connect(addr, "localhost")?;
        Ok((endpoint, connecting))
    }

    /// Opens a control stream and sends `bytes` (not finished).
    pub async fn open(&self, bytes: &[u8]) -> anyhow::Result<(SendStream, RecvStream)> {
        let (mut send, recv) = self.conn.open_bi().await?;
        send.write_all(bytes).await?;
        Ok((send, recv))
    }

    /// Sends one request on a new control stream, finishes, and returns the answer's
    /// frames (until the server's FIN).
    pub async fn request(&self, msg: &ClientMessage) -> anyhow::Result<Vec<ServerMessage>> {
        let (mut send, mut recv) = self.open(&frame::encode(msg)?).await?;
        send.finish()?;
        read_all(&mut recv).await
    }

    /// Like [`TestClient::request`], also returning the raw answer bytes.
    pub async fn request_raw(&self, msg: &ClientMessage) -> anyhow::Result<Vec<u8>> {
        let (mut send, mut recv) = self.open(&frame::encode(msg)?).await?;
        send.finish()?;
        Ok(tokio::time::timeout(WAIT, recv.read_to_end(1 << 24))
            .await
            .context("answer timed out")??)
    }

    /// Starts `argv` (no stdin); returns the job id.
    pub async fn start(&self, argv: &[&str], follow: bool) -> anyhow::Result<JobId> {
        let answer = self.request(&start_msg(argv, follow)).await?;
        match answer.as_slice() {
            [ServerMessage::Started(s)] => Ok(s.job),
            other => bail!("start answered {other:?}"),
        }
    }

    /// A job's status.
    pub async fn status(&self, job: JobId) -> anyhow::Result<JobStatus> {
        match self
            .request(&ClientMessage::Status(StatusRequest { job }))
            .await?
            .as_slice()
        {
            [ServerMessage::Status(s)] => Ok(s.clone()),
            other => bail!("status answered {other:?}"),
        }
    }

    /// Attaches to a job from `from` and returns the output stream.
    pub async fn attach(&self, job: JobId, from: u64) -> anyhow::Result<OutputReader> {
        let answer = self
            .request(&ClientMessage::Attach(AttachRequest { job, from }))
            .await?;
        match answer.as_slice() {
            [ServerMessage::Attached { job: j }] if *j == job => self.accept_output().await,
            other => bail!("attach answered {other:?}"),
        }
    }

    /// Waits for the next output stream the server opens.
    pub async fn accept_output(&self) -> anyhow::Result<OutputReader> {
        let recv = tokio::time::timeout(WAIT, self.conn.accept_uni())
            .await
            .context("no output stream opened")??;
        Ok(OutputReader {
            recv,
            decoder: Decoder::new(),
        })
    }
}

/// A start request of `argv` with a default `PATH` and everything else default.
pub fn start_request(argv: &[&str], follow: bool) -> StartRequest {
    StartRequest {
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: vec![(b"PATH".to_vec(), b"/usr/bin:/bin".to_vec())],
        cwd: None,
        limits: Limits::default(),
        timeout_ms: None,
        stdin: false,
        follow,
        stop_on_detach: false,
    }
}

/// A `Start` of `argv` with everything else default.
pub fn start_msg(argv: &[&str], follow: bool) -> ClientMessage {
    ClientMessage::Start(start_request(argv, follow))
}

/// Reads every frame of a control stream's answer until FIN.
pub async fn read_all(recv: &mut RecvStream) -> anyhow::Result<Vec<ServerMessage>> {
    let bytes = tokio::time::timeout(WAIT, recv.read_to_end(1 << 24))
        .await
        .context("answer timed out")??;
    let mut d = Decoder::new();
    d.push(&bytes);
    let mut out = Vec::new();
    while let Some(m) = d.next::<ServerMessage>()? {
        out.push(m);
    }
    d.finish()?;
    Ok(out)
}

/// The reading side of an output stream.
#[derive(Debug)]
pub struct OutputReader {
    /// The stream.
    pub recv: RecvStream,
    decoder: Decoder,
}

/// Everything one output stream carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The header's request stream id.
    pub request_stream: u64,
    /// The header's job.
    pub job: JobId,
    /// The header's start offset.
    pub from: u64,
    /// Combined output bytes.
    pub data: Vec<u8>,
    /// The final status.
    pub status: JobStatus,
}

impl OutputReader {
    /// The next frame, `None` at FIN.
    pub async fn next(&mut self) -> anyhow::Result<Option<OutputFrame>> {
        loop {
            if let Some(f) = self.decoder.next::<OutputFrame>()? {
                return Ok(Some(f));
            }
            match self.recv.read_chunk(64 * 1024, true).await? {
                Some(c) => self.decoder.push(&c.bytes),
                None => {
                    self.decoder.finish()?;
                    return Ok(None);
                }
            }
        }
    }

    /// Reads the whole stream (bounded by [`WAIT`]) and checks its shape: `Header`,
    /// contiguous `Data`, `End`, FIN.
    pub async fn read_to_end(mut self) -> anyhow::Result<Output> {
        tokio::time::timeout(WAIT, async move {
            let Some(OutputFrame::Header {
                request_stream,
                job,
                from,
            }) = self.next().await?
            else {
                bail!("output stream does not start with a Header");
            };
            let mut data = Vec::new();
            loop {
                match self.next().await? {
                    Some(OutputFrame::Data {
                        offset, data: d, ..
                    }) => {
                        if offset != from + data.len() as u64 {
                            bail!("Data offset {offset} is not contiguous");
                        }
                        if d.len() > 64 * 1024 {
                            bail!("Data frame of {} bytes exceeds 64 KiB", d.len());
                        }
                        data.extend_from_slice(&d);
                    }
                    Some(OutputFrame::End { status }) => {
                        if self.next().await?.is_some() {
                            bail!("frame after End");
                        }
                        return Ok(Output {
                            request_stream,
                            job,
                            from,
                            data,
                            status,
                        });
                    }
                    Some(OutputFrame::Header { .. }) => bail!("second Header"),
                    None => bail!("output stream ended without End"),
                }
            }
        })
        .await
        .context("output stream did not end in time")?
    }
}

/// The `qexecd` binary (debug profile), built by cargo if needed: tests that need a
/// real server process (SIGKILL, stderr, RSS and fd counts) run it as a child. It
/// belongs to another package, so `CARGO_BIN_EXE_qexecd` does not exist here.
pub fn qexecd_bin() -> anyhow::Result<std::path::PathBuf> {
    built_bin("qexec-server", "qexecd")
}

/// The `qexec` command-line binary (debug profile), built by cargo if needed, for
/// tests that drive the CLI against real servers.
pub fn qexec_bin() -> anyhow::Result<std::path::PathBuf> {
    built_bin("qexec-cli", "qexec")
}

/// Builds `bin` of workspace package `package` (debug) and returns its path.
fn built_bin(package: &str, bin: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::path::{Path, PathBuf};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .current_dir(&root)
        .status()
        .with_context(|| format!("cannot run cargo to build {bin}"))?;
    anyhow::ensure!(status.success(), "building {bin} failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let path = target.join("debug").join(bin);
    anyhow::ensure!(
        path.exists(),
        "{} not found after the build",
        path.display()
    );
    Ok(path)
}

pub mod conformance;
pub mod daemon;
