//! Framing: a LEB128 varint length prefix followed by a postcard body
//! (spec: QX-FRAME-*).
//!
//! [`encode`]/[`encode_into`] turn one message into one frame. [`Decoder`] takes the
//! bytes of a stream in whatever pieces they arrive and hands back whole messages.
//! Neither does I/O.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ErrorCode;

/// Largest body a frame may carry, in bytes (spec: QX-FRAME-2).
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Longest length prefix, in bytes: a minimal LEB128 encoding of [`MAX_FRAME_LEN`]
/// takes 3 bytes, so a prefix whose third byte has the continuation bit set declares
/// a frame that is too large or is not minimal (spec: QX-FRAME-1, QX-FRAME-2).
pub const MAX_PREFIX_LEN: usize = 3;

/// Longest frame on the wire: prefix plus the largest body.
pub const MAX_WIRE_FRAME_LEN: usize = MAX_PREFIX_LEN + MAX_FRAME_LEN;

/// Once this many consumed bytes sit at the front of the decoder's buffer they are
/// dropped, so a long run of small frames does not move the buffer once per frame.
const COMPACT_THRESHOLD: usize = 4096;

/// Buffer capacity a decoder keeps once it has returned everything it held; above
/// it the buffer is freed (one max-size frame must not pin 1 MiB per idle stream).
const RETAIN_CAPACITY: usize = 128 * 1024;

/// Why bytes could not be turned into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length prefix declares more than [`MAX_FRAME_LEN`] bytes
    /// (spec: QX-FRAME-2).
    #[error(
        "frame of {len} bytes exceeds the maximum of {max} bytes; split the data into \
         smaller messages"
    )]
    TooLarge {
        /// Declared length; for a prefix refused before its last byte, a lower bound.
        len: u64,
        /// The maximum.
        max: usize,
    },
    /// The length prefix is not a minimal LEB128 varint: its last byte is 0 and not
    /// its only byte (spec: QX-FRAME-1).
    #[error(
        "malformed frame length prefix: not a minimal varint; the peer does not speak \
         qexec framing"
    )]
    BadLength,
    /// The body is not a valid postcard encoding of the expected message
    /// (spec: QX-FRAME-3, QX-FRAME-4).
    #[error("malformed frame body: {0}; the peer sent a message this receiver cannot decode")]
    BadBody(BodyError),
    /// The body names an enum variant (message kind, state, reason…) this version of
    /// the protocol does not know: the peer speaks a later revision of the same major
    /// version (spec: QX-VER-3).
    #[error(
        "frame carries a message variant this receiver does not know (the peer speaks a \
         newer revision of qexec/1); upgrade this side or avoid the new feature"
    )]
    UnknownVariant,
    /// The stream ended inside a frame (spec: QX-FRAME-6).
    #[error("stream ended inside a frame ({buffered} bytes buffered); the peer cut it short")]
    Truncated {
        /// Bytes of the incomplete frame that were received.
        buffered: usize,
    },
}

impl FrameError {
    /// The error code a receiver uses to reset or stop the stream this error happened
    /// on (spec: QX-ERR-3).
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::TooLarge { .. } => ErrorCode::FrameTooLarge,
            Self::UnknownVariant => ErrorCode::Unsupported,
            Self::BadLength | Self::BadBody(_) | Self::Truncated { .. } => {
                ErrorCode::ProtocolViolation
            }
        }
    }
}

/// What exactly is wrong with a frame body (postcard's classification, plus the
/// checks qexec adds on top).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The body ended before the message did.
    #[error("body ends in the middle of the message")]
    UnexpectedEnd,
    /// A varint is longer than its type allows or overflows it.
    #[error("bad varint")]
    BadVarint,
    /// A boolean byte other than 0 or 1.
    #[error("bad boolean (not 0 or 1)")]
    BadBool,
    /// A string is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    BadUtf8,
    /// An option tag other than 0 or 1.
    #[error("bad option tag (not 0 or 1)")]
    BadOption,
    /// An enum discriminant does not fit in a u32.
    #[error("enum discriminant does not fit in 32 bits")]
    BadEnum,
    /// Bytes remain in the frame after the message (spec: QX-FRAME-4).
    #[error("{count} trailing bytes after the message")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// Any other postcard failure (none is expected for qexec's message types).
    #[error("postcard rejected the body ({0:?})")]
    Postcard(postcard::Error),
}

