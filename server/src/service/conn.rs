//! One task per connection, one per control stream; the control-stream reader and
//! writer; the audit log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use qexec_protocol::{
    ClientMessage, ControlStreamState, Decoder, ErrorCode, ErrorResponse, JobId, ServerMessage,
    SpawnFailure, frame,
};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use rustls_pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::authz::Op;
use super::caps::{Cap, IdentitySlots, Slot};
use super::escape::{Esc, StartAudit};
use super::request::{self, Refusal, StreamFault};
use super::{CONTROL_PRIORITY, Shared, handlers};
use qexec_tls::Identity;

/// Bytes read from a stream at once.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// Bytes of the request budget a control stream reserves for its first read: enough
/// for any request but a `Start` whole, and for its length prefix (spec: QX-SRV-11).
pub(crate) const FIRST_READ: usize = 64;

/// Everything a stream handler knows about its connection.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub(crate) conn: Connection,
    pub(crate) identity: Identity,
    pub(crate) peer: SocketAddr,
    pub(crate) shared: Arc<Shared>,
    /// Permits for concurrent output streams of this connection.
    pub(crate) subscriptions: Arc<Semaphore>,
    /// Bytes of partially received request frames this connection may still hold
    /// (spec: QX-SRV-11).
    pub(crate) request_buffer: Arc<Semaphore>,
    /// The identity's caps, shared with its other connections (spec: QX-SRV-9).
    pub(crate) slots: Arc<IdentitySlots>,
}

/// A subscription's slots: one of its connection's and one of its identity's.
#[derive(Debug)]
pub(crate) struct SubscriptionPermit {
    _connection: tokio::sync::OwnedSemaphorePermit,
    _identity: Slot,
}

impl ConnCtx {
    /// One audit line per request: who, what, which job, result; for a `Start`, its
    /// argv and cwd (escaped and truncated, spec: QX-AUTHZ-4, QX-SRV-13).
    pub(crate) fn audit(
        &self,
        op: Op,
        job: Option<JobId>,
        result: Result<(), ErrorCode>,
        start: Option<&StartAudit>,
    ) {
        // spec: QX-AUTHZ-4
        let job = job.map_or_else(|| "-".to_owned(), |j| j.to_string());
        let result = match result {
            Ok(()) => "ok",
            Err(code) => code.name(),
        };
        match start {
            None => tracing::info!(
                target: "qexec::audit",
                peer = %self.peer,
                user = %self.identity.name,
                role = %self.identity.role,
                op = %op.name(),
                job = %job,
                result = %result,
                "request"
            ),
            Some(r) => tracing::info!(
                target: "qexec::audit",
                peer = %self.peer,
                user = %self.identity.name,
                role = %self.identity.role,
                op = %op.name(),
                job = %job,
                result = %result,
                argv = %r.argv,
                cwd = %r.cwd,
                "request"
            ),
        }
    }

    /// A permit for one more subscription of this connection and identity, or the
    /// refusal (spec: QX-SRV-1, QX-SRV-9).
    pub(crate) fn subscription_permit(&self) -> Result<SubscriptionPermit, Refusal> {
        let exhausted = |message: String| Refusal {
            code: ErrorCode::ResourceExhausted,
            message,
        };
        let connection = self
            .subscriptions
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                exhausted(format!(
                    "this connection already follows {} jobs; cancel a subscription first",
                    self.shared.max_subscriptions_per_connection
                ))
            })?;
        let identity = self.slots.try_take(Cap::Subscriptions).ok_or_else(|| {
            exhausted(format!(
                "user {} already follows {} jobs over all its connections; cancel a \
                 subscription first",
                self.identity.name,
                self.slots.max(Cap::Subscriptions)
            ))
        })?;
        Ok(SubscriptionPermit {
            _connection: connection,
            _identity: identity,
        })
    }

    /// A slot for one more request in flight of this identity, or the refusal (spec:
    /// QX-SRV-9).
    pub(crate) fn request_slot(&self) -> Result<Slot, Refusal> {
        self.slots.try_take(Cap::Requests).ok_or_else(|| Refusal {
            code: ErrorCode::ResourceExhausted,
            message: format!(
                "user {} already has {} requests in flight (open follows and runs \
                 count); end some first",
                self.identity.name,
                self.slots.max(Cap::Requests)
            ),
        })
    }
}

