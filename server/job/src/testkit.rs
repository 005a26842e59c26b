//! Helpers for the tests and benchmarks of the job library and of the crates built on
//! it. Not a supported API (hidden from the docs); no test double lives here.
//!
//! Skipping: a test that needs something the host may not offer (root, isolation,
//! cgroups) asks [`require_root`], [`require_isolation`] or [`skip_unless`] first.
//! They return `false` after printing why, so the test returns early — except under
//! `CI=true`, where a skip is a failure: they panic, because CI runs as root on a
//! host that offers everything and a skipped test there hides a regression.

use std::path::Path;

use qexec_protocol::Termination;

use crate::SandboxConfig;
use crate::sandbox::Sandbox;
use crate::spawn::{IsolationConfig, SpawnConfig, spawn};
use crate::sys::sandbox::JobSandbox;

/// Whether the tests run under CI (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Returns `true` when `available` is `Ok`; otherwise prints that `what` is skipped
/// and why (the `Err`), and returns `false`.
///
/// # Panics
/// When unavailable and [`in_ci`].
pub fn skip_unless(what: &str, available: Result<(), String>) -> bool {
    match available {
        Ok(()) => true,
        Err(why) => {
            assert!(!in_ci(), "{what} cannot be skipped under CI=true: {why}");
            println!("SKIPPED {what}: {why}");
            false
        }
    }
}

/// Whether `what` may use root's powers (cgroups, credentials, namespaces).
///
/// # Panics
/// When not root and [`in_ci`].
pub fn require_root(what: &str) -> bool {
    let root = nix::unistd::geteuid().is_root();
    skip_unless(
        what,
        if root {
            Ok(())
        } else {
            Err("needs root; run the tests as root".to_owned())
        },
    )
}

/// Whether `what` may start isolated jobs here (the probe of
/// `crate::probe::isolation_available` passed).
///
/// # Panics
/// When isolation is unavailable and [`in_ci`].
pub fn require_isolation(what: &str) -> bool {
    skip_unless(what, isolation_available())
}

/// Whether isolated spawns work here; the reason when not.
pub fn isolation_available() -> Result<(), String> {
    crate::probe::isolation_available().map_err(|e| e.to_string())
}

/// Spawns `argv` (cwd `/`, environment `env`, stdin `/dev/null`), optionally
/// isolated, waits for its first process to end and reaps it (the spawn benchmark's
/// unit of work).
pub fn spawn_and_wait(
    argv: &[Vec<u8>],
    env: &[(Vec<u8>, Vec<u8>)],
    isolated: bool,
) -> Result<Termination, String> {
    let iso = IsolationConfig {
        hostname: "qexec-bench".to_owned(),
        private_tmp: true,
        own_network: true,
        sandbox: None,
    };
    spawn_and_wait_with(argv, env, isolated.then_some(&iso))
}

fn spawn_and_wait_with(
    argv: &[Vec<u8>],
    env: &[(Vec<u8>, Vec<u8>)],
    isolation: Option<&IsolationConfig>,
) -> Result<Termination, String> {
    let config = SpawnConfig {
        argv,
        env,
        cwd: Path::new("/"),
        stdin: false,
        isolation,
        cgroup_procs: &[],
        credentials: None,
        seccomp: None,
        terminal: None,
    };
    let mut child = spawn(&config).map_err(|e| e.message)?;
    child
        .process
        .wait_blocking()
        .map_err(|e| format!("cannot reap job process {}: {e}", child.pid))
}

/// The default sandbox (no `--rw-path`, default sizes), ids of the first slot.
fn default_sandbox() -> Result<JobSandbox, String> {
    let sandbox = Sandbox::new(&SandboxConfig::default(), 1, &std::env::temp_dir())
        .map_err(|e| e.to_string())?;
    Ok(sandbox.with_base(sandbox.range().base))
}

/// As [`spawn_and_wait`] isolated, and sandboxed (user namespace, new root, cgroup
/// namespace, capabilities) with the default sandbox settings.
pub fn spawn_and_wait_sandboxed(
    argv: &[Vec<u8>],
    env: &[(Vec<u8>, Vec<u8>)],
) -> Result<Termination, String> {
    let iso = IsolationConfig {
        hostname: "qexec-bench".to_owned(),
        private_tmp: true,
        own_network: true,
        sandbox: Some(default_sandbox()?),
    };
    spawn_and_wait_with(argv, env, Some(&iso))
}

/// Whether sandboxed spawns work here; the reason when not.
pub fn sandbox_available() -> Result<(), String> {
    crate::probe::sandbox_available(default_sandbox()?).map_err(|e| e.to_string())
}
