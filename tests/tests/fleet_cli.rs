//! `qexec run` fanned out over several real `qexecd` (issue 20): a group of
//! config.toml, `--hosts`, `--hosts-file`; whole prefixed lines, `--json` with the
//! host, the summary, the exit rule, a server killed mid-run, an unreachable host,
//! Ctrl-C stopping every job; commands that work on one server refuse a group.
//!
//! Each server is a `qexecd` child with its own PKI (`Daemon`); the config.toml the
//! tests write names each with its own CA, certificate and key. The config dir's
//! default identity (`ca.pem`, `client.pem`, `client-key.pem`) is a copy of the
//! first server's, so `--hosts 127.0.0.1:PORT` (default credentials) reaches it.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use anyhow::{Context as _, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use qexec_protocol::{JobId, JobState, StopReason};
use qexec_tests::daemon::Daemon;
use qexec_tests::qexec_bin;
use serde_json::Value;

type Result = anyhow::Result<()>;

/// Longest wait for any CLI run.
const WAIT: Duration = Duration::from_secs(120);

/// Servers that run jobs unsandboxed, as root: the job can see its cgroup's path
/// (which names its server), and nothing here needs the sandbox.
const ARGS: &[&str] = &["--no-isolation", "--insecure-root-jobs"];

/// `n` servers `h1`…`hN` and a config dir naming them, group `all`.
struct Fleet {
    daemons: Vec<Daemon>,
    dir: tempfile::TempDir,
}

impl Fleet {
    async fn start(name: &str, n: usize) -> anyhow::Result<Self> {
        let mut daemons = Vec::new();
        for i in 1..=n {
            daemons.push(Daemon::start(&format!("{name}-h{i}"), ARGS).await?);
        }
        let dir = tempfile::Builder::new()
            .prefix("fleet-cli")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
        let mut toml = String::new();
        for (i, d) in daemons.iter().enumerate() {
            let pki = d.pki_dir();
            toml.push_str(&format!(
                "[servers.h{}]\naddr = \"{}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                i + 1,
                d.addr(),
                pki.join("ca.pem").display(),
                pki.join("client.pem").display(),
                pki.join("client-key.pem").display(),
            ));
        }
        let names: Vec<String> = (1..=n).map(|i| format!("\"h{i}\"")).collect();
        toml.push_str(&format!("[groups]\nall = [{}]\n", names.join(", ")));
        std::fs::write(dir.path().join("config.toml"), toml)?;
        for f in ["ca.pem", "client.pem", "client-key.pem"] {
            std::fs::copy(daemons[0].pki_dir().join(f), dir.path().join(f))?;
        }
        Ok(Self { daemons, dir })
    }

    /// The CLI with this config dir and no connection settings from our environment.
    fn cli(&self, args: &[&str]) -> anyhow::Result<Command> {
        cli_in(self.dir.path(), args)
    }
}

fn cli_in(dir: &Path, args: &[&str]) -> anyhow::Result<Command> {
    let mut c = Command::new(qexec_bin()?);
    c.args(args)
        .env("QEXEC_CONFIG_DIR", dir)
        .env("NO_COLOR", "1");
    for v in [
        "QEXEC_SERVER",
        "QEXEC_ADDR",
        "QEXEC_CA",
        "QEXEC_CERT",
        "QEXEC_KEY",
        "QEXEC_CONNECT_TIMEOUT",
    ] {
        c.env_remove(v);
    }
    Ok(c)
}

/// Runs a command to its end (bounded).
async fn output(mut c: Command) -> anyhow::Result<Output> {
    c.stdin(Stdio::null());
    let run = tokio::task::spawn_blocking(move || c.output());
    Ok(tokio::time::timeout(WAIT, run)
        .await
        .context("the CLI did not exit")???)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The `--json` lines of stdout.
fn json_lines(out: &Output) -> anyhow::Result<Vec<Value>> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l:?}")))
        .collect()
}

