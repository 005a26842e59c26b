//! Spawn run for real: typed start-up errors, stdio, credentials, signals, reaping,
//! descriptors; `init` and `namespace` test the isolated path.

mod init;
mod namespace;

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use qexec_protocol::{JobId, SpawnFailure, Termination};

use super::resolve::DEFAULT_PATH;
use super::*;
use crate::sys::init::EXIT_ORPHANED;
pub(super) use crate::testkit::require_root;

/// Upper bound for any single wait in these tests.
pub(super) const TIMEOUT: Duration = Duration::from_secs(20);

pub(super) fn args(list: &[&str]) -> Vec<Vec<u8>> {
    list.iter().map(|a| a.as_bytes().to_vec()).collect()
}

pub(super) fn sh(script: &str) -> Vec<Vec<u8>> {
    args(&["/bin/sh", "-c", script])
}

/// A config with cwd `/`, no stdin, no isolation, default environment.
pub(super) fn config<'a>(argv: &'a [Vec<u8>], iso: Option<&'a IsolationConfig>) -> SpawnConfig<'a> {
    SpawnConfig {
        argv,
        env: &[],
        cwd: Path::new("/"),
        stdin: false,
        isolation: iso,
        cgroup_procs: &[],
        credentials: None,
        seccomp: None,
        terminal: None,
    }
}

/// Waits (bounded) for the first process to exit, then reaps it.
pub(super) fn wait_exit(child: &mut ChildProcess) -> Termination {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(t) = child.try_reap().expect("reap") {
            return t;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "job process (pidfd {}) did not exit in time",
            child.as_raw_fd()
        );
        let mut fds = [PollFd::new(child.as_fd(), PollFlags::POLLIN)];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }
}

/// Reads from `fd` until `pred(data)` holds or EOF; bounded by [`TIMEOUT`].
pub(super) fn read_until(fd: &OwnedFd, pred: impl Fn(&[u8]) -> bool) -> Vec<u8> {
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
pub(super) fn read_to_eof(fd: &OwnedFd) -> Vec<u8> {
    read_until(fd, |_| false)
}

/// Spawns, collects stdout and stderr to EOF, reaps.
pub(super) fn run(config: &SpawnConfig<'_>) -> (Termination, String, String) {
    let mut child = spawn(config).expect("spawn");
    let out = read_to_eof(&child.stdout);
    let err = read_to_eof(child.stderr.as_ref().expect("a pipe job has stderr"));
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
fn job_hostname_is_derived_from_the_job_id() {
    let id = JobId(*b"\x01\x23\x45\x67\x89\xab\xcd\xef\x00\x11\x22\x33\x44\x55\x66\x77");
    let iso = IsolationConfig::for_job(&id);
    assert_eq!(iso.hostname, "qexec-0123456789ab");
    assert!(iso.private_tmp);
}

// spec: QX-MSG-TYPE-5 (this test and the four below)
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

// spec: QX-MSG-TYPE-3
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
    let err = read_to_eof(child.stderr.as_ref().expect("a pipe job has stderr"));
    assert_eq!(wait_exit(&mut child.process), Termination::Exited(0));
    let real = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("out:bar baz:{}\nfrom stdin\n", real.display())
    );
    assert_eq!(err, b"err\n");
}

// spec: QX-SEC-5
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
    if !require_root("credentials_drop_uid_gid_and_groups") {
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

/// After the target exited (and `try_reap` reported it), the job's process group
/// is still reachable: the target stays a zombie, so its pid/group id is reserved.
#[test]
fn leftovers_are_reachable_after_the_target_exited_and_dropping_reaps() {
    // The background sleep holds stdout: EOF proves it died.
    let argv = sh("sleep 1000 & echo ready");
    let mut child = spawn(&config(&argv, None)).unwrap();
    let out = read_until(&child.stdout, |d| d.ends_with(b"ready\n"));
    assert_eq!(out, b"ready\n");
    assert_eq!(wait_exit(&mut child.process), Termination::Exited(0));
    let pid = child.pid;
    let state = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(") ").next().map(|r| r.chars().next()))
            .flatten()
    };
    assert_eq!(state(), Some('Z'), "the target is kept as a zombie");
    child.process.kill().unwrap();
    read_to_eof(&child.stdout);
    drop(child);
    // Reaped: no /proc entry (a reused pid would not be in our session's state Z).
    assert_ne!(state(), Some('Z'), "dropping the handle reaps the zombie");
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
    if !require_root("isolated_job_dies_with_the_server_side_of_its_status_pipe") {
        return;
    }
    let iso = IsolationConfig {
        hostname: "qexec-test".into(),
        private_tmp: true,
        own_network: true,
        sandbox: None,
    };
    let argv = sh("sleep 1000 & echo ready; wait");
    let mut child = spawn(&config(&argv, Some(&iso))).unwrap();
    read_until(&child.stdout, |d| d.ends_with(b"ready\n"));
    // Simulate the server's death: close our end of the status pipe.
    child.process.close_status_pipe();
    assert_eq!(
        wait_exit(&mut child.process),
        Termination::Exited(EXIT_ORPHANED)
    );
    // Every holder of the stdout pipe (sh, sleep) is gone.
    read_to_eof(&child.stdout);
}

/// Runs one `#[test]` of this binary in a fresh process (so that fd counts are not
/// disturbed by tests running in parallel) with `QEXEC_TEST_HELPER=<name>`.
pub(super) fn run_helper(test: &str, env: &[(&str, String)]) -> std::process::Output {
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
pub(super) fn is_helper(test: &str) -> bool {
    std::env::var("QEXEC_TEST_HELPER").as_deref() == Ok(test)
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// 200 spawns + reaps (and, as root, 50 isolated ones) leave no fd and no zombie.
/// Runs the loop in a fresh process where nothing else opens descriptors.
#[test]
fn no_fd_leak_and_no_zombie_after_many_spawns() {
    const NAME: &str = "spawn::tests::no_fd_leak_and_no_zombie_after_many_spawns";
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
        own_network: true,
        sandbox: None,
    };
    // Warm up lazily-opened descriptors (e.g. /dev/null probing by std, and the
    // server binary kept open to execute isolated jobs' inits).
    let argv = args(&["/bin/true"]);
    run(&config(&argv, None));
    if isolated {
        run(&config(&argv, Some(&iso)));
    }
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

/// A filter the kernel refuses is a typed start failure with its own stage, which
/// survives the error pipe's encoding. spec: QX-SBX-24
#[test]
fn seccomp_install_failure_is_its_own_stage() {
    assert_eq!(Stage::from_u32(Stage::Seccomp as u32), Some(Stage::Seccomp));
    let e = failure_for(
        Stage::Seccomp as u32,
        libc::EINVAL,
        b"prog",
        Path::new("/bin/prog"),
        Path::new("/"),
    );
    assert_eq!(e.failure, SpawnFailure::Setup);
    assert_eq!(
        e.message,
        "cannot start prog: failed to install the job's seccomp filter: Invalid argument (os error 22)"
    );
}
