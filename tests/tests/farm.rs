//! `qexec farm` against real qexecd workers: the crashing inputs are found and kept
//! (exactly those), hangs are timeouts, `@@` mode passes any bytes, a worker killed
//! mid-run loses nothing, a target that cannot start stops the farm.
//!
//! Each test starts its qexecd (`Daemon`: own PKI, state dir, cgroup subtree, port),
//! writes a config.toml naming them, and runs the `qexec` binary. The target is
//! tests/farm/target.sh (markers: CRASH, ABORT, HANG, EXIT3, SLOW).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use qexec_tests::daemon::Daemon;
use serde_json::Value;

type Result = anyhow::Result<()>;

/// Longest wait for one event (a job to show up on a worker).
const WAIT: Duration = Duration::from_secs(30);

/// The test target.
fn target() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("farm/target.sh")
}

/// qexecd workers and a config dir naming them `w1`, `w2`, ….
struct Fleet {
    daemons: Vec<Daemon>,
    config: tempfile::TempDir,
}

impl Fleet {
    async fn start(test: &str, n: usize) -> anyhow::Result<Self> {
        let mut daemons = Vec::new();
        for i in 1..=n {
            daemons.push(Daemon::start(&format!("farm-{test}-{i}"), &[]).await?);
        }
        let config = tempfile::tempdir()?;
        let mut toml = String::new();
        for (i, d) in daemons.iter().enumerate() {
            let pki = d.pki_dir();
            toml.push_str(&format!(
                "[servers.w{}]\naddr = \"{}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\n",
                i + 1,
                d.addr(),
                pki.join("ca.pem").display(),
                pki.join("client.pem").display(),
                pki.join("client-key.pem").display(),
            ));
        }
        std::fs::write(config.path().join("config.toml"), toml)?;
        Ok(Self { daemons, config })
    }

