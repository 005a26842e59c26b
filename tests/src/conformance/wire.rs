//! The runner's own view of the wire: connections, raw streams, and what the server
//! did with each stream (answered, reset with a code, stopped with a code, nothing).
//!
//! Nothing here trusts the server: every wait is bounded by [`Config::wait`], every
//! answer is decoded with the protocol's decoder and checked against the protocol's
//! stream state machines.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use qexec_protocol::{
    ALPN, AttachRequest, ClientMessage, Decoder, ErrorCode, ErrorResponse, JobId, JobStatus,
    Limits, ListRequest, OutputFrame, OutputStream, OutputStreamState, ResponseState,
    ServerMessage, StartRequest, StartedResponse, StatusRequest, StopRequest, frame,
};
use qexec_tls::CertKeyPem;
use quinn::{Connection, Endpoint, ReadError, ReadToEndError, RecvStream, SendStream, VarInt};

use super::Config;

/// Most answer bytes the runner reads from one control stream.
const MAX_ANSWER: usize = 64 << 20;

/// A connection to the server under test, as one identity.
#[derive(Debug)]
pub struct Peer {
    /// The QUIC connection.
    pub conn: Connection,
    /// Its endpoint, kept alive with it.
    pub endpoint: Endpoint,
    /// Longest wait for one answer.
    pub wait: Duration,
}

/// A client TLS configuration trusting the server's CA, presenting `identity`,
/// offering `alpn`.
pub fn client_tls(
    config: &Config,
    identity: Option<&CertKeyPem>,
    alpn: &[&[u8]],
) -> anyhow::Result<rustls::ClientConfig> {
    let mut tls = qexec_tls::client_config_pem(&config.ca_pem, identity)?.config;
    tls.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Ok(tls)
}

/// Starts a QUIC handshake with `tls`; the endpoint is returned with the attempt.
pub fn connecting(
    config: &Config,
    tls: rustls::ClientConfig,
) -> anyhow::Result<(Endpoint, quinn::Connecting)> {
    let bind: std::net::SocketAddr = if config.addr.is_ipv6() {
        "[::1]:0".parse()?
    } else {
        "127.0.0.1:0".parse()?
    };
    let mut endpoint = Endpoint::client(bind).context("cannot bind a client UDP socket")?;
    let mut cfg = qexec_tls::quic_client_config(tls)?;
    let mut transport = qexec_tls::client_transport();
    transport
        // spec: QX-STREAM-3 — a server never opens bidirectional streams.
        .max_concurrent_bidi_streams(0u32.into());
    cfg.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(cfg);
    let connecting = endpoint
        .connect(config.addr, &config.server_name)
        .context("cannot start a QUIC connection")?;
    Ok((endpoint, connecting))
}

impl Peer {
    /// Connects as `identity` with ALPN `qexec/1`.
    pub async fn connect(config: &Config, identity: &CertKeyPem) -> anyhow::Result<Peer> {
        let tls = client_tls(config, Some(identity), &[ALPN])?;
        let (endpoint, connecting) = connecting(config, tls)?;
        let conn = tokio::time::timeout(config.wait, connecting)
            .await
            .map_err(|_| anyhow!("handshake with {} timed out", config.addr))?
            .with_context(|| format!("handshake with {} failed", config.addr))?;
        Ok(Peer {
            conn,
            endpoint,
            wait: config.wait,
        })
    }

    /// Connects as the main identity.
    pub async fn user(config: &Config) -> anyhow::Result<Peer> {
        Self::connect(config, &config.user).await
    }

    /// Opens a control stream and writes `bytes` (not finished).
    pub async fn open(&self, bytes: &[u8]) -> anyhow::Result<(SendStream, RecvStream)> {
        let (mut send, recv) = tokio::time::timeout(self.wait, self.conn.open_bi())
            .await
            .map_err(|_| anyhow!("the server gives no credit for a new control stream"))??;
        send.write_all(bytes).await?;
        Ok((send, recv))
    }

