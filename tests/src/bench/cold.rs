//! Section 1: cold CLI latency. `qexec run -- /bin/true` (a new process, a new QUIC +
//! mTLS connection, a job, its exit status back) against `ssh … /bin/true` (a new
//! OpenSSH connection) and a local `/bin/true`. Each figure is the median wall time
//! of one run of N invocations; several runs give the spread.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::report::{Goal, Report};
use super::stats::{median, millis};
use super::{Ctx, Settings};

const SECTION: &str = "1 cold CLI";

/// Wall time of each of `n` invocations of the command `make` builds (each must
/// succeed), after one warm-up (page cache, dynamic loader, sshd's first fork).
fn time_invocations(n: usize, mut make: impl FnMut() -> Command) -> anyhow::Result<Vec<Duration>> {
    let once = |cmd: &mut Command| -> anyhow::Result<Duration> {
        let t = Instant::now();
        let out = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("cannot run {cmd:?}"))?;
        let elapsed = t.elapsed();
        if !out.status.success() {
            bail!(
                "{cmd:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(elapsed)
    };
    once(&mut make())?;
    (0..n).map(|_| once(&mut make())).collect()
}

/// Medians (ms) of `runs` runs of `n` invocations each.
fn runs_of(s: &Settings, mut make: impl FnMut() -> Command) -> anyhow::Result<Vec<f64>> {
    (0..s.runs)
        .map(|_| {
            Ok(median(&millis(&time_invocations(
                s.cold_invocations,
                &mut make,
            )?)))
        })
        .collect()
}

/// Whether the default server's jobs run in a user namespace of their own: a job's
/// `/proc/self/uid_map` maps uid 0 to a non-zero host uid (spec/security.md QX-SBX-1).
fn sandbox_in_use(ctx: &Ctx) -> anyhow::Result<bool> {
    let out = ctx
        .default
        .cli(&ctx.bins.qexec)
        .args(["run", "--", "/bin/cat", "/proc/self/uid_map"])
        .stdin(Stdio::null())
        .output()
        .context("cannot run qexec")?;
    if !out.status.success() {
        bail!(
            "qexec run -- cat /proc/self/uid_map failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let map = String::from_utf8_lossy(&out.stdout);
    let host_uid = map.split_whitespace().nth(1).unwrap_or("0");
    Ok(host_uid != "0")
}

/// Measures section 1.
pub(crate) fn run(ctx: &Ctx, r: &mut Report) -> anyhow::Result<()> {
    let s = &ctx.settings;
    println!(
        "[1] cold CLI latency ({} runs × {} invocations, median per run)",
        s.runs, s.cold_invocations
    );
    let local = r.figure(
        "cold.local_true",
        SECTION,
        "local `/bin/true` (fork+exec+wait)",
        "ms",
        runs_of(s, || Command::new("/bin/true"))?,
    );
    let qexec = r.figure(
        "cold.qexec_run",
        SECTION,
        "`qexec run -- /bin/true` (new process + connection)",
        "ms",
        runs_of(s, || {
            let mut c = ctx.plain.cli(&ctx.bins.qexec);
            c.args(["run", "--", "/bin/true"]);
            c
        })?,
    );
    let sandboxed = sandbox_in_use(ctx)?;
    let default = r.figure(
        "cold.qexec_run_default",
        SECTION,
        if sandboxed {
            "`qexec run -- /bin/true`, default server (isolated + sandboxed)"
        } else {
            "`qexec run -- /bin/true`, default server (isolated; sandbox unavailable)"
        },
        "ms",
        runs_of(s, || {
            let mut c = ctx.default.cli(&ctx.bins.qexec);
            c.args(["run", "--", "/bin/true"]);
            c
        })?,
    );
    if !sandboxed {
        r.note(
            "section 1: the default qexecd did not sandbox its jobs here (no user \
             namespaces, not root, or Linux < 5.12): its row measures isolation only",
        );
    }
    r.ratio(
        "cold.qexec_over_local",
        "cold qexec run / local /bin/true",
        qexec / local,
        "×",
        None,
    );
    match &ctx.sshd {
        Some(sshd) => {
            let ssh = r.figure(
                "cold.ssh",
                SECTION,
                "`ssh … 127.0.0.1 /bin/true` (fresh OpenSSH connection)",
                "ms",
                runs_of(s, || sshd.ssh(&["/bin/true"]))?,
            );
            r.ratio(
                "cold.ssh_over_qexec",
                "cold: OpenSSH time / qexec time (qexec speed-up)",
                ssh / qexec,
                "×",
                None,
            );
            r.ratio(
                "cold.ssh_over_qexec_default",
                "cold: OpenSSH time / qexec time, default (sandboxed) server",
                ssh / default,
                "×",
                Some(Goal::AtLeast(30.0)),
            );
        }
        None => r.note("section 1: no OpenSSH server, so no ssh figure and no ratio"),
    }
    Ok(())
}
