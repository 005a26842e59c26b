//! An isolated job's namespaces (`sys::isolate`) and the isolation probe, for real.

use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use qexec_protocol::{SpawnFailure, Termination};

use super::{args, config, is_helper, read_to_eof, read_until, require_root, run, sh, wait_exit};
use crate::probe::isolation_available;
use crate::spawn::{IsolationConfig, spawn};

fn iso() -> IsolationConfig {
    IsolationConfig {
        hostname: "qexec-test-host".into(),
        private_tmp: true,
        own_network: true,
        sandbox: None,
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
    if !require_root("isolation_is_available_as_root") {
        assert!(isolation_available().is_err());
        return;
    }
    isolation_available().unwrap();
    // Cached: a second call gives the same answer.
    assert_eq!(isolation_available(), Ok(()));
}

#[test]
fn job_has_its_own_namespaces_hostname_and_tmp() {
    if !require_root("job_has_its_own_namespaces_hostname_and_tmp") {
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

/// Nothing of the server or of the init (status pipe, signalfd, parameter file)
/// leaks into an isolated target: it has exactly 0, 1, 2 (and `ls`'s own fd 3).
#[test]
fn isolated_target_inherits_only_stdio() {
    if !require_root("isolated_target_inherits_only_stdio") {
        return;
    }
    let argv = args(&["ls", "/proc/self/fd"]);
    let iso = iso();
    let (t, out, err) = run(&config(&argv, Some(&iso)));
    assert_eq!(t, Termination::Exited(0), "{err}");
    assert_eq!(out, "0\n1\n2\n3\n");
}

/// The job's /proc lists only its init and descendants.
#[test]
fn proc_lists_only_the_jobs_processes() {
    if !require_root("proc_lists_only_the_jobs_processes") {
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
    "spawn::tests::namespace::network_has_only_lo_which_is_up_and_cannot_reach_the_host";

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
    let host =
        match TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(5)) {
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

/// Only `lo`, up; the job talks to itself but not to the host's loopback.
#[test]
fn network_has_only_lo_which_is_up_and_cannot_reach_the_host() {
    if is_helper(NET_HELPER) {
        net_checks_inside();
        return;
    }
    if !require_root("network_has_only_lo_which_is_up_and_cannot_reach_the_host") {
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
    "spawn::tests::namespace::a_mount_made_in_a_job_is_not_visible_on_the_host";

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

/// Nothing a job mounts is visible on the host.
#[test]
fn a_mount_made_in_a_job_is_not_visible_on_the_host() {
    if is_helper(MOUNT_HELPER) {
        mount_inside();
        return;
    }
    if !require_root("a_mount_made_in_a_job_is_not_visible_on_the_host") {
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
    if !require_root("isolated_exec_errors_are_typed") {
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
    assert_eq!(e.failure, SpawnFailure::NotExecutable, "{e}");
    let argv = args(&["/bin/true"]);
    let bad = IsolationConfig {
        hostname: "x".repeat(65),
        private_tmp: false,
        own_network: true,
        sandbox: None,
    };
    let e = spawn(&config(&argv, Some(&bad))).unwrap_err();
    assert_eq!(e.failure, SpawnFailure::Setup, "{e}");
}

#[test]
fn isolated_job_runs_with_credentials() {
    if !require_root("isolated_job_runs_with_credentials") {
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
