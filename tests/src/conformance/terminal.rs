//! Terminal-job checks (spec: QX-TERM-1 to QX-TERM-8): `StartTerminal`, keystrokes and
//! `Resize` on its control stream, and what the job sees.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use qexec_protocol::{
    ClientMessage, ErrorCode, JobId, JobState, OutputFrame, OutputStream, ServerMessage,
    StartTerminalRequest, TerminalSpec, Termination, WindowSize, frame,
};
use quinn::{RecvStream, SendStream};

use super::frames::with_peer;
use super::wire::{self, Peer, code_name, start_req};
use super::{Check, Config, Outcome, check};

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "QX-TERM-1",
            "StartTerminal is answered Started; the job's 0, 1 and 2 are a terminal, its \
             output is Stdout data, its exit code is reported",
            term_1
        ),
        check!(
            "QX-TERM-3",
            "Resize after a Start (not StartTerminal) → STOP_SENDING ProtocolViolation",
            term_3
        ),
        check!(
            "QX-TERM-4",
            "a bad terminal type or size → Error InvalidArgument; a Resize with 0 rows → \
             STOP_SENDING ProtocolViolation",
            term_4
        ),
        check!("QX-TERM-6", "TERM is the request's terminal type", term_6),
        check!(
            "QX-TERM-7",
            "the initial size is the job's; a Resize reaches it as SIGWINCH with the new size",
            term_7
        ),
    ]
}

const SIZE: WindowSize = WindowSize {
    rows: 24,
    cols: 80,
    width_px: 0,
    height_px: 0,
};

fn terminal_msg(argv: &[&[u8]], term: &str, size: WindowSize) -> ClientMessage {
    ClientMessage::StartTerminal(StartTerminalRequest {
        start: start_req(argv, true),
        terminal: TerminalSpec {
            term: term.to_owned(),
            size,
        },
    })
}

/// Sends a `StartTerminal` of `sh -c script` and checks it is `Started`; the stream is
/// left open for keystrokes and resizes.
async fn start_terminal(
    peer: &Peer,
    script: &str,
    term: &str,
) -> anyhow::Result<(SendStream, RecvStream, JobId)> {
    let msg = terminal_msg(&[b"sh", b"-c", script.as_bytes()], term, SIZE);
    let (send, mut recv) = peer.open(&frame::encode(&msg)?).await?;
    match wire::read_answer(&mut recv, peer.wait)
        .await
        .checked(&msg)?
        .as_slice()
    {
        [ServerMessage::Started(s)] => Ok((send, recv, s.job)),
        other => bail!("StartTerminal answered {other:?}"),
    }
}

/// An output stream read frame by frame.
struct Screen {
    recv: RecvStream,
    decoder: frame::Decoder,
    text: Vec<u8>,
    streams: Vec<OutputStream>,
    wait: Duration,
}

impl Screen {
    async fn open(peer: &Peer) -> anyhow::Result<Self> {
        let recv = tokio::time::timeout(peer.wait, peer.conn.accept_uni())
            .await
            .map_err(|_| anyhow!("the server opened no output stream"))??;
        Ok(Self {
            recv,
            decoder: frame::Decoder::new(),
            text: Vec::new(),
            streams: Vec::new(),
            wait: peer.wait,
        })
    }

    /// Reads until `needle` was shown (`Ok(None)`) or the job ended (its state).
    async fn until(&mut self, needle: Option<&str>) -> anyhow::Result<Option<JobState>> {
        let read = async {
            loop {
                while let Some(f) = self.decoder.next::<OutputFrame>()? {
                    match f {
                        OutputFrame::Data { stream, data, .. } => {
                            self.streams.push(stream);
                            self.text.extend_from_slice(&data);
                        }
                        OutputFrame::End { status } => return Ok(Some(status.state)),
                        OutputFrame::Header { .. } => {}
                    }
                }
                if let Some(n) = needle
                    && String::from_utf8_lossy(&self.text).contains(n)
                {
                    return Ok(None);
                }
                match self.recv.read_chunk(64 * 1024, true).await? {
                    Some(c) => self.decoder.push(&c.bytes),
                    None => bail!("the output stream ended without End"),
                }
            }
        };
        tokio::time::timeout(self.wait * 3, read)
            .await
            .map_err(|_| anyhow!("no {needle:?} and no End within {:?}", self.wait * 3))?
    }

    fn shown(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }
}

fn exited(code: i32) -> JobState {
    JobState::Exited {
        termination: Termination::Exited(code),
    }
}

async fn term_1(config: &Config) -> Outcome {
    // spec: QX-TERM-1, QX-TERM-5, QX-TERM-8
    with_peer(config, |peer| async move {
        let script = "for fd in 0 1 2; do test -t $fd || exit 9; done; echo on-a-tty; exit 4";
        let (mut send, _recv, _) = start_terminal(&peer, script, "xterm").await?;
        let mut screen = Screen::open(&peer).await?;
        let state = screen.until(None).await?.context("End")?;
        let _ = send.write_all(&frame::encode(&ClientMessage::StdinEof)?).await;
        let _ = send.finish();
        let all_stdout = screen.streams.iter().all(|s| *s == OutputStream::Stdout);
        Ok(
            if state == exited(4) && screen.shown() == "on-a-tty\r\n" && all_stdout {
                Outcome::pass("Started; \"on-a-tty\\r\\n\" as Stdout data; Exited(4)")
            } else {
                Outcome::fail(format!(
                    "expected Stdout \"on-a-tty\\r\\n\" and Exited(4), got {:?} ({:?}) and {state:?}",
                    screen.shown(),
                    screen.streams
                ))
            },
        )
    })
    .await
}

