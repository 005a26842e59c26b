//! Section 2: warm job round trip on one open connection: `Start{follow}` of
//! `/bin/true` until its output stream's `End` (what a client waits for), p50/p99 and
//! jobs/s with 1 and 16 jobs in flight; on a plain qexecd, and on one with isolation on
//! and limits in every request. Baseline: a local `fork+exec+wait` of `/bin/true`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use qexec_client::Client;
use qexec_protocol::{Limits, StartRequest};

use super::procs::Qexecd;
use super::report::{Goal, Report};
use super::stats::{median, micros, percentile};
use super::{Ctx, expect_success, request, run_collect, run_count};

const SECTION: &str = "2 warm round trip";

/// The limits the "with limits" variant asks for (generous: they must not slow
/// `/bin/true` itself, only show what setting them up costs).
fn bench_limits() -> Limits {
    Limits {
        cpu_millis: Some(1000),
        memory_bytes: Some(256 << 20),
        pids: Some(64),
        ..Limits::default()
    }
}

/// One round trip: start → End, exit 0.
async fn round_trip(client: &Arc<Client>, req: &StartRequest) -> anyhow::Result<()> {
    let (_, status) = run_count(client, req.clone()).await?;
    expect_success(&status)
}

/// `n` sequential round trips: their durations and the total time.
async fn sequential(
    client: &Arc<Client>,
    req: &StartRequest,
    n: usize,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let t0 = Instant::now();
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        round_trip(client, req).await?;
        v.push(t.elapsed());
    }
    Ok((v, t0.elapsed()))
}

