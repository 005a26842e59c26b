//! Section 7: keystroke echo latency on a terminal job (issue 17, spec: QX-TERM-*).
//!
//! The remote program is `cat` on a terminal put in raw mode without echo (`stty raw
//! -echo`), so each byte typed comes back once, written by `cat`: one sample is the
//! time from writing one byte to reading it back. Measured (a) on an idle connection,
//! (b) while another job on the **same connection** streams `stream_bytes` (1 GiB in a
//! full run, one job after the other for as long as the samples take) to a reader.
//!
//! Baseline: `ssh -tt` through a `ControlMaster` connection, the bulk transfer in a
//! second channel (`ssh -S … head -c N /dev/zero`) of the same master, so both share
//! one TCP connection as qexec's jobs share one QUIC connection.
//!
//! A control row repeats (b) with the bulk jobs on a second connection of their own
//! (another UDP socket, another connection task on both sides): if (b) and the
//! control are alike, what the keystrokes lose is the CPU the bulk transfer takes on
//! these cores, not a queue they share with it on the connection.
//!
//! (c) is what two terminals do: the bulk transfers come from a separate client
//! process on a connection of its own (`qexec run -- head …`; for ssh a separate `ssh
//! … head …` without the master), so the two share only the server and the cores.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use qexec_client::{Client, OutputEvent, TerminalJob};
use qexec_protocol::{TerminalSpec, WindowSize};

use super::procs::Sshd;
use super::report::{Goal, Report};
use super::stats::{micros, percentile};
use super::wakeup::{self, Probe};
use super::{Ctx, request};

const SECTION: &str = "7 keystroke";

/// The remote side of every sample: raw terminal, no echo, `cat` writes each byte back.
const REMOTE: &str = "stty raw -echo; echo ready; exec cat";

/// Longest wait for one echo.
const ECHO_LIMIT: Duration = Duration::from_secs(20);

/// Bytes a bulk transfer must have moved before the echo samples beside it start.
const STREAMING: u64 = 1 << 20;

/// The samples of one (a)/(b) pair, in microseconds.
#[derive(Debug, Default)]
struct Runs {
    idle50: Vec<f64>,
    idle99: Vec<f64>,
    bulk50: Vec<f64>,
    bulk99: Vec<f64>,
    /// (b) with the bulk jobs on a connection of their own (qexec only).
    apart50: Vec<f64>,
    apart99: Vec<f64>,
    /// (c) with the bulk transfers made by a separate client process on a
    /// connection of its own (two terminals, one typing, one streaming).
    process50: Vec<f64>,
    process99: Vec<f64>,
    /// Bytes the bulk jobs moved while (b) was measured.
    bulk_bytes: u64,
    /// The wake-up probe during (b).
    machine: wakeup::Runs,
}

impl Runs {
    fn push_process(&mut self, samples: &[f64]) {
        self.process50.push(percentile(samples, 0.5));
        self.process99.push(percentile(samples, 0.99));
    }

    fn push(&mut self, idle: &[f64], bulk: &[f64], bulk_bytes: u64) {
        self.idle50.push(percentile(idle, 0.5));
        self.idle99.push(percentile(idle, 0.99));
        self.bulk50.push(percentile(bulk, 0.5));
        self.bulk99.push(percentile(bulk, 0.99));
        self.bulk_bytes += bulk_bytes;
    }
}

// ---- qexec ----

async fn terminal_cat(client: &Client) -> anyhow::Result<TerminalJob> {
    let spec = TerminalSpec {
        term: "xterm".into(),
        size: WindowSize {
            rows: 24,
            cols: 80,
            width_px: 0,
            height_px: 0,
        },
    };
    let mut job = client
        .run_terminal(request(&["sh", "-c", REMOTE]), spec)
        .await?;
    let mut seen = Vec::new();
    while !seen.ends_with(b"ready\n") {
        match tokio::time::timeout(ECHO_LIMIT, job.output.next()).await {
            Err(_) => bail!("the terminal job did not get ready"),
            Ok(r) => match r? {
                Some(OutputEvent::Data { data, .. }) => seen.extend_from_slice(&data),
                other => bail!("the terminal job ended early: {other:?}"),
            },
        }
    }
    Ok(job)
}

