//! Process creation, credentials, file descriptors, signals and reaping.

use std::convert::Infallible;
use std::ffi::{CStr, c_void};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use qexec_protocol::Termination;

use super::base::{CStringArray, Errno, SysResult, check};

/// Size of a [`ChildStack`], guard page included.
const CHILD_STACK_LEN: usize = 256 * 1024;

/// The stack of a [`vfork_and_run`] child: a private anonymous mapping whose lowest
/// page is a guard (an overflow faults instead of corrupting memory).
#[derive(Debug)]
pub(crate) struct ChildStack {
    base: *mut c_void,
}

impl ChildStack {
    /// Maps a new stack (parent side).
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                CHILD_STACK_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Self { base };
        // SAFETY: the first page lies inside the mapping we own.
        if unsafe { libc::mprotect(base, page_size(), libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The initial stack pointer (stacks grow down; 16-byte aligned).
    fn top(&self) -> *mut c_void {
        self.base.wrapping_byte_add(CHILD_STACK_LEN)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping created in `new`; no child runs on it any
        // more (vfork children have exec'd or exited when `vfork_and_run` returns).
        unsafe { libc::munmap(self.base, CHILD_STACK_LEN) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory arguments.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).unwrap_or(4096)
}

/// Creates a child that **shares the caller's memory** (`CLONE_VM | CLONE_VFORK`, as
/// `posix_spawn` does) and runs `child` in it on `stack`. The calling thread is
/// suspended until the child has called `execve` or exited, so no page tables are
/// copied, whatever the size of the server: the cheap way to start a program.
/// `ns_flags` adds `CLONE_NEW*` flags (the child is then created in new namespaces).
/// Exit signal `SIGCHLD`; with `want_pidfd` also a pidfd (`CLONE_PIDFD`, always
/// close-on-exec). All signals are blocked in the calling thread around the call, so
/// the child starts with every signal blocked and never runs a handler inherited from
/// the server; the caller's mask is restored before this returns.
///
/// Returns the child's pid (as seen from the caller's PID namespace) and its pidfd.
///
/// # Safety
/// `child` runs in the child of a multi-threaded process whose other threads do not
/// exist there: any lock they held stays locked, and glibc still believes they exist.
/// The caller must make sure that `child` therefore only calls the async-signal-safe
/// child-side functions of `sys` (raw system calls; no allocation, no locks, no glibc
/// wrappers that talk to other threads such as `setuid`), never panics, and ends with
/// [`execve`]/[`execveat_fd`] or [`exit_now`] (its `Infallible` return type makes
/// returning impossible). As it runs in the caller's memory, it must modify nothing
/// but its own stack and `errno` (the suspended caller looks at neither). The only
/// callers are `sys::child::{start_child, start_target}`, whose closures are fixed.
pub(super) unsafe fn vfork_and_run<F>(
    stack: &ChildStack,
    ns_flags: libc::c_int,
    want_pidfd: bool,
    child: F,
) -> io::Result<(u32, Option<OwnedFd>)>
where
    F: FnOnce() -> Infallible,
{
    #[allow(
        unreachable_code,
        reason = "`f` returns `Infallible`; the empty match only turns that into c_int"
    )]
    extern "C" fn trampoline<F: FnOnce() -> Infallible>(arg: *mut c_void) -> libc::c_int {
        // SAFETY: `arg` points at the caller's `ManuallyDrop<F>`, alive while the
        // caller is suspended; it is read exactly once and the caller never drops it.
        let f = unsafe { std::ptr::read(arg.cast::<F>()) };
        match f() {}
    }
    let mut child = mem::ManuallyDrop::new(child);
    let mut pidfd: libc::c_int = -1;
    let mut flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD | ns_flags;
    if want_pidfd {
        flags |= libc::CLONE_PIDFD;
    }
    let old = block_all_signals();
    // SAFETY: `stack` is a valid, exclusively used stack mapping; `trampoline::<F>` gets
    // a pointer to `child`, which outlives the child's use of it (CLONE_VFORK); with
    // CLONE_PIDFD the kernel writes the pidfd through the parent_tid argument. What the
    // child does is the caller's obligation (`# Safety` above).
    let ret = unsafe {
        libc::clone(
            trampoline::<F>,
            stack.top(),
            flags,
            (&mut *child as *mut F).cast::<c_void>(),
            &mut pidfd as *mut libc::c_int,
        )
    };
    let result = if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    };
    set_signal_mask(&old);
    let pid = result?;
    let pidfd = if want_pidfd {
        // SAFETY: with CLONE_PIDFD the kernel stored a new, owned descriptor in `pidfd`.
        Some(unsafe { OwnedFd::from_raw_fd(pidfd) })
    } else {
        None
    };
    Ok((pid as u32, pidfd))
}

