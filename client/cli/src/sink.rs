//! Where `run` writes job output: whole chunks straight to the process's stdout and
//! stderr, as `cat` does.
//!
//! `std::io::stdout()` is line-buffered: every write scans its bytes for the last
//! newline (`memrchr`) and may split the chunk into two writes. Job output arrives in
//! chunks of up to 64 KiB that are written out at once anyway, so the sink writes them
//! through a handle of its own on the same open file (a `dup` of fd 1), one `write`
//! per chunk where the pipe takes it whole. Output that other code wrote through
//! `std::io::stdout()` is flushed first, so the order on stdout is kept.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsFd;

use qexec_protocol::OutputStream;

/// Writes job output to the local stream it came from.
#[derive(Debug)]
pub(crate) struct OutputSink {
    /// Our own handle on stdout's open file; `None` if it could not be duplicated
    /// (then the locked `std::io::stdout()` is used).
    stdout: Option<File>,
}

impl OutputSink {
    /// A sink on this process's stdout and stderr.
    pub(crate) fn new() -> Self {
        let stdout = io::stdout()
            .as_fd()
            .try_clone_to_owned()
            .ok()
            .map(File::from);
        Self { stdout }
    }

    /// Writes all of `data` to `stream`'s local counterpart.
    pub(crate) fn write(&mut self, stream: OutputStream, data: &[u8]) -> io::Result<()> {
        match (stream, &mut self.stdout) {
            (OutputStream::Stdout, Some(raw)) => {
                // Anything printed through std's buffer goes first.
                io::stdout().lock().flush()?;
                raw.write_all(data)
            }
            (OutputStream::Stdout, None) => {
                let mut out = io::stdout().lock();
                out.write_all(data)?;
                out.flush()
            }
            // stderr is unbuffered in std: one write per chunk already.
            (OutputStream::Stderr, _) => {
                let mut err = io::stderr().lock();
                err.write_all(data)?;
                err.flush()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_gets_its_own_handle() {
        // The test harness's stdout is an open fd: duplicating it works.
        assert!(OutputSink::new().stdout.is_some());
    }
}
