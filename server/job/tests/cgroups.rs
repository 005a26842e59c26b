//! Jobs with cgroups, through the job manager, for real (root): memory and pids limits
//! enforced by the kernel, usage reported, stale cgroups cleaned at start-up, nothing
//! left behind. Each test uses its own cgroup subtree, so tests running in parallel
//! (and other suites, and a running qexecd) never clash.
//!
//! Without root these tests print why and skip — except under `CI=true`, where they
//! fail.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use qexec_job::cgroup::{Cgroups, Controller};
use qexec_job::testkit::{require_root, skip_unless};
use qexec_job::{JobManager, JobSpec, ManagerConfig, StartError};
use qexec_protocol::{JobState, JobStatus, Limits, StopReason, Termination};

/// Generous bound for anything that should take well under a second.
const LONG: Duration = Duration::from_secs(60);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs a root test body on its own runtime.
fn run<F: Future<Output = Result<()>>>(test: &str, body: impl FnOnce() -> F) {
    if !require_root(test) {
        return;
    }
    let rt = runtime();
    let r = rt.block_on(body());
    drop(rt);
    r.unwrap();
}

/// A cgroup subtree for one test alone.
fn unique_subtree(test: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "qexec-test-cg-{test}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn tempdir() -> std::io::Result<tempfile::TempDir> {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
}

fn config(dir: &Path, subtree: &str) -> ManagerConfig {
    let mut c = ManagerConfig::new(dir.join("state"));
    c.default_grace = Duration::from_secs(5);
    c.cgroup_subtree = subtree.to_owned();
    c
}

/// A manager whose cgroups must work (the tests run as root).
async fn manager(dir: &Path, subtree: &str) -> Result<(JobManager, Vec<PathBuf>)> {
    let m = JobManager::new(config(dir, subtree)).await?;
    let caps = m.capabilities().cgroups;
    ensure!(
        caps.unavailable.is_none(),
        "cgroups are unavailable as root: {caps}"
    );
    ensure!(!caps.subtree.is_empty(), "no subtree directory: {caps}");
    Ok((m, caps.subtree))
}

/// Drops the manager after its jobs ended and checks that the test's subtree is gone
/// from every hierarchy.
async fn finish(m: JobManager, subtree_dirs: Vec<PathBuf>) -> Result<()> {
    within("shutdown", m.shutdown()).await?;
    drop(m);
    for dir in &subtree_dirs {
        ensure!(!dir.exists(), "cgroup {} was left behind", dir.display());
    }
    Ok(())
}

fn sh(script: &str, limits: Limits) -> JobSpec {
    JobSpec {
        argv: ["/bin/sh", "-c", script]
            .iter()
            .map(|a| a.as_bytes().to_vec())
            .collect(),
        env: Vec::new(),
        cwd: None,
        stdin: false,
        timeout: None,
        owner: "tester".into(),
        limits,
        host_root_allowed: true,
        terminal: None,
    }
}

async fn within<T>(what: &str, f: impl Future<Output = T>) -> Result<T> {
    tokio::time::timeout(LONG, f)
        .await
        .with_context(|| format!("{what} did not happen within {LONG:?}"))
}

