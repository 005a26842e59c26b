//! The init of an isolated job: PID 1 of the job's PID namespace.
//!
//! # How it starts
//! 1. `spawn` creates a vfork-style child (`CLONE_VM | CLONE_VFORK`, so nothing of the
//!    server's memory is copied, however large the server is) in new PID, mount,
//!    network, UTS and IPC namespaces. Still sharing the server's memory and running
//!    only async-signal-safe code ([`exec_init`]), it joins the job's cgroups, leaves
//!    qexecd's session (`setsid`, so terminal signals aimed at the server never reach
//!    it), sets up the namespaces ([`super::namespace::setup_inside`]: private mount
//!    propagation, a fresh `/proc`, a private `/tmp`, `lo` up, the hostname), clears
//!    close-on-exec on the descriptors the init needs, and **re-executes the server
//!    binary** (`execveat` on `/proc/self/exe`, opened once) with the command line and
//!    parameter memfd of [`init_command`], and an empty environment. Every signal stays
//!    blocked across that exec.
//! 2. In the fresh process, the `.init_array` hook of `crate::sys` recognises the
//!    command line before `main` runs and calls [`reexec_main`]. Why re-exec: a
//!    forked init would keep a copy-on-write copy of the whole server for the job's
//!    lifetime (each page the server rewrites then exists twice per running job), and
//!    copying the page tables of a server with a large heap makes every spawn slow.
//! 3. [`reexec_main`] creates a signalfd for every signal (all blocked, so nothing is
//!    lost), starts the target vfork-style (it runs [`super::spawn::exec_target`];
//!    exec errors travel on the job's error pipe), then closes every descriptor
//!    except the status pipe and the signalfd — in particular its copies of the job's
//!    output pipes and of the error pipe, so EOF on those means what the manager
//!    expects — and supervises.
//! 4. The loop reaps every child with `waitpid(-1, WNOHANG)` (orphans of the namespace
//!    re-parent to it), forwards signals, and when the target has ended writes the
//!    target's raw wait status (4 bytes) to the status pipe and exits. The kernel then
//!    kills everything left in the namespace. PID 1 cannot be killed by its own
//!    signals, which is why the status travels on the pipe and not as the init's exit
//!    status.
//!
//! # Signals
//! - `SIGCHLD`: reap.
//! - `SIGTERM` queued by [`super::spawn::ChildProcess::terminate`] (`SI_QUEUE` with
//!   [`SIGNAL_TERMINATE_ALL`]): `kill(-1, SIGTERM)`, i.e. every process of the
//!   namespace, the target included.
//! - any signal queued by [`super::spawn::ChildProcess::signal`] (`SI_QUEUE` with
//!   [`SIGNAL_TARGET_ONLY`]): to the target only.
//! - any other `SIGTERM` (e.g. an administrator's `kill`): to the target, and
//!   `kill(-1, SIGTERM)`.
//! - every other catchable signal (`SIGINT`, `SIGHUP`, `SIGUSR1`, …): to the target.
//! - `SIGKILL` to the init ends it, and with it the namespace.
//!
//! # Parent death
//! The init watches the write end of its status pipe: when qexecd goes away (the read
//! end closes), `poll` reports `POLLERR`, and the init exits, which kills the job.

use std::convert::Infallible;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use qexec_protocol::SpawnFailure;

use super::namespace;
use super::spawn::{ChildIsolation, ChildPlan, SpawnError, Stage, exec_target, report_and_exit};
use crate::sys::{self, CStringArray, Errno, SignalFd};

/// Value queued with `SIGTERM` to ask the init to terminate every process of the job.
pub(super) const SIGNAL_TERMINATE_ALL: i32 = 0x7165_7801;
/// Value queued with a signal the init must forward to the target only.
pub(super) const SIGNAL_TARGET_ONLY: i32 = 0x7165_7802;

