//! The child side's inputs, built by the parent before cloning: what to execute and
//! how ([`ChildPlan`], [`ChildIsolation`]), and the vocabulary both sides use for the
//! step that failed ([`Stage`]). Plain data: only raw descriptors and borrowed,
//! already-built C strings, so the child never allocates.

use std::ffi::CStr;
use std::os::fd::{BorrowedFd, RawFd};

use super::{CStringArray, SockFilter};

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
    Seccomp,
    CgroupNamespace,
    UserNamespace,
    UidMap,
    GidMap,
    UsernsSync,
    UsernsIdentity,
    CapBounding,
    CapAmbient,
    CapInheritable,
    Terminal,
    ControllingTerminal,
}

impl Stage {
    const ALL: [Stage; 34] = [
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
        Self::Seccomp,
        Self::CgroupNamespace,
        Self::UserNamespace,
        Self::UidMap,
        Self::GidMap,
        Self::UsernsSync,
        Self::UsernsIdentity,
        Self::CapBounding,
        Self::CapAmbient,
        Self::CapInheritable,
        Self::Terminal,
        Self::ControllingTerminal,
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
            Self::Seccomp => "install the job's seccomp filter",
            Self::CgroupNamespace => "enter a cgroup namespace (unshare CLONE_NEWCGROUP)",
            Self::UserNamespace => {
                "start the program in a new user namespace (clone CLONE_NEWUSER; are user \
                 namespaces enabled? see user.max_user_namespaces)"
            }
            Self::UidMap => "write the uid map of the job's user namespace",
            Self::GidMap => "write the gid map of the job's user namespace",
            Self::UsernsSync => "wait for the job's user namespace to be mapped",
            Self::UsernsIdentity => "become root of the job's user namespace",
            Self::CapBounding => "reduce the capability bounding set",
            Self::CapAmbient => "clear the ambient capabilities",
            Self::CapInheritable => "clear the inheritable capabilities",
            Self::Terminal => {
                "open the job's terminal in its own devpts (/dev/pts/ptmx) and pass it to qexecd"
            }
            Self::ControllingTerminal => "make the terminal the controlling terminal (TIOCSCTTY)",
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
    /// The init sets up a sandbox (it mounts `/proc` and `/tmp` in the new root).
    pub(crate) sandboxed: bool,
    /// The job has its own network namespace (`lo` to bring up).
    pub(crate) own_network: bool,
    /// A terminal job: the socket on which the init sends the terminal's master.
    pub(crate) terminal_sock: Option<RawFd>,
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
    /// The three are one terminal's slave: it becomes the target's controlling
    /// terminal after `setsid` (spec: QX-TERM-5).
    pub(crate) terminal: bool,
    /// Write end of the error pipe.
    pub(crate) err_fd: RawFd,
    pub(crate) cgroup_procs: &'a [BorrowedFd<'a>],
    pub(crate) credentials: Option<(u32, u32)>,
    /// Seccomp filter the target installs last before `execve`, when set.
    pub(crate) seccomp: Option<&'a [SockFilter]>,
    pub(crate) isolation: Option<ChildIsolation<'a>>,
    /// Sandboxed target: read end of the pipe on which the init says the target's
    /// user namespace is mapped (see `sandbox::become_target`).
    pub(crate) userns_sync: Option<RawFd>,
}