/// Waits until `cond` holds. The kernel offers no event for a cgroup's counters, so
/// this reads them again after a short pause, up to a deadline.
async fn wait_until(what: &str, mut cond: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + LONG;
    while !cond()? {
        if tokio::time::Instant::now() >= deadline {
            bail!("{what} did not happen within {LONG:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

fn pid_alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; count it as gone (it runs nothing).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The job's directory in the pids hierarchy (v1) or the unified one (v2).
fn pids_dir(subtree_dirs: &[PathBuf], status: &JobStatus) -> Result<PathBuf> {
    let id = status.id.to_string();
    subtree_dirs
        .iter()
        .map(|d| d.join(&id))
        .find(|d| d.join("pids.current").exists())
        .context("the job has no pids cgroup")
}

fn read_u64(path: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    Ok(text.trim().parse()?)
}

#[test]
fn memory_limit_oom_kills_and_status_says_so() {
    // spec: QX-MSG-TYPE-8 (oom_killed)
    run("memory_limit_oom_kills_and_status_says_so", || async {
        let dir = tempdir()?;
        let subtree = unique_subtree("oom");
        let (m, dirs) = manager(dir.path(), &subtree).await?;
        let limits = Limits {
            memory_bytes: Some(64 << 20),
            ..Limits::default()
        };
        // dd fills a 256 MiB buffer from /dev/zero: 4 times the limit.
        let job = m
            .start(sh(
                "exec dd if=/dev/zero of=/dev/null bs=256M count=1",
                limits.clone(),
            ))
            .await?;
        let status = within("the job's end", m.wait(job.id)).await??;
        assert!(status.oom_killed, "OOM flag not set: {status:?}");
        assert_eq!(
            status.state,
            JobState::Exited {
                termination: Termination::Signaled(libc::SIGKILL)
            },
            "the state does not show the kill"
        );
        assert_eq!(status.limits.memory_bytes, limits.memory_bytes);
        let peak = status.usage.memory_peak_bytes.context("no memory peak")?;
        assert!(peak <= 64 << 20, "memory peak {peak} above the limit");
        finish(m, dirs).await
    });
}

#[test]
fn an_oom_kill_of_a_child_ends_the_whole_job() {
    // v2: memory.oom.group; v1 (no such file): the manager sees the OOM flag and kills
    // the rest of the job itself.
    run("an_oom_kill_of_a_child_ends_the_whole_job", || async {
        let dir = tempdir()?;
        let subtree = unique_subtree("oomgroup");
        let (m, dirs) = manager(dir.path(), &subtree).await?;
        let limits = Limits {
            memory_bytes: Some(64 << 20),
            ..Limits::default()
        };
        // The shell survives its dd child's OOM kill and would sleep on.
        let job = m
            .start(sh(
                "dd if=/dev/zero of=/dev/null bs=256M count=1; exec sleep 1000",
                limits,
            ))
            .await?;
        let status = within("the job's end after the OOM kill", m.wait(job.id)).await??;
        assert!(status.oom_killed, "OOM flag not set: {status:?}");
        assert_eq!(
            status.state,
            JobState::Exited {
                termination: Termination::Signaled(libc::SIGKILL)
            },
            "the state does not show the kill"
        );
        finish(m, dirs).await
    });
}

#[test]
fn pids_limit_contains_a_fork_bomb_and_stop_cleans_it() {
    run(
        "pids_limit_contains_a_fork_bomb_and_stop_cleans_it",
        || async {
            let dir = tempdir()?;
            let subtree = unique_subtree("pids");
            let (m, dirs) = manager(dir.path(), &subtree).await?;
            let limits = Limits {
                pids: Some(32),
                ..Limits::default()
            };
            // Every process forks forever; a failed fork just loops again.
            let job = m
                .start(sh("exec perl -e 'while (1) { fork }'", limits))
                .await?;
            let status = m.status(job.id)?;
            let cg = pids_dir(&dirs, &status)?;
            wait_until("the bomb reaching its limit", || {
                Ok(read_u64(&cg.join("pids.current"))? >= 32)
            })
            .await?;
            let procs = std::fs::read_to_string(cg.join("cgroup.procs"))?;
            let pids: Vec<u32> = procs.lines().map(str::parse).collect::<Result<_, _>>()?;
            ensure!(pids.len() <= 32, "{} processes above the limit", pids.len());
            assert!(read_u64(&cg.join("pids.current"))? <= 32);
            let by = StopReason::Requested { by: "t".into() };
            let status =
                within("stop", m.stop(job.id, Some(Duration::from_millis(200)), by)).await??;
            assert!(
                matches!(status.state, JobState::Stopped { .. }),
                "{status:?}"
            );
            for pid in pids {
                assert!(
                    !pid_alive(pid),
                    "process {pid} of the bomb survived the stop"
                );
            }
            assert!(!cg.exists(), "the job's cgroup {} remains", cg.display());
            finish(m, dirs).await
        },
    );
}

#[test]
fn cpu_usage_is_reported_for_a_busy_job() {
    run("cpu_usage_is_reported_for_a_busy_job", || async {
        let dir = tempdir()?;
        let subtree = unique_subtree("cpu");
        let (m, dirs) = manager(dir.path(), &subtree).await?;
        let job = m
            .start(sh(
                "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done",
                Limits::default(),
            ))
            .await?;
        let status = within("the job's end", m.wait(job.id)).await??;
        assert_eq!(
            status.state,
            JobState::Exited {
                termination: Termination::Exited(0)
            }
        );
        let cpu = status.usage.cpu_usec.context("no CPU usage reported")?;
        assert!(cpu > 0, "CPU usage {cpu}");
        assert!(!status.oom_killed);
        finish(m, dirs).await
    });
}

#[test]
fn live_status_reports_usage_while_running() {
    run("live_status_reports_usage_while_running", || async {
        let dir = tempdir()?;
        let subtree = unique_subtree("live");
        let (m, dirs) = manager(dir.path(), &subtree).await?;
        let job = m
            .start(sh("while :; do :; done", Limits::default()))
            .await?;
        wait_until("CPU usage in a running job's status", || {
            let s = m.status(job.id)?;
            ensure!(s.state.is_running(), "the busy loop ended: {s:?}");
            Ok(s.usage.cpu_usec.unwrap_or(0) > 0)
        })
        .await?;
        let by = StopReason::Requested { by: "t".into() };
        within("stop", m.stop(job.id, Some(Duration::from_millis(200)), by)).await??;
        finish(m, dirs).await
    });
}

#[test]
fn a_limit_above_the_server_maximum_is_refused() {
    run("a_limit_above_the_server_maximum_is_refused", || async {
        let dir = tempdir()?;
        let subtree = unique_subtree("max");
        let mut c = config(dir.path(), &subtree);
        c.max_limits.memory_bytes = Some(128 << 20);
        let m = JobManager::new(c).await?;
        let dirs = m.capabilities().cgroups.subtree;
        let limits = Limits {
            memory_bytes: Some(256 << 20),
            ..Limits::default()
        };
        match m.start(sh("true", limits)).await {
            Err(StartError::InvalidLimits {
                field,
                requested,
                max,
            }) => {
                assert_eq!(field, "memory_bytes");
                assert_eq!(requested, 256 << 20);
                assert_eq!(max, 128 << 20);
            }
            other => bail!("expected InvalidLimits, got {other:?}"),
        }
        // Without a request the maximum applies as the job's limit.
        let job = m.start(sh("true", Limits::default())).await?;
        let status = within("the job's end", m.wait(job.id)).await??;
        assert_eq!(status.limits.memory_bytes, Some(128 << 20));
        finish(m, dirs).await
    });
}

#[test]
fn limits_without_cgroups_are_refused_with_the_reason() {
    // No root needed: cgroups are turned off by configuration.
    let rt = runtime();
    rt.block_on(async {
        let dir = tempdir()?;
        let mut c = config(dir.path(), "unused");
        c.cgroups = false;
        let m = JobManager::new(c).await?;
        let caps = m.capabilities().cgroups;
        ensure!(caps.unavailable.is_some(), "{caps}");
        let limits = Limits {
            pids: Some(10),
            ..Limits::default()
        };
        match m.start(sh("true", limits)).await {
            Err(e @ StartError::LimitUnavailable { field: "pids", .. }) => {
                assert!(e.to_string().contains("need cgroups"), "{e}");
            }
            other => bail!("expected LimitUnavailable, got {other:?}"),
        }
        // A job without limits still runs.
        let job = m.start(sh("exit 3", Limits::default())).await?;
        let status = within("the job's end", m.wait(job.id)).await??;
        assert_eq!(
            status.state,
            JobState::Exited {
                termination: Termination::Exited(3)
            }
        );
        Ok::<_, anyhow::Error>(())
    })
    .unwrap();
}

#[test]
fn stale_cgroups_are_emptied_and_removed_at_start() {
    // spec: stale job cgroups of a crashed server are cleaned at start-up.
    run("stale_cgroups_are_emptied_and_removed_at_start", || async {
        let dir = tempdir()?;
        let subtree = unique_subtree("stale");
        // A "crashed server": a job cgroup with a process in it, and no manager.
        let planted = Cgroups::detect_with_subtree(&subtree);
        ensure!(planted.is_available(), "{}", planted.capabilities());
        let mut stale = planted.create("stale-job", &Limits::default(), &[])?;
        stale.release_procs_fds();
        let paths = stale.paths();
        let mut child = std::process::Command::new("sleep").arg("1000").spawn()?;
        let pid = child.id();
        stale.attach(pid)?;
        assert_eq!(stale.pids()?, vec![pid]);
        // Crash: the handle goes without killing or removing anything.
        std::mem::forget(stale);
        drop(planted);

        let started = manager(dir.path(), &subtree).await;
        let waited = within(
            "the stale process' death",
            tokio::task::spawn_blocking(move || child.wait()),
        )
        .await;
        let exit = match waited {
            Ok(exit) => exit??,
            Err(e) => {
                // Do not leave it behind.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                return Err(e);
            }
        };
        let (m, dirs) = started?;
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit.signal(), Some(libc::SIGKILL), "{exit:?}");
        for p in &paths {
            assert!(!p.exists(), "stale cgroup {} remains", p.display());
        }
        assert!(m.capabilities().cgroups.usable(Controller::Pids));
        finish(m, dirs).await
    });
}

#[test]
fn a_second_manager_on_the_same_subtree_leaves_the_first_ones_jobs_alone() {
    run(
        "a_second_manager_on_the_same_subtree_leaves_the_first_ones_jobs_alone",
        || async {
            let dir = tempdir()?;
            let dir2 = tempdir()?;
            let subtree = unique_subtree("shared");
            let (m1, dirs) = manager(dir.path(), &subtree).await?;
            let job = m1.start(sh("exec sleep 1000", Limits::default())).await?;
            let (m2, _) = manager(dir2.path(), &subtree).await?;
            // m2 did not take m1's job cgroup for a stale one.
            assert!(m1.status(job.id)?.state.is_running());
            let cg = dirs[0].join(job.id.to_string());
            assert!(cg.exists(), "m2 removed the cgroup of m1's job");
            within("m2 shutdown", m2.shutdown()).await?;
            drop(m2);
            assert!(dirs[0].exists(), "m2 removed the subtree m1 still uses");
            assert!(m1.status(job.id)?.state.is_running());
            // m1 still works in it.
            let other = m1.start(sh("exit 0", Limits::default())).await?;
            within("a job of m1", m1.wait(other.id)).await??;
            finish(m1, dirs).await
        },
    );
}

#[test]
fn a_daemonised_grandchild_does_not_outlive_its_job() {
    // Without isolation (no PID namespace to end): only the cgroup reaches it.
    run(
        "a_daemonised_grandchild_does_not_outlive_its_job",
        || async {
            let dir = tempdir()?;
            let subtree = unique_subtree("daemon");
            let mut c = config(dir.path(), &subtree);
            c.isolation = false;
            let m = JobManager::new(c).await?;
            let dirs = m.capabilities().cgroups.subtree;
            ensure!(!dirs.is_empty(), "cgroups are unavailable as root");
            // The grandchild leaves the session and lets go of the output pipes, so
            // neither the process group nor the pipes tie it to the job.
            let spec = sh(
                "setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!",
                Limits::default(),
            );
            let job = m.start(spec).await?;
            let mut f = m.follow(job.id, 0)?;
            let mut out = Vec::new();
            let status = loop {
                match within("the job's output", f.next()).await?? {
                    Some(qexec_job::FollowEvent::Data { data, .. }) => out.extend_from_slice(&data),
                    Some(qexec_job::FollowEvent::End(status)) => break status,
                    None => bail!("the follower ended without a status"),
                }
            };
            let pid: u32 = String::from_utf8(out)?.trim().parse()?;
            assert_eq!(
                status.state,
                JobState::Exited {
                    termination: Termination::Exited(0)
                }
            );
            let alive = pid_alive(pid);
            if alive {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            assert!(!alive, "daemonised grandchild {pid} outlived its job");
            finish(m, dirs).await
        },
    );
}

#[test]
fn io_limits_apply_to_the_disk_behind_the_working_directory() {
    run(
        "io_limits_apply_to_the_disk_behind_the_working_directory",
        || async {
            let dir = tempdir()?;
            let subtree = unique_subtree("io");
            // The job writes in its working directory: opened read-write for
            // sandboxed jobs (spec: QX-SBX-9); the rest of the host is read-only.
            let work = dir.path().join("work");
            std::fs::create_dir(&work)?;
            std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
            let mut c = config(dir.path(), &subtree);
            c.sandbox.rw_paths = vec![std::fs::canonicalize(&work)?];
            let m = JobManager::new(c).await?;
            let dirs = m.capabilities().cgroups.subtree;
            let disk = match qexec_job::cgroup::block_device_of(dir.path()) {
                Ok(d) => d,
                Err(e) => {
                    skip_unless(
                        "io_limits_apply_to_the_disk_behind_the_working_directory",
                        Err(format!("no disk behind the test directory: {e}")),
                    );
                    return finish(m, dirs).await;
                }
            };
            let limits = Limits {
                io_write_bps: Some(5_000_000),
                ..Limits::default()
            };
            // Direct writes (v1 throttles only those): 10 MiB at 5 MB/s, about 2 s.
            let mut spec = sh(
                "dd if=/dev/zero of=./out bs=1M count=10 oflag=direct 2>/dev/null; rm -f ./out",
                limits,
            );
            spec.cwd = Some(work.clone());
            let job = m.start(spec).await?;
            let id = job.id.to_string();
            let (file, expected) = match dirs[0].join(&id).join("io.max").exists() {
                true => ("io.max", format!("{disk} rbps=max wbps=5000000")),
                false => ("blkio.throttle.write_bps_device", format!("{disk} 5000000")),
            };
            let cg = dirs
                .iter()
                .map(|d| d.join(&id))
                .find(|d| d.join(file).exists())
                .context("the job has no io cgroup")?;
            let set = std::fs::read_to_string(cg.join(file))?;
            assert!(
                set.lines().any(|l| l.starts_with(&expected)),
                "{file} is {set:?}, expected {expected:?}"
            );
            let status = within("the job's end", m.wait(job.id)).await??;
            assert_eq!(
                status.state,
                JobState::Exited {
                    termination: Termination::Exited(0)
                }
            );
            assert_eq!(status.limits.io_write_bps, Some(5_000_000));
            let written = status.usage.io_write_bytes.context("no IO usage")?;
            assert!(written >= 10 << 20, "{written} bytes written reported");
            finish(m, dirs).await
        },
    );
}

/// A job running `argv` directly, with a 64 MiB memory limit and a 3 s timeout: the
/// combination of the CLI report `qexec run --memory 64M --timeout 3s -- tail -c 100M
/// /dev/zero`.
fn limited_with_timeout(argv: &[&str]) -> JobSpec {
    JobSpec {
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: Vec::new(),
        cwd: None,
        stdin: false,
        timeout: Some(Duration::from_secs(3)),
        owner: "tester".into(),
        limits: Limits {
            memory_bytes: Some(64 << 20),
            ..Limits::default()
        },
        host_root_allowed: true,
        terminal: None,
    }
}

/// Runs `argv` under [`limited_with_timeout`] on a manager with or without namespace
/// isolation and returns its final status.
async fn run_limited(test: &str, isolation: bool, argv: &[&str]) -> Result<JobStatus> {
    let dir = tempdir()?;
    let subtree = unique_subtree(test);
    let mut c = config(dir.path(), &subtree);
    c.isolation = isolation;
    let m = JobManager::new(c).await?;
    let caps = m.capabilities().cgroups;
    ensure!(
        caps.unavailable.is_none(),
        "cgroups are unavailable as root: {caps}"
    );
    ensure!(
        m.capabilities().isolation == isolation,
        "isolation {isolation} asked, got {:?}",
        m.capabilities().isolation_unavailable
    );
    let dirs = caps.subtree;
    let job = m.start(limited_with_timeout(argv)).await?;
    // Bounded: a job that hangs fails here instead of hanging the suite.
    let status = within("the end of the memory-limited job", m.wait(job.id)).await??;
    finish(m, dirs).await?;
    Ok(status)
}

#[test]
fn tail_of_dev_zero_streams_under_a_memory_limit_and_exits_0() {
    // GNU tail lseeks /dev/zero to 100 MiB before its end (lseek on /dev/zero always
    // succeeds) and copies with a small buffer: ~2 MiB resident, never near the limit.
    // Exit 0 with 100 MiB of output is the right answer, not a missed kill.
    run(
        "tail_of_dev_zero_streams_under_a_memory_limit_and_exits_0",
        || async {
            for isolation in [true, false] {
                let status =
                    run_limited("tailseek", isolation, &["tail", "-c", "100M", "/dev/zero"])
                        .await?;
                let ctx = format!("isolation {isolation}: {status:?}");
                assert_eq!(
                    status.state,
                    JobState::Exited {
                        termination: Termination::Exited(0)
                    },
                    "{ctx}"
                );
                assert_eq!(status.stdout_bytes, 100 << 20, "{ctx}");
                assert!(!status.oom_killed, "{ctx}");
                let peak = status.usage.memory_peak_bytes.context("no memory peak")?;
                assert!(peak < 64 << 20, "peak {peak} reached the limit: {ctx}");
            }
            Ok(())
        },
    );
}

#[test]
fn a_memory_hog_with_a_timeout_ends_oom_killed() {
    // spec: QX-MSG-TYPE-8 (oom_killed)
    // `tail /dev/zero` keeps everything it reads (no newline ever comes): it hits the
    // limit and the kernel kills it, well before the 3 s timeout. The job must end,
    // killed by signal 9 with the OOM flag set, isolated (init as pid 1) or not.
    run("a_memory_hog_with_a_timeout_ends_oom_killed", || async {
        for isolation in [true, false] {
            let status = run_limited("tailhog", isolation, &["tail", "/dev/zero"]).await?;
            let ctx = format!("isolation {isolation}: {status:?}");
            assert!(status.oom_killed, "OOM flag not set: {ctx}");
            assert_eq!(
                status.state,
                JobState::Exited {
                    termination: Termination::Signaled(libc::SIGKILL)
                },
                "{ctx}"
            );
        }
        Ok(())
    });
}

#[test]
fn a_memory_hog_behind_a_pipe_never_reports_exit_0() {
    // From a pipe tail cannot seek: it buffers 100 MiB and is OOM-killed. The shell
    // survives and reports 128 + 9; the status must carry the OOM flag, and the job
    // must end (the v1 OOM check kills the rest of it).
    run(
        "a_memory_hog_behind_a_pipe_never_reports_exit_0",
        || async {
            for isolation in [true, false] {
                let status = run_limited(
                    "tailpipe",
                    isolation,
                    &["/bin/sh", "-c", "cat /dev/zero | tail -c 100M"],
                )
                .await?;
                let ctx = format!("isolation {isolation}: {status:?}");
                assert!(status.oom_killed, "OOM flag not set: {ctx}");
                assert_eq!(status.stdout_bytes, 0, "{ctx}");
                match status.state {
                    JobState::Exited {
                        termination: Termination::Exited(code),
                    } => assert_ne!(code, 0, "{ctx}"),
                    JobState::Exited {
                        termination: Termination::Signaled(_),
                    } => {}
                    _ => panic!("the job did not end by itself or the OOM kill: {ctx}"),
                }
            }
            Ok(())
        },
    );
}

#[test]
fn a_busy_job_near_its_memory_limit_that_ignores_sigterm_is_killed_at_its_timeout() {
    // The other way a memory-limited job with a timeout must end: it stays under the
    // limit (tail keeps the last 32 MiB of an endless pipe, copying all the time),
    // ignores SIGTERM, and is SIGKILLed (freeze + kill on v1) after the grace.
    run(
        "a_busy_job_near_its_memory_limit_that_ignores_sigterm_is_killed_at_its_timeout",
        || async {
            for isolation in [true, false] {
                let status = run_limited(
                    "tailtimeout",
                    isolation,
                    &["/bin/sh", "-c", "trap '' TERM; cat /dev/zero | tail -c 32M"],
                )
                .await?;
                let ctx = format!("isolation {isolation}: {status:?}");
                assert!(!status.oom_killed, "{ctx}");
                assert_eq!(
                    status.state,
                    JobState::Stopped {
                        reason: StopReason::Timeout,
                        termination: Termination::Signaled(libc::SIGKILL)
                    },
                    "{ctx}"
                );
                let peak = status.usage.memory_peak_bytes.context("no memory peak")?;
                assert!(peak >= 32 << 20, "tail did not hold 32 MiB: {ctx}");
            }
            Ok(())
        },
    );
}
