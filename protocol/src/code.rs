//! Stable numeric error codes (spec: QX-ERR-*).

use serde::{Deserialize, Serialize};

/// An error code, used in error responses and as the QUIC application error code
/// when a stream is reset or a connection is closed.
///
/// The numbers are part of the protocol and never change meaning (spec: QX-ERR-1).
/// A receiver maps numbers it does not know to [`ErrorCode::Unknown`]-like handling
/// by keeping the raw value (see [`ErrorCode::from_u32`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
#[repr(u32)]
pub enum ErrorCode {
    /// No error: normal close.
    NoError = 0,
    /// The peer broke a rule of the protocol (wrong message for the stream state,
    /// undecodable frame, message on the wrong stream kind).
    ProtocolViolation = 1,
    /// A frame's declared length exceeds the maximum frame size.
    FrameTooLarge = 2,
    /// A well-formed request the receiver does not implement (unknown message kind).
    Unsupported = 3,
    /// The peer did not present a verified identity.
    Unauthenticated = 4,
    /// The job does not exist, or is not visible to the caller (indistinguishable).
    NotFound = 5,
    /// The caller's role does not allow this operation.
    PermissionDenied = 6,
    /// A field is out of range or malformed (empty argv, limit above the server maximum…).
    InvalidArgument = 7,
    /// A server limit was reached (jobs, streams, connections, per-user jobs).
    ResourceExhausted = 8,
    /// The job's program could not be started.
    SpawnFailed = 9,
    /// An unexpected server-side failure.
    Internal = 10,
    /// The operation was cancelled by the peer (subscription ended, stream abandoned).
    Cancelled = 11,
    /// The peer took too long to send a complete request.
    Timeout = 12,
    /// The server is shutting down.
    ShuttingDown = 13,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 14] = [
        Self::NoError,
        Self::ProtocolViolation,
        Self::FrameTooLarge,
        Self::Unsupported,
        Self::Unauthenticated,
        Self::NotFound,
        Self::PermissionDenied,
        Self::InvalidArgument,
        Self::ResourceExhausted,
        Self::SpawnFailed,
        Self::Internal,
        Self::Cancelled,
        Self::Timeout,
        Self::ShuttingDown,
    ];

    /// The wire number of this code.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// The code with this wire number, if it is one this version knows.
    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.get(usize::try_from(v).ok()?).copied()
    }

    /// A short lowercase name, as used in logs and `--json` output.
    pub const fn name(self) -> &'static str {
        match self {
            Self::NoError => "no_error",
            Self::ProtocolViolation => "protocol_violation",
            Self::FrameTooLarge => "frame_too_large",
            Self::Unsupported => "unsupported",
            Self::Unauthenticated => "unauthenticated",
            Self::NotFound => "not_found",
            Self::PermissionDenied => "permission_denied",
            Self::InvalidArgument => "invalid_argument",
            Self::ResourceExhausted => "resource_exhausted",
            Self::SpawnFailed => "spawn_failed",
            Self::Internal => "internal",
            Self::Cancelled => "cancelled",
            Self::Timeout => "timeout",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_stable_and_dense() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(c.as_u32() as usize, i);
            assert_eq!(ErrorCode::from_u32(c.as_u32()), Some(*c));
        }
        assert_eq!(ErrorCode::from_u32(ErrorCode::ALL.len() as u32), None);
    }
}
