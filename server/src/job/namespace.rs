//! A job's namespaces: which ones, how the init sets them up, and the start-up probe.
//!
//! Every isolated job gets new PID, mount, network, UTS and IPC namespaces, created by
//! the `clone3` that creates its init ([`CLONE_FLAGS`]). Inside, before forking the
//! target, the init runs [`setup_inside`], in this order:
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
//! Known limits: `/sys` is still the host's sysfs (e.g. `/sys/class/net` lists the
//! host's interfaces, though the job cannot use them); there is no user namespace, so
//! root in a job is root on the host's files (jobs that must not be root run with
//! credentials, and always with `no_new_privs`).

use std::convert::Infallible;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;

use nix::fcntl::OFlag;

use super::spawn::{ChildIsolation, Stage, report_and_exit};
use crate::sys::{self, Errno};

/// The namespaces every isolated job gets.
pub(super) const CLONE_FLAGS: u64 = (libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC) as u64;

/// Child side (the init, inside the new namespaces): sets them up. Reports the failed
/// step and its errno.
pub(super) fn setup_inside(iso: &ChildIsolation<'_>) -> Result<(), (Stage, Errno)> {
    sys::make_mounts_private().map_err(|e| (Stage::MountPrivate, e))?;
    sys::mount(
        c"proc",
        c"/proc",
        c"proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(|e| (Stage::MountProc, e))?;
    if iso.private_tmp {
        sys::mount(
            c"tmpfs",
            c"/tmp",
            c"tmpfs",
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(c"mode=1777"),
        )
        .map_err(|e| (Stage::MountTmp, e))?;
    }
    sys::bring_up_loopback().map_err(|e| (Stage::Loopback, e))?;
    sys::set_hostname(iso.hostname).map_err(|e| (Stage::Hostname, e))?;
    Ok(())
}

/// Why jobs cannot be isolated on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum IsolationUnavailable {
    /// The namespaces could not be created.
    #[error(
        "cannot create PID/mount/network/UTS/IPC namespaces (clone3): {err}; run qexecd as \
         root on a kernel with namespace support, or turn isolation off",
        err = Errno(*errno)
    )]
    Namespaces {
        /// errno of `clone3`.
        errno: i32,
    },
    /// The namespaces were created but one set-up step failed.
    #[error(
        "namespaces can be created but the job's init cannot {step}: {err}; turn isolation \
         off or fix the host",
        err = Errno(*errno)
    )]
    Setup {
        /// The step that failed.
        step: &'static str,
        /// Its errno.
        errno: i32,
    },
    /// The probe itself could not run.
    #[error("cannot probe for namespace support: failed to {what}: {err}", err = Errno(*errno))]
    Probe {
        /// What failed.
        what: &'static str,
        /// Its errno.
        errno: i32,
    },
}

/// Whether jobs can be isolated here: probes once (per process) by creating the
/// namespaces and running the init's set-up in a throw-away child, and caches the
/// answer. The manager calls it at start-up to turn isolation on by default and log
/// what is available.
pub(crate) fn isolation_available() -> Result<(), IsolationUnavailable> {
    static PROBE: OnceLock<Result<(), IsolationUnavailable>> = OnceLock::new();
    PROBE.get_or_init(probe).clone()
}

fn probe() -> Result<(), IsolationUnavailable> {
    let errno_of = |e: &std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    let (read, write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| IsolationUnavailable::Probe {
            what: "create a pipe",
            errno: e as i32,
        })?;
    let iso = ChildIsolation {
        hostname: b"qexec-probe",
        private_tmp: true,
        status_fd: -1,
    };
    let report_fd = write.as_raw_fd();
    let (_pid, pidfd) = sys::clone_and_run(CLONE_FLAGS, true, || probe_child(&iso, report_fd))
        .map_err(|e| IsolationUnavailable::Namespaces {
            errno: errno_of(&e),
        })?;
    drop(write);
    let mut buf = [0u8; 8];
    let mut got = 0;
    let mut file = File::from(read);
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(IsolationUnavailable::Probe {
                    what: "read the probe's report",
                    errno: errno_of(&e),
                });
            }
        }
    }
    if let Some(pidfd) = pidfd {
        sys::pidfd_wait(std::os::fd::AsFd::as_fd(&pidfd)).map_err(|e| {
            IsolationUnavailable::Probe {
                what: "reap the probe",
                errno: errno_of(&e),
            }
        })?;
    }
    if got < buf.len() {
        return Ok(());
    }
    let (a, b) = buf.split_at(4);
    let stage = u32::from_ne_bytes(a.try_into().unwrap_or_default());
    let errno = i32::from_ne_bytes(b.try_into().unwrap_or_default());
    Err(IsolationUnavailable::Setup {
        step: Stage::from_u32(stage).map_or("set up its namespaces", Stage::describe),
        errno,
    })
}

/// Child side of the probe.
fn probe_child(iso: &ChildIsolation<'_>, report_fd: i32) -> Infallible {
    sys::reset_signal_dispositions();
    match setup_inside(iso) {
        Ok(()) => sys::exit_now(0),
        Err((stage, e)) => report_and_exit(report_fd, stage, e),
    }
}
