//! The job library run for real: processes, pipes, the output log, followers, stops.
//!
//! Tests that inspect process-wide state (fd table, zombie children) take the
//! exclusive side of [`PROCESS_WIDE`]; every other test takes the shared side before
//! it creates its runtime, so no test opens fds or starts processes while one of
//! them measures.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use qexec_job::testkit::{require_root, skip_unless};
use qexec_job::{FollowEvent, Follower, JobManager, JobSpec, ManagerConfig, StartError};
use qexec_protocol::{
    JobId, JobState, JobStatus, OutputStream, SpawnFailure, StopReason, Termination,
};

static PROCESS_WIDE: RwLock<()> = RwLock::new(());

/// Generous bound for anything that should take well under a second.
const LONG: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs a test body on its own runtime, alongside other shared tests.
fn run<F: Future<Output = Result<()>>>(body: impl FnOnce() -> F) {
    let _guard = PROCESS_WIDE.read().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let r = rt.block_on(body());
    drop(rt);
    r.unwrap();
}

/// Runs a test body while no other test runs.
fn run_exclusive<F: Future<Output = Result<()>>>(body: impl FnOnce() -> F) {
    let _guard = PROCESS_WIDE.write().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let r = rt.block_on(body());
    drop(rt);
    r.unwrap();
}

/// A scratch directory outside `/tmp`: isolated jobs get a private `/tmp`, so files
/// a test prepares for a job must live elsewhere.
fn tempdir() -> std::io::Result<tempfile::TempDir> {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
}

/// A cgroup subtree of this manager alone: a manager kills the job cgroups it finds
/// in its subtree at start (stale), so parallel tests (and a running qexecd) must not
/// share one.
fn unique_subtree() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "qexec-test-jobs-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The product defaults (isolation and cgroups on when the host allows it).
fn config(dir: &Path) -> ManagerConfig {
    let mut c = ManagerConfig::new(dir.join("state"));
    c.default_grace = Duration::from_secs(5);
    c.cgroup_subtree = unique_subtree();
    c
}

/// Jobs share the host's namespaces (pids they print are host pids).
fn plain_config(dir: &Path) -> ManagerConfig {
    let mut c = config(dir);
    c.isolation = false;
    c
}

/// Whether a test that needs isolation may run (the manager has it); prints why not
/// when it skips, fails under `CI=true`.
fn isolation_or_skip(m: &JobManager, test: &str) -> Result<bool> {
    let caps = m.capabilities();
    let available = if caps.isolation {
        Ok(())
    } else {
        Err(format!(
            "job isolation is unavailable here ({}); run as root",
            caps.isolation_unavailable.unwrap_or_default()
        ))
    };
    Ok(skip_unless(test, available))
}

/// Host pids of every process in the PID namespace of `pid` (other than ours).
fn pids_in_pid_namespace_of(pid: u32) -> Result<Vec<u32>> {
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/pid"))?;
    let mine = std::fs::read_link("/proc/self/ns/pid")?;
    ensure!(ns != mine, "process {pid} is not in its own PID namespace");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_link(entry.path().join("ns/pid")).is_ok_and(|l| l == ns) {
            pids.push(p);
        }
    }
    Ok(pids)
}

async fn manager(dir: &Path) -> Result<JobManager> {
    Ok(JobManager::new(config(dir)).await?)
}

fn spec(argv: &[&str]) -> JobSpec {
    JobSpec {
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: Vec::new(),
        cwd: None,
        stdin: false,
        timeout: None,
        owner: "tester".into(),
        limits: Default::default(),
        host_root_allowed: true,
        terminal: None,
    }
}

fn sh(script: &str) -> JobSpec {
    spec(&["/bin/sh", "-c", script])
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(LONG, f)
        .await
        .with_context(|| format!("{what} did not happen within {LONG:?}"))
}

/// Everything a follower delivered.
#[derive(Debug, Default, PartialEq, Eq)]
struct Collected {
    /// Combined bytes in order.
    combined: Vec<u8>,
    /// Stream of each maximal run of combined bytes: (stream, length).
    runs: Vec<(OutputStream, usize)>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    first_offset: Option<u64>,
}

impl Collected {
    fn push(&mut self, stream: OutputStream, offset: u64, data: &[u8]) -> Result<()> {
        let expected = self.first_offset.get_or_insert(offset);
        ensure!(
            offset == *expected + self.combined.len() as u64,
            "offsets are contiguous: got {offset}, expected {}",
            *expected + self.combined.len() as u64
        );
        ensure!(!data.is_empty(), "no empty data events");
        self.combined.extend_from_slice(data);
        match self.runs.last_mut() {
            Some((s, n)) if *s == stream => *n += data.len(),
            _ => self.runs.push((stream, data.len())),
        }
        match stream {
            OutputStream::Stdout => self.stdout.extend_from_slice(data),
            OutputStream::Stderr => self.stderr.extend_from_slice(data),
        }
        Ok(())
    }
}

/// Reads a follower to its end.
async fn collect(mut f: Follower) -> Result<(Collected, JobStatus)> {
    let mut c = Collected::default();
    loop {
        match f.next().await?.context("follower ended without End")? {
            FollowEvent::Data {
                stream,
                offset,
                data,
            } => c.push(stream, offset, &data)?,
            FollowEvent::End(status) => {
                ensure!(f.next().await?.is_none(), "nothing after End");
                return Ok((c, *status));
            }
        }
    }
}

fn exited(code: i32) -> JobState {
    JobState::Exited {
        termination: Termination::Exited(code),
    }
}

/// Whether a process is alive (present and not a zombie).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// Waits until `pid` is no longer alive. A process we are not the parent of gives no
/// event to wait on, so this re-reads /proc every few ms up to a deadline.
async fn gone(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

/// This process' open fds and what they point to.
fn fds() -> Vec<(String, String)> {
    let mut v: Vec<_> = std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map_or_else(|e| e.to_string(), |p| p.display().to_string());
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        .collect();
    v.sort();
    v
}

/// Zombie children of this process.
fn zombie_children() -> Vec<u32> {
    let me = std::process::id().to_string();
    let mut z = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let mut fields = stat.rsplit(')').next().unwrap_or("").split_whitespace();
        let state = fields.next();
        let ppid = fields.next();
        if state == Some("Z") && ppid == Some(me.as_str()) {
            z.push(pid);
        }
    }
    z
}

/// Files holding every byte value, different for each stream.
fn pattern_files(dir: &Path, len: usize) -> Result<(PathBuf, PathBuf, Vec<u8>, Vec<u8>)> {
    let out: Vec<u8> = (0..len).map(|i| (i % 256) as u8).collect();
    let err: Vec<u8> = (0..len).map(|i| (255 - (i * 7) % 256) as u8).collect();
    let (po, pe) = (dir.join("out.bin"), dir.join("err.bin"));
    std::fs::write(&po, &out)?;
    std::fs::write(&pe, &err)?;
    Ok((po, pe, out, err))
}

