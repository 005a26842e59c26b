//! Starting a job's process tree: `clone`, child set-up, `execve`, and the handle the
//! manager uses to signal and reap it.
//!
//! # Design
//! - **The parent prepares everything before cloning**: the C strings of `argv` and
//!   `envp` (a default `PATH` is added when the job's environment has none), the
//!   executable resolved against the job's `PATH` (default `resolve::DEFAULT_PATH`) with
//!   precise typed errors (`EmptyArgv`, `NotFound`, `PermissionDenied`,
//!   `NotExecutable`, `BadCwd`), the working directory, and the pipes. Our ends of the
//!   stdin/stdout/stderr pipes are non-blocking and close-on-exec; every descriptor the
//!   server opens is close-on-exec.
//! - **The child is created with a raw `clone`**, never with `fork()` or
//!   `std::process`: `CLONE_VM | CLONE_VFORK | CLONE_PIDFD` on a small guarded stack,
//!   as `posix_spawn` does — no page tables are copied whatever the server's size, and
//!   the calling thread waits until the child has exec'd. When isolated, the same call
//!   adds `CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC`.
//!   Exit signal `SIGCHLD`. The child of a multi-threaded server runs only the
//!   allocation-free, lock-free, async-signal-safe wrappers of [`crate::sys`]. It
//!   starts with every signal blocked, resets every disposition to `SIG_DFL` (the
//!   server ignores `SIGPIPE`; a job must not inherit that), and joins the job's
//!   cgroups by writing `0` to each [`SpawnConfig::cgroup_procs`] descriptor — before
//!   anything else is started, so the whole tree is accounted.
//! - **Target set-up** (in the clone child when not isolated, in the init's child when
//!   isolated): `setsid` (the job leads its own session and process group),
//!   stdin/stdout/stderr `dup2`, `chdir`, optional credentials (`setgroups([])`,
//!   `setresgid`, `setresuid`, as raw system calls), `PR_SET_NO_NEW_PRIVS`, every other
//!   descriptor marked close-on-exec (`close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`), signal
//!   mask emptied, the seccomp filter installed (when configured; built once by the
//!   manager, see `crate::seccomp`), `execve`.
//! - **Errors travel on a close-on-exec error pipe**: on any failure the child writes
//!   `(stage, errno)` (8 bytes) and `_exit(127)`s. The parent reads until EOF: EOF
//!   means `execve` succeeded (the pipe closed on exec), a report becomes a typed
//!   [`SpawnError`] after the child was reaped. [`spawn`] therefore blocks until the
//!   program is running or has failed to start; call it from a blocking context.
//! - **Isolated jobs** get an init as PID 1 of the new PID namespace: the clone child
//!   sets up the namespaces ([`crate::sys::isolate`]) and re-executes the server binary
//!   as the init ([`crate::sys::init`]), which starts the target, forwards signals, reaps every
//!   orphan, and reports the target's exact wait status on a 4-byte **status pipe**
//!   before exiting (an exiting ns-init makes the kernel kill everything left in the
//!   namespace). The server keeps `/proc/self/exe` open (one descriptor) for that.
//! - **Terminal jobs** (spec: QX-TERM-5, QX-SBX-26): the job's 0, 1 and 2 are the slave
//!   of a new PTY, the target makes it its controlling terminal right after `setsid`
//!   (`TIOCSCTTY`), and the server keeps the master: read like an output pipe (never
//!   spliced; `EIO` once every slave is closed is its end), written with keystrokes
//!   (the job's "stdin"), and used to set the window size ([`crate::JobTerminal`]).
//!   Who opens the pair: without isolation, this parent, from the host's `/dev/ptmx`
//!   ([`JobIo`]). With isolation, the **init**, after its namespaces and the sandbox's
//!   mounts are set up, from the job's own devpts instance (`/dev/pts/ptmx`; the
//!   host's `/dev/ptmx` with `--no-sandbox`), so the host's devpts never enters the
//!   sandbox; it sends the master back over an `AF_UNIX` socket pair created here
//!   (`SCM_RIGHTS`, [`crate::sys::pty`]) before it starts the target, and the parent
//!   receives it once the error pipe reported the exec. Until then the init's own 0, 1
//!   and 2 are `/dev/null`. The terminal's size travels on the init's command line.
//! - **Privileges**: `no_new_privs` is always set, so nothing the job executes can gain
//!   privileges through setuid binaries or file capabilities. Credentials are optional
//!   here; with `None` the job keeps the server's uid/gid — the default the service
//!   chooses is its decision (it runs jobs as an unprivileged uid when configured).
//!   When isolated, the init keeps the server's identity (it needs it to mount) and only
//!   the target drops to the configured credentials.
//! - **Parent death**: no `PR_SET_PDEATHSIG`. That signal fires when the *thread* that
//!   forked exits, and the manager spawns from a pool of blocking threads that come and
//!   go, so it would kill healthy jobs. Instead: an isolated job's init watches its
//!   status pipe and, when qexecd is gone (the read end closed), exits, which makes the
//!   kernel kill the whole namespace. A non-isolated job is not tied to qexecd's life:
//!   it loses its output pipes (its next write fails with `SIGPIPE`/`EPIPE`) and, once
//!   cgroups are in use, a restarted server finds it in its cgroup. The manager stops
//!   every job on an orderly shutdown.
//! - **Reaping** (`process`): [`ChildProcess::try_reap`] after the pidfd became readable reports
//!   the exit and keeps the process a zombie, so the job's pid and process-group id
//!   stay reserved while the manager may still signal leftovers; dropping the
//!   [`ChildProcess`] reaps it (and kills it first if it still runs), so no zombie
//!   outlives the handle.
//!
//! # Files
//! This module is the parent side (the clone and the error report); `resolve` turns
//! argv/cwd/env into the C data the child uses, `isolation` prepares an isolated job's
//! init, `pipes` makes the job's pipes, `error` is [`SpawnError`], `process` is the
//! handle to the running job. The child-side code is [`crate::sys::child`].

