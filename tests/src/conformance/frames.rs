//! Transport, framing, version and error-code checks (spec: QX-TRANS-*, QX-FRAME-*,
//! QX-VER-*, QX-ERR-*).

use qexec_protocol::{
    ALPN, ClientMessage, ErrorCode, JobId, MAX_FRAME_LEN, StartRequest, StatusRequest, frame,
};

use super::wire::{self, Answer, End, Peer, expect_fault};
use super::{Check, Config, Outcome, check};

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "QX-TRANS-3",
            "a handshake offering no ALPN, or only h3, fails; one offering qexec/1 negotiates it",
            trans_3
        ),
        check!(
            "QX-TRANS-4",
            "a handshake without a client certificate, or with one from another CA, fails",
            trans_4
        ),
        check!(
            "QX-TRANS-5",
            "the server accepts no 0-RTT data (no ticket, or early data rejected)",
            trans_5
        ),
        check!(
            "QX-VER-1",
            "a handshake offering only qexec/2 (another major version) fails",
            ver_1
        ),
        check!(
            "QX-FRAME-1",
            "a non-minimal length prefix closes the stream with ProtocolViolation",
            frame_1
        ),
        check!(
            "QX-FRAME-2",
            "a declared length above 1 MiB closes the stream with FrameTooLarge before any \
             body byte; a frame of exactly 1 MiB is accepted",
            frame_2
        ),
        check!(
            "QX-FRAME-3",
            "a body that is not a valid postcard message, or is empty, closes the stream with \
             ProtocolViolation",
            frame_3
        ),
        check!(
            "QX-FRAME-4",
            "bytes after the message inside a frame close the stream with ProtocolViolation",
            frame_4
        ),
        check!(
            "QX-FRAME-5",
            "after a bad frame the server processes no further bytes of the stream (a valid \
             request behind it is not answered)",
            frame_5
        ),
        check!(
            "QX-FRAME-6",
            "FIN inside a frame closes the stream with ProtocolViolation",
            frame_6
        ),
        check!(
            "QX-VER-3",
            "a request with an unknown message variant (12, 200) closes the stream with \
             Unsupported",
            ver_3
        ),
        check!(
            "QX-MSG-ERR-1",
            "an Error response carries the code as its number on the wire (NotFound = 05)",
            msg_err_1
        ),
        check!(
            "QX-ERR-2",
            "a stream reset with an error code the server does not know changes nothing else",
            err_2
        ),
        check!(
            "QX-ERR-3",
            "a bad frame on a control stream: RESET_STREAM and STOP_SENDING, both with the code; \
             other streams and the connection continue",
            err_3
        ),
        check!(
            "QX-STREAM-20",
            "a stream reset mid-frame ends only that stream: other streams and the \
             connection continue",
            stream_20
        ),
    ]
}

/// Runs `f` with a connection as the main user, turning setup errors into failures.
pub(super) async fn with_peer<F, Fut>(config: &Config, f: F) -> Outcome
where
    F: FnOnce(Peer) -> Fut,
    Fut: Future<Output = anyhow::Result<Outcome>>,
{
    let peer = match Peer::user(config).await {
        Ok(p) => p,
        Err(e) => return Outcome::fail(format!("cannot connect: {e:#}")),
    };
    match f(peer).await {
        Ok(o) => o,
        Err(e) => Outcome::fail(format!("{e:#}")),
    }
}

/// A fault check: `bytes` then `end` must close the stream with `code`.
async fn fault(config: &Config, bytes: &[u8], end: End, code: ErrorCode) -> Outcome {
    with_peer(config, |peer| async move {
        Ok(match expect_fault(&peer, bytes, end, code).await? {
            Ok(seen) => Outcome::pass(seen),
            Err(why) => Outcome::fail(why),
        })
    })
    .await
}

/// A handshake offering `offers` must fail; then one offering `qexec/1` must
/// negotiate it.
async fn alpn_refused(config: &Config, offers: &[&[u8]], label: &str) -> Outcome {
    let attempt = async {
        let tls = wire::client_tls(config, Some(&config.user), offers)?;
        let (_endpoint, connecting) = wire::connecting(config, tls)?;
        Ok::<_, anyhow::Error>(tokio::time::timeout(config.wait, connecting).await)
    };
    let refusal = match attempt.await {
        Err(e) => return Outcome::fail(format!("cannot set up the attempt: {e:#}")),
        Ok(Err(_)) => {
            return Outcome::fail(format!(
                "a handshake offering {label} neither completed nor failed"
            ));
        }
        Ok(Ok(Ok(_))) => {
            return Outcome::fail(format!(
                "expected the handshake to fail, but one offering {label} succeeded"
            ));
        }
        Ok(Ok(Err(e))) => e,
    };
    match Peer::user(config).await {
        Ok(p) => {
            let alpn = p
                .conn
                .handshake_data()
                .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|d| d.protocol);
            if alpn.as_deref() == Some(ALPN) {
                Outcome::pass(format!("{label}: {refusal}; qexec/1 negotiated"))
            } else {
                Outcome::fail(format!("expected ALPN qexec/1 negotiated, got {alpn:?}"))
            }
        }
        Err(e) => Outcome::fail(format!("a handshake with ALPN qexec/1 failed: {e:#}")),
    }
}

