//! Message semantics and request-level errors (spec: QX-MSG-*, QX-ERR-4/5/9,
//! QX-SEC-5/8).

use qexec_protocol::{
    AttachRequest, ClientMessage, ErrorCode, JobId, JobState, ServerMessage, SignalRequest,
    SpawnFailure, StatusRequest, StopReason, StopRequest, Termination, frame,
};

use super::frames::with_peer;
use super::wire::{self, Answer, Peer, start_req};
use super::{Check, Config, Outcome, check};

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "QX-MSG-ENC-4",
            "the server's frames are byte-identical to the reference encoding (minimal \
             varints, declared field order)",
            enc_4
        ),
        check!(
            "QX-MSG-ENC-3",
            "argv and output are byte strings: invalid UTF-8 runs and comes back byte-exact",
            enc_3
        ),
        check!("QX-MSG-ID-1", "every job gets a new id, never reused", id_1),
        check!(
            "QX-MSG-CTRL-1",
            "a job gets exactly the env given (plus PATH if none), cwd / by default; a missing \
             program is SpawnFailed",
            ctrl_1
        ),
        check!(
            "QX-MSG-CTRL-2",
            "Stop answers the ended job's Status, Stopped { Requested { by: caller } }; a \
             second Stop answers it unchanged",
            ctrl_2
        ),
        check!(
            "QX-MSG-CTRL-3",
            "Status of the caller's job describes it: id, owner, argv, Running, pid",
            ctrl_3
        ),
        check!(
            "QX-MSG-CTRL-4",
            "List: oldest first, running_only leaves out ended jobs",
            ctrl_4
        ),
        check!(
            "QX-MSG-CTRL-5",
            "Attach to an ended job sends its stored output and End",
            ctrl_5
        ),
        check!(
            "QX-MSG-CTRL-6",
            "Signal delivers the signal to the job's main process and answers Status",
            ctrl_6
        ),
        check!(
            "QX-MSG-CTRL-7",
            "StdinData frames reach the job's stdin in order, byte-exact",
            ctrl_7
        ),
        check!("QX-MSG-CTRL-8", "StdinEof closes the job's stdin", ctrl_8),
        check!(
            "QX-MSG-SRV-1",
            "Started carries the job's id and the host pid its Status reports",
            srv_1
        ),
        check!(
            "QX-MSG-SRV-6",
            "spawn is set exactly with SpawnFailed (a missing program: NotFound)",
            srv_6
        ),
        check!(
            "QX-ERR-4",
            "a request-level failure is one Error frame then FIN, never a reset",
            err_4
        ),
        check!(
            "QX-ERR-5",
            "validation comes before the job lookup: a bad field on a missing job is \
             InvalidArgument, not NotFound",
            err_5
        ),
        check!("QX-ERR-9", "error messages are at most 4 KiB", err_9),
        check!(
            "QX-SEC-5",
            "argv is executed directly: shell syntax reaches the program as bytes",
            sec_5
        ),
        check!(
            "QX-SEC-8",
            "offsets near u64::MAX are handled: Attach from u64::MAX gives Header then End",
            sec_8
        ),
    ]
}

/// Starts `argv` with `follow` and reads its whole output stream.
async fn run(peer: &Peer, argv: &[&[u8]]) -> anyhow::Result<(JobId, wire::Output)> {
    let (started, _) = peer.start(start_req(argv, true)).await?;
    Ok((started.job, peer.next_output().await?))
}

async fn enc_4(config: &Config) -> Outcome {
    // spec: QX-MSG-ENC-4, QX-MSG-ENC-1, QX-MSG-ENC-2
    with_peer(config, |peer| async move {
        peer.start(start_req(&[b"true"], false)).await?;
        let mut checked = 0;
        for msg in [
            wire::list_msg(),
            ClientMessage::Status(StatusRequest {
                job: JobId::from_u128(77),
            }),
        ] {
            let Answer::Frames { msgs, raw } = peer.request(&msg).await? else {
                anyhow::bail!("no answer to {msg:?}");
            };
            let mut again = Vec::new();
            for m in &msgs {
                frame::encode_into(m, &mut again)?;
            }
            if again != raw {
                return Ok(Outcome::fail(format!(
                    "the answer to {} is {} bytes, its reference encoding {} bytes: not canonical",
                    qexec_protocol::client_message_name(&msg),
                    raw.len(),
                    again.len()
                )));
            }
            checked += msgs.len();
        }
        Ok(Outcome::pass(format!(
            "{checked} frames (ListItem, ListEnd, Error) re-encode to the same bytes"
        )))
    })
    .await
}

