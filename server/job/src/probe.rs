//! The isolation probe: can this host (and this binary) run isolated jobs?
//!
//! It runs one throw-away isolated job through the whole path — namespaces, their
//! set-up, the re-executed init, a target (this binary in probe mode, entered by the
//! `.init_array` hook) that prints a marker and exits 0 — and caches the answer. It
//! uses only [`crate::spawn`]; nothing there depends on it.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use qexec_protocol::{SpawnFailure, Termination};

use crate::spawn::{IsolationConfig, SpawnConfig, spawn};
use crate::sys::sandbox::JobSandbox;
use crate::sys::{self, Errno};

/// Why jobs cannot be isolated on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum IsolationUnavailable {
    /// An isolated probe job could not be started.
    #[error(
        "cannot start an isolated job: {message}; run qexecd as root on a kernel with \
         PID/mount/network/UTS/IPC namespace support, or turn isolation off"
    )]
    Spawn {
        /// The spawn failure.
        failure: SpawnFailure,
        /// Its message.
        message: String,
    },
    /// The probe job started but did not end as expected (e.g. the binary has no init
    /// hook, which needs glibc).
    #[error(
        "an isolated probe job ended with {termination:?} without its expected output: \
         this binary cannot act as the job's init (it needs glibc and the qexec init hook)"
    )]
    Probe {
        /// How it ended.
        termination: Termination,
    },
    /// The probe job could not be reaped.
    #[error("cannot reap the isolated probe job: {err}", err = Errno(*errno))]
    Reap {
        /// errno of `waitid`.
        errno: i32,
    },
}

/// Whether jobs can be isolated here: probes once (per process) by running a
/// throw-away isolated job through the whole path (namespaces, their set-up, the
/// re-executed init, a target — this binary in probe mode — that prints a marker and
/// exits 0), and caches the answer. The manager calls
/// it at start-up to turn isolation on by default and log what is available.
pub(crate) fn isolation_available() -> Result<(), IsolationUnavailable> {
    static PROBE: OnceLock<Result<(), IsolationUnavailable>> = OnceLock::new();
    PROBE.get_or_init(|| probe(None)).clone()
}

/// Whether sandboxed jobs work here with these settings: runs the probe job through
/// the whole sandbox (cgroup namespace, mount plan, user namespace, capability
/// reduction; the target must be executable by the job's uid). Not cached: the
/// settings are the manager's. spec: QX-SBX-13
pub(crate) fn sandbox_available(sandbox: JobSandbox) -> Result<(), IsolationUnavailable> {
    probe(Some(sandbox))
}

fn probe(sandbox: Option<JobSandbox>) -> Result<(), IsolationUnavailable> {
    // The target is this binary again; its `.init_array` hook exits 0 at once.
    let argv = [
        b"/proc/self/exe".to_vec(),
        sys::PROBE_MODE_MAGIC.to_bytes().to_vec(),
    ];
    let iso = IsolationConfig {
        hostname: "qexec-probe".to_owned(),
        private_tmp: true,
        own_network: sandbox.as_ref().is_none_or(|s| s.mounts.own_network),
        sandbox,
    };
    let config = SpawnConfig {
        argv: &argv,
        env: &[],
        cwd: Path::new("/"),
        stdin: false,
        isolation: Some(&iso),
        cgroup_procs: &[],
        credentials: None,
        seccomp: None,
        terminal: None,
    };
    let mut child = spawn(&config).map_err(|e| IsolationUnavailable::Spawn {
        failure: e.failure,
        message: e.message,
    })?;
    // Blocking read of the whole output (the probe writes one line and exits).
    let mut out = Vec::new();
    let read = fcntl(&child.stdout, FcntlArg::F_SETFL(OFlag::empty()))
        .map_err(std::io::Error::from)
        .and_then(|_| File::from(child.stdout).read_to_end(&mut out));
    let termination = child
        .process
        .wait_blocking()
        .map_err(|e| IsolationUnavailable::Reap {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        })?;
    // Exit 0 alone is not proof: a binary without the init hook would run its `main`.
    match (termination, read) {
        (Termination::Exited(0), Ok(_)) if out == sys::PROBE_MODE_OUTPUT => Ok(()),
        (termination, _) => Err(IsolationUnavailable::Probe { termination }),
    }
}
