//! Section 5: fan-out. One job writes N bytes (256 MiB in a full run) of pseudo-random
//! data (`cat` of a file the harness wrote); 64 followers attach from offset 0 over
//! several connections and read it all; every follower's checksum must equal the
//! file's. Baseline: one follower of the same kind of job alone.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use qexec_client::{Client, OutputEvent};
use qexec_protocol::JobId;

use super::report::Report;
use super::stats::{Checksum, mb_per_s};
use super::{Ctx, expect_success, request};

const SECTION: &str = "5 fan-out";

/// Writes `bytes` of xorshift output to a temp file; returns it and its checksum.
fn make_file(bytes: u64) -> anyhow::Result<(tempfile::NamedTempFile, (u64, u64))> {
    let mut f = tempfile::Builder::new()
        .prefix("qexec-bench-fanout")
        .tempfile()?;
    let mut sum = Checksum::default();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        sum.update(&buf[..n]);
        left -= n as u64;
    }
    f.flush()?;
    Ok((f, sum.finish()))
}

/// One follower: attach from 0, read to End, return the checksum and the status.
async fn follow(client: Arc<Client>, job: JobId) -> anyhow::Result<(u64, u64)> {
    let mut sub = client.attach(job, 0).await?;
    let mut sum = Checksum::default();
    while let Some(ev) = sub.next().await? {
        match ev {
            OutputEvent::Data { data, .. } => sum.update(&data),
            OutputEvent::End(status) => {
                expect_success(&status)?;
                return Ok(sum.finish());
            }
        }
    }
    bail!("follower of {job} ended without End")
}

/// Starts `cat file` and has `followers` followers, spread over `clients`, read it;
/// returns the aggregate MB/s after checking every checksum.
async fn one_run(
    clients: &[Arc<Client>],
    file: &str,
    followers: usize,
    expected: (u64, u64),
) -> anyhow::Result<f64> {
    let t = Instant::now();
    let job = clients[0].start(request(&["cat", file])).await?.job;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..followers {
        set.spawn(follow(clients[i % clients.len()].clone(), job));
    }
    let mut n = 0;
    while let Some(r) = set.join_next().await {
        let sum = r??;
        if sum != expected {
            bail!(
                "a follower of {job} got {} bytes with checksum {:016x}, expected {} bytes \
                 with {:016x}",
                sum.1,
                sum.0,
                expected.1,
                expected.0
            );
        }
        n += 1;
    }
    let elapsed = t.elapsed();
    Ok(mb_per_s(expected.1 * n, elapsed))
}

/// Measures section 5.
pub(crate) async fn run(ctx: &Ctx, r: &mut Report) -> anyhow::Result<()> {
    let s = &ctx.settings;
    println!(
        "[5] fan-out: {} followers over {} connections of one job writing {} MiB ({} runs)",
        s.fanout_followers,
        s.fanout_connections,
        s.fanout_bytes >> 20,
        s.runs
    );
    let (file, expected) = tokio::task::block_in_place(|| make_file(s.fanout_bytes))?;
    let path = file
        .path()
        .to_str()
        .context("temp path is not UTF-8")?
        .to_owned();
    let mut clients = Vec::new();
    for _ in 0..s.fanout_connections.max(1) {
        clients.push(Arc::new(ctx.plain.connect().await?));
    }
    let (mut single, mut many) = (vec![], vec![]);
    for _ in 0..s.runs {
        single.push(one_run(&clients[..1], &path, 1, expected).await?);
        many.push(one_run(&clients, &path, s.fanout_followers, expected).await?);
    }
    for c in &clients {
        c.close();
    }
    let single = r.figure(
        "fanout.single",
        SECTION,
        "baseline: 1 follower",
        "MB/s",
        single,
    );
    let many = r.figure(
        "fanout.aggregate",
        SECTION,
        format!(
            "{} followers (all checksums equal), aggregate",
            s.fanout_followers
        ),
        "MB/s",
        many,
    );
    r.ratio(
        "fanout.aggregate_over_single",
        "fan-out aggregate / one follower",
        many / single,
        "×",
        None,
    );
    Ok(())
}
