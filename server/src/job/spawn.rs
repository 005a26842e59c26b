//! Starting a job's process tree: `clone3`, child set-up, `execve`, and the handle the
//! manager uses to signal and reap it.
//!
//! # Design
//! - **The parent prepares everything before cloning**: the C strings of `argv` and
//!   `envp` (a default `PATH` is added when the job's environment has none), the
//!   executable resolved against the job's `PATH` (default [`DEFAULT_PATH`]) with
//!   precise typed errors (`EmptyArgv`, `NotFound`, `PermissionDenied`,
//!   `NotExecutable`, `BadCwd`), the working directory, and the pipes. Our ends of the
//!   stdin/stdout/stderr pipes are non-blocking and close-on-exec; every descriptor the
//!   server opens is close-on-exec.
//! - **The child is created with the raw `clone3` system call** (`CLONE_PIDFD`, exit
//!   signal `SIGCHLD`, plus `CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWUTS |
//!   CLONE_NEWIPC` when isolated), never with `fork()` or `std::process`: the child of a
//!   multi-threaded server runs only the allocation-free, lock-free, async-signal-safe
//!   wrappers of [`crate::sys`]. It starts with every signal blocked, resets every
//!   disposition to `SIG_DFL` (the server ignores `SIGPIPE`; a job must not inherit
//!   that), and joins the job's cgroups by writing `0` to each
//!   [`SpawnConfig::cgroup_procs`] descriptor — before forking anything, so the whole
//!   tree is accounted.
//! - **Target set-up** (directly in the clone child when not isolated, in the init's
//!   child when isolated): `setsid` (the job leads its own session and process group),
//!   stdin/stdout/stderr `dup2`, `chdir`, optional credentials (`setgroups([])`,
//!   `setresgid`, `setresuid`, as raw system calls), `PR_SET_NO_NEW_PRIVS`, every other
//!   descriptor marked close-on-exec (`close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`), signal
//!   mask emptied, `execve`.
//! - **Errors travel on a close-on-exec error pipe**: on any failure the child writes
//!   `(stage, errno)` (8 bytes) and `_exit(127)`s. The parent reads until EOF: EOF
//!   means `execve` succeeded (the pipe closed on exec), a report becomes a typed
//!   [`SpawnError`] after the child was reaped. [`spawn`] therefore blocks until the
//!   program is running or has failed to start; call it from a blocking context.
//! - **Isolated jobs** get an init as PID 1 of the new PID namespace (the clone child
//!   itself; see [`super::init`]) which sets up the namespaces ([`super::namespace`]),
//!   forks the target, forwards signals, reaps every orphan, and reports the target's
//!   exact wait status on a 4-byte **status pipe** before exiting (an exiting ns-init
//!   makes the kernel kill everything left in the namespace).
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
//! - **Reaping** is explicit: [`ChildProcess::try_reap`] after the pidfd became readable.
//!   Dropping an unreaped [`ChildProcess`] kills and reaps it (blocking briefly) as a
//!   last resort, so no zombie is ever left behind.

use std::convert::Infallible;
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use qexec_protocol::{JobId, SpawnFailure, Termination};

#[allow(
    unused_imports,
    reason = "API of the job manager, which calls it from its own module"
)]
pub(crate) use super::namespace::{IsolationUnavailable, isolation_available};
use super::{init, namespace};
use crate::sys::{self, CStringArray, Errno};

/// `PATH` used to find the program (and given to the job) when its environment has
/// none.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Longest hostname the kernel accepts (`HOST_NAME_MAX`).
const HOST_NAME_MAX: usize = 64;

/// Namespace isolation settings for one job.
#[derive(Debug, Clone)]
pub(crate) struct IsolationConfig {
    /// Hostname inside the job's UTS namespace (at most 64 bytes).
    pub(crate) hostname: String,
    /// Mount a private tmpfs on `/tmp` (mode 1777; its pages are charged to the job's
    /// memory cgroup).
    pub(crate) private_tmp: bool,
}

#[allow(
    dead_code,
    reason = "API of the job manager, which calls it from its own module"
)]
impl IsolationConfig {
    /// The defaults for a job: hostname `qexec-<first 12 hex digits of the id>`, a
    /// private `/tmp`.
    pub(crate) fn for_job(id: &JobId) -> Self {
        let hex = id.to_string();
        let short: String = hex
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(12)
            .collect();
        Self {
            hostname: format!("qexec-{short}"),
            private_tmp: true,
        }
    }
}

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
}

/// A spawned job process.
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "API of the job manager, which calls it from its own module"
)]
pub(crate) struct SpawnedChild {
    /// Host pid of the first process (the init when isolated).
    pub(crate) pid: u32,
    /// Handle to signal and reap the job.
    pub(crate) process: ChildProcess,
    /// Write end of the stdin pipe (non-blocking, close-on-exec).
    pub(crate) stdin: Option<OwnedFd>,
    /// Read end of the stdout pipe (non-blocking, close-on-exec).
    pub(crate) stdout: OwnedFd,
    /// Read end of the stderr pipe (non-blocking, close-on-exec).
    pub(crate) stderr: OwnedFd,
}

/// A typed spawn failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct SpawnError {
    /// Which failure (maps to the wire's `SpawnFailure`).
    pub(crate) failure: SpawnFailure,
    /// What failed, on what, and what to do.
    pub(crate) message: String,
}

