//! Stream-kind and stream-sequence checks (spec: QX-STREAM-*).

use std::time::Duration;

use qexec_protocol::{
    AttachRequest, ClientMessage, ErrorCode, JobId, ServerMessage, SignalRequest, StatusRequest,
    StopRequest, frame,
};

use super::frames::with_peer;
use super::output_streams::{
    stream_11, stream_12, stream_13, stream_14, stream_15, stream_16, stream_17, stream_18,
    stream_19,
};
use super::wire::{self, End, Peer, code_name, expect_fault, start_req};
use super::{Check, Config, Outcome, check};

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "QX-STREAM-2",
            "Start{follow} and Attach each open one output stream, matched by request_stream",
            stream_2
        ),
        check!(
            "QX-STREAM-3",
            "the server grants the client no unidirectional streams",
            stream_3
        ),
        check!(
            "QX-STREAM-4",
            "answers and output streams end on a frame boundary",
            stream_4
        ),
        check!(
            "QX-STREAM-5",
            "StdinData or StdinEof as the first frame of a control stream closes it with \
             ProtocolViolation",
            stream_5
        ),
        check!(
            "QX-STREAM-6",
            "a second request on one control stream closes it with ProtocolViolation",
            stream_6
        ),
        check!(
            "QX-STREAM-7",
            "StdinData after a Start without stdin makes the server stop the stream with \
             ProtocolViolation",
            stream_7
        ),
        check!(
            "QX-STREAM-8",
            "FIN before the request closes the stream with ProtocolViolation; FIN before \
             StdinEof still closes the job's stdin",
            stream_8
        ),
        check!(
            "QX-STREAM-9",
            "each request kind gets its own answer: Started, Status, ListItem*/ListEnd, \
             Attached, Error",
            stream_9
        ),
        check!(
            "QX-STREAM-10",
            "the server answers without waiting for the client's FIN and finishes right \
             after the answer",
            stream_10
        ),
        check!(
            "QX-STREAM-11",
            "Start{follow} opens one output stream whose Header names the control stream, \
             the job and offset 0",
            stream_11
        ),
        check!(
            "QX-STREAM-12",
            "output Data offsets are contiguous in the combined stdout+stderr output, each \
             frame tagged with its stream",
            stream_12
        ),
        check!(
            "QX-STREAM-13",
            "an output stream ends with End (the job's final status) then FIN",
            stream_13
        ),
        check!(
            "QX-STREAM-14",
            "Attach from an offset resends the output from exactly there; from beyond the \
             end of an ended job gives Header then End",
            stream_14
        ),
        check!(
            "QX-STREAM-15",
            "STOP_SENDING on an output stream cancels the subscription, not the job",
            stream_15
        ),
        check!(
            "QX-STREAM-16",
            "abandoning a control stream after Started does not undo the start",
            stream_16
        ),
        check!(
            "QX-STREAM-17",
            "stop_on_detach: a reset control stream or a closed connection stops the job \
             (Detached); without it the job outlives its connection",
            stream_17
        ),
        check!(
            "QX-STREAM-18",
            "a request not complete within the request deadline: RESET_STREAM and \
             STOP_SENDING with Timeout",
            stream_18
        ),
        check!(
            "QX-STREAM-19",
            "a subscriber that does not read its output stream does not block other \
             streams of its connection",
            stream_19
        ),
    ]
}

async fn stream_2(config: &Config) -> Outcome {
    // spec: QX-STREAM-2
    with_peer(config, |peer| async move {
        let (started, start_stream) = peer.start(start_req(&[b"echo", b"two"], true)).await?;
        let first = peer.next_output().await?;
        let msg = ClientMessage::Attach(AttachRequest {
            job: started.job,
            from: 0,
        });
        let (mut send, mut recv) = peer.open(&frame::encode(&msg)?).await?;
        let attach_stream = u64::from(send.id());
        send.finish()?;
        wire::read_answer(&mut recv, peer.wait).await.checked(&msg)?;
        let second = peer.next_output().await?;
        Ok(
            if first.request_stream == start_stream
                && second.request_stream == attach_stream
                && first.data == b"two\n"
                && second.data == b"two\n"
            {
                Outcome::pass(format!(
                    "output streams for control streams {start_stream} and {attach_stream}, same bytes"
                ))
            } else {
                Outcome::fail(format!(
                    "expected output streams for {start_stream} and {attach_stream} with \"two\\n\", \
                     got {} ({:?}) and {} ({:?})",
                    first.request_stream,
                    String::from_utf8_lossy(&first.data),
                    second.request_stream,
                    String::from_utf8_lossy(&second.data)
                ))
            },
        )
    })
    .await
}