/// Jobs/s with `in_flight` concurrent round-trip loops sharing the connection.
async fn concurrent(
    client: &Arc<Client>,
    req: &StartRequest,
    n: usize,
    in_flight: usize,
) -> anyhow::Result<f64> {
    let per = n.div_ceil(in_flight);
    let t0 = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..in_flight {
        let (c, req) = (client.clone(), req.clone());
        set.spawn(async move {
            for _ in 0..per {
                round_trip(&c, &req).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok((per * in_flight) as f64 / t0.elapsed().as_secs_f64())
}

/// Whether a job of `server` runs in another pid namespace and another cgroup than
/// qexecd itself (so we can say whether "isolated" was really isolated).
async fn probe_isolation(server: &Qexecd, client: &Client) -> anyhow::Result<(bool, bool)> {
    let mut req = request(&[
        "/bin/sh",
        "-c",
        "readlink /proc/self/ns/pid; echo ---; cat /proc/self/cgroup",
    ]);
    req.limits = bench_limits();
    let (out, status) = run_collect(client, req).await?;
    expect_success(&status)?;
    let out = String::from_utf8_lossy(&out).into_owned();
    let (ns, cgroup) = out
        .split_once("---\n")
        .context("probe output has no separator")?;
    let pid = server.pid();
    let server_ns = std::fs::read_link(format!("/proc/{pid}/ns/pid"))?;
    let server_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    Ok((
        ns.trim() != server_ns.to_string_lossy(),
        cgroup.trim() != server_cgroup.trim(),
    ))
}

/// Measures one server variant.
async fn variant(
    ctx: &Ctx,
    r: &mut Report,
    server: &Qexecd,
    name: &str,
    label: &str,
    req: &StartRequest,
) -> anyhow::Result<f64> {
    let s = &ctx.settings;
    let client = Arc::new(server.connect().await?);
    // Warm-up: connection, page cache, the job library's first jobs.
    sequential(&client, req, s.warm_jobs / 10 + 1).await?;
    let (mut p50, mut p99, mut seq, mut par) = (vec![], vec![], vec![], vec![]);
    for _ in 0..s.runs {
        let (v, total) = sequential(&client, req, s.warm_jobs).await?;
        let us = micros(&v);
        p50.push(percentile(&us, 0.5));
        p99.push(percentile(&us, 0.99));
        seq.push(s.warm_jobs as f64 / total.as_secs_f64());
        par.push(concurrent(&client, req, s.warm_jobs, 16).await?);
    }
    r.figure(
        &format!("warm.{name}.p50"),
        SECTION,
        format!("{label}: start→End of /bin/true, p50"),
        "µs",
        p50,
    );
    r.figure(
        &format!("warm.{name}.p99"),
        SECTION,
        format!("{label}: start→End of /bin/true, p99"),
        "µs",
        p99,
    );
    r.figure(
        &format!("warm.{name}.jobs_per_s_1"),
        SECTION,
        format!("{label}: jobs/s, 1 in flight"),
        "jobs/s",
        seq,
    );
    let par = r.figure(
        &format!("warm.{name}.jobs_per_s_16"),
        SECTION,
        format!("{label}: jobs/s, 16 in flight"),
        "jobs/s",
        par,
    );
    client.close();
    Ok(par)
}

/// Measures section 2.
pub(crate) async fn run(ctx: &Ctx, r: &mut Report) -> anyhow::Result<()> {
    let s = &ctx.settings;
    println!(
        "[2] warm round trip ({} runs × {} jobs, one connection)",
        s.runs, s.warm_jobs
    );
    // Baseline: local fork+exec+wait, blocking on purpose (nothing else runs).
    let local = tokio::task::block_in_place(|| -> anyhow::Result<Vec<f64>> {
        (0..s.runs)
            .map(|_| {
                let mut v = Vec::with_capacity(s.warm_jobs);
                for _ in 0..s.warm_jobs {
                    let t = Instant::now();
                    let st = std::process::Command::new("/bin/true").status()?;
                    anyhow::ensure!(st.success(), "local /bin/true failed");
                    v.push(t.elapsed());
                }
                Ok(median(&micros(&v)))
            })
            .collect()
    })?;
    let local = r.figure(
        "warm.local_spawn.p50",
        SECTION,
        "baseline: local spawn+wait of /bin/true, p50",
        "µs",
        local,
    );

    let plain_req = request(&["/bin/true"]);
    let plain_p50_key = "warm.plain.p50";
    variant(ctx, r, &ctx.plain, "plain", "plain", &plain_req).await?;
    let plain_p50 = r
        .figures
        .iter()
        .find(|f| f.key == plain_p50_key)
        .map_or(f64::NAN, |f| f.median());
    r.ratio(
        "warm.plain_over_local",
        "warm qexec p50 / local spawn p50",
        plain_p50 / local,
        "×",
        None,
    );

    // The default server (isolation on, sandboxed when the host allows it) and limits
    // in every request.
    let isolated = &ctx.default;
    let probe_client = isolated.connect().await?;
    let (ns, cg) = probe_isolation(isolated, &probe_client).await?;
    probe_client.close();
    let mut limited = request(&["/bin/true"]);
    limited.limits = bench_limits();
    let label = "isolation on + limits";
    let jps = variant(ctx, r, isolated, "isolated", label, &limited).await?;
    r.ratio(
        "warm.isolated_jobs_per_s",
        "isolated+limited jobs/s, 16 in flight (absolute)",
        jps,
        "jobs/s",
        Some(Goal::AtLeast(300.0)),
    );
    if !ns || !cg {
        r.note(format!(
            "section 2: in this build the \"{label}\" jobs ran {} and {}: qexecd accepted \
             isolation and limits but did not apply them, so that row measures the plain \
             path plus request overhead, not real isolation",
            if ns {
                "in their own pid namespace"
            } else {
                "in qexecd's pid namespace"
            },
            if cg {
                "in their own cgroup"
            } else {
                "in qexecd's cgroup (no limits applied)"
            },
        ));
    }
    let log = isolated.log();
    if !log.trim().is_empty() {
        r.note(format!(
            "section 2: the default (isolated) qexecd logged: {}",
            log.lines().take(3).collect::<Vec<_>>().join(" | ")
        ));
    }
    Ok(())
}
