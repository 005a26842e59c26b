//! Section 3: output throughput. A job writing N bytes (1 GiB in a full run) to stdout
//! with `head -c N /dev/zero`, consumed by a qexec client (the library in this process,
//! and the `qexec run` CLI into a pipe), against `ssh … head -c N /dev/zero` into a pipe
//! and the same `head` into a local pipe. Every reader counts the bytes it got.
//! CPU seconds per GiB of qexecd, the `qexec` client, sshd and `ssh` come from
//! `/proc/<pid>/stat`; the `qexec run` row is repeated through a UDP relay that adds
//! 10 ms of delay each way ([`super::delay`]), and through the same relay with no
//! delay (what the relay itself costs on these cores, apart from the delay);
//! qexecd's peak RSS is read around the `qexec run` rows.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::cpu::{cpu_times, final_cpu_of_child, per_gib, wait_no_children};
use super::delay::DelayRelay;
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

/// What one piped run measured.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PipeRun {
    /// MB/s.
    pub(crate) rate: f64,
    /// CPU seconds of the command's own process (utime + stime, from /proc).
    pub(crate) cpu: f64,
}

/// Runs `cmd`, reads its stdout to the end in 64 KiB reads, checks it exited 0 and
/// wrote exactly `bytes`; returns MB/s and the command's CPU seconds.
pub(crate) fn pipe_run(mut cmd: Command, bytes: u64) -> anyhow::Result<PipeRun> {
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
    let elapsed = t.elapsed();
    let cpu = final_cpu_of_child(child.id());
    let st = child.wait()?;
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
    Ok(PipeRun {
        rate: mb_per_s(bytes, elapsed),
        cpu: cpu?,
    })
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

/// The samples of section 3.
#[derive(Debug, Default)]
struct Samples {
    local: Vec<f64>,
    lib: Vec<f64>,
    cli: Vec<f64>,
    ssh: Vec<f64>,
    delayed: Vec<f64>,
    relayed: Vec<f64>,
    qexecd_cpu: Vec<f64>,
    qexec_cpu: Vec<f64>,
    sshd_cpu: Vec<f64>,
    ssh_cpu: Vec<f64>,
    peak_rss_mib: Vec<f64>,
}

/// One-way delay of the long path.
const ONE_WAY_DELAY: Duration = Duration::from_millis(10);

/// Measures section 3.
pub(crate) async fn run(ctx: &Ctx, r: &mut Report) -> anyhow::Result<()> {
    let s = &ctx.settings;
    let bytes = s.stream_bytes;
    println!(
        "[3] throughput of {} MiB to stdout ({} runs; CPU from /proc; a path with {} ms \
         one-way delay through a UDP relay)",
        bytes >> 20,
        s.runs,
        ONE_WAY_DELAY.as_millis()
    );
    let argv = producer(bytes);
    let client = Arc::new(ctx.plain.connect().await?);
    let relay = DelayRelay::start(ctx.plain.addr, ONE_WAY_DELAY)?;
    let no_delay = DelayRelay::start(ctx.plain.addr, Duration::ZERO)?;
    let qexecd = ctx.plain.pid();
    let mut m = Samples::default();
    for _ in 0..s.runs {
        let head = tokio::task::block_in_place(|| {
            let mut c = Command::new(&argv[0]);
            c.args(&argv[1..]);
            pipe_run(c, bytes)
        })?;
        m.local.push(head.rate);
        m.lib.push(library_rate(&client, bytes).await?);
        ctx.plain.reset_peak()?;
        let before = cpu_times(qexecd)?.own;
        let cli = tokio::task::block_in_place(|| {
            let mut c = ctx.plain.cli(&ctx.bins.qexec);
            c.args(["run", "--"]).args(&argv);
            pipe_run(c, bytes)
        })?;
        let server_cpu = cpu_times(qexecd)?.own - before;
        m.peak_rss_mib
            .push(ctx.plain.memory()?.hwm_kib as f64 / 1024.0);
        m.cli.push(cli.rate);
        m.qexec_cpu.push(per_gib(cli.cpu, bytes));
        m.qexecd_cpu.push(per_gib(server_cpu, bytes));
        let through = |relay: &DelayRelay| {
            tokio::task::block_in_place(|| {
                let mut c = ctx.plain.cli(&ctx.bins.qexec);
                c.env("QEXEC_ADDR", relay.addr().to_string())
                    .args(["run", "--"])
                    .args(&argv);
                pipe_run(c, bytes)
            })
        };
        m.delayed.push(through(&relay)?.rate);
        m.relayed.push(through(&no_delay)?.rate);
        if let Some(sshd) = &ctx.sshd {
            let remote: Vec<&str> = argv.iter().map(String::as_str).collect();
            let before = cpu_times(sshd.pid())?.children;
            let run = tokio::task::block_in_place(|| pipe_run(sshd.ssh(&remote), bytes))?;
            // sshd's session processes (and the `head` they ran) are reaped by the
            // listener: its children's time, less what `head` itself took locally.
            wait_no_children(sshd.pid())?;
            let server_cpu = cpu_times(sshd.pid())?.children - before - head.cpu;
            m.ssh.push(run.rate);
            m.ssh_cpu.push(per_gib(run.cpu, bytes));
            m.sshd_cpu.push(per_gib(server_cpu.max(0.0), bytes));
        }
    }
    client.close();
    drop(relay);
    drop(no_delay);
    report(r, m);
    Ok(())
}

/// Adds the figures and ratios of section 3.
fn report(r: &mut Report, m: Samples) {
    let local = r.figure(
        "throughput.local_pipe",
        SECTION,
        "local pipe: `head -c N /dev/zero |` reader",
        "MB/s",
        m.local,
    );
    let lib = r.figure(
        "throughput.qexec_library",
        SECTION,
        "qexec: job → client library (in-process reader)",
        "MB/s",
        m.lib,
    );
    let cli = r.figure(
        "throughput.qexec_cli",
        SECTION,
        "qexec: `qexec run -- head …` → pipe",
        "MB/s",
        m.cli,
    );
    let qexecd_cpu = r.figure(
        "throughput.qexecd_cpu_per_gib",
        SECTION,
        "qexecd CPU during `qexec run` (utime+stime)",
        "s/GiB",
        m.qexecd_cpu,
    );
    let qexec_cpu = r.figure(
        "throughput.qexec_cpu_per_gib",
        SECTION,
        "`qexec` client CPU (utime+stime)",
        "s/GiB",
        m.qexec_cpu,
    );
    let peak = r.figure(
        "throughput.qexecd_peak_rss",
        SECTION,
        "qexecd peak RSS (VmHWM) during `qexec run`",
        "MiB",
        m.peak_rss_mib,
    );
    let delayed = r.figure(
        "throughput.qexec_cli_delayed",
        SECTION,
        format!(
            "qexec: `qexec run` → pipe, {} ms one-way delay (UDP relay)",
            ONE_WAY_DELAY.as_millis()
        ),
        "MB/s",
        m.delayed,
    );
    let relayed = r.figure(
        "throughput.qexec_cli_relayed",
        SECTION,
        "qexec: `qexec run` → pipe, through the same relay with no delay",
        "MB/s",
        m.relayed,
    );
    r.ratio(
        "throughput.qexec_cli_over_local",
        "qexec run (CLI → pipe) / local pipe",
        100.0 * cli / local,
        "%",
        Some(Goal::AtLeast(40.0)),
    );
    r.ratio(
        "throughput.qexec_library_over_local",
        "qexec client library / local pipe",
        100.0 * lib / local,
        "%",
        None,
    );
    r.ratio(
        "throughput.qexecd_cpu",
        "qexecd CPU-s per GiB (absolute)",
        qexecd_cpu,
        "s",
        Some(Goal::AtMost(2.0)),
    );
    r.ratio(
        "throughput.qexec_cpu",
        "qexec client CPU-s per GiB (absolute)",
        qexec_cpu,
        "s",
        Some(Goal::AtMost(1.0)),
    );
    r.ratio(
        "throughput.delayed_over_loopback",
        "qexec run with 10 ms one-way delay / on loopback",
        100.0 * delayed / cli,
        "%",
        Some(Goal::AtLeast(70.0)),
    );
    r.ratio(
        "throughput.delayed_over_relayed",
        "qexec run with 10 ms one-way delay / through the relay with no delay",
        100.0 * delayed / relayed,
        "%",
        None,
    );
    r.ratio(
        "throughput.qexecd_peak_rss_streaming",
        "qexecd peak RSS during `qexec run` (absolute)",
        peak,
        "MiB",
        Some(Goal::Below(64.0)),
    );
    if !m.ssh.is_empty() {
        let ssh = r.figure(
            "throughput.ssh",
            SECTION,
            "OpenSSH: `ssh … head -c N /dev/zero` → pipe",
            "MB/s",
            m.ssh,
        );
        r.figure(
            "throughput.sshd_cpu_per_gib",
            SECTION,
            "sshd CPU (session processes, less `head`)",
            "s/GiB",
            m.sshd_cpu,
        );
        r.figure(
            "throughput.ssh_cpu_per_gib",
            SECTION,
            "`ssh` client CPU (utime+stime)",
            "s/GiB",
            m.ssh_cpu,
        );
        r.ratio(
            "throughput.qexec_cli_over_ssh",
            "qexec run (CLI → pipe) / ssh (→ pipe)",
            cli / ssh,
            "×",
            Some(Goal::AtLeast(2.0)),
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
}