mod error;
mod isolation;
mod pipes;
mod process;
mod resolve;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

use qexec_protocol::SpawnFailure;

pub(crate) use self::error::SpawnError;
use self::error::setup_error;
pub(crate) use self::isolation::IsolationConfig;
use self::pipes::{above_stdio, pipe, set_nonblocking};
pub(crate) use self::process::ChildProcess;
pub(crate) use self::resolve::DEFAULT_PATH;
use self::resolve::Target;
use crate::seccomp::Program;
use crate::sys::child::start_child;
use crate::sys::plan::{ChildPlan, Stage};
pub(crate) use crate::sys::pty::WinSize;
use crate::sys::{self, isolate, sandbox};

/// Everything one spawn needs.
#[derive(Debug)]
pub(crate) struct SpawnConfig<'a> {
    /// Program and arguments; `argv[0]` is resolved against `PATH` in `env` unless it
    /// contains a `/`.
    pub(crate) argv: &'a [Vec<u8>],
    /// The whole environment.
    pub(crate) env: &'a [(Vec<u8>, Vec<u8>)],
    /// Working directory.
    pub(crate) cwd: &'a Path,
    /// Create a stdin pipe (else stdin is /dev/null).
    pub(crate) stdin: bool,
    /// New PID/mount/net/UTS/IPC namespaces with an init as PID 1, when set.
    pub(crate) isolation: Option<&'a IsolationConfig>,
    /// Open `cgroup.procs` files the child joins before exec.
    pub(crate) cgroup_procs: &'a [BorrowedFd<'a>],
    /// Run the job as this uid/gid (no supplementary groups), when set.
    pub(crate) credentials: Option<(u32, u32)>,
    /// Install this seccomp filter in the target as its last step before `execve`.
    pub(crate) seccomp: Option<&'a Program>,
    /// Run the job on a new terminal of this size: it is the job's stdin, stdout and
    /// stderr, and `stdin` is ignored (spec: QX-TERM-5).
    pub(crate) terminal: Option<WinSize>,
}

