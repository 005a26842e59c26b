//! Registration of file descriptors with the tokio reactor.

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Registers `fd` with the current tokio reactor for `interest` (parent side only;
/// must run inside a runtime).
///
/// The safe replacement of the deprecated `AsyncFd::with_interest`: taking an
/// [`OwnedFd`] is what makes the registration sound.
pub(crate) fn async_fd(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` holds an open descriptor until it is dropped and its
    // `as_raw_fd` always returns that same descriptor; the `AsyncFd` owns it, so the
    // descriptor stays open and unchanged for the whole registration.
    let registered = unsafe { AsyncFd::register_with_interest(fd, interest) };
    registered.map_err(io::Error::from)
}
