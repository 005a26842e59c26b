//! A subscription to one job's output (spec: QX-STREAM-11..15).

use qexec_protocol::{ErrorCode, JobId, JobStatus, OutputFrame, OutputStream};

use crate::client::{Context, RoutedOutput};
use crate::error::ClientError;
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
    position: u64,
    ended: bool,
    ctx: Context,
}

impl OutputSubscription {
    pub(crate) fn new(routed: RoutedOutput, ctx: Context) -> Self {
        Self {
            job: routed.job,
            reader: FrameReader::with_decoder(routed.recv, routed.decoder),
            position: routed.from,
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
    /// Bytes the server sends again (an offset below [`Self::position`]) are dropped;
    /// a gap is a protocol error (spec: QX-STREAM-12, QX-STREAM-14).
    pub async fn next(&mut self) -> Result<Option<OutputEvent>, ClientError> {
        loop {
            if self.ended {
                return Ok(None);
            }
            let frame = self
                .reader
                .next::<OutputFrame>()
                .await
                .map_err(|e| self.ctx.read_error(e))?;
            match frame {
                None => {
                    return Err(self.protocol("the output stream ended before the job's End"));
                }
                Some(OutputFrame::Data {
                    stream,
                    offset,
                    mut data,
                }) => {
                    if offset > self.position {
                        return Err(self.protocol(&format!(
                            "output gap: expected offset {}, got {offset}",
                            self.position
                        )));
                    }
                    let skip = self.position - offset;
                    if skip >= data.len() as u64 {
                        continue;
                    }
                    data.drain(..skip as usize);
                    let offset = self.position;
                    self.position += data.len() as u64;
                    return Ok(Some(OutputEvent::Data {
                        stream,
                        offset,
                        data,
                    }));
                }
                Some(OutputFrame::End { status }) => {
                    self.ended = true;
                    return Ok(Some(OutputEvent::End(Box::new(status))));
                }
                Some(OutputFrame::Header { .. }) => {
                    return Err(self.protocol("a second Header on an output stream"));
                }
            }
        }
    }

    fn protocol(&mut self, reason: &str) -> ClientError {
        self.reader.stop(ErrorCode::ProtocolViolation);
        ClientError::Protocol {
            addr: self.ctx.addr.clone(),
            reason: format!("job {}: {reason}", self.job),
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
