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

#[cfg(test)]
mod tests {
    use std::io::Read as _;
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use qexec_protocol::Termination;

    use super::super::spawn::tests::{
        args, config, have_root, is_helper, read_to_eof, read_until, run, sh, wait_exit,
    };
    use super::super::spawn::{IsolationConfig, spawn};
    use super::*;

    fn iso() -> IsolationConfig {
        IsolationConfig {
            hostname: "qexec-test-host".into(),
            private_tmp: true,
        }
    }

    /// argv that re-runs test `name` of this binary inside the job.
    fn helper_argv(name: &str) -> Vec<Vec<u8>> {
        let exe = std::env::current_exe().unwrap();
        vec![
            exe.as_os_str().as_encoded_bytes().to_vec(),
            name.as_bytes().to_vec(),
            b"--exact".to_vec(),
            b"--nocapture".to_vec(),
            b"--test-threads=1".to_vec(),
        ]
    }

    #[test]
    fn isolation_is_available_as_root() {
        if !have_root("isolation_is_available_as_root") {
            assert!(isolation_available().is_err());
            return;
        }
        isolation_available().unwrap();
        // Cached: a second call gives the same answer.
        assert_eq!(isolation_available(), Ok(()));
    }

    #[test]
    fn job_has_its_own_namespaces_hostname_and_tmp() {
        if !have_root("job_has_its_own_namespaces_hostname_and_tmp") {
            return;
        }
        // Make sure the host's /tmp is not empty, so an empty /tmp proves privacy.
        let _marker = tempfile::NamedTempFile::new_in("/tmp").unwrap();
        let kinds = ["pid", "mnt", "net", "uts", "ipc"];
        let argv = sh(
            "for n in pid mnt net uts ipc; do readlink /proc/self/ns/$n; done; \
             cat /proc/sys/kernel/hostname; ls -A /tmp | wc -l",
        );
        let iso = iso();
        let (t, out, err) = run(&config(&argv, Some(&iso)));
        assert_eq!(t, Termination::Exited(0), "{err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 7, "{out}");
        for (kind, inside) in kinds.iter().zip(&lines) {
            let host = std::fs::read_link(format!("/proc/self/ns/{kind}")).unwrap();
            assert!(inside.starts_with(&format!("{kind}:[")), "{inside}");
            assert_ne!(
                host.to_str().unwrap(),
                *inside,
                "{kind} namespace is the host's"
            );
        }
        assert_eq!(lines[5], "qexec-test-host");
        assert_eq!(lines[6].trim(), "0", "/tmp is not private");
    }

    /// spec: the job's /proc lists only its init and descendants.
    #[test]
    fn proc_lists_only_the_jobs_processes() {
        if !have_root("proc_lists_only_the_jobs_processes") {
            return;
        }
        // Only shell built-ins, so the job has exactly two processes: init and sh.
        let argv = sh("for d in /proc/[0-9]*; do echo \"${d#/proc/}\"; done");
        let iso = iso();
        let (t, out, err) = run(&config(&argv, Some(&iso)));
        assert_eq!(t, Termination::Exited(0), "{err}");
        assert_eq!(out, "1\n2\n");
    }

    const NET_HELPER: &str =
        "job::namespace::tests::network_has_only_lo_which_is_up_and_cannot_reach_the_host";

    /// Inside the job: reports interfaces, lo's state, a self-connection and a
    /// connection to the host's listener.
    fn net_checks_inside() {
        let dev = std::fs::read_to_string("/proc/net/dev").unwrap();
        let ifaces: Vec<&str> = dev
            .lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(str::trim)
            .collect();
        let lo_up = nix::ifaddrs::getifaddrs().unwrap().any(|a| {
            a.interface_name == "lo" && a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)
        });
        let self_ok = (|| -> std::io::Result<bool> {
            let l = TcpListener::bind("127.0.0.1:0")?;
            let mut c = TcpStream::connect(l.local_addr()?)?;
            std::io::Write::write_all(&mut c, b"x")?;
            let (mut s, _) = l.accept()?;
            let mut b = [0u8; 1];
            s.read_exact(&mut b)?;
            Ok(b == *b"x")
        })()
        .unwrap_or(false);
        let port: u16 = std::env::var("QEXEC_HOST_PORT").unwrap().parse().unwrap();
        let host = match TcpStream::connect_timeout(
            &([127, 0, 0, 1], port).into(),
            Duration::from_secs(5),
        ) {
            Ok(_) => "connected".to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => "refused".to_owned(),
            Err(e) => format!("error:{e}"),
        };
        println!(
            "NET ifaces={} lo_up={lo_up} self={} host={host}",
            ifaces.join(","),
            if self_ok { "ok" } else { "failed" }
        );
    }

