//! Parent-side preparation of an isolated job: its namespace settings, the server
//! binary to re-execute as the job's init, and the init's command line and parameter
//! file (decoded by `sys::init`).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use qexec_protocol::{JobId, SpawnFailure};

use super::error::{SpawnError, setup_error};
use super::pipes::{pipe, set_nonblocking};
use crate::seccomp::Program;
use crate::sys::plan::ChildIsolation;
use crate::sys::pty::WinSize;
use crate::sys::sandbox::JobSandbox;
use crate::sys::{self, CStringArray};

/// Longest hostname the kernel accepts (`HOST_NAME_MAX`).
const HOST_NAME_MAX: usize = 64;

/// Namespace isolation settings for one job.
#[derive(Debug, Clone)]
pub(crate) struct IsolationConfig {
    /// Hostname inside the job's UTS namespace (at most 64 bytes).
    pub(crate) hostname: String,
    /// Mount a private tmpfs on `/tmp` (mode 1777; its pages are charged to the job's
    /// memory cgroup). Without the sandbox only; the sandbox's plan has its own.
    pub(crate) private_tmp: bool,
    /// A new network namespace (only `lo`); `false`: the host's network.
    pub(crate) own_network: bool,
    /// The job's sandbox (user namespace, new root, cgroup namespace, capabilities),
    /// set up by the init; `None`: namespaces only.
    pub(crate) sandbox: Option<JobSandbox>,
}

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
            own_network: true,
            sandbox: None,
        }
    }
}

/// The server binary, opened once (close-on-exec), to be executed as the init.
fn self_exe() -> io::Result<BorrowedFd<'static>> {
    sys::keep_hook_linked();
    static SELF_EXE: OnceLock<Result<OwnedFd, i32>> = OnceLock::new();
    match SELF_EXE.get_or_init(|| {
        File::open("/proc/self/exe")
            .map(OwnedFd::from)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    }) {
        Ok(fd) => Ok(fd.as_fd()),
        Err(errno) => Err(io::Error::from_raw_os_error(*errno)),
    }
}

/// What the init needs to know, passed on its command line.
#[derive(Debug)]
pub(super) struct InitArgs<'a> {
    pub(super) err_fd: RawFd,
    pub(super) stdio: [RawFd; 3],
    pub(super) cwd: &'a [u8],
    pub(super) credentials: Option<(u32, u32)>,
    /// The target's seccomp filter.
    pub(super) seccomp: Option<&'a Program>,
    pub(super) path: &'a [u8],
    pub(super) argv: &'a [Vec<u8>],
    /// The target's environment (`KEY=VALUE`).
    pub(super) env: &'a [CString],
    /// The job's sandbox, set up by the init.
    pub(super) sandbox: Option<&'a JobSandbox>,
    /// A terminal job: the init's end of the socket pair, and the window size.
    pub(super) terminal: Option<(RawFd, WinSize)>,
}

/// The init's command line and its parameter file.
#[derive(Debug)]
struct InitCommand {
    /// `qexec-init MAGIC status err stdin stdout stderr params [pty:SOCK:ROWS:COLS:W:H]`
    /// (descriptor numbers; the last only for a terminal job).
    argv: CStringArray,
    /// A memfd holding the rest (see [`init_command`]).
    params: OwnedFd,
}