async fn trans_3(config: &Config) -> Outcome {
    // spec: QX-TRANS-3
    let none = alpn_refused(config, &[], "no ALPN").await;
    let Outcome::Pass(first) = none else {
        return none;
    };
    match alpn_refused(config, &[b"h3"], "only h3").await {
        Outcome::Pass(second) => Outcome::pass(format!("{first}; {second}")),
        other => other,
    }
}

async fn ver_1(config: &Config) -> Outcome {
    // spec: QX-VER-1
    alpn_refused(config, &[b"qexec/2"], "only qexec/2").await
}

/// Connects with `tls` and expects the server to refuse: the handshake fails, or
/// (TLS 1.3 lets the client finish first) the connection is closed before an answer.
async fn expect_refused(
    config: &Config,
    tls: rustls::ClientConfig,
) -> anyhow::Result<Result<String, String>> {
    let (endpoint, connecting) = wire::connecting(config, tls)?;
    let conn = match tokio::time::timeout(config.wait, connecting).await {
        Err(_) => return Ok(Err("the handshake neither completed nor failed".to_owned())),
        Ok(Err(e)) => return Ok(Ok(format!("handshake refused: {e}"))),
        Ok(Ok(c)) => c,
    };
    let peer = Peer {
        conn: conn.clone(),
        endpoint,
        wait: config.wait,
    };
    Ok(match peer.request(&wire::list_msg()).await {
        Ok(Answer::Frames { .. }) => Err("the server answered a List".to_owned()),
        _ => match conn.close_reason() {
            Some(reason) => Ok(format!("connection closed: {reason}")),
            None => Err("the connection stays open".to_owned()),
        },
    })
}

async fn trans_4(config: &Config) -> Outcome {
    // spec: QX-TRANS-4
    let attempt = async {
        let mut seen = Vec::new();
        let none = wire::client_tls(config, None, &[ALPN])?;
        match expect_refused(config, none).await? {
            Ok(s) => seen.push(format!("no certificate: {s}")),
            Err(why) => return Ok(Err(format!("a client without a certificate: {why}"))),
        }
        // A well-formed client certificate from a CA the server does not know.
        let other_ca = qexec_tls::Ca::generate()?;
        let stranger = other_ca.issue_client("mallory", qexec_tls::Role::Admin)?;
        let foreign = wire::client_tls(config, Some(&stranger), &[ALPN])?;
        match expect_refused(config, foreign).await? {
            Ok(s) => seen.push(format!("certificate from another CA: {s}")),
            Err(why) => return Ok(Err(format!("a certificate from another CA: {why}"))),
        }
        Ok::<_, anyhow::Error>(Ok(seen.join("; ")))
    };
    match attempt.await {
        Ok(Ok(seen)) => Outcome::pass(seen),
        Ok(Err(why)) => Outcome::fail(why),
        Err(e) => Outcome::fail(format!("cannot set up the attempt: {e:#}")),
    }
}

async fn trans_5(config: &Config) -> Outcome {
    // spec: QX-TRANS-5 — a first connection collects any session ticket (tickets come
    // before the first answer), a second one from the same endpoint tries 0-RTT.
    let attempt = async {
        let mut tls = wire::client_tls(config, Some(&config.user), &[ALPN])?;
        tls.enable_early_data = true;
        let (endpoint, connecting) = wire::connecting(config, tls)?;
        let conn = tokio::time::timeout(config.wait, connecting).await??;
        let first = Peer {
            conn,
            endpoint: endpoint.clone(),
            wait: config.wait,
        };
        first.list().await?;
        let connecting = endpoint.connect(config.addr, &config.server_name)?;
        Ok::<_, anyhow::Error>(match connecting.into_0rtt() {
            Err(connecting) => {
                tokio::time::timeout(config.wait, connecting).await??;
                Ok("no session ticket was issued, so no 0-RTT is possible".to_owned())
            }
            Ok((_conn, accepted)) => {
                if tokio::time::timeout(config.wait, accepted).await? {
                    Err("the server accepted 0-RTT early data".to_owned())
                } else {
                    Ok("0-RTT was offered and rejected".to_owned())
                }
            }
        })
    };
    match attempt.await {
        Ok(Ok(seen)) => Outcome::pass(seen),
        Ok(Err(why)) => Outcome::fail(why),
        Err(e) => Outcome::fail(format!("{e:#}")),
    }
}