/// Reads the identity from the verified certificate chain of a connection.
fn identity_of(conn: &Connection) -> Result<Identity, String> {
    let any = conn
        .peer_identity()
        .ok_or_else(|| "no client certificate".to_owned())?;
    let chain = any
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| "peer identity is not a certificate chain".to_owned())?;
    let leaf = chain
        .first()
        .ok_or_else(|| "empty client certificate chain".to_owned())?;
    Identity::from_cert_der(leaf).map_err(|e| e.to_string())
}

/// Serves one connection from handshake to close. `handshake` is the connection's
/// handshake slot, given back once the handshake ended (spec: QX-SRV-10).
pub(crate) async fn serve(shared: Arc<Shared>, incoming: quinn::Incoming, handshake: Slot) {
    let peer = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            let reason = e.to_string();
            tracing::warn!(%peer, reason = %Esc(&reason), "connection refused before the handshake");
            return;
        }
    };
    // spec: QX-SRV-10. Dropping an unfinished `Connecting` closes the connection.
    let conn = match tokio::time::timeout(shared.handshake_timeout, connecting).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            // spec: QX-ID-3. rustls' reason is in the transport error (unknown CA,
            // expired, wrong EKU, no certificate, no ALPN match, bad identity …); a
            // peer's close carries its own reason text: logged escaped (QX-SRV-13).
            let reason = e.to_string();
            // An application close before the handshake ends reaches us as a
            // transport close with code APPLICATION_ERROR (RFC 9000 §10.2.3).
            let client_closed = match &e {
                quinn::ConnectionError::ApplicationClosed(_) => true,
                quinn::ConnectionError::ConnectionClosed(c) => {
                    c.error_code == quinn::TransportErrorCode::APPLICATION_ERROR
                }
                _ => false,
            };
            if client_closed {
                // The client gave up on its own (a closed program, a connect raced
                // against another): nothing was refused.
                tracing::debug!(%peer, reason = %Esc(&reason), "client closed during the handshake");
            } else {
                tracing::warn!(%peer, reason = %Esc(&reason), "handshake refused");
            }
            return;
        }
        Err(_) => {
            if let Some(left_out) = shared.abandoned.hit(Instant::now()) {
                tracing::warn!(
                    %peer,
                    timeout_ms = shared.handshake_timeout.as_millis() as u64,
                    left_out,
                    "handshake abandoned: not complete in time"
                );
            }
            return;
        }
    };
    drop(handshake);
    let identity = match identity_of(&conn) {
        Ok(id) => id,
        Err(reason) => {
            tracing::warn!(%peer, reason = %Esc(&reason), "connection refused: no usable client identity");
            conn.close(
                ErrorCode::Unauthenticated.as_u32().into(),
                b"no usable client identity",
            );
            return;
        }
    };
    // spec: QX-SRV-1, QX-SRV-9. Slots are taken only now, with a verified identity.
    let slots = shared.identities.of(&identity.name);
    let Some(_global) = shared.authenticated.try_take() else {
        let reason = format!(
            "the server has its maximum of {} connections; try again later",
            shared.authenticated.max()
        );
        refuse_connection(&conn, peer, &identity, &reason);
        return;
    };
    let Some(_own) = slots.try_take(Cap::Connections) else {
        let reason = format!(
            "user {} already has {} connections open; close one first",
            identity.name,
            slots.max(Cap::Connections)
        );
        refuse_connection(&conn, peer, &identity, &reason);
        return;
    };
    tracing::info!(%peer, user = %identity.name, role = %identity.role, "connection established");
    let ctx = Arc::new(ConnCtx {
        conn: conn.clone(),
        identity,
        peer,
        subscriptions: Arc::new(Semaphore::new(
            shared
                .max_subscriptions_per_connection
                .min(Semaphore::MAX_PERMITS),
        )),
        request_buffer: Arc::new(Semaphore::new(
            shared
                .request_buffer_per_connection
                .min(Semaphore::MAX_PERMITS),
        )),
        slots,
        shared,
    });
    let idle = ctx.shared.idle_connection_timeout;
    let mut streams = JoinSet::new();
    let reason = loop {
        // spec: QX-SRV-12: only while no stream is open.
        let idle_for = idle.filter(|_| streams.is_empty());
        let idle_wait = async move {
            match idle_for {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            s = conn.accept_bi() => match s {
                Ok((send, recv)) => {
                    streams.spawn(control_stream(ctx.clone(), send, recv));
                }
                Err(e) => break e.to_string(),
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
            () = idle_wait => {
                let secs = idle.map_or(0, |t| t.as_secs());
                conn.close(
                    ErrorCode::NoError.as_u32().into(),
                    format!("idle: no request for {secs} s").as_bytes(),
                );
                break format!("idle for {secs} s: closed by the server");
            }
        }
    };
    tracing::info!(%peer, user = %ctx.identity.name, reason = %Esc(&reason), "connection closed");
    // Every stream task watches the connection and ends on its own; a detached job
    // is stopped before its task ends, which can take the job's grace period.
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while streams.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(%peer, "stream tasks did not end within 60 s of the close; aborting");
        streams.shutdown().await;
    }
}