impl BodyError {
    fn from_postcard(e: postcard::Error) -> Self {
        match e {
            postcard::Error::DeserializeUnexpectedEnd => Self::UnexpectedEnd,
            postcard::Error::DeserializeBadVarint => Self::BadVarint,
            postcard::Error::DeserializeBadBool => Self::BadBool,
            postcard::Error::DeserializeBadUtf8 => Self::BadUtf8,
            postcard::Error::DeserializeBadOption => Self::BadOption,
            postcard::Error::DeserializeBadEnum => Self::BadEnum,
            other => Self::Postcard(other),
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded body would exceed [`MAX_FRAME_LEN`] (spec: QX-FRAME-2).
    #[error(
        "message of {len} bytes exceeds the maximum frame size of {max} bytes; send the \
         data in smaller pieces"
    )]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// postcard refused the value (not expected for qexec's message types).
    #[error("cannot encode message: postcard failed ({0:?})")]
    Serialize(postcard::Error),
}

/// A postcard output that appends to a borrowed `Vec`, so encoding needs no
/// intermediate buffer.
struct AppendFlavor<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendFlavor<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Writes `len` as a minimal LEB128 varint into `buf`, returning how many bytes it took.
fn write_prefix(mut len: usize, buf: &mut [u8; MAX_PREFIX_LEN]) -> usize {
    for (i, slot) in buf.iter_mut().enumerate() {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            *slot = byte;
            return i + 1;
        }
        *slot = byte | 0x80;
    }
    unreachable!("caller checked len <= MAX_FRAME_LEN, which fits in MAX_PREFIX_LEN bytes")
}

/// Encodes one message as a whole frame, appending it to `out`.
///
/// On error `out` is left as it was. A frame this returns is always accepted by
/// [`Decoder`] (spec: QX-FRAME-1, QX-FRAME-2), and uses minimal varints throughout
/// (spec: QX-MSG-ENC-4).
pub fn encode_into<T: Serialize>(msg: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    // Reserve the longest prefix, encode the body right after it, then write the real
    // prefix and close the gap (at most 2 bytes, only for bodies under 16 KiB).
    out.extend_from_slice(&[0; MAX_PREFIX_LEN]);
    let body_start = start + MAX_PREFIX_LEN;
    if let Err(e) = postcard::serialize_with_flavor(msg, AppendFlavor(out)) {
        out.truncate(start);
        return Err(EncodeError::Serialize(e));
    }
    let len = out.len() - body_start;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(EncodeError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    // spec: QX-FRAME-1 (minimal varint prefix)
    let mut prefix = [0; MAX_PREFIX_LEN];
    let n = write_prefix(len, &mut prefix);
    if n < MAX_PREFIX_LEN {
        out.copy_within(body_start.., start + n);
        out.truncate(start + n + len);
    }
    out[start..start + n].copy_from_slice(&prefix[..n]);
    Ok(())
}

/// Appends the start of an [`OutputFrame::Data`](crate::OutputFrame::Data) frame of
/// `len` data bytes: the length prefix and every body byte before the data. The
/// frame is complete once the caller sends the `len` data bytes right after it, so
/// output can go to the wire without copying the bytes into a frame buffer. The
/// result is byte for byte what [`encode_into`] writes before the data
/// (spec: QX-MSG-ENC-3: the data is a varint length then the bytes).
///
/// On error `out` is left as it was.
pub fn encode_data_head(
    stream: crate::OutputStream,
    offset: u64,
    len: usize,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let start = out.len();
    // The frame without data ends with the data length 0 (one byte): encode that,
    // then put the real length there.
    let empty = crate::OutputFrame::Data {
        stream,
        offset,
        data: Vec::new(),
    };
    encode_into(&empty, out)?;
    let (body_len, prefix_len) = match parse_prefix(&out[start..]) {
        Ok(Some(parsed)) => parsed,
        _ => unreachable!("encode_into writes a valid prefix"),
    };
    let fields = out.split_off(start + prefix_len);
    out.truncate(start);
    debug_assert_eq!(fields.len(), body_len);
    debug_assert_eq!(fields.last(), Some(&0));
    let fields = &fields[..body_len - 1];
    let mut len_varint = [0u8; 10];
    let len_varint_len = write_varint(len as u64, &mut len_varint);
    let total = fields.len() + len_varint_len + len;
    if total > MAX_FRAME_LEN {
        return Err(EncodeError::TooLarge {
            len: total,
            max: MAX_FRAME_LEN,
        });
    }
    let mut prefix = [0; MAX_PREFIX_LEN];
    let n = write_prefix(total, &mut prefix);
    out.extend_from_slice(&prefix[..n]);
    out.extend_from_slice(fields);
    out.extend_from_slice(&len_varint[..len_varint_len]);
    Ok(())
}

/// Writes `v` as an unsigned LEB128 varint (postcard's integer encoding).
fn write_varint(mut v: u64, buf: &mut [u8; 10]) -> usize {
    for (i, slot) in buf.iter_mut().enumerate() {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            *slot = byte;
            return i + 1;
        }
        *slot = byte | 0x80;
    }
    unreachable!("a u64 fits in 10 LEB128 bytes")
}

