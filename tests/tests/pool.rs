//! The worker pool of the client library (`qexec_client::pool`) against real qexecd
//! children (`qexec_tests::daemon::Daemon`): placement within capacity, every job once,
//! refusals moved to another worker, a killed worker's jobs reported lost, bounded
//! memory and tasks, and nothing left running when the pool is dropped.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use qexec_client::pool::{JobResult, Outcome, Pool, PoolOptions, PoolResults, Submission, Worker};
use qexec_protocol::{ErrorCode, ListQuery, ListStateFilter, SpawnFailure, Termination};
use qexec_tests::daemon::Daemon;
use qexec_tests::start_request;

type Result = anyhow::Result<()>;

/// Longest wait for any single event.
const WAIT: Duration = Duration::from_secs(60);

/// `n` qexecd started with `args`, named `<name>-<i>`.
async fn fleet(name: &str, n: usize, args: &[&str]) -> anyhow::Result<Vec<Daemon>> {
    let mut daemons = Vec::with_capacity(n);
    for i in 0..n {
        daemons.push(Daemon::start(&format!("{name}-{i}"), args).await?);
    }
    Ok(daemons)
}

/// One pool worker per daemon, as `alice`, named `w<i>`.
fn workers(daemons: &[Daemon]) -> Vec<Worker> {
    daemons
        .iter()
        .enumerate()
        .map(|(i, d)| Worker {
            name: format!("w{i}"),
            config: d.client_config("alice"),
        })
        .collect()
}

fn submission(argv: &[&str]) -> Submission {
    Submission {
        request: start_request(argv, true),
        stdin: None,
        keep_output: 1 << 10,
    }
}

/// Every result until the pool's results end.
async fn collect(results: &mut PoolResults) -> anyhow::Result<Vec<JobResult>> {
    let mut all = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, results.next()).await {
            Ok(Some(r)) => all.push(r),
            Ok(None) => return Ok(all),
            Err(_) => bail!("no result for {WAIT:?} after {} results", all.len()),
        }
    }
}

fn exit_code(r: &JobResult) -> Option<i32> {
    match &r.outcome {
        Outcome::Ended(status) => match status.state.termination() {
            Some(Termination::Exited(code)) => Some(code),
            _ => None,
        },
        _ => None,
    }
}

/// Jobs with stdin, kept and truncated output, a refused request; every ticket once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_with_stdin_and_output() -> Result {
    let daemons = fleet("pool-basic", 2, &["--max-jobs", "4"]).await?;
    let (pool, mut results) = Pool::connect(workers(&daemons), PoolOptions::default()).await?;
    let live: Vec<bool> = pool.workers().iter().map(|w| w.live).collect();
    ensure!(live == [true, true], "{:?}", pool.workers());
    for i in 0..20u64 {
        let mut s = submission(&["cat"]);
        s.stdin = Some(format!("ticket {i} says hello\n").into_bytes().into());
        // Keep only "ticket N" of the odd ones.
        if i % 2 == 1 {
            s.keep_output = format!("ticket {i}").len();
        }
        let ticket = pool.submit(s).await?;
        ensure!(ticket == i, "ticket {ticket} for submission {i}");
    }
    let refused = pool.submit(submission(&["/nonexistent/program"])).await?;
    pool.close();
    ensure!(
        pool.submit(submission(&["true"])).await.is_err(),
        "a closed pool takes no submission"
    );
    let all = collect(&mut results).await?;
    ensure!(all.len() == 21, "{} results", all.len());
    let tickets: HashSet<u64> = all.iter().map(|r| r.ticket).collect();
    ensure!(tickets.len() == 21, "each ticket once");
    for r in &all {
        if r.ticket == refused {
            let Outcome::Refused(e) = &r.outcome else {
                bail!("the missing program was not refused: {r:?}");
            };
            ensure!(e.code == ErrorCode::SpawnFailed, "{e:?}");
            ensure!(e.spawn == Some(SpawnFailure::NotFound), "{e:?}");
            continue;
        }
        ensure!(exit_code(r) == Some(0), "{r:?}");
        ensure!(r.job.is_some() && r.worker.is_some(), "{r:?}");
        let full = format!("ticket {} says hello\n", r.ticket);
        if r.ticket % 2 == 1 {
            let kept = format!("ticket {}", r.ticket);
            ensure!(r.output == kept.as_bytes(), "{r:?}");
            ensure!(r.output_truncated, "{r:?}");
        } else {
            ensure!(r.output == full.as_bytes(), "{r:?}");
            ensure!(!r.output_truncated, "{r:?}");
        }
    }
    let snapshot = pool.workers();
    ensure!(
        snapshot.iter().map(|w| w.done).sum::<u64>() == 21,
        "{snapshot:?}"
    );
    ensure!(snapshot.iter().all(|w| w.running == 0), "{snapshot:?}");
    Ok(())
}