/// The summary table (the lines of stderr from its header on), as host → row cells.
fn summary(stderr: &str) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let table = stderr
        .find("HOST ")
        .map(|at| &stderr[at..])
        .with_context(|| format!("no summary in {stderr:?}"))?;
    let mut rows = BTreeMap::new();
    for line in table.lines().skip(1) {
        let cells: Vec<String> = line
            .split("  ")
            .filter(|c| !c.is_empty())
            .map(|c| c.trim().to_owned())
            .collect();
        rows.insert(cells[0].clone(), cells);
    }
    Ok(rows)
}

/// A loopback UDP port nothing listens on.
fn closed_port() -> anyhow::Result<u16> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A job that prints `lines` numbered lines (long enough to need several chunks),
/// one line on stderr, then `tail` with no newline; exits 3 on servers whose
/// cgroup subtree contains `fail_on`.
fn chatty(lines: u32, fail_on: &str) -> String {
    format!(
        "i=0; while [ $i -lt {lines} ]; do echo \"line $i: the quick brown fox jumps over the lazy dog\"; \
         i=$((i+1)); done; echo oops >&2; printf tail; \
         if grep -q '{fail_on}' /proc/self/cgroup; then exit 3; fi"
    )
}

#[tokio::test]
async fn a_group_runs_on_every_host_in_whole_prefixed_lines_with_a_summary() -> Result {
    let fleet = Fleet::start("fleet-group", 4).await?;
    let out = output(fleet.cli(&[
        "-s",
        "all",
        "run",
        "--",
        "sh",
        "-c",
        &chatty(2000, "none-such"),
    ])?)
    .await?;
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    ensure!(out.status.code() == Some(0), "{:?}\n{stderr}", out.status);
    // Every line is one host's whole line: `hN | line K: …`, in order per host.
    let mut next: BTreeMap<String, u32> = BTreeMap::new();
    let mut tails = 0;
    for line in stdout.lines() {
        let (host, rest) = line
            .split_once(" | ")
            .with_context(|| format!("no prefix: {line:?}"))?;
        ensure!(["h1", "h2", "h3", "h4"].contains(&host), "{line:?}");
        let n = next.entry(host.to_owned()).or_default();
        if rest == "tail" {
            ensure!(*n == 2000, "{host}: tail after {n} lines");
            tails += 1;
            continue;
        }
        ensure!(
            rest == format!("line {n}: the quick brown fox jumps over the lazy dog"),
            "{host}: expected line {n}, got {rest:?}"
        );
        *n += 1;
    }
    ensure!(tails == 4 && next.values().all(|&n| n == 2000), "{next:?}");
    // stderr: each host's line, prefixed; then the table.
    for h in ["h1", "h2", "h3", "h4"] {
        ensure!(stderr.contains(&format!("{h} | oops\n")), "{stderr}");
    }
    let rows = summary(&stderr)?;
    ensure!(rows.len() == 4, "{rows:?}");
    for (host, cells) in &rows {
        // HOST JOB EXIT TIME STATE
        ensure!(cells.len() == 5, "{host}: {cells:?}");
        ensure!(
            cells[1].len() == 8 && cells[2] == "0" && cells[4] == "exited 0",
            "{cells:?}"
        );
    }
    // `list` over the group: one table, a HOST column, each host's job.
    let out = output(fleet.cli(&["-s", "all", "list"])?).await?;
    let table = text(&out.stdout);
    ensure!(out.status.code() == Some(0), "{}", text(&out.stderr));
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    ensure!(
        header.starts_with("HOST  ID  ") && header.contains("COMMAND"),
        "{table}"
    );
    let mut listed: Vec<(&str, &str)> = lines
        .map(|l| {
            let mut cells = l.split_whitespace();
            (cells.next().unwrap_or(""), cells.next().unwrap_or(""))
        })
        .collect();
    listed.sort_unstable();
    let want: Vec<(&str, &str)> = ["h1", "h2", "h3", "h4"]
        .iter()
        .map(|h| (*h, rows[*h][1].as_str()))
        .collect();
    ensure!(listed == want, "{table}");
    let out = output(fleet.cli(&["-s", "all", "--json", "list"])?).await?;
    let jobs: Value = serde_json::from_slice(&out.stdout)?;
    let jobs = jobs.as_array().context("an array")?;
    ensure!(jobs.len() == 4, "{jobs:?}");
    for j in jobs {
        let host = j["host"].as_str().context("host")?;
        ensure!(
            j["id"]
                .as_str()
                .is_some_and(|id| id.starts_with(&rows[host][1])),
            "{j}"
        );
        ensure!(j["state"] == "exited" && j["exit_code"] == 0, "{j}");
    }
    Ok(())
}

