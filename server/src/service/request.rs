//! Per-stream request handling as plain functions (no I/O), so the fuzz target and
//! unit tests can drive it: decode → validate → authorize.
//!
//! The protocol crate is getting shared validation functions in parallel; until they
//! land, the limits below are checked here (private copies of spec QX-LIMIT-*).

use qexec_protocol::{ClientMessage, Decoder, ErrorCode, FrameError, JobId, StartRequest};

use super::authz::{Decision, Op, authorize};
use crate::pki::Identity;

/// Most argv entries of a start (spec: QX-LIMIT-*).
const MAX_ARGV: usize = 4096;
/// Most environment entries of a start.
const MAX_ENV: usize = 4096;
/// Most bytes of argv + env + cwd together.
const MAX_START_BYTES: usize = 512 * 1024;
/// Longest wall-clock timeout a start may ask for (30 days).
const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3600 * 1000;
/// Largest payload of one `StdinData` frame.
pub const MAX_STDIN_FRAME: usize = 64 * 1024;
/// Number of `ClientMessage` variants this version knows (their postcard
/// discriminants are 0..this).
const CLIENT_MESSAGE_VARIANTS: u64 = 8;

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

/// The first request bytes seen on a stream, kept to tell an unknown message variant
/// (`Unsupported`) from a malformed body (`ProtocolViolation`).
#[derive(Debug, Default)]
pub struct FrameHead {
    bytes: Vec<u8>,
}

impl FrameHead {
    const KEEP: usize = 12;

    /// Remembers the start of the stream.
    pub fn observe(&mut self, chunk: &[u8]) {
        let room = Self::KEEP.saturating_sub(self.bytes.len());
        self.bytes
            .extend_from_slice(&chunk[..room.min(chunk.len())]);
    }

    /// The postcard discriminant of the first frame's message, if its prefix and
    /// discriminant are both within the kept bytes.
    fn first_variant(&self) -> Option<u64> {
        let (_, prefix_len) = read_varint(&self.bytes)?;
        let (variant, _) = read_varint(&self.bytes[prefix_len..])?;
        Some(variant)
    }
}

fn read_varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(5) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

/// Maps a framing error on a control stream to the stream fault (spec: QX-FRAME-*):
/// oversized → `FrameTooLarge`; an unknown message variant in the request frame →
/// `Unsupported`; anything else → `ProtocolViolation`.
pub fn frame_fault(err: &FrameError, head: Option<&FrameHead>) -> StreamFault {
    match err {
        FrameError::TooLarge { .. } => StreamFault::new(ErrorCode::FrameTooLarge, err.to_string()),
        FrameError::BadBody(_)
            if head
                .and_then(FrameHead::first_variant)
                .is_some_and(|v| v >= CLIENT_MESSAGE_VARIANTS) =>
        {
            StreamFault::new(
                ErrorCode::Unsupported,
                "unknown request kind (message variant not known to this server)",
            )
        }
        _ => StreamFault::new(ErrorCode::ProtocolViolation, err.to_string()),
    }
}

/// Takes the first message of a control stream out of `decoder`: `Ok(None)` if more
/// bytes are needed.
pub fn decode_request(
    decoder: &mut Decoder,
    head: &FrameHead,
) -> Result<Option<ClientMessage>, StreamFault> {
    decoder
        .next::<ClientMessage>()
        .map_err(|e| frame_fault(&e, Some(head)))
}