async fn enc_3(config: &Config) -> Outcome {
    // spec: QX-MSG-ENC-3
    with_peer(config, |peer| async move {
        let arg: &[u8] = b"\xff\xfe\x80 ok \xc3\x28";
        let (job, out) = run(&peer, &[b"echo", arg]).await?;
        let mut want = arg.to_vec();
        want.push(b'\n');
        let status = peer.status(job).await?;
        Ok(
            if out.data == want && status.argv.get(1).map(Vec::as_slice) == Some(arg) {
                Outcome::pass("echo of invalid UTF-8 came back byte-exact; Status.argv too")
            } else {
                Outcome::fail(format!(
                    "expected output {want:02x?} and argv[1] {arg:02x?}, got {:02x?} and {:02x?}",
                    out.data,
                    status.argv.get(1)
                ))
            },
        )
    })
    .await
}

async fn id_1(config: &Config) -> Outcome {
    // spec: QX-MSG-ID-1 — randomness is not observable; uniqueness is.
    with_peer(config, |peer| async move {
        let mut ids = Vec::new();
        for _ in 0..8 {
            ids.push(peer.start(start_req(&[b"true"], false)).await?.0.job);
        }
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        Ok(
            if sorted.len() == ids.len() && !ids.contains(&JobId::from_u128(0)) {
                Outcome::pass("8 starts, 8 distinct non-zero ids")
            } else {
                Outcome::fail(format!("ids repeat: {ids:?}"))
            },
        )
    })
    .await
}

async fn ctrl_1(config: &Config) -> Outcome {
    // spec: QX-MSG-CTRL-1
    with_peer(config, |peer| async move {
        let mut req = start_req(&[b"env"], true);
        req.env = vec![
            (b"A".to_vec(), b"1".to_vec()),
            (b"PATH".to_vec(), b"/usr/bin:/bin".to_vec()),
        ];
        peer.start(req).await?;
        let env = peer.next_output().await?;
        if env.data != b"A=1\nPATH=/usr/bin:/bin\n" {
            return Ok(Outcome::fail(format!(
                "env with A=1 and PATH printed {:?}, expected exactly those two",
                String::from_utf8_lossy(&env.data)
            )));
        }
        let mut req = start_req(&[b"/bin/sh", b"-c", b"pwd; echo \"$PATH\""], true);
        req.env.clear();
        peer.start(req).await?;
        let pwd = peer.next_output().await?;
        let text = String::from_utf8_lossy(&pwd.data).into_owned();
        let mut lines = text.lines();
        if lines.next() != Some("/") || lines.next().is_none_or(str::is_empty) {
            return Ok(Outcome::fail(format!(
                "with no cwd and no env: expected cwd / and a default PATH, got {text:?}"
            )));
        }
        Ok(Outcome::pass(
            "env is exactly what was given; default cwd /, default PATH added when none given",
        ))
    })
    .await
}

async fn ctrl_2(config: &Config) -> Outcome {
    // spec: QX-MSG-CTRL-2
    with_peer(config, |peer| async move {
        let (started, _) = peer.start(start_req(&[b"sleep", b"30"], false)).await?;
        let first = peer.stop(started.job).await?;
        let by_me = matches!(
            &first.state,
            JobState::Stopped { reason: StopReason::Requested { by }, .. } if by == &first.owner
        );
        if !by_me || first.ended_at_ms.is_none() {
            return Ok(Outcome::fail(format!(
                "expected Stopped {{ Requested {{ by: {} }} }} with an end time, got {:?}",
                first.owner, first.state
            )));
        }
        let second = peer.stop(started.job).await?;
        Ok(
            if second.state == first.state && second.ended_at_ms == first.ended_at_ms {
                Outcome::pass(format!(
                    "Stopped {{ Requested {{ by: {} }} }}; a second Stop answered the same status",
                    first.owner
                ))
            } else {
                Outcome::fail(format!(
                    "a second Stop changed the status: {:?} → {:?}",
                    first.state, second.state
                ))
            },
        )
    })
    .await
}

