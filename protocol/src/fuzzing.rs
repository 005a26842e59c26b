//! Fuzzing entry points: the logic behind the thin targets in `fuzz/fuzz_targets/`,
//! also run by the property tests. Each takes arbitrary bytes, drives the decoder and
//! panics if an invariant of the framing breaks (spec: QX-FRAME-*).
//!
//! Not part of the stable API.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::frame::{self, Decoder, FrameError, MAX_FRAME_LEN};
use crate::{ClientMessage, OutputFrame, ServerMessage};

/// Feeds `data` through a [`Decoder`] in pieces and checks the decoder's invariants.
///
/// `data[0]` picks the message family (client, server, output), `data[1]` seeds the
/// piece sizes, the rest is the stream. Checked: the same stream decoded in pieces
/// and in one push gives the same messages and the same error; the decoder never
/// holds more than what was pushed and not yet returned, and nothing after an error;
/// every decoded message re-encodes to a frame that decodes to it again.
pub fn frame_decoder(data: &[u8]) {
    let [family, seed, stream @ ..] = data else {
        return;
    };
    match family % 3 {
        0 => frame_decoder_for::<ClientMessage>(*seed, stream),
        1 => frame_decoder_for::<ServerMessage>(*seed, stream),
        _ => frame_decoder_for::<OutputFrame>(*seed, stream),
    }
}

/// Decodes `data[1..]` as one frame body of the family `data[0]` picks and checks
/// that whatever decodes re-encodes within the frame limit and decodes to itself.
pub fn message_decoder(data: &[u8]) {
    let [family, body @ ..] = data else {
        return;
    };
    match family % 3 {
        0 => message_decoder_for::<ClientMessage>(body),
        1 => message_decoder_for::<ServerMessage>(body),
        _ => message_decoder_for::<OutputFrame>(body),
    }
}

/// The messages decoded from a stream and how it ended.
type Outcome<T> = (Vec<T>, Result<(), FrameError>);

fn drain<T: DeserializeOwned>(d: &mut Decoder, out: &mut Vec<T>) -> Result<(), FrameError> {
    while let Some(m) = d.next()? {
        out.push(m);
    }
    Ok(())
}

fn frame_decoder_for<T>(seed: u8, stream: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    // One push.
    let whole: Outcome<T> = {
        let mut d = Decoder::new();
        d.push(stream);
        let mut msgs = Vec::new();
        let end = drain(&mut d, &mut msgs).and_then(|()| d.finish());
        (msgs, end)
    };

    // Pieces of 1..=64 bytes from a small xorshift generator.
    let pieces: Outcome<T> = {
        let mut d = Decoder::new();
        let mut msgs = Vec::new();
        let mut state = u32::from(seed) | 0x100;
        let mut rest = stream;
        let mut end = Ok(());
        while !rest.is_empty() {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let n = (state as usize % 64 + 1).min(rest.len());
            let (piece, tail) = rest.split_at(n);
            rest = tail;
            let before = d.buffered();
            d.push(piece);
            if d.error().is_some() {
                assert_eq!(d.buffered(), 0, "a poisoned decoder keeps no bytes");
            } else {
                assert_eq!(
                    d.buffered(),
                    before + n,
                    "push must keep exactly what it got"
                );
            }
            if let Err(e) = drain(&mut d, &mut msgs) {
                assert_eq!(d.buffered(), 0, "a poisoned decoder keeps no bytes");
                d.push(rest);
                assert_eq!(d.buffered(), 0, "a poisoned decoder takes no bytes");
                assert_eq!(
                    d.next::<T>(),
                    Err(e.clone()),
                    "poisoned decoder changed its error"
                );
                end = Err(e);
                break;
            }
            // Only the incomplete front frame stays buffered.
            assert!(d.buffered() < frame::MAX_WIRE_FRAME_LEN);
            assert!(d.wanted() > 0, "a whole frame was left in the buffer");
        }
        if end.is_ok() {
            end = d.finish();
        }
        (msgs, end)
    };
    assert_eq!(
        whole, pieces,
        "decoding in pieces differs from decoding at once"
    );

    for m in &whole.0 {
        let bytes = frame::encode(m).expect("a decoded message must re-encode");
        let mut d = Decoder::new();
        d.push(&bytes);
        let again = d.next::<T>();
        assert!(
            matches!(&again, Ok(Some(a)) if a == m),
            "re-encoded frame decodes differently: {again:?} != {m:?}"
        );
        assert_eq!(d.finish(), Ok(()));
    }
}

fn message_decoder_for<T>(body: &[u8])
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let Ok(msg) = frame::decode_body::<T>(body) else {
        return;
    };
    // Postcard accepts non-minimal varints, so the canonical encoding may be shorter
    // than the input, never longer.
    let canonical = postcard::to_stdvec(&msg).expect("a decoded message must re-encode");
    assert!(canonical.len() <= body.len(), "canonical encoding grew");
    assert_eq!(frame::decode_body::<T>(&canonical).as_ref(), Ok(&msg));
    if body.len() <= MAX_FRAME_LEN {
        let bytes = frame::encode(&msg).expect("a body within the limit must encode");
        let mut d = Decoder::new();
        d.push(&bytes);
        let again = d.next::<T>();
        assert!(
            matches!(&again, Ok(Some(a)) if *a == msg),
            "{again:?} != {msg:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_points_accept_seed_like_input() {
        let mut data = vec![0, 7];
        frame::encode_into(&ClientMessage::StdinEof, &mut data).unwrap();
        frame::encode_into(&ClientMessage::StdinData(vec![1, 2, 3]), &mut data).unwrap();
        let size = crate::WindowSize {
            rows: 24,
            cols: 80,
            width_px: 0,
            height_px: 0,
        };
        frame::encode_into(&ClientMessage::Resize(size), &mut data).unwrap();
        frame_decoder(&data);
        frame_decoder(&data[..data.len() - 1]);
        message_decoder(&[0, 7]);
        message_decoder(&[]);
        frame_decoder(&[2]);
    }
}