// spec: QX-STREAM-12, QX-STREAM-13, QX-STREAM-14
#[test]
fn three_followers_at_different_times_get_identical_streams() {
    run(|| async {
        let dir = tempdir()?;
        let (po, pe, out, err) = pattern_files(dir.path(), 1 << 20)?;
        let rounds = 6;
        let m = manager(dir.path()).await?;
        let job = m
            .start(sh(&format!(
                "for i in $(seq {rounds}); do cat {o}; cat {e} >&2; head -c 1000 {o}; done",
                o = po.display(),
                e = pe.display()
            )))
            .await?;
        let mut expected_out = Vec::new();
        let mut expected_err = Vec::new();
        for _ in 0..rounds {
            expected_out.extend_from_slice(&out);
            expected_out.extend_from_slice(&out[..1000]);
            expected_err.extend_from_slice(&err);
        }
        ensure!(expected_out.len() + expected_err.len() > 10 << 20);

        // First follower from the start; the second joins once the first has 1 MiB.
        let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
        let mut f1 = m.follow(job.id, 0)?;
        let first = tokio::spawn(async move {
            let mut c = Collected::default();
            loop {
                match f1.next().await?.context("no End")? {
                    FollowEvent::Data {
                        stream,
                        offset,
                        data,
                    } => {
                        c.push(stream, offset, &data)?;
                        progress_tx.send_replace(c.combined.len());
                    }
                    FollowEvent::End(status) => return anyhow::Ok((c, *status)),
                }
            }
        });
        within(
            "1 MiB for the first follower",
            progress.wait_for(|n| *n >= 1 << 20),
        )
        .await??;
        let second = tokio::spawn(collect(m.follow(job.id, 0)?));
        let status = within("job end", m.wait(job.id)).await??;
        // The third joins after the end.
        let (c3, s3) = within("third follower", collect(m.follow(job.id, 0)?)).await??;
        let (c1, s1) = within("first follower", first).await???;
        let (c2, s2) = within("second follower", second).await???;

        assert_eq!(status.state, exited(0));
        assert_eq!(status.stdout_bytes, expected_out.len() as u64);
        assert_eq!(status.stderr_bytes, expected_err.len() as u64);
        assert!(!status.output_truncated);
        for (c, s) in [(&c1, &s1), (&c2, &s2), (&c3, &s3)] {
            assert_eq!(s, &status);
            assert_eq!(c.first_offset, Some(0));
            assert!(
                c.stdout == expected_out,
                "stdout identical to what the job wrote"
            );
            assert!(
                c.stderr == expected_err,
                "stderr identical to what the job wrote"
            );
        }
        assert!(c1 == c2 && c2 == c3, "combined streams identical");
        // Each pipe holds at most 1 MiB, so 6 MiB per stream cannot be read one stream
        // after the other: the capture interleaves.
        assert!(c1.runs.len() >= 3, "stdout and stderr interleave");
        Ok(())
    });
}

// spec: QX-STREAM-14
#[test]
fn follow_from_a_middle_offset_yields_the_tail() {
    run(|| async {
        let dir = tempdir()?;
        let (po, pe, _, _) = pattern_files(dir.path(), 300_000)?;
        let m = manager(dir.path()).await?;
        let job = m
            .start(sh(&format!(
                "cat {o}; cat {e} >&2; cat {o}",
                o = po.display(),
                e = pe.display()
            )))
            .await?;
        let (all, _) = within("full follower", collect(m.follow(job.id, 0)?)).await??;
        assert_eq!(all.combined.len(), 900_000);
        for from in [1u64, 299_999, 450_001, 899_999] {
            let (tail, status) = within("tail", collect(m.follow(job.id, from)?)).await??;
            assert_eq!(tail.first_offset, Some(from));
            assert!(
                tail.combined == all.combined[from as usize..],
                "tail from {from}"
            );
            assert_eq!(status.state, exited(0));
        }
        // Past the end: just the end.
        let (none, status) = within("past end", collect(m.follow(job.id, 10_000_000)?)).await??;
        assert!(none.combined.is_empty());
        assert_eq!(status.output_bytes(), 900_000);
        Ok(())
    });
}

#[test]
fn late_follower_gets_everything_then_end() {
    run(|| async {
        let dir = tempdir()?;
        let m = manager(dir.path()).await?;
        let job = m.start(sh("printf hello; printf oops >&2; exit 4")).await?;
        let status = within("end", m.wait(job.id)).await??;
        assert_eq!(status.state, exited(4));
        assert_eq!((status.stdout_bytes, status.stderr_bytes), (5, 4));
        assert!(
            status
                .ended_at_ms
                .is_some_and(|e| e >= status.started_at_ms)
        );
        assert_eq!(status.pid, Some(job.pid));
        let (c, end) = within("late follower", collect(m.follow(job.id, 0)?)).await??;
        assert_eq!(
            (c.stdout.as_slice(), c.stderr.as_slice()),
            (&b"hello"[..], &b"oops"[..])
        );
        // Two pipes: when both hold data, either may be read first.
        assert!(c.combined == b"hellooops" || c.combined == b"oopshello");
        assert_eq!(c.runs.len(), 2);
        assert_eq!(end, status);
        Ok(())
    });
}

#[test]
fn stalled_follower_does_not_slow_another() {
    run(|| async {
        let dir = tempdir()?;
        let m = manager(dir.path()).await?;
        let size: u64 = 64 << 20;
        let job = m
            .start(spec(&["head", "-c", &size.to_string(), "/dev/zero"]))
            .await?;
        let mut stalled = m.follow(job.id, 0)?;
        // The stalled follower takes one event, then never reads again (until the end).
        let first = within("first event", stalled.next()).await??;
        assert!(matches!(first, Some(FollowEvent::Data { offset: 0, .. })));
        let (c, status) = within("active follower", collect(m.follow(job.id, 0)?)).await??;
        assert_eq!(c.combined.len() as u64, size);
        assert_eq!(status.state, exited(0));
        assert_eq!(
            m.status(job.id)?.state,
            exited(0),
            "the job was not held back"
        );
        // The stalled one still gets everything afterwards.
        let Some(FollowEvent::Data { data, .. }) = first else {
            bail!("first event is data")
        };
        let (rest, _) = within("stalled follower", collect(stalled)).await??;
        assert_eq!(data.len() as u64 + rest.combined.len() as u64, size);
        Ok(())
    });
}

fn spawn_failure(r: Result<qexec_job::StartedJob, StartError>) -> Result<(SpawnFailure, String)> {
    match r {
        Err(StartError::Spawn {
            failure, message, ..
        }) => Ok((failure, message)),
        Err(e) => bail!("expected a spawn failure, got {e:?}"),
        Ok(j) => bail!("expected a spawn failure, job {} started", j.id),
    }
}

/// A tmpfs mounted `noexec` (as root), unmounted on drop.
struct NoexecMount(PathBuf);

impl Drop for NoexecMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