impl SpawnError {
    fn new(failure: SpawnFailure, message: impl Into<String>) -> Self {
        Self {
            failure,
            message: message.into(),
        }
    }
}

/// The child-side step that failed, as reported on the error pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(super) enum Stage {
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
}

impl Stage {
    const ALL: [Stage; 19] = [
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
    ];

    pub(super) fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| *s as u32 == v)
    }

    /// What the step does, for messages.
    pub(super) fn describe(self) -> &'static str {
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
        }
    }
}

/// Child-side isolation parameters (borrowed from the parent's copy of memory).
#[derive(Debug)]
pub(super) struct ChildIsolation<'a> {
    /// Hostname bytes.
    pub(super) hostname: &'a [u8],
    /// Mount a private /tmp.
    pub(super) private_tmp: bool,
    /// Write end of the status pipe (the init reports the target's wait status).
    pub(super) status_fd: RawFd,
}

/// Everything the child side needs, prepared by the parent. Only raw descriptors and
/// borrowed, already-built C data: the child never allocates.
#[derive(Debug)]
pub(super) struct ChildPlan<'a> {
    pub(super) path: &'a std::ffi::CStr,
    pub(super) argv: &'a CStringArray,
    pub(super) envp: &'a CStringArray,
    pub(super) cwd: &'a std::ffi::CStr,
    /// Descriptors to become 0, 1 and 2 (all `>= 3`).
    pub(super) stdio: [RawFd; 3],
    /// Write end of the error pipe.
    pub(super) err_fd: RawFd,
    pub(super) cgroup_procs: &'a [BorrowedFd<'a>],
    pub(super) credentials: Option<(u32, u32)>,
    pub(super) isolation: Option<ChildIsolation<'a>>,
}

/// Starts a job. Returns once the target program was exec'd (or failed to be).
///
/// Blocking: waits for the child's `execve` (and, when isolated, for the namespace
/// set-up), so call it from a blocking thread.
pub(crate) fn spawn(config: &SpawnConfig<'_>) -> Result<SpawnedChild, SpawnError> {
    let Some(argv0) = config.argv.first() else {
        return Err(SpawnError::new(
            SpawnFailure::EmptyArgv,
            "cannot start a job with an empty argv: give at least the program name",
        ));
    };
    check_cwd(config.cwd)?;
    let path_var = config
        .env
        .iter()
        .find(|(k, _)| k == b"PATH")
        .map(|(_, v)| v.as_slice());
    let program = resolve_program(argv0, path_var, config.cwd)?;

    let path_c = c_string(program.as_os_str().as_bytes(), "program path")?;
    let cwd_c = c_string(config.cwd.as_os_str().as_bytes(), "working directory")?;
    let argv = CStringArray::new(
        config
            .argv
            .iter()
            .enumerate()
            .map(|(i, a)| c_string(a, &format!("argument {i}")))
            .collect::<Result<_, _>>()?,
    );
    let envp = CStringArray::new(build_env(config.env, path_var.is_none())?);

    let hostname = match config.isolation {
        Some(iso) if iso.hostname.is_empty() || iso.hostname.len() > HOST_NAME_MAX => {
            return Err(SpawnError::new(
                SpawnFailure::Setup,
                format!(
                    "invalid job hostname {:?}: it must be 1 to {HOST_NAME_MAX} bytes",
                    iso.hostname
                ),
            ));
        }
        Some(iso) => Some(iso.hostname.as_bytes()),
        None => None,
    };

    // Pipes. Child ends are moved above 0..2 so the dup2 sequence cannot clobber them.
    let (stdin_child, stdin_ours) = if config.stdin {
        let (r, w) = pipe("stdin")?;
        set_nonblocking(&w, "stdin")?;
        (r, Some(w))
    } else {
        let null = File::open("/dev/null")
            .map_err(|e| setup_error(format!("cannot open /dev/null for the job's stdin: {e}")))?;
        (OwnedFd::from(null), None)
    };
    let (stdout_ours, stdout_child) = pipe("stdout")?;
    let (stderr_ours, stderr_child) = pipe("stderr")?;
    set_nonblocking(&stdout_ours, "stdout")?;
    set_nonblocking(&stderr_ours, "stderr")?;
    let stdin_child = above_stdio(stdin_child)?;
    let stdout_child = above_stdio(stdout_child)?;
    let stderr_child = above_stdio(stderr_child)?;
    let (err_read, err_write) = pipe("error report")?;
    let status_pipe = match config.isolation {
        Some(_) => {
            let (r, w) = pipe("status")?;
            set_nonblocking(&r, "status")?;
            Some((r, w))
        }
        None => None,
    };

    let plan = ChildPlan {
        path: &path_c,
        argv: &argv,
        envp: &envp,
        cwd: &cwd_c,
        stdio: [
            stdin_child.as_raw_fd(),
            stdout_child.as_raw_fd(),
            stderr_child.as_raw_fd(),
        ],
        err_fd: err_write.as_raw_fd(),
        cgroup_procs: config.cgroup_procs,
        credentials: config.credentials,
        isolation: match (config.isolation, hostname, &status_pipe) {
            (Some(iso), Some(hostname), Some((_, w))) => Some(ChildIsolation {
                hostname,
                private_tmp: iso.private_tmp,
                status_fd: w.as_raw_fd(),
            }),
            _ => None,
        },
    };
    let flags = if plan.isolation.is_some() {
        namespace::CLONE_FLAGS
    } else {
        0
    };

    let (pid, pidfd) = sys::clone_and_run(flags, true, || child_main(&plan)).map_err(|e| {
        let failure = if flags != 0 {
            SpawnFailure::Setup
        } else {
            SpawnFailure::Other
        };
        SpawnError::new(
            failure,
            format!(
                "cannot create the job's process (clone3{}): {e}",
                if flags != 0 {
                    " with new namespaces"
                } else {
                    ""
                }
            ),
        )
    })?;
    let Some(pidfd) = pidfd else {
        return Err(SpawnError::new(
            SpawnFailure::Other,
            "clone3 returned no pidfd: the kernel must support CLONE_PIDFD (Linux 5.2+)",
        ));
    };
    // The child has its copies; close ours so EOF on the error pipe means exec.
    drop((stdin_child, stdout_child, stderr_child, err_write));
    let (status_read, status_write) = match status_pipe {
        Some((r, w)) => (Some(r), Some(w)),
        None => (None, None),
    };
    drop(status_write);

    let mut process = ChildProcess {
        pid,
        pidfd,
        status: status_read,
        reaped: None,
    };
    match read_report(err_read) {
        Ok(None) => Ok(SpawnedChild {
            pid,
            process,
            stdin: stdin_ours,
            stdout: stdout_ours,
            stderr: stderr_ours,
        }),
        Ok(Some((stage, errno))) => {
            // The child (or init) exits right after reporting; reap it now.
            let _ = process.wait_blocking();
            Err(failure_for(stage, errno, argv0, &program, config.cwd))
        }
        Err(e) => Err(SpawnError::new(
            SpawnFailure::Other,
            format!("cannot read the start-up report of job process {pid}: {e}"),
        )),
    }
}

