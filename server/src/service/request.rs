//! Per-stream request handling as plain functions (no I/O), so the fuzz target and
//! unit tests can drive it: decode → check the stream state → validate → authorize.
//!
//! Framing, stream-state and field rules are the protocol crate's (`Decoder`,
//! `ControlStreamState`, `validate_request`): the server and the conformance suite
//! share one definition.

use qexec_protocol::{ClientMessage, ControlStreamState, Decoder, ErrorCode, FrameError, JobId};
use qexec_protocol::{StreamViolation, validate_request};

use super::authz::{Decision, Op, authorize};
use qexec_tls::Identity;

/// A frame-level failure: the stream is reset/stopped with `code` (only that stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamFault {
    /// The code for RESET_STREAM / STOP_SENDING.
    pub code: ErrorCode,
    /// What was wrong, for the log.
    pub reason: String,
}

impl StreamFault {
    fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// A request-level failure: answered with an `Error` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The code.
    pub code: ErrorCode,
    /// The message (what failed, on what, what to do).
    pub message: String,
}

/// The stream fault for a framing error (spec: QX-ERR-3): `FrameTooLarge`,
/// `Unsupported` (unknown message variant) or `ProtocolViolation`.
pub fn frame_fault(err: &FrameError) -> StreamFault {
    StreamFault::new(err.code(), err.to_string())
}

/// The stream fault for a frame the stream's state does not allow (spec: QX-STREAM-5
/// to QX-STREAM-8, QX-LIMIT-10).
pub fn state_fault(v: &StreamViolation) -> StreamFault {
    StreamFault::new(v.code(), v.to_string())
}

/// Takes the next client frame out of `decoder` and checks it against the stream's
/// state: `Ok(None)` if more bytes are needed.
pub fn next_client_frame(
    decoder: &mut Decoder,
    state: &mut ControlStreamState,
) -> Result<Option<ClientMessage>, StreamFault> {
    let Some(msg) = decoder
        .next::<ClientMessage>()
        .map_err(|e| frame_fault(&e))?
    else {
        return Ok(None);
    };
    state.on_frame(&msg).map_err(|v| state_fault(&v))?;
    Ok(Some(msg))
}

/// The operation a first frame asks for; `StdinData`/`StdinEof` cannot open a stream
/// (spec: QX-STREAM-*).
pub fn op_of(msg: &ClientMessage) -> Result<Op, StreamFault> {
    Ok(match msg {
        ClientMessage::Start(_) | ClientMessage::StartTerminal(_) => Op::Start,
        ClientMessage::Stop(_) => Op::Stop,
        ClientMessage::Status(_) => Op::Status,
        ClientMessage::List(_) | ClientMessage::ListQuery(_) => Op::List,
        ClientMessage::Attach(_) => Op::Follow,
        ClientMessage::Signal(_) => Op::Signal,
        ClientMessage::Info => Op::Info,
        ClientMessage::StdinData(_) | ClientMessage::StdinEof | ClientMessage::Resize(_) => {
            return Err(StreamFault::new(
                ErrorCode::ProtocolViolation,
                "stdin frame before any Start request",
            ));
        }
    })
}

/// The job a request targets, if any.
pub fn job_of(msg: &ClientMessage) -> Option<JobId> {
    match msg {
        ClientMessage::Stop(r) => Some(r.job),
        ClientMessage::Status(r) => Some(r.job),
        ClientMessage::Attach(r) => Some(r.job),
        ClientMessage::Signal(r) => Some(r.job),
        ClientMessage::Start(_)
        | ClientMessage::StartTerminal(_)
        | ClientMessage::List(_)
        | ClientMessage::ListQuery(_)
        | ClientMessage::Info
        | ClientMessage::StdinData(_)
        | ClientMessage::StdinEof
        | ClientMessage::Resize(_) => None,
    }
}

/// Checks a request's fields against the protocol limits (spec: QX-ERR-5, QX-LIMIT-*;
/// → `InvalidArgument`), before anything else, so the answer never depends on
/// whether a job exists.
pub fn validate(msg: &ClientMessage) -> Result<(), Refusal> {
    validate_request(msg).map_err(|e| Refusal {
        code: e.code(),
        message: e.to_string(),
    })
}

