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
        Err(StartError::Spawn { failure, message }) => Ok((failure, message)),
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
        assert!(m.list().is_empty(), "failed starts leave no job behind");
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
        assert!(
            std::fs::read_dir(dir.path().join("state/jobs"))?
                .next()
                .is_none(),
            "job directories removed with the manager"
        );
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
