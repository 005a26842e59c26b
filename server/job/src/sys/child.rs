//! The child side of a spawn: the code that runs between `clone` and `execve`.
//!
//! Everything here runs in a vfork-style child of a multi-threaded process (it shares
//! the server's memory until it executes something), or in the job's init between its
//! own `clone` and the target's `execve`. It therefore only calls the async-signal-safe
//! wrappers of this module's parent ([`crate::sys`]): no allocation, no lock, no panic.
//! All it reads is a [`ChildPlan`] the parent built before cloning.
//!
//! [`start_child`] is the one door into this code: a safe wrapper around
//! [`vfork_and_run`](super::vfork_and_run) whose closure is fixed to [`child_main`],
//! so the contract of that `unsafe fn` is kept here, once, and callers outside `sys`
//! stay safe.
//!
//! Failures travel to the parent as `(stage, errno)` on the error pipe
//! ([`report_and_exit`]); [`Stage`] is the shared vocabulary of both sides.

use std::convert::Infallible;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use super::{CStringArray, ChildStack, Errno};

/// The child-side step that failed, as reported on the error pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Stage {
    JoinCgroup = 1,
    Setsid,
    Stdin,
    Stdout,
    Stderr,
    Chdir,
    Setgroups,
    Setgid,
    Setuid,
    NoNewPrivs,
    CloseFds,
    Exec,
    MountPrivate,
    MountProc,
    MountTmp,
    Loopback,
    Hostname,
    ForkTarget,
    InitSignals,
    ExecInit,
    InitArgs,
    KeepFds,
}

impl Stage {
    const ALL: [Stage; 22] = [
        Self::JoinCgroup,
        Self::Setsid,
        Self::Stdin,
        Self::Stdout,
        Self::Stderr,
        Self::Chdir,
        Self::Setgroups,
        Self::Setgid,
        Self::Setuid,
        Self::NoNewPrivs,
        Self::CloseFds,
        Self::Exec,
        Self::MountPrivate,
        Self::MountProc,
        Self::MountTmp,
        Self::Loopback,
        Self::Hostname,
        Self::ForkTarget,
        Self::InitSignals,
        Self::ExecInit,
        Self::InitArgs,
        Self::KeepFds,
    ];

    pub(crate) fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as u32 == v)
    }

    /// What the step does, for messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Self::JoinCgroup => "join the job's cgroup (write to cgroup.procs)",
            Self::Setsid => "start a new session (setsid)",
            Self::Stdin => "set up stdin",
            Self::Stdout => "set up stdout",
            Self::Stderr => "set up stderr",
            Self::Chdir => "change to the working directory",
            Self::Setgroups => "drop supplementary groups",
            Self::Setgid => "switch to the job's gid",
            Self::Setuid => "switch to the job's uid",
            Self::NoNewPrivs => "set no_new_privs",
            Self::CloseFds => "mark inherited descriptors close-on-exec",
            Self::Exec => "execute the program",
            Self::MountPrivate => "make mounts private in the job's mount namespace",
            Self::MountProc => "mount /proc for the job's PID namespace",
            Self::MountTmp => "mount a private /tmp",
            Self::Loopback => "bring up the loopback interface",
            Self::Hostname => "set the job's hostname",
            Self::ForkTarget => "fork the target program from the job's init",
            Self::InitSignals => "set up the init's signal handling",
            Self::ExecInit => "execute the job's init (/proc/self/exe)",
            Self::InitArgs => "read the init's command line",
            Self::KeepFds => "pass descriptors to the job's init",
        }
    }
}

/// Child-side isolation parameters (borrowed from the parent's copy of memory).
#[derive(Debug)]
pub(crate) struct ChildIsolation<'a> {
    /// Hostname bytes.
    pub(crate) hostname: &'a [u8],
    /// Mount a private /tmp.
    pub(crate) private_tmp: bool,
    /// Write end of the status pipe (the init reports the target's wait status).
    pub(crate) status_fd: RawFd,
    /// The server binary (`/proc/self/exe`), executed as the init.
    pub(crate) self_exe: RawFd,
    /// The init's command line (built by the parent, decoded by [`super::init`]).
    pub(crate) init_argv: &'a CStringArray,
    /// The init's parameter file (a memfd).
    pub(crate) params_fd: RawFd,
    /// The init's environment: empty.
    pub(crate) init_envp: &'a CStringArray,
}

/// Everything the child side needs, prepared by the parent. Only raw descriptors and
/// borrowed, already-built C data: the child never allocates.
#[derive(Debug)]
pub(crate) struct ChildPlan<'a> {
    pub(crate) path: &'a CStr,
    pub(crate) argv: &'a CStringArray,
    pub(crate) envp: &'a CStringArray,
    pub(crate) cwd: &'a CStr,
    /// Descriptors to become 0, 1 and 2 (all `>= 3`).
    pub(crate) stdio: [RawFd; 3],
    /// Write end of the error pipe.
    pub(crate) err_fd: RawFd,
    pub(crate) cgroup_procs: &'a [BorrowedFd<'a>],
    pub(crate) credentials: Option<(u32, u32)>,
    pub(crate) isolation: Option<ChildIsolation<'a>>,
}