/// Writes `bytes` on `send` (unfinished) and expects STOP_SENDING ProtocolViolation.
async fn expect_stopped(send: &mut SendStream, bytes: &[u8], wait: Duration) -> Outcome {
    let _ = send.write_all(bytes).await;
    let stopped = tokio::time::timeout(wait, send.stopped()).await;
    let want = u64::from(ErrorCode::ProtocolViolation.as_u32());
    match stopped {
        Ok(Ok(Some(code))) if code.into_inner() == want => {
            Outcome::pass("STOP_SENDING protocol_violation")
        }
        Ok(Ok(Some(code))) => Outcome::fail(format!(
            "expected STOP_SENDING protocol_violation, got {}",
            code_name(code.into_inner())
        )),
        other => Outcome::fail(format!(
            "expected STOP_SENDING protocol_violation, got {other:?}"
        )),
    }
}

async fn term_3(config: &Config) -> Outcome {
    // spec: QX-TERM-3 — Resize belongs to a StartTerminal's stream only.
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
        let outcome = expect_stopped(
            &mut send,
            &frame::encode(&ClientMessage::Resize(SIZE))?,
            peer.wait,
        )
        .await;
        peer.stop(started.job).await?;
        Ok(outcome)
    })
    .await
}

async fn term_4(config: &Config) -> Outcome {
    // spec: QX-TERM-4
    with_peer(config, |peer| async move {
        let zero = WindowSize { rows: 0, ..SIZE };
        let too_wide = WindowSize {
            cols: qexec_protocol::limits::MAX_TERMINAL_CELLS + 1,
            ..SIZE
        };
        let long = "x".repeat(qexec_protocol::limits::MAX_TERM_NAME + 1);
        for (name, msg) in [
            ("empty TERM", terminal_msg(&[b"true"], "", SIZE)),
            (
                "TERM with a space",
                terminal_msg(&[b"true"], "x term", SIZE),
            ),
            ("65-byte TERM", terminal_msg(&[b"true"], &long, SIZE)),
            ("0 rows", terminal_msg(&[b"true"], "xterm", zero)),
            ("4097 columns", terminal_msg(&[b"true"], "xterm", too_wide)),
        ] {
            let answer = peer.request(&msg).await?;
            if answer.error().map(|e| e.code) != Some(ErrorCode::InvalidArgument) {
                return Ok(Outcome::fail(format!(
                    "{name}: expected Error InvalidArgument, got {}",
                    answer.describe()
                )));
            }
        }
        let (mut send, _recv, job) = start_terminal(&peer, "exec sleep 30", "xterm").await?;
        let bad = frame::encode(&ClientMessage::Resize(zero))?;
        let outcome = expect_stopped(&mut send, &bad, peer.wait).await;
        peer.stop(job).await?;
        Ok(match outcome {
            Outcome::Pass(_) => Outcome::pass(
                "empty, spaced and 65-byte TERM, 0 rows, 4097 columns → InvalidArgument; \
                 Resize to 0 rows → STOP_SENDING protocol_violation",
            ),
            other => other,
        })
    })
    .await
}

async fn term_6(config: &Config) -> Outcome {
    // spec: QX-TERM-6
    with_peer(config, |peer| async move {
        let (_send, _recv, _) = start_terminal(&peer, "echo TERM=$TERM", "vt220").await?;
        let mut screen = Screen::open(&peer).await?;
        let state = screen.until(None).await?.context("End")?;
        Ok(
            if state == exited(0) && screen.shown() == "TERM=vt220\r\n" {
                Outcome::pass("TERM=vt220")
            } else {
                Outcome::fail(format!(
                    "expected \"TERM=vt220\\r\\n\", got {:?} and {state:?}",
                    screen.shown()
                ))
            },
        )
    })
    .await
}

async fn term_7(config: &Config) -> Outcome {
    // spec: QX-TERM-7
    with_peer(config, |peer| async move {
        let script = "trap 'stty size; kill $! 2>/dev/null; exit 0' WINCH; stty size; \
                      sleep 30 & wait";
        let (mut send, _recv, _) = start_terminal(&peer, script, "xterm").await?;
        let mut screen = Screen::open(&peer).await?;
        if let Some(state) = screen.until(Some("24 80\r\n")).await? {
            return Ok(Outcome::fail(format!(
                "expected the initial size \"24 80\", got {:?} then {state:?}",
                screen.shown()
            )));
        }
        let new = WindowSize {
            rows: 50,
            cols: 132,
            width_px: 0,
            height_px: 0,
        };
        send.write_all(&frame::encode(&ClientMessage::Resize(new))?)
            .await?;
        let state = screen.until(None).await?.context("End")?;
        let _ = send
            .write_all(&frame::encode(&ClientMessage::StdinEof)?)
            .await;
        let _ = send.finish();
        Ok(
            if state == exited(0) && screen.shown() == "24 80\r\n50 132\r\n" {
                Outcome::pass("\"24 80\", then after Resize the SIGWINCH trap printed \"50 132\"")
            } else {
                Outcome::fail(format!(
                    "expected \"24 80\\r\\n50 132\\r\\n\" and Exited(0), got {:?} and {state:?}",
                    screen.shown()
                ))
            },
        )
    })
    .await
}
