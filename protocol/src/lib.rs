//! The qexec wire protocol, sans-IO.
//!
//! This crate holds every message qexec peers exchange, the stable error codes, and
//! the framing that turns messages into bytes on a QUIC stream and back. It performs
//! no I/O and reads no clocks: the server and client crates own sockets and time.
//! The normative description is `spec/protocol.md`; items here cite its requirement
//! ids (`QX-…`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bytes;
mod code;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod id;
pub mod limits;
mod message;
mod state;
pub mod units;
mod validate;

pub use code::ErrorCode;
pub use frame::{
    BodyError, Decoder, EncodeError, FrameError, MAX_FRAME_LEN, MAX_PREFIX_LEN, MAX_WIRE_FRAME_LEN,
    decode_body, encode, encode_data_head, encode_into,
};
pub use id::{JobId, ParseJobIdError};
pub use message::{
    AttachRequest, ClientMessage, ErrorResponse, JobState, JobStatus, Limits, ListEntry, ListQuery,
    ListRequest, ListStateFilter, OutputFrame, OutputStream, ResourceUsage, ServerInfo,
    ServerMessage, SignalRequest, SpawnFailure, StartRequest, StartTerminalRequest,
    StartedResponse, StatusRequest, StopReason, StopRequest, TerminalSpec, Termination, WindowSize,
};
pub use state::{
    ControlStreamState, OutputStreamState, ResponseState, StreamViolation, client_message_name,
    output_frame_name, server_message_name,
};
pub use validate::{
    Field, InvalidRequest, Rule, command_bytes, validate_limits, validate_list_query,
    validate_request, validate_signal, validate_start, validate_stop, validate_terminal,
    validate_window_size,
};

/// ALPN protocol identifier; the digit is the major protocol version
/// (spec: QX-TRANS-3, QX-VER-1).
pub const ALPN: &[u8] = b"qexec/1";