/// Builds the init's command line. Only descriptor numbers go on it; the rest (cwd,
/// credentials, program path, the target's argv and **environment**) is written to a
/// memfd as NUL-terminated strings — `cwd creds seccomp path N argv[0..N] sandbox
/// env...` (`creds` is `-` or `uid:gid`; `seccomp` is `-` or the filter's instructions
/// in hex, [`Program::hex`]; `sandbox` is `-` or the fields of `JobSandbox::encode`) —
/// because a command line is readable by every user of the host
/// (`/proc/PID/cmdline`) and a job's environment may hold secrets. The init itself is
/// executed with an **empty environment**: the job's environment (which the job's
/// owner controls, e.g. `LD_PRELOAD` or `GLIBC_TUNABLES`) must not reach the dynamic
/// loader of the init, which keeps the server's privileges; only the target gets it.
fn init_command(a: &InitArgs<'_>, status_fd: RawFd) -> Result<InitCommand, SpawnError> {
    let fd = |n: RawFd| CString::new(n.to_string()).unwrap_or_default();
    let mut params: Vec<u8> = Vec::new();
    let mut push = |bytes: &[u8], what: &str| -> Result<(), SpawnError> {
        if bytes.contains(&0) {
            return Err(SpawnError::new(
                SpawnFailure::Other,
                format!("{what} contains a NUL byte, which cannot be passed to a program"),
            ));
        }
        params.extend_from_slice(bytes);
        params.push(0);
        Ok(())
    };
    push(a.cwd, "the working directory")?;
    match a.credentials {
        None => push(b"-", "credentials")?,
        Some((uid, gid)) => push(format!("{uid}:{gid}").as_bytes(), "credentials")?,
    }
    match a.seccomp {
        None => push(b"-", "seccomp filter")?,
        Some(program) => push(program.hex().as_bytes(), "seccomp filter")?,
    }
    push(a.path, "the program path")?;
    push(a.argv.len().to_string().as_bytes(), "argc")?;
    for arg in a.argv {
        push(arg, "an argument")?;
    }
    for field in JobSandbox::encode(a.sandbox) {
        push(&field, "a sandbox path")?;
    }
    for kv in a.env {
        push(kv.as_bytes(), "an environment variable")?;
    }
    let io_err = |e: io::Error| {
        SpawnError::new(
            SpawnFailure::Setup,
            format!("cannot pass the job's parameters to its init (memfd): {e}"),
        )
    };
    let mut file = File::from(sys::memfd(c"qexec-init-params").map_err(io_err)?);
    file.write_all(&params).map_err(io_err)?;
    let params = OwnedFd::from(file);
    let argv = CStringArray::new(
        vec![
            c"qexec-init".to_owned(),
            sys::INIT_MODE_MAGIC.to_owned(),
            fd(status_fd),
            fd(a.err_fd),
            fd(a.stdio[0]),
            fd(a.stdio[1]),
            fd(a.stdio[2]),
            fd(params.as_raw_fd()),
        ]
        .into_iter()
        .chain(a.terminal.map(|(sock, s)| {
            let arg = format!(
                "pty:{sock}:{}:{}:{}:{}",
                s.rows, s.cols, s.width_px, s.height_px
            );
            CString::new(arg).unwrap_or_default()
        }))
        .collect(),
    );
    Ok(InitCommand { argv, params })
}

/// Everything the parent prepares for an isolated spawn: the status pipe, the server
/// binary to execute as the init, and the init's command line and parameter file.
#[derive(Debug)]
pub(super) struct Prepared<'a> {
    hostname: &'a [u8],
    private_tmp: bool,
    sandboxed: bool,
    own_network: bool,
    terminal_sock: Option<RawFd>,
    /// Status pipe `(read, write)`: the init writes the target's wait status.
    pub(super) status: (OwnedFd, OwnedFd),
    self_exe: RawFd,
    command: InitCommand,
    /// The init's environment: empty (see [`init_command`]).
    envp: CStringArray,
}

impl<'a> Prepared<'a> {
    /// Checks the hostname, creates the status pipe and builds the init's command.
    pub(super) fn new(iso: &'a IsolationConfig, args: &InitArgs<'_>) -> Result<Self, SpawnError> {
        if iso.hostname.is_empty() || iso.hostname.len() > HOST_NAME_MAX {
            return Err(SpawnError::new(
                SpawnFailure::Setup,
                format!(
                    "invalid job hostname {:?}: it must be 1 to {HOST_NAME_MAX} bytes",
                    iso.hostname
                ),
            ));
        }
        let (r, w) = pipe("status")?;
        set_nonblocking(&r, "status")?;
        let self_exe = self_exe().map_err(|e| {
            setup_error(format!(
                "cannot open /proc/self/exe to run the job's init: {e}; isolation needs /proc"
            ))
        })?;
        let command = init_command(args, w.as_raw_fd())?;
        Ok(Self {
            hostname: iso.hostname.as_bytes(),
            private_tmp: iso.private_tmp,
            sandboxed: iso.sandbox.is_some(),
            own_network: iso.own_network,
            terminal_sock: args.terminal.map(|(sock, _)| sock),
            status: (r, w),
            self_exe: self_exe.as_raw_fd(),
            command,
            envp: CStringArray::new(Vec::new()),
        })
    }

    /// The child side's view (raw descriptors, borrowed C data).
    pub(super) fn child(&self) -> ChildIsolation<'_> {
        ChildIsolation {
            hostname: self.hostname,
            private_tmp: self.private_tmp,
            status_fd: self.status.1.as_raw_fd(),
            self_exe: self.self_exe,
            init_argv: &self.command.argv,
            params_fd: self.command.params.as_raw_fd(),
            init_envp: &self.envp,
            sandboxed: self.sandboxed,
            own_network: self.own_network,
            terminal_sock: self.terminal_sock,
        }
    }
}
