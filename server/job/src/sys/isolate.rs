//! A job's namespaces: which ones, and how the child that becomes the init sets them up
//! (child side; the isolation probe is `crate::probe`).
//!
//! Every isolated job gets new PID, mount, network, UTS and IPC namespaces, created by
//! the `clone` that creates its init ([`CLONE_FLAGS`]). Inside, before executing the
//! init, the child that becomes the init runs [`setup_inside`], in this order:
//! 1. mount propagation of `/` made `MS_REC | MS_PRIVATE` **before any mount**, so
//!    nothing mounted in the job ever propagates to the host (and host mounts made
//!    later do not appear in the job);
//! 2. a fresh `/proc` (`nosuid,nodev,noexec`) for the job's PID namespace, so the job
//!    sees only its own processes;
//! 3. a private tmpfs on `/tmp` (mode 1777), unless turned off;
//! 4. `lo` brought up with `ioctl(SIOCSIFFLAGS)` on an `AF_INET` datagram socket (the
//!    new network namespace has only `lo`, down);
//! 5. the hostname of the new UTS namespace.
//!
//! The IPC namespace needs no set-up: it starts empty. No external binary is used.
//!
//! With the sandbox (`super::sandbox`, the default as root) this child does only
//! steps 1, 4 and 5; the init then mounts a fresh `/proc`, `/sys`, `/dev` and `/tmp`
//! in a new root, enters a cgroup namespace and starts the program in a user
//! namespace of its own. Without the sandbox, `/sys` is the host's sysfs and root in
//! a job is root on the host's files. With `--job-network host` there is no network
//! namespace (step 4 is skipped).

use super::plan::{ChildIsolation, Stage};
use super::{Errno, bring_up_loopback, make_mounts_private, mount, set_hostname};

/// The namespaces every isolated job gets.
pub(crate) const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC;

/// [`CLONE_FLAGS`], without `CLONE_NEWNET` when the job uses the host's network
/// (`--job-network host`, spec: QX-SBX-12).
pub(crate) fn clone_flags(own_network: bool) -> libc::c_int {
    if own_network {
        CLONE_FLAGS
    } else {
        CLONE_FLAGS & !libc::CLONE_NEWNET
    }
}

/// Child side (the init, inside the new namespaces): sets them up. Reports the failed
/// step and its errno.
pub(super) fn setup_inside(iso: &ChildIsolation<'_>) -> Result<(), (Stage, Errno)> {
    make_mounts_private().map_err(|e| (Stage::MountPrivate, e))?;
    // Sandboxed: the init mounts /proc and /tmp in the new root (`sandbox::plan`).
    if !iso.sandboxed {
        mount(
            c"proc",
            c"/proc",
            c"proc",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        )
        .map_err(|e| (Stage::MountProc, e))?;
    }
    if iso.private_tmp && !iso.sandboxed {
        mount(
            c"tmpfs",
            c"/tmp",
            c"tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(c"mode=1777"),
        )
        .map_err(|e| (Stage::MountTmp, e))?;
    }
    if iso.own_network {
        bring_up_loopback().map_err(|e| (Stage::Loopback, e))?;
    }
    set_hostname(iso.hostname).map_err(|e| (Stage::Hostname, e))?;
    Ok(())
}
