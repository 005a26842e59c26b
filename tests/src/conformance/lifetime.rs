//! Control-stream lifetime, output-stream credit, the ends of jobs and the kernel's
//! limit on one argument (spec: QX-STREAM-21, QX-STREAM-22, QX-STREAM-23,
//! QX-MSG-CTRL-9, QX-LIMIT-14, QX-LIMIT-15).

use std::time::Duration;

use qexec_protocol::{
    AttachRequest, ClientMessage, ErrorCode, JobId, JobState, ServerMessage, SignalRequest,
    StartRequest, StatusRequest, StopReason, StopRequest, Termination, frame,
};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::frames::with_peer;
use super::wire::{self, Peer, code_name, start_req};
use super::{Check, Config, Outcome, check};

/// Concurrent `Attach` requests of the QX-STREAM-21 check: more than the protocol's
/// default of 256 concurrent control streams (QX-LIMIT-12).
const ATTACHES: usize = 300;

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "QX-STREAM-21",
            "a control stream ends with its answer: 300 concurrent Attach on one connection \
             are all answered, then a Stop on that connection is answered",
            stream_21
        ),
        check!(
            "QX-STREAM-22",
            "after a good request the server sends no STOP_SENDING before the client's FIN; \
             Timeout when the FIN never comes; Cancelled for the stdin of a refused Start",
            stream_22
        ),
        check!(
            "QX-STREAM-23",
            "with one unidirectional stream of credit, a second Attach is answered and its \
             output stream comes once the first one is cancelled",
            stream_23
        ),
        check!(
            "QX-MSG-CTRL-9",
            "a job killed by a client's Signal ends Exited(Signaled); Signal to an ended job \
             answers its status unchanged",
            msg_ctrl_9
        ),
        check!(
            "QX-LIMIT-15",
            "an argv entry or env name=value of 131 071 bytes runs; of 131 072 bytes the \
             start fails with SpawnFailed, spawn Other",
            limit_15
        ),
        check!(
            "QX-LIMIT-14",
            "the default grace period is 5 s for Stop without grace_ms, timeouts and \
             stop_on_detach",
            limit_14
        ),
    ]
}

/// Sends an `Attach` on its own control stream, finishes it, reads the answer.
async fn attach_one(
    conn: quinn::Connection,
    job: JobId,
    wait: Duration,
) -> anyhow::Result<Vec<ServerMessage>> {
    let msg = ClientMessage::Attach(AttachRequest { job, from: 0 });
    let (mut send, mut recv) = tokio::time::timeout(wait, conn.open_bi())
        .await
        .map_err(|_| anyhow::anyhow!("no credit for a new control stream"))??;
    send.write_all(&frame::encode(&msg)?).await?;
    send.finish()?;
    wire::read_answer(&mut recv, wait).await.checked(&msg)
}

