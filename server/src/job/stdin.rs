//! Writing to a job's standard input: the write end of its stdin pipe, non-blocking,
//! driven by the runtime's reactor. Closing (or dropping) it is the job's EOF.

use std::io;
use std::os::fd::OwnedFd;

use qexec_protocol::JobId;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

use super::{JobError, JobStdin};

impl JobStdin {
    /// Wraps the write end of a job's stdin pipe.
    pub(crate) fn new(job: JobId, fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            job,
            pipe: pipe::Sender::from_owned_fd(fd)?,
        })
    }

    pub(crate) async fn write_all_impl(&mut self, data: &[u8]) -> Result<(), JobError> {
        self.pipe
            .write_all(data)
            .await
            .map_err(|source| JobError::Stdin {
                id: self.job,
                source,
            })
    }
}