// spec: QX-MSG-TYPE-5
#[test]
fn each_spawn_error_is_its_own_variant() {
    run(|| async {
        let dir = tempdir()?;
        let m = manager(dir.path()).await?;
        let (f, _) = spawn_failure(m.start(spec(&[])).await)?;
        assert_eq!(f, SpawnFailure::EmptyArgv);
        let (f, msg) = spawn_failure(m.start(spec(&["/nonexistent/qexec-prog"])).await)?;
        assert_eq!(f, SpawnFailure::NotFound);
        assert!(msg.contains("/nonexistent/qexec-prog"), "{msg}");
        let (f, _) = spawn_failure(m.start(spec(&["qexec-no-such-program"])).await)?;
        assert_eq!(f, SpawnFailure::NotFound);

        let plain = dir.path().join("plain.txt");
        std::fs::write(&plain, "not a program\n")?;
        let (f, _) = spawn_failure(m.start(spec(&[plain.to_str().unwrap()])).await)?;
        assert_eq!(f, SpawnFailure::NotExecutable);
        let (f, _) = spawn_failure(m.start(spec(&[dir.path().to_str().unwrap()])).await)?;
        assert_eq!(f, SpawnFailure::NotExecutable);

        let mut s = spec(&["/bin/true"]);
        s.cwd = Some(dir.path().join("missing"));
        let (f, _) = spawn_failure(m.start(s).await)?;
        assert_eq!(f, SpawnFailure::BadCwd);

        // Permission denied: root passes mode checks, so use a noexec mount; other
        // users get a directory they may not search.
        let denied_dir = dir.path().join("denied");
        std::fs::create_dir(&denied_dir)?;
        let _mount = if nix::unistd::geteuid().is_root() {
            nix::mount::mount(
                Some("tmpfs"),
                &denied_dir,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .context("mount a noexec tmpfs")?;
            Some(NoexecMount(denied_dir.clone()))
        } else {
            None
        };
        let prog = denied_dir.join("true");
        std::fs::copy("/bin/true", &prog)?;
        if _mount.is_none() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&denied_dir, std::fs::Permissions::from_mode(0o000))?;
        }
        let (f, _) = spawn_failure(m.start(spec(&[prog.to_str().unwrap()])).await)?;
        if _mount.is_none() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&denied_dir, std::fs::Permissions::from_mode(0o755))?;
        }
        assert_eq!(f, SpawnFailure::PermissionDenied);
        // spec: QX-DUR-5 — each failed start is a job in state FailedToStart, with no
        // pid and no output, its id given in the error.
        let listed = m.list();
        assert_eq!(listed.len(), 7);
        for s in &listed {
            assert!(
                matches!(s.state, JobState::FailedToStart { .. }),
                "{:?}",
                s.state
            );
            assert_eq!((s.pid, s.output_bytes()), (None, 0));
            assert!(s.ended_at_ms.is_some());
        }
        let r = m.start(spec(&["qexec-no-such-program"])).await;
        let Err(StartError::Spawn {
            job: Some(id),
            message,
            ..
        }) = r
        else {
            bail!("expected a recorded spawn failure, got {r:?}");
        };
        assert!(message.contains(&id.to_string()), "{message}");
        let status = m.status(id)?;
        assert!(matches!(
            status.state,
            JobState::FailedToStart {
                failure: SpawnFailure::NotFound,
                ..
            }
        ));
        // Following it ends at once, with nothing.
        let (out, end) = within("follow a failed start", collect(m.follow(id, 0)?)).await??;
        assert!(out.combined.is_empty());
        assert_eq!(end, status);
        Ok(())
    });
}

#[test]
fn too_many_jobs_is_its_own_variant() {
    run(|| async {
        let dir = tempdir()?;
        let mut c = config(dir.path());
        c.max_running_jobs = 1;
        let m = JobManager::new(c).await?;
        let first = m.start(spec(&["sleep", "1000"])).await?;
        match m.start(spec(&["/bin/true"])).await {
            Err(e @ StartError::TooManyJobs { max: 1 }) => {
                assert_eq!(e.spawn_failure(), Some(SpawnFailure::TooManyJobs));
            }
            other => bail!("expected TooManyJobs, got {other:?}"),
        }
        let by = StopReason::Requested { by: "t".into() };
        within("stop", m.stop(first.id, None, by)).await??;
        // The slot is free again.
        let second = m.start(spec(&["/bin/true"])).await?;
        assert_eq!(within("end", m.wait(second.id)).await??.state, exited(0));
        Ok(())
    });
}

// spec: QX-MSG-CTRL-2, QX-MSG-TYPE-4, QX-MSG-TYPE-6
#[test]
fn stop_terminates_then_kills_and_records_who() {
    run(|| async {
        let dir = tempdir()?;
        let m = manager(dir.path()).await?;
        let alice = StopReason::Requested { by: "alice".into() };
        let job = m.start(spec(&["sleep", "1000"])).await?;
        let s = within("stop", m.stop(job.id, None, alice.clone())).await??;
        assert_eq!(
            s.state,
            JobState::Stopped {
                reason: alice.clone(),
                termination: Termination::Signaled(libc::SIGTERM)
            }
        );
        assert!(!alive(job.pid));

        // A job ignoring SIGTERM is SIGKILLed after the grace; two concurrent stops
        // return the same final status with the first reason.
        let stubborn = m
            .start(sh("trap '' TERM; echo ready; while :; do sleep 1; done"))
            .await?;
        let mut f = m.follow(stubborn.id, 0)?;
        within("ready", f.next()).await??;
        let bob = StopReason::Requested { by: "bob".into() };
        let (a, b) = tokio::join!(
            m.stop(stubborn.id, Some(Duration::from_millis(300)), alice.clone()),
            async {
                tokio::task::yield_now().await;
                m.stop(stubborn.id, Some(Duration::from_secs(30)), bob)
                    .await
            }
        );
        let (a, b) = (a?, b?);
        assert_eq!(a, b);
        assert_eq!(
            a.state,
            JobState::Stopped {
                reason: alice,
                termination: Termination::Signaled(libc::SIGKILL)
            }
        );
        Ok(())
    });
}

// spec: QX-MSG-CTRL-2
#[test]
fn stopping_a_finished_job_returns_its_status_unchanged() {
    run(|| async {
        let dir = tempdir()?;
        let m = manager(dir.path()).await?;
        let job = m.start(sh("exit 3")).await?;
        let done = within("end", m.wait(job.id)).await??;
        let by = StopReason::Requested { by: "late".into() };
        let stopped = m.stop(job.id, None, by).await?;
        assert_eq!(stopped, done);
        assert_eq!(stopped.state, exited(3));
        // Signalling a finished job is not an error either.
        assert_eq!(m.signal(job.id, libc::SIGTERM)?, done);
        Ok(())
    });
}

#[test]
fn signal_reaches_the_main_program() {
    run(|| async {
        let dir = tempdir()?;
        let m = manager(dir.path()).await?;
        let job = m.start(spec(&["sleep", "1000"])).await?;
        m.signal(job.id, libc::SIGUSR1)?;
        let s = within("end", m.wait(job.id)).await??;
        // Not stopped by qexec: it died of a signal someone sent it.
        assert_eq!(
            s.state,
            JobState::Exited {
                termination: Termination::Signaled(libc::SIGUSR1)
            }
        );
        assert!(matches!(
            m.signal(job.id, 0),
            Err(qexec_job::JobError::InvalidSignal { signal: 0, .. })
        ));
        let unknown = JobId::from_u128(7);
        assert!(
            matches!(m.status(unknown), Err(qexec_job::JobError::NotFound(id)) if id == unknown)
        );
        Ok(())
    });
}