async fn stream_21(config: &Config) -> Outcome {
    // spec: QX-STREAM-21, QX-LIMIT-12 — live subscriptions hold no control-stream credit.
    with_peer(config, |peer| async move {
        let (started, _) = peer.start(start_req(&[b"sleep", b"60"], false)).await?;
        let job = started.job;
        // The output streams: accepted and kept (unread) so the client keeps granting
        // credit for new ones as QUIC counts accepted streams.
        let conn = peer.conn.clone();
        let outputs = tokio::spawn(async move {
            let mut streams = Vec::new();
            while streams.len() < ATTACHES {
                match conn.accept_uni().await {
                    Ok(s) => streams.push(s),
                    Err(_) => break,
                }
            }
            streams
        });
        let mut attaches = JoinSet::new();
        for _ in 0..ATTACHES {
            attaches.spawn(attach_one(peer.conn.clone(), job, peer.wait * 2));
        }
        let mut answered = 0;
        let mut failures = Vec::new();
        while let Some(joined) = attaches.join_next().await {
            match joined? {
                Ok(frames) if matches!(frames.as_slice(), [ServerMessage::Attached { .. }]) => {
                    answered += 1;
                }
                Ok(frames) => failures.push(format!("{frames:?}")),
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        let stop = ClientMessage::Stop(StopRequest {
            job,
            grace_ms: Some(100),
        });
        let stopped = peer.request(&stop).await?;
        let stopped = stopped.checked(&stop);
        let streams = tokio::time::timeout(peer.wait, outputs).await;
        let opened = match &streams {
            Ok(Ok(s)) => s.len(),
            _ => 0,
        };
        Ok(match stopped {
            Ok(frames)
                if answered == ATTACHES && matches!(frames.as_slice(), [ServerMessage::Status(_)]) =>
            {
                Outcome::pass(format!(
                    "{answered} Attached, {opened} output streams, then Stop answered Status"
                ))
            }
            Ok(frames) => Outcome::fail(format!(
                "{answered} of {ATTACHES} Attach answered (first failures: {:?}); Stop answered {frames:?}",
                failures.iter().take(3).collect::<Vec<_>>()
            )),
            Err(e) => Outcome::fail(format!(
                "{answered} of {ATTACHES} Attach answered (first failures: {:?}); the Stop after \
                 them: {e:#}",
                failures.iter().take(3).collect::<Vec<_>>()
            )),
        })
    })
    .await
}

/// The STOP_SENDING code the runner's send side got, if any, within `wait`.
async fn stop_code(send: &mut quinn::SendStream, wait: Duration) -> Option<u64> {
    match tokio::time::timeout(wait, send.stopped()).await {
        Ok(Ok(Some(code))) => Some(code.into_inner()),
        _ => None,
    }
}

async fn stream_22(config: &Config) -> Outcome {
    // spec: QX-STREAM-22
    let deadline = config.request_deadline;
    with_peer(config, |peer| async move {
        // 1. A Status whose FIN comes late (after the answer and another round trip):
        //    no STOP_SENDING before it, the stream then ends cleanly.
        let status = ClientMessage::Status(StatusRequest {
            job: JobId::from_u128(0x22),
        });
        let (mut send, mut recv) = peer.open(&frame::encode(&status)?).await?;
        let answer = wire::read_answer(&mut recv, peer.wait).await;
        if answer.error().map(|e| e.code) != Some(ErrorCode::NotFound) {
            return Ok(Outcome::fail(format!(
                "Status of a missing job: expected Error NotFound, got {}",
                answer.describe()
            )));
        }
        // A full request on another stream: a STOP_SENDING the server sent with (or
        // right after) its answer has arrived by the time this is answered.
        peer.list().await?;
        if let Err(e) = send.finish() {
            return Ok(Outcome::fail(format!(
                "the server stopped the stream before the client's FIN: {e}"
            )));
        }
        match tokio::time::timeout(peer.wait, send.stopped()).await {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(code))) => {
                return Ok(Outcome::fail(format!(
                    "STOP_SENDING {} on a control stream whose request was good and answered",
                    code_name(code.into_inner())
                )));
            }
            other => {
                return Ok(Outcome::fail(format!(
                    "the client's FIN after the answer was not acknowledged: {other:?}"
                )));
            }
        }
        // 2. A client that never finishes: STOP_SENDING Timeout after the deadline.
        let (mut open, mut recv) = peer.open(&frame::encode(&status)?).await?;
        let _ = wire::read_answer(&mut recv, peer.wait).await;
        let late = stop_code(&mut open, deadline + peer.wait).await;
        if late != Some(ErrorCode::Timeout.as_u32().into()) {
            return Ok(Outcome::fail(format!(
                "a client that never sent its FIN: expected STOP_SENDING timeout after the \
                 deadline, got {}",
                late.map_or_else(|| "nothing".to_owned(), code_name)
            )));
        }
        // 3. Stdin after a refused Start: STOP_SENDING Cancelled.
        let mut req = start_req(&[b"/nonexistent/qexec-conformance"], false);
        req.stdin = true;
        let start = ClientMessage::Start(req);
        let (mut send, mut recv) = peer.open(&frame::encode(&start)?).await?;
        let answer = wire::read_answer(&mut recv, peer.wait).await;
        if answer.error().map(|e| e.code) != Some(ErrorCode::SpawnFailed) {
            return Ok(Outcome::fail(format!(
                "Start of a missing program: expected Error SpawnFailed, got {}",
                answer.describe()
            )));
        }
        let refused = stop_code(&mut send, peer.wait).await;
        Ok(if refused == Some(ErrorCode::Cancelled.as_u32().into()) {
            Outcome::pass(
                "no STOP_SENDING before a late FIN; STOP_SENDING timeout without a FIN; \
                 STOP_SENDING cancelled for the stdin of a refused Start",
            )
        } else {
            Outcome::fail(format!(
                "stdin of a refused Start: expected STOP_SENDING cancelled, got {}",
                refused.map_or_else(|| "nothing".to_owned(), code_name)
            ))
        })
    })
    .await
}

