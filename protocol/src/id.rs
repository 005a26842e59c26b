//! Job identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A job identifier: 128 random bits chosen by the server (spec: QX-MSG-ID-1).
///
/// Its text form is exactly 32 lowercase hexadecimal digits (spec: QX-MSG-ID-2);
/// parsing also accepts uppercase digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub [u8; 16]);

impl JobId {
    /// Builds an id from its 128-bit value.
    pub const fn from_u128(v: u128) -> Self {
        Self(v.to_be_bytes())
    }

    /// The id as a 128-bit value.
    pub const fn as_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// Whether the id's text form starts with `prefix`, compared without regard to
    /// case; a prefix that is not 0 to 32 hexadecimal digits matches nothing
    /// (spec: QX-MSG-ID-2, QX-LIMIT-15).
    pub fn has_prefix(&self, prefix: &str) -> bool {
        if prefix.len() > 32 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        self.to_string()
            .as_bytes()
            .iter()
            .zip(prefix.as_bytes())
            .all(|(a, b)| *a == b.to_ascii_lowercase())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.as_u128())
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

/// The text given is not 32 hexadecimal digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job id {text:?}: expected 32 hexadecimal digits")]
pub struct ParseJobIdError {
    /// The rejected text (truncated to 64 characters).
    pub text: String,
}

impl FromStr for JobId {
    type Err = ParseJobIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseJobIdError {
            text: s.chars().take(64).collect(),
        };
        if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(err());
        }
        u128::from_str_radix(s, 16)
            .map(Self::from_u128)
            .map_err(|_| err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips() {
        let id = JobId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let text = id.to_string();
        assert_eq!(text, "0123456789abcdef0011223344556677");
        assert_eq!(text.parse::<JobId>().unwrap(), id);
        assert_eq!(text.to_uppercase().parse::<JobId>().unwrap(), id);
    }

    #[test]
    fn prefixes_match_the_text_form() {
        let id = JobId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert!(id.has_prefix(""));
        assert!(id.has_prefix("0123"));
        assert!(id.has_prefix("0123456789ABCDEF"));
        assert!(id.has_prefix("0123456789abcdef0011223344556677"));
        assert!(!id.has_prefix("0124"));
        assert!(!id.has_prefix("0123456789abcdef00112233445566770"));
        assert!(!id.has_prefix("01g3"));
        assert!(!id.has_prefix("+123"));
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "",
            "0123",
            "+123456789abcdef0011223344556677",
            "g123456789abcdef0011223344556677",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
    }
}