#[test]
fn timeout_stops_the_job() {
    run(|| async {
        let dir = tempdir()?;
        let m = manager(dir.path()).await?;
        let mut s = spec(&["sleep", "1000"]);
        s.timeout = Some(Duration::from_millis(200));
        let job = m.start(s).await?;
        let status = within("timeout", m.wait(job.id)).await??;
        assert_eq!(
            status.state,
            JobState::Stopped {
                reason: StopReason::Timeout,
                termination: Termination::Signaled(libc::SIGTERM)
            }
        );
        Ok(())
    });
}

#[test]
fn output_cap_stops_the_job_and_keeps_bytes_up_to_it() {
    run(|| async {
        let dir = tempdir()?;
        let mut c = config(dir.path());
        c.output_cap = 1 << 20;
        let m = JobManager::new(c).await?;
        let job = m.start(spec(&["yes", "qexec"])).await?;
        let (out, status) = within("cap", collect(m.follow(job.id, 0)?)).await??;
        assert_eq!(
            status.state,
            JobState::Stopped {
                reason: StopReason::OutputLimit,
                termination: Termination::Signaled(libc::SIGTERM)
            }
        );
        assert!(status.output_truncated);
        assert_eq!(status.stdout_bytes, 1 << 20);
        assert_eq!(out.combined.len(), 1 << 20);
        assert!(out.combined.chunks(6).take(1000).all(|l| l == b"qexec\n"));
        Ok(())
    });
}

#[test]
fn stdin_round_trip_with_eof() {
    run(|| async {
        let dir = tempdir()?;
        let m = manager(dir.path()).await?;
        let mut s = spec(&["cat"]);
        s.stdin = true;
        let job = m.start(s).await?;
        let mut stdin = job.stdin.context("stdin writer")?;
        // More than a pipe holds, so the writer must wait for the job to read.
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let follower = tokio::spawn(collect(m.follow(job.id, 0)?));
        within("write", stdin.write_all(&data)).await??;
        stdin.close();
        let (out, status) = within("end", follower).await???;
        assert_eq!(status.state, exited(0));
        assert!(out.stdout == data);
        // Without stdin the job reads /dev/null.
        let job = m.start(spec(&["cat"])).await?;
        assert!(job.stdin.is_none());
        assert_eq!(within("end", m.wait(job.id)).await??.output_bytes(), 0);
        Ok(())
    });
}

#[test]
fn background_child_holding_the_pipe_does_not_keep_the_job_running() {
    run(|| async {
        let dir = tempdir()?;
        let mut c = plain_config(dir.path());
        c.output_drain = Duration::from_millis(200);
        let m = JobManager::new(c).await?;
        let job = m.start(sh("sleep 1000 & echo $!")).await?;
        let (out, status) = within("end", collect(m.follow(job.id, 0)?)).await??;
        assert_eq!(status.state, exited(0));
        let pid: u32 = String::from_utf8(out.stdout)?.trim().parse()?;
        assert!(
            gone(pid).await,
            "background child {pid} was killed with the job"
        );
        Ok(())
    });
}

#[test]
fn setsid_grandchild_is_gone_after_stop_when_isolated() {
    run(|| async {
        let dir = tempdir()?;
        let m = manager(dir.path()).await?;
        if !isolation_or_skip(&m, "setsid_grandchild_is_gone_after_stop_when_isolated")? {
            return Ok(());
        }
        // The grandchild leaves the job's session, then prints its (namespace) pid.
        let job = m
            .start(sh(
                "sh -c 'setsid sh -c \"echo \\$$; exec sleep 1000\" & wait' & wait",
            ))
            .await?;
        let mut f = m.follow(job.id, 0)?;
        let Some(FollowEvent::Data { data, .. }) = within("pid", f.next()).await?? else {
            bail!("expected the grandchild's pid");
        };
        let ns_pid = String::from_utf8(data.to_vec())?.trim().to_string();
        let pids = pids_in_pid_namespace_of(job.pid)?;
        let grandchild = pids
            .iter()
            .copied()
            .find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|st| {
                    st.lines().any(|l| {
                        l.starts_with("NSpid:")
                            && l.split_whitespace().last() == Some(ns_pid.as_str())
                    })
                })
            })
            .with_context(|| format!("no process with namespace pid {ns_pid} among {pids:?}"))?;
        let stat = std::fs::read_to_string(format!("/proc/{grandchild}/stat"))?;
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        // Fields after the command: state ppid pgrp session.
        ensure!(
            fields.get(3) == Some(&grandchild.to_string().as_str()),
            "the grandchild leads its own session: {stat}"
        );
        let by = StopReason::Requested { by: "t".into() };
        let status = within("stop", m.stop(job.id, Some(Duration::from_millis(500)), by)).await??;
        assert!(matches!(status.state, JobState::Stopped { .. }));
        for pid in pids {
            assert!(
                gone(pid).await,
                "process {pid} of the job survived the stop"
            );
        }
        Ok(())
    });
}