/// Closes a just-authenticated connection that is over a connection cap with
/// application code `ResourceExhausted` and `reason` (spec: QX-SRV-1, QX-SRV-9).
fn refuse_connection(conn: &Connection, peer: SocketAddr, identity: &Identity, reason: &str) {
    tracing::warn!(%peer, user = %identity.name, %reason, "connection refused: over a connection cap");
    conn.close(
        ErrorCode::ResourceExhausted.as_u32().into(),
        reason.as_bytes(),
    );
}

/// Why reading a control stream stopped.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    /// The frame was bad: the stream was reset/stopped with this fault.
    Fault(StreamFault),
    /// The client reset its send side.
    Reset,
    /// The connection is gone (or the stream was stopped locally).
    Lost,
}

/// How the client's side of a control stream ended after the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientEnd {
    /// With its FIN (spec: QX-STREAM-8).
    Finished,
    /// The client reset it.
    Reset,
    /// The connection went away.
    Lost,
    /// A bad frame; the stream was stopped with its code.
    Fault,
    /// No FIN within the deadline; the stream was stopped with `Timeout`.
    Late,
}

/// A control stream: one request, one answer, then maybe stdin.
#[derive(Debug)]
pub(crate) struct Control {
    pub(crate) send: SendStream,
    recv: RecvStream,
    decoder: Decoder,
    state: ControlStreamState,
    /// QUIC stream id, echoed in output-stream headers.
    pub(crate) id: u64,
}

impl Control {
    fn new(send: SendStream, recv: RecvStream) -> Self {
        let id = u64::from(send.id());
        let _ = send.set_priority(CONTROL_PRIORITY);
        Self {
            send,
            recv,
            decoder: Decoder::new(),
            state: ControlStreamState::new(),
            id,
        }
    }