/// Every job each server recorded as ended, by its first argument after the program.
async fn ended_on(d: &Daemon) -> anyhow::Result<Vec<qexec_protocol::JobStatus>> {
    let client = d.client("alice").await?;
    let mut query = ListQuery::all(1000);
    query.state = ListStateFilter::Ended;
    let mut all = Vec::new();
    loop {
        let (page, next) = client.list_query(query.clone()).await?;
        all.extend(page.into_iter().map(|e| e.status));
        match next {
            Some(cursor) => query.cursor = Some(cursor),
            None => return Ok(all),
        }
    }
}

/// Most jobs running at once in these records: a sweep over [start, end) intervals
/// (ms resolution; a job ending in the millisecond another starts is counted as
/// gone, as a server that refused the start would have seen it).
fn most_at_once(jobs: &[qexec_protocol::JobStatus]) -> usize {
    let mut events: Vec<(u64, i32)> = Vec::with_capacity(jobs.len() * 2);
    for j in jobs {
        events.push((j.started_at_ms, 1));
        events.push((j.ended_at_ms.unwrap_or(u64::MAX), -1));
    }
    // Ends (-1) before starts (+1) at the same millisecond.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    most as usize
}

fn argv_text(j: &qexec_protocol::JobStatus) -> Vec<String> {
    j.argv
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The pool test: 2,000 jobs over 4 workers with `--max-jobs 8` each. Every
/// ticket yields one result, every job ran exactly once (its output is its ticket,
/// and the servers' records hold each ticket once, 2,000 in all), and no server ever
/// ran more than 8 at once (from the servers' own start and end times).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_jobs_over_four_workers_within_capacity() -> Result {
    let _serial = serial().await;
    const JOBS: u64 = 2000;
    let daemons = fleet(
        "pool-2000",
        4,
        &[
            "--max-jobs",
            "8",
            "--max-jobs-per-user",
            "8",
            "--retain-per-user",
            "5000",
        ],
    )
    .await?;
    let options = PoolOptions {
        queue: 64,
        ..PoolOptions::default()
    };
    let (pool, mut results) = Pool::connect(workers(&daemons), options).await?;
    let capacities: Vec<Option<u32>> = pool.workers().iter().map(|w| w.capacity).collect();
    ensure!(
        capacities == [Some(8); 4],
        "capacity from Info: {capacities:?}"
    );
    let producer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for i in 0..JOBS {
                let ticket = pool.submit(submission(&["echo", &i.to_string()])).await?;
                ensure!(ticket == i, "ticket {ticket} for submission {i}");
            }
            pool.close();
            Ok(())
        })
    };
    let all = collect(&mut results).await?;
    producer.await??;
    ensure!(all.len() as u64 == JOBS, "{} results", all.len());
    let mut seen = vec![false; JOBS as usize];
    let mut per_worker: BTreeMap<String, u64> = BTreeMap::new();
    for r in &all {
        ensure!(!seen[r.ticket as usize], "ticket {} twice", r.ticket);
        seen[r.ticket as usize] = true;
        ensure!(exit_code(r) == Some(0), "{r:?}");
        ensure!(
            r.output == format!("{}\n", r.ticket).as_bytes(),
            "ticket {} printed {:?}",
            r.ticket,
            String::from_utf8_lossy(&r.output)
        );
        *per_worker
            .entry(r.worker.clone().context("no worker")?)
            .or_default() += 1;
    }
    // The servers' side: each ticket ran once, and never more than 8 at once.
    let mut ran = vec![0u32; JOBS as usize];
    let mut total = 0;
    for (i, d) in daemons.iter().enumerate() {
        let jobs = ended_on(d).await?;
        let most = most_at_once(&jobs);
        ensure!(most <= 8, "worker {i} ran {most} jobs at once");
        for j in &jobs {
            let argv = argv_text(j);
            let ticket: usize = argv.get(1).context("no argument")?.parse()?;
            ran[ticket] += 1;
        }
        total += jobs.len();
        ensure!(
            per_worker.get(&format!("w{i}")).copied() == Some(jobs.len() as u64),
            "worker {i}: the pool reported {:?} results, the server recorded {}",
            per_worker.get(&format!("w{i}")),
            jobs.len()
        );
    }
    ensure!(total as u64 == JOBS, "the servers recorded {total} jobs");
    ensure!(ran.iter().all(|&n| n == 1), "a ticket ran twice or never");
    let snapshot = pool.workers();
    eprintln!(
        "per worker: {per_worker:?}; refusals: {:?}",
        snapshot.iter().map(|w| w.refused).collect::<Vec<_>>()
    );
    ensure!(snapshot.iter().all(|w| w.running == 0), "{snapshot:?}");
    Ok(())
}

