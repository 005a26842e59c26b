//! Section 8: job records (issue 16). A fresh plain qexecd per run is filled with N
//! finished jobs of one user (10,000 in a full run, retention raised so all stay);
//! then: p50 and p99 of one `ListQuery` page (limit 100, newest first) over 200
//! requests, the same with a state filter that matches nothing recent (the server
//! walks every record), and qexecd's RSS holding the N records.

use std::sync::Arc;
use std::time::Instant;

use qexec_protocol::{ListQuery, ListStateFilter};

use super::procs::Qexecd;
use super::report::{Goal, Report};
use super::stats::{millis, percentile};
use super::{Ctx, expect_success, request, run_count};

const SECTION: &str = "8 job records";
/// `ListQuery` requests timed per run and query kind.
const SAMPLES: usize = 200;

/// Measures section 8.
pub(crate) async fn run(ctx: &Ctx, r: &mut Report) -> anyhow::Result<()> {
    let s = &ctx.settings;
    let n = s.record_jobs;
    println!(
        "[8] job records ({} runs, fresh qexecd each holding {n} finished jobs: ListQuery latency, RSS)",
        s.runs
    );
    let (mut p50, mut p99, mut walk_p50, mut rss) = (vec![], vec![], vec![], vec![]);
    let keep = n.to_string();
    for _ in 0..s.runs {
        let server = Qexecd::start_with(
            &ctx.bins.qexecd,
            &ctx.pki_dir(),
            false,
            &["--retain-per-user", &keep],
        )
        .await?;
        let client = Arc::new(server.connect().await?);
        let per = n.div_ceil(16);
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
        let newest = ListQuery {
            newest_first: true,
            ..ListQuery::all(100)
        };
        let (page, next) = client.list_query(newest.clone()).await?;
        anyhow::ensure!(
            page.len() == 100 && next.is_some(),
            "a page of 100 was expected, got {} (next {next:?})",
            page.len()
        );
        let mut times = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let t = Instant::now();
            client.list_query(newest.clone()).await?;
            times.push(t.elapsed());
        }
        let ms = millis(&times);
        p50.push(percentile(&ms, 0.5));
        p99.push(percentile(&ms, 0.99));
        // A filter no record matches: the server looks at all of them.
        let running = ListQuery {
            state: ListStateFilter::Running,
            ..ListQuery::all(100)
        };
        let mut times = Vec::with_capacity(SAMPLES / 4);
        for _ in 0..SAMPLES / 4 {
            let t = Instant::now();
            let (page, _) = client.list_query(running.clone()).await?;
            times.push(t.elapsed());
            anyhow::ensure!(page.is_empty(), "no job should be running");
        }
        walk_p50.push(percentile(&millis(&times), 0.5));
        rss.push(server.memory()?.rss_kib as f64 / 1024.0);
        client.close();
    }
    let what = |q: &str| format!("ListQuery {q} with {n} finished jobs");
    let latency = r.figure(
        "records.list_p50",
        SECTION,
        what("limit 100 newest first, p50"),
        "ms",
        p50,
    );
    r.figure(
        "records.list_p99",
        SECTION,
        what("limit 100 newest first, p99"),
        "ms",
        p99,
    );
    r.figure(
        "records.list_walk_p50",
        SECTION,
        what("state Running (none match), p50"),
        "ms",
        walk_p50,
    );
    let mem = r.figure(
        "records.rss",
        SECTION,
        format!("qexecd RSS holding {n} finished jobs"),
        "MiB",
        rss,
    );
    r.ratio(
        "records.list_p50",
        "ListQuery page p50 with the records (absolute)",
        latency,
        "ms",
        Some(Goal::Below(50.0)),
    );
    r.ratio(
        "records.rss",
        "qexecd RSS holding the records (absolute)",
        mem,
        "MiB",
        Some(Goal::Below(64.0)),
    );
    Ok(())
}