    /// Sends `msg` on a new control stream, finishes it, and reads the answer.
    pub async fn request(&self, msg: &ClientMessage) -> anyhow::Result<Answer> {
        let (mut send, mut recv) = self.open(&frame::encode(msg)?).await?;
        send.finish()?;
        Ok(read_answer(&mut recv, self.wait).await)
    }

    /// Sends `msg` and checks the answer against the protocol's response rules
    /// (spec: QX-STREAM-9, QX-STREAM-10): the answer's frames, or why not.
    pub async fn ask(&self, msg: &ClientMessage) -> anyhow::Result<Vec<ServerMessage>> {
        self.request(msg).await?.checked(msg)
    }

    /// A `List` of every job visible to this peer.
    pub async fn list(&self) -> anyhow::Result<Vec<JobStatus>> {
        let answer = self
            .ask(&ClientMessage::List(ListRequest {
                running_only: false,
            }))
            .await?;
        let mut jobs = Vec::new();
        for m in answer {
            match m {
                ServerMessage::ListItem(s) => jobs.push(s),
                ServerMessage::ListEnd => return Ok(jobs),
                other => bail!("List answered {other:?}"),
            }
        }
        bail!("List answer has no ListEnd")
    }

    /// A job's status.
    pub async fn status(&self, job: JobId) -> anyhow::Result<JobStatus> {
        match self
            .ask(&ClientMessage::Status(StatusRequest { job }))
            .await?
            .as_slice()
        {
            [ServerMessage::Status(s)] => Ok(s.clone()),
            other => bail!("Status answered {other:?}"),
        }
    }

    /// Starts `req`; the answer and the control stream id.
    pub async fn start(&self, req: StartRequest) -> anyhow::Result<(StartedResponse, u64)> {
        let msg = ClientMessage::Start(req);
        let (mut send, mut recv) = self.open(&frame::encode(&msg)?).await?;
        let id = u64::from(send.id());
        send.finish()?;
        match read_answer(&mut recv, self.wait)
            .await
            .checked(&msg)?
            .as_slice()
        {
            [ServerMessage::Started(s)] => Ok((s.clone(), id)),
            other => bail!("Start answered {other:?}"),
        }
    }

    /// Stops a job with a short grace period.
    pub async fn stop(&self, job: JobId) -> anyhow::Result<JobStatus> {
        let msg = ClientMessage::Stop(StopRequest {
            job,
            grace_ms: Some(100),
        });
        match self.ask(&msg).await?.as_slice() {
            [ServerMessage::Status(s)] => Ok(s.clone()),
            other => bail!("Stop answered {other:?}"),
        }
    }

    /// Waits for the next output stream the server opens and reads it whole.
    pub async fn next_output(&self) -> anyhow::Result<Output> {
        let recv = tokio::time::timeout(self.wait, self.conn.accept_uni())
            .await
            .map_err(|_| anyhow!("the server opened no output stream"))??;
        read_output(recv, self.wait * 3).await
    }

    /// Waits for job `job` to end, by following its output to `End` (an event, not
    /// polling); its final status.
    pub async fn wait_ended(&self, job: JobId) -> anyhow::Result<JobStatus> {
        let msg = ClientMessage::Attach(AttachRequest { job, from: 0 });
        match self.ask(&msg).await?.as_slice() {
            [ServerMessage::Attached { job: j }] if *j == job => {}
            other => bail!("Attach answered {other:?}"),
        }
        Ok(self.next_output().await?.status)
    }

    /// Half-opens a "witness" control stream: the first byte of a `List` frame, so the
    /// server has seen the stream but not its request. [`Witness::complete`] later
    /// checks that it still works (spec: QX-FRAME-5).
    pub async fn witness(&self) -> anyhow::Result<Witness> {
        let bytes = frame::encode(&list_msg())?;
        let (send, recv) = self.open(&bytes[..1]).await?;
        Ok(Witness {
            send,
            recv,
            rest: bytes[1..].to_vec(),
            wait: self.wait,
        })
    }

