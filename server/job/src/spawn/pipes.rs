//! The job's pipes, parent side: close-on-exec, our ends non-blocking, the child's
//! ends above the standard descriptors.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};

use super::error::{SpawnError, setup_error};

/// A close-on-exec pipe `(read, write)`.
pub(super) fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd), SpawnError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| {
        setup_error(format!(
            "cannot create the job's {what} pipe: {e} (out of descriptors?)"
        ))
    })
}

/// Makes our end of a job pipe non-blocking.
pub(super) fn set_nonblocking(fd: &OwnedFd, what: &str) -> Result<(), SpawnError> {
    fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .map(drop)
        .map_err(|e| {
            setup_error(format!(
                "cannot make the job's {what} pipe non-blocking: {e}"
            ))
        })
}

/// Moves `fd` to a number `>= 3` (close-on-exec) if it is one of 0, 1, 2.
pub(super) fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, SpawnError> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    // `try_clone` duplicates with F_DUPFD_CLOEXEC starting at 3.
    fd.try_clone()
        .map_err(|e| setup_error(format!("cannot duplicate a job pipe descriptor: {e}")))
}
