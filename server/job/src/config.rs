//! The library's inputs: the manager's settings, one start's request, and what the
//! host offers.

use std::path::PathBuf;
use std::time::Duration;

use qexec_protocol::{Limits, TerminalSpec};

use crate::cgroup::{CgroupCapabilities, DeviceNumber, HostLayout};
use crate::sandbox::SandboxConfig;
#[cfg(doc)]
use crate::{JobManager, StartError};

/// Server-side settings of a [`JobManager`].
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Where the job database (`jobs.db`) and per-job output logs (`jobs/<id>/`)
    /// live; they survive restarts (spec: QX-DUR-1). Default: `/var/lib/qexec` for root,
    /// `$XDG_STATE_HOME/qexec` (or `~/.local/state/qexec`) otherwise.
    pub state_dir: PathBuf,
    /// Maximum number of jobs running at once.
    pub max_running_jobs: usize,
    /// Maximum combined output bytes kept per job; past it the job is stopped with
    /// `StopReason::OutputLimit` and `output_truncated` is set.
    pub output_cap: u64,
    /// Grace period used when a stop does not give one (also for timeouts, the
    /// output cap and shutdown). Default: the protocol's
    /// [`DEFAULT_GRACE`](qexec_protocol::limits::DEFAULT_GRACE), 5 s; a server that
    /// speaks qexec/1 keeps it (spec: QX-LIMIT-18).
    pub default_grace: Duration,
    /// Limits applied when a request leaves one unset.
    pub default_limits: Limits,
    /// Largest limits a request may ask for; above them a start is refused.
    pub max_limits: Limits,
    /// Ended jobs kept per owner (status and output); past it the owner's oldest is
    /// forgotten and its output deleted (spec: QX-DUR-3). Default 1000.
    pub retain_finished: usize,
    /// Ended jobs older than this (since their end) are forgotten; `None` keeps them
    /// regardless of age. Default 30 days.
    pub retain_age: Option<Duration>,
    /// Total bytes of the output logs of ended jobs; past it the oldest ended jobs of
    /// any owner are forgotten, each logged (spec: QX-DUR-4). Default 16 GiB.
    pub log_budget: u64,
    /// How long output pipes are still read after the job's main process exited,
    /// when other processes of the job keep them open; then they are killed and the
    /// job ends.
    pub output_drain: Duration,
    /// Run each job in its own PID, mount, network, UTS and IPC namespaces when the
    /// host allows it (root, kernel support); when it does not, jobs run without and
    /// [`Capabilities::isolation_unavailable`] says why. Default: on.
    pub isolation: bool,
    /// Put each job in its own cgroup (limits, usage, whole-job kill) when the host
    /// allows it (root, cgroups mounted); when it does not, jobs without limits still
    /// run and [`Capabilities::cgroups`] says why. Default: on.
    pub cgroups: bool,
    /// Name of the directory holding the job cgroups in each hierarchy. Default
    /// [`crate::cgroup::DEFAULT_SUBTREE`] (`qexec`). Job cgroups found there at start-up
    /// are stale (a crashed server's): their processes are killed and they are removed.
    /// Managers using one subtree at once hold a lock on it: a manager that is not
    /// alone there skips that cleanup (and leaves the subtree in place when it goes),
    /// so it never touches the jobs of another; still, give each its own subtree.
    pub cgroup_subtree: String,
    /// Disks (whole-disk `major:minor`) IO limits apply to when no block device backs
    /// the job's working directory (tmpfs, overlay). Empty: such a start with IO
    /// limits is refused.
    pub io_devices: Vec<DeviceNumber>,
    /// Run every job's program as this `(uid, gid)` with no supplementary groups,
    /// when set. Default `None`: jobs run as the server's own user (root in the
    /// intended deployment), because the commands people send to a remote machine
    /// (package installs, device access, reading any file) often need it; namespaces
    /// and cgroups confine a job but are no security boundary against root. Set it
    /// (qexecd `--job-user nobody`) for untrusted work such as fuzzing farms. The
    /// isolated init keeps the server's identity to set up the namespaces; only the
    /// target program drops to these credentials, with `no_new_privs`.
    pub job_credentials: Option<(u32, u32)>,
    /// Run every job's program under the default seccomp filter (a deny list answered
    /// `EPERM`: kernel modules, kexec, eBPF, perf events, the keyring, mounts, new
    /// namespaces, clock setting…; spec/security.md QX-SBX-20..25), installed last
    /// before `execve`, isolated or not. Default: on. Turning it off (qexecd
    /// `--no-seccomp`) weakens isolation; with it on, [`JobManager::new`] fails when
    /// the architecture or the kernel cannot filter
    /// ([`ManagerError::Seccomp`](crate::ManagerError::Seccomp)).
    pub seccomp: bool,
    /// The sandbox of isolated jobs (user namespace, read-only host, fresh `/proc`,
    /// `/sys`, `/dev`, `/tmp`, cgroup namespace, reduced capabilities), on by default
    /// when the host allows it; see `spec/security.md` QX-SBX-*. With it, root in a
    /// job is a host uid of its own (`job_credentials` then apply inside the job's
    /// user namespace).
    pub sandbox: SandboxConfig,
}