#[test]
fn setsid_grandchild_is_gone_after_stop_without_isolation() {
    run(|| async {
        let dir = tempdir()?;
        let m = JobManager::new(plain_config(dir.path())).await?;
        let job = m.start(sh("setsid sleep 1000 & echo $!; wait")).await?;
        let mut f = m.follow(job.id, 0)?;
        let Some(FollowEvent::Data { data, .. }) = within("pid", f.next()).await?? else {
            bail!("expected the grandchild's pid");
        };
        let pid: u32 = String::from_utf8(data.to_vec())?.trim().parse()?;
        let by = StopReason::Requested { by: "t".into() };
        within("stop", m.stop(job.id, Some(Duration::from_millis(500)), by)).await??;
        let is_gone = gone(pid).await;
        if !is_gone {
            // Do not leave it behind for the next test run.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(is_gone, "setsid grandchild {pid} survived the stop");
        Ok(())
    });
}

#[test]
fn shutdown_stops_running_jobs_and_refuses_new_ones() {
    run(|| async {
        let dir = tempdir()?;
        let m = manager(dir.path()).await?;
        let job = m.start(spec(&["sleep", "1000"])).await?;
        within("shutdown", m.shutdown()).await?;
        let s = m.status(job.id)?;
        assert_eq!(
            s.state,
            JobState::Stopped {
                reason: StopReason::Shutdown,
                termination: Termination::Signaled(libc::SIGTERM)
            }
        );
        assert!(matches!(
            m.start(spec(&["/bin/true"])).await,
            Err(StartError::ShuttingDown)
        ));
        Ok(())
    });
}

#[test]
fn dropping_the_manager_kills_its_jobs_and_ends_followers() {
    run(|| async {
        let dir = tempdir()?;
        let m = manager(dir.path()).await?;
        let job = m.start(spec(&["sleep", "1000"])).await?;
        let f = m.follow(job.id, 0)?;
        drop(m);
        let (_, status) = within("follower end", collect(f)).await??;
        assert_eq!(
            status.state,
            JobState::Stopped {
                reason: StopReason::Shutdown,
                termination: Termination::Signaled(libc::SIGKILL)
            }
        );
        assert!(!alive(job.pid));
        // spec: QX-DUR-1 — the record and the output stay for the next manager.
        assert!(
            dir.path()
                .join(format!("state/jobs/{}/output", job.id))
                .exists(),
            "the job's output log is kept"
        );
        let again = manager(dir.path()).await?;
        let recovered = again.status(job.id)?;
        assert_eq!(recovered.state, status.state);
        assert_eq!(recovered.id, job.id);
        Ok(())
    });
}

#[test]
fn list_is_oldest_first_and_retention_forgets_old_jobs() {
    run(|| async {
        let dir = tempdir()?;
        let mut c = config(dir.path());
        c.retain_finished = 3;
        let m = JobManager::new(c).await?;
        let mut ids = Vec::new();
        for i in 0..5 {
            let job = m.start(sh(&format!("echo {i}"))).await?;
            within("end", m.wait(job.id)).await??;
            ids.push(job.id);
        }
        let listed: Vec<JobId> = m.list().iter().map(|s| s.id).collect();
        assert_eq!(listed, ids[2..]);
        assert!(matches!(
            m.status(ids[0]),
            Err(qexec_job::JobError::NotFound(_))
        ));
        assert!(!dir.path().join(format!("state/jobs/{}", ids[0])).exists());
        assert!(
            dir.path()
                .join(format!("state/jobs/{}/output", ids[4]))
                .exists()
        );
        Ok(())
    });
}

#[test]
fn two_hundred_short_jobs_leave_no_zombie_and_no_fd() {
    run_exclusive(|| async {
        let dir = tempdir()?;
        let m = manager(dir.path()).await?;
        // Warm up the runtime's lazily created resources (blocking pool, timers).
        let warm = m.start(sh("echo warm")).await?;
        within("warm-up", collect(m.follow(warm.id, 0)?)).await??;
        let fds_before = fds();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..200u32 {
            let m = m.clone();
            set.spawn(async move {
                let mut s = sh("echo out; echo err >&2");
                s.stdin = i % 3 == 0;
                let job = m.start(s).await?;
                match i % 4 {
                    // Read to the end.
                    0 => {
                        collect(m.follow(job.id, 0)?).await?;
                    }
                    // Drop a follower mid-way.
                    1 => {
                        let mut f = m.follow(job.id, 0)?;
                        f.next().await?;
                        drop(f);
                        m.wait(job.id).await?;
                    }
                    _ => {
                        m.wait(job.id).await?;
                    }
                }
                drop(job.stdin);
                anyhow::Ok(())
            });
            // At most 8 at once.
            if set.len() >= 8 {
                within("job", set.join_next()).await?.context("task")???;
            }
        }
        while let Some(r) = within("jobs", set.join_next()).await? {
            r??;
        }
        assert_eq!(m.list().len(), 201);
        assert!(m.list().iter().all(|s| s.state == exited(0)));
        assert_eq!(zombie_children(), Vec::<u32>::new(), "no zombie children");
        assert_eq!(fds(), fds_before, "no fd left behind");
        Ok(())
    });
}

/// The service runs these futures on a multi-threaded runtime: they must be `Send`.
#[test]
fn api_futures_and_handles_are_send() {
    fn send<T: Send>(_: &T) {}
    fn send_sync<T: Send + Sync>() {}
    send_sync::<JobManager>();
    send_sync::<Follower>();
    send_sync::<qexec_job::JobStdin>();
    run(|| async {
        let dir = tempdir()?;
        let m = manager(dir.path()).await?;
        let start = m.start(spec(&["/bin/true"]));
        send(&start);
        let job = start.await?;
        let by = StopReason::Requested { by: "t".into() };
        let stop = m.stop(job.id, None, by);
        send(&stop);
        send(&m.wait(job.id));
        send(&m.shutdown());
        let mut f = m.follow(job.id, 0)?;
        send(&f.next());
        stop.await?;
        Ok(())
    });
}

/// The server can run jobs as an unprivileged uid/gid (no supplementary
/// groups), isolated (the init stays root, the target drops) and not.
#[test]
fn jobs_run_as_the_configured_user() {
    run(|| async {
        if !require_root("jobs_run_as_the_configured_user (changes credentials)") {
            return Ok(());
        }
        for isolated in [false, true] {
            let dir = tempdir()?;
            let mut c = if isolated {
                config(dir.path())
            } else {
                plain_config(dir.path())
            };
            c.job_credentials = Some((65534, 65534));
            let m = JobManager::new(c).await?;
            if isolated && !isolation_or_skip(&m, "jobs_run_as_the_configured_user")? {
                continue;
            }
            let job = m.start(sh("id -u; id -g; id -G")).await?;
            let (c, end) = within("job as nobody", collect(m.follow(job.id, 0)?)).await??;
            assert_eq!(end.state, exited(0), "isolated={isolated}");
            assert_eq!(
                String::from_utf8_lossy(&c.stdout),
                "65534\n65534\n65534\n",
                "isolated={isolated}"
            );
        }
        Ok(())
    });
}

/// A python3 probe: for each `name:nr:a0:a1:a2` argument, makes the raw system call
/// and prints `name ok` or `name ERRNO_NAME`. A `clone*` that succeeds ends its child.
const SYSCALL_PROBE: &str = r#"
import ctypes, errno, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for spec in sys.argv[1:]:
    name, nr, *args = spec.split(":")
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(int(nr)), *[ctypes.c_long(int(a)) for a in args])
    if name.startswith("clone") and r == 0:
        os._exit(0)
    if name.startswith("clone") and r > 0:
        os.waitpid(r, 0)
    e = ctypes.get_errno()
    print(name, errno.errorcode.get(e, e) if r == -1 else "ok", flush=True)
"#;

/// `name:nr:a0:a1:a2` for [`SYSCALL_PROBE`]: calls the default seccomp filter denies
/// (spec: QX-SBX-21, QX-SBX-22) with arguments that would not fail with EPERM
/// without it (root: success or EFAULT/EINVAL).
fn denied_probes() -> Vec<String> {
    let ns_clone = (libc::CLONE_NEWNS | libc::SIGCHLD) as i64;
    [
        ("keyctl", libc::SYS_keyctl, [0, -3, 0]),
        ("perf_event_open", libc::SYS_perf_event_open, [0, 0, -1]),
        ("bpf", libc::SYS_bpf, [0, 0, 0]),
        (
            "unshare_newuser",
            libc::SYS_unshare,
            [libc::CLONE_NEWUSER as i64, 0, 0],
        ),
        ("mount", libc::SYS_mount, [0, 0, 0]),
        ("clone_newns", libc::SYS_clone, [ns_clone, 0, 0]),
    ]
    .iter()
    .map(|(n, nr, a)| format!("{n}:{nr}:{}:{}:{}", a[0], a[1], a[2]))
    .collect()
}

/// Runs the seccomp probe job under `c`; returns its output.
async fn seccomp_probe_output(c: ManagerConfig) -> Result<String> {
    let want = c.seccomp;
    let m = JobManager::new(c).await?;
    ensure!(
        m.capabilities().seccomp == want,
        "Capabilities::seccomp does not follow ManagerConfig::seccomp"
    );
    let mut argv = vec![
        "/bin/sh".to_owned(),
        "-c".to_owned(),
        // `$(...)`, a pipe and a subshell: fork and exec work under the filter.
        r#"grep '^Seccomp:' /proc/self/status; echo "$(echo piped | cat)"; (exit 3); echo "sub $?"; exec python3 -c "$0" "$@""#
            .to_owned(),
        SYSCALL_PROBE.to_owned(),
    ];
    argv.extend(denied_probes());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let job = m.start(spec(&argv)).await?;
    let (c, status) = within("probe", collect(m.follow(job.id, 0)?)).await??;
    let out = String::from_utf8_lossy(&c.stdout).into_owned();
    ensure!(
        status.state == exited(0),
        "probe ended {:?}: {out}{}",
        status.state,
        String::from_utf8_lossy(&c.stderr)
    );
    Ok(out)
}

