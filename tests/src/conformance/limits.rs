//! Protocol limit checks (spec: QX-LIMIT-*, QX-ERR-5).

use qexec_protocol::limits::{
    MAX_ARGV, MAX_COMMAND_BYTES, MAX_ENV, MAX_GRACE_MS, MAX_STDIN_CHUNK, MAX_TIMEOUT_MS,
    MIN_MEMORY_BYTES,
};
use qexec_protocol::{
    ClientMessage, ErrorCode, JobId, Limits, ServerMessage, SignalRequest, StartRequest,
    StopRequest, frame,
};

use super::frames::with_peer;
use super::output_streams::seq_output;
use super::wire::{self, Answer, Peer, start_req};
use super::{Check, Config, Outcome, check};

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "QX-LIMIT-2",
            "argv with 0 entries, 4097 entries, a NUL byte or an empty argv[0] is answered \
             InvalidArgument",
            limit_2
        ),
        check!(
            "QX-LIMIT-3",
            "env with 4097 entries, an empty name, '=' or NUL in a name, NUL in a value is \
             answered InvalidArgument",
            limit_3
        ),
        check!(
            "QX-LIMIT-4",
            "argv+env+cwd of exactly 512 KiB runs; one byte more is answered InvalidArgument",
            limit_4
        ),
        check!(
            "QX-LIMIT-5",
            "a relative cwd or one with NUL is answered InvalidArgument",
            limit_5
        ),
        check!(
            "QX-LIMIT-6",
            "Signal 0 or 65 is answered InvalidArgument",
            limit_6
        ),
        check!(
            "QX-LIMIT-7",
            "a timeout above 30 days is answered InvalidArgument",
            limit_7
        ),
        check!(
            "QX-LIMIT-8",
            "a Stop grace period above 30 days is answered InvalidArgument; 0 is accepted",
            limit_8
        ),
        check!(
            "QX-LIMIT-10",
            "StdinData of 64 KiB is accepted, 64 KiB + 1 makes the server stop the stream \
             with ProtocolViolation",
            limit_10
        ),
        check!(
            "QX-LIMIT-11",
            "no output Data frame carries more than 64 KiB",
            limit_11
        ),
        check!(
            "QX-LIMIT-12",
            "the server grants 256 concurrent control streams on one connection",
            limit_12
        ),
        check!(
            "QX-LIMIT-13",
            "a resource limit of 0 is answered InvalidArgument",
            limit_13
        ),
        check!(
            "QX-LIMIT-17",
            "a memory limit below 4 MiB is answered InvalidArgument",
            limit_17
        ),
    ]
}