/// Exit code of an init whose server went away before the target ended.
pub(super) const EXIT_ORPHANED: i32 = 125;
/// Exit code of an init that could not wait for signals any more.
const EXIT_BROKEN: i32 = 126;
/// Exit code of an init started with a command line it cannot use.
const EXIT_BAD_ARGS: i32 = 127;

/// The server binary, opened once (close-on-exec), to be executed as the init.
pub(super) fn self_exe() -> io::Result<BorrowedFd<'static>> {
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
    pub(super) status_fd: RawFd,
    pub(super) err_fd: RawFd,
    pub(super) stdio: [RawFd; 3],
    pub(super) cwd: &'a [u8],
    pub(super) credentials: Option<(u32, u32)>,
    pub(super) path: &'a [u8],
    pub(super) argv: &'a [Vec<u8>],
    /// The target's environment (`KEY=VALUE`).
    pub(super) env: &'a [CString],
}

/// The init's command line and its parameter file.
#[derive(Debug)]
pub(super) struct InitCommand {
    /// `qexec-init MAGIC status err stdin stdout stderr params` (descriptor numbers).
    pub(super) argv: CStringArray,
    /// A memfd holding the rest (see [`init_command`]).
    pub(super) params: OwnedFd,
}

/// Builds the init's command line. Only descriptor numbers go on it; the rest (cwd,
/// credentials, program path, the target's argv and **environment**) is written to a
/// memfd as NUL-terminated strings — `cwd creds path N argv[0..N] env...` (`creds` is
/// `-` or `uid:gid`) — because a command line is readable by every user of the host
/// (`/proc/PID/cmdline`) and a job's environment may hold secrets. The init itself is
/// executed with an **empty environment**: the job's environment (which the job's
/// owner controls, e.g. `LD_PRELOAD` or `GLIBC_TUNABLES`) must not reach the dynamic
/// loader of the init, which keeps the server's privileges; only the target gets it.
pub(super) fn init_command(a: &InitArgs<'_>) -> Result<InitCommand, SpawnError> {
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
    push(a.path, "the program path")?;
    push(a.argv.len().to_string().as_bytes(), "argc")?;
    for arg in a.argv {
        push(arg, "an argument")?;
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
    let argv = CStringArray::new(vec![
        c"qexec-init".to_owned(),
        sys::INIT_MODE_MAGIC.to_owned(),
        fd(a.status_fd),
        fd(a.err_fd),
        fd(a.stdio[0]),
        fd(a.stdio[1]),
        fd(a.stdio[2]),
        fd(params.as_raw_fd()),
    ]);
    Ok(InitCommand { argv, params })
}

/// Child side (the vfork-style child in the new namespaces, sharing the server's
/// memory): prepares the namespaces and executes the init. Never returns.
pub(super) fn exec_init(plan: &ChildPlan<'_>, iso: &ChildIsolation<'_>) -> Infallible {
    if let Err(e) = sys::setsid() {
        return report_and_exit(plan.err_fd, Stage::Setsid, e);
    }
    if let Err((stage, e)) = namespace::setup_inside(iso) {
        return report_and_exit(plan.err_fd, stage, e);
    }
    let [stdin, stdout, stderr] = plan.stdio;
    for fd in [
        iso.status_fd,
        plan.err_fd,
        stdin,
        stdout,
        stderr,
        iso.params_fd,
    ] {
        // dup2 onto itself clears close-on-exec: the init inherits these.
        if let Err(e) = sys::dup2(fd, fd) {
            return report_and_exit(plan.err_fd, Stage::KeepFds, e);
        }
    }
    let e = sys::execveat_fd(iso.self_exe, iso.init_argv, iso.init_envp);
    report_and_exit(plan.err_fd, Stage::ExecInit, e)
}

/// The init's parameters, parsed from its command line and parameter file.
struct Parsed<'a> {
    status_fd: RawFd,
    err_fd: RawFd,
    stdio: [RawFd; 3],
    cwd: &'a CStr,
    credentials: Option<(u32, u32)>,
    path: &'a CStr,
    argv: Vec<&'a CStr>,
    env: Vec<&'a CStr>,
}

