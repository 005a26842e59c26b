//! Section 4: head-of-line blocking. Job B is `cat`; the client writes a small line to
//! its stdin and times until the echo arrives on B's output stream (small writes of B,
//! seen end to end). Measured on one connection without, then with, a follower of job
//! A on the same connection that has stopped reading while A wrote far more than the
//! client's stream window.
//!
//! A control row repeats the second measurement with job A writing the same bytes and
//! nobody following it: what B's echo loses to A's work on the same cores (A's
//! `head`, its output captured into the log), apart from anything the stalled
//! stream does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use qexec_client::{Client, OutputEvent};

use super::report::{Goal, Report};
use super::stats::{micros, percentile};
use super::wakeup::{self, Probe};
use super::{Ctx, expect_success, request};

const SECTION: &str = "4 head-of-line";

/// `samples` echo round trips through a `cat` job; their durations.
async fn echo_latencies(client: &Client, samples: usize) -> anyhow::Result<Vec<Duration>> {
    let mut req = request(&["cat"]);
    req.stdin = true;
    let mut job = client.run(req).await?;
    let mut stdin = job.stdin.take().context("no stdin writer")?;
    let output = job.output.as_mut().context("run did not follow")?;
    let mut received = 0usize;
    let mut sent = 0usize;
    let mut v = Vec::with_capacity(samples);
    for i in 0..samples {
        let line = format!("ping {i:06}\n");
        sent += line.len();
        let t = Instant::now();
        stdin.write(line.as_bytes()).await?;
        while received < sent {
            match tokio::time::timeout(Duration::from_secs(20), output.next()).await {
                Err(_) => bail!("echo {i} did not arrive within 20 s"),
                Ok(r) => match r? {
                    Some(OutputEvent::Data { data, .. }) => received += data.len(),
                    other => bail!("cat's output ended early: {other:?}"),
                },
            }
        }
        v.push(t.elapsed());
    }
    stdin.eof().await?;
    match output.next().await? {
        Some(OutputEvent::End(status)) => expect_success(&status)?,
        Some(OutputEvent::Data { .. }) => bail!("cat wrote more than it was given"),
        None => bail!("cat's output ended without End"),
    }
    Ok(v)
}

/// Measures section 4.
pub(crate) async fn run(ctx: &Ctx, r: &mut Report) -> anyhow::Result<()> {
    let s = &ctx.settings;
    println!(
        "[4] head-of-line ({} runs × {} echoes of job B; job A writes {} MiB to a stalled follower)",
        s.runs,
        s.hol_samples,
        s.hol_stalled_bytes >> 20
    );
    let client = Arc::new(ctx.plain.connect().await?);
    // Warm-up.
    echo_latencies(&client, 10).await?;
    let (mut b50, mut b99, mut s50, mut s99) = (vec![], vec![], vec![], vec![]);
    let (mut c50, mut c99) = (vec![], vec![]);
    let mut machine = wakeup::Runs::default();
    for _ in 0..s.runs {
        let base = micros(&echo_latencies(&client, s.hol_samples).await?);
        b50.push(percentile(&base, 0.5));
        b99.push(percentile(&base, 0.99));

        // Job A, followed on the same connection by a subscription nobody reads.
        let bytes = s.hol_stalled_bytes.to_string();
        let mut a = client
            .run(request(&["head", "-c", &bytes, "/dev/zero"]))
            .await?;
        let stalled = a.output.take().context("run did not follow")?;
        let probe = Probe::start();
        let stalled_lat = micros(&echo_latencies(&client, s.hol_samples).await?);
        machine.push(probe.finish());
        s50.push(percentile(&stalled_lat, 0.5));
        s99.push(percentile(&stalled_lat, 0.99));
        // The follower really was stalled: we read nothing of the bytes A wrote.
        let status = client.status(a.job).await?;
        if stalled.position() != 0 {
            bail!("the stalled follower was read");
        }
        let a_bytes = status.output_bytes();
        if a_bytes < (2 << 20) {
            bail!(
                "job A wrote only {a_bytes} bytes while B was measured: the follower was \
                 not stalled behind a full stream window"
            );
        }
        // Dropping the subscription cancels it; then stop A if it still runs.
        drop(stalled);
        if status.state.is_running() {
            client.stop(a.job, Some(Duration::from_secs(1))).await?;
        }

        // Control: job A writes the same bytes, followed by nobody.
        let a = client
            .start(request(&["head", "-c", &bytes, "/dev/zero"]))
            .await?;
        let control = micros(&echo_latencies(&client, s.hol_samples).await?);
        c50.push(percentile(&control, 0.5));
        c99.push(percentile(&control, 0.99));
        if client.status(a.job).await?.state.is_running() {
            client.stop(a.job, Some(Duration::from_secs(1))).await?;
        }
    }
    client.close();
    r.figure(
        "hol.baseline.p50",
        SECTION,
        "job B echo, no stalled follower, p50",
        "µs",
        b50,
    );
    let base99 = r.figure(
        "hol.baseline.p99",
        SECTION,
        "job B echo, no stalled follower, p99",
        "µs",
        b99,
    );
    r.figure(
        "hol.stalled.p50",
        SECTION,
        "job B echo, follower of A stalled, p50",
        "µs",
        s50,
    );
    let stalled99 = r.figure(
        "hol.stalled.p99",
        SECTION,
        "job B echo, follower of A stalled, p99",
        "µs",
        s99,
    );
    r.figure(
        "hol.control.p50",
        SECTION,
        "job B echo, A writing with no follower (control), p50",
        "µs",
        c50,
    );
    let control99 = r.figure(
        "hol.control.p99",
        SECTION,
        "job B echo, A writing with no follower (control), p99",
        "µs",
        c99,
    );
    r.figure(
        "hol.stalled.wakeup_p99",
        SECTION,
        "wake-up probe (1 ms sleeps) lateness while A stalled, p99",
        "µs",
        machine.p99,
    );
    r.figure(
        "hol.stalled.wakeup_max",
        SECTION,
        "wake-up probe lateness while A stalled, max",
        "µs",
        machine.max,
    );
    r.note(format!(
        "section 4: the kernel reported {} MiB of free memory to the hypervisor while A \
         was stalled (all runs)",
        machine.reported_mib
    ));
    r.ratio(
        "hol.p99_stalled_over_baseline",
        "job B p99 with A stalled / without",
        stalled99 / base99,
        "×",
        Some(Goal::AtMost(1.5)),
    );
    r.ratio(
        "hol.p99_stalled_over_control",
        "job B p99 with A stalled / A writing unfollowed",
        stalled99 / control99,
        "×",
        None,
    );
    Ok(())
}