/// Sends each start and expects `InvalidArgument` for all of them.
async fn refused(config: &Config, cases: Vec<(&'static str, StartRequest)>) -> Outcome {
    with_peer(config, |peer| async move {
        let mut names = Vec::new();
        for (name, req) in cases {
            if let Some(fail) = expect_invalid(&peer, &ClientMessage::Start(req), name).await? {
                return Ok(fail);
            }
            names.push(name);
        }
        Ok(Outcome::pass(format!(
            "InvalidArgument for {}",
            names.join(", ")
        )))
    })
    .await
}

/// `None` when `msg` is answered `InvalidArgument`, else the failure.
async fn expect_invalid(
    peer: &Peer,
    msg: &ClientMessage,
    name: &str,
) -> anyhow::Result<Option<Outcome>> {
    let answer = peer.request(msg).await?;
    Ok(match answer.error() {
        Some(e) if e.code == ErrorCode::InvalidArgument => None,
        _ => Some(Outcome::fail(format!(
            "{name}: expected Error InvalidArgument, got {}",
            answer.describe()
        ))),
    })
}

fn with(f: impl FnOnce(&mut StartRequest)) -> StartRequest {
    let mut r = start_req(&[b"true"], false);
    f(&mut r);
    r
}

async fn limit_2(config: &Config) -> Outcome {
    // spec: QX-LIMIT-2
    refused(
        config,
        vec![
            ("empty argv", with(|r| r.argv.clear())),
            (
                "4097 entries",
                with(|r| r.argv = vec![b"true".to_vec(); MAX_ARGV + 1]),
            ),
            ("NUL in argv[1]", with(|r| r.argv.push(b"a\0b".to_vec()))),
            ("empty argv[0]", with(|r| r.argv[0].clear())),
        ],
    )
    .await
}

async fn limit_3(config: &Config) -> Outcome {
    // spec: QX-LIMIT-3
    let entry = |n: &[u8], v: &[u8]| (n.to_vec(), v.to_vec());
    refused(
        config,
        vec![
            (
                "4097 entries",
                with(|r| {
                    r.env = (0..=MAX_ENV)
                        .map(|i| entry(format!("V{i}").as_bytes(), b"1"))
                        .collect()
                }),
            ),
            ("empty name", with(|r| r.env.push(entry(b"", b"1")))),
            ("'=' in a name", with(|r| r.env.push(entry(b"A=B", b"1")))),
            ("NUL in a name", with(|r| r.env.push(entry(b"A\0B", b"1")))),
            (
                "NUL in a value",
                with(|r| r.env.push(entry(b"A", b"1\x002"))),
            ),
        ],
    )
    .await
}

/// `true` with arguments making argv + env + cwd exactly `total` bytes, each argument
/// under the kernel's 128 KiB per-string limit.
pub(crate) fn sized_start(total: usize) -> StartRequest {
    let mut r = start_req(&[b"true"], false);
    r.env.clear();
    let mut left = total - r.argv[0].len();
    while left > 0 {
        let n = left.min(100_000);
        r.argv.push(vec![b'a'; n]);
        left -= n;
    }
    r
}

async fn limit_4(config: &Config) -> Outcome {
    // spec: QX-LIMIT-4
    with_peer(config, |peer| async move {
        let max = sized_start(MAX_COMMAND_BYTES);
        debug_assert_eq!(qexec_protocol::command_bytes(&max), MAX_COMMAND_BYTES);
        let answer = peer.request(&ClientMessage::Start(max)).await?;
        if !matches!(&answer, Answer::Frames { msgs, .. } if matches!(msgs.as_slice(), [ServerMessage::Started(_)]))
        {
            return Ok(Outcome::fail(format!(
                "a start of exactly {MAX_COMMAND_BYTES} command bytes: expected Started, got {}",
                answer.describe()
            )));
        }
        let over = sized_start(MAX_COMMAND_BYTES + 1);
        Ok(
            match expect_invalid(&peer, &ClientMessage::Start(over), "512 KiB + 1").await? {
                None => Outcome::pass(format!(
                    "{MAX_COMMAND_BYTES} bytes started, {} answered InvalidArgument",
                    MAX_COMMAND_BYTES + 1
                )),
                Some(fail) => fail,
            },
        )
    })
    .await
}

async fn limit_5(config: &Config) -> Outcome {
    // spec: QX-LIMIT-5
    refused(
        config,
        vec![
            ("relative cwd", with(|r| r.cwd = Some(b"tmp".to_vec()))),
            ("NUL in cwd", with(|r| r.cwd = Some(b"/tmp\0x".to_vec()))),
        ],
    )
    .await
}

/// Runs `f` with a `sleep 30` job of the main user, stopping it afterwards.
async fn with_job<F, Fut>(config: &Config, f: F) -> Outcome
where
    F: FnOnce(Peer, JobId) -> Fut,
    Fut: Future<Output = anyhow::Result<(Peer, Outcome)>>,
{
    with_peer(config, |peer| async move {
        let (started, _) = peer.start(start_req(&[b"sleep", b"30"], false)).await?;
        let (peer, outcome) = f(peer, started.job).await?;
        peer.stop(started.job).await?;
        Ok(outcome)
    })
    .await
}

async fn limit_6(config: &Config) -> Outcome {
    // spec: QX-LIMIT-6 — on the caller's own running job, so only the number is wrong.
    with_job(config, |peer, job| async move {
        for signal in [0, 65] {
            let msg = ClientMessage::Signal(SignalRequest { job, signal });
            if let Some(fail) = expect_invalid(&peer, &msg, &format!("signal {signal}")).await? {
                return Ok((peer, fail));
            }
        }
        Ok((
            peer,
            Outcome::pass("signals 0 and 65 answered InvalidArgument"),
        ))
    })
    .await
}

async fn limit_7(config: &Config) -> Outcome {
    // spec: QX-LIMIT-7
    refused(
        config,
        vec![(
            "timeout 30 days + 1 ms",
            with(|r| r.timeout_ms = Some(MAX_TIMEOUT_MS + 1)),
        )],
    )
    .await
}

async fn limit_8(config: &Config) -> Outcome {
    // spec: QX-LIMIT-8 — on the caller's own running job.
    with_job(config, |peer, job| async move {
        let msg = ClientMessage::Stop(StopRequest {
            job,
            grace_ms: Some(MAX_GRACE_MS + 1),
        });
        if let Some(fail) = expect_invalid(&peer, &msg, "grace 30 days + 1 ms").await? {
            return Ok((peer, fail));
        }
        let zero = ClientMessage::Stop(StopRequest {
            job,
            grace_ms: Some(0),
        });
        let out = match peer.ask(&zero).await?.as_slice() {
            [ServerMessage::Status(s)] if !s.state.is_running() => Outcome::pass(
                "grace 30 days + 1 ms answered InvalidArgument; grace 0 stopped the job",
            ),
            other => Outcome::fail(format!(
                "Stop with grace 0: expected the job's final Status, got {other:?}"
            )),
        };
        Ok((peer, out))
    })
    .await
}

async fn limit_10(config: &Config) -> Outcome {
    // spec: QX-LIMIT-10
    with_peer(config, |peer| async move {
        // 64 KiB accepted: `cat` echoes it back byte-exact.
        let mut req = start_req(&[b"cat"], true);
        req.stdin = true;
        let chunk: Vec<u8> = (0..MAX_STDIN_CHUNK).map(|i| (i % 251) as u8).collect();
        let mut bytes = frame::encode(&ClientMessage::Start(req.clone()))?;
        bytes.extend(frame::encode(&ClientMessage::StdinData(chunk.clone()))?);
        bytes.extend(frame::encode(&ClientMessage::StdinEof)?);
        let (mut send, _recv) = peer.open(&bytes).await?;
        send.finish()?;
        let out = peer.next_output().await?;
        if out.data != chunk {
            return Ok(Outcome::fail(format!(
                "cat of one 64 KiB StdinData returned {} bytes, not the same 65536",
                out.data.len()
            )));
        }
        // 64 KiB + 1 refused.
        let mut bytes = frame::encode(&ClientMessage::Start(req))?;
        bytes.extend(frame::encode(&ClientMessage::StdinData(vec![
            0;
            MAX_STDIN_CHUNK
                + 1
        ]))?);
        let (mut send, mut recv) = peer.open(&bytes).await?;
        let closed = wire::closed(&mut send, &mut recv, peer.wait).await;
        let want = u64::from(ErrorCode::ProtocolViolation.as_u32());
        Ok(if closed.stopped == Some(want) {
            Outcome::pass("64 KiB echoed byte-exact; 64 KiB + 1 → STOP_SENDING protocol_violation")
        } else {
            Outcome::fail(format!(
                "StdinData of 64 KiB + 1: expected STOP_SENDING protocol_violation, got {}",
                closed.describe()
            ))
        })
    })
    .await
}

async fn limit_11(config: &Config) -> Outcome {
    // spec: QX-LIMIT-11 — ~340 KB of output in as few writes as `seq` makes.
    with_peer(config, |peer| async move {
        peer.start(start_req(&[b"seq", b"1", b"60000"], true)).await?;
        let out = peer.next_output().await?;
        let biggest = out.chunks.iter().copied().max().unwrap_or(0);
        Ok(if out.data == seq_output(60000) && biggest <= 64 * 1024 {
            Outcome::pass(format!(
                "{} bytes in {} Data frames, the largest {biggest} bytes",
                out.data.len(),
                out.chunks.len()
            ))
        } else {
            Outcome::fail(format!(
                "expected seq's {} bytes in frames of at most 65536, got {} bytes, largest {biggest}",
                seq_output(60000).len(),
                out.data.len()
            ))
        })
    })
    .await
}

async fn limit_13(config: &Config) -> Outcome {
    // spec: QX-LIMIT-13
    refused(
        config,
        vec![
            (
                "pids 0",
                with(|r| {
                    r.limits = Limits {
                        pids: Some(0),
                        ..Limits::default()
                    }
                }),
            ),
            (
                "memory 0",
                with(|r| {
                    r.limits = Limits {
                        memory_bytes: Some(0),
                        ..Limits::default()
                    }
                }),
            ),
        ],
    )
    .await
}

async fn limit_17(config: &Config) -> Outcome {
    // spec: QX-LIMIT-17
    let memory = |bytes| {
        with(move |r| {
            r.limits = Limits {
                memory_bytes: Some(bytes),
                ..Limits::default()
            }
        })
    };
    refused(
        config,
        vec![
            ("memory 4096", memory(4096)),
            ("memory 4 MiB - 1", memory(MIN_MEMORY_BYTES - 1)),
        ],
    )
    .await
}

async fn limit_12(config: &Config) -> Outcome {
    // spec: QX-LIMIT-12 — 256 streams opened and kept open (one byte of a frame each),
    // then all abandoned.
    with_peer(config, |peer| async move {
        let mut open = Vec::with_capacity(256);
        for i in 0..256 {
            match peer.open(&[0x02]).await {
                Ok(s) => open.push(s),
                Err(e) => {
                    return Ok(Outcome::fail(format!(
                        "expected 256 concurrent control streams, the server granted {i}: {e:#}"
                    )));
                }
            }
        }
        let cancelled = quinn::VarInt::from_u32(ErrorCode::Cancelled.as_u32());
        for (mut send, mut recv) in open {
            let _ = send.reset(cancelled);
            let _ = recv.stop(cancelled);
        }
        peer.list().await?;
        Ok(Outcome::pass(
            "256 control streams open at once; a 257th works once they closed",
        ))
    })
    .await
}
