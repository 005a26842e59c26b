//! Spawn throughput: spawn + reap `/bin/true`, sequentially and 2 in parallel, with and
//! without isolation (new PID/mount/net/UTS/IPC namespaces + init). Prints the median
//! jobs/s over several runs and the isolated/plain ratio, all measured in this run.
//!
//! `cargo bench -p qexec-server --bench spawn` (as root for the isolated figures).
//! `QEXEC_BENCH_JOBS` (jobs per run, default 400) and `QEXEC_BENCH_RUNS` (default 7)
//! override the sizes. Target (issue 5): isolated ≥ 300 jobs/s on a 2-core machine.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use qexec_protocol::Termination;
use qexec_server::__spawn_bench_hooks::{isolation_available, spawn_and_wait};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Spawns and reaps `jobs` `/bin/true` processes on each of `threads` threads; returns
/// jobs per second.
fn run_once(jobs: usize, threads: usize, isolated: bool) -> Result<f64> {
    let argv = vec![b"/bin/true".to_vec()];
    let env = vec![(b"PATH".to_vec(), b"/usr/bin:/bin".to_vec())];
    let per_thread = jobs / threads;
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    for _ in 0..per_thread {
                        let t = spawn_and_wait(&argv, &env, isolated)
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
    Ok((per_thread * threads) as f64 / start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median jobs/s over `runs` runs (after one warm-up run).
fn measure(jobs: usize, runs: usize, threads: usize, isolated: bool) -> Result<f64> {
    run_once(jobs / 4, threads, isolated)?;
    let mut rates = Vec::with_capacity(runs);
    for _ in 0..runs {
        rates.push(run_once(jobs, threads, isolated)?);
    }
    Ok(median(rates))
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let jobs = env_usize("QEXEC_BENCH_JOBS", 400);
    let runs = env_usize("QEXEC_BENCH_RUNS", 7);
    println!("spawn benchmark: /bin/true, {jobs} jobs per run, median of {runs} runs");
    let isolation = isolation_available();
    if let Err(reason) = &isolation {
        println!("isolated spawns unavailable, measuring plain ones only: {reason}");
    }
    println!(
        "{:<12} {:>16} {:>16} {:>10}",
        "threads", "plain jobs/s", "isolated jobs/s", "iso/plain"
    );
    for threads in [1, 2] {
        let plain = measure(jobs, runs, threads, false)?;
        if isolation.is_ok() {
            let iso = measure(jobs, runs, threads, true)?;
            println!(
                "{:<12} {:>16.0} {:>16.0} {:>10.2}",
                threads,
                plain,
                iso,
                iso / plain
            );
        } else {
            println!("{:<12} {:>16.0} {:>16} {:>10}", threads, plain, "-", "-");
        }
    }
    println!("target: isolated >= 300 jobs/s");
    Ok(())
}