/// One worker SIGKILLed mid-run: its unfinished jobs come back `Lost` (with their ids
/// once started; checked against the records it kept, after a restart: every job it
/// recorded has its result), every other job ends on the other workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_jobs_come_back_lost() -> Result {
    let _serial = serial().await;
    const JOBS: u64 = 300;
    let mut daemons = fleet("pool-kill", 4, &["--max-jobs", "8"]).await?;
    let options = PoolOptions {
        queue: 32,
        info_interval: Duration::from_millis(200),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        give_up_after: Duration::from_secs(1),
        ..PoolOptions::default()
    };
    let (pool, mut results) = Pool::connect(workers(&daemons), options).await?;
    let producer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            for i in 0..JOBS {
                let s = submission(&["sh", "-c", "echo $0; sleep 0.2", &i.to_string()]);
                pool.submit(s).await?;
            }
            pool.close();
            anyhow::Ok(())
        })
    };
    // Kill w1 once it has ended a few jobs (so it holds a full load of ours).
    let mut all = Vec::new();
    while all
        .iter()
        .filter(|r: &&JobResult| r.worker.as_deref() == Some("w1"))
        .count()
        < 8
    {
        let r = tokio::time::timeout(WAIT, results.next())
            .await?
            .context("results ended before w1 ran 8 jobs")?;
        all.push(r);
    }
    // ... and runs at least 4 of them (its own word), so some lost jobs have ids.
    let checker = daemons[1].client("alice").await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while running(&checker).await? < 4 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "w1 never ran 4 jobs at once"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(checker);
    let in_flight = pool.workers()[1].running;
    daemons[1].stop(nix::sys::signal::Signal::SIGKILL).await?;
    all.extend(collect(&mut results).await?);
    producer.await??;
    ensure!(all.len() as u64 == JOBS, "{} results", all.len());
    let tickets: HashSet<u64> = all.iter().map(|r| r.ticket).collect();
    ensure!(tickets.len() as u64 == JOBS, "a ticket twice");
    let lost: Vec<&JobResult> = all
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Lost { .. }))
        .collect();
    ensure!(
        !lost.is_empty(),
        "w1 had {in_flight} jobs in flight and none was lost"
    );
    for r in &lost {
        ensure!(r.worker.as_deref() == Some("w1"), "lost elsewhere: {r:?}");
    }
    // Only what was in flight on w1 (at most its capacity, 8): a lost job stops
    // placements there, so the dead worker does not swallow the queue.
    ensure!(lost.len() <= 8, "{} jobs lost on w1", lost.len());
    for r in all
        .iter()
        .filter(|r| !matches!(r.outcome, Outcome::Lost { .. }))
    {
        ensure!(exit_code(r) == Some(0), "{r:?}");
    }
    // What w1 recorded (restarted on its state directory): each job it ran has its
    // result on w1, under its id, or, when the server died between recording the start
    // and answering it, as a `Lost` without an id (the pool never learnt it).
    daemons[1].spawn().await?;
    let client = daemons[1].client("alice").await?;
    let (records, _) = client.list_query(ListQuery::all(1000)).await?;
    let by_ticket: BTreeMap<u64, &JobResult> = all.iter().map(|r| (r.ticket, r)).collect();
    for e in &records {
        let argv = argv_text(&e.status);
        let ticket: u64 = argv.get(3).context("no ticket argument")?.parse()?;
        let r = by_ticket
            .get(&ticket)
            .context("a recorded job with no ticket")?;
        let reported = r.worker.as_deref() == Some("w1")
            && match r.job {
                Some(id) => id == e.status.id,
                None => matches!(r.outcome, Outcome::Lost { .. }),
            };
        ensure!(
            reported,
            "w1 ran job {} ({argv:?}) and the pool reported {r:?}",
            e.status.id
        );
    }
    let unnamed = lost.iter().filter(|r| r.job.is_none()).count();
    ensure!(unnamed < lost.len(), "no lost job has its id: {lost:?}");
    eprintln!(
        "w1: {} records, {} lost ({} without a job id), {in_flight} in flight at the kill",
        records.len(),
        lost.len(),
        unnamed
    );
    Ok(())
}