/// A connection as the main identity that grants the server `uni` unidirectional
/// streams at once.
async fn peer_with_uni_credit(config: &Config, uni: u32) -> anyhow::Result<Peer> {
    let tls = wire::client_tls(config, Some(&config.user), &[qexec_protocol::ALPN])?;
    let bind: std::net::SocketAddr = if config.addr.is_ipv6() {
        "[::1]:0".parse()?
    } else {
        "127.0.0.1:0".parse()?
    };
    let mut endpoint = quinn::Endpoint::client(bind)?;
    let mut cfg = qexec_tls::quic_client_config(tls)?;
    let mut transport = qexec_tls::client_transport();
    transport
        .max_concurrent_bidi_streams(0u32.into())
        .max_concurrent_uni_streams(uni.into());
    cfg.transport_config(std::sync::Arc::new(transport));
    endpoint.set_default_client_config(cfg);
    let connecting = endpoint.connect(config.addr, &config.server_name)?;
    let conn = tokio::time::timeout(config.wait, connecting)
        .await
        .map_err(|_| anyhow::anyhow!("handshake with {} timed out", config.addr))??;
    Ok(Peer {
        conn,
        endpoint,
        wait: config.wait,
    })
}

/// Sends an `Attach`; its control stream id once answered `Attached`.
async fn attached(peer: &Peer, job: JobId) -> anyhow::Result<u64> {
    let msg = ClientMessage::Attach(AttachRequest { job, from: 0 });
    let (mut send, mut recv) = peer.open(&frame::encode(&msg)?).await?;
    let id = u64::from(send.id());
    send.finish()?;
    match wire::read_answer(&mut recv, peer.wait)
        .await
        .checked(&msg)?
        .as_slice()
    {
        [ServerMessage::Attached { .. }] => Ok(id),
        other => anyhow::bail!("Attach answered {other:?}"),
    }
}

/// Accepts the next output stream and reads its `Header`: the request stream it names.
async fn next_header(peer: &Peer) -> anyhow::Result<(u64, quinn::RecvStream)> {
    let mut recv = tokio::time::timeout(peer.wait, peer.conn.accept_uni())
        .await
        .map_err(|_| anyhow::anyhow!("no output stream within {:?}", peer.wait))??;
    let mut decoder = qexec_protocol::Decoder::new();
    loop {
        if let Some(frame) = decoder.next::<qexec_protocol::OutputFrame>()? {
            return match frame {
                qexec_protocol::OutputFrame::Header { request_stream, .. } => {
                    Ok((request_stream, recv))
                }
                other => anyhow::bail!("output stream starts with {other:?}"),
            };
        }
        let chunk = tokio::time::timeout(peer.wait, recv.read_chunk(64 * 1024, true))
            .await
            .map_err(|_| anyhow::anyhow!("no Header within {:?}", peer.wait))??;
        match chunk {
            Some(c) => decoder.push(&c.bytes),
            None => anyhow::bail!("output stream ended before its Header"),
        }
    }
}

async fn stream_23(config: &Config) -> Outcome {
    // spec: QX-STREAM-23
    let peer = match peer_with_uni_credit(config, 1).await {
        Ok(p) => p,
        Err(e) => return Outcome::fail(format!("cannot connect: {e:#}")),
    };
    let run = async {
        let (started, _) = peer.start(start_req(&[b"sleep", b"60"], false)).await?;
        let first = attached(&peer, started.job).await?;
        let (named, mut output) = next_header(&peer).await?;
        if named != first {
            return Ok(Outcome::fail(format!(
                "the output stream names control stream {named}, expected {first}"
            )));
        }
        // No credit left for a second output stream: the Attach is answered anyway.
        let second = attached(&peer, started.job).await?;
        output.stop(ErrorCode::Cancelled.as_u32().into())?;
        drop(output);
        let (named, _second_output) = next_header(&peer).await?;
        peer.stop(started.job).await?;
        Ok::<_, anyhow::Error>(if named == second {
            Outcome::pass(
                "the second Attach was answered without credit; its output stream came \
                 once the first was cancelled",
            )
        } else {
            Outcome::fail(format!(
                "the second output stream names control stream {named}, expected {second}"
            ))
        })
    };
    run.await
        .unwrap_or_else(|e| Outcome::fail(format!("{e:#}")))
}

async fn signal(peer: &Peer, job: JobId, signal: i32) -> anyhow::Result<ServerMessage> {
    let answer = peer
        .ask(&ClientMessage::Signal(SignalRequest { job, signal }))
        .await?;
    match answer.as_slice() {
        [m] => Ok(m.clone()),
        other => anyhow::bail!("Signal answered {other:?}"),
    }
}

