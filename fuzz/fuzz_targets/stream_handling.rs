//! Drives the server's per-stream request handling in-process: the bytes of one
//! control stream, arriving in arbitrary pieces, through decode → validate → authorize
//! (`qexec_server::service::request::{process, next_client_frame}`) for an arbitrary
//! identity and job owner.
//!
//! Input: byte 0 = identity (role, name), byte 1 = owner of every job the request
//! names (none, the caller, another user), byte 2 = piece-size seed, rest = stream.
//!
//! Invariants (a panic is a finding):
//! - decoding in pieces and in one push reach the same first request or the same fault
//!   code (spec: QX-FRAME-1, QX-FRAME-5), and `process` agrees with the pieces;
//! - a fault's code is ProtocolViolation, FrameTooLarge or Unsupported (QX-ERR-3), and
//!   is Unsupported exactly when the protocol decoder says "unknown variant" (QX-VER-3);
//! - StdinData/StdinEof/Resize never open a stream (QX-STREAM-5);
//! - nothing invalid is accepted (`qexec_protocol::validate_request`, QX-LIMIT-*);
//! - an invisible job is refused exactly like a missing one (QX-ERR-6), a viewer never
//!   changes anything (QX-ERR-7), every refusal is InvalidArgument, NotFound or
//!   PermissionDenied.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qexec_protocol::{
    ClientMessage, ControlStreamState, Decoder, ErrorCode, FrameError, validate_request,
};
use qexec_server::service::request::{self, Verdict};
use qexec_server::service::{Op, authorize};
use qexec_tls::{Identity, Role};

/// The first request of `stream` pushed in pieces sized from `seed`, the way the
/// server's stream task reads it: the request, the fault code, or `None` if the
/// stream holds no whole request. Then the rest of the stream (stdin frames, FIN)
/// goes through the same state machine.
fn pieces(seed: u8, stream: &[u8]) -> Result<Option<ClientMessage>, ErrorCode> {
    let mut decoder = Decoder::new();
    let mut state = ControlStreamState::new();
    let mut size = usize::from(seed % 13) + 1;
    let mut first = None;
    let mut rest = stream;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        decoder.push(piece);
        loop {
            match request::next_client_frame(&mut decoder, &mut state) {
                Ok(None) => break,
                Ok(Some(m)) if first.is_none() => first = Some(m),
                Ok(Some(_)) => {}
                Err(f) if first.is_none() => return Err(f.code),
                // A fault after the request: the server stops the stream there.
                Err(f) => {
                    assert!(matches!(
                        f.code,
                        ErrorCode::ProtocolViolation
                            | ErrorCode::FrameTooLarge
                            | ErrorCode::Unsupported
                    ));
                    return Ok(first);
                }
            }
        }
        size = size % 5 + 1;
    }
    if first.is_some() && decoder.finish().is_ok() {
        let _ = state.on_finish();
    }
    Ok(first)
}

fuzz_target!(|data: &[u8]| {
    let [who, owner, seed, stream @ ..] = data else {
        return;
    };
    let role = Role::ALL[usize::from(who % 3)];
    let identity = Identity {
        name: if who & 4 == 0 { "alice" } else { "bob" }.to_owned(),
        role,
    };
    let owner = match owner % 3 {
        0 => None,
        1 => Some(identity.name.clone()),
        _ => Some(format!("{}x", identity.name)),
    };

    let verdict = request::process(&identity, stream, |_| owner.clone());
    let split = pieces(*seed, stream);

    // What the protocol's own decoder makes of the first frame.
    let mut reference = Decoder::new();
    reference.push(stream);
    let reference = reference.next::<ClientMessage>();

    match &verdict {
        Verdict::NeedMore => assert_eq!(split, Ok(None), "process needs more, pieces did not"),
        Verdict::Fault(f) => {
            assert!(
                matches!(
                    f.code,
                    ErrorCode::ProtocolViolation
                        | ErrorCode::FrameTooLarge
                        | ErrorCode::Unsupported
                ),
                "fault code {:?}",
                f.code
            );
            let unknown = matches!(reference, Err(FrameError::UnknownVariant));
            assert_eq!(
                f.code == ErrorCode::Unsupported,
                unknown,
                "Unsupported iff unknown variant: {f:?} vs {reference:?}"
            );
            match &split {
                Err(code) => assert_eq!(*code, f.code),
                // The fault came after the request: bytes after it.
                Ok(Some(_)) => assert_eq!(f.code, ErrorCode::ProtocolViolation),
                Ok(None) => panic!("process found a fault, pieces found nothing: {f:?}"),
            }
        }
        Verdict::Refused(_) | Verdict::Accepted { .. } if !matches!(split, Ok(Some(_))) => {
            panic!("process decoded a request, pieces did not: {verdict:?} vs {split:?}")
        }
        Verdict::Refused(r) => {
            assert!(
                matches!(
                    r.code,
                    ErrorCode::InvalidArgument | ErrorCode::NotFound | ErrorCode::PermissionDenied
                ),
                "refusal code {:?}",
                r.code
            );
        }
        Verdict::Accepted { op, request } => {
            assert!(!matches!(
                request,
                ClientMessage::StdinData(_) | ClientMessage::StdinEof | ClientMessage::Resize(_)
            ));
            assert!(
                validate_request(request).is_ok(),
                "accepted an invalid request: {request:?}"
            );
            if role == Role::Viewer {
                assert!(
                    matches!(op, Op::List | Op::Status | Op::Follow | Op::Info),
                    "viewer allowed to {op:?}"
                );
            }
            if op.on_job() {
                let foreign = owner.as_deref().is_some_and(|o| o != identity.name);
                assert!(owner.is_some(), "{op:?} allowed on a missing job");
                assert!(
                    !(foreign && role == Role::User),
                    "user allowed {op:?} on another user's job"
                );
            }
        }
    }

    let Ok(Some(msg)) = &split else { return };
    // The server's validation is the protocol's.
    assert_eq!(
        request::validate(msg).is_ok(),
        validate_request(msg).is_ok()
    );
    // The NotFound rule, straight from the authorization function.
    if let Ok(op) = request::op_of(msg)
        && op.on_job()
        && role == Role::User
    {
        let foreign = format!("{}x", identity.name);
        assert_eq!(
            authorize(&identity, op, Some(&foreign)),
            authorize(&identity, op, None)
        );
        if let Some(job) = request::job_of(msg) {
            let a = request::decide(&identity, op, Some(job), Some(&foreign));
            let b = request::decide(&identity, op, Some(job), None);
            assert_eq!(a, b, "invisible and missing job answered differently");
        }
    }
});
