//! Pseudo-terminals of terminal jobs (spec: QX-TERM-5, QX-TERM-7, QX-SBX-26): opening a
//! pair, its window size, the target's controlling terminal, and passing the master
//! from the job's init to the server (`SCM_RIGHTS`).
//!
//! Who opens the pair (the design is in `crate::spawn`'s module docs and
//! spec/security.md, "Terminal jobs"): the server itself for a job without isolation
//! (the host's `/dev/ptmx`), the job's init for an isolated job — after the sandbox's
//! mounts, from the job's **own devpts instance** (`/dev/pts/ptmx`), so that no
//! descriptor or path of the host's devpts ever enters the sandbox. The init sends
//! the master to the server over a socket pair and keeps only the slave for the
//! target.
//!
//! [`open_pty`], [`send_fd`] and [`recv_fd`] run in ordinary processes (the server, the
//! init before it starts the target); only [`set_controlling_terminal`] runs between
//! `clone` and `execve`, and it is one raw `ioctl`.

use std::ffi::CStr;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::base::{Errno, SysResult, check};

/// A terminal window size (`struct winsize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WinSize {
    /// Rows.
    pub(crate) rows: u16,
    /// Columns.
    pub(crate) cols: u16,
    /// Width in pixels (0: unknown).
    pub(crate) width_px: u16,
    /// Height in pixels (0: unknown).
    pub(crate) height_px: u16,
}

impl WinSize {
    fn raw(self) -> libc::winsize {
        libc::winsize {
            ws_row: self.rows,
            ws_col: self.cols,
            ws_xpixel: self.width_px,
            ws_ypixel: self.height_px,
        }
    }
}

/// Opens a new pseudo-terminal pair from the devpts instance whose multiplexer is
/// `ptmx` (`/dev/ptmx`, or `/dev/pts/ptmx` of a job's own devpts): the master
/// (close-on-exec, not this process's controlling terminal), unlocked, the slave
/// opened through the master (`TIOCGPTPEER`, Linux 4.13+: no path lookup, so no race
/// with another opener of `/dev/pts/N`), and the window size set. Returns
/// `(master, slave)`; both close-on-exec.
pub(crate) fn open_pty(ptmx: &CStr, size: WinSize) -> SysResult<(OwnedFd, OwnedFd)> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    // SAFETY: `ptmx` is a valid NUL-terminated path; no other memory argument.
    let master = check(unsafe { libc::open(ptmx.as_ptr(), flags) })?;
    // SAFETY: `open` just returned this descriptor; nothing else owns it.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one c_int from the valid pointer given.
    check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) })?;
    set_window_size_raw(master.as_raw_fd(), size)?;
    // SAFETY: TIOCGPTPEER takes open flags by value and returns a new descriptor.
    let slave = check(unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER, flags) })?;
    // SAFETY: the ioctl just returned this new descriptor; nothing else owns it.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok((master, slave))
}

fn set_window_size_raw(fd: RawFd, size: WinSize) -> SysResult<()> {
    let ws = size.raw();
    // SAFETY: TIOCSWINSZ reads one `struct winsize` from the valid pointer given.
    check(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) }).map(drop)
}

/// Sets a terminal's window size through its master. The kernel sends `SIGWINCH` to
/// the terminal's foreground process group when the size changed (spec: QX-TERM-7).
pub(crate) fn set_window_size(master: BorrowedFd<'_>, size: WinSize) -> io::Result<()> {
    set_window_size_raw(master.as_raw_fd(), size).map_err(Errno::to_io)
}

/// Reads a terminal's window size (tests and diagnostics).
pub(crate) fn window_size(fd: BorrowedFd<'_>) -> io::Result<WinSize> {
    // SAFETY: all-zero is a valid `struct winsize`.
    let mut ws: libc::winsize = unsafe { mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one `struct winsize` to the valid pointer given.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) })
        .map_err(Errno::to_io)?;
    Ok(WinSize {
        rows: ws.ws_row,
        cols: ws.ws_col,
        width_px: ws.ws_xpixel,
        height_px: ws.ws_ypixel,
    })
}

