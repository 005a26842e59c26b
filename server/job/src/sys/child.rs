//! The child side of a spawn: the code that runs between `clone` and `execve`.
//!
//! Everything here runs in a vfork-style child of a multi-threaded process (it shares
//! the server's memory until it executes something), or in the job's init between its
//! own `clone` and the target's `execve`. It therefore only calls the async-signal-safe
//! wrappers of this module's parent ([`crate::sys`]): no allocation, no lock, no panic.
//! All it reads is a [`ChildPlan`] the parent built before cloning.
//!
//! [`start_child`] (the job's first process, from the server) and [`start_target`]
//! (the target, from the job's init) are the only doors into this code: safe wrappers
//! around the `unsafe fn` [`vfork_and_run`](super::vfork_and_run) whose closures are
//! fixed ([`child_main`], [`exec_target`]), so its contract is kept here, once, and
//! callers outside `sys` stay safe. A sandboxed target is the exception: the init
//! starts it with `sys::sandbox::start_target` (a fork into a new user namespace),
//! which runs [`exec_target`] too; its first step then is
//! `sys::sandbox::become_target`.
//!
//! Failures travel to the parent as `(stage, errno)` on the error pipe
//! ([`report_and_exit`]); [`Stage`] (in `sys::plan`) is the vocabulary of both sides.

use std::convert::Infallible;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use super::plan::{ChildIsolation, ChildPlan, Stage};
use super::{ChildStack, Errno};

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
/// runs [`exec_target`]. Returns the target's pid. (A sandboxed target is started by
/// `sandbox::start_target` instead: a fork into a new user namespace.)
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
    report_code_and_exit(err_fd, stage as u32, errno)
}

/// Child side: as [`report_and_exit`] with a raw report code (a [`Stage`] or a
/// sandbox plan step, `sandbox::PLAN_STAGE_BASE + i`).
pub(super) fn report_code_and_exit(err_fd: RawFd, code: u32, errno: Errno) -> Infallible {
    let mut buf = [0u8; 8];
    let (a, b) = buf.split_at_mut(4);
    a.copy_from_slice(&code.to_ne_bytes());
    b.copy_from_slice(&errno.0.to_ne_bytes());
    let _ = super::write_all(err_fd, &buf);
    super::exit_now(127)
}

/// Child side: sets up the target process and executes the program.
pub(super) fn exec_target(plan: &ChildPlan<'_>) -> Infallible {
    let fail = |stage, e| report_and_exit(plan.err_fd, stage, e);
    // --- sandbox (spec: QX-SBX-1, QX-SBX-11): root of the job's own user namespace,
    // reduced capabilities; first, as every later step runs as that.
    if let Some(sync) = plan.userns_sync
        && let Err((stage, e)) = super::sandbox::become_target(sync)
    {
        return match stage {
            Some(stage) => fail(stage, e),
            // The init gave up before mapping the ids and reports its own failure.
            None => super::exit_now(127),
        };
    }
    // --- end sandbox
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
    // spec: QX-TERM-5 — session leader (setsid above) with the terminal as its
    // controlling terminal, so ^C, ^Z, ^\ and SIGWINCH reach its foreground group.
    if plan.terminal
        && let Err(e) = super::pty::set_controlling_terminal(0)
    {
        return fail(Stage::ControllingTerminal, e);
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
    // spec: QX-SBX-24 — the filter goes on last, after no_new_privs, so nothing of the
    // set-up above runs under it and the program runs under it from its first call.
    if let Some(program) = plan.seccomp
        && let Err(e) = super::install_seccomp_filter(program)
    {
        return fail(Stage::Seccomp, e);
    }
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
    if let Some(sock) = iso.terminal_sock
        && let Err(e) = super::dup2(sock, sock)
    {
        return report_and_exit(plan.err_fd, Stage::KeepFds, e);
    }
    let e = super::execveat_fd(iso.self_exe, iso.init_argv, iso.init_envp);
    report_and_exit(plan.err_fd, Stage::ExecInit, e)
}
