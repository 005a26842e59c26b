//! Section 6: qexecd's memory, read from `/proc/<pid>/status` of a fresh qexecd per
//! run: RSS idle (after start-up and one connection), RSS after N finished jobs (1,000
//! in a full run; per job = growth / N), and peak RSS (VmHWM, reset just before) while
//! one client streams a job writing 1 GiB to stdout.

use std::sync::Arc;

use super::procs::Qexecd;
use super::report::{Goal, Report};
use super::throughput::library_rate;
use super::{Ctx, expect_success, request, run_count};

const SECTION: &str = "6 server memory";

/// Measures section 6.
pub(crate) async fn run(ctx: &Ctx, r: &mut Report) -> anyhow::Result<()> {
    let s = &ctx.settings;
    println!(
        "[6] qexecd memory ({} runs, fresh qexecd each: idle, after {} jobs, peak streaming {} MiB)",
        s.runs,
        s.memory_jobs,
        s.stream_bytes >> 20
    );
    let (mut idle, mut after, mut per_job, mut peak) = (vec![], vec![], vec![], vec![]);
    for _ in 0..s.runs {
        let server = Qexecd::start(&ctx.bins.qexecd, &ctx.pki_dir(), false).await?;
        let idle_kib = server.memory()?.rss_kib;
        let client = Arc::new(server.connect().await?);
        // 16 loops in flight on one connection; each job followed to its End.
        let per = s.memory_jobs.div_ceil(16);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let c = client.clone();
            set.spawn(async move {
                for _ in 0..per {
                    let (_, st) = run_count(&c, request(&["/bin/true"])).await?;
                    expect_success(&st)?;
                }
                anyhow::Ok(())
            });
        }
        while let Some(j) = set.join_next().await {
            j??;
        }
        let after_kib = server.memory()?.rss_kib;
        server.reset_peak()?;
        library_rate(&client, s.stream_bytes).await?;
        let hwm_kib = server.memory()?.hwm_kib;
        client.close();
        idle.push(idle_kib as f64 / 1024.0);
        after.push(after_kib as f64 / 1024.0);
        per_job.push(after_kib.saturating_sub(idle_kib) as f64 / (per * 16) as f64);
        peak.push(hwm_kib as f64 / 1024.0);
    }
    r.figure("memory.idle", SECTION, "qexecd RSS idle", "MiB", idle);
    r.figure(
        "memory.after_jobs",
        SECTION,
        format!("qexecd RSS after {} finished jobs", s.memory_jobs),
        "MiB",
        after,
    );
    let pj = r.figure(
        "memory.per_finished_job",
        SECTION,
        "qexecd RSS growth per finished job",
        "KiB",
        per_job,
    );
    let pk = r.figure(
        "memory.peak_streaming",
        SECTION,
        format!(
            "qexecd peak RSS (VmHWM) streaming {} MiB",
            s.stream_bytes >> 20
        ),
        "MiB",
        peak,
    );
    r.ratio(
        "memory.peak_streaming",
        "qexecd peak RSS while streaming (absolute)",
        pk,
        "MiB",
        Some(Goal::Below(64.0)),
    );
    r.ratio(
        "memory.per_finished_job",
        "qexecd RSS per finished job (absolute)",
        pj,
        "KiB",
        Some(Goal::Below(64.0)),
    );
    Ok(())
}