/// A spawned job process.
#[derive(Debug)]
pub(crate) struct SpawnedChild {
    /// Host pid of the first process (the init when isolated).
    pub(crate) pid: u32,
    /// Handle to signal and reap the job.
    pub(crate) process: ChildProcess,
    /// Write end of the stdin pipe (non-blocking, close-on-exec).
    pub(crate) stdin: Option<OwnedFd>,
    /// Read end of the stdout pipe (non-blocking, close-on-exec).
    pub(crate) stdout: OwnedFd,
    /// Read end of the stderr pipe (non-blocking, close-on-exec); `None` for a
    /// terminal job, whose one output is `stdout` (the terminal's master).
    pub(crate) stderr: Option<OwnedFd>,
    /// A terminal job: the terminal's master (another descriptor of the same open
    /// file as `stdout` and `stdin`), to set its window size.
    pub(crate) terminal: Option<OwnedFd>,
}

/// The job's standard descriptors, both sides, before the clone.
struct JobIo {
    /// What becomes the target's (or the init's) 0, 1 and 2.
    stdio: [RawFd; 3],
    /// The child's ends, closed by us once the child has its copies.
    child: Vec<OwnedFd>,
    /// An isolated terminal job: the init's end of the socket pair.
    init_sock: Option<OwnedFd>,
    /// Our ends.
    ours: OurIo,
}

/// Our ends of the job's standard descriptors.
enum OurIo {
    /// Pipes: stdin's write end (if any), stdout's and stderr's read ends.
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
    /// The terminal's master, opened here.
    Terminal(OwnedFd),
    /// Our end of the socket pair on which the init sends the master.
    FromInit(OwnedFd),
}

impl JobIo {
    /// Pipes for stdout and stderr; stdin a pipe or `/dev/null`.
    fn pipes(want_stdin: bool) -> Result<Self, SpawnError> {
        // Child ends are moved above 0..2 so the dup2 sequence cannot clobber them.
        let (stdin_child, stdin_ours) = if want_stdin {
            let (r, w) = pipe("stdin")?;
            set_nonblocking(&w, "stdin")?;
            (r, Some(w))
        } else {
            (dev_null()?, None)
        };
        let (stdout_ours, stdout_child) = pipe("stdout")?;
        let (stderr_ours, stderr_child) = pipe("stderr")?;
        set_nonblocking(&stdout_ours, "stdout")?;
        set_nonblocking(&stderr_ours, "stderr")?;
        let child = vec![
            above_stdio(stdin_child)?,
            above_stdio(stdout_child)?,
            above_stdio(stderr_child)?,
        ];
        Ok(Self {
            stdio: [
                child[0].as_raw_fd(),
                child[1].as_raw_fd(),
                child[2].as_raw_fd(),
            ],
            child,
            init_sock: None,
            ours: OurIo::Pipes {
                stdin: stdin_ours,
                stdout: stdout_ours,
                stderr: stderr_ours,
            },
        })
    }

    /// A job without isolation: a PTY pair of the host's devpts, opened here; the
    /// slave is the target's 0, 1 and 2. spec: QX-TERM-5
    fn host_terminal(size: WinSize) -> Result<Self, SpawnError> {
        let (master, slave) = sys::pty::open_pty(c"/dev/ptmx", size)
            .map_err(|e| setup_error(format!("cannot open a terminal (/dev/ptmx): {e}")))?;
        let slave = above_stdio(slave)?;
        Ok(Self {
            stdio: [slave.as_raw_fd(); 3],
            child: vec![slave],
            init_sock: None,
            ours: OurIo::Terminal(master),
        })
    }

    /// An isolated job: the init opens the pair in the job's own devpts and sends the
    /// master back on a socket pair; until then the init's 0, 1 and 2 are
    /// `/dev/null`. spec: QX-TERM-5, QX-SBX-26
    fn init_terminal() -> Result<Self, SpawnError> {
        let null = above_stdio(dev_null()?)?;
        let (ours, theirs) = sys::pty::socket_pair().map_err(|e| {
            setup_error(format!(
                "cannot create the socket pair that brings the job's terminal: {e}"
            ))
        })?;
        Ok(Self {
            stdio: [null.as_raw_fd(); 3],
            child: vec![null],
            init_sock: Some(theirs),
            ours: OurIo::FromInit(ours),
        })
    }
}