#[tokio::test]
async fn json_hosts_file_and_the_exit_rule() -> Result {
    let fleet = Fleet::start("fleet-json", 4).await?;
    // A hosts file: comments, blank lines, names of config.toml and HOST:PORT (the
    // default credentials: those of h1).
    let file = fleet.dir.path().join("hosts");
    std::fs::write(
        &file,
        format!(
            "# the rack\n{}   # h1 by address\n\nh2\nh3 # this one exits 3\n  h4\n",
            fleet.daemons[0].addr()
        ),
    )?;
    let h3 = fleet.daemons[2].subtree().to_owned();
    let out = output(fleet.cli(&[
        "--json",
        "--hosts-file",
        file.to_str().context("path")?,
        "run",
        "--",
        "sh",
        "-c",
        &chatty(300, &h3),
    ])?)
    .await?;
    let stderr = text(&out.stderr);
    // The rule: the highest host status (3) when every host was reached.
    ensure!(out.status.code() == Some(3), "{:?}\n{stderr}", out.status);
    ensure!(stderr.is_empty(), "stderr with --json: {stderr}");
    let events = json_lines(&out)?;
    let a1 = fleet.daemons[0].addr().to_string();
    let hosts = [a1.as_str(), "h2", "h3", "h4"];
    let mut data: BTreeMap<String, String> = BTreeMap::new();
    let mut ends: BTreeMap<String, i64> = BTreeMap::new();
    let mut started = 0;
    for e in &events[..events.len() - 1] {
        let host = e["host"].as_str().context("host")?.to_owned();
        ensure!(hosts.contains(&host.as_str()), "{e}");
        match e["event"].as_str() {
            Some("started") => started += 1,
            Some("output") if e["stream"] == "stdout" => data
                .entry(host)
                .or_default()
                .push_str(e["data"].as_str().context("data")?),
            Some("output") => ensure!(e["data"] == "oops\n", "{e}"),
            Some("end") => {
                ends.insert(
                    host,
                    e["status"]["exit_code"].as_i64().context("exit_code")?,
                );
            }
            _ => anyhow::bail!("unexpected event {e}"),
        }
    }
    ensure!(started == 4, "{events:?}");
    let want: String = (0..300)
        .map(|i| format!("line {i}: the quick brown fox jumps over the lazy dog\n"))
        .collect::<String>()
        + "tail";
    for h in hosts {
        ensure!(data.get(h) == Some(&want), "{h}: output differs");
    }
    ensure!(
        ends == BTreeMap::from([
            (a1.clone(), 0),
            ("h2".into(), 0),
            ("h3".into(), 3),
            ("h4".into(), 0)
        ]),
        "{ends:?}"
    );
    let last = events.last().context("no events")?;
    ensure!(last["event"] == "summary" && last["exit"] == 3, "{last}");
    let rows = last["hosts"].as_array().context("hosts")?;
    let order: Vec<&str> = rows.iter().filter_map(|r| r["host"].as_str()).collect();
    ensure!(order == hosts, "rows in the order given: {order:?}");
    for r in rows {
        ensure!(
            r["outcome"] == "ended" && r["job"].as_str().map(str::len) == Some(32),
            "{r}"
        );
        let want = if r["host"] == "h3" { 3 } else { 0 };
        ensure!(r["exit"] == want && r["status"]["exit_code"] == want, "{r}");
    }
    Ok(())
}