/// Creates the job's first process (vfork-style, see
/// [`vfork_and_run`](super::vfork_and_run)) in new namespaces when `ns_flags` holds
/// `CLONE_NEW*` flags, and runs [`child_main`] in it: it joins the cgroups, then
/// executes the target, or (isolated) sets up the namespaces and executes the init.
/// Returns the child's pid and pidfd once it has executed something (or exited).
pub(crate) fn start_child(
    stack: &ChildStack,
    ns_flags: libc::c_int,
    plan: &ChildPlan<'_>,
) -> io::Result<(u32, Option<OwnedFd>)> {
    // SAFETY: the closure only runs `child_main`, which calls nothing but the
    // async-signal-safe functions of `sys` on data the parent prepared (`plan`, alive
    // while the caller is suspended), writes nothing of the caller's memory, never
    // panics, and ends in `execve`/`execveat` or `_exit` (`Infallible`).
    unsafe { super::vfork_and_run(stack, ns_flags, true, || child_main(plan)) }
}

/// Starts the target program from the job's init (vfork-style, no pidfd): the child
/// runs [`exec_target`]. Returns the target's pid.
pub(crate) fn start_target(stack: &ChildStack, plan: &ChildPlan<'_>) -> io::Result<u32> {
    // SAFETY: as in `start_child`: `exec_target` only calls async-signal-safe `sys`
    // functions on the prepared `plan` and ends in `execve` or `_exit`.
    let (pid, _) = unsafe { super::vfork_and_run(stack, 0, false, || exec_target(plan))? };
    Ok(pid)
}

/// Child side, first code after `clone`.
fn child_main(plan: &ChildPlan<'_>) -> Infallible {
    super::reset_signal_dispositions();
    for fd in plan.cgroup_procs {
        if let Err(e) = super::write_all(fd.as_raw_fd(), b"0") {
            return report_and_exit(plan.err_fd, Stage::JoinCgroup, e);
        }
    }
    match &plan.isolation {
        None => exec_target(plan),
        Some(iso) => exec_init(plan, iso),
    }
}

/// Child side: writes `(stage, errno)` to the error pipe and exits with 127.
pub(super) fn report_and_exit(err_fd: RawFd, stage: Stage, errno: Errno) -> Infallible {
    let mut buf = [0u8; 8];
    let (a, b) = buf.split_at_mut(4);
    a.copy_from_slice(&(stage as u32).to_ne_bytes());
    b.copy_from_slice(&errno.0.to_ne_bytes());
    let _ = super::write_all(err_fd, &buf);
    super::exit_now(127)
}

/// Child side: sets up the target process and executes the program.
fn exec_target(plan: &ChildPlan<'_>) -> Infallible {
    let fail = |stage, e| report_and_exit(plan.err_fd, stage, e);
    if let Err(e) = super::setsid() {
        return fail(Stage::Setsid, e);
    }
    let [stdin, stdout, stderr] = plan.stdio;
    if let Err(e) = super::dup2(stdin, 0) {
        return fail(Stage::Stdin, e);
    }
    if let Err(e) = super::dup2(stdout, 1) {
        return fail(Stage::Stdout, e);
    }
    if let Err(e) = super::dup2(stderr, 2) {
        return fail(Stage::Stderr, e);
    }
    if let Err(e) = super::chdir(plan.cwd) {
        return fail(Stage::Chdir, e);
    }
    if let Some((uid, gid)) = plan.credentials {
        if let Err(e) = super::setgroups_empty() {
            return fail(Stage::Setgroups, e);
        }
        if let Err(e) = super::setgid(gid) {
            return fail(Stage::Setgid, e);
        }
        if let Err(e) = super::setuid(uid) {
            return fail(Stage::Setuid, e);
        }
    }
    if let Err(e) = super::set_no_new_privs() {
        return fail(Stage::NoNewPrivs, e);
    }
    if let Err(e) = super::mark_fds_cloexec_from(3) {
        return fail(Stage::CloseFds, e);
    }
    super::unblock_all_signals();
    let e = super::execve(plan.path, plan.argv, plan.envp);
    fail(Stage::Exec, e)
}

/// Child side (the vfork-style child in the new namespaces, sharing the server's
/// memory): prepares the namespaces and executes the init. Never returns.
fn exec_init(plan: &ChildPlan<'_>, iso: &ChildIsolation<'_>) -> Infallible {
    if let Err(e) = super::setsid() {
        return report_and_exit(plan.err_fd, Stage::Setsid, e);
    }
    if let Err((stage, e)) = super::isolate::setup_inside(iso) {
        return report_and_exit(plan.err_fd, stage, e);
    }
    let [stdin, stdout, stderr] = plan.stdio;
    for fd in [
        iso.status_fd,
        plan.err_fd,
        stdin,
        stdout,
        stderr,
        iso.params_fd,
    ] {
        // dup2 onto itself clears close-on-exec: the init inherits these.
        if let Err(e) = super::dup2(fd, fd) {
            return report_and_exit(plan.err_fd, Stage::KeepFds, e);
        }
    }
    let e = super::execveat_fd(iso.self_exe, iso.init_argv, iso.init_envp);
    report_and_exit(plan.err_fd, Stage::ExecInit, e)
}