fn dev_null() -> Result<OwnedFd, SpawnError> {
    File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| setup_error(format!("cannot open /dev/null for the job's stdin: {e}")))
}

impl OurIo {
    /// The spawned job, once its program runs.
    fn into_spawned(self, pid: u32, process: ChildProcess) -> Result<SpawnedChild, SpawnError> {
        let master = match self {
            Self::Pipes {
                stdin,
                stdout,
                stderr,
            } => {
                return Ok(SpawnedChild {
                    pid,
                    process,
                    stdin,
                    stdout,
                    stderr: Some(stderr),
                    terminal: None,
                });
            }
            Self::Terminal(master) => master,
            // The init sent the master before it started the target, and the target
            // runs: it is waiting in the socket.
            Self::FromInit(sock) => sys::pty::recv_fd(sock.as_fd()).map_err(|e| {
                setup_error(format!(
                    "the job's init did not pass its terminal to qexecd: {e}"
                ))
            })?,
        };
        set_nonblocking(&master, "terminal")?;
        let dup = |what| {
            master.try_clone().map_err(|e| {
                setup_error(format!("cannot duplicate the job's terminal ({what}): {e}"))
            })
        };
        Ok(SpawnedChild {
            pid,
            process,
            stdin: Some(dup("input")?),
            terminal: Some(dup("window size")?),
            stdout: master,
            stderr: None,
        })
    }
}

/// Starts a job. Returns once the target program was exec'd (or failed to be).
///
/// Blocking: waits for the child's `execve` (and, when isolated, for the namespace
/// set-up), so call it from a blocking thread.
pub(crate) fn spawn(config: &SpawnConfig<'_>) -> Result<SpawnedChild, SpawnError> {
    let target = Target::resolve(config.argv, config.env, config.cwd)?;
    let isolated_terminal = config.terminal.is_some() && config.isolation.is_some();
    let io = match config.terminal {
        None => JobIo::pipes(config.stdin)?,
        Some(size) if config.isolation.is_none() => JobIo::host_terminal(size)?,
        Some(_) => JobIo::init_terminal()?,
    };
    let stdio = io.stdio;
    let (err_read, err_write) = pipe("error report")?;

    let isolated = match config.isolation {
        Some(iso) => Some(isolation::Prepared::new(
            iso,
            &isolation::InitArgs {
                err_fd: err_write.as_raw_fd(),
                stdio,
                cwd: target.cwd.as_bytes(),
                credentials: config.credentials,
                seccomp: config.seccomp,
                path: target.path.as_bytes(),
                argv: config.argv,
                env: &target.env,
                sandbox: iso.sandbox.as_ref(),
                terminal: io
                    .init_sock
                    .as_ref()
                    .zip(config.terminal)
                    .map(|(sock, size)| (sock.as_raw_fd(), size)),
            },
        )?),
        None => None,
    };

    let stack = sys::ChildStack::new()
        .map_err(|e| setup_error(format!("cannot map a stack for the job's start-up: {e}")))?;
    let envp = target.envp();
    let plan = ChildPlan {
        path: &target.path,
        argv: &target.argv,
        envp: &envp,
        cwd: &target.cwd,
        stdio,
        terminal: config.terminal.is_some() && !isolated_terminal,
        err_fd: err_write.as_raw_fd(),
        cgroup_procs: config.cgroup_procs,
        credentials: config.credentials,
        seccomp: config.seccomp.map(Program::instructions),
        isolation: isolated.as_ref().map(isolation::Prepared::child),
        userns_sync: None,
    };
    let flags = match config.isolation {
        Some(iso) => isolate::clone_flags(iso.own_network),
        None => 0,
    };

    // A vfork-style child that shares our memory until it execs: no page-table copy,
    // whatever the server's size. When isolated it is created in the new namespaces,
    // sets them up and execs the init (this binary again).
    let (pid, pidfd) = start_child(&stack, flags, &plan).map_err(|e| {
        if flags != 0 {
            SpawnError::new(
                SpawnFailure::Setup,
                format!(
                    "cannot create the job's process (clone with new \
                     PID/mount/network/UTS/IPC namespaces): {e}"
                ),
            )
        } else {
            SpawnError::new(
                SpawnFailure::Other,
                format!("cannot create the job's process (clone): {e}"),
            )
        }
    })?;
    let Some(pidfd) = pidfd else {
        return Err(SpawnError::new(
            SpawnFailure::Other,
            "clone returned no pidfd: the kernel must support CLONE_PIDFD (Linux 5.2+)",
        ));
    };
    // The child has its copies; close ours so EOF on the error pipe means exec.
    let JobIo {
        child,
        init_sock,
        ours,
        ..
    } = io;
    drop((child, init_sock, err_write));
    let status_read = isolated.map(|iso| {
        let (r, w) = iso.status;
        drop(w);
        r
    });

    let mut process = ChildProcess::new(pid, pidfd, status_read);
    match read_report(err_read) {
        Ok(None) => ours.into_spawned(pid, process),
        Ok(Some((stage, errno))) => {
            // The child (or init) exits right after reporting; reap it now.
            let _ = process.wait_blocking();
            // A step of the sandbox's mount plan: the plan names the step and path.
            let sandbox = config.isolation.and_then(|i| i.sandbox.as_ref());
            if let Some(message) =
                sandbox.and_then(|s| sandbox::describe_plan_failure(s, stage, errno))
            {
                return Err(SpawnError::new(SpawnFailure::Setup, message));
            }
            Err(failure_for(
                stage,
                errno,
                target.argv0,
                &target.program,
                config.cwd,
            ))
        }
        Err(e) => Err(SpawnError::new(
            SpawnFailure::Other,
            format!("cannot read the start-up report of job process {pid}: {e}"),
        )),
    }
}