    /// True while the connection is open.
    pub fn is_open(&self) -> bool {
        self.conn.close_reason().is_none()
    }
}

/// `List { running_only: false }`.
pub fn list_msg() -> ClientMessage {
    ClientMessage::List(ListRequest {
        running_only: false,
    })
}

/// A control stream kept half-sent while another stream is broken on purpose.
#[derive(Debug)]
pub struct Witness {
    send: SendStream,
    recv: RecvStream,
    rest: Vec<u8>,
    wait: Duration,
}

impl Witness {
    /// Sends the rest of the `List` and expects a complete answer.
    pub async fn complete(mut self) -> anyhow::Result<()> {
        self.send.write_all(&self.rest).await?;
        self.send.finish()?;
        read_answer(&mut self.recv, self.wait)
            .await
            .checked(&list_msg())
            .map(drop)
            .context("a stream opened before the fault no longer works")
    }
}

/// What the server did with the response side of a control stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Frames, then FIN; the raw bytes too.
    Frames {
        /// The decoded frames.
        msgs: Vec<ServerMessage>,
        /// Exactly what was received.
        raw: Vec<u8>,
    },
    /// The bytes could not be decoded as server frames.
    Undecodable {
        /// The decoder's error.
        error: String,
        /// Exactly what was received.
        raw: Vec<u8>,
    },
    /// The server reset the stream with this application code.
    Reset(u64),
    /// Nothing ended the stream in time.
    TimedOut,
    /// The connection went away.
    Lost(String),
}

impl Answer {
    /// The frames of a well-formed answer to `request`, or what was wrong.
    pub fn checked(self, request: &ClientMessage) -> anyhow::Result<Vec<ServerMessage>> {
        let msgs = match self {
            Answer::Frames { msgs, .. } => msgs,
            other => bail!("expected an answer, got {}", other.describe()),
        };
        let mut state = ResponseState::for_request(request)
            .ok_or_else(|| anyhow!("{request:?} is not a request"))?;
        for m in &msgs {
            state.on_frame(m).map_err(|v| anyhow!("{v}"))?;
        }
        state.on_finish().map_err(|v| anyhow!("{v}"))?;
        Ok(msgs)
    }

    /// The error response, if the answer is exactly one `Error`.
    pub fn error(&self) -> Option<&ErrorResponse> {
        match self {
            Answer::Frames { msgs, .. } => match msgs.as_slice() {
                [ServerMessage::Error(e)] => Some(e),
                _ => None,
            },
            _ => None,
        }
    }

