//! Benchmark: warm job round trip over qexec on loopback.
//!
//! One in-process server, one open connection. Measures, in the same run:
//! - baseline A: a local `fork+exec+wait` of `/bin/true` (std::process), no network;
//! - baseline B: a request round trip that runs no job (`List` on an empty server… or
//!   `Status` of a missing job), i.e. the protocol's floor;
//! - the qexec round trip: `Start{follow}` of `/bin/true` until its output stream's
//!   `End` (start → exit as a client sees it), p50/p99;
//! - throughput: jobs/s with 1 and 16 jobs in flight.
//!
//! Run: `cargo run --release -p qexec-tests --bin roundtrip [-- --jobs N]`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use qexec_protocol::{ClientMessage, JobId, ServerMessage, StatusRequest, frame};
use qexec_tests::{TestClient, TestServer, read_all, start_msg};

/// Warm job round-trip benchmark.
#[derive(Debug, Parser)]
struct Args {
    /// Timed round trips (after a warm-up of a tenth as many).
    #[arg(long, default_value_t = 500)]
    jobs: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let p50 = percentile(&v, 0.5);
    println!(
        "{name:<34} n={:<5} p50={:>9.1} µs  p99={:>9.1} µs",
        v.len(),
        p50.as_secs_f64() * 1e6,
        percentile(&v, 0.99).as_secs_f64() * 1e6
    );
    p50
}

/// One start → End round trip of `/bin/true`.
async fn job_round_trip(c: &TestClient) -> anyhow::Result<()> {
    let (mut send, mut recv) = c
        .open(&frame::encode(&start_msg(&["/bin/true"], true))?)
        .await?;
    send.finish()?;
    let answer = read_all(&mut recv).await?;
    let [ServerMessage::Started(_)] = answer.as_slice() else {
        bail!("start answered {answer:?}");
    };
    let out = c.accept_output().await?.read_to_end().await?;
    if out.status.state.termination() != Some(qexec_protocol::Termination::Exited(0)) {
        bail!("/bin/true ended with {:?}", out.status.state);
    }
    Ok(())
}

/// Requests/s of `Status` (no job runs): the service's own ceiling.
async fn request_rate(c: &Arc<TestClient>, total: usize, in_flight: usize) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let per = total / in_flight;
    for _ in 0..in_flight {
        let c = c.clone();
        set.spawn(async move {
            for _ in 0..per {
                let job = JobId::from_u128(1);
                c.request(&ClientMessage::Status(StatusRequest { job }))
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok((per * in_flight) as f64 / t0.elapsed().as_secs_f64())
}

async fn throughput(c: &Arc<TestClient>, total: usize, in_flight: usize) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let per = total / in_flight;
    for _ in 0..in_flight {
        let c = c.clone();
        set.spawn(async move {
            for _ in 0..per {
                job_round_trip(&c).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok((per * in_flight) as f64 / t0.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let n = args.jobs.max(16);
    let server = TestServer::start_with(|c| {
        c.max_jobs_per_user = 4096;
        c.max_jobs = 4096;
    })
    .await?;
    let client = Arc::new(server.connect("alice").await?);
    println!(
        "qexec round-trip benchmark ({} build), {n} jobs",
        if cfg!(debug_assertions) {
            "DEBUG"
        } else {
            "release"
        }
    );

    // Warm up: connection, page cache, job library.
    for _ in 0..n / 10 {
        job_round_trip(&client).await?;
    }

    let mut local = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        // Blocking on purpose: this is the local cost of a spawn, nothing else runs.
        let st = std::process::Command::new("/bin/true")
            .status()
            .context("local /bin/true")?;
        if !st.success() {
            bail!("local /bin/true failed");
        }
        local.push(t.elapsed());
    }
    let local_p50 = report("baseline: local spawn+wait", local);

    let mut rpc = Vec::with_capacity(n);
    let missing = JobId::from_u128(1);
    for _ in 0..n {
        let t = Instant::now();
        let a = client
            .request(&ClientMessage::Status(StatusRequest { job: missing }))
            .await?;
        if !matches!(a.as_slice(), [ServerMessage::Error(_)]) {
            bail!("status answered {a:?}");
        }
        rpc.push(t.elapsed());
    }
    let rpc_p50 = report("baseline: request round trip", rpc);

    let mut rt = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        job_round_trip(&client).await?;
        rt.push(t.elapsed());
    }
    let job_p50 = report("qexec: start→End of /bin/true", rt);
    println!(
        "ratio job p50 / local spawn p50 = {:.2}; job p50 - request p50 = {:.1} µs",
        job_p50.as_secs_f64() / local_p50.as_secs_f64(),
        (job_p50.as_secs_f64() - rpc_p50.as_secs_f64()) * 1e6
    );

    // Head-of-line: the same round trip while a follower of a 64 MiB job on the same
    // connection never reads its output stream. Right after the plain round trips, so
    // both see the same job-library state (under its 1000-finished-jobs retention). Measured once that job has ended, so
    // its writing does not compete for CPU: what remains is the stalled stream.
    let hog = client
        .start(&["/bin/sh", "-c", "head -c 67108864 /dev/zero"], true)
        .await?;
    let stalled = client.accept_output().await?;
    loop {
        let st = client.status(hog).await?;
        if !st.state.is_running() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut hol = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        job_round_trip(&client).await?;
        hol.push(t.elapsed());
    }
    let hol_p50 = report("qexec: same, 1 stalled follower", hol);
    println!(
        "ratio with stalled follower / without (p50) = {:.2}",
        hol_p50.as_secs_f64() / job_p50.as_secs_f64()
    );
    drop(stalled);
    for in_flight in [1, 16] {
        let rps = request_rate(&client, 4 * n, in_flight).await?;
        println!("requests (Status), {in_flight:>2} in flight: {rps:>9.0} req/s");
    }
    for in_flight in [1, 16] {
        let jps = throughput(&client, n, in_flight).await?;
        println!("throughput, {in_flight:>2} in flight: {jps:>9.0} jobs/s");
    }

    server.stop().await
}
