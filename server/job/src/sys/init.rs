//! The init of an isolated job: PID 1 of the job's PID namespace.
//!
//! # How it starts
//! 1. `spawn` creates a vfork-style child (`CLONE_VM | CLONE_VFORK`, so nothing of the
//!    server's memory is copied, however large the server is) in new PID, mount,
//!    network, UTS and IPC namespaces. Still sharing the server's memory and running
//!    only async-signal-safe code ([`super::child`]), it joins the job's cgroups, leaves
//!    qexecd's session (`setsid`, so terminal signals aimed at the server never reach
//!    it), sets up the namespaces ([`super::isolate`]: private mount
//!    propagation, a fresh `/proc`, a private `/tmp`, `lo` up, the hostname), clears
//!    close-on-exec on the descriptors the init needs, and **re-executes the server
//!    binary** (`execveat` on `/proc/self/exe`, opened once) with the command line and
//!    parameter memfd built by `crate::spawn::isolation::init_command` (decoded here
//!    by `parse`), and an empty environment. Every signal stays
//!    blocked across that exec.
//! 2. In the fresh process, the `.init_array` hook of [`super::hook`] recognises the
//!    command line before `main` runs and calls [`reexec_main`]. Why re-exec: a
//!    forked init would keep a copy-on-write copy of the whole server for the job's
//!    lifetime (each page the server rewrites then exists twice per running job), and
//!    copying the page tables of a server with a large heap makes every spawn slow.
//! 3. [`reexec_main`] creates a signalfd for every signal (all blocked, so nothing is
//!    lost), sets up the sandbox when there is one, opens a terminal job's PTY in the
//!    job's own devpts and sends its master to qexecd (`open_terminal`), starts the
//!    target vfork-style (through [`super::child::start_target`],
//!    which installs the seccomp filter of the parameter file last before `execve`;
//!    exec errors travel on the job's error pipe), then closes every descriptor
//!    except the status pipe and the signalfd — in particular its copies of the job's
//!    output pipes and of the error pipe, so EOF on those means what the manager
//!    expects — and supervises.
//! 4. The loop reaps every child with `waitpid(-1, WNOHANG)` (orphans of the namespace
//!    re-parent to it), forwards signals, and when the target has ended writes the
//!    target's raw wait status (4 bytes) to the status pipe and exits. The kernel then
//!    kills everything left in the namespace. PID 1 cannot be killed by its own
//!    signals, which is why the status travels on the pipe and not as the init's exit
//!    status.
//!
//! # Signals
//! - `SIGCHLD`: reap.
//! - `SIGTERM` queued by `crate::spawn::ChildProcess::terminate` (`SI_QUEUE` with
//!   [`SIGNAL_TERMINATE_ALL`]): `kill(-1, SIGTERM)`, i.e. every process of the
//!   namespace, the target included.
//! - any signal queued by `crate::spawn::ChildProcess::signal` (`SI_QUEUE` with
//!   [`SIGNAL_TARGET_ONLY`]): to the target only.
//! - any other `SIGTERM` (e.g. an administrator's `kill`): to the target, and
//!   `kill(-1, SIGTERM)`.
//! - every other catchable signal (`SIGINT`, `SIGHUP`, `SIGUSR1`, …): to the target.
//! - `SIGKILL` to the init ends it, and with it the namespace.
//!
//! # Parent death
//! The init watches the write end of its status pipe: when qexecd goes away (the read
//! end closes), `poll` reports `POLLERR`, and the init exits, which kills the job.

//!
//! This module is the init's runtime only (it lives in `sys` because the
//! `.init_array` hook enters it, and `sys` depends on nothing else of the crate); the
//! parent side that builds the init's command line is `crate::spawn::isolation`.

use std::convert::Infallible;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, RawFd};

use super::child::{exec_target, report_and_exit, report_code_and_exit, start_target};
use super::plan::{ChildPlan, Stage};
use super::pty::{self, WinSize};
use super::sandbox::{self, JobSandbox};
use super::{self as sys, CStringArray, ChildStack, Errno, SignalFd, SockFilter};

/// Value queued with `SIGTERM` to ask the init to terminate every process of the job.
pub(crate) const SIGNAL_TERMINATE_ALL: i32 = 0x7165_7801;
/// Value queued with a signal the init must forward to the target only.
pub(crate) const SIGNAL_TARGET_ONLY: i32 = 0x7165_7802;

/// Exit code of an init whose server went away before the target ended.
pub(crate) const EXIT_ORPHANED: i32 = 125;
/// Exit code of an init that could not wait for signals any more.
const EXIT_BROKEN: i32 = 126;
/// Exit code of an init started with a command line it cannot use.
const EXIT_BAD_ARGS: i32 = 127;

