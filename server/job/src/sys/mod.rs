//! The job library's only `unsafe` code: thin, allocation-free wrappers around the
//! Linux system calls that process creation, isolation and reaping need, and the code
//! that runs between `clone` and `execve`.
//!
//! Three kinds of code live here:
//! - **parent side** (ordinary server threads): positioned reads of output logs into
//!   uninitialised buffer room ([`pread_into`]), starting their writeback
//!   ([`start_writeback`]), pidfd signalling and waiting
//!   ([`pidfd_send_signal`], [`pidfd_wait`]), process-group signals, the tokio fd
//!   registration ([`async_fd`]), the seccomp probe ([`seccomp_filter_available`]),
//!   and the one door to a new process, [`child::start_child`].
//! - **child side** (the code that runs between `clone` and `execve`, in the child of
//!   a multi-threaded process): [`child`] (joining cgroups, target set-up, `execve`)
//!   and [`isolate`] (the namespaces' set-up), built only on the raw wrappers of
//!   `process`, `ns` and `seccomp` (the filter's installation, the target's last step
//!   before `execve`). These functions are async-signal-safe: each is one or a few
//!   raw system calls, they never allocate, never take a lock, never panic, and report
//!   failure as a plain [`Errno`].
//! - **the job's init** (PID 1 of an isolated job, a fresh single-threaded process):
//!   [`init`], entered before `main` by the `.init_array` constructor of [`hook`], and
//!   what it runs of the job sandbox: [`sandbox`] (cgroup namespace, the mount plan and
//!   its executor, the target's user namespace and capability reduction).
//!
//! Every `unsafe` block carries a `// SAFETY:` comment. The one function with a
//! contract its type cannot express is `vfork_and_run`, an `unsafe fn` whose `# Safety`
//! section says what the closure it runs in the child may do; it is private to this
//! module and called only by [`child::start_child`] and [`child::start_target`], whose
//! closures are fixed, so every caller outside `sys` stays safe. The same holds for
//! the sandbox's `fork_into_new_userns` (a fork of the single-threaded init into a new
//! user namespace), private to [`sandbox`] and called only by
//! [`sandbox::start_target`], whose closure runs [`child::exec_target`].
//!
//! `sys` depends on nothing else of the crate (only `libc`, `tokio`'s fd reactor and
//! `qexec_protocol::Termination`): the hook enters the init here, and the init starts
//! its target here, without calling up into `spawn`.

mod base;
pub(crate) mod child;
mod fileio;
mod hook;
pub(crate) mod init;
pub(crate) mod isolate;
mod ns;
pub(crate) mod plan;
mod process;
pub(crate) mod pty;
mod reactor;
pub(crate) mod sandbox;
mod seccomp;

pub(crate) use base::{CStringArray, Errno};
pub(crate) use fileio::{ReadWait, pread_into, start_writeback};
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
pub(crate) use seccomp::{SockFilter, encode_hex, seccomp_filter_available};
use seccomp::{decode_hex, install_seccomp_filter};