/// Reads the child's error report: `None` on EOF (exec succeeded).
fn read_report(pipe: OwnedFd) -> io::Result<Option<(u32, i32)>> {
    let mut file = File::from(pipe);
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    match got {
        0 => Ok(None),
        8 => {
            let (a, b) = buf.split_at(4);
            let stage = u32::from_ne_bytes(a.try_into().unwrap_or_default());
            let errno = i32::from_ne_bytes(b.try_into().unwrap_or_default());
            Ok(Some((stage, errno)))
        }
        n => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("short error report ({n} of 8 bytes)"),
        )),
    }
}

/// Turns a child-side report into a typed error. spec: QX-MSG-TYPE-5
fn failure_for(stage: u32, errno: i32, argv0: &[u8], program: &Path, cwd: &Path) -> SpawnError {
    let name = String::from_utf8_lossy(argv0);
    let err = io::Error::from_raw_os_error(errno);
    let Some(stage) = Stage::from_u32(stage) else {
        return SpawnError::new(
            SpawnFailure::Other,
            format!("cannot start {name}: unknown start-up step {stage} failed: {err}"),
        );
    };
    match (stage, errno) {
        (Stage::Exec, libc::ENOENT) => SpawnError::new(
            SpawnFailure::NotFound,
            format!(
                "cannot execute {}: it or its interpreter (#! line or ELF loader) does not exist",
                program.display()
            ),
        ),
        (Stage::Exec, libc::EACCES | libc::EPERM) => SpawnError::new(
            SpawnFailure::PermissionDenied,
            format!(
                "cannot execute {}: permission denied (check its mode, the directories on its path, \
                 a noexec mount, and the uid the job runs as)",
                program.display()
            ),
        ),
        (Stage::Exec, libc::ENOEXEC | libc::EISDIR | libc::ELIBBAD | libc::ETXTBSY) => {
            SpawnError::new(
                SpawnFailure::NotExecutable,
                format!(
                    "cannot execute {}: {err} (not a program this kernel can run)",
                    program.display()
                ),
            )
        }
        (Stage::Exec, _) => SpawnError::new(
            SpawnFailure::Other,
            format!("cannot execute {}: {err}", program.display()),
        ),
        (Stage::Chdir, _) => SpawnError::new(
            SpawnFailure::BadCwd,
            format!(
                "cannot use {} as the working directory: {err}",
                cwd.display()
            ),
        ),
        (stage, _) => SpawnError::new(
            SpawnFailure::Setup,
            format!("cannot start {name}: failed to {}: {err}", stage.describe()),
        ),
    }
}