/// `samples` one-byte echoes through the terminal `cat`.
async fn qexec_echoes(job: &mut TerminalJob, samples: usize) -> anyhow::Result<Vec<Duration>> {
    let mut v = Vec::with_capacity(samples);
    for i in 0..samples {
        let key = [b'a' + (i % 26) as u8];
        let t = Instant::now();
        job.input.write(&key).await?;
        let mut got = 0;
        while got < 1 {
            match tokio::time::timeout(ECHO_LIMIT, job.output.next()).await {
                Err(_) => bail!("echo {i} did not arrive within {ECHO_LIMIT:?}"),
                Ok(r) => match r? {
                    Some(OutputEvent::Data { data, .. }) => {
                        if data.len() != 1 || data[0] != key[0] {
                            bail!("echo {i}: expected {:?}, got {data:?}", key[0] as char);
                        }
                        got += data.len();
                    }
                    other => bail!("cat's output ended early: {other:?}"),
                },
            }
        }
        v.push(t.elapsed());
    }
    Ok(v)
}

/// Bulk jobs (`head -c bytes /dev/zero`, followed and read) on `client`, one after the
/// other until `stop`; `moved` counts the bytes read.
fn qexec_bulk(
    client: Arc<Client>,
    bytes: u64,
    stop: Arc<AtomicBool>,
    moved: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    tokio::spawn(async move {
        let n = bytes.to_string();
        while !stop.load(Ordering::Relaxed) {
            let mut job = client
                .run(request(&["head", "-c", &n, "/dev/zero"]))
                .await?;
            let output = job.output.as_mut().context("run did not follow")?;
            loop {
                match output.next().await? {
                    Some(OutputEvent::Data { data, .. }) => {
                        moved.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                    Some(OutputEvent::End(status)) => {
                        super::expect_success(&status)?;
                        break;
                    }
                    None => bail!("bulk job {} ended without End", job.job),
                }
            }
        }
        Ok(())
    })
}

/// Echo samples through `job` while bulk jobs stream on `bulk_client`; the samples
/// and the bytes the bulk jobs moved meanwhile.
async fn qexec_echoes_under_bulk(
    ctx: &Ctx,
    job: &mut TerminalJob,
    bulk_client: Arc<Client>,
) -> anyhow::Result<(Vec<f64>, u64, wakeup::Wakeups)> {
    let s = &ctx.settings;
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicU64::new(0));
    let bulk = qexec_bulk(
        bulk_client,
        s.stream_bytes,
        Arc::clone(&stop),
        Arc::clone(&moved),
    );
    until_streaming(&moved, "the bulk job").await?;
    let before = moved.load(Ordering::Relaxed);
    let probe = Probe::start();
    let busy = micros(&qexec_echoes(job, s.keystroke_samples).await?);
    let machine = probe.finish();
    let during = moved.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    bulk.await??;
    Ok((busy, during, machine))
}

/// Whether `moved` shows the bulk transfer `what` streaming (the samples must not
/// start before it does); an error once it has not within [`ECHO_LIMIT`] of `started`.
fn streaming(moved: &AtomicU64, started: Instant, what: &str) -> anyhow::Result<bool> {
    if moved.load(Ordering::Relaxed) >= STREAMING {
        Ok(true)
    } else if started.elapsed() > ECHO_LIMIT {
        bail!("{what} did not start streaming")
    } else {
        Ok(false)
    }
}

