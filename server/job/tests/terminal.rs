//! Terminal jobs run for real (spec: QX-TERM-5 to QX-TERM-8, QX-SBX-26): in each of the
//! three set-ups — no isolation (the host's devpts), namespaces only, and the sandbox
//! (the job's own devpts instance) — the job sees a terminal on 0, 1 and 2 of the
//! requested size, `TERM`, window changes as SIGWINCH, ^C as SIGINT, and its exit
//! code; followers see the terminal's bytes.

use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use qexec_job::testkit::skip_unless;
use qexec_job::{FollowEvent, Follower, JobManager, JobSpec, ManagerConfig, StartedJob};
use qexec_protocol::{JobState, JobStatus, OutputStream, TerminalSpec, Termination, WindowSize};

/// Generous bound for anything that should take well under a second.
const LONG: Duration = Duration::from_secs(60);

const SIZE: WindowSize = WindowSize {
    rows: 33,
    cols: 117,
    width_px: 0,
    height_px: 0,
};

/// The three set-ups a terminal job can run in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Setup {
    Plain,
    Namespaces,
    Sandbox,
}

const SETUPS: [Setup; 3] = [Setup::Plain, Setup::Namespaces, Setup::Sandbox];

fn unique_subtree() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "qexec-test-term-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A manager for `setup`, or `None` when the host cannot offer it (skipped; under
/// CI=true a missing capability fails the test).
async fn manager(dir: &Path, setup: Setup, test: &str) -> Result<Option<JobManager>> {
    let mut c = ManagerConfig::new(dir.join(format!("state-{setup:?}")));
    c.default_grace = Duration::from_secs(5);
    c.cgroup_subtree = unique_subtree();
    match setup {
        Setup::Plain => c.isolation = false,
        Setup::Namespaces => c.sandbox.enabled = false,
        Setup::Sandbox => {}
    }
    let m = JobManager::new(c).await?;
    let caps = m.capabilities();
    let available = match setup {
        Setup::Plain => Ok(()),
        Setup::Namespaces if caps.isolation => Ok(()),
        Setup::Sandbox if caps.sandbox => Ok(()),
        _ => Err(format!(
            "{setup:?} is unavailable here ({:?} {:?}); run as root",
            caps.isolation_unavailable, caps.sandbox_unavailable
        )),
    };
    Ok(skip_unless(&format!("{test} ({setup:?})"), available).then_some(m))
}

fn terminal_spec(script: &str) -> JobSpec {
    JobSpec {
        argv: ["/bin/sh", "-c", script]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect(),
        env: vec![(b"TERM".to_vec(), b"overridden".to_vec())],
        cwd: None,
        stdin: false,
        timeout: None,
        owner: "tester".into(),
        limits: Default::default(),
        host_root_allowed: true,
        terminal: Some(TerminalSpec {
            term: "xterm-qexec".into(),
            size: SIZE,
        }),
    }
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(LONG, f)
        .await
        .with_context(|| format!("{what} did not happen within {LONG:?}"))
}

/// Reads `f` until its output contains `needle`; returns everything read.
async fn wait_for(f: &mut Follower, out: &mut Vec<u8>, needle: &str) -> Result<()> {
    while !String::from_utf8_lossy(out).contains(needle) {
        match within(needle, f.next()).await?? {
            Some(FollowEvent::Data { stream, data, .. }) => {
                ensure!(stream == OutputStream::Stdout, "terminal output is stdout");
                out.extend_from_slice(&data);
            }
            other => bail!(
                "job ended before printing {needle:?}: {other:?}; output so far {:?}",
                String::from_utf8_lossy(out)
            ),
        }
    }
    Ok(())
}