/// Blocks every signal in the calling thread; returns the previous mask.
fn block_all_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigfillset/pthread_sigmask only write to the
    // sets we pass, which are valid for the calls.
    unsafe {
        let mut all: libc::sigset_t = mem::zeroed();
        let mut old: libc::sigset_t = mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

/// Sets the calling thread's signal mask.
fn set_signal_mask(set: &libc::sigset_t) {
    // SAFETY: `set` is a valid sigset; the old mask is not requested.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, set, std::ptr::null_mut());
    }
}

/// Child side: unblocks every signal (the last step before `execve`, as the mask
/// survives exec).
pub(crate) fn unblock_all_signals() {
    // SAFETY: sigemptyset writes only to our local set.
    let empty = unsafe {
        let mut set: libc::sigset_t = mem::zeroed();
        libc::sigemptyset(&mut set);
        set
    };
    set_signal_mask(&empty);
}

/// The kernel's `struct sigaction` for `rt_sigaction` (generic layout, as on x86-64
/// and aarch64).
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Child side: every signal disposition back to `SIG_DFL` (ignored signals such as
/// the server's `SIGPIPE`, or signals 32/33 that glibc hides from `sigaction`, would
/// otherwise stay ignored across `execve`). Uses the raw system call for that reason.
pub(crate) fn reset_signal_dispositions() {
    let act = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    // Linux signals are 1..=64; libc does not export NSIG for glibc.
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `act` is a valid kernel sigaction with SIG_DFL; the old action is not
        // requested; 8 is the kernel's sigset size.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &act as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            );
        }
    }
}

/// Child side: writes all of `buf` to `fd` (retries on `EINTR` and short writes).
pub(crate) fn write_all(fd: RawFd, mut buf: &[u8]) -> SysResult<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast::<c_void>(), buf.len()) };
        if n < 0 {
            let e = Errno::last();
            if e.0 == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        buf = buf.get(n as usize..).unwrap_or_default();
    }
    Ok(())
}

/// Child side: starts a new session (and process group) led by the caller.
pub(crate) fn setsid() -> SysResult<()> {
    // SAFETY: setsid has no memory arguments.
    check(unsafe { libc::setsid() }).map(drop)
}

/// Child side: makes `dst` a copy of `src` without close-on-exec (`src == dst` only
/// clears the flag).
pub(crate) fn dup2(src: RawFd, dst: RawFd) -> SysResult<()> {
    if src == dst {
        // SAFETY: F_SETFD with 0 only clears FD_CLOEXEC; no memory arguments.
        return check(unsafe { libc::fcntl(src, libc::F_SETFD, 0) }).map(drop);
    }
    loop {
        // SAFETY: dup2 has no memory arguments.
        match check(unsafe { libc::dup2(src, dst) }) {
            Err(e) if e.0 == libc::EINTR || e.0 == libc::EBUSY => continue,
            r => return r.map(drop),
        }
    }
}

/// Child side: changes the working directory.
pub(crate) fn chdir(path: &CStr) -> SysResult<()> {
    // SAFETY: `path` is a valid NUL-terminated string.
    check(unsafe { libc::chdir(path.as_ptr()) }).map(drop)
}