/// The init's parameters, parsed from its command line and parameter file.
struct Parsed<'a> {
    status_fd: RawFd,
    err_fd: RawFd,
    stdio: [RawFd; 3],
    cwd: &'a CStr,
    credentials: Option<(u32, u32)>,
    /// The target's seccomp filter.
    seccomp: Option<Vec<SockFilter>>,
    path: &'a CStr,
    argv: Vec<&'a CStr>,
    sandbox: Option<JobSandbox>,
    env: Vec<&'a CStr>,
    /// A terminal job: the socket to send the master on, and the window size.
    terminal: Option<(RawFd, WinSize)>,
}

/// The optional 9th argument of a terminal job:
/// `pty:SOCKET:ROWS:COLS:WIDTH_PX:HEIGHT_PX` (built by `crate::spawn::isolation`).
fn parse_terminal(arg: &CStr) -> Option<(RawFd, WinSize)> {
    let mut f = arg.to_str().ok()?.strip_prefix("pty:")?.split(':');
    let sock = f.next()?.parse().ok()?;
    let mut n = || f.next()?.parse::<u16>().ok();
    let size = WinSize {
        rows: n()?,
        cols: n()?,
        width_px: n()?,
        height_px: n()?,
    };
    Some((sock, size))
}

/// Descriptor number `i` of the command line.
fn arg_fd(args: &[&CStr], i: usize) -> Option<RawFd> {
    args.get(i)?.to_str().ok()?.parse().ok()
}

fn parse<'a>(args: &[&CStr], params: &'a [u8]) -> Option<Parsed<'a>> {
    let mut fields = params
        .split_inclusive(|b| *b == 0)
        .map(CStr::from_bytes_with_nul);
    let mut next = || fields.next()?.ok();
    let cwd = next()?;
    let credentials = match next()?.to_str().ok()? {
        "-" => None,
        c => {
            let (uid, gid) = c.split_once(':')?;
            Some((uid.parse().ok()?, gid.parse().ok()?))
        }
    };
    let seccomp = match next()?.to_bytes() {
        b"-" => None,
        hex => Some(sys::decode_hex(hex)?),
    };
    let path = next()?;
    let argc: usize = next()?.to_str().ok()?.parse().ok()?;
    let argv = (0..argc).map(|_| next()).collect::<Option<Vec<_>>>()?;
    let sandbox = JobSandbox::decode(&mut next)?;
    let env = std::iter::from_fn(&mut next).collect();
    let terminal = match args.get(8) {
        None => None,
        Some(arg) => Some(parse_terminal(arg)?),
    };
    Some(Parsed {
        status_fd: arg_fd(args, 2)?,
        err_fd: arg_fd(args, 3)?,
        stdio: [arg_fd(args, 4)?, arg_fd(args, 5)?, arg_fd(args, 6)?],
        cwd,
        credentials,
        seccomp,
        path,
        argv,
        sandbox,
        env,
        terminal,
    })
}

/// Entry of the re-executed init (called by the `.init_array` hook in [`super::hook`]
/// before `main`). Runs in a fresh, single-threaded process: allocation is fine here.
/// Never returns.
/// `_env` (the init's own environment) is empty by construction and ignored: the
/// target's environment comes from the parameter file.
pub(super) fn reexec_main(args: &[&CStr], _env: &[&CStr]) -> Infallible {
    let params = arg_fd(args, 7).and_then(|fd| sys::read_from_start(fd).ok());
    let Some(p) = params.as_deref().and_then(|params| parse(args, params)) else {
        // The error pipe is the 4th argument; without it nobody can be told.
        if let Some(err_fd) = args.get(3).and_then(|a| a.to_str().ok()?.parse().ok()) {
            return report_and_exit(err_fd, Stage::InitArgs, Errno(libc::EINVAL));
        }
        return sys::exit_now(EXIT_BAD_ARGS);
    };
    // Best effort: only changes what `ps` shows.
    let _ = sys::set_process_name(c"qexec-init");
    let sigfd = match SignalFd::all() {
        Ok(fd) => fd,
        Err(e) => return report_and_exit(p.err_fd, Stage::InitSignals, e),
    };
    // --- sandbox (spec: QX-SBX-3, QX-SBX-4): cgroup namespace and the mount plan,
    // while this init is still host root with every capability.
    if let Some(sandbox) = &p.sandbox
        && let Err((code, e)) = sandbox::enter(sandbox)
    {
        return report_code_and_exit(p.err_fd, code, e);
    }
    // --- end sandbox
    let mut stdio = p.stdio;
    // Keeps the slave open until the target has started.
    let mut _slave = None;
    if let Some((sock, size)) = p.terminal {
        match open_terminal(sock, size, p.sandbox.as_ref()) {
            Ok(slave) => {
                stdio = [slave.as_raw_fd(); 3];
                _slave = Some(slave);
            }
            Err(e) => return report_and_exit(p.err_fd, Stage::Terminal, e),
        }
    }
    let argv = CStringArray::new(p.argv.iter().map(|a| (*a).to_owned()).collect());
    let envp = CStringArray::new(p.env.iter().map(|e| (*e).to_owned()).collect());
    let stack = match ChildStack::new() {
        Ok(s) => s,
        Err(e) => {
            let errno = Errno(e.raw_os_error().unwrap_or(libc::ENOMEM));
            return report_and_exit(p.err_fd, Stage::ForkTarget, errno);
        }
    };
    let plan = ChildPlan {
        path: p.path,
        argv: &argv,
        envp: &envp,
        cwd: p.cwd,
        stdio,
        terminal: p.terminal.is_some(),
        err_fd: p.err_fd,
        // Already joined before the init was executed.
        cgroup_procs: &[],
        credentials: p.credentials,
        seccomp: p.seccomp.as_deref(),
        isolation: None,
        userns_sync: None,
    };
    let target = match &p.sandbox {
        // spec: QX-SBX-1 (the target alone gets a user namespace; the init stays
        // host root)
        Some(sandbox) => match sandbox::start_target(sandbox, &plan, exec_target) {
            Ok(pid) => pid,
            Err((code, e)) => return report_code_and_exit(p.err_fd, code, e),
        },
        None => match start_target(&stack, &plan) {
            Ok(pid) => pid as i32,
            Err(e) => {
                let errno = Errno(e.raw_os_error().unwrap_or(libc::EIO));
                return report_and_exit(p.err_fd, Stage::ForkTarget, errno);
            }
        },
    };
    let keep = if sigfd.fd() < p.status_fd {
        [sigfd.fd(), p.status_fd]
    } else {
        [p.status_fd, sigfd.fd()]
    };
    // Cannot fail with valid arguments; if it did, the only cost is that the output
    // and error pipes see EOF when the init exits instead of earlier.
    let _ = sys::close_fds_except(&keep);
    supervise(target, p.status_fd, &sigfd)
}