async fn frame_1(config: &Config) -> Outcome {
    // spec: QX-FRAME-1 — 0x80 0x00 is 0 written in two bytes.
    fault(
        config,
        &[0x80, 0x00, 0x03, 0x00],
        End::Open,
        ErrorCode::ProtocolViolation,
    )
    .await
}

/// A `Start` whose frame body is exactly [`MAX_FRAME_LEN`] bytes.
fn max_size_start() -> anyhow::Result<Vec<u8>> {
    let want = qexec_protocol::MAX_PREFIX_LEN + MAX_FRAME_LEN;
    let mut req = StartRequest {
        argv: vec![b"true".to_vec(), vec![b'x'; MAX_FRAME_LEN - 64]],
        ..wire::start_req(&[], false)
    };
    let first = frame::encode(&ClientMessage::Start(req.clone()))?;
    // Both fill lengths take a 3-byte varint, so the difference is exact.
    req.argv[1] = vec![b'x'; MAX_FRAME_LEN - 64 + (want - first.len())];
    let bytes = frame::encode(&ClientMessage::Start(req))?;
    anyhow::ensure!(
        bytes.len() == want,
        "built a {} byte frame instead of {want}",
        bytes.len()
    );
    Ok(bytes)
}

async fn frame_2(config: &Config) -> Outcome {
    // spec: QX-FRAME-2 — 0x81 0x80 0x40 declares MAX_FRAME_LEN + 1; no body follows,
    // so the server must refuse from the prefix alone.
    let big = fault(
        config,
        &[0x81, 0x80, 0x40],
        End::Open,
        ErrorCode::FrameTooLarge,
    )
    .await;
    let Outcome::Pass(seen) = big else { return big };
    with_peer(config, |peer| async move {
        let bytes = max_size_start()?;
        let (mut send, mut recv) = peer.open(&bytes).await?;
        send.finish()?;
        let answer = wire::read_answer(&mut recv, peer.wait).await;
        // The body is a well-formed Start whose argv exceeds the 512 KiB command
        // limit: a request-level refusal, not a frame-level one.
        Ok(match answer.error() {
            Some(e) if e.code == ErrorCode::InvalidArgument => Outcome::pass(format!(
                "{seen}; a 1 MiB frame was decoded and answered InvalidArgument"
            )),
            _ => Outcome::fail(format!(
                "{seen}; but a frame of exactly 1 MiB (a Start over the command limit) got {} \
                 instead of an InvalidArgument answer",
                answer.describe()
            )),
        })
    })
    .await
}

async fn frame_3(config: &Config) -> Outcome {
    // spec: QX-FRAME-3 — List { running_only: 2 }: 2 is not a boolean; and a frame
    // with an empty body.
    let bad_bool = fault(
        config,
        &[0x02, 0x03, 0x02],
        End::Finish,
        ErrorCode::ProtocolViolation,
    )
    .await;
    let Outcome::Pass(first) = bad_bool else {
        return bad_bool;
    };
    match fault(config, &[0x00], End::Finish, ErrorCode::ProtocolViolation).await {
        Outcome::Pass(second) => Outcome::pass(format!("bad bool: {first}; empty body: {second}")),
        Outcome::Fail(why) => Outcome::fail(format!("empty body: {why}")),
        other => other,
    }
}

async fn frame_4(config: &Config) -> Outcome {
    // spec: QX-FRAME-4 — List { running_only: false } and one byte more, in one frame.
    fault(
        config,
        &[0x03, 0x03, 0x00, 0x00],
        End::Finish,
        ErrorCode::ProtocolViolation,
    )
    .await
}

async fn frame_5(config: &Config) -> Outcome {
    // spec: QX-FRAME-5 — a frame with trailing bytes, then a valid List, then FIN: the
    // List must not be answered.
    let mut bytes = vec![0x03, 0x03, 0x00, 0x00];
    bytes.extend(frame::encode(&wire::list_msg()).unwrap_or_default());
    fault(config, &bytes, End::Finish, ErrorCode::ProtocolViolation).await
}

async fn stream_20(config: &Config) -> Outcome {
    // spec: QX-STREAM-20 — half a Status frame, then RESET_STREAM.
    with_peer(config, |peer| async move {
        let witness = peer.witness().await?;
        let status = frame::encode(&ClientMessage::Status(StatusRequest {
            job: JobId::from_u128(1),
        }))?;
        let (mut send, _recv) = peer.open(&status[..5]).await?;
        send.reset(quinn::VarInt::from_u32(ErrorCode::Cancelled.as_u32()))?;
        if let Err(e) = witness.complete().await {
            return Ok(Outcome::fail(format!("after a stream was reset mid-frame: {e:#}")));
        }
        let jobs = peer.list().await;
        Ok(match (jobs, peer.is_open()) {
            (Ok(_), true) => Outcome::pass(
                "after a stream reset mid-frame, a stream opened before it and a new one both answered",
            ),
            (Err(e), _) => Outcome::fail(format!("a new stream after the reset failed: {e:#}")),
            (Ok(_), false) => Outcome::fail("the connection closed after a stream reset mid-frame"),
        })
    })
    .await
}