    /// Reads at most `max` more bytes into the decoder: `Ok(false)` at FIN.
    async fn fill(&mut self, max: usize) -> Result<bool, ReadEnd> {
        match self.recv.read_chunk(max, true).await {
            Ok(Some(chunk)) => {
                self.decoder.push(&chunk.bytes);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(quinn::ReadError::Reset(_)) => Err(ReadEnd::Reset),
            Err(_) => Err(ReadEnd::Lost),
        }
    }

    /// At FIN: a fault if a partial frame is buffered or the state does not allow
    /// the end here.
    fn at_fin(&mut self) -> Result<(), ReadEnd> {
        self.decoder
            .finish()
            .map_err(|e| ReadEnd::Fault(request::frame_fault(&e)))?;
        self.state
            .on_finish()
            .map_err(|v| ReadEnd::Fault(request::state_fault(&v)))
    }

    /// Reads the request (the first frame) with the bytes it buffers reserved from
    /// the connection's request budget (spec: QX-SRV-11): [`FIRST_READ`] bytes first;
    /// then, once the length prefix tells a larger frame, the whole frame plus one
    /// read's worth (so bytes after it are still seen), in one step. A read never
    /// takes more than the reservation covers; the stream waits (within the request
    /// timeout) while the budget is spent, leaving the bytes in QUIC's
    /// flow-controlled receive buffer. A stream holds either its first small
    /// reservation or a whole frame's, so waiting streams never starve each other:
    /// the budget is at least one whole reservation more than all first ones
    /// (checked at bind).
    async fn read_request(&mut self, budget: &Arc<Semaphore>) -> Result<ClientMessage, ReadEnd> {
        let mut held = budget
            .clone()
            .acquire_many_owned(FIRST_READ as u32)
            .await
            .map_err(|_| ReadEnd::Lost)?;
        loop {
            if let Some(m) = request::next_client_frame(&mut self.decoder, &mut self.state)
                .map_err(ReadEnd::Fault)?
            {
                return Ok(m);
            }
            let buffered = self.decoder.buffered();
            let need = buffered + self.decoder.wanted();
            if need > held.num_permits() {
                // The decoder refused any prefix above MAX_FRAME_LEN already.
                let want = need + READ_CHUNK;
                let more = u32::try_from(want - held.num_permits()).unwrap_or(u32::MAX);
                let extra = budget
                    .clone()
                    .acquire_many_owned(more)
                    .await
                    .map_err(|_| ReadEnd::Lost)?;
                held.merge(extra);
            }
            let max = (held.num_permits() - buffered).clamp(1, READ_CHUNK);
            if !self.fill(max).await? {
                self.at_fin()?;
                // at_fin refuses a FIN before the request.
                return Err(ReadEnd::Fault(StreamFault {
                    code: ErrorCode::ProtocolViolation,
                    reason: "stream finished before a request".to_owned(),
                }));
            }
        }
    }

    /// Reads the next frame, checked against the stream's state: `Ok(None)` at a FIN
    /// the state allows (spec: QX-STREAM-5 to QX-STREAM-8).
    pub(crate) async fn next_frame(&mut self) -> Result<Option<ClientMessage>, ReadEnd> {
        loop {
            if let Some(m) = request::next_client_frame(&mut self.decoder, &mut self.state)
                .map_err(ReadEnd::Fault)?
            {
                return Ok(Some(m));
            }
            if !self.fill(READ_CHUNK).await? {
                self.at_fin()?;
                return Ok(None);
            }
        }
    }

    /// Whether standard input frames may follow (a `Start` with stdin was received).
    pub(crate) fn in_stdin(&self) -> bool {
        matches!(
            self.state,
            ControlStreamState::Stdin | ControlStreamState::Terminal
        )
    }

    /// Bytes received after the request that are not a whole frame yet.
    fn has_extra_bytes(&self) -> bool {
        self.decoder.buffered() > 0
    }

    /// After the answer: reads the client's side of the stream to its FIN, at most
    /// `deadline` long (spec: QX-STREAM-21, QX-STREAM-22). The server thus never sends
    /// STOP_SENDING after a good request: the stream ends with both FINs, and its
    /// bidirectional credit goes back to the client. A frame is a fault (stopped with
    /// its code); a client that has not finished within `deadline` is stopped with
    /// `Timeout`. Only for requests without stdin: a `Start{stdin}` reads its stdin.
    pub(crate) async fn read_to_fin(&mut self, deadline: Duration) -> ClientEnd {
        let read = tokio::time::timeout(deadline, self.next_frame()).await;
        match read {
            Ok(Ok(None)) => ClientEnd::Finished,
            // The stream state allows no frame after a request without stdin; kept
            // total without a panic path.
            Ok(Ok(Some(_))) => {
                self.stop_receiving(&StreamFault {
                    code: ErrorCode::ProtocolViolation,
                    reason: "frame after the request".to_owned(),
                });
                ClientEnd::Fault
            }
            Ok(Err(ReadEnd::Fault(f))) => {
                self.stop_receiving(&f);
                ClientEnd::Fault
            }
            Ok(Err(ReadEnd::Reset)) => ClientEnd::Reset,
            Ok(Err(ReadEnd::Lost)) => ClientEnd::Lost,
            Err(_) => {
                // spec: QX-STREAM-22
                self.stop_receiving(&StreamFault {
                    code: ErrorCode::Timeout,
                    reason: format!(
                        "the client did not finish its side within {} s of the answer",
                        deadline.as_secs()
                    ),
                });
                ClientEnd::Late
            }
        }
    }

    /// Resets the send side and stops the receive side with the fault's code
    /// (spec: QX-FRAME-5: only this stream).
    pub(crate) fn fault(&mut self, fault: &StreamFault) {
        // spec: QX-SRV-4
        let code = VarInt::from_u32(fault.code.as_u32());
        let _ = self.send.reset(code);
        let _ = self.recv.stop(code);
    }

    /// Stops the receive side with the fault's code (the answer was already sent).
    pub(crate) fn stop_receiving(&mut self, fault: &StreamFault) {
        let _ = self.recv.stop(VarInt::from_u32(fault.code.as_u32()));
    }

    /// Sends `msgs` and finishes the send side.
    pub(crate) async fn answer(&mut self, msgs: &[ServerMessage]) {
        if self.answer_part(msgs).await {
            let _ = self.send.finish();
        }
    }

    /// Sends part of an answer without finishing the stream (a `List` answer, one
    /// page at a time): `false` when the stream is gone (or was reset here), so the
    /// caller stops.
    pub(crate) async fn answer_part(&mut self, msgs: &[ServerMessage]) -> bool {
        let mut buf = Vec::new();
        for m in msgs {
            if let Err(e) = frame::encode_into(m, &mut buf) {
                tracing::error!(error = %e, "cannot encode an answer");
                let _ = self
                    .send
                    .reset(VarInt::from_u32(ErrorCode::Internal.as_u32()));
                return false;
            }
            if buf.len() >= READ_CHUNK {
                if self.send.write_all(&buf).await.is_err() {
                    return false;
                }
                buf.clear();
            }
        }
        self.send.write_all(&buf).await.is_ok()
    }

    /// Answers with an `Error` and finishes.
    pub(crate) async fn refuse(&mut self, refusal: Refusal, spawn: Option<SpawnFailure>) {
        self.answer(&[ServerMessage::Error(ErrorResponse {
            code: refusal.code,
            message: refusal.message,
            spawn,
        })])
        .await;
    }
}

/// Handles one control stream: request (within the request timeout), validation,
/// dispatch to the handler of its kind.
async fn control_stream(ctx: Arc<ConnCtx>, send: SendStream, recv: RecvStream) {
    let mut ctl = Control::new(send, recv);
    let timeout = ctx.shared.request_timeout;
    let read = tokio::select! {
        r = tokio::time::timeout(timeout, ctl.read_request(&ctx.request_buffer)) => r,
        _ = ctx.conn.closed() => return,
    };
    let msg = match read {
        Err(_) => {
            // (also when the request budget stayed spent: spec: QX-SRV-11)
            // spec: QX-SRV-3
            let fault = StreamFault {
                code: ErrorCode::Timeout,
                reason: format!("no complete request within {} s", timeout.as_secs()),
            };
            log_fault(&ctx, &ctl, &fault);
            ctl.fault(&fault);
            return;
        }
        Ok(Err(ReadEnd::Fault(fault))) => {
            log_fault(&ctx, &ctl, &fault);
            ctl.fault(&fault);
            return;
        }
        Ok(Err(ReadEnd::Reset | ReadEnd::Lost)) => return,
        Ok(Ok(m)) => m,
    };
    // spec: QX-STREAM-5 (ControlStreamState refused stdin frames already)
    let op = match request::op_of(&msg) {
        Ok(op) => op,
        Err(fault) => {
            log_fault(&ctx, &ctl, &fault);
            ctl.fault(&fault);
            return;
        }
    };
    if !ctl.in_stdin() && ctl.has_extra_bytes() {
        let fault = StreamFault {
            code: ErrorCode::ProtocolViolation,
            reason: "bytes after the request on a control stream".to_owned(),
        };
        log_fault(&ctx, &ctl, &fault);
        ctl.fault(&fault);
        return;
    }
    handlers::dispatch(&ctx, ctl, op, msg).await;
}

fn log_fault(ctx: &ConnCtx, ctl: &Control, fault: &StreamFault) {
    tracing::info!(
        peer = %ctx.peer,
        user = %ctx.identity.name,
        stream = ctl.id,
        code = fault.code.name(),
        reason = %Esc(&fault.reason),
        "control stream closed: bad frame"
    );
}