async fn stream_4(config: &Config) -> Outcome {
    // spec: QX-STREAM-4 — read_answer and read_output refuse a FIN inside a frame.
    with_peer(config, |peer| async move {
        peer.list().await?;
        peer.ask(&ClientMessage::Status(StatusRequest {
            job: JobId::from_u128(9),
        }))
        .await?;
        peer.start(start_req(&[b"seq", b"1", b"1000"], true))
            .await?;
        let out = peer.next_output().await?;
        Ok(Outcome::pass(format!(
            "List, Error and an output stream of {} Data frames all ended on frame boundaries",
            out.chunks.len()
        )))
    })
    .await
}

async fn stream_3(config: &Config) -> Outcome {
    // spec: QX-STREAM-3
    with_peer(config, |peer| async move {
        let opened = tokio::time::timeout(Duration::from_secs(1), peer.conn.open_uni()).await;
        let mut send = match opened {
            Err(_) => {
                return Ok(Outcome::pass(
                    "no credit for a client unidirectional stream (limit 0)",
                ));
            }
            Ok(Err(e)) => return Ok(Outcome::fail(format!("opening a uni stream: {e}"))),
            Ok(Ok(s)) => s,
        };
        let _ = send.write_all(&frame::encode(&wire::list_msg())?).await;
        let _ = send.finish();
        Ok(
            match tokio::time::timeout(peer.wait, send.stopped()).await {
                Ok(Ok(Some(code)))
                    if code.into_inner() == u64::from(ErrorCode::ProtocolViolation.as_u32()) =>
                {
                    Outcome::pass("a client uni stream was stopped with ProtocolViolation")
                }
                other => Outcome::fail(format!(
                    "expected no uni-stream credit or STOP_SENDING ProtocolViolation, got {other:?}"
                )),
            },
        )
    })
    .await
}

async fn stream_5(config: &Config) -> Outcome {
    // spec: QX-STREAM-5
    let mut seen = Vec::new();
    for msg in [
        ClientMessage::StdinData(vec![b'x']),
        ClientMessage::StdinEof,
    ] {
        let out = with_peer(config, |peer| async move {
            let bytes = frame::encode(&msg)?;
            Ok(
                match expect_fault(&peer, &bytes, End::Finish, ErrorCode::ProtocolViolation).await?
                {
                    Ok(s) => Outcome::pass(format!("{msg:?} first: {s}")),
                    Err(why) => Outcome::fail(format!("{msg:?} first: {why}")),
                },
            )
        })
        .await;
        match out {
            Outcome::Pass(s) => seen.push(s),
            other => return other,
        }
    }
    Outcome::pass(seen.join("; "))
}

async fn stream_6(config: &Config) -> Outcome {
    // spec: QX-STREAM-6 — Status then List in one write.
    with_peer(config, |peer| async move {
        let mut bytes = frame::encode(&ClientMessage::Status(StatusRequest {
            job: JobId::from_u128(3),
        }))?;
        bytes.extend(frame::encode(&wire::list_msg())?);
        Ok(
            match expect_fault(&peer, &bytes, End::Finish, ErrorCode::ProtocolViolation).await? {
                Ok(s) => Outcome::pass(s),
                Err(why) => Outcome::fail(why),
            },
        )
    })
    .await
}

async fn stream_7(config: &Config) -> Outcome {
    // spec: QX-STREAM-7 — the Start is answered first, then the StdinData is sent.
    with_peer(config, |peer| async move {
        let start = ClientMessage::Start(start_req(&[b"true"], false));
        let (mut send, mut recv) = peer.open(&frame::encode(&start)?).await?;
        // The server answers and finishes its side without waiting for ours.
        let answer = wire::read_answer(&mut recv, peer.wait)
            .await
            .checked(&start)?;
        let [ServerMessage::Started(_)] = answer.as_slice() else {
            return Ok(Outcome::fail(format!("Start answered {answer:?}")));
        };
        // Not finished: once all data is acknowledged after a FIN, QUIC no longer
        // reports a STOP_SENDING.
        let _ = send
            .write_all(&frame::encode(&ClientMessage::StdinData(b"x".to_vec()))?)
            .await;
        let stopped = tokio::time::timeout(peer.wait, send.stopped()).await;
        let want = u64::from(ErrorCode::ProtocolViolation.as_u32());
        Ok(match stopped {
            Ok(Ok(Some(code))) if code.into_inner() == want => {
                Outcome::pass("Started, then STOP_SENDING protocol_violation on the StdinData")
            }
            Ok(Ok(Some(code))) => Outcome::fail(format!(
                "expected STOP_SENDING protocol_violation, got STOP_SENDING {}",
                code_name(code.into_inner())
            )),
            other => Outcome::fail(format!(
                "expected STOP_SENDING protocol_violation after StdinData, got {other:?}"
            )),
        })
    })
    .await
}