    /// spec: only `lo`, up; the job talks to itself but not to the host's loopback.
    #[test]
    fn network_has_only_lo_which_is_up_and_cannot_reach_the_host() {
        if is_helper(NET_HELPER) {
            net_checks_inside();
            return;
        }
        if !have_root("network_has_only_lo_which_is_up_and_cannot_reach_the_host") {
            return;
        }
        let host = TcpListener::bind("127.0.0.1:0").unwrap();
        host.set_nonblocking(true).unwrap();
        let port = host.local_addr().unwrap().port();
        let argv = helper_argv(NET_HELPER);
        let env = vec![
            (
                b"QEXEC_TEST_HELPER".to_vec(),
                NET_HELPER.as_bytes().to_vec(),
            ),
            (b"QEXEC_HOST_PORT".to_vec(), port.to_string().into_bytes()),
        ];
        let iso = iso();
        let mut c = config(&argv, Some(&iso));
        c.env = &env;
        let (t, out, err) = run(&c);
        assert_eq!(t, Termination::Exited(0), "{out}{err}");
        assert!(
            out.contains("NET ifaces=lo lo_up=true self=ok host=refused"),
            "{out}{err}"
        );
        assert_eq!(
            host.accept().map(drop).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock,
            "the host listener saw a connection"
        );
    }

    const MOUNT_HELPER: &str =
        "job::namespace::tests::a_mount_made_in_a_job_is_not_visible_on_the_host";

    /// Inside the job: mounts a tmpfs, reports it, waits for stdin EOF.
    fn mount_inside() {
        let dir = std::env::var("QEXEC_MOUNT_DIR").unwrap();
        let source = std::env::var("QEXEC_MOUNT_SOURCE").unwrap();
        nix::mount::mount(
            Some(source.as_str()),
            dir.as_str(),
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        let own = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        println!("MOUNTED visible_inside={}", own.contains(&source));
        let mut rest = Vec::new();
        std::io::stdin().read_to_end(&mut rest).unwrap();
    }

    /// spec: nothing a job mounts is visible on the host.
    #[test]
    fn a_mount_made_in_a_job_is_not_visible_on_the_host() {
        if is_helper(MOUNT_HELPER) {
            mount_inside();
            return;
        }
        if !have_root("a_mount_made_in_a_job_is_not_visible_on_the_host") {
            return;
        }
        // A host directory the job can see (the job's /tmp is private).
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
        let source = format!(
            "qexec-test-mnt-{}-{:?}",
            std::process::id(),
            dir.path().file_name().unwrap()
        );
        let argv = helper_argv(MOUNT_HELPER);
        let env = vec![
            (
                b"QEXEC_TEST_HELPER".to_vec(),
                MOUNT_HELPER.as_bytes().to_vec(),
            ),
            (
                b"QEXEC_MOUNT_DIR".to_vec(),
                dir.path().as_os_str().as_encoded_bytes().to_vec(),
            ),
            (b"QEXEC_MOUNT_SOURCE".to_vec(), source.clone().into_bytes()),
        ];
        let iso = iso();
        let mut c = config(&argv, Some(&iso));
        c.env = &env;
        c.stdin = true;
        let mut child = spawn(&c).unwrap();
        let out = read_until(&child.stdout, |d| d.windows(7).any(|w| w == b"MOUNTED"));
        let out = String::from_utf8_lossy(&out).into_owned();
        assert!(out.contains("MOUNTED visible_inside=true"), "{out}");
        // While the job still holds its mount:
        let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !host.contains(&source),
            "job mount leaked to the host: {host}"
        );
        assert!(
            !host.contains(dir.path().to_str().unwrap()),
            "job mount point appears on the host: {host}"
        );
        drop(child.stdin.take());
        read_to_eof(&child.stdout);
        assert_eq!(wait_exit(&mut child.process), Termination::Exited(0));
    }

    #[test]
    fn isolated_exec_errors_are_typed() {
        if !have_root("isolated_exec_errors_are_typed") {
            return;
        }
        let dir = tempfile::tempdir_in(std::env::current_exe().unwrap().parent().unwrap()).unwrap();
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "\x01\x02 no program\n").unwrap();
        std::fs::set_permissions(
            &garbage,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let argv = vec![garbage.as_os_str().as_encoded_bytes().to_vec()];
        let iso = iso();
        let e = spawn(&config(&argv, Some(&iso))).unwrap_err();
        assert_eq!(
            e.failure,
            qexec_protocol::SpawnFailure::NotExecutable,
            "{e}"
        );
        let argv = args(&["/bin/true"]);
        let bad = IsolationConfig {
            hostname: "x".repeat(65),
            private_tmp: false,
        };
        let e = spawn(&config(&argv, Some(&bad))).unwrap_err();
        assert_eq!(e.failure, qexec_protocol::SpawnFailure::Setup, "{e}");
    }

    #[test]
    fn isolated_job_runs_with_credentials() {
        if !have_root("isolated_job_runs_with_credentials") {
            return;
        }
        let argv = sh("id -u; id -G; grep NoNewPrivs /proc/self/status");
        let iso = iso();
        let mut c = config(&argv, Some(&iso));
        c.credentials = Some((65534, 65534));
        let (t, out, err) = run(&c);
        assert_eq!(t, Termination::Exited(0), "{err}");
        assert_eq!(out, "65534\n65534\nNoNewPrivs:\t1\n");
    }
}