/// Child side, first code after `clone3`.
fn child_main(plan: &ChildPlan<'_>) -> Infallible {
    sys::reset_signal_dispositions();
    for fd in plan.cgroup_procs {
        if let Err(e) = sys::write_all(fd.as_raw_fd(), b"0") {
            return report_and_exit(plan.err_fd, Stage::JoinCgroup, e);
        }
    }
    match &plan.isolation {
        None => exec_target(plan),
        Some(iso) => init::run(plan, iso),
    }
}

/// Child side: writes `(stage, errno)` to the error pipe and exits with 127.
pub(super) fn report_and_exit(err_fd: RawFd, stage: Stage, errno: Errno) -> Infallible {
    let mut buf = [0u8; 8];
    let (a, b) = buf.split_at_mut(4);
    a.copy_from_slice(&(stage as u32).to_ne_bytes());
    b.copy_from_slice(&errno.0.to_ne_bytes());
    let _ = sys::write_all(err_fd, &buf);
    sys::exit_now(127)
}

/// Child side: sets up the target process and executes the program.
pub(super) fn exec_target(plan: &ChildPlan<'_>) -> Infallible {
    let fail = |stage, e| report_and_exit(plan.err_fd, stage, e);
    if let Err(e) = sys::setsid() {
        return fail(Stage::Setsid, e);
    }
    let [stdin, stdout, stderr] = plan.stdio;
    if let Err(e) = sys::dup2(stdin, 0) {
        return fail(Stage::Stdin, e);
    }
    if let Err(e) = sys::dup2(stdout, 1) {
        return fail(Stage::Stdout, e);
    }
    if let Err(e) = sys::dup2(stderr, 2) {
        return fail(Stage::Stderr, e);
    }
    if let Err(e) = sys::chdir(plan.cwd) {
        return fail(Stage::Chdir, e);
    }
    if let Some((uid, gid)) = plan.credentials {
        if let Err(e) = sys::setgroups_empty() {
            return fail(Stage::Setgroups, e);
        }
        if let Err(e) = sys::setgid(gid) {
            return fail(Stage::Setgid, e);
        }
        if let Err(e) = sys::setuid(uid) {
            return fail(Stage::Setuid, e);
        }
    }
    if let Err(e) = sys::set_no_new_privs() {
        return fail(Stage::NoNewPrivs, e);
    }
    if let Err(e) = sys::mark_fds_cloexec_from(3) {
        return fail(Stage::CloseFds, e);
    }
    sys::unblock_all_signals();
    let e = sys::execve(plan.path, plan.argv, plan.envp);
    fail(Stage::Exec, e)
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

/// Turns a child-side report into a typed error.
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

/// Checks the working directory exists and is a directory.
fn check_cwd(cwd: &Path) -> Result<(), SpawnError> {
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(SpawnError::new(
            SpawnFailure::BadCwd,
            format!(
                "working directory {} is not a directory: give an existing directory",
                cwd.display()
            ),
        )),
        Err(e) => Err(SpawnError::new(
            SpawnFailure::BadCwd,
            format!(
                "working directory {} cannot be used: {e}: give an existing directory",
                cwd.display()
            ),
        )),
    }
}