/// Child side: drops every supplementary group (raw system call: glibc's wrapper
/// would try to synchronise threads that do not exist in the child).
pub(crate) fn setgroups_empty() -> SysResult<()> {
    // SAFETY: size 0 with a NULL list is valid for setgroups.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, 0, std::ptr::null::<libc::gid_t>()) };
    check(r as libc::c_int).map(drop)
}

/// Child side: sets real, effective and saved gid (raw system call, see
/// [`setgroups_empty`]).
pub(crate) fn setgid(gid: u32) -> SysResult<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
    check(r as libc::c_int).map(drop)
}

/// Child side: sets real, effective and saved uid (raw system call, see
/// [`setgroups_empty`]).
pub(crate) fn setuid(uid: u32) -> SysResult<()> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
    check(r as libc::c_int).map(drop)
}

/// Child side: `prctl(PR_SET_NO_NEW_PRIVS, 1)`: exec can never grant privileges
/// (setuid bits and file capabilities are ignored).
pub(crate) fn set_no_new_privs() -> SysResult<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
}

/// Child side: sets the calling thread's name (shown by `ps`; at most 15 bytes used).
pub(crate) fn set_process_name(name: &CStr) -> SysResult<()> {
    // SAFETY: `name` is a valid NUL-terminated string.
    check(unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) }).map(drop)
}

/// Child side: marks every descriptor `>= first` close-on-exec.
pub(crate) fn mark_fds_cloexec_from(first: RawFd) -> SysResult<()> {
    // SAFETY: integer arguments only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    check(r as libc::c_int).map(drop)
}

/// Child side: closes every descriptor except those in `keep` (ascending order).
pub(crate) fn close_fds_except(keep: &[RawFd]) -> SysResult<()> {
    let mut next: libc::c_uint = 0;
    for &k in keep {
        let k = k as libc::c_uint;
        if k > next {
            close_range(next, k - 1)?;
        }
        next = k.saturating_add(1);
    }
    close_range(next, libc::c_uint::MAX)
}

/// `close_range(first, last, 0)`.
fn close_range(first: libc::c_uint, last: libc::c_uint) -> SysResult<()> {
    // SAFETY: integer arguments only; the caller owns (and no longer uses) the
    // descriptors it closes.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    check(r as libc::c_int).map(drop)
}

/// Child side: replaces the process image. Only returns on failure.
pub(crate) fn execve(path: &CStr, argv: &CStringArray, envp: &CStringArray) -> Errno {
    // SAFETY: all three are valid NUL-terminated strings / NULL-terminated arrays of
    // them, kept alive by the parent's copy of the address space.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    Errno::last()
}

/// Child side: executes the file open at `fd` (`execveat(fd, "", ..., AT_EMPTY_PATH)`;
/// works on an `O_PATH` descriptor). Only returns on failure.
pub(crate) fn execveat_fd(fd: RawFd, argv: &CStringArray, envp: &CStringArray) -> Errno {
    // SAFETY: "" is a valid NUL-terminated string; argv/envp are NULL-terminated arrays
    // of valid strings kept alive by the (suspended) parent.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            fd,
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Errno::last()
}

/// Child side: ends the process at once (no destructors, no atexit handlers).
pub(crate) fn exit_now(code: i32) -> Infallible {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

/// Sends `sig` with `kill(2)` (`pid` may be negative for a process group or `-1`).
pub(crate) fn kill(pid: i32, sig: i32) -> SysResult<()> {
    // SAFETY: integer arguments only.
    check(unsafe { libc::kill(pid, sig) }).map(drop)
}

/// Child side (init): reaps one exited child if any, without blocking. `Ok(None)`
/// when children exist but none has exited; `Err(ECHILD)` when there are none.
pub(crate) fn waitpid_any_nohang() -> SysResult<Option<(i32, i32)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is valid for writes.
    let pid = check(unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) })?;
    Ok((pid > 0).then_some((pid, status)))
}

/// `sigval` as the kernel lays it out.
#[repr(C)]
#[derive(Clone, Copy)]
union SigVal {
    int: libc::c_int,
    ptr: *mut c_void,
}