/// Encodes one message as a whole frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::new();
    encode_into(msg, &mut out)?;
    Ok(out)
}

/// Decodes one frame body (the bytes after the length prefix) as a message.
///
/// The whole body must be one message: trailing bytes are an error
/// (spec: QX-FRAME-3, QX-FRAME-4). An enum discriminant this version does not know
/// yields [`FrameError::UnknownVariant`] (spec: QX-VER-3).
pub fn decode_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((_, rest)) if !rest.is_empty() => Err(FrameError::BadBody(BodyError::TrailingBytes {
            count: rest.len(),
        })),
        Ok((msg, _)) => Ok(msg),
        // qexec's message types contain no custom deserialisation that can fail, so
        // the only source of a serde "custom" error is the derived check of an enum
        // variant index: an index past the last known variant (spec: QX-VER-3).
        Err(postcard::Error::SerdeDeCustom) => Err(FrameError::UnknownVariant),
        Err(e) => Err(FrameError::BadBody(BodyError::from_postcard(e))),
    }
}

/// Parses a length prefix at the start of `buf`: `Ok(None)` if more bytes are needed,
/// else the body length and the prefix length.
///
/// Fails as soon as the bytes seen prove the prefix invalid, without waiting for the
/// rest of it (spec: QX-FRAME-1, QX-FRAME-2).
fn parse_prefix(buf: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
    let too_large = |len| FrameError::TooLarge {
        len,
        max: MAX_FRAME_LEN,
    };
    let mut value: u64 = 0;
    for (i, &b) in buf.iter().enumerate().take(MAX_PREFIX_LEN) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if value > MAX_FRAME_LEN as u64 {
            // Further bytes can only make it larger.
            return Err(too_large(value));
        }
        if b & 0x80 == 0 {
            if i > 0 && b == 0 {
                // A zero last byte after the first: not minimal.
                return Err(FrameError::BadLength);
            }
            return Ok(Some((value as usize, i + 1)));
        }
        if i + 1 == MAX_PREFIX_LEN {
            // A fourth byte would follow: a minimal varint that long is at least 2^21,
            // above the maximum (a non-minimal one is refused the same way, without
            // waiting for more bytes to tell the two apart).
            return Err(too_large(1 << (7 * MAX_PREFIX_LEN)));
        }
    }
    Ok(None)
}

