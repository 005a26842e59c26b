//! A terminal job's window: the handle the service keeps to resize the job's terminal
//! (spec: QX-TERM-7). Its keystrokes go through [`crate::JobStdin`] (the same
//! terminal's master), its output is recorded like any job's (as `Stdout`).

use std::os::fd::{AsFd, OwnedFd};

use qexec_protocol::{JobId, WindowSize};

use crate::JobError;
use crate::sys::pty::{self, WinSize};

/// The terminal of a job started with [`crate::JobSpec::terminal`]. Dropping it does
/// not close the terminal (the job's supervisor holds the master for the output).
#[derive(Debug)]
pub struct JobTerminal {
    job: JobId,
    master: OwnedFd,
}

impl JobTerminal {
    pub(crate) fn new(job: JobId, master: OwnedFd) -> Self {
        Self { job, master }
    }

    /// Sets the terminal's window size; the kernel sends `SIGWINCH` to the terminal's
    /// foreground process group when it changed (spec: QX-TERM-7).
    pub fn resize(&self, size: WindowSize) -> Result<(), JobError> {
        pty::set_window_size(self.master.as_fd(), win(size)).map_err(|source| JobError::Resize {
            id: self.job,
            rows: size.rows,
            cols: size.cols,
            source,
        })
    }

    /// The terminal's current window size, as the job sees it.
    pub fn size(&self) -> Result<WindowSize, JobError> {
        let s = pty::window_size(self.master.as_fd()).map_err(|source| JobError::Resize {
            id: self.job,
            rows: 0,
            cols: 0,
            source,
        })?;
        Ok(WindowSize {
            rows: s.rows,
            cols: s.cols,
            width_px: s.width_px,
            height_px: s.height_px,
        })
    }
}

/// The protocol's window size as the kernel's.
pub(crate) fn win(size: WindowSize) -> WinSize {
    WinSize {
        rows: size.rows,
        cols: size.cols,
        width_px: size.width_px,
        height_px: size.height_px,
    }
}