/// Authorizes `op` for `identity` and turns a refusal into its answer. `job` is the
/// job the request names (if any) and `owner` its owner (`None` when it does not
/// exist). `NotFound` is identical for missing and invisible jobs (spec: QX-AUTHZ-2).
pub fn decide(
    identity: &Identity,
    op: Op,
    job: Option<JobId>,
    owner: Option<&str>,
) -> Result<(), Refusal> {
    match (authorize(identity, op, owner), job) {
        (Decision::Allow, _) => Ok(()),
        (Decision::NotFound, Some(id)) => Err(Refusal {
            code: ErrorCode::NotFound,
            message: not_found_message(id),
        }),
        (Decision::NotFound, None) => Err(Refusal {
            code: ErrorCode::NotFound,
            message: "no such job is visible to you".to_owned(),
        }),
        (Decision::PermissionDenied, Some(id)) => Err(Refusal {
            code: ErrorCode::PermissionDenied,
            message: format!(
                "role {} may not {} job {id}; use a certificate whose role may",
                identity.role,
                op.name()
            ),
        }),
        (Decision::PermissionDenied, None) => Err(Refusal {
            code: ErrorCode::PermissionDenied,
            message: format!(
                "role {} may not {}; use a certificate with role user or admin",
                identity.role,
                op.name()
            ),
        }),
    }
}

/// What [`process`] made of a control stream's first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The request is not complete yet.
    NeedMore,
    /// Frame-level failure: reset/stop the stream with this code.
    Fault(StreamFault),
    /// Request-level failure: answer with this `Error`.
    Refused(Refusal),
    /// Valid and authorized.
    Accepted {
        /// The operation.
        op: Op,
        /// The request.
        request: ClientMessage,
    },
}

/// The whole per-stream request path as one pure function (fuzz entry point):
/// decode the first frame of `bytes`, validate it, authorize it for `identity` with
/// `owner_of` telling each job's owner (`None`: no such job). The server runs the
/// same steps incrementally as bytes arrive.
pub fn process(
    identity: &Identity,
    bytes: &[u8],
    owner_of: impl Fn(JobId) -> Option<String>,
) -> Verdict {
    let mut decoder = Decoder::new();
    let mut state = ControlStreamState::new();
    decoder.push(bytes);
    let request = match next_client_frame(&mut decoder, &mut state) {
        Ok(Some(m)) => m,
        Ok(None) => return Verdict::NeedMore,
        Err(f) => return Verdict::Fault(f),
    };
    let op = match op_of(&request) {
        Ok(op) => op,
        Err(f) => return Verdict::Fault(f),
    };
    if !matches!(state, ControlStreamState::Stdin) && decoder.buffered() > 0 {
        return Verdict::Fault(StreamFault::new(
            ErrorCode::ProtocolViolation,
            "bytes after the request on a control stream",
        ));
    }
    if let Err(r) = validate(&request) {
        return Verdict::Refused(r);
    }
    let job = job_of(&request);
    let owner = job.and_then(&owner_of);
    match decide(identity, op, job, owner.as_deref()) {
        Ok(()) => Verdict::Accepted { op, request },
        Err(r) => Verdict::Refused(r),
    }
}

/// The `NotFound` message, identical for a missing job and an invisible one.
pub fn not_found_message(job: JobId) -> String {
    format!("no job {job} is visible to you")
}

#[cfg(test)]
mod tests {
    use super::*;
    use qexec_protocol::{
        AttachRequest, Limits, ListRequest, SignalRequest, StartRequest, StatusRequest, frame,
    };

    fn start(argv: Vec<&[u8]>) -> StartRequest {
        StartRequest {
            argv: argv.into_iter().map(<[u8]>::to_vec).collect(),
            env: vec![],
            cwd: None,
            limits: Limits::default(),
            timeout_ms: None,
            stdin: false,
            follow: false,
            stop_on_detach: false,
        }
    }

    fn decode_all(bytes: &[u8]) -> Result<Option<ClientMessage>, StreamFault> {
        let mut d = Decoder::new();
        d.push(bytes);
        next_client_frame(&mut d, &mut ControlStreamState::new())
    }

    #[test]
    fn decodes_each_request_kind() {
        let id = JobId::from_u128(7);
        for msg in [
            ClientMessage::Start(start(vec![b"/bin/true"])),
            ClientMessage::Status(StatusRequest { job: id }),
            ClientMessage::List(ListRequest::default()),
            ClientMessage::Attach(AttachRequest { job: id, from: 3 }),
            ClientMessage::Signal(SignalRequest { job: id, signal: 9 }),
        ] {
            let bytes = frame::encode(&msg).unwrap();
            // Byte by byte: no message until the last byte.
            let mut d = Decoder::new();
            let mut state = ControlStreamState::new();
            for (i, b) in bytes.iter().enumerate() {
                d.push(&[*b]);
                let got = next_client_frame(&mut d, &mut state).unwrap();
                assert_eq!(got.is_some(), i + 1 == bytes.len());
                if let Some(got) = got {
                    assert_eq!(got, msg);
                    assert!(op_of(&got).is_ok());
                }
            }
        }
    }

