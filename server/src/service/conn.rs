//! One task per connection, one per control stream; the control-stream reader and
//! writer; the audit log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use qexec_protocol::{
    ClientMessage, ControlStreamState, Decoder, ErrorCode, ErrorResponse, JobId, ServerMessage,
    SpawnFailure, frame,
};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use rustls_pki_types::CertificateDer;
use tokio::task::JoinSet;

use super::authz::Op;
use super::request::{self, Refusal, StreamFault};
use super::{CONTROL_PRIORITY, Shared, handlers};
use qexec_tls::Identity;

/// Bytes read from a stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// Everything a stream handler knows about its connection.
#[derive(Debug)]
pub(crate) struct ConnCtx {
    pub(crate) conn: Connection,
    pub(crate) identity: Identity,
    pub(crate) peer: SocketAddr,
    pub(crate) shared: Arc<Shared>,
    /// Permits for concurrent output streams of this connection.
    pub(crate) subscriptions: Arc<tokio::sync::Semaphore>,
}

impl ConnCtx {
    /// One audit line per request: who, what, which job, result.
    pub(crate) fn audit(&self, op: Op, job: Option<JobId>, result: Result<(), ErrorCode>) {
        // spec: QX-AUTHZ-4
        let job = job.map_or_else(|| "-".to_owned(), |j| j.to_string());
        let result = match result {
            Ok(()) => "ok",
            Err(code) => code.name(),
        };
        tracing::info!(
            target: "qexec::audit",
            peer = %self.peer,
            user = %self.identity.name,
            role = %self.identity.role,
            op = %op.name(),
            job = %job,
            result = %result,
            "request"
        );
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

/// Serves one connection from handshake to close.
pub(crate) async fn serve(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let peer = incoming.remote_address();
    let connecting = match incoming.accept() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(%peer, reason = %e, "connection refused before the handshake");
            return;
        }
    };
    let conn = match connecting.await {
        Ok(c) => c,
        Err(e) => {
            // spec: QX-ID-3. rustls' reason is in the transport error (unknown CA,
            // expired, wrong EKU, no certificate, no ALPN match, bad identity …).
            tracing::warn!(%peer, reason = %e, "handshake refused");
            return;
        }
    };
    let identity = match identity_of(&conn) {
        Ok(id) => id,
        Err(reason) => {
            tracing::warn!(%peer, %reason, "connection refused: no usable client identity");
            conn.close(
                ErrorCode::Unauthenticated.as_u32().into(),
                b"no usable client identity",
            );
            return;
        }
    };
    tracing::info!(%peer, user = %identity.name, role = %identity.role, "connection established");
    let ctx = Arc::new(ConnCtx {
        conn: conn.clone(),
        identity,
        peer,
        subscriptions: Arc::new(tokio::sync::Semaphore::new(
            shared
                .max_subscriptions_per_connection
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        )),
        shared,
    });
    let mut streams = JoinSet::new();
    let reason = loop {
        tokio::select! {
            s = conn.accept_bi() => match s {
                Ok((send, recv)) => {
                    streams.spawn(control_stream(ctx.clone(), send, recv));
                }
                Err(e) => break e,
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    };
    tracing::info!(%peer, user = %ctx.identity.name, %reason, "connection closed");
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

    /// Reads more bytes into the decoder: `Ok(false)` at FIN.
    async fn fill(&mut self) -> Result<bool, ReadEnd> {
        match self.recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => {
                self.decoder.push(&chunk.bytes);
                Ok(true)
            }
            Ok(None) => Ok(false),
            Err(quinn::ReadError::Reset(_)) => Err(ReadEnd::Reset),
            Err(_) => Err(ReadEnd::Lost),
        }
    }

    /// Reads the request (the first frame).
    async fn read_request(&mut self) -> Result<ClientMessage, ReadEnd> {
        match self.next_frame().await? {
            Some(m) => Ok(m),
            // next_frame reports a FIN before the request as a fault.
            None => Err(ReadEnd::Fault(StreamFault {
                code: ErrorCode::ProtocolViolation,
                reason: "stream finished before a request".to_owned(),
            })),
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
            if !self.fill().await? {
                self.decoder
                    .finish()
                    .map_err(|e| ReadEnd::Fault(request::frame_fault(&e)))?;
                self.state
                    .on_finish()
                    .map_err(|v| ReadEnd::Fault(request::state_fault(&v)))?;
                return Ok(None);
            }
        }
    }

    /// Whether standard input frames may follow (a `Start` with stdin was received).
    fn in_stdin(&self) -> bool {
        matches!(self.state, ControlStreamState::Stdin)
    }

    /// Bytes received after the request that are not a whole frame yet.
    fn has_extra_bytes(&self) -> bool {
        self.decoder.buffered() > 0
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
        r = tokio::time::timeout(timeout, ctl.read_request()) => r,
        _ = ctx.conn.closed() => return,
    };
    let msg = match read {
        Err(_) => {
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
        reason = %fault.reason,
        "control stream closed: bad frame"
    );
}