/// The `_rt` member of `siginfo_t` (sender pid/uid and the queued value).
#[repr(C)]
#[derive(Clone, Copy)]
struct RtFields {
    pid: libc::pid_t,
    uid: libc::uid_t,
    value: SigVal,
}

/// The head of `siginfo_t` for a queued signal.
#[repr(C)]
#[derive(Clone, Copy)]
struct QueuedInfo {
    signo: libc::c_int,
    errno: libc::c_int,
    code: libc::c_int,
    rt: RtFields,
}

/// A whole `siginfo_t` (128 bytes) holding a [`QueuedInfo`].
#[repr(C)]
union SigInfoBuf {
    info: QueuedInfo,
    bytes: [u64; 16],
}

/// Sends `sig` to the process behind `pidfd` (no pid-reuse race). With `value`, the
/// signal is sent as queued (`SI_QUEUE`) carrying that integer, which the receiver
/// reads as `ssi_int` / `si_int`.
pub(crate) fn pidfd_send_signal(
    pidfd: BorrowedFd<'_>,
    sig: i32,
    value: Option<i32>,
) -> io::Result<()> {
    let mut buf = SigInfoBuf { bytes: [0; 16] };
    let info_ptr = match value {
        None => std::ptr::null(),
        Some(v) => {
            buf.info = QueuedInfo {
                signo: sig,
                errno: 0,
                code: libc::SI_QUEUE,
                rt: RtFields {
                    pid: std::process::id() as libc::pid_t,
                    // SAFETY: getuid has no arguments and cannot fail.
                    uid: unsafe { libc::getuid() },
                    value: SigVal { int: v },
                },
            };
            &buf as *const SigInfoBuf
        }
    };
    // SAFETY: `info_ptr` is NULL or points at a full, initialised 128-byte siginfo.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            info_ptr,
            0 as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `waitid(P_PIDFD, ...)` with `extra` flags; `Ok(None)` when nothing was reaped.
fn pidfd_waitid(pidfd: BorrowedFd<'_>, extra: libc::c_int) -> io::Result<Option<Termination>> {
    loop {
        // SAFETY: siginfo_t is plain data; all-zero is a valid initial value.
        let mut info: libc::siginfo_t = unsafe { mem::zeroed() };
        // SAFETY: `info` is valid for writes for the call.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | extra,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid filled `info` for a child event (or left si_pid zero).
        let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(match info.si_code {
            libc::CLD_EXITED => Termination::Exited(status),
            _ => Termination::Signaled(status),
        }));
    }
}

/// Reports how the process behind `pidfd` ended, if it has, without blocking. With
/// `keep` the process stays a zombie (`WNOWAIT`): its pid cannot be reused until a
/// later call without `keep` reaps it.
pub(crate) fn pidfd_try_wait(pidfd: BorrowedFd<'_>, keep: bool) -> io::Result<Option<Termination>> {
    pidfd_waitid(pidfd, libc::WNOHANG | if keep { libc::WNOWAIT } else { 0 })
}

/// Waits for the process behind `pidfd` to exit (blocking); reaps it unless `keep`.
pub(crate) fn pidfd_wait(pidfd: BorrowedFd<'_>, keep: bool) -> io::Result<Termination> {
    pidfd_waitid(pidfd, if keep { libc::WNOWAIT } else { 0 })?
        .ok_or_else(|| io::Error::other("waitid returned no child"))
}

/// Parent side: an anonymous memory file (`memfd_create`, close-on-exec).
pub(crate) fn memfd(name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string; flags only.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads the whole file behind `fd` from offset 0 (`pread`, so the shared file offset
/// does not matter). For the re-executed init only: it allocates.
pub(crate) fn read_from_start(fd: RawFd) -> SysResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe {
            libc::pread(
                fd,
                buf.as_mut_ptr().cast::<c_void>(),
                buf.len(),
                out.len() as libc::off_t,
            )
        };
        if n < 0 {
            let e = Errno::last();
            if e.0 == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}
