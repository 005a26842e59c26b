//! Writing to a job's standard input: the write end of its stdin pipe, non-blocking,
//! driven by the runtime's reactor. Closing (or dropping) it is the job's EOF.

use std::io;
use std::os::fd::OwnedFd;

use qexec_protocol::JobId;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

use crate::JobError;

/// Writer to a job's standard input. Dropping it (or [`JobStdin::close`]) sends EOF.
#[derive(Debug)]
pub struct JobStdin {
    job: JobId,
    pipe: pipe::Sender,
}

impl JobStdin {
    /// Wraps the write end of a job's stdin pipe.
    pub(crate) fn new(job: JobId, fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            job,
            pipe: pipe::Sender::from_owned_fd(fd)?,
        })
    }

    /// Wraps a terminal job's master (a tty, not a pipe: tokio's pipe check is
    /// skipped; the descriptor is non-blocking). Keystrokes written here are what the
    /// job reads from its terminal (spec: QX-TERM-5).
    pub(crate) fn terminal(job: JobId, fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            job,
            pipe: pipe::Sender::from_owned_fd_unchecked(fd)?,
        })
    }

    /// Writes all of `data` to the job's stdin (waits while the pipe is full).
    /// Cancel-safe in the sense that dropping the future stops writing; how much was
    /// written is then unknown.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), JobError> {
        self.pipe
            .write_all(data)
            .await
            .map_err(|source| JobError::Stdin {
                id: self.job,
                source,
            })
    }

    /// Closes the job's stdin (EOF).
    pub fn close(self) {}
}