/// A worker with `--max-jobs 1` whose one slot a foreign job took after the pool's
/// last `Info`: the pool's start there is refused, goes back to the queue, and the
/// job runs on the other worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_refusal_moves_the_job_to_another_worker() -> Result {
    let _serial = serial().await;
    let daemons = fleet("pool-refusal", 2, &["--max-jobs", "1"]).await?;
    let options = PoolOptions {
        // No refresh during the test: the pool believes w0 is free.
        info_interval: Duration::from_secs(3600),
        ..PoolOptions::default()
    };
    let (pool, mut results) = Pool::connect(workers(&daemons), options).await?;
    ensure!(
        pool.workers().iter().all(|w| w.capacity == Some(1)),
        "{:?}",
        pool.workers()
    );
    // Another client (bob) takes w0's only slot.
    let bob = daemons[0].client("bob").await?;
    let mut foreign = start_request(&["sleep", "60"], false);
    foreign.stop_on_detach = true;
    let _foreign = bob.start(foreign).await?;
    // Equal free room, equal load: the first worker, w0, is tried first.
    let ticket = pool.submit(submission(&["echo", "moved"])).await?;
    pool.close();
    let all = collect(&mut results).await?;
    ensure!(all.len() == 1, "{all:?}");
    let r = &all[0];
    ensure!(r.ticket == ticket && exit_code(r) == Some(0), "{r:?}");
    ensure!(r.worker.as_deref() == Some("w1"), "ran on {:?}", r.worker);
    ensure!(r.output == b"moved\n", "{r:?}");
    let w = pool.workers();
    ensure!(w[0].refused == 1 && w[0].done == 0, "{w:?}");
    ensure!(w[1].refused == 0 && w[1].done == 1, "{w:?}");
    Ok(())
}