    // spec: QX-ERR-3
    #[test]
    fn frame_faults_carry_the_spec_codes() {
        // Unknown message variant (discriminant 200, then 0x7f, one byte, far past the
        // last one).
        assert_eq!(
            decode_all(&[2, 0xc8, 0x01]).unwrap_err().code,
            ErrorCode::Unsupported
        );
        assert_eq!(
            decode_all(&[1, 0x7f]).unwrap_err().code,
            ErrorCode::Unsupported
        );
        // A known discriminant (Status = 2) with a truncated body.
        assert_eq!(
            decode_all(&[2, 2, 1]).unwrap_err().code,
            ErrorCode::ProtocolViolation
        );
        // Oversized declared length, refused from the prefix alone.
        assert_eq!(
            decode_all(&[0xff, 0xff, 0xff, 0x7f]).unwrap_err().code,
            ErrorCode::FrameTooLarge
        );
        // Stdin first (spec: QX-STREAM-5).
        let eof = frame::encode(&ClientMessage::StdinEof).unwrap();
        assert_eq!(
            decode_all(&eof).unwrap_err().code,
            ErrorCode::ProtocolViolation
        );
    }

    #[test]
    fn stdin_cannot_open_a_stream() {
        for m in [ClientMessage::StdinEof, ClientMessage::StdinData(vec![1])] {
            assert_eq!(op_of(&m).unwrap_err().code, ErrorCode::ProtocolViolation);
        }
    }

    // spec: QX-ERR-5 (the rules themselves are tested in the protocol crate)
    #[test]
    fn invalid_fields_are_invalid_argument() {
        assert!(validate(&ClientMessage::Start(start(vec![b"x"]))).is_ok());
        for bad in [
            ClientMessage::Start(start(vec![])),
            ClientMessage::Start(start(vec![b"a\0b"])),
            ClientMessage::Signal(SignalRequest {
                job: JobId::from_u128(1),
                signal: 65,
            }),
        ] {
            assert_eq!(validate(&bad).unwrap_err().code, ErrorCode::InvalidArgument);
        }
    }

    #[test]
    fn process_runs_decode_validate_authorize() {
        use qexec_tls::Role;
        let alice = Identity {
            name: "alice".into(),
            role: Role::User,
        };
        let viewer = Identity {
            name: "eve".into(),
            role: Role::Viewer,
        };
        let mine = JobId::from_u128(1);
        let bobs = JobId::from_u128(2);
        let missing = JobId::from_u128(3);
        let owner_of = |id: JobId| match id.as_u128() {
            1 => Some("alice".to_owned()),
            2 => Some("bob".to_owned()),
            _ => None,
        };
        let status = |job| frame::encode(&ClientMessage::Status(StatusRequest { job })).unwrap();
        assert!(matches!(
            process(&alice, &status(mine), owner_of),
            Verdict::Accepted { op: Op::Status, .. }
        ));
        // Invisible and missing: the same answer but for the echoed id.
        let (Verdict::Refused(a), Verdict::Refused(b)) = (
            process(&alice, &status(bobs), owner_of),
            process(&alice, &status(missing), owner_of),
        ) else {
            panic!("expected refusals");
        };
        assert_eq!(a.code, ErrorCode::NotFound);
        assert_eq!(
            a.message.replace(&bobs.to_string(), "ID"),
            b.message.replace(&missing.to_string(), "ID")
        );
        // Viewer: start denied, status of anyone's job allowed.
        let start_bytes = frame::encode(&ClientMessage::Start(start(vec![b"/bin/true"]))).unwrap();
        match process(&viewer, &start_bytes, owner_of) {
            Verdict::Refused(r) => assert_eq!(r.code, ErrorCode::PermissionDenied),
            v => panic!("{v:?}"),
        }
        assert!(matches!(
            process(&viewer, &status(bobs), owner_of),
            Verdict::Accepted { .. }
        ));
        // Validation before authorization; partial input; garbage.
        let bad_signal = frame::encode(&ClientMessage::Signal(SignalRequest {
            job: mine,
            signal: 0,
        }))
        .unwrap();
        match process(&alice, &bad_signal, owner_of) {
            Verdict::Refused(r) => assert_eq!(r.code, ErrorCode::InvalidArgument),
            v => panic!("{v:?}"),
        }
        let s = status(mine);
        assert_eq!(
            process(&alice, &s[..s.len() - 1], owner_of),
            Verdict::NeedMore
        );
        assert!(matches!(
            process(&alice, &[3, 0xff, 0xff, 0xff], owner_of),
            Verdict::Fault(_)
        ));
        let mut two = s.clone();
        two.extend_from_slice(&s);
        assert!(matches!(process(&alice, &two, owner_of), Verdict::Fault(_)));
    }
}