/// Finds the file to execute: `argv0` itself when it contains a `/` (relative to the
/// job's cwd), else the first executable `dir/argv0` over `PATH`.
fn resolve_program(
    argv0: &[u8],
    path_var: Option<&[u8]>,
    cwd: &Path,
) -> Result<PathBuf, SpawnError> {
    let name = String::from_utf8_lossy(argv0);
    if argv0.is_empty() {
        return Err(SpawnError::new(
            SpawnFailure::NotFound,
            "the program name (argv[0]) is empty: give a program name or path",
        ));
    }
    if argv0.contains(&b'/') {
        let p = cwd.join(Path::new(OsStr::from_bytes(argv0)));
        check_candidate(&p)?;
        return Ok(p);
    }
    let path_var = path_var.unwrap_or(DEFAULT_PATH.as_bytes());
    let mut first_error = None;
    for dir in path_var.split(|b| *b == b':') {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let candidate = cwd
            .join(Path::new(OsStr::from_bytes(dir)))
            .join(OsStr::from_bytes(argv0));
        match check_candidate(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.failure == SpawnFailure::NotFound => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| {
        SpawnError::new(
            SpawnFailure::NotFound,
            format!(
                "program {name} not found in PATH {}: install it, fix PATH, or give its full path",
                String::from_utf8_lossy(path_var)
            ),
        )
    }))
}

/// Checks that `p` is an existing regular file with an execute bit.
fn check_candidate(p: &Path) -> Result<(), SpawnError> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Err(SpawnError::new(
            SpawnFailure::NotExecutable,
            format!("{} is a directory, not a program", p.display()),
        )),
        Ok(m) if !m.is_file() => Err(SpawnError::new(
            SpawnFailure::NotExecutable,
            format!(
                "{} is not a regular file, so it cannot be executed",
                p.display()
            ),
        )),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err(SpawnError::new(
            SpawnFailure::NotExecutable,
            format!(
                "{} has no execute permission bit: chmod +x it or run it through its interpreter",
                p.display()
            ),
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(SpawnError::new(
            SpawnFailure::PermissionDenied,
            format!("cannot access {}: {e}", p.display()),
        )),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Err(SpawnError::new(
                SpawnFailure::NotFound,
                format!("program {} does not exist", p.display()),
            ))
        }
        Err(e) => Err(SpawnError::new(
            SpawnFailure::Other,
            format!("cannot inspect program {}: {e}", p.display()),
        )),
    }
}

/// `KEY=VALUE` strings, plus the default `PATH` when `add_path`.
fn build_env(env: &[(Vec<u8>, Vec<u8>)], add_path: bool) -> Result<Vec<CString>, SpawnError> {
    let mut out = Vec::with_capacity(env.len() + 1);
    for (k, v) in env {
        if k.is_empty() || k.contains(&b'=') {
            return Err(SpawnError::new(
                SpawnFailure::Other,
                format!(
                    "invalid environment variable name {:?}: it must be non-empty and contain no '='",
                    String::from_utf8_lossy(k)
                ),
            ));
        }
        let mut kv = Vec::with_capacity(k.len() + v.len() + 1);
        kv.extend_from_slice(k);
        kv.push(b'=');
        kv.extend_from_slice(v);
        out.push(c_string(&kv, "environment variable")?);
    }
    if add_path {
        out.push(c_string(format!("PATH={DEFAULT_PATH}").as_bytes(), "PATH")?);
    }
    Ok(out)
}

/// A C string, or a typed error naming `what` when `bytes` holds a NUL.
fn c_string(bytes: &[u8], what: &str) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| {
        SpawnError::new(
            SpawnFailure::Other,
            format!(
                "{what} {:?} contains a NUL byte, which cannot be passed to a program",
                String::from_utf8_lossy(bytes)
            ),
        )
    })
}

fn setup_error(message: String) -> SpawnError {
    SpawnError::new(SpawnFailure::Setup, message)
}

/// A close-on-exec pipe `(read, write)`.
fn pipe(what: &str) -> Result<(OwnedFd, OwnedFd), SpawnError> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| {
        setup_error(format!(
            "cannot create the job's {what} pipe: {e} (out of descriptors?)"
        ))
    })
}

fn set_nonblocking(fd: &OwnedFd, what: &str) -> Result<(), SpawnError> {
    fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))
        .map(drop)
        .map_err(|e| {
            setup_error(format!(
                "cannot make the job's {what} pipe non-blocking: {e}"
            ))
        })
}

/// Moves `fd` to a number `>= 3` (close-on-exec) if it is one of 0, 1, 2.
fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, SpawnError> {
    if fd.as_raw_fd() >= 3 {
        return Ok(fd);
    }
    // `try_clone` duplicates with F_DUPFD_CLOEXEC starting at 3.
    fd.try_clone()
        .map_err(|e| setup_error(format!("cannot duplicate a job pipe descriptor: {e}")))
}

/// Decodes a raw `wait` status.
fn termination_from_wait_status(status: i32) -> Termination {
    if libc::WIFSIGNALED(status) {
        Termination::Signaled(libc::WTERMSIG(status))
    } else {
        Termination::Exited(libc::WEXITSTATUS(status))
    }
}

/// A running (or exited, not yet reaped) job process: the target program itself, or
/// the init of its namespaces when isolated.
///
/// Its [`AsRawFd`] descriptor is the pidfd of that first process: it becomes readable
/// when the process exits (usable with tokio's `AsyncFd`); then call
/// [`ChildProcess::try_reap`].
///
/// Dropping a `ChildProcess` that was not reaped kills it ([`ChildProcess::kill`]) and
/// reaps it, blocking until the kernel has ended it. The manager should always reap
/// explicitly; this is the last resort that guarantees no zombie is left.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    pid: u32,
    pidfd: OwnedFd,
    /// Read end of the init's status pipe (isolated jobs only).
    status: Option<OwnedFd>,
    /// The termination, once reaped.
    reaped: Option<Termination>,
}

