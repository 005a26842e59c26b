//! Framing: a LEB128 varint length prefix followed by a postcard body
//! (spec: QX-FRAME-*).

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest body a frame may carry, in bytes (spec: QX-FRAME-2).
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Longest varint length prefix: `MAX_FRAME_LEN` fits in 3 bytes, but up to 5 bytes
/// (a u32) are read before deciding (spec: QX-FRAME-1).
const MAX_PREFIX_LEN: usize = 5;

/// Why bytes could not be turned into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix declares more than [`MAX_FRAME_LEN`] bytes.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Declared length.
        len: u64,
        /// The maximum.
        max: usize,
    },
    /// The length prefix is not a valid varint (too long, or not minimal).
    #[error("malformed frame length prefix")]
    BadLength,
    /// The body is not a valid postcard encoding of the expected message.
    #[error("malformed frame body: {0}")]
    BadBody(String),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the incomplete frame that were received.
        buffered: usize,
    },
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded body would exceed [`MAX_FRAME_LEN`].
    #[error("message of {len} bytes exceeds the maximum frame size of {max} bytes")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// postcard refused the value.
    #[error("cannot encode message: {0}")]
    Serialize(String),
}

/// Encodes one message as a whole frame, appending it to `out`.
pub fn encode_into<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let body = postcard::to_stdvec(msg).map_err(|e| EncodeError::Serialize(e.to_string()))?;
    if body.len() > MAX_FRAME_LEN {
        return Err(EncodeError::TooLarge {
            len: body.len(),
            max: MAX_FRAME_LEN,
        });
    }
    let mut len = body.len() as u32;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&body);
    Ok(())
}

/// Encodes one message as a whole frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Parses a length prefix at the start of `buf`: `Ok(None)` if more bytes are needed,
/// else the body length and the prefix length.
fn parse_prefix(buf: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(MAX_PREFIX_LEN) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                return Err(FrameError::BadLength);
            }
            if value > MAX_FRAME_LEN as u64 {
                return Err(FrameError::TooLarge {
                    len: value,
                    max: MAX_FRAME_LEN,
                });
            }
            return Ok(Some((value as usize, i + 1)));
        }
        // Checked before the whole prefix arrives, so nothing is buffered for it.
        if value > MAX_FRAME_LEN as u64 {
            return Err(FrameError::TooLarge {
                len: value,
                max: MAX_FRAME_LEN,
            });
        }
    }
    if buf.len() >= MAX_PREFIX_LEN {
        Err(FrameError::BadLength)
    } else {
        Ok(None)
    }
}

/// An incremental decoder: feed bytes in any pieces, take whole messages out.
///
/// After an error the decoder is poisoned and returns the same error again: the
/// stream cannot be resynchronised (spec: QX-FRAME-5).
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    error: Option<FrameError>,
}

impl Decoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes buffered but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Takes the next whole message, `Ok(None)` if more bytes are needed.
    pub fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.next_inner();
        if let Err(e) = &result {
            self.error = Some(e.clone());
            self.buf = Vec::new();
        }
        result
    }

    fn next_inner<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let Some((len, prefix)) = parse_prefix(&self.buf)? else {
            return Ok(None);
        };
        if self.buf.len() < prefix + len {
            return Ok(None);
        }
        let body = &self.buf[prefix..prefix + len];
        let msg = match postcard::take_from_bytes::<T>(body) {
            // Trailing bytes make the frame malformed: postcard would ignore them.
            Ok((_, rest)) if !rest.is_empty() => {
                return Err(FrameError::BadBody(format!(
                    "{} trailing bytes after message",
                    rest.len()
                )));
            }
            Ok((m, _)) => m,
            Err(e) => return Err(FrameError::BadBody(e.to_string())),
        };
        self.buf.drain(..prefix + len);
        Ok(Some(msg))
    }

    /// Call when the stream ended: an error if a partial frame is buffered.
    pub fn finish(&self) -> Result<(), FrameError> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None if self.buf.is_empty() => Ok(()),
            None => Err(FrameError::Truncated {
                buffered: self.buf.len(),
            }),
        }
    }
}
