//! A subscription to one job's output (spec: QX-STREAM-11..15).

use qexec_protocol::{
    ErrorCode, JobId, JobStatus, OutputFrame, OutputStream, OutputStreamState, StreamViolation,
};

use crate::context::Context;
use crate::error::ClientError;
use crate::routing::RoutedOutput;
use crate::stream::FrameReader;

/// One event of an [`OutputSubscription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputEvent {
    /// Output bytes.
    Data {
        /// Which of the job's streams wrote them.
        stream: OutputStream,
        /// Combined-output offset of `data[0]`.
        offset: u64,
        /// The bytes, exactly as written.
        data: Vec<u8>,
    },
    /// The job ended and all its output was delivered.
    End(Box<JobStatus>),
}

/// A job's output as the server streams it, in order, each byte once.
///
/// [`OutputSubscription::position`] is the combined offset of the next byte; after a
/// lost connection, [`crate::Client::attach`] from it continues seamlessly. Dropping the
/// subscription cancels it (STOP_SENDING with `Cancelled`).
#[derive(Debug)]
pub struct OutputSubscription {
    job: JobId,
    reader: FrameReader,
    /// The shared definition of what the server may send next (spec: QX-STREAM-11..13).
    state: OutputStreamState,
    position: u64,
    ended: bool,
    ctx: Context,
}

impl OutputSubscription {
    pub(crate) fn new(routed: RoutedOutput, ctx: Context) -> Self {
        let state = routed.state;
        Self {
            // The router only delivers streams whose Header was accepted.
            job: state.job().unwrap_or(JobId::from_u128(0)),
            position: state.next_offset().unwrap_or(0),
            reader: FrameReader::with_decoder(routed.recv, routed.decoder),
            state,
            ended: false,
            ctx,
        }
    }

    /// The job.
    pub fn job(&self) -> JobId {
        self.job
    }

    /// Combined-output offset of the next byte this subscription will yield.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The next event; `Ok(None)` after [`OutputEvent::End`].
    ///
    /// Offsets are checked: a gap, an overlap or a frame after `End` is a protocol error
    /// (spec: QX-STREAM-12, QX-STREAM-13), so every byte is yielded exactly once.
    pub async fn next(&mut self) -> Result<Option<OutputEvent>, ClientError> {
        if self.ended {
            return Ok(None);
        }
        let frame = self
            .reader
            .next::<OutputFrame>()
            .await
            .map_err(|e| self.ctx.read_error(e))?;
        let Some(frame) = frame else {
            let violation = self
                .state
                .on_finish()
                .err()
                .unwrap_or(StreamViolation::EndedEarly { missing: "End" });
            return Err(self.violation(violation));
        };
        if let Err(v) = self.state.on_frame(&frame) {
            return Err(self.violation(v));
        }
        match frame {
            OutputFrame::Data {
                stream,
                offset,
                data,
            } => {
                self.position = offset + data.len() as u64;
                Ok(Some(OutputEvent::Data {
                    stream,
                    offset,
                    data,
                }))
            }
            OutputFrame::End { status } => {
                self.ended = true;
                Ok(Some(OutputEvent::End(Box::new(status))))
            }
            // on_frame refuses a second Header.
            OutputFrame::Header { .. } => {
                Err(self.violation(StreamViolation::BadHeader { got: "Header" }))
            }
        }
    }

    fn violation(&mut self, v: StreamViolation) -> ClientError {
        self.reader.stop(ErrorCode::ProtocolViolation);
        ClientError::Protocol {
            addr: self.ctx.addr.clone(),
            reason: format!("job {}: {v}", self.job),
        }
    }
}

impl Drop for OutputSubscription {
    fn drop(&mut self) {
        if !self.ended {
            // spec: QX-STREAM-15 (cancel with STOP_SENDING `Cancelled`)
            self.reader.stop(ErrorCode::Cancelled);
        }
    }
}