/// Descriptor number `i` of the command line.
fn arg_fd(args: &[&CStr], i: usize) -> Option<RawFd> {
    args.get(i)?.to_str().ok()?.parse().ok()
}

fn parse<'a>(args: &[&CStr], params: &'a [u8]) -> Option<Parsed<'a>> {
    let mut fields = params
        .split_inclusive(|b| *b == 0)
        .map(CStr::from_bytes_with_nul);
    let mut next = || fields.next()?.ok();
    let cwd = next()?;
    let credentials = match next()?.to_str().ok()? {
        "-" => None,
        c => {
            let (uid, gid) = c.split_once(':')?;
            Some((uid.parse().ok()?, gid.parse().ok()?))
        }
    };
    let path = next()?;
    let argc: usize = next()?.to_str().ok()?.parse().ok()?;
    let argv = (0..argc).map(|_| next()).collect::<Option<Vec<_>>>()?;
    let env = std::iter::from_fn(&mut next).collect();
    Some(Parsed {
        status_fd: arg_fd(args, 2)?,
        err_fd: arg_fd(args, 3)?,
        stdio: [arg_fd(args, 4)?, arg_fd(args, 5)?, arg_fd(args, 6)?],
        cwd,
        credentials,
        path,
        argv,
        env,
    })
}

/// Entry of the re-executed init (called by the `.init_array` hook in `crate::sys`
/// before `main`). Runs in a fresh, single-threaded process: allocation is fine here.
/// Never returns.
/// `_env` (the init's own environment) is empty by construction and ignored: the
/// target's environment comes from the parameter file.
pub(crate) fn reexec_main(args: &[&CStr], _env: &[&CStr]) -> Infallible {
    let params = arg_fd(args, 7).and_then(|fd| sys::read_from_start(fd).ok());
    let Some(p) = params.as_deref().and_then(|params| parse(args, params)) else {
        // The error pipe is the 4th argument; without it nobody can be told.
        if let Some(err_fd) = args.get(3).and_then(|a| a.to_str().ok()?.parse().ok()) {
            return report_and_exit(err_fd, Stage::InitArgs, Errno(libc::EINVAL));
        }
        return sys::exit_now(EXIT_BAD_ARGS);
    };
    // Best effort: only changes what `ps` shows.
    let _ = sys::set_process_name(c"qexec-init");
    let sigfd = match SignalFd::all() {
        Ok(fd) => fd,
        Err(e) => return report_and_exit(p.err_fd, Stage::InitSignals, e),
    };
    let argv = CStringArray::new(p.argv.iter().map(|a| (*a).to_owned()).collect());
    let envp = CStringArray::new(p.env.iter().map(|e| (*e).to_owned()).collect());
    let stack = match sys::ChildStack::new() {
        Ok(s) => s,
        Err(e) => {
            let errno = Errno(e.raw_os_error().unwrap_or(libc::ENOMEM));
            return report_and_exit(p.err_fd, Stage::ForkTarget, errno);
        }
    };
    let plan = ChildPlan {
        path: p.path,
        argv: &argv,
        envp: &envp,
        cwd: p.cwd,
        stdio: p.stdio,
        err_fd: p.err_fd,
        // Already joined before the init was executed.
        cgroup_procs: &[],
        credentials: p.credentials,
        isolation: None,
    };
    let target = match sys::vfork_and_run(&stack, 0, false, || exec_target(&plan)) {
        Ok((pid, _)) => pid as i32,
        Err(e) => {
            let errno = Errno(e.raw_os_error().unwrap_or(libc::EIO));
            return report_and_exit(p.err_fd, Stage::ForkTarget, errno);
        }
    };
    let keep = if sigfd.fd() < p.status_fd {
        [sigfd.fd(), p.status_fd]
    } else {
        [p.status_fd, sigfd.fd()]
    };
    // Cannot fail with valid arguments; if it did, the only cost is that the output
    // and error pipes see EOF when the init exits instead of earlier.
    let _ = sys::close_fds_except(&keep);
    supervise(target, p.status_fd, &sigfd)
}

