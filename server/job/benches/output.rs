//! Output throughput: a job writing 1 GiB to stdout with one follower reading all of
//! it through the job manager (pipe → output log file → follower), next to a plain
//! local pipe (the same writer → an in-process reader) measured in the same run (both
//! fed by `dd if=/dev/zero bs=128k`). Prints the median MB/s of several runs of each, their ratio, and the peak RSS
//! of this process (VmHWM, reset before the manager runs) while the manager worked.
//!
//! `cargo bench -p qexec-job --bench output`. `QEXEC_BENCH_BYTES` (default 1 GiB)
//! and `QEXEC_BENCH_RUNS` (default 5) override the sizes; `QEXEC_BENCH_DIR` the
//! directory of the state dir (default: the system temp dir).
//! Targets (README "Performance"): ≥ 60 % of the pipe's throughput, RSS < 64 MiB.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use qexec_job::{FollowEvent, JobManager, JobSpec, ManagerConfig};
use qexec_protocol::{JobState, Termination};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The writer, the same for the job and the plain pipe: `dd` writing 128 KiB blocks
/// of zeros (as `cat` would; `head -c` writes 8 KiB at a time and is the bottleneck).
fn producer(bytes: u64) -> Vec<String> {
    const BLOCK: u64 = 128 << 10;
    assert!(
        bytes.is_multiple_of(BLOCK),
        "QEXEC_BENCH_BYTES must be a multiple of 128 KiB"
    );
    vec![
        "dd".into(),
        "if=/dev/zero".into(),
        format!("bs={BLOCK}"),
        format!("count={}", bytes / BLOCK),
        "status=none".into(),
    ]
}

/// The baseline: the same producer into a plain pipe read by this process.
fn plain_pipe(bytes: u64) -> Result<Duration> {
    let start = Instant::now();
    let argv = producer(bytes);
    let mut child = Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn dd")?;
    let mut out = child.stdout.take().context("stdout")?;
    let mut buf = vec![0u8; 256 << 10];
    let mut total = 0u64;
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    let status = child.wait()?;
    let elapsed = start.elapsed();
    ensure!(status.success(), "dd failed: {status}");
    ensure!(total == bytes, "pipe delivered {total} of {bytes} bytes");
    Ok(elapsed)
}

/// The job manager: start, follow from 0 to the end.
async fn through_manager(m: &JobManager, bytes: u64) -> Result<Duration> {
    let start = Instant::now();
    let argv = producer(bytes)
        .into_iter()
        .map(String::into_bytes)
        .collect();
    let job = m
        .start(JobSpec {
            argv,
            env: Vec::new(),
            cwd: None,
            stdin: false,
            timeout: None,
            owner: "bench".into(),
            limits: Default::default(),
            host_root_allowed: true,
            terminal: None,
        })
        .await?;
    let mut f = m.follow(job.id, 0)?;
    let mut total = 0u64;
    loop {
        match f.next().await?.context("follower ended early")? {
            FollowEvent::Data { data, .. } => total += data.len() as u64,
            FollowEvent::End(status) => {
                let elapsed = start.elapsed();
                ensure!(
                    status.state
                        == JobState::Exited {
                            termination: Termination::Exited(0)
                        },
                    "job ended with {:?}",
                    status.state
                );
                ensure!(total == bytes, "follower got {total} of {bytes} bytes");
                return Ok(elapsed);
            }
        }
    }
}

/// CPU seconds (user + system) used so far by this process and by its reaped
/// descendants.
fn cpu_seconds() -> Result<(f64, f64)> {
    use nix::sys::resource::{UsageWho, getrusage};
    let secs = |u: nix::sys::resource::Usage| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    };
    Ok((
        secs(getrusage(UsageWho::RUSAGE_SELF)?),
        secs(getrusage(UsageWho::RUSAGE_CHILDREN)?),
    ))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / d.as_secs_f64() / 1e6
}

/// Peak resident set size of this process in KiB (VmHWM).
fn peak_rss_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .context("no VmHWM in /proc/self/status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmHWM value")?
        .parse()?)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0).
fn reset_peak_rss() -> Result<()> {
    std::fs::write("/proc/self/clear_refs", "5").context("reset VmHWM via /proc/self/clear_refs")
}

fn main() -> Result<()> {
    let bytes = env_u64("QEXEC_BENCH_BYTES", 1 << 30);
    let runs = env_u64("QEXEC_BENCH_RUNS", 5).max(1);
    let base = std::env::var_os("QEXEC_BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    println!(
        "output throughput: {bytes} bytes per run, {runs} runs each, state dir under {}",
        base.display()
    );
    let mut pipe = Vec::new();
    let mut manager = Vec::new();
    let mut peak_kib = 0;
    let (mut pipe_cpu, mut manager_cpu) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let (s0, c0) = cpu_seconds()?;
        let p = mbps(bytes, plain_pipe(bytes)?);
        let (s1, c1) = cpu_seconds()?;
        let dir = tempfile::tempdir_in(&base)?;
        reset_peak_rss()?;
        let q = rt.block_on(async {
            let m = JobManager::new(ManagerConfig::new(dir.path())).await?;
            let d = through_manager(&m, bytes).await?;
            anyhow::Ok(mbps(bytes, d))
        })?;
        peak_kib = peak_kib.max(peak_rss_kib()?);
        let (s2, c2) = cpu_seconds()?;
        println!(
            "run {run}: plain pipe {p:8.1} MB/s (reader {:.2} s CPU, writer {:.2} s)   \
             job manager + follower {q:8.1} MB/s (server {:.2} s CPU, job {:.2} s)",
            s1 - s0,
            c1 - c0,
            s2 - s1,
            c2 - c1
        );
        pipe.push(p);
        manager.push(q);
        pipe_cpu.push(s1 - s0);
        manager_cpu.push(s2 - s1);
        drop(dir);
    }
    println!(
        "median CPU of this process per run: plain pipe reader {:.2} s, job manager + follower {:.2} s",
        median(&mut pipe_cpu),
        median(&mut manager_cpu)
    );
    let (p, q) = (median(&mut pipe), median(&mut manager));
    let ratio = q / p;
    println!("median: plain pipe {p:.1} MB/s, job manager + follower {q:.1} MB/s");
    println!(
        "ratio: {:.1} % of the plain pipe (target >= 60 %)",
        ratio * 100.0
    );
    println!(
        "peak RSS while the manager ran: {:.1} MiB (target < 64 MiB)",
        peak_kib as f64 / 1024.0
    );
    if ratio < 0.6 || peak_kib >= 64 * 1024 {
        bail!("a target was missed (see above)");
    }
    Ok(())
}