/// Reads `f` to its end: (all output, final status).
async fn finish(f: &mut Follower, out: &mut Vec<u8>) -> Result<JobStatus> {
    loop {
        match within("job end", f.next()).await?? {
            Some(FollowEvent::Data { data, .. }) => out.extend_from_slice(&data),
            Some(FollowEvent::End(status)) => return Ok(*status),
            None => bail!("follower ended without End"),
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `body` once per set-up the host offers.
fn each_setup<F, Fut>(test: &str, body: F)
where
    F: Fn(JobManager, Setup) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let rt = runtime();
    rt.block_on(async {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
        for setup in SETUPS {
            if let Some(m) = manager(dir.path(), setup, test).await? {
                body(m, setup)
                    .await
                    .with_context(|| format!("{test} ({setup:?})"))?;
            }
        }
        anyhow::Ok(())
    })
    .unwrap();
}

async fn start(m: &JobManager, script: &str) -> Result<(StartedJob, Follower)> {
    let job = m.start(terminal_spec(script)).await?;
    let f = m.follow(job.id, 0)?;
    Ok((job, f))
}

#[test]
fn a_terminal_job_has_a_tty_on_0_1_2_of_the_requested_size_and_term() {
    // spec: QX-TERM-5, QX-TERM-6, QX-TERM-7, QX-SBX-26
    each_setup("terminal basics", |m, setup| async move {
        let script = "for fd in 0 1 2; do test -t $fd && printf 'tty%s ' $fd; done; \
                      echo; stty size; echo TERM=$TERM; tty; echo pts: /dev/pts/*; \
                      echo fds-begin; ls -l /proc/self/fd; echo fds-end; \
                      test \"$(ps -o sid= -p $$)\" -eq $$ && echo session-leader; exit 7";
        let (job, mut f) = start(&m, script).await?;
        ensure!(job.terminal.is_some() && job.stdin.is_some());
        let mut out = Vec::new();
        let status = finish(&mut f, &mut out).await?;
        let out = String::from_utf8_lossy(&out).into_owned();
        ensure!(out.contains("tty0 tty1 tty2 \r\n"), "{out:?}");
        ensure!(out.contains("33 117\r\n"), "{out:?}");
        ensure!(out.contains("TERM=xterm-qexec\r\n"), "{out:?}");
        ensure!(out.contains("session-leader\r\n"), "{out:?}");
        if setup == Setup::Sandbox {
            // The job's own devpts instance: its first and only terminal.
            ensure!(
                out.contains("/dev/pts/0\r\npts: /dev/pts/0 /dev/pts/ptmx\r\n"),
                "{out:?}"
            );
            // spec: QX-SBX-26 — a program of the job holds its own terminal and nothing
            // else (no master, no socket, nothing of the host's devpts): `ls` shows 0, 1
            // and 2 on /dev/pts/0 and its own directory descriptor.
            let fds = out
                .split("fds-begin\r\n")
                .nth(1)
                .and_then(|rest| rest.split("fds-end").next())
                .context("the fd listing")?;
            let targets: Vec<&str> = fds
                .lines()
                .filter_map(|l| l.split(" -> ").nth(1))
                .map(str::trim_end)
                .collect();
            ensure!(
                targets.len() == 4
                    && targets[..3].iter().all(|t| *t == "/dev/pts/0")
                    && targets[3].starts_with("/proc/"),
                "{fds:?}"
            );
        } else {
            ensure!(out.contains("/dev/pts/"), "{out:?}");
        }
        ensure!(
            status.state
                == JobState::Exited {
                    termination: Termination::Exited(7)
                },
            "{status:?}"
        );
        ensure!(status.stderr_bytes == 0 && status.stdout_bytes == out.len() as u64);
        // A late follower sees the same bytes (spec: QX-TERM-8).
        let mut again = Vec::new();
        let mut late = m.follow(job.id, 0)?;
        finish(&mut late, &mut again).await?;
        ensure!(again == out.as_bytes(), "late follower differs");
        Ok(())
    });
}

#[test]
fn keystrokes_echo_and_a_resize_arrives_as_sigwinch() {
    // spec: QX-TERM-5, QX-TERM-7
    each_setup("terminal resize", |m, _| async move {
        let script = "trap 'stty size; kill $! 2>/dev/null; exit 0' WINCH; \
                      read line; echo got:$line; sleep 1000 & wait";
        let (job, mut f) = start(&m, script).await?;
        let mut stdin = job.stdin.context("terminal input")?;
        let term = job.terminal.context("terminal")?;
        let mut out = Vec::new();
        stdin.write_all(b"hello\r").await?;
        // The terminal echoes the line, then the shell prints it.
        wait_for(&mut f, &mut out, "got:hello\r\n").await?;
        ensure!(String::from_utf8_lossy(&out).starts_with("hello\r\n"));
        let size = WindowSize {
            rows: 50,
            cols: 200,
            width_px: 1600,
            height_px: 1000,
        };
        // The shell may still be starting `sleep`; a resize before its `wait` runs is
        // still delivered (the trap runs once `wait` starts or the command ends).
        term.resize(size)?;
        ensure!(term.size()? == size);
        let status = finish(&mut f, &mut out).await?;
        let text = String::from_utf8_lossy(&out);
        ensure!(text.contains("50 200\r\n"), "{text:?}");
        ensure!(
            status.state
                == JobState::Exited {
                    termination: Termination::Exited(0)
                },
            "{status:?}"
        );
        Ok(())
    });
}

#[test]
fn ctrl_c_in_the_stream_interrupts_the_program() {
    // spec: QX-TERM-5 (^C is the terminal's: SIGINT to the foreground group)
    each_setup("terminal ctrl-c", |m, _| async move {
        let (job, mut f) = start(&m, "echo ready; exec sleep 1000").await?;
        let mut stdin = job.stdin.context("terminal input")?;
        let mut out = Vec::new();
        wait_for(&mut f, &mut out, "ready\r\n").await?;
        stdin.write_all(&[0x03]).await?;
        let status = finish(&mut f, &mut out).await?;
        ensure!(
            status.state
                == JobState::Exited {
                    termination: Termination::Signaled(libc::SIGINT)
                },
            "{status:?}"
        );
        Ok(())
    });
}

#[test]
fn stop_ends_a_terminal_job_like_any_other() {
    // spec: QX-TERM-5 (stop, status as other jobs)
    each_setup("terminal stop", |m, _| async move {
        let (job, mut f) = start(&m, "echo ready; exec sleep 1000").await?;
        let mut out = Vec::new();
        wait_for(&mut f, &mut out, "ready\r\n").await?;
        m.stop(job.id, None, qexec_protocol::StopReason::Timeout)
            .await?;
        let status = finish(&mut f, &mut out).await?;
        ensure!(
            matches!(status.state, JobState::Stopped { .. }),
            "{status:?}"
        );
        Ok(())
    });
}
