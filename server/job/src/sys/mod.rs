//! The job library's only `unsafe` code: thin, allocation-free wrappers around the
//! Linux system calls that process creation, isolation and reaping need, and the code
//! that runs between `clone` and `execve`.
//!
//! Three kinds of code live here:
//! - **parent side** (ordinary server threads): pidfd signalling and waiting
//!   ([`pidfd_send_signal`], [`pidfd_wait`]), process-group signals, the tokio fd
//!   registration ([`async_fd`]), and the one door to a new process,
//!   [`child::start_child`].
//! - **child side** (the code that runs between `clone` and `execve`, in the child of
//!   a multi-threaded process): [`child`] (joining cgroups, target set-up, `execve`)
//!   and [`isolate`] (the namespaces' set-up), built only on the raw wrappers of
//!   `process` and `ns`. These functions are async-signal-safe: each is one or a few
//!   raw system calls, they never allocate, never take a lock, never panic, and report
//!   failure as a plain [`Errno`].
//! - **the job's init** (PID 1 of an isolated job, a fresh single-threaded process):
//!   [`init`], entered before `main` by the `.init_array` constructor of [`hook`].
//!
//! Every `unsafe` block carries a `// SAFETY:` comment. The one function with a
//! contract its type cannot express is `vfork_and_run`, an `unsafe fn` whose `# Safety`
//! section says what the closure it runs in the child may do; it is private to this
//! module and called only by [`child::start_child`] and [`child::start_target`], whose
//! closures are fixed, so every caller outside `sys` stays safe.
//!
//! `sys` depends on nothing else of the crate (only `libc`, `tokio`'s fd reactor and
//! `qexec_protocol::Termination`): the hook enters the init here, and the init starts
//! its target here, without calling up into `spawn`.

pub(crate) mod child;
mod hook;
pub(crate) mod init;
pub(crate) mod isolate;
mod ns;
mod process;
mod reactor;

use std::ffi::{CString, c_char};
use std::fmt;

pub(crate) use hook::{INIT_MODE_MAGIC, PROBE_MODE_MAGIC, PROBE_MODE_OUTPUT, keep_hook_linked};
use ns::{
    SignalFd, bring_up_loopback, make_mounts_private, mount, poll_signal_or_hangup, set_hostname,
};
pub(crate) use process::{ChildStack, kill, memfd, pidfd_send_signal, pidfd_try_wait, pidfd_wait};
use process::{
    chdir, close_fds_except, dup2, execve, execveat_fd, exit_now, mark_fds_cloexec_from,
    read_from_start, reset_signal_dispositions, set_no_new_privs, set_process_name, setgid,
    setgroups_empty, setsid, setuid, unblock_all_signals, vfork_and_run, waitpid_any_nohang,
    write_all,
};
pub(crate) use reactor::async_fd;

/// A raw `errno` value reported by a child-side system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Errno(pub(crate) i32);

impl Errno {
    /// The calling thread's current `errno`.
    fn last() -> Self {
        // `last_os_error` only reads errno; it does not allocate.
        Self(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    /// This errno as an [`std::io::Error`] (parent side; for messages).
    pub(crate) fn to_io(self) -> std::io::Error {
        std::io::Error::from_raw_os_error(self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_io().fmt(f)
    }
}

/// Result of a child-side system call.
pub(crate) type SysResult<T> = Result<T, Errno>;

/// Turns the `-1`-on-error convention of libc calls into a [`SysResult`].
fn check(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// A NULL-terminated array of C strings (`argv`, `envp`), built by the parent before
/// cloning so the child only passes pointers along.
#[derive(Debug)]
pub(crate) struct CStringArray {
    /// Owns the bytes the pointers point into.
    _strings: Vec<CString>,
    /// One pointer per string, then NULL.
    ptrs: Vec<*const c_char>,
}

impl CStringArray {
    /// Builds the array; it keeps `strings` alive as long as itself.
    pub(crate) fn new(strings: Vec<CString>) -> Self {
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Self {
            _strings: strings,
            ptrs,
        }
    }

    /// Pointer to the NULL-terminated pointer array.
    fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}
