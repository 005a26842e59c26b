//! Output-stream checks (spec: QX-STREAM-11 to QX-STREAM-19): followed starts,
//! `Attach`, offsets, cancellation and detach. The check table is in `streams`.

use qexec_protocol::{
    AttachRequest, ClientMessage, ErrorCode, JobId, JobState, ServerMessage, StopReason,
    Termination, frame,
};

use super::frames::with_peer;
use super::wire::{self, Peer, start_req};
use super::{Config, Outcome};

/// Starts `argv` with `follow` and reads its output stream.
async fn run_followed(peer: &Peer, argv: &[&[u8]]) -> anyhow::Result<(JobId, u64, wire::Output)> {
    let (started, stream) = peer.start(start_req(argv, true)).await?;
    let out = peer.next_output().await?;
    Ok((started.job, stream, out))
}

pub(super) async fn stream_11(config: &Config) -> Outcome {
    // spec: QX-STREAM-11
    with_peer(config, |peer| async move {
        let (job, stream, out) = run_followed(&peer, &[b"echo", b"hello"]).await?;
        Ok(
            if out.request_stream == stream && out.job == job && out.from == 0 {
                Outcome::pass(format!(
                    "Header {{ request_stream: {stream}, job, from: 0 }}"
                ))
            } else {
                Outcome::fail(format!(
                    "expected Header {{ request_stream: {stream}, job: {job}, from: 0 }}, got \
                     {{ request_stream: {}, job: {}, from: {} }}",
                    out.request_stream, out.job, out.from
                ))
            },
        )
    })
    .await
}