#[allow(
    dead_code,
    reason = "API of the job manager, which calls it from its own module"
)]
impl ChildProcess {
    /// Host pid of the first process (the init when isolated).
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the job runs in its own namespaces under an init.
    pub(crate) fn is_isolated(&self) -> bool {
        self.status.is_some()
    }

    /// Reaps the first process if it has exited, without blocking. Returns the
    /// **target program's** termination, also when isolated (reported by the init);
    /// when the init itself was killed before the target ended (e.g. by
    /// [`ChildProcess::kill`]), the init's own termination (`Signaled(9)`).
    /// After a successful reap, every later call returns the same value.
    pub(crate) fn try_reap(&mut self) -> io::Result<Option<Termination>> {
        if let Some(t) = self.reaped {
            return Ok(Some(t));
        }
        let Some(own) = sys::pidfd_try_wait(self.pidfd.as_fd())? else {
            return Ok(None);
        };
        let t = self.target_termination(own);
        self.reaped = Some(t);
        Ok(Some(t))
    }

    /// Waits for the first process to exit and reaps it (blocking).
    pub(crate) fn wait_blocking(&mut self) -> io::Result<Termination> {
        if let Some(t) = self.reaped {
            return Ok(t);
        }
        let own = sys::pidfd_wait(self.pidfd.as_fd())?;
        let t = self.target_termination(own);
        self.reaped = Some(t);
        Ok(t)
    }

    /// The target's status from the status pipe, else the first process's own.
    fn target_termination(&self, own: Termination) -> Termination {
        let Some(status) = &self.status else {
            return own;
        };
        let mut buf = [0u8; 4];
        // A 4-byte pipe write is atomic: all or nothing. Non-blocking read end.
        match nix::unistd::read(status, &mut buf) {
            Ok(4) => termination_from_wait_status(i32::from_ne_bytes(buf)),
            _ => own,
        }
    }

    /// Sends `sig` to the job's main program (through the init when isolated; it
    /// forwards it to the target only). Uses the pidfd, so it cannot hit a recycled pid.
    pub(crate) fn signal(&self, sig: i32) -> io::Result<()> {
        let value = self.is_isolated().then_some(init::SIGNAL_TARGET_ONLY);
        sys::pidfd_send_signal(self.pidfd.as_fd(), sig, value)
    }

    /// Sends SIGTERM to every process of the job it can reach: when isolated, the init
    /// does `kill(-1, SIGTERM)` inside the namespace; else the job's process group
    /// (the target leads its own session). Processes that left the group are only
    /// reachable through the job's cgroup. Not an error when nothing is left.
    pub(crate) fn terminate(&self) -> io::Result<()> {
        if self.is_isolated() {
            return ignore_gone(sys::pidfd_send_signal(
                self.pidfd.as_fd(),
                libc::SIGTERM,
                Some(init::SIGNAL_TERMINATE_ALL),
            ));
        }
        self.signal_group(libc::SIGTERM)
    }

    /// Sends SIGKILL to everything: when isolated, to the init, which ends the whole
    /// namespace; else to the process group and the target. Not an error when nothing
    /// is left.
    pub(crate) fn kill(&self) -> io::Result<()> {
        if self.reaped.is_none() {
            ignore_gone(sys::pidfd_send_signal(
                self.pidfd.as_fd(),
                libc::SIGKILL,
                None,
            ))?;
        }
        if self.is_isolated() {
            return Ok(());
        }
        self.signal_group(libc::SIGKILL)
    }

    /// Signals the target's process group. The group id is the target's pid; it cannot
    /// be recycled while any process of the group (or the unreaped leader) exists.
    fn signal_group(&self, sig: i32) -> io::Result<()> {
        match sys::kill(-(self.pid as i32), sig) {
            Ok(()) => Ok(()),
            Err(e) if e.0 == libc::ESRCH => Ok(()),
            Err(e) => Err(e.to_io()),
        }
    }
}

/// `ESRCH` (already exited) is not an error for terminate/kill.
fn ignore_gone(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        r => r,
    }
}

impl AsRawFd for ChildProcess {
    fn as_raw_fd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }
}

impl AsFd for ChildProcess {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if self.reaped.is_some() {
            return;
        }
        let _ = self.kill();
        let _ = self.wait_blocking();
    }
}

/// Entry points for `server/benches/spawn.rs`, a separate crate that cannot reach
/// `pub(crate)` items. Not a supported API.
#[doc(hidden)]
pub mod bench_hooks {
    use std::path::Path;

    use qexec_protocol::Termination;

    use super::{IsolationConfig, SpawnConfig, spawn};

    /// Spawns `argv` (cwd `/`, environment `env`, stdin `/dev/null`), optionally
    /// isolated, waits for its first process to end and reaps it.
    pub fn spawn_and_wait(
        argv: &[Vec<u8>],
        env: &[(Vec<u8>, Vec<u8>)],
        isolated: bool,
    ) -> Result<Termination, String> {
        let iso = IsolationConfig {
            hostname: "qexec-bench".to_owned(),
            private_tmp: true,
        };
        let config = SpawnConfig {
            argv,
            env,
            cwd: Path::new("/"),
            stdin: false,
            isolation: isolated.then_some(&iso),
            cgroup_procs: &[],
            credentials: None,
        };
        let mut child = spawn(&config).map_err(|e| e.message)?;
        child
            .process
            .wait_blocking()
            .map_err(|e| format!("cannot reap job process {}: {e}", child.pid))
    }

