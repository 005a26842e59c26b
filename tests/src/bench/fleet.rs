//! Section 9: a fleet through the worker pool (issue 20). N `/bin/true` jobs (10,000 in
//! a full run) submitted to `qexec_client::pool` over 4 local plain qexecd, and the
//! same over 1 of them: jobs/s from the first submission to the last result, every
//! result checked (exit 0, each ticket once). The pool places at most
//! [`PER_WORKER`] jobs on a worker, so the 4-worker figure has 4× the jobs in flight.
//! All workers share this machine's cores: the ratio says what the pool adds or
//! costs here, not what 4 hosts would give.

use std::time::Instant;

use anyhow::{bail, ensure};
use qexec_client::pool::{Outcome, Pool, PoolOptions, Submission, Worker};

use super::procs::Qexecd;
use super::report::Report;
use super::{Ctx, expect_success, request};

const SECTION: &str = "9 fleet (pool)";

/// Workers of the fleet figure.
const WORKERS: usize = 4;

/// Most of the pool's jobs on one worker ([`PoolOptions::max_per_worker`]).
const PER_WORKER: u32 = 8;

/// Runs `jobs` `/bin/true` through a pool over `workers`; returns jobs/s.
async fn one_run(workers: Vec<Worker>, jobs: usize) -> anyhow::Result<f64> {
    let options = PoolOptions {
        queue: 256,
        max_per_worker: Some(PER_WORKER),
        ..PoolOptions::default()
    };
    let n = workers.len();
    let (pool, mut results) = Pool::connect(workers, options).await?;
    ensure!(
        pool.workers().iter().all(|w| w.live),
        "a worker is not live: {:?}",
        pool.workers()
    );
    let t0 = Instant::now();
    let producer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for _ in 0..jobs {
                let s = Submission {
                    request: request(&["/bin/true"]),
                    stdin: None,
                    keep_output: 0,
                };
                pool.submit(s).await?;
            }
            pool.close();
            anyhow::Ok(())
        })
    };
    let mut seen = vec![false; jobs];
    let mut count = 0;
    while let Some(r) = results.next().await {
        let Outcome::Ended(status) = &r.outcome else {
            bail!("ticket {} on {:?}: {:?}", r.ticket, r.worker, r.outcome);
        };
        expect_success(status)?;
        let slot = seen
            .get_mut(usize::try_from(r.ticket)?)
            .filter(|s| !**s)
            .ok_or_else(|| anyhow::anyhow!("ticket {} unexpected or twice", r.ticket))?;
        *slot = true;
        count += 1;
    }
    let elapsed = t0.elapsed();
    producer.await??;
    ensure!(
        count == jobs,
        "{count} results for {jobs} jobs over {n} workers"
    );
    Ok(jobs as f64 / elapsed.as_secs_f64())
}

/// Measures section 9.
pub(crate) async fn run(ctx: &Ctx, r: &mut Report) -> anyhow::Result<()> {
    let s = &ctx.settings;
    let jobs = s.fleet_jobs;
    println!(
        "[9] fleet: {jobs} /bin/true jobs through the pool over {WORKERS} local qexecd vs 1 \
         (≤ {PER_WORKER} in flight per worker, {} runs)",
        s.runs
    );
    let mut servers = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        servers.push(Qexecd::start(&ctx.bins.qexecd, &ctx.pki_dir(), false).await?);
    }
    let worker = |i: usize, q: &Qexecd| Worker {
        name: format!("w{i}"),
        config: q.client_config(),
    };
    let (mut one, mut four) = (vec![], vec![]);
    for _ in 0..s.runs {
        one.push(one_run(vec![worker(0, &servers[0])], jobs).await?);
        let all = servers
            .iter()
            .enumerate()
            .map(|(i, q)| worker(i, q))
            .collect();
        four.push(one_run(all, jobs).await?);
    }
    let one = r.figure(
        "fleet.one_worker",
        SECTION,
        format!("{jobs} `/bin/true` through the pool, 1 worker"),
        "jobs/s",
        one,
    );
    let four = r.figure(
        "fleet.four_workers",
        SECTION,
        format!("{jobs} `/bin/true` through the pool, {WORKERS} local workers"),
        "jobs/s",
        four,
    );
    r.ratio(
        "fleet.four_over_one",
        format!("pool over {WORKERS} local workers / 1 worker (one machine's cores shared)"),
        four / one,
        "×",
        None,
    );
    Ok(())
}
