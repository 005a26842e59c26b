//! `qexec-bench`: the project's performance record. qexec against OpenSSH and the
//! machine's own limits, side by side in one run (see bench/README.md).
//!
//! ```text
//! cargo build --release -p qexec-server -p qexec-cli
//! cargo run --release -p qexec-tests --bin qexec-bench -- [--quick] [--json FILE] [--markdown FILE]
//! ```

#[path = "../bench/mod.rs"]
mod bench;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, bail};
use clap::Parser;

use bench::procs::{self, Binaries, Qexecd, Sshd};
use bench::report::{Machine, Report};
use bench::{Ctx, Settings};

/// Benchmark qexec against OpenSSH and the machine: cold CLI latency, warm round trip,
/// throughput, head-of-line blocking, fan-out, server memory.
///
/// Starts its own qexecd (the `qexecd` built next to this program), and its own sshd
/// on a loopback port when OpenSSH is installed; both are stopped at the end. Needs
/// root (it reads and resets qexecd's peak RSS). A full run writes
/// bench/results/latest.{md,json} unless --markdown/--json say otherwise.
#[derive(Debug, Parser)]
#[command(after_help = "Examples:\n  \
    cargo build --release -p qexec-server -p qexec-cli\n  \
    cargo run --release -p qexec-tests --bin qexec-bench\n  \
    cargo run --release -p qexec-tests --bin qexec-bench -- --quick\n  \
    qexec-bench --only 3,4 --json /tmp/bench.json")]
struct Args {
    /// Smoke run (under a minute): one run each, small sizes. Checks that the harness
    /// works, not the numbers.
    #[arg(long)]
    quick: bool,
    /// Write the results as JSON to FILE [full run default: bench/results/latest.json].
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the markdown table to FILE [full run default: bench/results/latest.md].
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Only these sections (1 cold, 2 warm, 3 throughput, 4 head-of-line, 5 fan-out,
    /// 6 memory, 7 keystroke, 8 job records, 9 fleet, 10 fuzz farm), comma-separated. Results of a partial run are not written to
    /// bench/results/ by default.
    #[arg(long, value_delimiter = ',', value_name = "N,…")]
    only: Vec<u8>,
    /// Override the number of runs of every figure.
    #[arg(long)]
    runs: Option<usize>,
    /// Measure without OpenSSH even when it is installed.
    #[arg(long)]
    no_ssh: bool,
}

/// The results directory of the source tree this harness was built from.
fn results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/results")
}

fn write(path: &PathBuf, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    // On Ctrl-C or SIGTERM the measurement future is dropped, and with it the qexecd
    // and sshd it started (their Drop stops them): nothing is left running.
    tokio::select! {
        r = bench_main(args) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; stopped qexecd and sshd"),
        _ = term.recv() => bail!("terminated; stopped qexecd and sshd"),
    }
}

async fn bench_main(args: Args) -> anyhow::Result<()> {
    let mut settings = if args.quick {
        Settings::quick()
    } else {
        Settings::full()
    };
    if let Some(n) = args.runs {
        settings.runs = n.max(1);
    }
    let wanted = |n: u8| args.only.is_empty() || args.only.contains(&n);
    let t0 = Instant::now();

    let bins = Binaries::locate()?;
    if !is_root() {
        bail!("qexec-bench must run as root (it reads and resets qexecd's peak RSS)");
    }
    let sshd = if args.no_ssh {
        None
    } else {
        match Sshd::start() {
            Ok(s) => Some(s),
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                return Err(e.context("CI=true: OpenSSH is required for the comparison"));
            }
            Err(e) => {
                println!("OpenSSH comparison skipped: {e:#}");
                None
            }
        }
    };
    let pki = procs::make_pki()?;
    let plain = Qexecd::start(&bins.qexecd, pki.path(), false).await?;
    let default = Qexecd::start(&bins.qexecd, pki.path(), true).await?;

    let mut report = Report {
        machine: Machine {
            date_utc: procs::now_utc(),
            hostname: procs::proc_sys("/proc/sys/kernel/hostname"),
            kernel: procs::proc_sys("/proc/sys/kernel/osrelease"),
            cpu: procs::cpu_model(),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            mem_total_mib: procs::mem_total_mib(),
            load_before: procs::load_average(),
            build: if cfg!(debug_assertions) {
                "DEBUG (figures meaningless)"
            } else {
                "release"
            },
            commit: procs::source_commit(),
            mode: settings.mode,
            openssh: sshd.as_ref().map(|s| s.version.clone()).unwrap_or_default(),
            ..Machine::default()
        },
        ..Report::default()
    };
    if args.no_ssh {
        report.note("OpenSSH comparison disabled with --no-ssh");
    } else if sshd.is_none() {
        report.note("OpenSSH is not available: ssh figures and ratios are missing");
    }
    println!(
        "qexec-bench: {} mode, {} build, qexecd {} (pid {}), load average {}",
        settings.mode,
        report.machine.build,
        plain.addr,
        plain.pid(),
        report.machine.load_before
    );
    let ctx = Ctx {
        settings,
        bins,
        pki,
        plain,
        default,
        sshd,
    };

    if wanted(1) {
        tokio::task::block_in_place(|| bench::cold::run(&ctx, &mut report))?;
    }
    if wanted(2) {
        bench::warm::run(&ctx, &mut report).await?;
    }
    if wanted(3) {
        bench::throughput::run(&ctx, &mut report).await?;
    }
    if wanted(4) {
        bench::hol::run(&ctx, &mut report).await?;
    }
    if wanted(5) {
        bench::fanout::run(&ctx, &mut report).await?;
    }
    if wanted(6) {
        bench::memory::run(&ctx, &mut report).await?;
    }
    if wanted(7) {
        bench::keystroke::run(&ctx, &mut report).await?;
    }
    if wanted(8) {
        bench::records::run(&ctx, &mut report).await?;
    }
    if wanted(9) {
        bench::fleet::run(&ctx, &mut report).await?;
    }
    if wanted(10) {
        bench::farm::run(&ctx, &mut report).await?;
    }
    let log = ctx.plain.log();
    if !log.trim().is_empty() {
        report.note(format!(
            "qexecd logged during the run: {}",
            log.lines().take(3).collect::<Vec<_>>().join(" | ")
        ));
    }
    drop(ctx);

    report.machine.load_after = procs::load_average();
    report.machine.elapsed_s = t0.elapsed().as_secs_f64();
    let md = report.markdown();
    println!("\n{md}");
    let full = !args.quick && args.only.is_empty();
    let md_path = args
        .markdown
        .clone()
        .or_else(|| full.then(|| results_dir().join("latest.md")));
    let json_path = args
        .json
        .clone()
        .or_else(|| full.then(|| results_dir().join("latest.json")));
    if let Some(p) = md_path {
        write(&p, &md)?;
    }
    if let Some(p) = json_path {
        write(&p, &format!("{:#}\n", report.json()))?;
    }
    let missed = report.missed();
    if missed.is_empty() {
        println!("all targets met");
    } else {
        println!("targets missed: {}", missed.join(", "));
    }
    Ok(())
}

/// Whether we run as root (from /proc, this crate has no libc binding).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