/// A terminal job (spec: QX-TERM-5, QX-SBX-26): opens a PTY pair from the job's own
/// devpts instance (sandboxed: mounted by the plan just applied, `/dev/pts/ptmx`;
/// namespaces only: the host's `/dev/ptmx`), gives a sandboxed job's slave to the
/// job's root, sends the master to qexecd on `sock` and closes its copy. Returns the
/// slave, which becomes the target's stdin, stdout and stderr.
fn open_terminal(
    sock: RawFd,
    size: WinSize,
    sandbox: Option<&JobSandbox>,
) -> Result<std::os::fd::OwnedFd, Errno> {
    let ptmx = if sandbox.is_some() {
        c"/dev/pts/ptmx"
    } else {
        c"/dev/ptmx"
    };
    let (master, slave) = pty::open_pty(ptmx, size)?;
    if let Some(sandbox) = sandbox {
        pty::chown_to(slave.as_raw_fd(), sandbox.id_base)?;
    }
    pty::send_fd(sock, master.as_raw_fd())?;
    // The socket closes with every other descriptor once the target runs.
    drop(master);
    Ok(slave)
}

/// The init's loop: reap, forward, report.
fn supervise(target: i32, status_fd: i32, sigfd: &SignalFd) -> Infallible {
    let mut target_status = None;
    loop {
        loop {
            match sys::waitpid_any_nohang() {
                Ok(Some((pid, status))) => {
                    if pid == target {
                        target_status = Some(status);
                    }
                }
                Err(e) if e.0 == libc::EINTR => {}
                // None exited yet, or no children left.
                Ok(None) | Err(_) => break,
            }
        }
        if let Some(status) = target_status {
            // If the server is gone the write fails; nobody is left to tell.
            let _ = sys::write_all(status_fd, &status.to_ne_bytes());
            return sys::exit_now(0);
        }
        let (ready, hung_up) = match sys::poll_signal_or_hangup(sigfd, status_fd) {
            Ok(r) => r,
            Err(_) => return sys::exit_now(EXIT_BROKEN),
        };
        if hung_up {
            return sys::exit_now(EXIT_ORPHANED);
        }
        if ready {
            while let Ok(Some(rec)) = sigfd.read() {
                forward(rec.signo, rec.code, rec.value, target);
            }
        }
    }
}

/// Applies the signal rules of the module docs. Errors (`ESRCH` for a target that just
/// exited) are irrelevant: the next reap pass sees the exit.
fn forward(signo: i32, code: i32, value: i32, target: i32) {
    let queued = code == libc::SI_QUEUE;
    match signo {
        libc::SIGCHLD => {}
        libc::SIGTERM if queued && value == SIGNAL_TERMINATE_ALL => {
            let _ = sys::kill(-1, libc::SIGTERM);
        }
        sig if queued && value == SIGNAL_TARGET_ONLY => {
            let _ = sys::kill(target, sig);
        }
        libc::SIGTERM => {
            let _ = sys::kill(target, libc::SIGTERM);
            let _ = sys::kill(-1, libc::SIGTERM);
        }
        sig => {
            let _ = sys::kill(target, sig);
        }
    }
}