/// An incremental decoder: feed bytes in any pieces, take whole messages out.
///
/// It never reserves memory for a declared length: it holds only bytes that were
/// pushed, and a prefix declaring more than [`MAX_FRAME_LEN`] is refused as soon as
/// its bytes are seen, in [`push`](Self::push) already (spec: QX-FRAME-2).
///
/// After an error the decoder is poisoned: it drops its buffer, ignores further
/// bytes and returns the same error again, because the stream cannot be
/// resynchronised (spec: QX-FRAME-5).
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Start of the first byte not yet returned as part of a message.
    pos: usize,
    error: Option<FrameError>,
}

impl Decoder {
    /// A decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    ///
    /// If the frame now at the front has a length prefix that is already known to be
    /// invalid, the decoder is poisoned here and the next call to
    /// [`next`](Self::next) returns the error; the bytes are not kept.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.error.is_some() || bytes.is_empty() {
            return;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos >= COMPACT_THRESHOLD && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let pending = self.buf.len() - self.pos;
        if pending < MAX_PREFIX_LEN {
            // The front frame's prefix may be incomplete: check it before buffering.
            let mut head = [0; MAX_PREFIX_LEN];
            head[..pending].copy_from_slice(&self.buf[self.pos..]);
            let take = (MAX_PREFIX_LEN - pending).min(bytes.len());
            head[pending..pending + take].copy_from_slice(&bytes[..take]);
            if let Err(e) = parse_prefix(&head[..pending + take]) {
                self.poison(e);
                return;
            }
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// How many more bytes the frame at the front needs before [`next`](Self::next)
    /// can return it: a hint for how much to read next, so a caller never has to
    /// buffer more than one frame. 0 when a whole frame is buffered (or the decoder
    /// is poisoned); 1 while the length prefix is incomplete.
    pub fn wanted(&self) -> usize {
        if self.error.is_some() {
            return 0;
        }
        match parse_prefix(&self.buf[self.pos..]) {
            Ok(Some((len, prefix))) => (prefix + len).saturating_sub(self.buffered()),
            Ok(None) => 1,
            Err(_) => 0,
        }
    }

    /// The error the decoder is poisoned with, if any.
    pub fn error(&self) -> Option<&FrameError> {
        self.error.as_ref()
    }

    /// Takes the next whole message, `Ok(None)` if more bytes are needed.
    #[allow(
        clippy::should_implement_trait,
        reason = "public name kept from the first version; not an Iterator (fallible, generic)"
    )]
    pub fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let result = self.next_inner();
        if let Err(e) = &result {
            self.poison(e.clone());
        }
        result
    }

    fn poison(&mut self, e: FrameError) {
        self.error = Some(e);
        self.buf = Vec::new();
        self.pos = 0;
    }

    fn next_inner<T: DeserializeOwned>(&mut self) -> Result<Option<T>, FrameError> {
        let pending = &self.buf[self.pos..];
        let Some((len, prefix)) = parse_prefix(pending)? else {
            return Ok(None);
        };
        if pending.len() < prefix + len {
            return Ok(None);
        }
        let msg = decode_body(&pending[prefix..prefix + len])?;
        self.pos += prefix + len;
        if self.pos == self.buf.len() {
            // Everything returned: start over, and let go of the room a large frame
            // needed instead of keeping it for the life of the stream.
            self.pos = 0;
            if self.buf.capacity() > RETAIN_CAPACITY {
                self.buf = Vec::new();
            } else {
                self.buf.clear();
            }
        }
        Ok(Some(msg))
    }

    /// Call when the stream ended: an error if a partial frame is buffered
    /// (spec: QX-FRAME-6).
    pub fn finish(&self) -> Result<(), FrameError> {
        match &self.error {
            Some(e) => Err(e.clone()),
            None if self.buffered() == 0 => Ok(()),
            None => Err(FrameError::Truncated {
                buffered: self.buffered(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientMessage, ListRequest};

    #[test]
    fn data_head_then_bytes_is_the_encoded_frame() {
        use crate::{OutputFrame, OutputStream};
        for (stream, offset, len) in [
            (OutputStream::Stdout, 0, 0),
            (OutputStream::Stderr, 1, 1),
            (OutputStream::Stdout, 127, 127),
            (OutputStream::Stdout, 128, 128),
            (OutputStream::Stderr, u64::MAX, 16_384),
            (OutputStream::Stdout, 1 << 40, 64 * 1024),
            (OutputStream::Stdout, 5, MAX_FRAME_LEN - 16),
        ] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let whole = encode(&OutputFrame::Data {
                stream,
                offset,
                data: data.clone(),
            })
            .unwrap();
            let mut head = vec![7];
            encode_data_head(stream, offset, len, &mut head).unwrap();
            head.extend_from_slice(&data);
            assert_eq!(
                &head[1..],
                &whole[..],
                "stream {stream:?} offset {offset} len {len}"
            );
        }
    }

    #[test]
    fn data_head_past_the_frame_limit_is_refused() {
        let mut out = vec![1, 2];
        let e = encode_data_head(crate::OutputStream::Stdout, 0, MAX_FRAME_LEN, &mut out);
        assert!(matches!(e, Err(EncodeError::TooLarge { .. })), "{e:?}");
        assert_eq!(out, [1, 2]);
    }

    #[test]
    fn prefix_is_minimal_leb128() {
        // spec: QX-FRAME-1
        for (len, want) in [
            (0usize, &[0x00][..]),
            (127, &[0x7f]),
            (128, &[0x80, 0x01]),
            (16383, &[0xff, 0x7f]),
            (16384, &[0x80, 0x80, 0x01]),
            (MAX_FRAME_LEN, &[0x80, 0x80, 0x40]),
        ] {
            let mut buf = [0; MAX_PREFIX_LEN];
            let n = write_prefix(len, &mut buf);
            assert_eq!(&buf[..n], want, "{len}");
            assert_eq!(parse_prefix(want), Ok(Some((len, want.len()))));
        }
    }

    #[test]
    fn bad_prefixes_are_refused_from_the_prefix_alone() {
        // spec: QX-FRAME-1, QX-FRAME-2
        let cases: [(&[u8], FrameError); 6] = [
            (&[0x80, 0x00], FrameError::BadLength),
            (&[0x81, 0x80, 0x00], FrameError::BadLength),
            (
                &[0x80, 0x80, 0x80],
                FrameError::TooLarge {
                    len: 1 << 21,
                    max: MAX_FRAME_LEN,
                },
            ),
            (
                &[0x81, 0x80, 0x40],
                FrameError::TooLarge {
                    len: MAX_FRAME_LEN as u64 + 1,
                    max: MAX_FRAME_LEN,
                },
            ),
            // Continuation after a third byte: a length of at least 2^21.
            (
                &[0x80, 0x80, 0x81],
                FrameError::TooLarge {
                    len: 1 << 21,
                    max: MAX_FRAME_LEN,
                },
            ),
            // Too large already at the third byte, with no fourth byte sent.
            (
                &[0xff, 0xff, 0xff],
                FrameError::TooLarge {
                    len: (1 << 21) - 1,
                    max: MAX_FRAME_LEN,
                },
            ),
        ];
        for (bytes, want) in cases {
            let mut d = Decoder::new();
            d.push(bytes);
            assert_eq!(d.buffered(), 0, "{bytes:x?} was buffered");
            assert_eq!(d.next::<ClientMessage>(), Err(want.clone()), "{bytes:x?}");
            assert_eq!(d.error().map(FrameError::code), Some(want.code()));
        }
    }

    #[test]
    fn huge_prefix_trickled_byte_by_byte_is_refused_at_once() {
        // spec: QX-FRAME-2
        let mut d = Decoder::new();
        d.push(&[0xff]);
        d.push(&[0xff]);
        assert_eq!(d.buffered(), 2);
        assert_eq!(d.next::<ClientMessage>(), Ok(None));
        d.push(&[0x7f]);
        assert_eq!(d.buffered(), 0);
        assert!(matches!(
            d.next::<ClientMessage>(),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        // spec: QX-FRAME-4
        // List { running_only: false } plus one extra byte.
        let mut d = Decoder::new();
        d.push(&[3, 3, 0, 0]);
        assert_eq!(
            d.next::<ClientMessage>(),
            Err(FrameError::BadBody(BodyError::TrailingBytes { count: 1 }))
        );
        let mut d = Decoder::new();
        d.push(&[2, 3, 0]);
        assert_eq!(
            d.next::<ClientMessage>(),
            Ok(Some(ClientMessage::List(ListRequest {
                running_only: false
            })))
        );
    }

    #[test]
    fn unknown_variant_is_told_apart() {
        // spec: QX-VER-3
        let mut d = Decoder::new();
        d.push(&[1, 0x7f]); // far past the last ClientMessage variant
        assert_eq!(d.next::<ClientMessage>(), Err(FrameError::UnknownVariant));
        assert_eq!(FrameError::UnknownVariant.code(), ErrorCode::Unsupported);
        // Also at depth: an output Data frame naming a third standard stream.
        assert_eq!(
            decode_body::<crate::OutputFrame>(&[1, 2, 0, 0]),
            Err(FrameError::UnknownVariant)
        );
        assert_eq!(
            decode_body::<crate::OutputFrame>(&[1, 1, 0, 0]),
            Ok(crate::OutputFrame::Data {
                stream: crate::OutputStream::Stderr,
                offset: 0,
                data: Vec::new()
            })
        );
        // A bad bool is malformed, not unknown.
        let mut d = Decoder::new();
        d.push(&[2, 3, 2]);
        assert_eq!(
            d.next::<ClientMessage>(),
            Err(FrameError::BadBody(BodyError::BadBool))
        );
    }

    #[test]
    fn poisoned_decoder_ignores_more_bytes() {
        // spec: QX-FRAME-5
        let mut d = Decoder::new();
        d.push(&[1, 9]);
        let e = d.next::<ClientMessage>().unwrap_err();
        d.push(&encode(&ClientMessage::StdinEof).unwrap());
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.next::<ClientMessage>(), Err(e.clone()));
        assert_eq!(d.finish(), Err(e));
    }

    #[test]
    fn truncated_stream_is_reported() {
        // spec: QX-FRAME-6
        let frame = encode(&ClientMessage::List(ListRequest { running_only: true })).unwrap();
        let mut d = Decoder::new();
        d.push(&frame[..2]);
        assert_eq!(d.next::<ClientMessage>(), Ok(None));
        assert_eq!(d.wanted(), 1);
        assert_eq!(d.finish(), Err(FrameError::Truncated { buffered: 2 }));
        d.push(&frame[2..]);
        assert_eq!(d.wanted(), 0);
        assert!(d.next::<ClientMessage>().unwrap().is_some());
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn room_of_a_large_frame_is_released() {
        let frame = encode(&ClientMessage::StdinData(vec![3; MAX_FRAME_LEN - 4])).unwrap();
        let mut d = Decoder::new();
        for piece in frame.chunks(4096) {
            d.push(piece);
        }
        assert!(d.next::<ClientMessage>().unwrap().is_some());
        assert_eq!(d.buffered(), 0);
        assert!(d.buf.capacity() <= RETAIN_CAPACITY);
    }

    #[test]
    fn many_small_frames_in_one_push() {
        let mut bytes = Vec::new();
        for _ in 0..100_000 {
            encode_into(&ClientMessage::StdinEof, &mut bytes).unwrap();
        }
        let mut d = Decoder::new();
        d.push(&bytes);
        let mut n = 0;
        while let Some(m) = d.next::<ClientMessage>().unwrap() {
            assert_eq!(m, ClientMessage::StdinEof);
            n += 1;
        }
        assert_eq!(n, 100_000);
        assert_eq!(d.buffered(), 0);
        d.finish().unwrap();
    }

    #[test]
    fn encode_error_leaves_output_untouched() {
        // spec: QX-FRAME-2
        let mut out = vec![7, 7];
        let big = ClientMessage::StdinData(vec![0; MAX_FRAME_LEN]);
        let e = encode_into(&big, &mut out).unwrap_err();
        assert!(matches!(e, EncodeError::TooLarge { len, .. } if len == MAX_FRAME_LEN + 4));
        assert_eq!(out, [7, 7]);
    }
}