async fn stream_8(config: &Config) -> Outcome {
    // spec: QX-STREAM-8 — an empty stream with FIN; then a `cat` whose stdin stream
    // ends with FIN but no StdinEof: cat must still see end of input.
    with_peer(config, |peer| async move {
        let empty = match expect_fault(&peer, &[], End::Finish, ErrorCode::ProtocolViolation).await? {
            Ok(s) => s,
            Err(why) => return Ok(Outcome::fail(format!("FIN before the request: {why}"))),
        };
        let mut req = start_req(&[b"cat"], true);
        req.stdin = true;
        let mut bytes = frame::encode(&ClientMessage::Start(req))?;
        bytes.extend(frame::encode(&ClientMessage::StdinData(b"abc".to_vec()))?);
        let (mut send, _recv) = peer.open(&bytes).await?;
        send.finish()?;
        let out = peer.next_output().await?;
        Ok(if out.data == b"abc" {
            Outcome::pass(format!(
                "FIN before the request: {empty}; FIN before StdinEof: cat got \"abc\" and end of input"
            ))
        } else {
            Outcome::fail(format!(
                "FIN before StdinEof: expected cat to echo \"abc\" and end, got {:?}",
                String::from_utf8_lossy(&out.data)
            ))
        })
    })
    .await
}

/// Sends `msg` and expects exactly one frame matching `ok`, checked by the protocol's
/// response rules.
async fn expect_answer(
    peer: &Peer,
    msg: &ClientMessage,
    ok: impl Fn(&ServerMessage) -> bool,
) -> anyhow::Result<Result<(), String>> {
    let name = qexec_protocol::client_message_name(msg);
    Ok(match peer.request(msg).await?.checked(msg) {
        Ok(frames) if frames.len() == 1 && ok(&frames[0]) => Ok(()),
        Ok(frames) => Err(format!(
            "{name} answered [{}]",
            frames
                .iter()
                .map(qexec_protocol::server_message_name)
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Err(e) => Err(format!("{name}: {e:#}")),
    })
}

/// What an answer frame must be.
type Expect = fn(&ServerMessage) -> bool;

async fn stream_9(config: &Config) -> Outcome {
    // spec: QX-STREAM-9
    with_peer(config, |peer| async move {
        let (started, _) = peer.start(start_req(&[b"sleep", b"30"], false)).await?;
        let job = started.job;
        let missing = JobId::from_u128(0xdead_beef);
        let cases: Vec<(ClientMessage, Expect)> = vec![
            (ClientMessage::Status(StatusRequest { job }), |m| {
                matches!(m, ServerMessage::Status(_))
            }),
            (
                ClientMessage::Status(StatusRequest { job: missing }),
                |m| matches!(m, ServerMessage::Error(e) if e.code == ErrorCode::NotFound),
            ),
            (
                ClientMessage::Signal(SignalRequest { job, signal: 18 }),
                |m| matches!(m, ServerMessage::Status(_)),
            ),
            (ClientMessage::Attach(AttachRequest { job, from: 0 }), |m| {
                matches!(m, ServerMessage::Attached { .. })
            }),
            (
                ClientMessage::Stop(StopRequest {
                    job,
                    grace_ms: Some(100),
                }),
                |m| matches!(m, ServerMessage::Status(_)),
            ),
        ];
        for (msg, ok) in &cases {
            if let Err(why) = expect_answer(&peer, msg, ok).await? {
                let _ = peer.stop(job).await;
                return Ok(Outcome::fail(why));
            }
        }
        peer.list().await?;
        Ok(Outcome::pass(
            "Start→Started, Status→Status, Status(missing)→Error NotFound, Signal→Status, \
             Attach→Attached, Stop→Status, List→ListItem*…ListEnd",
        ))
    })
    .await
}

async fn stream_10(config: &Config) -> Outcome {
    // spec: QX-STREAM-10 — a List whose stream the client keeps open: the answer and
    // the server's FIN come anyway; `checked` refuses frames after ListEnd.
    with_peer(config, |peer| async move {
        let (started, _) = peer.start(start_req(&[b"true"], false)).await?;
        let msg = wire::list_msg();
        let (_send, mut recv) = peer.open(&frame::encode(&msg)?).await?;
        let answer = wire::read_answer(&mut recv, peer.wait).await;
        let described = answer.describe();
        let frames = match answer.checked(&msg) {
            Ok(f) => f,
            Err(e) => {
                return Ok(Outcome::fail(format!(
                    "List with the client's side still open: {e:#} ({described})"
                )));
            }
        };
        let listed = frames
            .iter()
            .any(|m| matches!(m, ServerMessage::ListItem(s) if s.id == started.job));
        Ok(if listed {
            Outcome::pass(format!(
                "List answered with the client's side open: {} frames ending ListEnd, then FIN",
                frames.len()
            ))
        } else {
            Outcome::fail(format!(
                "List does not contain the caller's job {}",
                started.job
            ))
        })
    })
    .await
}