    fn names(&self) -> String {
        (1..=self.daemons.len())
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `qexec ARGS…` with this fleet's config dir.
    fn command(&self, args: &[&str]) -> anyhow::Result<std::process::Command> {
        let mut cmd = std::process::Command::new(qexec_tests::qexec_bin()?);
        cmd.args(args)
            .env("QEXEC_CONFIG_DIR", self.config.path())
            .env_remove("QEXEC_ADDR")
            .env_remove("QEXEC_SERVER")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        Ok(cmd)
    }
}

/// What a `qexec farm` run printed and its exit status.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    async fn of(child: std::process::Child) -> anyhow::Result<Self> {
        let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
        Ok(Self {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// The `--json` lines: the findings, then the summary.
    fn json(&self) -> anyhow::Result<(Vec<Value>, Value)> {
        let mut lines: Vec<Value> = self
            .stdout
            .lines()
            .map(serde_json::from_str)
            .collect::<std::result::Result<_, _>>()
            .with_context(|| format!("stdout is not JSON lines: {self:?}"))?;
        let summary = lines.pop().context("no summary line")?;
        ensure!(summary["event"] == "summary", "last line: {summary}");
        ensure!(
            lines.iter().all(|l| l["event"] == "finding"),
            "other lines: {lines:?}"
        );
        Ok((lines, summary))
    }
}

/// First 16 hex digits of the SHA-256 of `data`, as entries are named (computed by
/// `sha256sum`, an implementation other than the farm's).
fn entry_id(data: &[u8]) -> anyhow::Result<String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(data)?;
    let out = child.wait_with_output()?;
    Ok(String::from_utf8(out.stdout)?[..16].to_owned())
}

/// The names of the files under `<out>/crashes`.
fn stored(out: &Path) -> anyhow::Result<BTreeSet<String>> {
    std::fs::read_dir(out.join("crashes"))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect()
}

/// Writes `inputs` (relative path → bytes) under a new corpus directory.
fn corpus(inputs: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    for (name, data) in inputs {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().context("parent")?)?;
        std::fs::write(path, data)?;
    }
    Ok(dir)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_farm_keeps_exactly_the_crashing_inputs() -> Result {
    let fleet = Fleet::start("exact", 4).await?;
    // 40 inputs: 7 distinct crashes (5 SIGSEGV, 2 SIGABRT) plus one copy of a crash
    // under another name, 3 hangs, 5 exit 3, 24 fine; some in subdirectories.
    let mut inputs = BTreeMap::new();
    let mut crashing = BTreeSet::new();
    for i in 0..5 {
        let data = format!("seed {i}: CRASH here\n").into_bytes();
        crashing.insert(data.clone());
        inputs.insert(format!("crash/{i}"), data);
    }
    for i in 0..2 {
        let data = format!("ABORT {i}\0\x01").into_bytes();
        crashing.insert(data.clone());
        inputs.insert(format!("abort-{i}"), data);
    }
    inputs.insert("deep/er/copy-of-crash-0".into(), inputs["crash/0"].clone());
    let mut hanging = BTreeSet::new();
    for i in 0..3 {
        let data = format!("HANG {i}").into_bytes();
        hanging.insert(data.clone());
        inputs.insert(format!("hang-{i}"), data);
    }
    for i in 0..5 {
        inputs.insert(format!("exit/{i}"), format!("EXIT3 {i}").into_bytes());
    }
    for i in 0..24 {
        inputs.insert(format!("ok/{i:02}"), vec![b'o', b'k', i as u8, 0, 0xff]);
    }
    assert_eq!(inputs.len(), 40);
    let corpus = corpus(&inputs)?;
    let out = tempfile::tempdir()?;
    let target = target();
    let run = Run::of(
        fleet
            .command(&[
                "--json",
                "farm",
                "--corpus",
                &corpus.path().to_string_lossy(),
                "--out",
                &out.path().to_string_lossy(),
                "--hosts",
                &fleet.names(),
                "--timeout",
                "2s",
                "--memory",
                "256M",
                "--pids",
                "64",
                "--",
                "/bin/sh",
                &target.to_string_lossy(),
            ])?
            .spawn()?,
    )
    .await?;
    assert_eq!(run.code, Some(1), "findings: exit 1; {run:?}");
    let (findings, summary) = run.json()?;

    // Exactly the crashing and hanging inputs are stored, each distinct input once.
    let mut expected = BTreeSet::new();
    for data in &crashing {
        let id = entry_id(data)?;
        for suffix in ["", ".out", ".json"] {
            expected.insert(format!("{id}-crash{suffix}"));
        }
    }
    for data in &hanging {
        let id = entry_id(data)?;
        for suffix in ["", ".out", ".json"] {
            expected.insert(format!("{id}-timeout{suffix}"));
        }
    }
    assert_eq!(stored(out.path())?, expected);
    for data in &crashing {
        let entry = out
            .path()
            .join("crashes")
            .join(format!("{}-crash", entry_id(data)?));
        assert_eq!(&std::fs::read(&entry)?, data);
        let meta: Value = serde_json::from_slice(&std::fs::read(entry.with_extension("json"))?)?;
        let signal = if data.starts_with(b"ABORT") {
            "SIGABRT"
        } else {
            "SIGSEGV"
        };
        assert_eq!(meta["signal"], signal, "{meta}");
        assert_eq!(meta["kind"], "crash");
        assert!(
            meta["worker"].as_str().is_some_and(|w| w.starts_with('w')),
            "{meta}"
        );
        assert_eq!(meta["job"].as_str().map(str::len), Some(32), "{meta}");
    }

    // One finding line per crashing or hanging input; the copy is not new.
    let by_input: BTreeMap<String, (String, bool)> = findings
        .iter()
        .map(|f| {
            let input = f["input"].as_str().unwrap_or_default();
            let rel = Path::new(input)
                .strip_prefix(corpus.path())
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            (
                rel,
                (
                    f["kind"].as_str().unwrap_or_default().to_owned(),
                    f["new"] == true,
                ),
            )
        })
        .collect();
    let expected_findings: BTreeSet<String> = inputs
        .iter()
        .filter(|(_, d)| crashing.contains(*d) || hanging.contains(*d))
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(
        by_input.keys().cloned().collect::<BTreeSet<_>>(),
        expected_findings
    );
    assert_eq!(findings.len(), 11);
    for i in 0..3 {
        assert_eq!(by_input[&format!("hang-{i}")].0, "timeout");
    }
    let new = findings.iter().filter(|f| f["new"] == true).count();
    assert_eq!(new, 10, "the copy of crash/0 is known: {findings:?}");

    // The summary.
    assert_eq!(summary["inputs"], 40);
    assert_eq!(summary["finished"], 40);
    let counts = &summary["counts"];
    assert_eq!(counts["crash"], 8, "{summary}");
    assert_eq!(counts["timeout"], 3, "{summary}");
    assert_eq!(counts["exit"], 5, "{summary}");
    assert_eq!(counts["ok"], 24, "{summary}");
    assert_eq!(counts["lost"], 0, "{summary}");
    assert_eq!(summary["exit_codes"]["3"], 5);
    assert_eq!(summary["new_findings"], 10);
    assert_eq!(summary["known_findings"], 1);
    assert_eq!(summary["exit"], 1);
    let workers = summary["workers"].as_array().context("workers")?;
    assert_eq!(workers.len(), 4);
    let runs: u64 = workers.iter().filter_map(|w| w["runs"].as_u64()).sum();
    assert_eq!(runs, 40, "{summary}");
    assert!(summary["execs_per_s"].as_f64().is_some_and(|r| r > 0.0));

    // The same corpus again: nothing new is stored, every finding is known.
    let again = Run::of(
        fleet
            .command(&[
                "--json",
                "farm",
                "--corpus",
                &corpus.path().to_string_lossy(),
                "--out",
                &out.path().to_string_lossy(),
                "--hosts",
                &fleet.names(),
                "--timeout",
                "2s",
                "--",
                "/bin/sh",
                &target.to_string_lossy(),
            ])?
            .spawn()?,
    )
    .await?;
    assert_eq!(again.code, Some(1), "{again:?}");
    let (_, summary) = again.json()?;
    assert_eq!(summary["new_findings"], 0, "{summary}");
    assert_eq!(summary["known_findings"], 11, "{summary}");
    assert_eq!(stored(out.path())?, expected);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn at_at_mode_gives_the_target_a_file_with_any_bytes() -> Result {
    let fleet = Fleet::start("atat", 1).await?;
    let crash: &[u8] = b"\0\nCRASH\xff\x00tail\n\n";
    let inputs: BTreeMap<String, Vec<u8>> = [
        ("bin".to_owned(), crash.to_vec()),
        ("plain".to_owned(), b"fine\0\n".to_vec()),
    ]
    .into_iter()
    .collect();
    let corpus = corpus(&inputs)?;
    let out = tempfile::tempdir()?;
    let target = target();
    // One worker, named by -s; human output.
    let run = Run::of(
        fleet
            .command(&[
                "-s",
                "w1",
                "farm",
                "--corpus",
                &corpus.path().to_string_lossy(),
                "--out",
                &out.path().to_string_lossy(),
                "--",
                "/bin/sh",
                &target.to_string_lossy(),
                "@@",
            ])?
            .spawn()?,
    )
    .await?;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(
        run.stdout
            .starts_with("farm: 2 inputs, 2 finished, 2 execs in "),
        "{run:?}"
    );
    assert!(run.stdout.contains("\n  ok 1  crash 1\n"), "{run:?}");
    assert!(run.stdout.contains("crash SIGSEGV"), "{run:?}");
    assert!(
        run.stdout
            .ends_with("exit 1: every input ran, findings kept\n"),
        "{run:?}"
    );
    let id = entry_id(crash)?;
    assert_eq!(
        stored(out.path())?,
        [
            format!("{id}-crash"),
            format!("{id}-crash.json"),
            format!("{id}-crash.out")
        ]
        .into_iter()
        .collect()
    );
    // The target printed the file it got as hex: exactly the input's bytes.
    let printed = std::fs::read_to_string(out.path().join(format!("crashes/{id}-crash.out")))?;
    let got: Vec<u8> = printed
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("not od output: {printed:?}"))?;
    assert_eq!(got, crash);
    assert_eq!(
        std::fs::read(out.path().join(format!("crashes/{id}-crash")))?,
        crash
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_run_loses_no_input() -> Result {
    let mut fleet = Fleet::start("kill", 3).await?;
    // Slow inputs (1 s each), so jobs are running on every worker when one dies.
    let inputs: BTreeMap<String, Vec<u8>> = (0..30)
        .map(|i| (format!("slow-{i:02}"), format!("SLOW {i}").into_bytes()))
        .collect();
    let corpus = corpus(&inputs)?;
    let out = tempfile::tempdir()?;
    let target = target();
    let child = fleet
        .command(&[
            "--json",
            "farm",
            "--corpus",
            &corpus.path().to_string_lossy(),
            "--out",
            &out.path().to_string_lossy(),
            "--hosts",
            &fleet.names(),
            "--timeout",
            "30s",
            "--",
            "/bin/sh",
            &target.to_string_lossy(),
        ])?
        .spawn()?;
    // Wait for jobs of the farm on w2, then kill w2 (no goodbye to the farm).
    let w2 = fleet.daemons[1].client("admin").await?;
    let deadline = Instant::now() + WAIT;
    loop {
        if !w2.list(true).await?.is_empty() {
            break;
        }
        ensure!(Instant::now() < deadline, "no farm job ever ran on w2");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(w2);
    fleet.daemons[1]
        .stop(nix::sys::signal::Signal::SIGKILL)
        .await?;
    let run = Run::of(child).await?;
    let (findings, summary) = run.json()?;
    assert!(findings.is_empty(), "{findings:?}");
    assert_eq!(run.code, Some(0), "every input ran in the end: {run:?}");
    assert_eq!(summary["finished"], 30, "{summary}");
    assert_eq!(summary["counts"]["ok"], 30, "{summary}");
    assert_eq!(summary["counts"]["lost"], 0, "{summary}");
    assert_eq!(summary["not_run"], serde_json::json!([]), "{summary}");
    let retried = summary["retried"].as_u64().unwrap_or(0);
    assert!(retried >= 1, "w2's jobs were resubmitted: {summary}");
    let workers = summary["workers"].as_array().context("workers")?;
    let w2 = workers.iter().find(|w| w["name"] == "w2").context("w2")?;
    assert_eq!(w2["lost"].as_u64(), Some(retried), "{summary}");
    // Every input has exactly one run that counted; the lost ones ran again elsewhere.
    let runs: u64 = workers.iter().filter_map(|w| w["runs"].as_u64()).sum();
    assert_eq!(runs, 30, "{summary}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_cannot_start_stops_the_farm() -> Result {
    let fleet = Fleet::start("nostart", 1).await?;
    let inputs: BTreeMap<String, Vec<u8>> =
        (0..5).map(|i| (format!("in-{i}"), vec![i as u8])).collect();
    let corpus = corpus(&inputs)?;
    let out = tempfile::tempdir()?;
    let run = Run::of(
        fleet
            .command(&[
                "--json",
                "farm",
                "--corpus",
                &corpus.path().to_string_lossy(),
                "--out",
                &out.path().to_string_lossy(),
                "--hosts",
                "w1",
                "--",
                "/nonexistent/fuzz-target",
            ])?
            .spawn()?,
    )
    .await?;
    assert_eq!(run.code, Some(2), "{run:?}");
    let (findings, summary) = run.json()?;
    assert!(findings.is_empty());
    assert!(
        summary["error"]
            .as_str()
            .is_some_and(|e| e.contains("the target could not start on w1")),
        "{summary}"
    );
    assert_eq!(
        summary["not_run"].as_array().map(Vec::len),
        Some(5),
        "{summary}"
    );
    assert_eq!(summary["finished"].as_u64().map(|f| f <= 5), Some(true));
    Ok(())
}

/// Waits until `daemon` runs at least `n` jobs (`n` = 0: none).
async fn wait_running(daemon: &Daemon, at_least: bool, n: usize) -> Result {
    let client = daemon.client("admin").await?;
    let deadline = Instant::now() + WAIT;
    loop {
        let running = client.list(true).await?.len();
        if (at_least && running >= n) || (!at_least && running == n) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{} has {running} running jobs, waited for {}{n}",
            daemon.addr(),
            if at_least { "at least " } else { "" }
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_the_running_jobs_and_prints_the_summary() -> Result {
    let fleet = Fleet::start("ctrlc", 1).await?;
    let inputs: BTreeMap<String, Vec<u8>> = (0..6)
        .map(|i| (format!("hang-{i}"), format!("HANG {i}").into_bytes()))
        .collect();
    let corpus = corpus(&inputs)?;
    let out = tempfile::tempdir()?;
    let target = target();
    let child = fleet
        .command(&[
            "-s",
            "w1",
            "--json",
            "farm",
            "--corpus",
            &corpus.path().to_string_lossy(),
            "--out",
            &out.path().to_string_lossy(),
            "--timeout",
            "5m",
            "--",
            "/bin/sh",
            &target.to_string_lossy(),
        ])?
        .spawn()?;
    wait_running(&fleet.daemons[0], true, 6).await?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id())?),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let run = Run::of(child).await?;
    assert_eq!(run.code, Some(2), "{run:?}");
    let (findings, summary) = run.json()?;
    assert!(findings.is_empty());
    assert_eq!(summary["interrupted"], true, "{summary}");
    assert_eq!(
        summary["not_run"].as_array().map(Vec::len),
        Some(6),
        "{summary}"
    );
    // The farm's jobs are stopped by the worker once the farm is gone.
    wait_running(&fleet.daemons[0], false, 0).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_reachable_worker_is_a_farm_error() -> Result {
    let mut fleet = Fleet::start("noworker", 2).await?;
    for d in &mut fleet.daemons {
        d.stop(nix::sys::signal::Signal::SIGTERM).await?;
    }
    let inputs: BTreeMap<String, Vec<u8>> = [("a".to_owned(), b"x".to_vec())].into();
    let corpus = corpus(&inputs)?;
    let out = tempfile::tempdir()?;
    let run = Run::of(
        fleet
            .command(&[
                "--connect-timeout",
                "1s",
                "farm",
                "--corpus",
                &corpus.path().to_string_lossy(),
                "--out",
                &out.path().to_string_lossy(),
                "--hosts",
                &fleet.names(),
                "--",
                "/bin/true",
            ])?
            .spawn()?,
    )
    .await?;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr
            .starts_with("qexec: no worker could be reached: w1: "),
        "{run:?}"
    );
    assert!(run.stderr.contains("; w2: "), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    Ok(())
}