/// The init's loop: reap, forward, report.
fn supervise(target: i32, status_fd: i32, sigfd: &SignalFd) -> Infallible {
    let mut target_status = None;
    loop {
        loop {
            match sys::waitpid_any_nohang() {
                Ok(Some((pid, status))) => {
                    if pid == target {
                        target_status = Some(status);
                    }
                }
                Err(e) if e.0 == libc::EINTR => {}
                // None exited yet, or no children left.
                Ok(None) | Err(_) => break,
            }
        }
        if let Some(status) = target_status {
            // If the server is gone the write fails; nobody is left to tell.
            let _ = sys::write_all(status_fd, &status.to_ne_bytes());
            return sys::exit_now(0);
        }
        let (ready, hung_up) = match sys::poll_signal_or_hangup(sigfd, status_fd) {
            Ok(r) => r,
            Err(_) => return sys::exit_now(EXIT_BROKEN),
        };
        if hung_up {
            return sys::exit_now(EXIT_ORPHANED);
        }
        if ready {
            while let Ok(Some(rec)) = sigfd.read() {
                forward(rec.signo, rec.code, rec.value, target);
            }
        }
    }
}

/// Applies the signal rules of the module docs. Errors (`ESRCH` for a target that just
/// exited) are irrelevant: the next reap pass sees the exit.
fn forward(signo: i32, code: i32, value: i32, target: i32) {
    let queued = code == libc::SI_QUEUE;
    match signo {
        libc::SIGCHLD => {}
        libc::SIGTERM if queued && value == SIGNAL_TERMINATE_ALL => {
            let _ = sys::kill(-1, libc::SIGTERM);
        }
        sig if queued && value == SIGNAL_TARGET_ONLY => {
            let _ = sys::kill(target, sig);
        }
        libc::SIGTERM => {
            let _ = sys::kill(target, libc::SIGTERM);
            let _ = sys::kill(-1, libc::SIGTERM);
        }
        sig => {
            let _ = sys::kill(target, sig);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::path::PathBuf;

    use qexec_protocol::Termination;

    use super::super::spawn::tests::{have_root, read_to_eof, read_until, run, sh, wait_exit};
    use super::super::spawn::{IsolationConfig, SpawnConfig, spawn};

    fn iso() -> IsolationConfig {
        IsolationConfig {
            hostname: "qexec-init-test".into(),
            private_tmp: true,
        }
    }

    fn isolated<'a>(argv: &'a [Vec<u8>], iso: &'a IsolationConfig) -> SpawnConfig<'a> {
        super::super::spawn::tests::config(argv, Some(iso))
    }

    /// The PID namespace of host pid `init`, and the host pids of every process in it.
    fn pids_in_namespace_of(init: u32) -> (PathBuf, HashSet<u32>) {
        let ns = std::fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
        let pids = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/ns/pid"))
                    .ok()
                    .as_ref()
                    == Some(&ns)
            })
            .collect();
        (ns, pids)
    }

    /// Issue 5: exit 3 → exited(3); SIGKILL → signaled(9), through the init.
    /// spec: QX-MSG-TYPE-3
    #[test]
    fn target_exit_code_and_signal_are_exact() {
        if !have_root("target_exit_code_and_signal_are_exact") {
            return;
        }
        let iso = iso();
        for (script, want) in [
            ("exit 3", Termination::Exited(3)),
            ("kill -9 $$", Termination::Signaled(9)),
            ("kill -TERM $$", Termination::Signaled(15)),
            ("true", Termination::Exited(0)),
        ] {
            let argv = sh(script);
            assert_eq!(run(&isolated(&argv, &iso)).0, want, "{script}");
        }
    }

    /// Issue 5: a double-forked orphan is reaped by the init; the exit code is the
    /// target's own.
    #[test]
    fn double_forked_orphan_is_reaped_and_exit_code_is_the_targets() {
        if !have_root("double_forked_orphan_is_reaped_and_exit_code_is_the_targets") {
            return;
        }
        // The subshell forks the grandchild and exits at once, so the grandchild is
        // re-parented to the init. The target waits for the grandchild to have exited
        // *and been reaped* (its /proc entry gone; a zombie keeps it), then checks that
        // no zombie is left anywhere in the namespace.
        let argv = sh(r#"
            ( sh -c 'echo $$ > /tmp/gc' & )
            i=0
            while [ ! -s /tmp/gc ]; do i=$((i+1)); [ $i -gt 2000000 ] && exit 90; done
            gc=$(cat /tmp/gc)
            while [ -e /proc/$gc ]; do i=$((i+1)); [ $i -gt 2000000 ] && exit 91; done
            for s in /proc/[0-9]*/stat; do
                read -r line < "$s" || continue
                case "${line##*) }" in Z*) echo "zombie: $line"; exit 92;; esac
            done
            exit 7
        "#);
        let iso = iso();
        let (t, out, err) = run(&isolated(&argv, &iso));
        assert_eq!(t, Termination::Exited(7), "{out}{err}");
    }

    /// Issue 5: stop kills everything in the namespace.
    #[test]
    fn kill_ends_every_process_of_the_namespace() {
        if !have_root("kill_ends_every_process_of_the_namespace") {
            return;
        }
        let argv = sh("sleep 1000 & sleep 1000 & setsid sleep 1000 & echo ready; wait");
        let iso = iso();
        let mut child = spawn(&isolated(&argv, &iso)).unwrap();
        read_until(&child.stdout, |d| d.ends_with(b"ready\n"));
        let (ns, pids) = pids_in_namespace_of(child.pid);
        assert!(
            pids.len() >= 5,
            "expected init, sh and 3 children: {pids:?}"
        );
        assert!(pids.contains(&child.pid));
        child.process.kill().unwrap();
        assert_eq!(wait_exit(&mut child.process), Termination::Signaled(9));
        read_to_eof(&child.stdout);
        // The init exits only once the kernel has ended the namespace; dropping the
        // handle reaps the init's zombie.
        drop(child);
        for pid in pids {
            // Gone, or (pid reused) no longer in that namespace.
            let now = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
            assert_ne!(now.as_ref(), Some(&ns), "pid {pid} survived the kill");
        }
    }

    /// The init gives back its copy-on-write copy of the server's memory: a server
    /// with a large heap does not get it duplicated by every running isolated job.
    #[test]
    fn init_does_not_pin_the_servers_memory() {
        if !have_root("init_does_not_pin_the_servers_memory") {
            return;
        }
        let big = vec![1u8; 256 << 20];
        let argv = sh("exec sleep 1000");
        let iso = iso();
        let mut child = spawn(&isolated(&argv, &iso)).unwrap();
        // `spawn` returns after the init released the memory.
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.pid)).unwrap();
        let rss_anon_kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("RssAnon:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        child.process.kill().unwrap();
        assert_eq!(wait_exit(&mut child.process), Termination::Signaled(9));
        assert!(
            rss_anon_kib < 32 << 10,
            "the init holds {rss_anon_kib} KiB of anonymous memory (server heap: 256 MiB)"
        );
        std::hint::black_box(&big);
    }

    /// The init (which keeps the server's privileges) is executed with an empty
    /// environment, so a job's `LD_PRELOAD`/`GLIBC_TUNABLES` cannot reach its dynamic
    /// loader, and its command line does not expose the job's environment; the target
    /// still gets the job's environment.
    #[test]
    fn init_has_an_empty_environment_and_the_target_gets_the_jobs() {
        if !have_root("init_has_an_empty_environment_and_the_target_gets_the_jobs") {
            return;
        }
        let argv = sh("echo \"$FOO\"; exec sleep 1000");
        let env = vec![(b"FOO".to_vec(), b"bar baz".to_vec())];
        let iso = iso();
        let mut config = isolated(&argv, &iso);
        config.env = &env;
        let mut child = spawn(&config).unwrap();
        let out = read_until(&child.stdout, |d| d.ends_with(b"\n"));
        let init_env = std::fs::read(format!("/proc/{}/environ", child.pid)).unwrap();
        let init_cmdline = std::fs::read(format!("/proc/{}/cmdline", child.pid)).unwrap();
        child.process.kill().unwrap();
        assert_eq!(wait_exit(&mut child.process), Termination::Signaled(9));
        assert_eq!(out, b"bar baz\n");
        assert!(init_env.is_empty(), "init environment: {init_env:?}");
        // Nor is the job's environment on the init's world-readable command line.
        assert!(
            init_cmdline.starts_with(b"qexec-init\0"),
            "{init_cmdline:?}"
        );
        assert!(
            !init_cmdline.windows(3).any(|w| w == b"FOO"),
            "{init_cmdline:?}"
        );
    }

    /// terminate(): SIGTERM reaches every process of the namespace, not only the
    /// target; the target's own exit status is reported.
    #[test]
    fn terminate_reaches_every_process_of_the_namespace() {
        if !have_root("terminate_reaches_every_process_of_the_namespace") {
            return;
        }
        let argv = sh(r#"
            trap 'wait $c; exit 5' TERM
            mkfifo /tmp/sync
            child() { trap 'echo child-term; exit 0' TERM; echo > /tmp/sync; sleep 1000 & wait; }
            child &
            c=$!
            read x < /tmp/sync
            echo ready
            wait
        "#);
        let iso = iso();
        let mut child = spawn(&isolated(&argv, &iso)).unwrap();
        let mut out = read_until(&child.stdout, |d| d.ends_with(b"ready\n"));
        child.process.terminate().unwrap();
        out.extend(read_to_eof(&child.stdout));
        assert_eq!(wait_exit(&mut child.process), Termination::Exited(5));
        assert_eq!(String::from_utf8_lossy(&out), "ready\nchild-term\n");
    }

    /// signal(): the init forwards it to the target only. spec: QX-MSG-CTRL-6
    #[test]
    fn signal_is_forwarded_to_the_target_only() {
        if !have_root("signal_is_forwarded_to_the_target_only") {
            return;
        }
        // "ready" comes once both traps are set and $c is known (the child reports
        // through a fifo in the job's private /tmp). The target answers USR1 by sending
        // USR2 to its child. Had the init forwarded
        // USR1 to every process, the child would print child-usr1 and exit first.
        let argv = sh(r#"
            trap 'echo target-usr1; kill -USR2 $c; wait $c; exit 4' USR1
            mkfifo /tmp/sync
            child() {
                trap 'echo child-usr1; exit 0' USR1
                trap 'echo child-usr2; exit 0' USR2
                echo > /tmp/sync
                sleep 1000 & wait
            }
            child &
            c=$!
            read x < /tmp/sync
            echo ready
            wait
        "#);
        let iso = iso();
        let mut child = spawn(&isolated(&argv, &iso)).unwrap();
        let mut out = read_until(&child.stdout, |d| d.ends_with(b"ready\n"));
        child.process.signal(libc::SIGUSR1).unwrap();
        assert_eq!(wait_exit(&mut child.process), Termination::Exited(4));
        out.extend(read_to_eof(&child.stdout));
        assert_eq!(
            String::from_utf8_lossy(&out),
            "ready\ntarget-usr1\nchild-usr2\n"
        );
    }
}
