//! The connection to qexecd and one method per request.
//!
//! One [`Client`] is one QUIC connection; every request runs on its own control stream
//! (client-opened bidirectional), so any number of jobs, followers and requests share
//! the connection at once. Output streams the server opens are routed to the request
//! that asked for them by the `request_stream` of their `Header` (spec: QX-STREAM-11).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, Endpoint, RecvStream, SendStream, VarInt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use qexec_protocol::{
    AttachRequest, ClientMessage, ErrorCode, JobId, JobStatus, ListEntry, ListQuery, ListRequest,
    ServerInfo, ServerMessage, SignalRequest, StartRequest, StatusRequest, StopRequest,
};

use crate::config::{ClientConfig, DEFAULT_PORT};
use crate::context::Context;
use crate::error::ClientError;
use crate::output::OutputSubscription;
use crate::routing::{RouteGuard, RoutedOutput, Routes, route_output_streams};
use crate::stdin::StdinWriter;
use crate::stream::{FrameReader, write_frame};
use crate::tls::client_tls;

mod terminal;
pub use terminal::{TerminalJob, TerminalWriter, clamp as clamp_window_size};

/// QUIC keep-alive: lets a follower of a silent job notice a dead server. Never more
/// than a third of the idle timeout, so two lost keep-alives never end a connection.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// A control stream whose request is in flight. Dropped before [`Control::complete`]
/// (an error, a timeout, a cancelled future), the request is abandoned: its send side
/// is reset and its receive side stopped, both with `Cancelled` (spec: QX-STREAM-16).
#[derive(Debug)]
struct Control {
    send: Option<SendStream>,
    reader: Option<FrameReader>,
}

impl Control {
    fn new((send, recv): (SendStream, RecvStream)) -> Self {
        Self {
            send: Some(send),
            reader: Some(FrameReader::new(recv)),
        }
    }

    fn send(&mut self) -> &mut SendStream {
        self.send.as_mut().expect("present until complete")
    }

    fn reader(&mut self) -> &mut FrameReader {
        self.reader.as_mut().expect("present until complete")
    }

    /// The request got its answer: hand out both sides.
    fn complete(mut self) -> (SendStream, FrameReader) {
        let send = self.send.take().expect("present until complete");
        let reader = self.reader.take().expect("present until complete");
        (send, reader)
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let cancelled = VarInt::from_u32(ErrorCode::Cancelled.as_u32());
        if let Some(send) = &mut self.send {
            // Already finished and acknowledged: nothing left to reset.
            let _ = send.reset(cancelled);
        }
        if let Some(reader) = &mut self.reader {
            reader.stop(ErrorCode::Cancelled);
        }
    }
}

/// A started job.
#[derive(Debug)]
pub struct StartedJob {
    /// The job's id.
    pub job: JobId,
    /// Host pid of its first process.
    pub pid: u32,
    /// Its standard input, when the request asked for it.
    pub stdin: Option<StdinWriter>,
    /// Its output from offset 0, when the request asked to follow.
    pub output: Option<OutputSubscription>,
    /// The control stream's receive side, kept open while the job is followed so that
    /// a `stop_on_detach` job is only stopped when we really go away.
    _control: Option<RecvStream>,
}

/// A connection to qexecd.
///
/// Dropping it closes the connection: its subscriptions end and jobs started with
/// `stop_on_detach` are stopped by the server.
#[derive(Debug)]
pub struct Client {
    conn: Connection,
    /// Opened before every close, so that the close packet leaves however full the
    /// congestion window is ([`qexec_tls::CloseGate`]).
    close_gate: qexec_tls::CloseGate,
    endpoint: Endpoint,
    ctx: Context,
    routes: Routes,
    router: JoinHandle<()>,
    request_timeout: Duration,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.router.abort();
        self.close_with(b"client gone");
    }
}