async fn msg_ctrl_9(config: &Config) -> Outcome {
    // spec: QX-MSG-CTRL-9
    with_peer(config, |peer| async move {
        let (started, _) = peer.start(start_req(&[b"sleep", b"30"], false)).await?;
        let job = started.job;
        if !matches!(signal(&peer, job, 9).await?, ServerMessage::Status(_)) {
            return Ok(Outcome::fail("Signal 9 to a running job: no Status answer"));
        }
        let ended = peer.wait_ended(job).await?;
        let want = JobState::Exited {
            termination: Termination::Signaled(9),
        };
        if ended.state != want {
            return Ok(Outcome::fail(format!(
                "a job killed by Signal 9: expected {want:?}, got {:?}",
                ended.state
            )));
        }
        Ok(match signal(&peer, job, 15).await? {
            ServerMessage::Status(s) if s == ended => Outcome::pass(
                "Signal 9 → Exited(Signaled(9)); Signal 15 to the ended job → the same status",
            ),
            other => Outcome::fail(format!(
                "Signal to an ended job: expected its final status unchanged, got {other:?}"
            )),
        })
    })
    .await
}

/// A job whose program ignores SIGTERM, so it ends only at the SIGKILL after the grace;
/// it writes `ready` once SIGTERM is ignored, and follows its output.
fn stubborn() -> StartRequest {
    start_req(
        &[b"sh", b"-c", b"trap '' TERM; echo ready; exec sleep 60"],
        true,
    )
}

/// The protocol's default grace period (spec: QX-LIMIT-14).
const GRACE: Duration = qexec_protocol::limits::DEFAULT_GRACE;

/// How long the timeout case's job runs before its timeout; `sh` has set up its trap
/// long before (it says so: `ready` is in its output).
const TIMEOUT: Duration = Duration::from_secs(2);

fn stopped_by(state: &JobState, want: &StopReason) -> bool {
    matches!(state, JobState::Stopped { reason, .. } if std::mem::discriminant(reason) == std::mem::discriminant(want))
}

/// An output stream read frame by frame.
struct Follow {
    recv: quinn::RecvStream,
    decoder: qexec_protocol::Decoder,
    wait: Duration,
}

impl Follow {
    async fn next(peer: &Peer) -> anyhow::Result<Self> {
        let recv = tokio::time::timeout(peer.wait, peer.conn.accept_uni())
            .await
            .map_err(|_| anyhow::anyhow!("no output stream within {:?}", peer.wait))??;
        Ok(Self {
            recv,
            decoder: qexec_protocol::Decoder::new(),
            wait: peer.wait,
        })
    }

    async fn frame(&mut self) -> anyhow::Result<qexec_protocol::OutputFrame> {
        loop {
            if let Some(f) = self.decoder.next::<qexec_protocol::OutputFrame>()? {
                return Ok(f);
            }
            let chunk = tokio::time::timeout(self.wait, self.recv.read_chunk(64 * 1024, true))
                .await
                .map_err(|_| anyhow::anyhow!("output stream silent for {:?}", self.wait))??;
            match chunk {
                Some(c) => self.decoder.push(&c.bytes),
                None => anyhow::bail!("output stream ended before End"),
            }
        }
    }

    /// Reads up to the job's first output: it is ready.
    async fn ready(&mut self) -> anyhow::Result<()> {
        loop {
            match self.frame().await? {
                qexec_protocol::OutputFrame::Data { .. } => return Ok(()),
                qexec_protocol::OutputFrame::End { status } => {
                    anyhow::bail!("the job ended before it was ready: {:?}", status.state)
                }
                qexec_protocol::OutputFrame::Header { .. } => {}
            }
        }
    }

    /// Reads on to `End`: the output and the final status.
    async fn end(&mut self) -> anyhow::Result<(Vec<u8>, qexec_protocol::JobStatus)> {
        let mut out = Vec::new();
        loop {
            match self.frame().await? {
                qexec_protocol::OutputFrame::Data { data, .. } => out.extend(data),
                qexec_protocol::OutputFrame::End { status } => return Ok((out, status)),
                qexec_protocol::OutputFrame::Header { .. } => {}
            }
        }
    }
}

