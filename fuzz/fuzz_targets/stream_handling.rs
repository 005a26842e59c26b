//! Drives the server's per-stream request handling in-process, the way a control-stream
//! task does: bytes arrive in arbitrary pieces → decode the first frame → refuse stdin as
//! a first frame → validate → authorize, for an arbitrary identity and job owner; then
//! the frames that may follow go through the control-stream state machine.
//!
//! Input layout: byte 0 = identity (role, name), byte 1 = job owner (none, the caller,
//! another user), byte 2 = piece-size seed, the rest = the bytes of one control stream.
//!
//! Invariants checked (a panic is a finding):
//! - decoding in pieces and in one push gives the same request or the same stream fault
//!   (spec: QX-FRAME-1, QX-FRAME-5);
//! - a stream fault's code is one of ProtocolViolation, FrameTooLarge, Unsupported
//!   (spec: QX-ERR-3);
//! - StdinData/StdinEof never open a stream (spec: QX-STREAM-5);
//! - the server's validation agrees with the protocol crate's (spec: QX-LIMIT-*);
//! - a job the caller may not see is refused exactly like a missing one (NotFound,
//!   never PermissionDenied), and a viewer is never allowed to change anything.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qexec_protocol::{ClientMessage, ControlStreamState, Decoder, ErrorCode, validate_request};
use qexec_server::pki::{Identity, Role};
use qexec_server::service::request::{self, FrameHead, StreamFault};
use qexec_server::service::{Decision, Op, authorize};

/// Decodes the first frame of `stream`, pushed in pieces sized from `seed` (0 = one push).
fn first_frame(seed: u8, stream: &[u8]) -> (Result<Option<ClientMessage>, StreamFault>, Decoder) {
    let mut decoder = Decoder::new();
    let mut head = FrameHead::default();
    let mut rest = stream;
    let mut size = usize::from(seed % 17).max(1);
    loop {
        let n = if seed == 0 { rest.len() } else { size.min(rest.len()) };
        let (piece, tail) = rest.split_at(n);
        head.observe(piece);
        decoder.push(piece);
        rest = tail;
        match request::decode_request(&mut decoder, &head) {
            Ok(None) if !rest.is_empty() => {}
            Ok(None) => {
                let r = decoder
                    .finish()
                    .map(|()| None)
                    .map_err(|e| request::frame_fault(&e, Some(&head)));
                return (r, decoder);
            }
            other => return (other, decoder),
        }
        size = size % 7 + 1;
    }
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
        _ => Some(format!("{}-other", identity.name)),
    };

    let (pieces, mut decoder) = first_frame(*seed, stream);
    let (whole, _) = first_frame(0, stream);
    assert_eq!(pieces, whole, "decoding in pieces changed the outcome");

    let msg = match pieces {
        Ok(Some(m)) => m,
        Ok(None) => return,
        Err(fault) => {
            assert!(
                matches!(
                    fault.code,
                    ErrorCode::ProtocolViolation | ErrorCode::FrameTooLarge | ErrorCode::Unsupported
                ),
                "stream fault with code {:?}",
                fault.code
            );
            return;
        }
    };
    let op = match request::op_of(&msg) {
        Ok(op) => op,
        Err(fault) => {
            assert!(matches!(msg, ClientMessage::StdinData(_) | ClientMessage::StdinEof));
            assert_eq!(fault.code, ErrorCode::ProtocolViolation);
            return;
        }
    };
    assert!(!matches!(msg, ClientMessage::StdinData(_) | ClientMessage::StdinEof));

    let server = request::validate(&msg);
    let protocol = validate_request(&msg);
    assert_eq!(
        server.is_ok(),
        protocol.is_ok(),
        "server and protocol validation disagree on {msg:?}: {server:?} vs {protocol:?}"
    );
    if let Err(r) = &server {
        assert_eq!(r.code, ErrorCode::InvalidArgument);
        return;
    }

    let decision = authorize(&identity, op, owner.as_deref());
    if op.on_job() {
        let foreign = owner.as_deref().is_some_and(|o| o != identity.name);
        if owner.is_none() || (foreign && role == Role::User) {
            assert_eq!(decision, Decision::NotFound, "{role:?} {op:?} owner {owner:?}");
        }
        if foreign && role == Role::User {
            assert_eq!(decision, authorize(&identity, op, None));
        }
    }
    if role == Role::Viewer && matches!(op, Op::Start | Op::Stop | Op::Signal | Op::Stdin) {
        assert_ne!(decision, Decision::Allow, "viewer allowed to {op:?}");
    }

    // The frames after the request, through the shared state machine.
    let mut state = ControlStreamState::new();
    assert!(state.on_frame(&msg).is_ok());
    loop {
        match decoder.next::<ClientMessage>() {
            Ok(Some(m)) => {
                if state.on_frame(&m).is_err() {
                    break;
                }
            }
            Ok(None) => {
                let _ = decoder.finish().map(|()| state.on_finish());
                break;
            }
            Err(e) => {
                let _ = request::frame_fault(&e, None);
                break;
            }
        }
    }
});