/// Waits (yielding) until [`streaming`].
async fn until_streaming(moved: &AtomicU64, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while !streaming(moved, started, what)? {
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// Echo samples through `job` while a separate `qexec run` process streams bulk
/// jobs on a connection of its own: (c).
async fn qexec_echoes_beside_process(ctx: &Ctx, job: &mut TerminalJob) -> anyhow::Result<Vec<f64>> {
    let s = &ctx.settings;
    let mut cmd = ctx.plain.cli(&ctx.bins.qexec);
    cmd.args([
        "run",
        "--",
        "head",
        "-c",
        &s.stream_bytes.to_string(),
        "/dev/zero",
    ]);
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicU64::new(0));
    let bulk = process_bulk(&cmd, Arc::clone(&stop), Arc::clone(&moved));
    until_streaming(&moved, "the bulk qexec process").await?;
    let samples = qexec_echoes(job, s.keystroke_samples).await;
    stop.store(true, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || bulk.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the bulk process thread panicked"))??;
    Ok(micros(&samples?))
}

/// (a), (b), the control and (c) for qexec, `runs` times, the terminal on one
/// connection.
async fn qexec_run(ctx: &Ctx, runs: &mut Runs) -> anyhow::Result<()> {
    let s = &ctx.settings;
    let client = Arc::new(ctx.plain.connect().await?);
    let other = Arc::new(ctx.plain.connect().await?);
    let mut job = terminal_cat(&client).await?;
    qexec_echoes(&mut job, 20).await?; // warm-up
    for _ in 0..s.runs {
        let idle = micros(&qexec_echoes(&mut job, s.keystroke_samples).await?);
        let (busy, during, machine) =
            qexec_echoes_under_bulk(ctx, &mut job, Arc::clone(&client)).await?;
        runs.push(&idle, &busy, during);
        runs.machine.push(machine);
        let (apart, _, _) = qexec_echoes_under_bulk(ctx, &mut job, Arc::clone(&other)).await?;
        runs.apart50.push(percentile(&apart, 0.5));
        runs.apart99.push(percentile(&apart, 0.99));
        runs.push_process(&qexec_echoes_beside_process(ctx, &mut job).await?);
    }
    other.close();
    // Raw mode: ^D is just a byte to cat; stop the job instead.
    client.stop(job.job, Some(Duration::from_secs(1))).await?;
    client.close();
    Ok(())
}

// ---- OpenSSH ----

/// A `ControlMaster` connection to the bench's sshd; closed on drop.
struct Master {
    child: Child,
    socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Master {
    fn start(sshd: &Sshd) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("qexec-bench-mux")
            .tempdir()?;
        let socket = dir.path().join("ctl");
        let child = sshd
            .ssh_mux(&socket, &["-M", "-N"], &[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start the ssh ControlMaster")?;
        let m = Self {
            child,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + ECHO_LIMIT;
        loop {
            let ok = sshd
                .ssh_mux(&m.socket, &["-O", "check"], &[])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if ok {
                return Ok(m);
            }
            if Instant::now() > deadline {
                bail!("the ssh ControlMaster did not come up within {ECHO_LIMIT:?}");
            }
            // `ssh -O check` itself takes milliseconds: no pause needed between tries.
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ssh -tt` through the master, running [`REMOTE`]; ready to echo.
fn ssh_cat(sshd: &Sshd, socket: &Path) -> anyhow::Result<Child> {
    let mut child = sshd
        .ssh_mux(socket, &["-tt"], &[REMOTE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start ssh -tt")?;
    let out = child.stdout.as_mut().context("ssh stdout")?;
    let mut seen = Vec::new();
    let mut b = [0u8; 1];
    while !seen.ends_with(b"ready\n") {
        if out.read(&mut b)? == 0 {
            bail!("ssh -tt ended before the remote cat was ready");
        }
        seen.push(b[0]);
    }
    Ok(child)
}

fn ssh_echoes(child: &mut Child, samples: usize) -> anyhow::Result<Vec<Duration>> {
    let stdin = child.stdin.as_mut().context("ssh stdin")?;
    let stdout = child.stdout.as_mut().context("ssh stdout")?;
    let mut v = Vec::with_capacity(samples);
    let mut b = [0u8; 1];
    for i in 0..samples {
        let key = [b'a' + (i % 26) as u8];
        let t = Instant::now();
        stdin.write_all(&key)?;
        stdin.flush()?;
        if stdout.read(&mut b)? != 1 || b != key {
            bail!("ssh echo {i}: expected {:?}, got {b:?}", key[0] as char);
        }
        v.push(t.elapsed());
    }
    Ok(v)
}

/// A maker of copies of `cmd` (program, arguments, environment), stdout piped.
fn replay(cmd: &Command) -> impl Fn() -> Command + Send + 'static {
    let program = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let envs: Vec<_> = cmd
        .get_envs()
        .map(|(k, v)| (k.to_owned(), v.map(|v| v.to_owned())))
        .collect();
    move || {
        let mut c = Command::new(&program);
        c.args(&args).stdin(Stdio::null()).stdout(Stdio::piped());
        for (k, v) in &envs {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }
}

/// Bulk transfers by client processes (copies of `cmd`, whose stdout is the bytes),
/// one after the other until `stop`, each read to its end; `moved` counts the bytes.
fn process_bulk(
    cmd: &Command,
    stop: Arc<AtomicBool>,
    moved: Arc<AtomicU64>,
) -> std::thread::JoinHandle<anyhow::Result<()>> {
    let make = replay(cmd);
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 << 10];
        while !stop.load(Ordering::Relaxed) {
            let mut child = make().spawn().context("cannot start a bulk process")?;
            let mut out = child.stdout.take().context("bulk process stdout")?;
            loop {
                let n = out.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                moved.fetch_add(n as u64, Ordering::Relaxed);
            }
            let status = child.wait()?;
            if !status.success() {
                bail!("a bulk process failed: {status}");
            }
        }
        Ok(())
    })
}

/// Echo samples through `cat` while `bulk` (a command printing the bulk bytes)
/// runs, one after the other; the samples and the bytes moved meanwhile.
fn ssh_echoes_under(
    cat: &mut Child,
    bulk: &Command,
    samples: usize,
) -> anyhow::Result<(Vec<f64>, u64, wakeup::Wakeups)> {
    let stop = Arc::new(AtomicBool::new(false));
    let moved = Arc::new(AtomicU64::new(0));
    let bulk = process_bulk(bulk, Arc::clone(&stop), Arc::clone(&moved));
    let started = Instant::now();
    while !streaming(&moved, started, "the ssh bulk transfer")? {
        std::thread::sleep(Duration::from_millis(1));
    }
    let before = moved.load(Ordering::Relaxed);
    let probe = Probe::start();
    let busy = ssh_echoes(cat, samples);
    let machine = probe.finish();
    let during = moved.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    bulk.join()
        .map_err(|_| anyhow::anyhow!("the ssh bulk thread panicked"))??;
    Ok((micros(&busy?), during, machine))
}

fn ssh_run(ctx: &Ctx, sshd: &Sshd, runs: &mut Runs) -> anyhow::Result<()> {
    let s = &ctx.settings;
    let master = Master::start(sshd)?;
    let mut cat = ssh_cat(sshd, &master.socket)?;
    ssh_echoes(&mut cat, 20)?; // warm-up
    let remote = format!("head -c {} /dev/zero", s.stream_bytes);
    for _ in 0..s.runs {
        let idle = micros(&ssh_echoes(&mut cat, s.keystroke_samples)?);
        // (b): a second channel of the master.
        let channel = sshd.ssh_mux(&master.socket, &[], &[&remote]);
        let (busy, during, machine) = ssh_echoes_under(&mut cat, &channel, s.keystroke_samples)?;
        runs.machine.push(machine);
        runs.push(&idle, &busy, during);
        // (c): a separate ssh process with a connection of its own.
        let apart = sshd.ssh(&[&remote]);
        let (beside, _, _) = ssh_echoes_under(&mut cat, &apart, s.keystroke_samples)?;
        runs.push_process(&beside);
    }
    let _ = cat.kill();
    let _ = cat.wait();
    drop(master);
    Ok(())
}

/// Measures section 7.
pub(crate) async fn run(ctx: &Ctx, r: &mut Report) -> anyhow::Result<()> {
    let s = &ctx.settings;
    println!(
        "[7] keystroke echo ({} runs × {} one-byte echoes through a terminal `cat`; bulk: \
         {} MiB jobs on the same connection)",
        s.runs,
        s.keystroke_samples,
        s.stream_bytes >> 20
    );
    let mut q = Runs::default();
    qexec_run(ctx, &mut q).await?;
    let f =
        |r: &mut Report, key: &str, what: &str, v: Vec<f64>| r.figure(key, SECTION, what, "µs", v);
    let qa50 = f(
        r,
        "keystroke.qexec.idle.p50",
        "qexec -t, idle connection, p50",
        q.idle50,
    );
    let qa99 = f(
        r,
        "keystroke.qexec.idle.p99",
        "qexec -t, idle connection, p99",
        q.idle99,
    );
    f(
        r,
        "keystroke.qexec.bulk.p50",
        "qexec -t, bulk job on the same connection, p50",
        q.bulk50,
    );
    let qb99 = f(
        r,
        "keystroke.qexec.bulk.p99",
        "qexec -t, bulk job on the same connection, p99",
        q.bulk99,
    );
    f(
        r,
        "keystroke.qexec.apart.p50",
        "qexec -t, bulk job on a second connection (control), p50",
        q.apart50,
    );
    let qc99 = f(
        r,
        "keystroke.qexec.apart.p99",
        "qexec -t, bulk job on a second connection (control), p99",
        q.apart99,
    );
    f(
        r,
        "keystroke.qexec.process.p50",
        "qexec -t, bulk from another qexec process (c), p50",
        q.process50,
    );
    let qp99 = f(
        r,
        "keystroke.qexec.process.p99",
        "qexec -t, bulk from another qexec process (c), p99",
        q.process99,
    );
    r.ratio(
        "keystroke.qexec.same_over_apart_p99",
        "qexec p99 with bulk on the same connection / on a second one",
        qb99 / qc99,
        "×",
        None,
    );
    r.ratio(
        "keystroke.qexec.bulk_over_idle_p99",
        "qexec p99 with bulk / idle",
        qb99 / qa99,
        "×",
        Some(Goal::AtMost(2.0)),
    );
    r.note(format!(
        "section 7: qexec bulk jobs moved {} MiB while (b) was measured (all runs)",
        q.bulk_bytes >> 20
    ));
    machine_rows(r, "qexec", q.machine);
    let Some(sshd) = &ctx.sshd else {
        r.note("section 7: no OpenSSH server, so no ssh figures and no ratios");
        return Ok(());
    };
    let mut o = Runs::default();
    tokio::task::block_in_place(|| ssh_run(ctx, sshd, &mut o))?;
    let sa50 = f(
        r,
        "keystroke.ssh.idle.p50",
        "ssh -tt (ControlMaster), idle, p50",
        o.idle50,
    );
    f(
        r,
        "keystroke.ssh.idle.p99",
        "ssh -tt (ControlMaster), idle, p99",
        o.idle99,
    );
    f(
        r,
        "keystroke.ssh.bulk.p50",
        "ssh -tt, bulk in a second channel of the master, p50",
        o.bulk50,
    );
    let sb99 = f(
        r,
        "keystroke.ssh.bulk.p99",
        "ssh -tt, bulk in a second channel of the master, p99",
        o.bulk99,
    );
    f(
        r,
        "keystroke.ssh.process.p50",
        "ssh -tt, bulk from another ssh process (c), p50",
        o.process50,
    );
    let sp99 = f(
        r,
        "keystroke.ssh.process.p99",
        "ssh -tt, bulk from another ssh process (c), p99",
        o.process99,
    );
    r.ratio(
        "keystroke.qexec_over_ssh_process_p99",
        "qexec (c) p99 / ssh (c) p99",
        qp99 / sp99,
        "×",
        None,
    );
    r.ratio(
        "keystroke.qexec_over_ssh_bulk_p99",
        "qexec (b) p99 / ssh (b) p99",
        qb99 / sb99,
        "×",
        Some(Goal::AtMost(0.2)),
    );
    r.ratio(
        "keystroke.qexec_over_ssh_idle_p50",
        "qexec (a) p50 / ssh (a) p50",
        qa50 / sa50,
        "×",
        Some(Goal::AtMost(1.0)),
    );
    r.note(format!(
        "section 7: ssh bulk channels moved {} MiB while (b) was measured (all runs)",
        o.bulk_bytes >> 20
    ));
    machine_rows(r, "ssh", o.machine);
    Ok(())
}

/// The wake-up probe's rows for `who`'s (b).
fn machine_rows(r: &mut Report, who: &str, m: wakeup::Runs) {
    r.figure(
        &format!("keystroke.{who}.bulk.wakeup_p99"),
        SECTION,
        format!("wake-up probe (1 ms sleeps) lateness during {who} (b), p99"),
        "µs",
        m.p99,
    );
    r.figure(
        &format!("keystroke.{who}.bulk.wakeup_max"),
        SECTION,
        format!("wake-up probe lateness during {who} (b), max"),
        "µs",
        m.max,
    );
    r.note(format!(
        "section 7: the kernel reported {} MiB of free memory to the hypervisor during \
         {who} (b) (all runs)",
        m.reported_mib
    ));
}