async fn limit_14(config: &Config) -> Outcome {
    // spec: QX-LIMIT-14 — three jobs started one after the other (concurrent starts
    // would disturb the List order other checks look at), then the three stops run
    // side by side, each case on its own connection (each reads its own output stream).
    let mut cfg = config.clone();
    cfg.wait = config.wait + GRACE + TIMEOUT;
    let cfg = &cfg;
    with_peer(cfg, |peer| async move {
        let (timeout_peer, detach_peer) = (Peer::user(cfg).await?, Peer::user(cfg).await?);
        let (stopped, _) = peer.start(stubborn()).await?;
        Follow::next(&peer).await?.ready().await?;
        let mut req = stubborn();
        req.timeout_ms = Some(u64::try_from(TIMEOUT.as_millis())?);
        timeout_peer.start(req).await?;
        let mut timed_out = Follow::next(&timeout_peer).await?;
        let mut req = stubborn();
        req.stop_on_detach = true;
        req.stdin = true;
        let start = ClientMessage::Start(req);
        let (mut detach_send, mut recv) = detach_peer.open(&frame::encode(&start)?).await?;
        wire::read_answer(&mut recv, detach_peer.wait)
            .await
            .checked(&start)?;
        let mut detached = Follow::next(&detach_peer).await?;
        detached.ready().await?;

        let stop = async {
            let asked = Instant::now();
            let status = peer
                .ask(&ClientMessage::Stop(StopRequest {
                    job: stopped.job,
                    grace_ms: None,
                }))
                .await?;
            let took = asked.elapsed();
            let state = match status.as_slice() {
                [ServerMessage::Status(st)] => st.state.clone(),
                other => anyhow::bail!("Stop answered {other:?}"),
            };
            let by = StopReason::Requested { by: String::new() };
            Ok::<_, anyhow::Error>((stopped_by(&state, &by) && took >= GRACE, took, state))
        };
        let timeout = async {
            let (out, ended) = timed_out.end().await?;
            let took = Duration::from_millis(
                ended
                    .ended_at_ms
                    .unwrap_or(0)
                    .saturating_sub(ended.started_at_ms),
            );
            let ok = stopped_by(&ended.state, &StopReason::Timeout)
                && out.starts_with(b"ready")
                && took >= GRACE + TIMEOUT;
            Ok::<_, anyhow::Error>((ok, took, ended.state))
        };
        let detach = async {
            let reset = Instant::now();
            detach_send.reset(ErrorCode::Cancelled.as_u32().into())?;
            let (_, ended) = detached.end().await?;
            let took = reset.elapsed();
            Ok::<_, anyhow::Error>((
                stopped_by(&ended.state, &StopReason::Detached) && took >= GRACE,
                took,
                ended.state,
            ))
        };
        let (stop, timeout, detach) = tokio::join!(stop, timeout, detach);
        let (stop, timeout, detach) = (stop?, timeout?, detach?);
        let seen = format!(
            "Stop without grace: {:?} after {:.1?}; {TIMEOUT:?} timeout: {:?} {:.1?} after \
             the start; detach: {:?} {:.1?} after the reset",
            stop.2, stop.1, timeout.2, timeout.1, detach.2, detach.1
        );
        Ok(if stop.0 && timeout.0 && detach.0 {
            Outcome::pass(seen)
        } else {
            Outcome::fail(format!(
                "expected each stopped only at SIGKILL, at least {GRACE:?} after SIGTERM: {seen}"
            ))
        })
    })
    .await
}

/// Linux's longest argument or environment string, its NUL included (spec: QX-LIMIT-15).
const MAX_ARG_STRLEN: usize = 128 * 1024;

async fn limit_15(config: &Config) -> Outcome {
    // spec: QX-LIMIT-15
    with_peer(config, |peer| async move {
        let arg = |len: usize| start_req(&[b"true", &vec![b'a'; len]], false);
        let env = |len: usize| {
            let mut req = start_req(&[b"true"], false);
            // `X=` and the value: `len` bytes in all.
            req.env.push((b"X".to_vec(), vec![b'v'; len - 2]));
            req
        };
        let longest = MAX_ARG_STRLEN - 1;
        for (what, ok, over) in [
            ("argv entry", arg(longest), arg(longest + 1)),
            ("env name=value", env(longest), env(longest + 1)),
        ] {
            let answer = peer.request(&ClientMessage::Start(ok)).await?;
            if !matches!(&answer, wire::Answer::Frames { msgs, .. } if matches!(msgs.as_slice(), [ServerMessage::Started(_)]))
            {
                return Ok(Outcome::fail(format!(
                    "an {what} of {longest} bytes: expected Started, got {}",
                    answer.describe()
                )));
            }
            let answer = peer.request(&ClientMessage::Start(over)).await?;
            let refused = answer.error().is_some_and(|e| {
                e.code == ErrorCode::SpawnFailed && e.spawn == Some(qexec_protocol::SpawnFailure::Other)
            });
            if !refused {
                return Ok(Outcome::fail(format!(
                    "an {what} of {} bytes: expected Error SpawnFailed with spawn Other, got {}",
                    longest + 1,
                    answer.describe()
                )));
            }
        }
        Ok(Outcome::pass(format!(
            "argv entry and env name=value of {longest} bytes started; of {MAX_ARG_STRLEN} \
             bytes SpawnFailed (Other)"
        )))
    })
    .await
}