/// Child side (after `setsid`): makes the terminal open on `fd` the caller's
/// controlling terminal (`TIOCSCTTY`). Async-signal-safe: one raw system call.
pub(crate) fn set_controlling_terminal(fd: RawFd) -> SysResult<()> {
    // SAFETY: TIOCSCTTY takes an int by value (0: do not steal); no memory argument.
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) }).map(drop)
}

/// Gives the slave of a job's own devpts to the job's root (its host id `id`), so that
/// inside the job the terminal belongs to the job's user, as a login terminal would.
pub(crate) fn chown_to(fd: RawFd, id: u32) -> SysResult<()> {
    // SAFETY: fchown has no memory arguments.
    check(unsafe { libc::fchown(fd, id, id) }).map(drop)
}

/// A connected `AF_UNIX` `SOCK_SEQPACKET` pair, close-on-exec: the server keeps one
/// end, the job's init gets the other to send the terminal's master back.
pub(crate) fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: socketpair writes two descriptors to the valid two-element array.
    check(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })
    .map_err(Errno::to_io)?;
    // SAFETY: socketpair just returned these two new descriptors; we own them.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Room for one `SCM_RIGHTS` message carrying one descriptor (`CMSG_SPACE(4)` on
/// Linux, rounded up generously and aligned for `cmsghdr`).
#[repr(C, align(8))]
struct CmsgBuf([u8; 64]);

/// Sends descriptor `fd` on the socket `sock` (`SCM_RIGHTS`, one data byte `T`).
pub(crate) fn send_fd(sock: RawFd, fd: RawFd) -> SysResult<()> {
    let mut byte = [b'T'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut buf = CmsgBuf([0; 64]);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    // SAFETY: all-zero is a valid `msghdr`; the pointers are set below.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.0.as_mut_ptr().cast();
    msg.msg_controllen = space.min(buf.0.len()) as _;
    // SAFETY: `msg` points at a control buffer of `msg_controllen` bytes, so
    // CMSG_FIRSTHDR returns a pointer inside it (never NULL here) with room for a
    // header and one descriptor, which we write in place.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(Errno(libc::EINVAL));
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    loop {
        // SAFETY: `msg` and everything it points to are valid for the call.
        match check(unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) } as libc::c_int) {
            Err(e) if e.0 == libc::EINTR => continue,
            r => return r.map(drop),
        }
    }
}

/// Receives one descriptor sent with [`send_fd`] without waiting (`MSG_DONTWAIT`);
/// the new descriptor is close-on-exec. `WouldBlock` when nothing was sent.
pub(crate) fn recv_fd(sock: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut buf = CmsgBuf([0; 64]);
    // SAFETY: all-zero is a valid `msghdr`; the pointers are set below.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = buf.0.as_mut_ptr().cast();
    msg.msg_controllen = buf.0.len() as _;
    let n = loop {
        // SAFETY: `msg` and everything it points to are valid for the call.
        let n = unsafe {
            libc::recvmsg(
                sock.as_raw_fd(),
                &mut msg,
                libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC,
            )
        };
        if n >= 0 {
            break n;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the job's init closed its end without sending the terminal",
        ));
    }
    // SAFETY: the kernel filled `msg_controllen` bytes of our buffer; CMSG_FIRSTHDR
    // and CMSG_DATA stay inside it, and the data is read unaligned.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if !cmsg.is_null()
            && (*cmsg).cmsg_level == libc::SOL_SOCKET
            && (*cmsg).cmsg_type == libc::SCM_RIGHTS
            && (*cmsg).cmsg_len as usize >= libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize
        {
            let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
            // SAFETY (inner): SCM_RIGHTS installed this new descriptor in our table.
            return Ok(OwnedFd::from_raw_fd(fd));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidData,
        "the job's init sent a message without a descriptor",
    ))
}