async fn frame_6(config: &Config) -> Outcome {
    // spec: QX-FRAME-6 — the first 4 bytes of a 18-byte Status frame, then FIN.
    let status = match frame::encode(&ClientMessage::Status(StatusRequest {
        job: JobId::from_u128(1),
    })) {
        Ok(b) => b,
        Err(e) => return Outcome::fail(format!("cannot encode: {e}")),
    };
    fault(
        config,
        &status[..4],
        End::Finish,
        ErrorCode::ProtocolViolation,
    )
    .await
}

/// The first `ClientMessage` variant index this revision of qexec/1 does not define
/// (the last defined one is `Info`, 11).
const FIRST_UNKNOWN_CLIENT_VARIANT: u8 = 12;

async fn ver_3(config: &Config) -> Outcome {
    // spec: QX-VER-3 — the first ClientMessage variant qexec/1 does not define;
    // 200 is a two-byte varint index.
    let first = fault(
        config,
        &[0x01, FIRST_UNKNOWN_CLIENT_VARIANT],
        End::Finish,
        ErrorCode::Unsupported,
    )
    .await;
    let Outcome::Pass(a) = first else {
        return first;
    };
    match fault(
        config,
        &[0x02, 0xc8, 0x01],
        End::Finish,
        ErrorCode::Unsupported,
    )
    .await
    {
        Outcome::Pass(b) => Outcome::pass(format!(
            "variant {FIRST_UNKNOWN_CLIENT_VARIANT}: {a}; variant 200: {b}"
        )),
        Outcome::Fail(why) => Outcome::fail(format!("variant 200: {why}")),
        other => other,
    }
}

async fn msg_err_1(config: &Config) -> Outcome {
    // spec: QX-MSG-ERR-1, QX-ERR-1 — the bytes of the answer: prefix, variant 5
    // (Error), code 5 (NotFound).
    with_peer(config, |peer| async move {
        let job = JobId::from_u128(0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
        let answer = peer
            .request(&ClientMessage::Status(StatusRequest { job }))
            .await?;
        let Answer::Frames { raw, .. } = &answer else {
            return Ok(Outcome::fail(format!(
                "expected an Error answer, got {}",
                answer.describe()
            )));
        };
        let prefix = raw
            .iter()
            .position(|b| b & 0x80 == 0)
            .map_or(raw.len(), |i| i + 1);
        Ok(match raw.get(prefix..prefix + 2) {
            Some([5, 5]) => {
                Outcome::pass("Status of a missing job: body starts 05 05 (Error, NotFound)")
            }
            got => Outcome::fail(format!(
                "expected the body to start 05 05 (Error, NotFound), got {got:02x?} ({})",
                answer.describe()
            )),
        })
    })
    .await
}

async fn err_2(config: &Config) -> Outcome {
    // spec: QX-ERR-2 — RESET_STREAM with code 1000 (unknown to qexec/1) mid-request.
    with_peer(config, |peer| async move {
        let witness = peer.witness().await?;
        let (mut send, _recv) = peer.open(&[0x02]).await?;
        send.reset(quinn::VarInt::from_u32(1000))?;
        witness.complete().await?;
        peer.list().await?;
        Ok(if peer.is_open() {
            Outcome::pass("a reset with code 1000 ended only its stream")
        } else {
            Outcome::fail("the connection closed after a reset with an unknown code")
        })
    })
    .await
}

async fn err_3(config: &Config) -> Outcome {
    // spec: QX-ERR-3 — the stream is left open, so the server must send both.
    with_peer(config, |peer| async move {
        let witness = peer.witness().await?;
        let (mut send, mut recv) = peer.open(&[0x01, FIRST_UNKNOWN_CLIENT_VARIANT]).await?;
        let seen = wire::closed(&mut send, &mut recv, peer.wait).await;
        let code = u64::from(ErrorCode::Unsupported.as_u32());
        if seen.reset != Some(code) || seen.stopped != Some(code) {
            return Ok(Outcome::fail(format!(
                "expected RESET_STREAM and STOP_SENDING both unsupported (3), got {}",
                seen.describe()
            )));
        }
        witness.complete().await?;
        peer.list().await?;
        Ok(if peer.is_open() {
            Outcome::pass(format!("{}; other streams continued", seen.describe()))
        } else {
            Outcome::fail("the connection closed after a stream fault")
        })
    })
    .await
}
