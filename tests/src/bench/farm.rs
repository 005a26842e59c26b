//! Section 10: the fuzz farm. `qexec farm` over a generated corpus (2,000 inputs, 20 of
//! them crashing; 200 and 5 in a quick run) across 4 local qexecd workers with qexecd's
//! defaults (isolation on), at most 8 jobs at once on each, the target
//! tests/farm/target.sh on stdin: execs/s, and
//! whether the farm kept exactly the crashing inputs (no more, no fewer).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context as _, ensure};

use super::Ctx;
use super::procs::Qexecd;
use super::report::{Goal, Report};

const SECTION: &str = "10 fuzz farm";

/// Local workers of the farm.
const WORKERS: usize = 4;

/// Most farm jobs at once on one worker (as the fleet row's pool: 8).
const PER_WORKER: u32 = 8;

/// The test target (markers: CRASH → SIGSEGV).
const TARGET: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/farm/target.sh");

/// The corpus: `inputs` files in 10 subdirectories, every `inputs / crashing`-th one
/// holding the crash marker. Returns the crashing inputs' bytes.
fn make_corpus(dir: &Path, inputs: usize, crashing: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let every = (inputs / crashing.max(1)).max(1);
    let mut crashes = Vec::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..inputs {
        // xorshift: varied, reproducible bytes.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut data = format!("input {i} {x:016x}").into_bytes();
        data.extend_from_slice(&x.to_le_bytes());
        if i % every == every - 1 && crashes.len() < crashing {
            data.extend_from_slice(b" CRASH");
            crashes.push(data.clone());
        }
        let sub = dir.join(format!("d{}", i % 10));
        std::fs::create_dir_all(&sub)?;
        std::fs::write(sub.join(format!("{i:05}")), &data)?;
    }
    Ok(crashes)
}

/// The SHA-256 prefixes (16 hex digits) entries are named by, computed by sha256sum.
fn entry_ids(inputs: &[Vec<u8>]) -> anyhow::Result<BTreeSet<String>> {
    use std::io::Write as _;
    let mut ids = BTreeSet::new();
    for data in inputs {
        let mut child = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("cannot run sha256sum")?;
        child.stdin.take().context("stdin")?.write_all(data)?;
        let out = child.wait_with_output()?;
        ids.insert(String::from_utf8(out.stdout)?[..16].to_owned());
    }
    Ok(ids)
}

/// Runs the section.
pub(crate) async fn run(ctx: &Ctx, r: &mut Report) -> anyhow::Result<()> {
    let s = &ctx.settings;
    println!(
        "[{SECTION}] {} inputs ({} crashing) over {WORKERS} isolated workers",
        s.farm_inputs, s.farm_crashing
    );
    let pki = ctx.pki_dir();
    let mut workers = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        workers.push(Qexecd::start(&ctx.bins.qexecd, &pki, true).await?);
    }
    let config = tempfile::tempdir()?;
    let mut toml = String::new();
    for (i, w) in workers.iter().enumerate() {
        toml.push_str(&format!(
            "[servers.w{i}]\naddr = \"{}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            w.addr,
            pki.join("ca.pem").display(),
            pki.join("client.pem").display(),
            pki.join("client-key.pem").display()
        ));
    }
    std::fs::write(config.path().join("config.toml"), toml)?;
    let names: Vec<String> = (0..WORKERS).map(|i| format!("w{i}")).collect();
    let corpus = tempfile::tempdir()?;
    let crashes = make_corpus(corpus.path(), s.farm_inputs, s.farm_crashing)?;
    let expected: BTreeSet<String> = entry_ids(&crashes)?
        .into_iter()
        .map(|id| format!("{id}-crash"))
        .collect();

    let mut rates = Vec::new();
    let mut exact = Vec::new();
    for _ in 0..s.runs {
        let out = tempfile::tempdir()?;
        let mut cmd = std::process::Command::new(&ctx.bins.qexec);
        cmd.env("QEXEC_CONFIG_DIR", config.path())
            .env_remove("QEXEC_ADDR")
            .env_remove("QEXEC_SERVER")
            .stdin(std::process::Stdio::null())
            .args(["--json", "farm", "--hosts", &names.join(",")])
            .arg("--corpus")
            .arg(corpus.path())
            .arg("--out")
            .arg(out.path())
            .args(["--timeout", "30s", "--memory", "256M", "--pids", "64"])
            .args(["--per-worker", &PER_WORKER.to_string()])
            .args(["--", "/bin/sh", TARGET]);
        let output = tokio::task::spawn_blocking(move || cmd.output()).await??;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let summary: serde_json::Value = stdout
            .lines()
            .last()
            .map(serde_json::from_str)
            .transpose()?
            .with_context(|| {
                format!(
                    "qexec farm printed no summary: {}",
                    String::from_utf8_lossy(&output.stderr)
                )
            })?;
        ensure!(
            summary["finished"].as_u64() == Some(s.farm_inputs as u64),
            "not every input ran: {summary}"
        );
        rates.push(summary["execs_per_s"].as_f64().context("no execs_per_s")?);
        let kept: BTreeSet<String> = std::fs::read_dir(out.path().join("crashes"))?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<anyhow::Result<BTreeSet<String>>>()?
            .into_iter()
            .filter(|n| !n.contains('.'))
            .collect();
        exact.push(kept == expected && output.status.code() == Some(1));
    }
    drop(workers);
    r.figure(
        "farm.execs_per_s",
        SECTION,
        format!(
            "qexec farm: {} inputs, {WORKERS} isolated workers × {PER_WORKER} jobs",
            s.farm_inputs
        ),
        "/s",
        rates,
    );
    let all_exact = exact.iter().all(|e| *e);
    r.ratio(
        "farm.found_exactly",
        format!(
            "farm found exactly the {} crashing inputs (1 yes, 0 no)",
            crashes.len()
        ),
        if all_exact { 1.0 } else { 0.0 },
        "",
        Some(Goal::AtLeast(1.0)),
    );
    r.note(format!(
        "fuzz farm: found exactly the {} crashing inputs: {} ({} of {} runs)",
        crashes.len(),
        if all_exact { "yes" } else { "no" },
        exact.iter().filter(|e| **e).count(),
        exact.len()
    ));
    Ok(())
}