    /// A short description for failure messages.
    pub fn describe(&self) -> String {
        match self {
            Answer::Frames { msgs, .. } => match msgs.as_slice() {
                [ServerMessage::Error(e)] => {
                    format!("Error {{ code: {}, message: {:?} }}", e.code, e.message)
                }
                msgs => format!(
                    "answer [{}]",
                    msgs.iter()
                        .map(qexec_protocol::server_message_name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            },
            Answer::Undecodable { error, raw } => {
                format!("undecodable answer ({} bytes): {error}", raw.len())
            }
            Answer::Reset(code) => format!("stream reset with {}", code_name(*code)),
            Answer::TimedOut => "no answer, no reset".to_owned(),
            Answer::Lost(e) => format!("connection lost: {e}"),
        }
    }
}

/// `name (number)` of a wire code.
pub fn code_name(code: u64) -> String {
    match u32::try_from(code).ok().and_then(ErrorCode::from_u32) {
        Some(c) => format!("{c} ({code})"),
        None => format!("unknown code {code}"),
    }
}

/// Reads a control stream's response side to its end.
pub async fn read_answer(recv: &mut RecvStream, wait: Duration) -> Answer {
    let bytes = match tokio::time::timeout(wait, recv.read_to_end(MAX_ANSWER)).await {
        Err(_) => return Answer::TimedOut,
        Ok(Err(ReadToEndError::Read(ReadError::Reset(code)))) => {
            return Answer::Reset(code.into_inner());
        }
        Ok(Err(e)) => return Answer::Lost(e.to_string()),
        Ok(Ok(b)) => b,
    };
    let mut d = Decoder::new();
    d.push(&bytes);
    let mut msgs = Vec::new();
    loop {
        match d.next::<ServerMessage>() {
            Ok(Some(m)) => msgs.push(m),
            Ok(None) => break,
            Err(e) => {
                return Answer::Undecodable {
                    error: e.to_string(),
                    raw: bytes,
                };
            }
        }
    }
    if let Err(e) = d.finish() {
        return Answer::Undecodable {
            error: e.to_string(),
            raw: bytes,
        };
    }
    Answer::Frames { msgs, raw: bytes }
}

/// Everything one output stream carried, checked against the output stream rules
/// (spec: QX-STREAM-11 to QX-STREAM-13, QX-LIMIT-11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The header's request stream id.
    pub request_stream: u64,
    /// The header's job.
    pub job: JobId,
    /// The header's start offset.
    pub from: u64,
    /// The combined output bytes.
    pub data: Vec<u8>,
    /// The bytes of the `Data` frames tagged `Stdout`.
    pub stdout: Vec<u8>,
    /// The bytes of the `Data` frames tagged `Stderr`.
    pub stderr: Vec<u8>,
    /// Payload sizes of the `Data` frames.
    pub chunks: Vec<usize>,
    /// The final status.
    pub status: JobStatus,
}

/// Reads an output stream to its end (bounded by `wait`) and checks its shape.
pub async fn read_output(mut recv: RecvStream, wait: Duration) -> anyhow::Result<Output> {
    let read = async {
        let mut d = Decoder::new();
        let mut state = OutputStreamState::new();
        let mut header = None;
        let mut data = Vec::new();
        let mut chunks = Vec::new();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let mut status = None;
        loop {
            while let Some(f) = d.next::<OutputFrame>()? {
                state.on_frame(&f).map_err(|v| anyhow!("{v}"))?;
                match f {
                    OutputFrame::Header {
                        request_stream,
                        job,
                        from,
                    } => header = Some((request_stream, job, from)),
                    OutputFrame::Data {
                        data: bytes,
                        stream,
                        ..
                    } => {
                        chunks.push(bytes.len());
                        data.extend_from_slice(&bytes);
                        match stream {
                            OutputStream::Stdout => stdout.extend_from_slice(&bytes),
                            OutputStream::Stderr => stderr.extend_from_slice(&bytes),
                        }
                    }
                    OutputFrame::End { status: s } => status = Some(s),
                }
            }
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(c)) => d.push(&c.bytes),
                Ok(None) => break,
                Err(ReadError::Reset(code)) => {
                    bail!("output stream reset with {}", code_name(code.into_inner()))
                }
                Err(e) => bail!("reading the output stream failed: {e}"),
            }
        }
        d.finish()?;
        state.on_finish().map_err(|v| anyhow!("{v}"))?;
        let (request_stream, job, from) = header.context("no Header")?;
        Ok(Output {
            request_stream,
            job,
            from,
            data,
            stdout,
            stderr,
            chunks,
            status: status.context("no End")?,
        })
    };
    tokio::time::timeout(wait, read)
        .await
        .map_err(|_| anyhow!("output stream did not end within {wait:?}"))?
}

/// A `Start` of `argv` (bytes) with a `PATH`, a 60 s safety timeout (so a runner that
/// dies leaves nothing running for long on a foreign server) and no stdin.
pub fn start_req(argv: &[&[u8]], follow: bool) -> StartRequest {
    StartRequest {
        argv: argv.iter().map(|a| a.to_vec()).collect(),
        env: vec![(b"PATH".to_vec(), b"/usr/local/bin:/usr/bin:/bin".to_vec())],
        cwd: None,
        limits: Limits::default(),
        timeout_ms: Some(60_000),
        stdin: false,
        follow,
        stop_on_detach: false,
    }
}