/// A pool whose only worker never answers: submissions wait while it may come back,
/// and once the pool is closed and the worker gave up, each comes back `NoWorker`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_live_worker_after_close_is_no_worker() -> Result {
    let dir = tempfile::tempdir()?;
    qexec_tls::init(dir.path(), &qexec_tls::InitOptions::default())?;
    // A port nothing listens on.
    let free = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let worker = vec![Worker {
        name: "w0".into(),
        config: qexec_client::ClientConfig::for_user(dir.path(), "alice")
            .with_addr(free.to_string()),
    }];
    let options = PoolOptions {
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        give_up_after: Duration::from_millis(300),
        ..PoolOptions::default()
    };
    let (pool, mut results) = Pool::connect(worker, options).await?;
    let w = pool.workers();
    ensure!(!w[0].live && w[0].last_error.is_some(), "{w:?}");
    for _ in 0..3 {
        pool.submit(submission(&["true"])).await?;
    }
    pool.close();
    let all = collect(&mut results).await?;
    ensure!(all.len() == 3, "{all:?}");
    for r in &all {
        let Outcome::NoWorker { reason } = &r.outcome else {
            bail!("{r:?}");
        };
        ensure!(r.worker.is_none() && reason.contains("w0"), "{r:?}");
    }
    ensure!(pool.workers()[0].gave_up, "{:?}", pool.workers());
    Ok(())
}

/// Tests that measure the process (RSS) or load every core run one at a time (each
/// test has its own runtime; tokio's mutex works across them).
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// Resident set size of this process, bytes.
fn rss() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .context("no VmRSS")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb << 10)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

/// 10,000 submissions through a 16-place queue: the pool's tasks stay within
/// workers + jobs in flight (not submissions), and the process grows by less than
/// 16 MiB between the first 1,000 results and the last.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_submissions_keep_tasks_and_memory_bounded() -> Result {
    let _serial = serial().await;
    const JOBS: u64 = 10_000;
    const WORKERS: usize = 4;
    const MAX_JOBS: usize = 8;
    let daemons = fleet(
        "pool-10k",
        WORKERS,
        &["--max-jobs", "8", "--no-isolation", "--insecure-root-jobs"],
    )
    .await?;
    let before = alive_tasks();
    let options = PoolOptions {
        queue: 16,
        results: 16,
        ..PoolOptions::default()
    };
    let (pool, mut results) = Pool::connect(workers(&daemons), options).await?;
    let idle = alive_tasks();
    // Per job in flight: its own task and, briefly, the client's task routing its
    // output stream.
    let bound = idle + 2 * WORKERS * MAX_JOBS + 8;
    let producer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut most = 0;
            for _ in 0..JOBS {
                let mut s = submission(&["true"]);
                s.keep_output = 0;
                pool.submit(s).await?;
                most = most.max(alive_tasks());
            }
            pool.close();
            anyhow::Ok(most)
        })
    };
    let mut count = 0u64;
    let mut warm = None;
    let mut most = 0;
    while let Some(r) = tokio::time::timeout(WAIT, results.next()).await? {
        ensure!(exit_code(&r) == Some(0), "{r:?}");
        count += 1;
        most = most.max(alive_tasks());
        if count == 1000 {
            warm = Some(rss()?);
        }
    }
    let most = most.max(producer.await??);
    let grown = rss()?.saturating_sub(warm.context("fewer than 1000 results")?);
    eprintln!(
        "tasks: {before} before the pool, {idle} idle, at most {most} (bound {bound}); \
         RSS grew {} KiB from result 1000 to {JOBS}",
        grown >> 10
    );
    ensure!(count == JOBS, "{count} results");
    ensure!(most <= bound, "{most} tasks alive (bound {bound})");
    ensure!(grown < 16 << 20, "RSS grew {} KiB", grown >> 10);
    Ok(())
}

/// How many of its jobs a server says are running.
async fn running(c: &qexec_client::Client) -> anyhow::Result<usize> {
    let mut q = ListQuery::all(100);
    q.state = ListStateFilter::Running;
    Ok(c.list_query(q).await?.0.len())
}

