//! Child-side calls used inside a job's namespaces: mounts, loopback, hostname, and
//! the init's signal descriptor and wait loop. All async-signal-safe.

use std::ffi::{CStr, c_void};
use std::mem;
use std::os::fd::RawFd;

use super::base::{Errno, SysResult, check};

/// Makes every mount in the caller's mount namespace private (recursively), so that
/// nothing mounted afterwards propagates back to the host. Must run before any mount.
pub(crate) fn make_mounts_private() -> SysResult<()> {
    // SAFETY: NULL source/fstype/data are valid for a propagation change; "/" is a
    // valid NUL-terminated string.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    })
    .map(drop)
}

/// Mounts a filesystem (`mount(2)`).
pub(crate) fn mount(
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> SysResult<()> {
    let data = data.map_or(std::ptr::null(), |d| d.as_ptr().cast::<c_void>());
    // SAFETY: all pointers are NUL-terminated strings or NULL, valid for the call.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data,
        )
    })
    .map(drop)
}

/// Brings the loopback interface `lo` of the caller's network namespace up, with an
/// `SIOCSIFFLAGS` ioctl on a datagram socket (no external tools, no netlink).
pub(crate) fn bring_up_loopback() -> SysResult<()> {
    // SAFETY: integer arguments only.
    let sock =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    let result = set_up_flag(sock, b"lo");
    // SAFETY: `sock` is ours and closed once.
    unsafe { libc::close(sock) };
    result
}

/// Sets `IFF_UP` on interface `name` through socket `sock`.
fn set_up_flag(sock: RawFd, name: &[u8]) -> SysResult<()> {
    // SAFETY: ifreq is plain data (name bytes and a union of integers/addresses).
    let mut req: libc::ifreq = unsafe { mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name (the array is longer
    // than "lo" and zeroed).
    check(unsafe { libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: as above; the kernel reads the name and flags.
    check(unsafe { libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) }).map(drop)
}

/// Sets the hostname of the caller's UTS namespace.
pub(crate) fn set_hostname(name: &[u8]) -> SysResult<()> {
    // SAFETY: `name` is valid for `name.len()` bytes.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// One signal read from a [`SignalFd`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignalRecord {
    /// Signal number.
    pub(crate) signo: i32,
    /// `si_code` (e.g. `SI_USER`, `SI_QUEUE`).
    pub(crate) code: i32,
    /// The queued integer (`si_int`), meaningful for `SI_QUEUE`.
    pub(crate) value: i32,
}

/// A non-blocking signalfd accepting every signal (the caller keeps them blocked).
#[derive(Debug)]
pub(crate) struct SignalFd(RawFd);

impl SignalFd {
    /// Creates a signalfd for every signal.
    pub(crate) fn all() -> SysResult<Self> {
        // SAFETY: sigset_t is plain data; sigfillset writes only to it; signalfd reads it.
        let fd = unsafe {
            let mut set: libc::sigset_t = mem::zeroed();
            libc::sigfillset(&mut set);
            libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK)
        };
        check(fd).map(Self)
    }

    /// The descriptor.
    pub(crate) fn fd(&self) -> RawFd {
        self.0
    }

    /// Reads one pending signal; `Ok(None)` when none is pending.
    pub(crate) fn read(&self) -> SysResult<Option<SignalRecord>> {
        loop {
            // SAFETY: signalfd_siginfo is plain data; all-zero is valid.
            let mut info: libc::signalfd_siginfo = unsafe { mem::zeroed() };
            let len = size_of::<libc::signalfd_siginfo>();
            // SAFETY: `info` is valid for writes of `len` bytes.
            let n = unsafe {
                libc::read(
                    self.0,
                    (&mut info as *mut libc::signalfd_siginfo).cast(),
                    len,
                )
            };
            if n < 0 {
                let e = Errno::last();
                match e.0 {
                    libc::EINTR => continue,
                    libc::EAGAIN => return Ok(None),
                    _ => return Err(e),
                }
            }
            if n as usize != len {
                return Err(Errno(libc::EIO));
            }
            return Ok(Some(SignalRecord {
                signo: info.ssi_signo as i32,
                code: info.ssi_code,
                value: info.ssi_int,
            }));
        }
    }
}

/// Waits until `sigfd` is readable or `watched` reports an error/hang-up (for the
/// write end of a pipe: its reader went away). Returns `(signal_ready, hung_up)`;
/// both false after an interruption.
pub(crate) fn poll_signal_or_hangup(sigfd: &SignalFd, watched: RawFd) -> SysResult<(bool, bool)> {
    let mut fds = [
        libc::pollfd {
            fd: sigfd.fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: watched,
            events: 0,
            revents: 0,
        },
    ];
    // SAFETY: `fds` is valid for 2 entries for the call.
    let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
    if r < 0 {
        let e = Errno::last();
        return if e.0 == libc::EINTR {
            Ok((false, false))
        } else {
            Err(e)
        };
    }
    let [sig, w] = fds;
    Ok((
        sig.revents & libc::POLLIN != 0,
        w.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0,
    ))
}
