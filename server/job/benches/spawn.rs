//! Spawn throughput: spawn + reap `/bin/true`, sequentially and 2 in parallel, without
//! isolation, isolated (new PID/mount/net/UTS/IPC namespaces + init) and sandboxed
//! (isolated + user namespace, new root, cgroup namespace; the default as root). Prints the median
//! jobs/s over several runs and the isolated/plain ratio, all measured in this run.
//!
//! `cargo bench -p qexec-job --bench spawn` (as root for the isolated figures).
//! `QEXEC_BENCH_JOBS` (jobs per run, default 400) and `QEXEC_BENCH_RUNS` (default 7)
//! override the sizes; `QEXEC_BENCH_THREADS` (default `1,2`) the parallelism levels;
//! `QEXEC_BENCH_HEAP_MIB` gives the benchmark process a resident heap of that size, as a
//! long-running server has. Target (README "Performance"): isolated ≥ 300 jobs/s on a 2-core machine.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use qexec_job::testkit::{
    isolation_available, sandbox_available, spawn_and_wait, spawn_and_wait_sandboxed,
};
use qexec_protocol::Termination;

/// How the benchmarked jobs are started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No namespaces.
    Plain,
    /// New PID/mount/net/UTS/IPC namespaces + init.
    Isolated,
    /// Isolated + the job sandbox (user namespace, new root, cgroup namespace).
    Sandboxed,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time (user + system) of this process and of its reaped descendants, in seconds.
/// Kernel work done in kernel threads (e.g. network-namespace clean-up in a kworker) is
/// not included.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    let secs = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    [UsageWho::RUSAGE_SELF, UsageWho::RUSAGE_CHILDREN]
        .into_iter()
        .filter_map(|who| getrusage(who).ok())
        .map(|u| secs(u.user_time()) + secs(u.system_time()))
        .sum()
}

/// One measured run.
struct Sample {
    jobs_per_sec: f64,
    cpu_ms_per_job: f64,
}

/// Spawns and reaps `jobs` `/bin/true` processes spread over `threads` threads.
fn run_once(jobs: usize, threads: usize, mode: Mode) -> Result<Sample> {
    let argv = vec![b"/bin/true".to_vec()];
    let env = vec![(b"PATH".to_vec(), b"/usr/bin:/bin".to_vec())];
    let per_thread = jobs / threads;
    let cpu_start = cpu_seconds();
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    for _ in 0..per_thread {
                        let t = match mode {
                            Mode::Sandboxed => spawn_and_wait_sandboxed(&argv, &env),
                            _ => spawn_and_wait(&argv, &env, mode == Mode::Isolated),
                        }
                        .map_err(anyhow::Error::msg)
                        .context("spawn /bin/true")?;
                        if t != Termination::Exited(0) {
                            bail!("/bin/true ended with {t:?}");
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("bench thread panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = start.elapsed().as_secs_f64();
    let done = (per_thread * threads) as f64;
    Ok(Sample {
        jobs_per_sec: done / elapsed,
        cpu_ms_per_job: (cpu_seconds() - cpu_start) * 1e3 / done,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Medians of jobs/s and CPU ms/job over `runs` runs (after one warm-up run).
fn measure(jobs: usize, runs: usize, threads: usize, mode: Mode) -> Result<(f64, f64)> {
    run_once(jobs / 4, threads, mode)?;
    let mut rates = Vec::with_capacity(runs);
    let mut cpu = Vec::with_capacity(runs);
    for _ in 0..runs {
        let s = run_once(jobs, threads, mode)?;
        rates.push(s.jobs_per_sec);
        cpu.push(s.cpu_ms_per_job);
    }
    Ok((median(rates), median(cpu)))
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let jobs = env_usize("QEXEC_BENCH_JOBS", 400);
    let runs = env_usize("QEXEC_BENCH_RUNS", 7);
    println!("spawn benchmark: /bin/true, {jobs} jobs per run, median of {runs} runs");
    // A server's resident heap makes copy-based process creation slower (page tables
    // are copied); plain spawns share memory (vfork-style) and should not care.
    let heap_mib = env_usize("QEXEC_BENCH_HEAP_MIB", 0);
    let heap = vec![1u8; heap_mib << 20];
    if heap_mib > 0 {
        println!("simulated server heap: {heap_mib} MiB resident");
    }
    let isolation = isolation_available();
    if let Err(reason) = &isolation {
        println!("isolated spawns unavailable, measuring plain ones only: {reason}");
    }
    let sandbox = isolation.clone().and_then(|()| sandbox_available());
    if let (Ok(()), Err(reason)) = (&isolation, &sandbox) {
        println!("sandboxed spawns unavailable: {reason}");
    }
    let threads_list: Vec<usize> = std::env::var("QEXEC_BENCH_THREADS")
        .ok()
        .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2]);
    println!(
        "{:<8} {:>13} {:>13} {:>13} {:>9} {:>11} {:>11} {:>11}",
        "threads",
        "plain jobs/s",
        "isol. jobs/s",
        "sbx. jobs/s",
        "sbx/plain",
        "plain cpu",
        "isol. cpu",
        "sbx. cpu"
    );
    for threads in threads_list {
        let (plain, plain_cpu) = measure(jobs, runs, threads, Mode::Plain)?;
        let mut cells = Vec::new();
        for (mode, ok) in [
            (Mode::Isolated, isolation.is_ok()),
            (Mode::Sandboxed, sandbox.is_ok()),
        ] {
            cells.push(if ok {
                Some(measure(jobs, runs, threads, mode)?)
            } else {
                None
            });
        }
        let rate = |c: &Option<(f64, f64)>| c.map_or("-".to_owned(), |(r, _)| format!("{r:.0}"));
        let cpu = |c: &Option<(f64, f64)>| c.map_or("-".to_owned(), |(_, c)| format!("{c:.2}ms"));
        let ratio = cells[1].map_or("-".to_owned(), |(r, _)| format!("{:.2}", r / plain));
        println!(
            "{:<8} {:>13.0} {:>13} {:>13} {:>9} {:>11} {:>11} {:>11}",
            threads,
            plain,
            rate(&cells[0]),
            rate(&cells[1]),
            ratio,
            format!("{plain_cpu:.2}ms"),
            cpu(&cells[0]),
            cpu(&cells[1]),
        );
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "cpu = user+sys per job of this process and its reaped descendants (kernel threads \
         excluded); load average: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("target: isolated (sandboxed) >= 300 jobs/s");
    std::hint::black_box(&heap);
    Ok(())
}