/// Splits `HOST:PORT` (or `[V6]:PORT`) into the host and port; a bare `HOST`,
/// `[V6]` or IPv6 address gets the default port 7443.
fn split_addr(addr: &str) -> Option<(&str, u16)> {
    if let Some(v6) = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        return (!v6.is_empty()).then_some((v6, DEFAULT_PORT));
    }
    if addr.parse::<Ipv6Addr>().is_ok() {
        return Some((addr, DEFAULT_PORT));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return (!addr.is_empty()).then_some((addr, DEFAULT_PORT));
    };
    let port = port.parse().ok()?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty()).then_some((host, port))
}

/// Resolves as soon as the host answers a datagram to `remote` with ICMP "port
/// unreachable" (nothing listens there), which QUIC itself never reports; pending
/// otherwise. Runs beside the handshake, so a down server costs a round trip instead
/// of the whole connect timeout; its one-byte datagram is dropped by any QUIC server
/// (shorter than any QUIC packet).
async fn port_unreachable(local: SocketAddr, remote: SocketAddr) {
    let probe = async {
        let socket = tokio::net::UdpSocket::bind(local).await.ok()?;
        socket.connect(remote).await.ok()?;
        socket.send(&[0]).await.ok()?;
        let mut buf = [0u8; 1];
        match socket.recv(&mut buf).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    };
    if probe.await.is_none() {
        std::future::pending::<()>().await;
    }
}

impl Client {
    /// Connects to qexecd with mutual TLS and ALPN `qexec/1`, verifying the server's
    /// certificate against `config.ca` for the host (or IP) of `config.addr`.
    pub async fn connect(config: &ClientConfig) -> Result<Self, ClientError> {
        let qexec_tls::ClientTls {
            config: tls,
            verdict,
        } = client_tls(config)?;
        let bad_addr = || ClientError::BadAddress {
            addr: config.addr.clone(),
        };
        let (host, port) = split_addr(&config.addr).ok_or_else(bad_addr)?;
        let remote = match host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => {
                let lookup = tokio::net::lookup_host((host, port));
                let mut addrs = tokio::time::timeout(config.connect_timeout, lookup)
                    .await
                    .map_err(|_| ClientError::Resolve {
                        addr: config.addr.clone(),
                        reason: "timed out".into(),
                    })?
                    .map_err(|e| ClientError::Resolve {
                        addr: config.addr.clone(),
                        reason: e.to_string(),
                    })?;
                addrs.next().ok_or_else(|| ClientError::Resolve {
                    addr: config.addr.clone(),
                    reason: "no address found".into(),
                })?
            }
        };
        let ctx = Context {
            addr: config.addr.clone(),
            ca: config.ca.clone(),
            cert: config.cert.clone(),
            server_name: host.to_owned(),
            verdict,
            idle_timeout: config.idle_timeout,
        };

        // spec: QX-TLS-3 (AES-128-GCM for Initial packets only, never negotiated)
        let mut quic = qexec_tls::quic_client_config(tls).map_err(|e| ClientError::Tls {
            cert: config.cert.clone(),
            key: config.key.clone(),
            reason: e.to_string(),
        })?;
        // One stalled follower must block only its own output stream: a per-stream
        // window well below the connection window (as qexecd expects clients to).
        let mut transport = qexec_tls::client_transport();
        // One transport config, so one gate, per connection.
        let close_gate = qexec_tls::CloseGate::new();
        transport.congestion_controller_factory(close_gate.controller_factory());
        let idle = config.idle_timeout;
        transport.keep_alive_interval(Some(KEEP_ALIVE.min(idle / 3)));
        // Beyond QUIC's range (2^62 ms) is "for ever" in practice: the largest it takes.
        transport.max_idle_timeout(Some(
            idle.try_into()
                .unwrap_or_else(|_| quinn::IdleTimeout::from(VarInt::MAX)),
        ));
        quic.transport_config(Arc::new(transport));