/// Dropping the pool and its results with jobs in flight ends every task the pool
/// started and closes its connections (its `stop_on_detach` jobs are stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_pool_ends_every_task() -> Result {
    let daemons = fleet("pool-drop", 2, &["--max-jobs", "4"]).await?;
    let checkers = [
        daemons[0].client("alice").await?,
        daemons[1].client("alice").await?,
    ];
    let baseline = alive_tasks();
    let (pool, results) = Pool::connect(workers(&daemons), PoolOptions::default()).await?;
    for _ in 0..6 {
        let mut s = submission(&["sleep", "600"]);
        s.request.stop_on_detach = true;
        pool.submit(s).await?;
    }
    // Wait (bounded) until the six jobs run: 3 on each worker (least loaded first).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let on = (running(&checkers[0]).await?, running(&checkers[1]).await?);
        if on == (3, 3) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "running: {on:?}, {:?}",
            pool.workers()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(alive_tasks() > baseline, "the pool runs tasks");
    drop(results);
    drop(pool);
    loop {
        let tasks = alive_tasks();
        let on = (running(&checkers[0]).await?, running(&checkers[1]).await?);
        if tasks == baseline && on == (0, 0) {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "after the drop: {tasks} tasks (baseline {baseline}), jobs running {on:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A qexec/1 server of an older revision, as far as the pool can tell: the same PKI,
/// but it knows no request, so it abandons every control stream with `Unsupported`
/// (what qexecd does with an unknown request variant, spec: QX-VER-3).
async fn serve_as_an_old_server(endpoint: quinn::Endpoint) {
    let unsupported = quinn::VarInt::from_u32(ErrorCode::Unsupported.as_u32());
    while let Some(incoming) = endpoint.accept().await {
        let Ok(conn) = incoming.await else { continue };
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                let _ = recv.read_to_end(1 << 16).await;
                let _ = send.reset(unsupported);
                let _ = recv.stop(unsupported);
            }
        });
    }
}

/// A server that answers `Info` with `Unsupported` is live with the pool's default
/// capacity (spec: QX-INFO-8), and a request it refuses comes back `Refused`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_server_gets_the_default_capacity() -> Result {
    let dir = tempfile::tempdir()?;
    qexec_tls::init(dir.path(), &qexec_tls::InitOptions::default())?;
    let paths = qexec_tls::PkiPaths::new(dir.path());
    let crypto = qexec_tls::server_crypto(&qexec_tls::TlsSource::Files {
        ca: paths.ca.clone(),
        cert: paths.server.clone(),
        key: paths.server_key.clone(),
    })?;
    let config = quinn::ServerConfig::with_crypto(std::sync::Arc::new(crypto));
    let endpoint = qexec_tls::bind_endpoint("127.0.0.1:0".parse()?, Some(config))?;
    let addr = endpoint.local_addr()?;
    let server = tokio::spawn(serve_as_an_old_server(endpoint));
    let worker = Worker {
        name: "old".into(),
        config: qexec_client::ClientConfig::for_user(dir.path(), "alice")
            .with_addr(addr.to_string()),
    };
    let options = PoolOptions {
        default_capacity: 3,
        ..PoolOptions::default()
    };
    let (pool, mut results) = Pool::connect(vec![worker], options).await?;
    let w = pool.workers();
    ensure!(w[0].live && w[0].capacity == Some(3), "{w:?}");
    pool.submit(submission(&["true"])).await?;
    pool.close();
    let all = collect(&mut results).await?;
    ensure!(all.len() == 1, "{all:?}");
    let Outcome::Refused(e) = &all[0].outcome else {
        bail!("{:?}", all[0]);
    };
    ensure!(e.code == ErrorCode::Unsupported, "{e:?}");
    ensure!(all[0].worker.as_deref() == Some("old"), "{:?}", all[0]);
    server.abort();
    Ok(())
}
