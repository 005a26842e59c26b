//! Reading and writing whole frames on quinn streams.

use quinn::{ReadError, RecvStream, SendStream, WriteError};
use serde::de::DeserializeOwned;

use qexec_protocol::{Decoder, FrameError, frame};

/// Largest chunk read from a stream at once.
const READ_CHUNK: usize = 64 * 1024;

/// A receive stream with a frame decoder.
#[derive(Debug)]
pub(crate) struct FrameReader {
    recv: RecvStream,
    decoder: Decoder,
    finished: bool,
}

/// Why no frame could be read.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// quinn reported an error (reset, connection lost).
    Stream(ReadError),
    /// The bytes were not a valid frame.
    Frame(FrameError),
}

/// Why a frame could not be written.
#[derive(Debug)]
pub(crate) enum WriteFailure {
    /// quinn reported an error (stopped, connection lost).
    Stream(WriteError),
    /// The message could not be encoded (too large).
    Encode(qexec_protocol::EncodeError),
}

impl FrameReader {
    pub(crate) fn new(recv: RecvStream) -> Self {
        Self::with_decoder(recv, Decoder::new())
    }

    /// Continues with a decoder that may already hold bytes read from `recv`.
    pub(crate) fn with_decoder(recv: RecvStream, decoder: Decoder) -> Self {
        Self {
            recv,
            decoder,
            finished: false,
        }
    }

    /// The next frame, `Ok(None)` at a clean end of the stream.
    pub(crate) async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ReadFailure> {
        loop {
            if let Some(msg) = self.decoder.next::<T>().map_err(ReadFailure::Frame)? {
                return Ok(Some(msg));
            }
            if self.finished {
                self.decoder.finish().map_err(ReadFailure::Frame)?;
                return Ok(None);
            }
            match self.recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => self.decoder.push(&chunk.bytes),
                Ok(None) => self.finished = true,
                Err(e) => return Err(ReadFailure::Stream(e)),
            }
        }
    }

    /// Asks the server to stop sending (STOP_SENDING with `code`).
    pub(crate) fn stop(&mut self, code: qexec_protocol::ErrorCode) {
        // An error means the stream is already finished or reset: nothing to stop.
        let _ = self.recv.stop(quinn::VarInt::from_u32(code.as_u32()));
    }

    /// Splits into the stream and its decoder.
    pub(crate) fn into_parts(self) -> (RecvStream, Decoder) {
        (self.recv, self.decoder)
    }
}

/// Encodes and writes one frame.
pub(crate) async fn write_frame<T: serde::Serialize>(
    send: &mut SendStream,
    msg: &T,
) -> Result<(), WriteFailure> {
    let bytes = frame::encode(msg).map_err(WriteFailure::Encode)?;
    send.write_all(&bytes).await.map_err(WriteFailure::Stream)
}
