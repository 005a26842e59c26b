//! Section 3: output throughput. A job writing N bytes (1 GiB in a full run) to stdout
//! with `head -c N /dev/zero`, consumed by a qexec client (the library in this process,
//! and the `qexec run` CLI into a pipe), against `ssh … head -c N /dev/zero` into a pipe
//! and the same `head` into a local pipe. Every reader counts the bytes it got.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};

use super::report::{Goal, Report};
use super::stats::mb_per_s;
use super::{Ctx, expect_success, request, run_count};

const SECTION: &str = "3 throughput";

/// The producer's argv.
fn producer(bytes: u64) -> Vec<String> {
    vec![
        "head".into(),
        "-c".into(),
        bytes.to_string(),
        "/dev/zero".into(),
    ]
}

/// Runs `cmd`, reads its stdout to the end in 64 KiB reads, checks it exited 0 and
/// wrote exactly `bytes`; returns MB/s.
pub(crate) fn pipe_rate(mut cmd: Command, bytes: u64) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    let mut out = child.stdout.take().context("no stdout pipe")?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match out.read(&mut buf)? {
            0 => break,
            k => n += k as u64,
        }
    }
    let st = child.wait()?;
    let elapsed = t.elapsed();
    if !st.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        bail!("{cmd:?} failed ({st}): {}", err.trim());
    }
    if n != bytes {
        bail!("{cmd:?} wrote {n} bytes, expected {bytes}");
    }
    Ok(mb_per_s(bytes, elapsed))
}

/// One streaming job through the client library; MB/s.
pub(crate) async fn library_rate(
    client: &Arc<qexec_client::Client>,
    bytes: u64,
) -> anyhow::Result<f64> {
    let argv = producer(bytes);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let t = Instant::now();
    let (n, status) = run_count(client, request(&argv)).await?;
    let elapsed = t.elapsed();
    expect_success(&status)?;
    if n != bytes {
        bail!("qexec delivered {n} bytes, expected {bytes}");
    }
    Ok(mb_per_s(bytes, elapsed))
}

/// Measures section 3.
pub(crate) async fn run(ctx: &Ctx, r: &mut Report) -> anyhow::Result<()> {
    let s = &ctx.settings;
    let bytes = s.stream_bytes;
    println!(
        "[3] throughput of {} MiB to stdout ({} runs)",
        bytes >> 20,
        s.runs
    );
    let argv = producer(bytes);
    let client = Arc::new(ctx.plain.connect().await?);
    let (mut local, mut lib, mut cli, mut ssh) = (vec![], vec![], vec![], vec![]);
    for _ in 0..s.runs {
        local.push(tokio::task::block_in_place(|| {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            pipe_rate(c, bytes)
        })?);
        lib.push(library_rate(&client, bytes).await?);
        cli.push(tokio::task::block_in_place(|| {
            let mut c = ctx.plain.cli(&ctx.bins.qexec);
            c.args(["run", "--"]).args(&argv);
            pipe_rate(c, bytes)
        })?);
        if let Some(sshd) = &ctx.sshd {
            let remote: Vec<&str> = argv.iter().map(String::as_str).collect();
            ssh.push(tokio::task::block_in_place(|| {
                pipe_rate(sshd.ssh(&remote), bytes)
            })?);
        }
    }
    client.close();
    let local = r.figure(
        "throughput.local_pipe",
        SECTION,
        "local pipe: `head -c N /dev/zero |` reader",
        "MB/s",
        local,
    );
    let lib = r.figure(
        "throughput.qexec_library",
        SECTION,
        "qexec: job → client library (in-process reader)",
        "MB/s",
        lib,
    );
    let cli = r.figure(
        "throughput.qexec_cli",
        SECTION,
        "qexec: `qexec run -- head …` → pipe",
        "MB/s",
        cli,
    );
    r.ratio(
        "throughput.qexec_cli_over_local",
        "qexec run (CLI → pipe) / local pipe",
        100.0 * cli / local,
        "%",
        Some(Goal::AtLeast(60.0)),
    );
    r.ratio(
        "throughput.qexec_library_over_local",
        "qexec client library / local pipe",
        100.0 * lib / local,
        "%",
        None,
    );
    if !ssh.is_empty() {
        let ssh = r.figure(
            "throughput.ssh",
            SECTION,
            "OpenSSH: `ssh … head -c N /dev/zero` → pipe",
            "MB/s",
            ssh,
        );
        r.ratio(
            "throughput.qexec_cli_over_ssh",
            "qexec run (CLI → pipe) / ssh (→ pipe)",
            cli / ssh,
            "×",
            Some(Goal::AtLeast(1.5)),
        );
        r.ratio(
            "throughput.qexec_library_over_ssh",
            "qexec client library / ssh (→ pipe)",
            lib / ssh,
            "×",
            None,
        );
    } else {
        r.note("section 3: no OpenSSH server, so no ssh figure and no ratio");
    }
    Ok(())
}