        let local: SocketAddr = match remote {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let endpoint =
            qexec_tls::bind_endpoint(local, None).map_err(|source| ClientError::Socket {
                addr: config.addr.clone(),
                source,
            })?;
        let connecting = endpoint
            .connect_with(quic, remote, host)
            .map_err(|e| match e {
                quinn::ConnectError::InvalidServerName(_) => bad_addr(),
                other => ClientError::ConnectionLost {
                    addr: config.addr.clone(),
                    reason: other.to_string(),
                },
            })?;
        let handshake = tokio::time::timeout(config.connect_timeout, connecting);
        let conn = tokio::select! {
            done = handshake => match done {
                Err(_) => {
                    return Err(ClientError::Unreachable {
                        addr: config.addr.clone(),
                        after: config.connect_timeout,
                    });
                }
                Ok(Err(e)) => return Err(ctx.connection_error(&e)),
                Ok(Ok(conn)) => conn,
            },
            () = port_unreachable(local, remote) => {
                let addr = if remote.to_string() == config.addr {
                    config.addr.clone()
                } else {
                    format!("{} ({remote})", config.addr)
                };
                return Err(ClientError::Refused { addr });
            }
        };

        let routes = Routes::default();
        let router = tokio::spawn(route_output_streams(conn.clone(), routes.clone()));
        Ok(Self {
            conn,
            close_gate,
            endpoint,
            ctx,
            routes,
            router,
            request_timeout: config.request_timeout,
        })
    }

    /// The server address this client talks to.
    pub fn addr(&self) -> &str {
        &self.ctx.addr
    }

    /// True once the connection is closed or lost (no request can succeed on it).
    pub(crate) fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// Closes the connection now, telling the server we are done.
    ///
    /// The close frame is queued; it leaves when the connection's driver task next runs.
    /// A caller about to exit uses [`Client::close_and_send`].
    pub fn close(&self) {
        self.close_with(b"done");
    }

    /// Closes with `NoError` and `reason`, the close gate opened first so that the close
    /// packet is not held back by a full congestion window.
    fn close_with(&self, reason: &[u8]) {
        self.close_gate.open();
        self.conn
            .close(VarInt::from_u32(ErrorCode::NoError.as_u32()), reason);
    }

