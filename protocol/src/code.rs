//! Stable numeric error codes (spec: QX-ERR-*).

use serde::Serialize;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, EnumAccess, VariantAccess};

/// An error code, used in error responses and as the QUIC application error code
/// when a stream is reset or a connection is closed.
///
/// The numbers are part of the protocol and never change meaning (spec: QX-ERR-1).
/// A receiver handles numbers it does not know as [`ErrorCode::Internal`]
/// ([`ErrorCode::from_wire`]); [`ErrorCode::from_u32`] tells whether a number is known.
///
/// On the wire (postcard) a code is a varint: its number, which is also its variant
/// index. Decoding a number this version does not know yields
/// [`ErrorCode::Internal`] instead of failing (spec: QX-ERR-2, QX-VER-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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

    /// The code for a number received from a peer (a QUIC application error code of a
    /// stream reset, STOP_SENDING or connection close, or the code of an error
    /// response): a number this version does not know is handled as
    /// [`ErrorCode::Internal`] (spec: QX-ERR-2, QX-VER-5).
    pub fn from_wire(v: u64) -> Self {
        u32::try_from(v)
            .ok()
            .and_then(Self::from_u32)
            .unwrap_or(Self::Internal)
    }

    /// The code with this Rust variant name (as serde's text formats spell it).
    fn from_variant_name(name: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .zip(VARIANT_NAMES)
            .find_map(|(c, n)| (n.as_bytes() == name).then_some(c))
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

/// Rust variant names, in numeric order (serde's names for the variants).
const VARIANT_NAMES: [&str; 14] = [
    "NoError",
    "ProtocolViolation",
    "FrameTooLarge",
    "Unsupported",
    "Unauthenticated",
    "NotFound",
    "PermissionDenied",
    "InvalidArgument",
    "ResourceExhausted",
    "SpawnFailed",
    "Internal",
    "Cancelled",
    "Timeout",
    "ShuttingDown",
];

// Written by hand rather than derived so that an unknown number decodes as `Internal`
// (spec: QX-ERR-2) instead of making the whole frame undecodable. The encoding of
// known codes is exactly the derived one: a unit variant whose index is the number.
impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EnumVisitor;
        impl<'de> de::Visitor<'de> for EnumVisitor {
            type Value = ErrorCode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a qexec error code")
            }
            fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<ErrorCode, A::Error> {
                let (code, variant) = data.variant_seed(Index)?;
                variant.unit_variant()?;
                Ok(code)
            }
        }

        /// The variant identifier: a number (binary formats) or a name (text formats).
        struct Index;
        impl<'de> DeserializeSeed<'de> for Index {
            type Value = ErrorCode;
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ErrorCode, D::Error> {
                d.deserialize_identifier(self)
            }
        }
        impl de::Visitor<'_> for Index {
            type Value = ErrorCode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an error code number or name")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ErrorCode, E> {
                Ok(ErrorCode::from_wire(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ErrorCode, E> {
                self.visit_bytes(v.as_bytes())
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ErrorCode, E> {
                Ok(ErrorCode::from_variant_name(v).unwrap_or(ErrorCode::Internal))
            }
        }

        deserializer.deserialize_enum("ErrorCode", &VARIANT_NAMES, EnumVisitor)
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

    #[test]
    fn unknown_numbers_are_internal() {
        // spec: QX-ERR-2
        assert_eq!(ErrorCode::from_wire(5), ErrorCode::NotFound);
        assert_eq!(ErrorCode::from_wire(14), ErrorCode::Internal);
        assert_eq!(ErrorCode::from_wire(u64::MAX), ErrorCode::Internal);
        assert_eq!(
            ErrorCode::from_variant_name(b"Timeout"),
            Some(ErrorCode::Timeout)
        );
    }

    #[test]
    fn postcard_encoding_is_the_number() {
        // spec: QX-ERR-1, QX-MSG-ERR-1
        for c in ErrorCode::ALL {
            let bytes = postcard::to_stdvec(&c).unwrap();
            assert_eq!(bytes, [c.as_u32() as u8]);
            assert_eq!(postcard::from_bytes::<ErrorCode>(&bytes).unwrap(), c);
        }
        // 200 as a varint: an unknown code decodes as Internal.
        assert_eq!(
            postcard::from_bytes::<ErrorCode>(&[0xc8, 0x01]).unwrap(),
            ErrorCode::Internal
        );
    }
}