/// spec: QX-SBX-20, QX-SBX-21, QX-SBX-22, QX-SBX-24 — by default every job's program
/// runs under the filter (`Seccomp: 2`), isolated or not; the denied calls fail with
/// EPERM; fork, exec, pipes and subshells work.
#[test]
fn default_seccomp_filter_applies_to_isolated_and_plain_jobs() {
    run(|| async {
        let dir = tempdir()?;
        for isolated in [true, false] {
            let mut c = config(dir.path());
            c.isolation = isolated;
            let out = seccomp_probe_output(c).await?;
            println!("isolated={isolated}:\n{out}");
            let mut want = "Seccomp:\t2\npiped\nsub 3\n".to_owned();
            for p in denied_probes() {
                let name = p.split(':').next().unwrap_or_default();
                want.push_str(&format!("{name} EPERM\n"));
            }
            assert_eq!(out, want, "isolated={isolated}");
        }
        Ok(())
    });
}

/// `ManagerConfig::seccomp = false` (qexecd `--no-seccomp`): no filter, so the same
/// probes are not answered EPERM (evidence that the EPERMs above come from the filter).
#[test]
fn seccomp_off_runs_jobs_unfiltered() {
    run(|| async {
        let dir = tempdir()?;
        let mut c = plain_config(dir.path());
        c.seccomp = false;
        let out = seccomp_probe_output(c).await?;
        println!("{out}");
        assert!(out.starts_with("Seccomp:\t0\npiped\nsub 3\n"), "{out}");
        if nix::unistd::geteuid().is_root() {
            // Root without the filter: keyctl works, mount(NULL) is EFAULT, nothing
            // is EPERM.
            assert!(out.contains("keyctl ok\n"), "{out}");
            assert!(out.contains("mount EFAULT\n"), "{out}");
            assert!(!out.contains("EPERM"), "{out}");
        }
        Ok(())
    });
}

// ---------------------------------------------------------------------------------
// The job sandbox (spec/security.md QX-SBX-*), run for real as root.

/// Docker's default capability set (CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID
/// SETUID SETPCAP NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP).
const DOCKER_CAPS: &str = "00000000a80425fb";

/// The product defaults plus a read-write directory `<dir>/rw` (mode 0777).
fn sandbox_config(dir: &Path) -> Result<ManagerConfig> {
    let rw = dir.join("rw");
    std::fs::create_dir(&rw)?;
    std::fs::set_permissions(&rw, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    let mut c = config(dir);
    c.sandbox.rw_paths = vec![std::fs::canonicalize(&rw)?];
    Ok(c)
}

/// A manager with the sandbox active, or `None` when the test must be skipped (not
/// root, outside CI). Under CI=true a missing sandbox fails the test (panics).
async fn sandboxed(c: ManagerConfig, test: &str) -> Result<Option<JobManager>> {
    let m = JobManager::new(c).await?;
    let caps = m.capabilities();
    let available = match caps.sandbox {
        true => Ok(()),
        false => Err(format!(
            "the job sandbox is unavailable here ({}); run as root",
            caps.sandbox_unavailable.unwrap_or_default()
        )),
    };
    Ok(skip_unless(test, available).then_some(m))
}

/// Runs `script` in a job to its end; returns (exit code, stdout, stderr).
async fn run_script(m: &JobManager, script: &str) -> Result<(i32, String, String)> {
    let job = m.start(sh(script)).await?;
    let (c, end) = within(script, collect(m.follow(job.id, 0)?)).await??;
    let code = match end.state {
        JobState::Exited {
            termination: Termination::Exited(code),
        } => code,
        other => bail!("{script}: ended with {other:?}"),
    };
    Ok((
        code,
        String::from_utf8_lossy(&c.stdout).into_owned(),
        String::from_utf8_lossy(&c.stderr).into_owned(),
    ))
}

/// Reads `follower` until its stdout contains `needle`.
async fn wait_for_output(f: &mut Follower, needle: &str) -> Result<String> {
    let mut out = Vec::new();
    while !String::from_utf8_lossy(&out).contains(needle) {
        match within("job output", f.next()).await?? {
            Some(FollowEvent::Data { data, .. }) => out.extend_from_slice(&data),
            other => bail!("job ended before printing {needle:?}: {other:?}"),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// `Uid:` (real, effective, saved, fs) and `CapEff:` of host pid `pid`, read on the
/// host side.
fn host_ids(pid: u32) -> Result<(Vec<u32>, String)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    let uids = field("Uid:")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<Vec<u32>, _>>()?;
    Ok((uids, field("CapEff:")?.to_owned()))
}

/// The host pid of the only child of `init` (the job's program).
fn target_of(init: u32) -> Result<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().nth(1));
        if ppid == Some(init.to_string().as_str()) {
            children.push(pid);
        }
    }
    match children[..] {
        [one] => Ok(one),
        _ => bail!("init {init} has children {children:?}, expected exactly one"),
    }
}

/// QX-SBX-1, QX-SBX-2: uid 0 inside; on the host a uid of the job range, and two
/// concurrently running jobs have different ones. The init stays host root.
#[test]
fn sandboxed_jobs_are_root_inside_and_distinct_range_uids_on_the_host() {
    run(|| async {
        let dir = tempdir()?;
        let test = "sandboxed_jobs_are_root_inside_and_distinct_range_uids_on_the_host";
        let Some(m) = sandboxed(sandbox_config(dir.path())?, test).await? else {
            return Ok(());
        };
        let script = "echo uid=$(id -u) gid=$(id -g); echo ready; read x || true";
        let mut host_uids = Vec::new();
        let mut jobs = Vec::new();
        for _ in 0..2 {
            let mut s = sh(script);
            s.stdin = true;
            let job = m.start(s).await?;
            let mut f = m.follow(job.id, 0)?;
            let out = wait_for_output(&mut f, "ready").await?;
            assert!(out.starts_with("uid=0 gid=0\n"), "{out}");
            let (init_uids, _) = host_ids(job.pid)?;
            assert_eq!(init_uids, [0, 0, 0, 0], "the init stays host root");
            let (uids, _) = host_ids(target_of(job.pid)?)?;
            let uid = uids[0];
            assert!(uids.iter().all(|u| *u == uid), "{uids:?}");
            assert!(
                (qexec_job::DEFAULT_UID_BASE
                    ..qexec_job::DEFAULT_UID_BASE + 1024 * qexec_job::SLOT_IDS)
                    .contains(&uid),
                "host uid {uid} is not in the default job range"
            );
            assert_eq!((uid - qexec_job::DEFAULT_UID_BASE) % qexec_job::SLOT_IDS, 0);
            host_uids.push(uid);
            jobs.push((job, f));
        }
        assert_ne!(
            host_uids[0], host_uids[1],
            "two running jobs share a host uid"
        );
        for (job, f) in jobs {
            drop(job.stdin);
            let (_, end) = within("job end", collect(f)).await??;
            assert_eq!(end.state, exited(0));
        }
        Ok(())
    });
}