    /// Closes the connection and waits (at most `limit`) until the close frame has been
    /// handed to the socket, without waiting for the drain period that
    /// [`Client::wait_closed`] waits out. A process that exits right after this has
    /// told the server it is gone: the server frees the connection (and its per-user
    /// connection slot) and stops `run` jobs at once, rather than after its idle
    /// timeout. Yielding once to the runtime usually suffices, but is not a promise:
    /// the connection's driver may have other work queued first.
    pub async fn close_and_send(&self, limit: Duration) {
        let sent = || self.conn.stats().udp_tx.datagrams;
        let before = sent();
        self.close();
        let _ = tokio::time::timeout(limit, async {
            // The connection's driver builds and sends the close packet when it next
            // runs; the close gate keeps congestion control and pacing out of its way.
            tokio::task::yield_now().await;
            while sent() == before {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
    }

    /// Waits (at most `limit`) until the close frame was sent and the connection
    /// drained, for callers that want a clean goodbye.
    pub async fn wait_closed(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.endpoint.wait_idle()).await;
    }

    /// Opens a control stream.
    ///
    /// Waits (at most the request timeout) while the server's stream limit is reached.
    async fn open(&self) -> Result<Control, ClientError> {
        let limit = self.request_timeout;
        tokio::time::timeout(limit, self.conn.open_bi())
            .await
            .map_err(|_| ClientError::RequestTimeout {
                addr: self.ctx.addr.clone(),
                request: "stream-open",
                after: limit,
            })?
            .map(Control::new)
            .map_err(|e| self.ctx.connection_error(&e))
    }

    /// Waits for one answer frame with the request timeout.
    async fn answer(
        &self,
        reader: &mut FrameReader,
        request: &'static str,
        limit: Duration,
    ) -> Result<ServerMessage, ClientError> {
        let next = tokio::time::timeout(limit, reader.next::<ServerMessage>())
            .await
            .map_err(|_| ClientError::RequestTimeout {
                addr: self.ctx.addr.clone(),
                request,
                after: limit,
            })?
            .map_err(|e| self.ctx.read_error(e))?;
        next.ok_or_else(|| ClientError::Protocol {
            addr: self.ctx.addr.clone(),
            reason: format!("the server closed the {request} stream without answering"),
        })
    }

    /// Sends a one-frame request and finishes the send side.
    async fn send_request(
        &self,
        send: &mut SendStream,
        msg: &ClientMessage,
    ) -> Result<(), ClientError> {
        write_frame(send, msg)
            .await
            .map_err(|e| self.ctx.write_error(e))?;
        // Finishing an already-reset stream fails; the read that follows reports why.
        let _ = send.finish();
        Ok(())
    }

    /// Registers a route for output that will come for the request on `send`.
    fn expect_output(&self, send: &SendStream) -> (RouteGuard, oneshot::Receiver<RoutedOutput>) {
        let id = u64::from(send.id());
        let (tx, rx) = oneshot::channel();
        self.routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        (
            RouteGuard {
                routes: self.routes.clone(),
                id,
            },
            rx,
        )
    }

    /// Waits for the output stream of a request.
    async fn output(
        &self,
        rx: oneshot::Receiver<RoutedOutput>,
        request: &'static str,
    ) -> Result<OutputSubscription, ClientError> {
        let limit = self.request_timeout;
        let routed = tokio::time::timeout(limit, rx)
            .await
            .map_err(|_| ClientError::RequestTimeout {
                addr: self.ctx.addr.clone(),
                request,
                after: limit,
            })?
            .map_err(|_| match self.conn.close_reason() {
                Some(e) => self.ctx.connection_error(&e),
                None => ClientError::Protocol {
                    addr: self.ctx.addr.clone(),
                    reason: "the output stream router stopped".into(),
                },
            })?;
        Ok(OutputSubscription::new(routed, self.ctx.clone()))
    }

    /// Starts a job (spec: QX-STREAM-5, QX-STREAM-7, QX-STREAM-8). With `req.stdin` the returned
    /// [`StartedJob::stdin`] feeds its standard input; with `req.follow`,
    /// [`StartedJob::output`] carries its output from the first byte.
    pub async fn start(&self, req: StartRequest) -> Result<StartedJob, ClientError> {
        let mut control = self.open().await?;
        let follow = req.follow;
        let stdin = req.stdin;
        let route = follow.then(|| self.expect_output(control.send()));
        write_frame(control.send(), &ClientMessage::Start(req))
            .await
            .map_err(|e| self.ctx.write_error(e))?;
        if !stdin {
            let _ = control.send().finish();
        }
        let (job, pid) = match self
            .answer(control.reader(), "start", self.request_timeout)
            .await?
        {
            ServerMessage::Started(s) => (s.job, s.pid),
            ServerMessage::Error(e) => return Err(self.ctx.server_error(e, None)),
            other => return Err(self.ctx.unexpected("start", &other)),
        };
        let output = match route {
            Some((_guard, rx)) => Some(self.output(rx, "start").await?),
            None => None,
        };
        let (send, reader) = control.complete();
        let (control, _) = reader.into_parts();
        Ok(StartedJob {
            job,
            pid,
            stdin: stdin.then(|| StdinWriter::new(send, self.ctx.clone())),
            output,
            _control: Some(control),
        })
    }

    /// Starts a job that lives as long as this client (`stop_on_detach`) and follows
    /// its output: what `qexec run` does.
    pub async fn run(&self, mut req: StartRequest) -> Result<StartedJob, ClientError> {
        // spec: QX-STREAM-17
        req.follow = true;
        req.stop_on_detach = true;
        self.start(req).await
    }

    /// Subscribes to a job's output from combined offset `from`: pass the
    /// [`OutputSubscription::position`] of a lost subscription to continue without
    /// losing or repeating a byte.
    pub async fn attach(&self, job: JobId, from: u64) -> Result<OutputSubscription, ClientError> {
        let mut control = self.open().await?;
        let (_guard, rx) = self.expect_output(control.send());
        self.send_request(
            control.send(),
            &ClientMessage::Attach(AttachRequest { job, from }),
        )
        .await?;
        match self
            .answer(control.reader(), "attach", self.request_timeout)
            .await?
        {
            ServerMessage::Attached { job: j } if j == job => {}
            ServerMessage::Error(e) => return Err(self.ctx.server_error(e, Some(job))),
            other => return Err(self.ctx.unexpected("attach", &other)),
        }
        let output = self.output(rx, "attach").await?;
        control.complete();
        Ok(output)
    }

    /// Asks for a job's status.
    pub async fn status(&self, job: JobId) -> Result<JobStatus, ClientError> {
        self.status_like(
            ClientMessage::Status(StatusRequest { job }),
            job,
            "status",
            self.request_timeout,
        )
        .await
    }

    /// Stops a job (SIGTERM, `grace`, SIGKILL) and returns its final status.
    pub async fn stop(
        &self,
        job: JobId,
        grace: Option<Duration>,
    ) -> Result<JobStatus, ClientError> {
        // The server answers when the job has ended: allow its grace period (spec:
        // QX-LIMIT-18 fixes the default one).
        let limit = grace.unwrap_or(qexec_protocol::limits::DEFAULT_GRACE) + self.request_timeout;
        let grace_ms = grace.map(|g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX));
        self.status_like(
            ClientMessage::Stop(StopRequest { job, grace_ms }),
            job,
            "stop",
            limit,
        )
        .await
    }

    /// Sends a signal (1–64) to a job's main process.
    pub async fn signal(&self, job: JobId, signal: i32) -> Result<JobStatus, ClientError> {
        self.status_like(
            ClientMessage::Signal(SignalRequest { job, signal }),
            job,
            "signal",
            self.request_timeout,
        )
        .await
    }

    async fn status_like(
        &self,
        msg: ClientMessage,
        job: JobId,
        request: &'static str,
        limit: Duration,
    ) -> Result<JobStatus, ClientError> {
        let mut control = self.open().await?;
        self.send_request(control.send(), &msg).await?;
        let answer = match self.answer(control.reader(), request, limit).await? {
            ServerMessage::Status(s) => Ok(s),
            ServerMessage::Error(e) => Err(self.ctx.server_error(e, Some(job))),
            other => return Err(self.ctx.unexpected(request, &other)),
        };
        control.complete();
        answer
    }

    /// Asks the server how busy it is: its version, running jobs and limits, our own
    /// running jobs, its CPUs (spec: QX-INFO-1 to QX-INFO-6). Any role may ask
    /// (spec: QX-AUTHZ-6). The answer is a snapshot: a `Start` may still be refused
    /// for capacity.
    ///
    /// A server older than this request abandons it with `Unsupported`
    /// (spec: QX-INFO-8): that is returned as [`ClientError::Server`] with
    /// `code: ErrorCode::Unsupported` (so `err.code() == Some(ErrorCode::Unsupported)`)
    /// and a message saying so. The connection stays usable; treat that server's
    /// capacity as unknown, not the server as failed.
    pub async fn info(&self) -> Result<ServerInfo, ClientError> {
        let mut control = self.open().await?;
        self.send_request(control.send(), &ClientMessage::Info)
            .await
            .map_err(info_unsupported)?;
        let answer = match self
            .answer(control.reader(), "info", self.request_timeout)
            .await
        {
            Ok(ServerMessage::Info(info)) => Ok(info),
            Ok(ServerMessage::Error(e)) => Err(self.ctx.server_error(e, None)),
            Ok(other) => return Err(self.ctx.unexpected("info", &other)),
            Err(e) => return Err(info_unsupported(e)),
        };
        control.complete();
        answer
    }

    /// Lists the jobs visible to us.
    pub async fn list(&self, running_only: bool) -> Result<Vec<JobStatus>, ClientError> {
        let mut control = self.open().await?;
        self.send_request(
            control.send(),
            &ClientMessage::List(ListRequest { running_only }),
        )
        .await?;
        let mut jobs = Vec::new();
        loop {
            match self
                .answer(control.reader(), "list", self.request_timeout)
                .await?
            {
                ServerMessage::ListItem(s) => jobs.push(s),
                ServerMessage::ListEnd => break,
                ServerMessage::Error(e) => {
                    control.complete();
                    return Err(self.ctx.server_error(e, None));
                }
                other => return Err(self.ctx.unexpected("list", &other)),
            }
        }
        control.complete();
        Ok(jobs)
    }

    /// One page of the jobs visible to us that `query` selects, in sequence-number
    /// order, and the cursor of the next page (`None`: no more match). Pass the cursor
    /// back as `query.cursor` for the next page (spec: QX-MSG-CTRL-9, QX-LIST-*). A
    /// server older than this request answers `Unsupported` (spec: QX-VER-6).
    pub async fn list_query(
        &self,
        query: ListQuery,
    ) -> Result<(Vec<ListEntry>, Option<u64>), ClientError> {
        let mut control = self.open().await?;
        self.send_request(control.send(), &ClientMessage::ListQuery(query))
            .await?;
        let mut entries = Vec::new();
        loop {
            match self
                .answer(control.reader(), "list", self.request_timeout)
                .await?
            {
                ServerMessage::ListEntry(e) => entries.push(e),
                ServerMessage::ListPageEnd { next } => {
                    control.complete();
                    return Ok((entries, next));
                }
                ServerMessage::Error(e) => {
                    control.complete();
                    return Err(self.ctx.server_error(e, None));
                }
                other => return Err(self.ctx.unexpected("list", &other)),
            }
        }
    }
}

/// spec: QX-INFO-8 — an older server abandons `Info` with `Unsupported`; say what it
/// means (same variant and code, a message for people).
fn info_unsupported(e: ClientError) -> ClientError {
    match e {
        ClientError::Server {
            code: ErrorCode::Unsupported,
            ..
        } => ClientError::Server {
            code: ErrorCode::Unsupported,
            message: "this qexecd does not support the Info request (it predates it): its \
                      load and limits are unknown; upgrade the server to see them"
                .into(),
        },
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_servers_unsupported_info_keeps_its_code() {
        // spec: QX-INFO-8
        let reset = ClientError::Server {
            code: ErrorCode::Unsupported,
            message: "the server reset the stream".into(),
        };
        let e = info_unsupported(reset);
        assert_eq!(e.code(), Some(ErrorCode::Unsupported));
        assert!(
            e.to_string().contains("does not support the Info request"),
            "{e}"
        );
        assert!(!e.is_connection_lost());
        let other = ClientError::Server {
            code: ErrorCode::ResourceExhausted,
            message: "busy".into(),
        };
        assert_eq!(
            info_unsupported(other).code(),
            Some(ErrorCode::ResourceExhausted)
        );
    }

    #[test]
    fn addresses_split() {
        assert_eq!(split_addr("127.0.0.1:7443"), Some(("127.0.0.1", 7443)));
        assert_eq!(split_addr("[::1]:7443"), Some(("::1", 7443)));
        assert_eq!(split_addr("example.org:1"), Some(("example.org", 1)));
        // Without a port: 7443.
        assert_eq!(split_addr("host"), Some(("host", 7443)));
        assert_eq!(split_addr("10.0.0.5"), Some(("10.0.0.5", 7443)));
        assert_eq!(split_addr("[::1]"), Some(("::1", 7443)));
        assert_eq!(split_addr("::1"), Some(("::1", 7443)));
        assert_eq!(split_addr("fe80::1:7443"), Some(("fe80::1:7443", 7443)));
        assert_eq!(split_addr("[]"), None);
        assert_eq!(split_addr(""), None);
        assert_eq!(split_addr(":7443"), None);
        assert_eq!(split_addr("host:99999"), None);
    }
}