pub(super) async fn stream_12(config: &Config) -> Outcome {
    // spec: QX-STREAM-12 — the order of bytes across stdout and stderr is the order the
    // server captured them (not observable); within each stream it is the write order,
    // and every byte is tagged with its stream.
    with_peer(config, |peer| async move {
        let script = b"echo out1; echo err1 >&2; echo out2; echo err2 >&2";
        let (_, _, out) = run_followed(&peer, &[b"sh", b"-c", script]).await?;
        Ok(
            if out.stdout == b"out1\nout2\n"
                && out.stderr == b"err1\nerr2\n"
                && out.data.len() == out.stdout.len() + out.stderr.len()
            {
                Outcome::pass(format!(
                    "{} Data frames with contiguous offsets; Stdout frames carry \"out1 out2\", \
                     Stderr frames \"err1 err2\"",
                    out.chunks.len()
                ))
            } else {
                Outcome::fail(format!(
                    "expected Stdout frames \"out1\\nout2\\n\" and Stderr frames \"err1\\nerr2\\n\", \
                     got {:?} and {:?}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ))
            },
        )
    })
    .await
}

pub(super) async fn stream_13(config: &Config) -> Outcome {
    // spec: QX-STREAM-13
    with_peer(config, |peer| async move {
        let (job, _, out) = run_followed(&peer, &[b"sh", b"-c", b"echo bye; exit 3"]).await?;
        let s = &out.status;
        let exited = matches!(
            s.state,
            JobState::Exited {
                termination: Termination::Exited(3)
            }
        );
        Ok(
            if s.id == job && exited && s.output_bytes() == out.data.len() as u64 {
                Outcome::pass("End { status: Exited(3), 4 output bytes } then FIN")
            } else {
                Outcome::fail(format!(
                    "expected End with job {job}, Exited(3) and {} output bytes, got {:?} with {} bytes",
                    out.data.len(),
                    s.state,
                    s.output_bytes()
                ))
            },
        )
    })
    .await
}

/// `1\n2\n…n\n`, what `seq 1 n` prints.
pub(super) fn seq_output(n: u32) -> Vec<u8> {
    (1..=n)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect()
}

pub(super) async fn stream_14(config: &Config) -> Outcome {
    // spec: QX-STREAM-14
    with_peer(config, |peer| async move {
        let (job, _, first) = run_followed(&peer, &[b"seq", b"1", b"20000"]).await?;
        let want = seq_output(20000);
        if first.data != want {
            return Ok(Outcome::fail(format!(
                "the followed output of seq 1 20000 differs ({} bytes, expected {})",
                first.data.len(),
                want.len()
            )));
        }
        let from = 1000u64;
        let msg = ClientMessage::Attach(AttachRequest { job, from });
        match peer.ask(&msg).await?.as_slice() {
            [ServerMessage::Attached { job: j }] if *j == job => {}
            other => return Ok(Outcome::fail(format!("Attach answered {other:?}"))),
        }
        let again = peer.next_output().await?;
        let beyond = u64::MAX / 2;
        let msg = ClientMessage::Attach(AttachRequest { job, from: beyond });
        peer.ask(&msg).await?;
        let past = peer.next_output().await?;
        if past.from != beyond || !past.data.is_empty() {
            return Ok(Outcome::fail(format!(
                "Attach from {beyond} on an ended job: expected Header from {beyond} then End, \
                 got from {} and {} bytes",
                past.from,
                past.data.len()
            )));
        }
        Ok(
            if again.from == from && again.data == want[from as usize..] {
                Outcome::pass(format!(
                    "Attach from {from}: Header from {from}, {} bytes equal to the output's tail",
                    again.data.len()
                ))
            } else {
                Outcome::fail(format!(
                    "expected Header from {from} and {} bytes of the tail, got from {} and {} bytes",
                    want.len() - from as usize,
                    again.from,
                    again.data.len()
                ))
            },
        )
    })
    .await
}

pub(super) async fn stream_15(config: &Config) -> Outcome {
    // spec: QX-STREAM-15
    with_peer(config, |peer| async move {
        let (started, _) = peer.start(start_req(&[b"sleep", b"30"], true)).await?;
        let mut recv = tokio::time::timeout(peer.wait, peer.conn.accept_uni())
            .await
            .map_err(|_| anyhow::anyhow!("no output stream"))??;
        // Wait for the Header, so the subscription is established.
        let mut first = [0u8; 1];
        tokio::time::timeout(peer.wait, recv.read_exact(&mut first)).await??;
        recv.stop(quinn::VarInt::from_u32(ErrorCode::Cancelled.as_u32()))?;
        let status = peer.status(started.job).await?;
        let still = status.state.is_running();
        peer.stop(started.job).await?;
        Ok(if still && peer.is_open() {
            Outcome::pass("after STOP_SENDING Cancelled on its output stream the job still runs")
        } else {
            Outcome::fail(format!(
                "expected the job still running after cancelling its subscription, got {:?}",
                status.state
            ))
        })
    })
    .await
}

pub(super) async fn stream_16(config: &Config) -> Outcome {
    // spec: QX-STREAM-16 — a Start with stdin (so our side is still open), abandoned
    // after Started with RESET_STREAM + STOP_SENDING Cancelled.
    with_peer(config, |peer| async move {
        let mut req = start_req(&[b"sleep", b"30"], false);
        req.stdin = true;
        let start = ClientMessage::Start(req);
        let (mut send, mut recv) = peer.open(&frame::encode(&start)?).await?;
        let answer = wire::read_answer(&mut recv, peer.wait)
            .await
            .checked(&start)?;
        let [ServerMessage::Started(started)] = answer.as_slice() else {
            return Ok(Outcome::fail(format!("Start answered {answer:?}")));
        };
        let cancelled = quinn::VarInt::from_u32(ErrorCode::Cancelled.as_u32());
        send.reset(cancelled)?;
        let _ = recv.stop(cancelled);
        let status = peer.status(started.job).await?;
        let still = status.state.is_running();
        peer.stop(started.job).await?;
        Ok(if still {
            Outcome::pass("the job started on an abandoned control stream still runs")
        } else {
            Outcome::fail(format!(
                "expected the job to keep running after its control stream was abandoned, got {:?}",
                status.state
            ))
        })
    })
    .await
}

/// Starts `sleep 30` with `stop_on_detach` on a stream kept open (stdin), returns the
/// job and the stream.
async fn detachable(peer: &Peer) -> anyhow::Result<(JobId, quinn::SendStream)> {
    let mut req = start_req(&[b"sleep", b"30"], false);
    req.stop_on_detach = true;
    req.stdin = true;
    let start = ClientMessage::Start(req);
    let (send, mut recv) = peer.open(&frame::encode(&start)?).await?;
    let answer = wire::read_answer(&mut recv, peer.wait)
        .await
        .checked(&start)?;
    match answer.as_slice() {
        [ServerMessage::Started(s)] => Ok((s.job, send)),
        other => anyhow::bail!("Start answered {other:?}"),
    }
}

fn detached(state: &JobState) -> bool {
    matches!(
        state,
        JobState::Stopped {
            reason: StopReason::Detached,
            ..
        }
    )
}

pub(super) async fn stream_17(config: &Config) -> Outcome {
    // spec: QX-STREAM-17
    with_peer(config, |peer| async move {
        // 1. The control stream is reset.
        let (job, mut send) = detachable(&peer).await?;
        send.reset(quinn::VarInt::from_u32(ErrorCode::Cancelled.as_u32()))?;
        let s = peer.wait_ended(job).await?;
        if !detached(&s.state) {
            return Ok(Outcome::fail(format!(
                "after a reset of its control stream: expected Stopped(Detached), got {:?}",
                s.state
            )));
        }
        // 2. The connection closes; 3. a job without stop_on_detach outlives it.
        let other = Peer::user(config).await?;
        let (job, _send) = detachable(&other).await?;
        let (keeps, _) = other.start(start_req(&[b"sleep", b"30"], false)).await?;
        other.conn.close(0u32.into(), b"conformance: detach");
        let s = peer.wait_ended(job).await?;
        if !detached(&s.state) {
            return Ok(Outcome::fail(format!(
                "after its connection closed: expected Stopped(Detached), got {:?}",
                s.state
            )));
        }
        let kept = peer.status(keeps.job).await?;
        peer.stop(keeps.job).await?;
        Ok(if kept.state.is_running() {
            Outcome::pass(
                "reset stream → Detached; closed connection → Detached; a job without \
                 stop_on_detach kept running",
            )
        } else {
            Outcome::fail(format!(
                "a job without stop_on_detach did not outlive its connection: {:?}",
                kept.state
            ))
        })
    })
    .await
}

pub(super) async fn stream_18(config: &Config) -> Outcome {
    // spec: QX-STREAM-18, QX-LIMIT-9 — one byte of a frame, then silence.
    let mut cfg = config.clone();
    cfg.wait = config.request_deadline + config.wait;
    with_peer(&cfg, |peer| async move {
        let started = tokio::time::Instant::now();
        let (mut send, mut recv) = peer.open(&[0x02]).await?;
        let seen = wire::closed(&mut send, &mut recv, peer.wait).await;
        let after = started.elapsed();
        let code = u64::from(ErrorCode::Timeout.as_u32());
        Ok(if seen.reset == Some(code) && seen.stopped == Some(code) {
            Outcome::pass(format!("{} after {after:.1?}", seen.describe()))
        } else {
            Outcome::fail(format!(
                "expected RESET_STREAM and STOP_SENDING timeout (12) within {:?}, got {}",
                peer.wait,
                seen.describe()
            ))
        })
    })
    .await
}

pub(super) async fn stream_19(config: &Config) -> Outcome {
    // spec: QX-STREAM-19 — 16 MiB of output nobody reads, then other requests.
    with_peer(config, |peer| async move {
        let argv: [&[u8]; 4] = [b"head", b"-c", b"16777216", b"/dev/zero"];
        let (started, _) = peer.start(start_req(&argv, true)).await?;
        let _unread = tokio::time::timeout(peer.wait, peer.conn.accept_uni())
            .await
            .map_err(|_| anyhow::anyhow!("no output stream"))??;
        let t = tokio::time::Instant::now();
        for _ in 0..5 {
            peer.list().await?;
            peer.status(started.job).await?;
        }
        Ok(Outcome::pass(format!(
            "10 requests answered in {:.1?} while a 16 MiB output stream was not read",
            t.elapsed()
        )))
    })
    .await
}