/// Control for the test above: without the sandbox, the same job is host root.
#[test]
fn without_the_sandbox_a_job_is_host_root() {
    run(|| async {
        if !require_root("without_the_sandbox_a_job_is_host_root") {
            return Ok(());
        }
        let dir = tempdir()?;
        let mut c = config(dir.path());
        c.sandbox.enabled = false;
        let m = JobManager::new(c).await?;
        assert!(!m.capabilities().sandbox);
        let (code, out, err) =
            run_script(&m, "id -u; grep -E '^Cap(Eff|Bnd)' /proc/self/status").await?;
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with("0\nCapEff:\t000001ff"), "{out}");
        Ok(())
    });
}

/// QX-SBX-11: CapEff, CapPrm and CapBnd are Docker's list, CapInh and CapAmb empty,
/// no_new_privs set; capabilities on the host side: none (a non-root host uid).
#[test]
fn sandboxed_job_has_only_the_bounded_capabilities() {
    run(|| async {
        let dir = tempdir()?;
        let test = "sandboxed_job_has_only_the_bounded_capabilities";
        let Some(m) = sandboxed(sandbox_config(dir.path())?, test).await? else {
            return Ok(());
        };
        let (code, out, err) = run_script(
            &m,
            "grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs|Groups):' /proc/self/status",
        )
        .await?;
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            out,
            format!(
                "Groups:\t \nCapInh:\t0000000000000000\nCapPrm:\t{DOCKER_CAPS}\n\
                 CapEff:\t{DOCKER_CAPS}\nCapBnd:\t{DOCKER_CAPS}\n\
                 CapAmb:\t0000000000000000\nNoNewPrivs:\t1\n"
            )
        );
        Ok(())
    });
}

/// QX-SBX-4, QX-SBX-9: a world-writable host directory not opened with `--rw-path`
/// is read-only; an `--rw-path` directory is writable (the file belongs to the job's
/// host uid); a root-only host file is unreadable.
#[test]
fn sandboxed_job_cannot_write_the_host_but_can_write_its_rw_path() {
    run(|| async {
        let dir = tempdir()?;
        let test = "sandboxed_job_cannot_write_the_host_but_can_write_its_rw_path";
        let Some(m) = sandboxed(sandbox_config(dir.path())?, test).await? else {
            return Ok(());
        };
        let open = dir.path().join("open");
        std::fs::create_dir(&open)?;
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root only\n")?;
        std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        let rw = std::fs::canonicalize(dir.path().join("rw"))?;
        std::fs::write(rw.join("input"), "from the host\n")?;
        let script = format!(
            "echo x > {open}/f && echo open-written; \
             echo x > /var/tmp/qexec-sandbox-test-$$ && echo var-tmp-written; \
             cat {secret} && echo secret-read; \
             cat {rw}/input; tr a-z A-Z < {rw}/input > {rw}/output && echo rw-written",
            open = open.display(),
            secret = secret.display(),
            rw = rw.display(),
        );
        let (_, out, err) = run_script(&m, &script).await?;
        assert_eq!(out, "from the host\nrw-written\n", "stderr: {err}");
        assert!(err.contains("Read-only file system"), "{err}");
        assert!(err.contains("Permission denied"), "{err}");
        assert!(!open.join("f").exists());
        assert_eq!(
            std::fs::read_to_string(rw.join("output"))?,
            "FROM THE HOST\n"
        );
        let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(rw.join("output"))?);
        assert!(owner >= qexec_job::DEFAULT_UID_BASE, "owner {owner}");
        Ok(())
    });
}

/// What [`sandboxed_job_sees_fresh_restricted_proc_sys_dev_and_tmp`] looks at that
/// reads only (safe to run on the host without the sandbox, as its control).
fn reading_probes(state: &Path) -> String {
    format!(
        r#"
        echo "cgroup-not-root=$(grep -vc ':/$' /proc/self/cgroup)"
        echo "sys-fs-cgroup=$(ls -A /sys/fs/cgroup | wc -l)"
        echo "cgroupfs-mounts=$(grep -c cgroup /proc/self/mounts)"
        echo "block-devices=$(find /dev -type b | wc -l)"
        echo "keys=$(wc -c < /proc/keys)"
        echo "state=$(ls -A {state} | wc -l)"
        kill -0 1 2>/dev/null && echo init-signalable
        true
        "#,
        state = state.display()
    )
}

/// QX-SBX-3, QX-SBX-5, QX-SBX-6, QX-SBX-7, QX-SBX-8, QX-SBX-10: the cgroup namespace
/// shows `/`, no cgroupfs, `umount` refused, no block device, `/proc/sys`, sysrq and
/// `/sys` read-only, masked proc files empty, qexecd's state directory masked, the
/// init out of the job's reach. The reading probes are also run without the sandbox
/// (control): there they must see the host.
#[test]
fn sandboxed_job_sees_fresh_restricted_proc_sys_dev_and_tmp() {
    run(|| async {
        let dir = tempdir()?;
        let test = "sandboxed_job_sees_fresh_restricted_proc_sys_dev_and_tmp";
        let c = sandbox_config(dir.path())?;
        let state_dir = c.state_dir.clone();
        let Some(m) = sandboxed(c, test).await? else {
            return Ok(());
        };
        let state = std::fs::canonicalize(state_dir)?;
        let script = format!(
            r#"
            {reading}
            touch /tmp/marker
            umount /tmp 2>/dev/null && echo umount-succeeded
            umount -l /tmp 2>/dev/null && echo lazy-umount-succeeded
            echo "tmp-marker=$(ls /tmp)"
            echo "dev=$(ls /dev | tr '\n' ' ')"
            echo 3 > /proc/sys/vm/drop_caches 2>/dev/null && echo drop-caches-written
            echo core > /proc/sys/kernel/core_pattern 2>/dev/null && echo core-pattern-written
            echo h > /proc/sysrq-trigger 2>/dev/null && echo sysrq-written
            echo 1 > /sys/kernel/mm/ksm/run 2>/dev/null && echo sys-written
            echo "proc-sys-mount=$(grep ' /proc/sys ' /proc/self/mounts | cut -d' ' -f4 | cut -d, -f1)"
            echo "port-start=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start)"
            "#,
            reading = reading_probes(&state),
        );
        let (code, out, err) = run_script(&m, &script).await?;
        assert_eq!(code, 0, "{out}{err}");
        let expected = [
            "cgroup-not-root=0",
            "sys-fs-cgroup=0",
            "cgroupfs-mounts=0",
            "block-devices=0",
            "keys=0",
            "state=0",
            "tmp-marker=marker",
            "dev=fd full null ptmx pts random shm stderr stdin stdout tty urandom zero ",
            "proc-sys-mount=ro",
            "port-start=0",
        ];
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, expected, "stderr: {err}");
        // The state directory is not empty on the host (the job's own output log).
        assert!(std::fs::read_dir(state.join("jobs"))?.next().is_some());
        drop(m);

        // Control: the same reading probes without the sandbox see the host.
        let dir = tempdir()?;
        let mut c = config(dir.path());
        c.sandbox.enabled = false;
        let state_dir = c.state_dir.clone();
        let m = JobManager::new(c).await?;
        let state = std::fs::canonicalize(state_dir)?;
        let (code, out, err) = run_script(&m, &reading_probes(&state)).await?;
        assert_eq!(code, 0, "{out}{err}");
        let value = |key: &str| -> u64 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        assert!(value("cgroup-not-root") > 0, "control: {out}");
        assert!(value("cgroupfs-mounts") > 0, "control: {out}");
        assert!(value("state") > 0, "control: {out}");
        assert!(out.contains("init-signalable"), "control: {out}");
        Ok(())
    });
}

