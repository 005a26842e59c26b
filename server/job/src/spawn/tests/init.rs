//! The isolated job's init (`sys::init`) run for real, through `spawn`.

use std::collections::HashSet;
use std::path::PathBuf;

use qexec_protocol::Termination;

use super::{read_to_eof, read_until, require_root, run, sh, wait_exit};
use crate::spawn::{IsolationConfig, SpawnConfig, spawn};

fn iso() -> IsolationConfig {
    IsolationConfig {
        hostname: "qexec-init-test".into(),
        private_tmp: true,
        own_network: true,
        sandbox: None,
    }
}

fn isolated<'a>(argv: &'a [Vec<u8>], iso: &'a IsolationConfig) -> SpawnConfig<'a> {
    super::config(argv, Some(iso))
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

/// Exit 3 → exited(3); SIGKILL → signaled(9), through the init.
/// spec: QX-MSG-TYPE-3
#[test]
fn target_exit_code_and_signal_are_exact() {
    if !require_root("target_exit_code_and_signal_are_exact") {
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

/// A double-forked orphan is reaped by the init; the exit code is the
/// target's own.
#[test]
fn double_forked_orphan_is_reaped_and_exit_code_is_the_targets() {
    if !require_root("double_forked_orphan_is_reaped_and_exit_code_is_the_targets") {
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

/// Stop kills everything in the namespace.
#[test]
fn kill_ends_every_process_of_the_namespace() {
    if !require_root("kill_ends_every_process_of_the_namespace") {
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
    if !require_root("init_does_not_pin_the_servers_memory") {
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
    if !require_root("init_has_an_empty_environment_and_the_target_gets_the_jobs") {
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
    if !require_root("terminate_reaches_every_process_of_the_namespace") {
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
    if !require_root("signal_is_forwarded_to_the_target_only") {
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