/// How the server closed a stream the runner broke on purpose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Closed {
    /// RESET_STREAM code on the server's send side.
    pub reset: Option<u64>,
    /// STOP_SENDING code on the runner's send side.
    pub stopped: Option<u64>,
    /// Anything else the response side did.
    pub other: Option<String>,
}

impl Closed {
    /// Whether the server closed the stream with `code` (reset, or stop sending, or
    /// both) and with no other code.
    pub fn is(&self, code: ErrorCode) -> bool {
        let want = u64::from(code.as_u32());
        let codes = [self.reset, self.stopped];
        codes.contains(&Some(want)) && codes.iter().flatten().all(|c| *c == want)
    }

    /// What was seen.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = self.reset {
            parts.push(format!("RESET_STREAM {}", code_name(c)));
        }
        if let Some(c) = self.stopped {
            parts.push(format!("STOP_SENDING {}", code_name(c)));
        }
        if let Some(o) = &self.other {
            parts.push(o.clone());
        }
        if parts.is_empty() {
            "the stream was not closed".to_owned()
        } else {
            parts.join(" + ")
        }
    }
}

/// Waits for the server to close a stream: the reset of its send side and/or its
/// STOP_SENDING on ours. `None` codes mean "not seen within `wait`".
pub async fn closed(send: &mut SendStream, recv: &mut RecvStream, wait: Duration) -> Closed {
    let stopped = async {
        match tokio::time::timeout(wait, send.stopped()).await {
            Ok(Ok(Some(code))) => Some(code.into_inner()),
            _ => None,
        }
    };
    let (stopped, answer) = tokio::join!(stopped, read_answer(recv, wait));
    let (reset, other) = match answer {
        Answer::Reset(c) => (Some(c), None),
        Answer::TimedOut => (None, None),
        a => (None, Some(a.describe())),
    };
    Closed {
        reset,
        stopped,
        other,
    }
}

/// Sends `bytes` on a new control stream of `peer` (then FIN when `finish`, or a
/// reset with code 0 when `reset`), and checks that the server closes only that
/// stream with `code`: a witness stream opened before keeps working and the
/// connection stays open (spec: QX-FRAME-5, QX-ERR-3).
pub async fn expect_fault(
    peer: &Peer,
    bytes: &[u8],
    end: End,
    code: ErrorCode,
) -> anyhow::Result<Result<String, String>> {
    let witness = peer.witness().await?;
    let (mut send, mut recv) = tokio::time::timeout(peer.wait, peer.conn.open_bi())
        .await
        .map_err(|_| anyhow!("no credit for a new control stream"))??;
    // The server may stop the stream before all bytes are written: that is fine.
    let _ = send.write_all(bytes).await;
    match end {
        End::Open => {}
        End::Finish => {
            let _ = send.finish();
        }
        End::Reset => {
            let _ = send.reset(VarInt::from_u32(ErrorCode::Cancelled.as_u32()));
        }
    }
    let seen = closed(&mut send, &mut recv, peer.wait).await;
    if !seen.is(code) {
        return Ok(Err(format!(
            "expected the stream closed with {}, got {}",
            code_name(code.as_u32().into()),
            seen.describe()
        )));
    }
    if let Err(e) = witness.complete().await {
        return Ok(Err(format!("{}: {e:#}", seen.describe())));
    }
    if !peer.is_open() {
        return Ok(Err(format!(
            "{}, but the whole connection was closed",
            seen.describe()
        )));
    }
    Ok(Ok(format!(
        "{}; another stream and the connection kept working",
        seen.describe()
    )))
}

/// How the runner ends its send side after the bytes of [`expect_fault`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Leave it open.
    Open,
    /// FIN.
    Finish,
    /// RESET_STREAM.
    Reset,
}