    /// Whether isolated spawns work here; the reason when not.
    pub fn isolation_available() -> Result<(), String> {
        super::isolation_available().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    use super::*;

    /// Upper bound for any single wait in these tests.
    pub(in crate::job) const TIMEOUT: Duration = Duration::from_secs(20);

    /// True when the test may run as root; false (with a printed reason) when it must
    /// be skipped. Panics when not root and `CI=true`.
    pub(in crate::job) fn have_root(what: &str) -> bool {
        if nix::unistd::geteuid().is_root() {
            return true;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} needs root and CI=true: run the test suite as root"
        );
        eprintln!("skipping {what}: needs root (not root, and CI is not \"true\")");
        false
    }

    pub(in crate::job) fn args(list: &[&str]) -> Vec<Vec<u8>> {
        list.iter().map(|a| a.as_bytes().to_vec()).collect()
    }

    pub(in crate::job) fn sh(script: &str) -> Vec<Vec<u8>> {
        args(&["/bin/sh", "-c", script])
    }

    /// A config with cwd `/`, no stdin, no isolation, default environment.
    pub(in crate::job) fn config<'a>(
        argv: &'a [Vec<u8>],
        iso: Option<&'a IsolationConfig>,
    ) -> SpawnConfig<'a> {
        SpawnConfig {
            argv,
            env: &[],
            cwd: Path::new("/"),
            stdin: false,
            isolation: iso,
            cgroup_procs: &[],
            credentials: None,
        }
    }

    /// Waits (bounded) for the first process to exit, then reaps it.
    pub(in crate::job) fn wait_exit(child: &mut ChildProcess) -> Termination {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(t) = child.try_reap().expect("reap") {
                return t;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "job process {} did not exit in time",
                child.pid
            );
            let mut fds = [PollFd::new(child.as_fd(), PollFlags::POLLIN)];
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let _ = poll(&mut fds, PollTimeout::from(ms));
        }
    }

    /// Reads from `fd` until `pred(data)` holds or EOF; bounded by [`TIMEOUT`].
    pub(in crate::job) fn read_until(fd: &OwnedFd, pred: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + TIMEOUT;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !pred(&out) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "timed out reading; got {:?}",
                String::from_utf8_lossy(&out)
            );
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let _ = poll(&mut fds, PollTimeout::from(ms));
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                Err(e) => panic!("read failed: {e}"),
            }
        }
        out
    }

    /// Reads `fd` to EOF (bounded).
    pub(in crate::job) fn read_to_eof(fd: &OwnedFd) -> Vec<u8> {
        read_until(fd, |_| false)
    }

    /// Spawns, collects stdout and stderr to EOF, reaps.
    pub(in crate::job) fn run(config: &SpawnConfig<'_>) -> (Termination, String, String) {
        let mut child = spawn(config).expect("spawn");
        let out = read_to_eof(&child.stdout);
        let err = read_to_eof(&child.stderr);
        let t = wait_exit(&mut child.process);
        (
            t,
            String::from_utf8(out).expect("utf-8 stdout"),
            String::from_utf8(err).expect("utf-8 stderr"),
        )
    }

    fn spawn_err(config: &SpawnConfig<'_>) -> SpawnError {
        match spawn(config) {
            Ok(c) => panic!("spawn of {:?} succeeded (pid {})", config.argv, c.pid),
            Err(e) => e,
        }
    }

    fn write_file(path: &Path, body: &str, mode: u32) {
        std::fs::write(path, body).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn empty_argv_is_its_own_error() {
        let e = spawn_err(&config(&[], None));
        assert_eq!(e.failure, SpawnFailure::EmptyArgv, "{e}");
    }

    #[test]
    fn missing_program_is_not_found() {
        for name in ["qexec-surely-not-a-program", "/nonexistent/dir/prog"] {
            let argv = args(&[name]);
            let e = spawn_err(&config(&argv, None));
            assert_eq!(e.failure, SpawnFailure::NotFound, "{name}: {e}");
        }
        // A file inside a regular file (ENOTDIR) is also "not found".
        let argv = args(&["/bin/sh/x"]);
        assert_eq!(
            spawn_err(&config(&argv, None)).failure,
            SpawnFailure::NotFound
        );
        // An empty PATH entry list without the program: not found.
        let env = vec![(b"PATH".to_vec(), b"/nonexistent".to_vec())];
        let argv = args(&["sh"]);
        let mut c = config(&argv, None);
        c.env = &env;
        assert_eq!(spawn_err(&c).failure, SpawnFailure::NotFound);
    }

    #[test]
    fn non_executables_are_not_executable() {
        let dir = tempfile::tempdir().unwrap();
        let no_x = dir.path().join("no-x");
        write_file(&no_x, "#!/bin/sh\nexit 0\n", 0o644);
        // Execute bit but no #! and not ELF: execve fails with ENOEXEC in the child.
        let garbage = dir.path().join("garbage");
        write_file(&garbage, "\x01\x02 this is no program\n", 0o755);
        for p in [&no_x, &garbage, &dir.path().to_path_buf()] {
            let argv = vec![p.as_os_str().as_bytes().to_vec()];
            let e = spawn_err(&config(&argv, None));
            assert_eq!(
                e.failure,
                SpawnFailure::NotExecutable,
                "{}: {e}",
                p.display()
            );
        }
        // Through PATH too.
        let env = vec![(b"PATH".to_vec(), dir.path().as_os_str().as_bytes().to_vec())];
        let argv = args(&["no-x"]);
        let mut c = config(&argv, None);
        c.env = &env;
        assert_eq!(spawn_err(&c).failure, SpawnFailure::NotExecutable);
    }

    #[test]
    fn inaccessible_program_is_permission_denied() {
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("prog");
        write_file(&prog, "#!/bin/sh\nexit 0\n", 0o700);
        let argv = vec![prog.as_os_str().as_bytes().to_vec()];
        if nix::unistd::geteuid().is_root() {
            // Root passes every access check, so run the job as nobody: the execve in
            // the child then fails with EACCES.
            let mut c = config(&argv, None);
            c.credentials = Some((65534, 65534));
            let e = spawn_err(&c);
            assert_eq!(e.failure, SpawnFailure::PermissionDenied, "{e}");
        } else {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o000)).unwrap();
            let e = spawn_err(&config(&argv, None));
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
            assert_eq!(e.failure, SpawnFailure::PermissionDenied, "{e}");
        }
    }

    #[test]
    fn bad_cwd_is_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        write_file(&file, "", 0o644);
        let missing = dir.path().join("missing");
        let argv = args(&["/bin/true"]);
        for cwd in [&file, &missing] {
            let mut c = config(&argv, None);
            c.cwd = cwd;
            let e = spawn_err(&c);
            assert_eq!(e.failure, SpawnFailure::BadCwd, "{}: {e}", cwd.display());
        }
    }

    #[test]
    fn exit_code_and_signal_are_exact() {
        let argv = sh("exit 3");
        assert_eq!(run(&config(&argv, None)).0, Termination::Exited(3));
        let argv = sh("kill -9 $$");
        assert_eq!(run(&config(&argv, None)).0, Termination::Signaled(9));
        let argv = args(&["true"]);
        assert_eq!(run(&config(&argv, None)).0, Termination::Exited(0));
    }

    #[test]
    fn stdio_env_and_cwd_reach_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let argv = sh("echo \"out:$FOO:$(pwd)\"; echo err >&2; cat");
        let env = vec![(b"FOO".to_vec(), b"bar baz".to_vec())];
        let mut c = config(&argv, None);
        c.env = &env;
        c.cwd = dir.path();
        c.stdin = true;
        let mut child = spawn(&c).unwrap();
        let mut stdin = File::from(child.stdin.take().unwrap());
        stdin.write_all(b"from stdin\n").unwrap();
        drop(stdin);
        let out = read_to_eof(&child.stdout);
        let err = read_to_eof(&child.stderr);
        assert_eq!(wait_exit(&mut child.process), Termination::Exited(0));
        let real = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("out:bar baz:{}\nfrom stdin\n", real.display())
        );
        assert_eq!(err, b"err\n");
    }

    #[test]
    fn default_path_is_used_and_given_to_the_job() {
        let argv = args(&["sh", "-c", "echo \"$PATH\""]);
        let (t, out, _) = run(&config(&argv, None));
        assert_eq!(t, Termination::Exited(0));
        assert_eq!(out, format!("{DEFAULT_PATH}\n"));
    }

    #[test]
    fn job_starts_clean_new_session_no_new_privs_no_ignored_signals() {
        // The test harness (like the server) ignores SIGPIPE; the job must not.
        let argv = sh("grep -E '^(SigIgn|SigBlk|NoNewPrivs):' /proc/self/status; \
             ps_sid=$(cut -d' ' -f6 /proc/$$/stat); [ \"$ps_sid\" = $$ ] && echo leader; \
             ls /proc/self/fd");
        let (t, out, err) = run(&config(&argv, None));
        assert_eq!(t, Termination::Exited(0), "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.contains(&"NoNewPrivs:\t1"), "{out}");
        assert!(lines.contains(&"SigIgn:\t0000000000000000"), "{out}");
        assert!(lines.contains(&"SigBlk:\t0000000000000000"), "{out}");
        assert!(
            lines.contains(&"leader"),
            "the job must lead its own session: {out}"
        );
        // `ls` sees 0, 1, 2 and its own directory fd: nothing leaked from the server.
        let fds: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.parse::<u32>().is_ok())
            .collect();
        assert_eq!(fds, ["0", "1", "2", "3"], "{out}");
    }

    #[test]
    fn credentials_drop_uid_gid_and_groups() {
        if !have_root("credentials_drop_uid_gid_and_groups") {
            return;
        }
        let argv = sh("id -u; id -g; id -G");
        let mut c = config(&argv, None);
        c.credentials = Some((65534, 65533));
        let (t, out, err) = run(&c);
        assert_eq!(t, Termination::Exited(0), "{err}");
        assert_eq!(out, "65534\n65533\n65533\n");
    }

    #[test]
    fn child_writes_zero_to_each_cgroup_procs_fd() {
        // Pipes stand in for cgroup.procs files: the child must write "0" to each.
        let (r1, w1) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let (r2, w2) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let procs = [w1.as_fd(), w2.as_fd()];
        let argv = args(&["/bin/true"]);
        let mut c = config(&argv, None);
        c.cgroup_procs = &procs;
        let (t, _, _) = run(&c);
        assert_eq!(t, Termination::Exited(0));
        drop((w1, w2));
        assert_eq!(read_to_eof(&r1), b"0");
        assert_eq!(read_to_eof(&r2), b"0");
    }

    #[test]
    fn signal_reaches_the_program_and_terminate_kill_reach_the_group() {
        let argv = args(&["sleep", "1000"]);
        let mut child = spawn(&config(&argv, None)).unwrap();
        child.process.signal(libc::SIGUSR1).unwrap();
        assert_eq!(
            wait_exit(&mut child.process),
            Termination::Signaled(libc::SIGUSR1)
        );

        for (kill, sig) in [(false, libc::SIGTERM), (true, libc::SIGKILL)] {
            // Two background sleeps hold stdout: EOF proves the whole group died.
            let argv = sh("sleep 1000 & sleep 1000 & echo ready; wait");
            let mut child = spawn(&config(&argv, None)).unwrap();
            read_until(&child.stdout, |d| d.ends_with(b"ready\n"));
            if kill {
                child.process.kill().unwrap();
            } else {
                child.process.terminate().unwrap();
            }
            assert_eq!(wait_exit(&mut child.process), Termination::Signaled(sig));
            read_to_eof(&child.stdout);
            // Terminating a reaped job is not an error.
            child.process.terminate().unwrap();
            child.process.kill().unwrap();
        }
    }

    #[test]
    fn dropping_an_unreaped_child_kills_and_reaps_it() {
        let argv = args(&["sleep", "1000"]);
        let child = spawn(&config(&argv, None)).unwrap();
        let pid = child.pid;
        drop(child);
        // Reaped: no /proc entry (not even a zombie) for our former child.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        if let Ok(stat) = stat {
            // Only acceptable if the pid was reused by an unrelated process.
            let ppid: u32 = stat
                .rsplit(") ")
                .next()
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            assert_ne!(
                ppid,
                std::process::id(),
                "pid {pid} still our child: {stat}"
            );
        }
    }

    /// When qexecd goes away (the read end of the status pipe closes), the init exits
    /// and the kernel ends the whole job.
    #[test]
    fn isolated_job_dies_with_the_server_side_of_its_status_pipe() {
        if !have_root("isolated_job_dies_with_the_server_side_of_its_status_pipe") {
            return;
        }
        let iso = IsolationConfig {
            hostname: "qexec-test".into(),
            private_tmp: true,
        };
        let argv = sh("sleep 1000 & echo ready; wait");
        let mut child = spawn(&config(&argv, Some(&iso))).unwrap();
        read_until(&child.stdout, |d| d.ends_with(b"ready\n"));
        // Simulate the server's death: close our end of the status pipe.
        drop(child.process.status.take());
        assert_eq!(
            wait_exit(&mut child.process),
            Termination::Exited(init::EXIT_ORPHANED)
        );
        // Every holder of the stdout pipe (sh, sleep) is gone.
        read_to_eof(&child.stdout);
    }

    /// Runs one `#[test]` of this binary in a fresh process (so that fd counts are not
    /// disturbed by tests running in parallel) with `QEXEC_TEST_HELPER=<name>`.
    pub(in crate::job) fn run_helper(test: &str, env: &[(&str, String)]) -> std::process::Output {
        let exe = std::env::current_exe().unwrap();
        let mut cmd = std::process::Command::new(exe);
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]);
        cmd.env("QEXEC_TEST_HELPER", test);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// Whether this process is the helper run of `test`.
    pub(in crate::job) fn is_helper(test: &str) -> bool {
        std::env::var("QEXEC_TEST_HELPER").as_deref() == Ok(test)
    }

    fn fd_count() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    /// 200 spawns + reaps (and, as root, 50 isolated ones) leave no fd and no zombie.
    /// Runs the loop in a fresh process where nothing else opens descriptors.
    #[test]
    fn no_fd_leak_and_no_zombie_after_many_spawns() {
        const NAME: &str = "job::spawn::tests::no_fd_leak_and_no_zombie_after_many_spawns";
        if !is_helper(NAME) {
            let out = run_helper(NAME, &[]);
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "helper failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                text.contains("FD-CHECK ok"),
                "helper did not run the check: {text}"
            );
            return;
        }
        let isolated = nix::unistd::geteuid().is_root();
        let iso = IsolationConfig {
            hostname: "qexec-test".into(),
            private_tmp: true,
        };
        // Warm up lazily-opened descriptors (e.g. /dev/null probing by std).
        let argv = args(&["/bin/true"]);
        run(&config(&argv, None));
        let before = fd_count();
        for i in 0..200 {
            let argv = if i % 2 == 0 {
                args(&["/bin/true"])
            } else {
                sh("echo x; exit 1")
            };
            let (t, _, _) = run(&config(&argv, None));
            assert!(matches!(t, Termination::Exited(0 | 1)));
        }
        if isolated {
            for _ in 0..50 {
                let argv = args(&["/bin/true"]);
                assert_eq!(run(&config(&argv, Some(&iso))).0, Termination::Exited(0));
            }
        }
        let after = fd_count();
        assert_eq!(before, after, "descriptors leaked");
        // No child left at all (reaped, none forgotten).
        assert_eq!(
            nix::sys::wait::waitpid(None, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
            Err(nix::errno::Errno::ECHILD)
        );
        println!("FD-CHECK ok before={before} after={after} isolated={isolated}");
    }
}
