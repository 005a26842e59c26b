//! Feeding a job's standard input over its control stream.

use quinn::SendStream;

use qexec_protocol::ClientMessage;

use crate::context::Context;
use crate::error::ClientError;
use crate::stream::write_frame;

/// Largest `StdinData` payload (spec: QX-LIMIT-10).
pub const MAX_STDIN_CHUNK: usize = qexec_protocol::limits::MAX_STDIN_CHUNK;

/// Writer to a started job's standard input.
///
/// [`StdinWriter::eof`] closes it; dropping it without `eof` finishes the stream, which
/// the server also treats as the end of input.
#[derive(Debug)]
pub struct StdinWriter {
    send: SendStream,
    ctx: Context,
}

impl StdinWriter {
    pub(crate) fn new(send: SendStream, ctx: Context) -> Self {
        Self { send, ctx }
    }

    /// Sends `data` (split into frames of at most [`MAX_STDIN_CHUNK`] bytes). Waits
    /// while the job does not read (QUIC flow control).
    pub async fn write(&mut self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(MAX_STDIN_CHUNK) {
            write_frame(&mut self.send, &ClientMessage::StdinData(chunk.to_vec()))
                .await
                .map_err(|e| self.ctx.write_error(e))?;
        }
        Ok(())
    }

    /// Closes the job's standard input (`StdinEof`, then the end of the stream).
    pub async fn eof(mut self) -> Result<(), ClientError> {
        write_frame(&mut self.send, &ClientMessage::StdinEof)
            .await
            .map_err(|e| self.ctx.write_error(e))?;
        // Already finished or reset: the EOF frame above reported any real problem.
        let _ = self.send.finish();
        Ok(())
    }
}
