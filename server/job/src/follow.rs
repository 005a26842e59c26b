//! Following a job's output: a reader of its log at its own pace, then its final
//! status.

use std::sync::Arc;

use qexec_protocol::{JobStatus, OutputStream};

use crate::JobError;
use crate::manager::table::Job;
use crate::output::{LogReader, ReadEvent};

/// One event of a [`Follower`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    /// Output bytes starting at combined offset `offset`.
    Data {
        /// Which stream wrote them.
        stream: OutputStream,
        /// Combined-output offset of `data[0]`.
        offset: u64,
        /// The bytes.
        data: bytes::Bytes,
    },
    /// The job ended and every byte was delivered.
    End(Box<JobStatus>),
}

/// A reader of one job's output, at its own pace.
///
/// It holds its own handle on the job's output file and a position; it never holds
/// back the job or other followers. Dropping it releases everything it held.
#[derive(Debug)]
pub struct Follower {
    job: Arc<Job>,
    reader: LogReader,
    ended: bool,
}

impl Follower {
    /// A follower of `job` reading from `reader`.
    pub(crate) fn new(job: Arc<Job>, reader: LogReader) -> Self {
        Self {
            job,
            reader,
            ended: false,
        }
    }
}

impl Follower {
    /// The next event; `Ok(None)` never happens before `End` was returned.
    /// Cancel-safe: dropping the future loses no output.
    pub async fn next(&mut self) -> Result<Option<FollowEvent>, JobError> {
        if self.ended {
            return Ok(None);
        }
        match self.reader.next().await {
            Ok(ReadEvent::Data {
                stream,
                offset,
                data,
            }) => Ok(Some(FollowEvent::Data {
                stream,
                offset,
                data,
            })),
            Ok(ReadEvent::End) => {
                self.ended = true;
                Ok(Some(FollowEvent::End(Box::new(self.job.status()))))
            }
            Err(source) => Err(JobError::Output {
                id: self.job.id,
                path: self.job.log.path().to_path_buf(),
                source,
            }),
        }
    }
}