impl ManagerConfig {
    /// Defaults for a state directory.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: state_dir.into(),
            max_running_jobs: 1024,
            output_cap: 8 << 30,
            // spec: QX-LIMIT-18
            default_grace: qexec_protocol::limits::DEFAULT_GRACE,
            default_limits: Limits::default(),
            max_limits: Limits::default(),
            retain_finished: 1000,
            retain_age: Some(Duration::from_secs(30 * 24 * 3600)),
            log_budget: 16 << 30,
            output_drain: Duration::from_secs(1),
            isolation: true,
            cgroups: true,
            cgroup_subtree: crate::cgroup::DEFAULT_SUBTREE.to_owned(),
            io_devices: Vec::new(),
            job_credentials: None,
            seccomp: true,
            sandbox: SandboxConfig::default(),
        }
    }

    /// The default state directory: `/var/lib/qexec` for root;
    /// `$XDG_STATE_HOME/qexec` (when set and absolute), else
    /// `$HOME/.local/state/qexec`, else `/tmp/qexec-<uid>` for other users.
    pub fn default_state_dir() -> PathBuf {
        let uid = nix::unistd::geteuid();
        if uid.is_root() {
            return PathBuf::from("/var/lib/qexec");
        }
        if let Some(xdg) = std::env::var_os("XDG_STATE_HOME").map(PathBuf::from)
            && xdg.is_absolute()
        {
            return xdg.join("qexec");
        }
        if let Some(home) = std::env::var_os("HOME").map(PathBuf::from)
            && home.is_absolute()
        {
            return home.join(".local/state/qexec");
        }
        PathBuf::from(format!("/tmp/qexec-{uid}"))
    }
}

/// What one start asks for.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Program and arguments, raw bytes.
    pub argv: Vec<Vec<u8>>,
    /// The whole environment (a default `PATH` is added if absent).
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// Working directory (`/` when `None`).
    pub cwd: Option<PathBuf>,
    /// Give the job a stdin pipe (else `/dev/null`).
    pub stdin: bool,
    /// Wall-clock timeout.
    pub timeout: Option<Duration>,
    /// Identity of whoever started it.
    pub owner: String,
    /// Requested limits.
    pub limits: Limits,
    /// Whoever starts it may run a job as host root: when the sandbox is not active
    /// and the job would run as root (no `job_credentials`), a start without it is
    /// refused ([`StartError::HostRootRefused`]) unless
    /// [`SandboxConfig::insecure_root_jobs`]. The service sets it for `admin`.
    pub host_root_allowed: bool,
    /// Run the job on a terminal (a PTY, in the job's own devpts when sandboxed): it
    /// is the job's stdin, stdout and stderr (`stdin` is ignored), `TERM` is set from
    /// it, and the job's output is the terminal's, recorded as stdout
    /// (spec: QX-TERM-5 to QX-TERM-8).
    pub terminal: Option<TerminalSpec>,
}

/// What the host offers the job library (reported at start-up and on request).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Jobs run in their own PID, mount, network, UTS and IPC namespaces under an
    /// init (security.md, "Privileges and isolation").
    pub isolation: bool,
    /// Why isolation is off although the configuration asked for it.
    pub isolation_unavailable: Option<String>,
    /// Jobs run under the default seccomp filter ([`ManagerConfig::seccomp`]).
    pub seccomp: bool,
    /// Isolated jobs run sandboxed (QX-SBX-*): own user namespace and host uid,
    /// read-only host, cgroup namespace, reduced capabilities.
    pub sandbox: bool,
    /// Why the sandbox is off (turned off, isolation off, or the probe failed:
    /// e.g. no user namespaces, or Linux older than 5.12).
    pub sandbox_unavailable: Option<String>,
    /// The cgroup report: host layout, the interface used, each controller, the kill
    /// method, and why cgroups are unavailable when they are (`unavailable`; then
    /// jobs run without cgroups and starts asking for limits are refused). Its
    /// `Display` is the start-up log line.
    pub cgroups: CgroupCapabilities,
}

impl Default for Capabilities {
    /// Nothing probed yet: no isolation, no cgroups.
    fn default() -> Self {
        Self {
            isolation: false,
            isolation_unavailable: None,
            seccomp: false,
            sandbox: false,
            sandbox_unavailable: None,
            cgroups: CgroupCapabilities {
                host: HostLayout::None,
                version: None,
                unavailable: Some("not probed".to_owned()),
                subtree: Vec::new(),
                controllers: Vec::new(),
                kill: None,
            },
        }
    }
}