#[tokio::test]
async fn an_unreachable_host_is_a_row_and_exit_255() -> Result {
    let fleet = Fleet::start("fleet-down", 2).await?;
    let dead = format!("127.0.0.1:{}", closed_port()?);
    let hosts = format!("h2,{dead},{}", fleet.daemons[0].addr());
    let out = output(fleet.cli(&["--hosts", &hosts, "run", "--", "echo", "hi"])?).await?;
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    ensure!(out.status.code() == Some(255), "{:?}\n{stderr}", out.status);
    // The others ran; the prefix is padded to the longest label.
    let a1 = fleet.daemons[0].addr().to_string();
    let w = dead.len().max(a1.len());
    let mut lines: Vec<&str> = stdout.lines().collect();
    lines.sort_unstable();
    let mut want = vec![format!("{:<w$} | hi", "h2"), format!("{a1:<w$} | hi")];
    want.sort_unstable();
    ensure!(lines == want, "{stdout:?}");
    ensure!(
        stderr.contains(&format!("qexec: {dead}: cannot reach qexecd at {dead}")),
        "{stderr}"
    );
    let rows = summary(&stderr)?;
    ensure!(rows[&dead][1] == "-" && rows[&dead][2] == "-", "{rows:?}");
    ensure!(
        rows[&dead][4].starts_with("failed: cannot reach qexecd"),
        "{rows:?}"
    );
    ensure!(
        rows["h2"][4] == "exited 0" && rows[&a1][4] == "exited 0",
        "{rows:?}"
    );
    // --parallel 1: one host after the other (each job ends before the next starts).
    let out = output(fleet.cli(&[
        "--hosts",
        "h1,h2",
        "--json",
        "run",
        "--parallel",
        "1",
        "--",
        "sh",
        "-c",
        "echo x",
    ])?)
    .await?;
    ensure!(out.status.code() == Some(0), "{}", text(&out.stderr));
    let events = json_lines(&out)?;
    let summary = events.last().context("no events")?;
    let mut spans: Vec<(u64, u64)> = summary["hosts"]
        .as_array()
        .context("hosts")?
        .iter()
        .map(|r| {
            let s = &r["status"];
            (
                s["started_at_ms"].as_u64().unwrap_or(0),
                s["ended_at_ms"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    spans.sort_unstable();
    ensure!(
        spans.len() == 2 && spans[0].1 <= spans[1].0,
        "overlap: {spans:?}"
    );
    // `list` too: the host that answers is listed, the other is an error, exit 255.
    let out = output(fleet.cli(&["--hosts", &format!("{dead},h2"), "list"])?).await?;
    let stderr = text(&out.stderr);
    ensure!(out.status.code() == Some(255), "{stderr}");
    ensure!(
        stderr.starts_with(&format!("qexec: {dead}: cannot reach qexecd")),
        "{stderr}"
    );
    let table = text(&out.stdout);
    // h2's two jobs (echo hi, echo x), nothing else.
    ensure!(
        table.lines().count() == 3 && table.lines().skip(1).all(|l| l.starts_with("h2  ")),
        "{table}"
    );
    Ok(())
}

/// Reads `--json` lines of a running CLI on a thread; each parsed line is sent on.
fn json_reader(child: &mut Child) -> anyhow::Result<Events> {
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                break;
            };
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    Ok(rx)
}

/// The `--json` events of a running CLI.
type Events = tokio::sync::mpsc::UnboundedReceiver<Value>;

/// The next event (bounded wait).
async fn next_event(rx: &mut Events) -> anyhow::Result<Value> {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .context("no event from the CLI in time")?
        .context("the CLI's stdout ended")
}

/// Waits for the child's exit (bounded); returns its code and its stderr.
async fn exit_of(mut child: Child) -> anyhow::Result<(Option<i32>, String)> {
    let done = tokio::task::spawn_blocking(move || {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        child.wait().map(|s| (s.code(), err))
    });
    Ok(tokio::time::timeout(WAIT, done)
        .await
        .context("the CLI did not exit")???)
}

#[tokio::test]
async fn a_server_killed_mid_run_fails_its_row_while_the_others_finish() -> Result {
    let mut fleet = Fleet::start("fleet-kill", 4).await?;
    // The jobs wait for a file we create once all four run.
    let gate = fleet.dir.path().join("gate");
    let script = format!(
        "echo started; while [ ! -e {} ]; do sleep 0.05; done; echo done",
        gate.display()
    );
    let mut child = fleet
        .cli(&["-s", "all", "--json", "run", "--", "sh", "-c", &script])?
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut rx = json_reader(&mut child)?;
    let mut running = 0;
    while running < 4 {
        let e = next_event(&mut rx).await?;
        if e["event"] == "output" && e["data"] == "started\n" {
            running += 1;
        }
    }
    fleet.daemons[1].stop(Signal::SIGKILL).await?;
    std::fs::write(&gate, b"")?;
    // The others end first (h2's loss is noticed by the connection's idle timeout).
    let mut order = Vec::new();
    let summary = loop {
        let e = next_event(&mut rx).await?;
        match e["event"].as_str() {
            Some("end") => order.push(format!("end {}", e["host"].as_str().unwrap_or("?"))),
            Some("error") => {
                ensure!(e["host"] == "h2", "{e}");
                order.push("error h2".to_owned());
            }
            Some("summary") => break e,
            _ => {}
        }
    };
    ensure!(order.len() == 4 && order[3] == "error h2", "{order:?}");
    let (code, stderr) = exit_of(child).await?;
    ensure!(code == Some(255), "{code:?} {stderr}");
    for r in summary["hosts"].as_array().context("hosts")? {
        if r["host"] == "h2" {
            ensure!(r["outcome"] == "failed" && r["exit"].is_null(), "{r}");
            ensure!(
                r["job"].as_str().map(str::len) == Some(32),
                "the job had started: {r}"
            );
        } else {
            ensure!(r["outcome"] == "ended" && r["exit"] == 0, "{r}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn ctrl_c_stops_the_job_on_every_host() -> Result {
    let fleet = Fleet::start("fleet-int", 4).await?;
    let mut child = fleet
        .cli(&[
            "-s",
            "all",
            "--json",
            "run",
            "--",
            "sh",
            "-c",
            "echo up; exec sleep 300",
        ])?
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut rx = json_reader(&mut child)?;
    let mut jobs: BTreeMap<String, JobId> = BTreeMap::new();
    let mut up = 0;
    while up < 4 {
        let e = next_event(&mut rx).await?;
        let host = e["host"].as_str().unwrap_or_default().to_owned();
        match e["event"].as_str() {
            Some("started") => {
                jobs.insert(host, e["job"].as_str().context("job")?.parse()?);
            }
            Some("output") if e["data"] == "up\n" => up += 1,
            _ => {}
        }
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT)?;
    let summary = loop {
        let e = next_event(&mut rx).await?;
        if e["event"] == "summary" {
            break e;
        }
    };
    let (code, stderr) = exit_of(child).await?;
    ensure!(code == Some(130), "{code:?} {stderr}");
    ensure!(summary["exit"] == 130, "{summary}");
    for r in summary["hosts"].as_array().context("hosts")? {
        ensure!(
            r["outcome"] == "ended" && r["status"]["state"] == "stopped",
            "{r}"
        );
        ensure!(r["status"]["stop_reason"] == "requested", "{r}");
    }
    // Each server says so too.
    for (i, d) in fleet.daemons.iter().enumerate() {
        let job = jobs[&format!("h{}", i + 1)];
        let status = d.client("admin").await?.status(job).await?;
        ensure!(
            matches!(
                status.state,
                JobState::Stopped {
                    reason: StopReason::Requested { .. },
                    ..
                }
            ),
            "h{}: {:?}",
            i + 1,
            status.state
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_closed_stdout_stops_every_job_and_exits_141() -> Result {
    let fleet = Fleet::start("fleet-pipe", 4).await?;
    let mut child = fleet
        .cli(&["-s", "all", "run", "--", "yes", "flood"])?
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Read one line, then close our end (as `| head -1`).
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    });
    let first = tokio::time::timeout(WAIT, first)
        .await
        .context("no output")???;
    ensure!(first.ends_with(" | flood\n"), "{first:?}");
    let (code, stderr) = exit_of(child).await?;
    ensure!(code == Some(141), "{code:?} {stderr}");
    let rows = summary(&stderr)?;
    ensure!(rows.len() == 4, "{stderr}");
    for (host, cells) in &rows {
        ensure!(cells[4].starts_with("stopped by "), "{host}: {cells:?}");
    }
    // Nothing left running anywhere (qexec waited for each stop's answer).
    let out = output(fleet.cli(&["-s", "all", "--json", "list", "--running"])?).await?;
    ensure!(text(&out.stdout).trim() == "[]", "{}", text(&out.stdout));
    Ok(())
}

#[tokio::test]
async fn commands_for_one_server_refuse_a_group_and_bad_groups_are_named() -> Result {
    let dir = tempfile::Builder::new()
        .prefix("fleet-cli")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        "[servers.a]\naddr = \"127.0.0.1:1\"\n[servers.b]\naddr = \"127.0.0.1:2\"\n\
         [groups]\nrack = [\"a\", \"b\"]\n",
    )?;
    let run = |args: &[&str]| -> anyhow::Result<(Option<i32>, String)> {
        let out = cli_in(dir.path(), args)?.stdin(Stdio::null()).output()?;
        Ok((out.status.code(), text(&out.stderr)))
    };
    let (code, err) = run(&["-s", "rack", "status", "@last"])?;
    ensure!(code == Some(255), "{err}");
    ensure!(
        err == "qexec: qexec status works on one server, and rack is a group of 2 servers \
                (a, b): name one server with -s (or --addr)\n",
        "{err}"
    );
    let (_, err) = run(&["--hosts", "a,b", "stop", "@last"])?;
    ensure!(
        err.contains("qexec stop works on one server, and --hosts gives several"),
        "{err}"
    );
    let (_, err) = run(&["-s", "rack", "run", "-i", "--", "cat"])?;
    ensure!(
        err.starts_with("qexec: -i cannot be used with several hosts: "),
        "{err}"
    );
    let (_, err) = run(&["-s", "rack", "--addr", "x", "run", "--", "true"])?;
    ensure!(
        err.starts_with("qexec: --addr (or QEXEC_ADDR) names one server"),
        "{err}"
    );
    let (_, err) = run(&["-s", "a", "run", "--parallel", "2", "--", "true"])?;
    ensure!(
        err.starts_with("qexec: --parallel works with several hosts only"),
        "{err}"
    );
    let (_, err) = run(&["--hosts", "a,a", "run", "--", "true"])?;
    ensure!(err.starts_with("qexec: host a is given twice"), "{err}");
    // A group in --hosts is its servers.
    let (_, err) = run(&["--hosts", "rack,b", "run", "--", "true"])?;
    ensure!(err.starts_with("qexec: host b is given twice"), "{err}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "# nobody\n\n")?;
    let (_, err) = run(&[
        "--hosts-file",
        empty.to_str().context("path")?,
        "run",
        "--",
        "true",
    ])?;
    ensure!(
        err.starts_with("qexec: no host given: the hosts file"),
        "{err}"
    );
    std::fs::write(&config, "[servers.a]\n[groups]\nrack = [\"a\", \"c\"]\n")?;
    let (code, err) = run(&["-s", "rack", "run", "--", "true"])?;
    ensure!(code == Some(255), "{err}");
    ensure!(
        err == format!(
            "qexec: group \"rack\" in {} names \"c\", which is not a [servers.*] table of the \
             file: add [servers.c] or fix the name\n",
            config.display()
        ),
        "{err}"
    );
    Ok(())
}
