//! The init of an isolated job: PID 1 of the job's PID namespace.
//!
//! It is the `clone3` child itself (a forked helper, not a re-executed binary), so it
//! runs only async-signal-safe code from [`crate::sys`]: no allocation, no locks.
//!
//! 1. Leaves qexecd's session (`setsid`), so terminal signals aimed at the server's
//!    process group never reach it.
//! 2. Sets up the namespaces ([`super::namespace::setup_inside`]): private mount
//!    propagation, a fresh `/proc`, a private `/tmp`, `lo` up, the hostname.
//! 3. Creates a signalfd for every signal (all signals are blocked since the clone, so
//!    nothing is lost in between), then forks the target (a raw `clone3`: glibc's
//!    `fork` would take locks other server threads may hold), which runs
//!    [`super::spawn::exec_target`]; exec errors travel on the same error pipe.
//! 4. Closes every descriptor except the status pipe and the signalfd — in particular
//!    its copies of the job's output pipes and of the error pipe, so EOF on those means
//!    what the manager expects.
//! 5. Loops: reaps every child with `waitpid(-1, WNOHANG)` (orphans of the namespace
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

use super::namespace;
use super::spawn::{ChildIsolation, ChildPlan, Stage, exec_target, report_and_exit};
use crate::sys::{self, Errno, SignalFd};

/// Value queued with `SIGTERM` to ask the init to terminate every process of the job.
pub(super) const SIGNAL_TERMINATE_ALL: i32 = 0x7165_7801;
/// Value queued with a signal the init must forward to the target only.
pub(super) const SIGNAL_TARGET_ONLY: i32 = 0x7165_7802;

/// Exit code of an init whose server went away before the target ended.
pub(super) const EXIT_ORPHANED: i32 = 125;
/// Exit code of an init that could not wait for signals any more.
const EXIT_BROKEN: i32 = 126;

/// Runs the init. Child side: never returns.
pub(super) fn run(plan: &ChildPlan<'_>, iso: &ChildIsolation<'_>) -> Infallible {
    if let Err(e) = sys::setsid() {
        return report_and_exit(plan.err_fd, Stage::Setsid, e);
    }
    if let Err((stage, e)) = namespace::setup_inside(iso) {
        return report_and_exit(plan.err_fd, stage, e);
    }
    // Best effort: only changes what `ps` shows.
    let _ = sys::set_process_name(c"qexec-init");
    let sigfd = match SignalFd::all() {
        Ok(fd) => fd,
        Err(e) => return report_and_exit(plan.err_fd, Stage::InitSignals, e),
    };
    let target = match sys::clone_and_run(0, false, || exec_target(plan)) {
        Ok((pid, _)) => pid as i32,
        Err(e) => {
            let errno = Errno(e.raw_os_error().unwrap_or(libc::EIO));
            return report_and_exit(plan.err_fd, Stage::ForkTarget, errno);
        }
    };
    let keep = if sigfd.fd() < iso.status_fd {
        [sigfd.fd(), iso.status_fd]
    } else {
        [iso.status_fd, sigfd.fd()]
    };
    // Cannot fail with valid arguments; if it did, the only cost is that the output
    // and error pipes see EOF when the init exits instead of earlier.
    let _ = sys::close_fds_except(&keep);
    supervise(target, iso.status_fd, &sigfd)
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

    /// spec: exit 3 → exited(3); SIGKILL → signaled(9), through the init.
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

    /// spec: a double-forked orphan is reaped by the init; the exit code is the
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

    /// spec: stop kills everything in the namespace.
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
        for pid in pids {
            // Gone, or (pid reused) no longer in that namespace.
            let now = std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
            assert_ne!(now.as_ref(), Some(&ns), "pid {pid} survived the kill");
        }
        read_to_eof(&child.stdout);
    }

    /// terminate(): SIGTERM reaches every process of the namespace, not only the
    /// target; the target's own exit status is reported.
    #[test]
    fn terminate_reaches_every_process_of_the_namespace() {
        if !have_root("terminate_reaches_every_process_of_the_namespace") {
            return;
        }
        let argv = sh(r#"
            child() { trap 'echo child-term; exit 0' TERM; echo ready; sleep 1000 & wait; }
            child &
            c=$!
            trap 'wait $c; exit 5' TERM
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

    /// signal(): the init forwards it to the target only.
    #[test]
    fn signal_is_forwarded_to_the_target_only() {
        if !have_root("signal_is_forwarded_to_the_target_only") {
            return;
        }
        // The target answers USR1 by sending USR2 to its child. Had the init forwarded
        // USR1 to every process, the child would print child-usr1 and exit first.
        let argv = sh(r#"
            child() {
                trap 'echo child-usr1; exit 0' USR1
                trap 'echo child-usr2; exit 0' USR2
                sleep 1000 & wait
            }
            child &
            c=$!
            trap 'echo target-usr1; kill -USR2 $c; wait $c; exit 4' USR1
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