/// The operation a first frame asks for; `StdinData`/`StdinEof` cannot open a stream
/// (spec: QX-STREAM-*).
pub fn op_of(msg: &ClientMessage) -> Result<Op, StreamFault> {
    Ok(match msg {
        ClientMessage::Start(_) => Op::Start,
        ClientMessage::Stop(_) => Op::Stop,
        ClientMessage::Status(_) => Op::Status,
        ClientMessage::List(_) => Op::List,
        ClientMessage::Attach(_) => Op::Follow,
        ClientMessage::Signal(_) => Op::Signal,
        ClientMessage::StdinData(_) | ClientMessage::StdinEof => {
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
        | ClientMessage::List(_)
        | ClientMessage::StdinData(_)
        | ClientMessage::StdinEof => None,
    }
}

fn invalid(message: String) -> Refusal {
    Refusal {
        code: ErrorCode::InvalidArgument,
        message,
    }
}

/// Checks a request's fields against the protocol limits (→ `InvalidArgument`).
pub fn validate(msg: &ClientMessage) -> Result<(), Refusal> {
    match msg {
        ClientMessage::Start(s) => validate_start(s),
        ClientMessage::Signal(s) if !(1..=64).contains(&s.signal) => Err(invalid(format!(
            "signal {} is out of range: give a Linux signal number 1..=64",
            s.signal
        ))),
        _ => Ok(()),
    }
}

fn validate_start(s: &StartRequest) -> Result<(), Refusal> {
    if s.argv.is_empty() || s.argv.len() > MAX_ARGV {
        return Err(invalid(format!(
            "argv has {} entries: give 1..={MAX_ARGV} (the program and its arguments)",
            s.argv.len()
        )));
    }
    if let Some(i) = s.argv.iter().position(|a| a.contains(&0)) {
        return Err(invalid(format!("argv[{i}] contains a NUL byte")));
    }
    if s.env.len() > MAX_ENV {
        return Err(invalid(format!(
            "env has {} entries: at most {MAX_ENV} are allowed",
            s.env.len()
        )));
    }
    for (i, (k, v)) in s.env.iter().enumerate() {
        if k.is_empty() || k.contains(&b'=') || k.contains(&0) {
            return Err(invalid(format!(
                "env[{i}] has an invalid name: names are non-empty, without '=' or NUL"
            )));
        }
        if v.contains(&0) {
            return Err(invalid(format!("env[{i}] value contains a NUL byte")));
        }
    }
    if let Some(cwd) = &s.cwd
        && (cwd.first() != Some(&b'/') || cwd.contains(&0))
    {
        return Err(invalid(
            "cwd must be an absolute path without NUL bytes".to_owned(),
        ));
    }
    let total: usize = s.argv.iter().map(Vec::len).sum::<usize>()
        + s.env.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        + s.cwd.as_ref().map_or(0, Vec::len);
    if total > MAX_START_BYTES {
        return Err(invalid(format!(
            "argv, env and cwd total {total} bytes: at most {MAX_START_BYTES} are allowed"
        )));
    }
    if s.timeout_ms.is_some_and(|t| t == 0 || t > MAX_TIMEOUT_MS) {
        return Err(invalid(format!(
            "timeout must be 1..={MAX_TIMEOUT_MS} ms (30 days)"
        )));
    }
    Ok(())
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
    let mut head = FrameHead::default();
    head.observe(bytes);
    decoder.push(bytes);
    let request = match decode_request(&mut decoder, &head) {
        Ok(Some(m)) => m,
        Ok(None) => return Verdict::NeedMore,
        Err(f) => return Verdict::Fault(f),
    };
    let op = match op_of(&request) {
        Ok(op) => op,
        Err(f) => return Verdict::Fault(f),
    };
    let stdin_follows = matches!(&request, ClientMessage::Start(s) if s.stdin);
    if !stdin_follows && decoder.buffered() > 0 {
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
    use qexec_protocol::{AttachRequest, Limits, ListRequest, SignalRequest, StatusRequest, frame};

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
        let mut head = FrameHead::default();
        head.observe(bytes);
        d.push(bytes);
        decode_request(&mut d, &head)
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
            let mut head = FrameHead::default();
            for (i, b) in bytes.iter().enumerate() {
                head.observe(&[*b]);
                d.push(&[*b]);
                let got = decode_request(&mut d, &head).unwrap();
                assert_eq!(got.is_some(), i + 1 == bytes.len());
                if let Some(got) = got {
                    assert_eq!(got, msg);
                    assert!(op_of(&got).is_ok());
                }
            }
        }
    }

    #[test]
    fn unknown_variant_is_unsupported_garbage_is_violation() {
        // Frame of 2 bytes: discriminant 200 (varint 0xc8 0x01).
        let err = decode_all(&[2, 0xc8, 0x01]).unwrap_err();
        assert_eq!(err.code, ErrorCode::Unsupported);
        // Discriminant 8 = first unknown one.
        assert_eq!(
            decode_all(&[1, 8]).unwrap_err().code,
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
    }

    #[test]
    fn stdin_cannot_open_a_stream() {
        for m in [ClientMessage::StdinEof, ClientMessage::StdinData(vec![1])] {
            assert_eq!(op_of(&m).unwrap_err().code, ErrorCode::ProtocolViolation);
        }
    }

    #[test]
    fn start_limits() {
        assert!(validate(&ClientMessage::Start(start(vec![b"x"]))).is_ok());
        let bad = [
            start(vec![]),
            start(vec![b"a\0b"]),
            {
                let mut s = start(vec![b"x"]);
                s.argv = vec![b"x".to_vec(); MAX_ARGV + 1];
                s
            },
            {
                let mut s = start(vec![b"x"]);
                s.env = vec![(b"A=B".to_vec(), b"v".to_vec())];
                s
            },
            {
                let mut s = start(vec![b"x"]);
                s.env = vec![(vec![], b"v".to_vec())];
                s
            },
            {
                let mut s = start(vec![b"x"]);
                s.env = vec![(b"A".to_vec(), b"v\0".to_vec())];
                s
            },
            {
                let mut s = start(vec![b"x"]);
                s.env = vec![(b"A".to_vec(), b"v".to_vec()); MAX_ENV + 1];
                s
            },
            {
                let mut s = start(vec![b"x"]);
                s.cwd = Some(b"relative".to_vec());
                s
            },
            {
                let mut s = start(vec![b"x"]);
                s.argv = vec![vec![b'a'; MAX_START_BYTES]];
                s.cwd = Some(b"/".to_vec());
                s
            },
            {
                let mut s = start(vec![b"x"]);
                s.timeout_ms = Some(MAX_TIMEOUT_MS + 1);
                s
            },
        ];
        for s in bad {
            let r = validate(&ClientMessage::Start(s.clone())).unwrap_err();
            assert_eq!(r.code, ErrorCode::InvalidArgument, "{s:?}");
        }
        let mut ok = start(vec![b"x"]);
        ok.argv = vec![vec![b'a'; MAX_START_BYTES - 1]];
        ok.cwd = Some(b"/".to_vec());
        assert!(validate(&ClientMessage::Start(ok)).is_ok());
    }

    #[test]
    fn signal_range() {
        let id = JobId::from_u128(1);
        for (sig, ok) in [(0, false), (1, true), (64, true), (65, false), (-9, false)] {
            let m = ClientMessage::Signal(SignalRequest {
                job: id,
                signal: sig,
            });
            assert_eq!(validate(&m).is_ok(), ok, "{sig}");
        }
    }

    #[test]
    fn process_runs_decode_validate_authorize() {
        use crate::pki::Role;
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