/// QX-SBX-7: `/dev/shm` is private to the job and gone with it.
#[test]
fn sandboxed_dev_shm_is_private_and_gone_after_the_job() {
    run(|| async {
        let dir = tempdir()?;
        let test = "sandboxed_dev_shm_is_private_and_gone_after_the_job";
        let Some(m) = sandboxed(sandbox_config(dir.path())?, test).await? else {
            return Ok(());
        };
        let name = format!("qexec-sandbox-shm-{}", std::process::id());
        let (code, out, err) = run_script(
            &m,
            &format!("echo data > /dev/shm/{name}; ls -A /dev/shm; ls /dev/shm | wc -l"),
        )
        .await?;
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, format!("{name}\n1\n"));
        assert!(
            !Path::new("/dev/shm").join(&name).exists(),
            "shared with the host"
        );
        let (code, out, err) = run_script(&m, "ls -A /dev/shm | wc -l").await?;
        assert_eq!(code, 0, "{err}");
        assert_eq!(out, "0\n", "a later job sees the first one's /dev/shm");
        Ok(())
    });
}

/// Issue 13: ordinary work still succeeds in the sandbox.
#[test]
fn ordinary_work_succeeds_in_the_sandbox() {
    run(|| async {
        let dir = tempdir()?;
        let test = "ordinary_work_succeeds_in_the_sandbox";
        let Some(m) = sandboxed(sandbox_config(dir.path())?, test).await? else {
            return Ok(());
        };
        let script = r#"
            set -e
            echo "subshell=$( (echo a; (echo b | tr b c)) | tr '\n' ' ')"
            echo "pipe=$(seq 1 1000 | sort -rn | head -1)"
            for i in $(seq 1 100); do (exit 0) & done; wait; echo forked=100
            echo hello > /tmp/f; echo "tmp=$(cat /tmp/f)"
            echo "usr=$(ls /usr/bin | wc -l | awk '$1 > 10 {print "ok"}')"
            python3 -c 'import os, sys; print("python", os.getuid(), sys.version_info[0])'
        "#;
        let (code, out, err) = run_script(&m, script).await?;
        assert_eq!(code, 0, "{out}{err}");
        assert_eq!(
            out, "subshell=a c \npipe=1000\nforked=100\ntmp=hello\nusr=ok\npython 0 3\n",
            "stderr: {err}"
        );
        Ok(())
    });
}

/// QX-SBX-13: without the sandbox, a start that would run as host root is refused
/// unless the caller may (admin), the operator accepted it, or a job user is set.
#[test]
fn host_root_jobs_are_refused_without_the_sandbox_unless_allowed() {
    run(|| async {
        if !require_root("host_root_jobs_are_refused_without_the_sandbox_unless_allowed") {
            return Ok(());
        }
        let user_spec = || {
            let mut s = spec(&["/bin/true"]);
            s.host_root_allowed = false;
            s
        };
        let dir = tempdir()?;
        let mut c = config(dir.path());
        c.sandbox.enabled = false;
        let m = JobManager::new(c.clone()).await?;
        let e = m.start(user_spec()).await.unwrap_err();
        assert!(matches!(e, StartError::HostRootRefused { .. }), "{e}");
        assert!(e.to_string().contains("--insecure-root-jobs"), "{e}");
        // An admin's start runs.
        let job = m.start(spec(&["/bin/true"])).await?;
        assert_eq!(m.wait(job.id).await?.state, exited(0));
        drop(m);
        for (insecure, creds) in [(true, None), (false, Some((65534, 65534)))] {
            let dir = tempdir()?;
            let mut c = config(dir.path());
            c.sandbox.enabled = false;
            c.sandbox.insecure_root_jobs = insecure;
            c.job_credentials = creds;
            let m = JobManager::new(c).await?;
            let job = m.start(user_spec()).await?;
            assert_eq!(
                m.wait(job.id).await?.state,
                exited(0),
                "{insecure} {creds:?}"
            );
        }
        // With the sandbox a user's start runs (as root of its own user namespace).
        let dir = tempdir()?;
        let test = "host_root_jobs_are_refused_without_the_sandbox_unless_allowed";
        let Some(m) = sandboxed(config(dir.path()), test).await? else {
            return Ok(());
        };
        let job = m.start(user_spec()).await?;
        assert_eq!(m.wait(job.id).await?.state, exited(0));
        Ok(())
    });
}

/// `--job-network host`: the job shares the host's network namespace (and still is
/// sandboxed); by default it has its own.
#[test]
fn job_network_host_shares_the_hosts_network_namespace() {
    run(|| async {
        let host_net = std::fs::read_link("/proc/self/ns/net")?;
        for network in [qexec_job::JobNetwork::None, qexec_job::JobNetwork::Host] {
            let dir = tempdir()?;
            let mut c = config(dir.path());
            c.sandbox.network = network;
            let test = "job_network_host_shares_the_hosts_network_namespace";
            let Some(m) = sandboxed(c, test).await? else {
                return Ok(());
            };
            let (code, out, err) = run_script(&m, "readlink /proc/self/ns/net; id -u").await?;
            assert_eq!(code, 0, "{err}");
            let same = out.lines().next() == host_net.to_str();
            assert_eq!(
                same,
                network == qexec_job::JobNetwork::Host,
                "{network:?}: {out}"
            );
            assert!(out.ends_with("\n0\n"), "{out}");
        }
        Ok(())
    });
}

/// `--job-user` inside the sandbox: the ids apply inside the job's user namespace
/// (host uid = slot base + uid).
#[test]
fn job_user_applies_inside_the_sandbox() {
    run(|| async {
        let dir = tempdir()?;
        let mut c = sandbox_config(dir.path())?;
        c.job_credentials = Some((1000, 1000));
        let Some(m) = sandboxed(c, "job_user_applies_inside_the_sandbox").await? else {
            return Ok(());
        };
        let mut s = sh("id -u; id -g; grep CapEff /proc/self/status; echo ready; read x || true");
        s.stdin = true;
        let job = m.start(s).await?;
        let mut f = m.follow(job.id, 0)?;
        let out = wait_for_output(&mut f, "ready").await?;
        assert_eq!(out, "1000\n1000\nCapEff:\t0000000000000000\nready\n");
        let (uids, cap_eff) = host_ids(target_of(job.pid)?)?;
        assert_eq!(cap_eff, "0000000000000000");
        assert!(
            uids.iter().all(|u| *u >= qexec_job::DEFAULT_UID_BASE + 1000
                && (*u - qexec_job::DEFAULT_UID_BASE) % qexec_job::SLOT_IDS == 1000),
            "{uids:?}"
        );
        drop(job.stdin);
        let (_, end) = within("job end", collect(f)).await??;
        assert_eq!(end.state, exited(0));
        Ok(())
    });
}