async fn ctrl_3(config: &Config) -> Outcome {
    // spec: QX-MSG-CTRL-3, QX-MSG-SRV-2
    with_peer(config, |peer| async move {
        let (started, _) = peer.start(start_req(&[b"sleep", b"30"], false)).await?;
        let s = peer.status(started.job).await?;
        peer.stop(started.job).await?;
        let argv: Vec<Vec<u8>> = vec![b"sleep".to_vec(), b"30".to_vec()];
        Ok(
            if s.id == started.job
                && s.argv == argv
                && s.state.is_running()
                && s.pid == Some(started.pid)
                && !s.owner.is_empty()
                && s.ended_at_ms.is_none()
            {
                Outcome::pass(format!(
                    "Status {{ id, owner: {}, argv, Running, pid }}",
                    s.owner
                ))
            } else {
                Outcome::fail(format!("Status of a running sleep 30: {s:?}"))
            },
        )
    })
    .await
}

async fn ctrl_4(config: &Config) -> Outcome {
    // spec: QX-MSG-CTRL-4
    with_peer(config, |peer| async move {
        let (done, _) = peer.start(start_req(&[b"true"], false)).await?;
        peer.wait_ended(done.job).await?;
        let (running, _) = peer.start(start_req(&[b"sleep", b"30"], false)).await?;
        let all = peer.list().await?;
        let only = match peer
            .ask(&ClientMessage::List(qexec_protocol::ListRequest { running_only: true }))
            .await?
            .as_slice()
        {
            [items @ .., ServerMessage::ListEnd] => items
                .iter()
                .filter_map(|m| match m {
                    ServerMessage::ListItem(s) => Some(s.id),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            other => anyhow::bail!("List answered {other:?}"),
        };
        peer.stop(running.job).await?;
        let pos = |id| all.iter().position(|s| s.id == id);
        // spec: QX-LIST-1 — the order is the server's sequence number, which may
        // differ from `started_at_ms` for concurrent starts: only these two jobs,
        // started one after the other, are compared.
        let ordered = matches!((pos(done.job), pos(running.job)), (Some(a), Some(b)) if a < b);
        Ok(
            if ordered && only.contains(&running.job) && !only.contains(&done.job) {
                Outcome::pass("oldest first; running_only listed the running job, not the ended one")
            } else {
                Outcome::fail(format!(
                    "ordered oldest first: {}; running_only has the running job: {}, the ended one: {}",
                    ordered,
                    only.contains(&running.job),
                    only.contains(&done.job)
                ))
            },
        )
    })
    .await
}

async fn ctrl_5(config: &Config) -> Outcome {
    // spec: QX-MSG-CTRL-5
    with_peer(config, |peer| async move {
        let (job, first) = run(&peer, &[b"echo", b"stored"]).await?;
        let msg = ClientMessage::Attach(AttachRequest { job, from: 0 });
        peer.ask(&msg).await?;
        let again = peer.next_output().await?;
        Ok(
            if again.data == first.data && again.status == first.status {
                Outcome::pass("Attach after the end: the same bytes and the same final status")
            } else {
                Outcome::fail(format!(
                    "Attach after the end gave {:?}, the live stream gave {:?}",
                    String::from_utf8_lossy(&again.data),
                    String::from_utf8_lossy(&first.data)
                ))
            },
        )
    })
    .await
}

async fn ctrl_6(config: &Config) -> Outcome {
    // spec: QX-MSG-CTRL-6
    with_peer(config, |peer| async move {
        let (started, _) = peer.start(start_req(&[b"sleep", b"30"], false)).await?;
        let msg = ClientMessage::Signal(SignalRequest {
            job: started.job,
            signal: 15,
        });
        match peer.ask(&msg).await?.as_slice() {
            [ServerMessage::Status(_)] => {}
            other => return Ok(Outcome::fail(format!("Signal answered {other:?}"))),
        }
        let end = peer.wait_ended(started.job).await?;
        Ok(match end.state.termination() {
            Some(Termination::Signaled(15)) => {
                Outcome::pass("Signal 15 answered Status; the job ended Signaled(15)")
            }
            _ => Outcome::fail(format!(
                "after Signal 15 expected the job to end Signaled(15), got {:?}",
                end.state
            )),
        })
    })
    .await
}

/// Runs `cat` with `chunks` as StdinData frames then StdinEof; its output.
async fn cat(peer: &Peer, chunks: &[Vec<u8>]) -> anyhow::Result<wire::Output> {
    let mut req = start_req(&[b"cat"], true);
    req.stdin = true;
    let mut bytes = frame::encode(&ClientMessage::Start(req))?;
    for c in chunks {
        frame::encode_into(&ClientMessage::StdinData(c.clone()), &mut bytes)?;
    }
    frame::encode_into(&ClientMessage::StdinEof, &mut bytes)?;
    let (mut send, _recv) = peer.open(&bytes).await?;
    send.finish()?;
    peer.next_output().await
}

async fn ctrl_7(config: &Config) -> Outcome {
    // spec: QX-MSG-CTRL-7
    with_peer(config, |peer| async move {
        let chunks: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
        let out = cat(&peer, &chunks).await?;
        let want = chunks.concat();
        Ok(if out.data == want {
            Outcome::pass(format!(
                "20 StdinData frames, {} bytes echoed in order",
                want.len()
            ))
        } else {
            Outcome::fail(format!(
                "cat echoed {} bytes that differ from the {} sent",
                out.data.len(),
                want.len()
            ))
        })
    })
    .await
}

async fn ctrl_8(config: &Config) -> Outcome {
    // spec: QX-MSG-CTRL-8
    with_peer(config, |peer| async move {
        let out = cat(&peer, &[]).await?;
        Ok(
            match (out.data.is_empty(), out.status.state.termination()) {
                (true, Some(Termination::Exited(0))) => {
                    Outcome::pass("StdinEof alone: cat saw end of input and exited 0")
                }
                _ => Outcome::fail(format!(
                    "expected cat to exit 0 with no output, got {:?} and {} bytes",
                    out.status.state,
                    out.data.len()
                )),
            },
        )
    })
    .await
}

async fn srv_1(config: &Config) -> Outcome {
    // spec: QX-MSG-SRV-1
    with_peer(config, |peer| async move {
        let (started, _) = peer.start(start_req(&[b"sleep", b"30"], false)).await?;
        let status = peer.status(started.job).await?;
        peer.stop(started.job).await?;
        Ok(
            if status.id == started.job && status.pid == Some(started.pid) && started.pid > 0 {
                Outcome::pass(format!("Started pid {} equals Status pid", started.pid))
            } else {
                Outcome::fail(format!(
                    "Started {{ job: {}, pid: {} }} but Status has {{ id: {}, pid: {:?} }}",
                    started.job, started.pid, status.id, status.pid
                ))
            },
        )
    })
    .await
}

async fn srv_6(config: &Config) -> Outcome {
    // spec: QX-MSG-SRV-6
    with_peer(config, |peer| async move {
        let missing = peer
            .request(&ClientMessage::Start(start_req(
                &[b"/nonexistent/qexec-conformance"],
                false,
            )))
            .await?;
        match missing.error() {
            Some(e)
                if e.code == ErrorCode::SpawnFailed && e.spawn == Some(SpawnFailure::NotFound) => {}
            _ => {
                return Ok(Outcome::fail(format!(
                    "a missing program: expected Error SpawnFailed with spawn NotFound, got {}",
                    missing.describe()
                )));
            }
        }
        let other = peer
            .request(&ClientMessage::Status(StatusRequest {
                job: JobId::from_u128(5),
            }))
            .await?;
        Ok(match other.error() {
            Some(e) if e.spawn.is_none() => {
                Outcome::pass("SpawnFailed with spawn NotFound; NotFound without spawn")
            }
            _ => Outcome::fail(format!(
                "a NotFound answer must not carry spawn, got {other:?}"
            )),
        })
    })
    .await
}

async fn err_4(config: &Config) -> Outcome {
    // spec: QX-ERR-4 — read_answer reports a reset as such.
    with_peer(config, |peer| async move {
        let msg = ClientMessage::Stop(StopRequest {
            job: JobId::from_u128(6),
            grace_ms: None,
        });
        let answer = peer.request(&msg).await?;
        Ok(match &answer {
            Answer::Frames { msgs, .. } if matches!(msgs.as_slice(), [ServerMessage::Error(_)]) => {
                Outcome::pass(format!("{}, then FIN", answer.describe()))
            }
            other => Outcome::fail(format!(
                "expected one Error frame then FIN, got {}",
                other.describe()
            )),
        })
    })
    .await
}

async fn err_5(config: &Config) -> Outcome {
    // spec: QX-ERR-5
    with_peer(config, |peer| async move {
        let job = JobId::from_u128(0x5eed);
        for msg in [
            ClientMessage::Signal(SignalRequest { job, signal: 0 }),
            ClientMessage::Stop(StopRequest {
                job,
                grace_ms: Some(qexec_protocol::limits::MAX_GRACE_MS + 1),
            }),
        ] {
            let answer = peer.request(&msg).await?;
            if !answer
                .error()
                .is_some_and(|e| e.code == ErrorCode::InvalidArgument)
            {
                return Ok(Outcome::fail(format!(
                    "{} with a bad field on a missing job: expected InvalidArgument, got {}",
                    qexec_protocol::client_message_name(&msg),
                    answer.describe()
                )));
            }
        }
        Ok(Outcome::pass(
            "Signal 0 and Stop with grace > 30 days on a missing job: InvalidArgument",
        ))
    })
    .await
}

async fn err_9(config: &Config) -> Outcome {
    // spec: QX-ERR-9 — UTF-8 is guaranteed by decoding (a String).
    with_peer(config, |peer| async move {
        let long = vec![b'x'; 100_000];
        let mut worst = 0;
        for msg in [
            ClientMessage::Status(StatusRequest {
                job: JobId::from_u128(8),
            }),
            ClientMessage::Start(start_req(
                &[b"/nonexistent/qexec-conformance", &long],
                false,
            )),
            ClientMessage::Start({
                let mut r = start_req(&[b"true"], false);
                let mut name = long.clone();
                name.push(b'=');
                r.env.push((name, b"1".to_vec()));
                r
            }),
        ] {
            let answer = peer.request(&msg).await?;
            let Some(e) = answer.error() else {
                return Ok(Outcome::fail(format!(
                    "expected an Error, got {}",
                    answer.describe()
                )));
            };
            worst = worst.max(e.message.len());
        }
        Ok(if worst <= 4096 {
            Outcome::pass(format!("the longest of 3 error messages is {worst} bytes"))
        } else {
            Outcome::fail(format!("an error message of {worst} bytes exceeds 4 KiB"))
        })
    })
    .await
}

async fn sec_5(config: &Config) -> Outcome {
    // spec: QX-SEC-5
    with_peer(config, |peer| async move {
        let arg: &[u8] = b"$(id); `id` | * > /x";
        let (_, out) = run(&peer, &[b"echo", arg]).await?;
        let mut want = arg.to_vec();
        want.push(b'\n');
        Ok(if out.data == want {
            Outcome::pass("shell syntax in argv was printed literally")
        } else {
            Outcome::fail(format!(
                "expected {:?}, got {:?}",
                String::from_utf8_lossy(&want),
                String::from_utf8_lossy(&out.data)
            ))
        })
    })
    .await
}

async fn sec_8(config: &Config) -> Outcome {
    // spec: QX-SEC-8
    with_peer(config, |peer| async move {
        let (job, _) = run(&peer, &[b"echo", b"x"]).await?;
        let msg = ClientMessage::Attach(AttachRequest {
            job,
            from: u64::MAX,
        });
        peer.ask(&msg).await?;
        let out = peer.next_output().await?;
        peer.list().await?;
        Ok(if out.from == u64::MAX && out.data.is_empty() {
            Outcome::pass(
                "Attach from u64::MAX: Header from u64::MAX, End; the server still answers",
            )
        } else {
            Outcome::fail(format!(
                "expected Header from u64::MAX and no data, got from {} and {} bytes",
                out.from,
                out.data.len()
            ))
        })
    })
    .await
}
