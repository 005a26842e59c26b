//! `qexec demo`: the whole system with no set-up — a throwaway PKI, qexecd in this
//! process on 127.0.0.1 (random port), and a tour over real QUIC + mTLS.

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use clap::Args;

use qexec_protocol::{JobId, Limits, OutputStream, ResourceUsage, StartRequest};
use qexec_server::local::{LocalOptions, LocalServer};
use qexec_tls as pki;

use super::render::{command_text, list_human, state_text, status_human};
use super::{CliError, report};
use qexec_client::units::format_cpu;
use qexec_client::{Client, ClientConfig, ClientError, OutputEvent, OutputSubscription};

pub(super) const HELP: &str = "\
Makes a CA and certificates in a temporary directory, starts qexecd inside this process
on 127.0.0.1 (a random port), and talks to it over real QUIC with mutual TLS, exactly as
`qexec` talks to a remote qexecd. Everything is removed afterwards.

Without a command: a tour — a job followed live by two followers (one of them a viewer
identity on its own connection), its status, a stop, a job with resource limits (when
this host allows them: they need root and cgroups; otherwise the demo says why), and the
job list. With a command: runs it like `qexec run` and exits with its status.

Examples:
  qexec demo
  qexec demo -- uname -a";

/// Arguments of `qexec demo`.
#[derive(Debug, Args)]
pub(super) struct DemoArgs {
    /// A command to run instead of the tour, after `--`.
    #[arg(trailing_var_arg = true, value_name = "CMD")]
    command: Vec<OsString>,
}

fn demo_error(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Demo {
        reason: format!("{what}: {e}"),
    }
}

/// True when this process runs as root (limits and isolation need it).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn say(text: &str) -> Result<(), CliError> {
    super::print_out(text)
}

/// The in-process qexecd of the demo (the shared [`LocalServer`] harness) and whether
/// it runs jobs isolated; shut down by [`Demo::close`].
struct Demo {
    local: LocalServer,
    addr: SocketAddr,
    root: bool,
}

impl Demo {
    async fn start() -> Result<Self, CliError> {
        let client_name = pki::local_user_name()
            .ok()
            .filter(|n| pki::valid_name(n))
            .unwrap_or_else(|| "demo".to_owned());
        let options = LocalOptions {
            client_name,
            prefix: "qexec-demo".to_owned(),
        };
        let root = is_root();
        let local = LocalServer::start_with(&options, |config| config.isolation = root)
            .await
            .map_err(|e| demo_error("cannot start the in-process qexecd", e))?;
        Ok(Self {
            addr: local.addr,
            local,
            root,
        })
    }

    fn client_config(&self, user: Option<&str>) -> ClientConfig {
        let base = match user {
            Some(name) => ClientConfig::for_user(self.local.pki_dir(), name),
            None => ClientConfig::from_pki_dir(self.local.pki_dir()),
        };
        base.with_addr(self.addr.to_string())
    }

    async fn connect(&self, user: Option<&str>) -> Result<Client, CliError> {
        Ok(Client::connect(&self.client_config(user)).await?)
    }

    async fn close(self) {
        // shutdown() returns once every connection closed and the accept loop ended;
        // a demo that ends cannot do better than report nothing more.
        let _ = self.local.shutdown().await;
    }
}

fn request(argv: &[&str], limits: Limits) -> StartRequest {
    StartRequest {
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: Vec::new(),
        cwd: None,
        limits,
        timeout_ms: Some(60_000),
        stdin: false,
        follow: false,
        stop_on_detach: false,
    }
}

/// Prints a subscription's output line by line with a prefix, until the job ends.
async fn follow_prefixed(mut sub: OutputSubscription, prefix: &str) -> Result<String, CliError> {
    let mut pending = Vec::new();
    loop {
        match sub.next().await? {
            Some(OutputEvent::Data { data, .. }) => {
                pending.extend_from_slice(&data);
                while let Some(nl) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=nl).collect();
                    say(&format!("   {prefix} {}", String::from_utf8_lossy(&line)))?;
                }
            }
            Some(OutputEvent::End(status)) => {
                if !pending.is_empty() {
                    say(&format!(
                        "   {prefix} {}\n",
                        String::from_utf8_lossy(&pending)
                    ))?;
                }
                return Ok(state_text(&status.state));
            }
            None => return Ok("ended".to_owned()),
        }
    }
}

fn show_status(text: &str) -> Result<(), CliError> {
    for line in text.lines() {
        say(&format!("   {line}\n"))?;
    }
    Ok(())
}

async fn tour(demo: &Demo) -> Result<(), CliError> {
    let admin = demo.connect(None).await?;
    let viewer = demo.connect(Some("auditor")).await?;

    say("\n1. A job with output, followed live by two followers\n")?;
    let script = "for i in 1 2 3 4; do echo tick $i; sleep 0.3; done; echo bye >&2";
    let argv = ["sh", "-c", script];
    say(&format!(
        "   follower 1, this connection (role admin):  $ qexec run -- {}\n   \
         follower 2, its own connection (role viewer): $ qexec --cert users/auditor.pem logs -f ID\n",
        command_text(&argv.map(|a| a.as_bytes().to_vec()))
    ))?;
    let mut req = request(&argv, Limits::default());
    req.follow = true;
    let mut started = admin.start(req).await?;
    let job = started.job;
    let first = started.output.take().ok_or_else(|| ClientError::Protocol {
        addr: demo.addr.to_string(),
        reason: "no output stream for a followed start".into(),
    })?;
    let second = viewer.attach(job, 0).await?;
    let (a, b) = tokio::join!(
        follow_prefixed(first, "[follower 1]"),
        follow_prefixed(second, "[follower 2]")
    );
    say(&format!("   both followers saw the end: {} / {}\n", a?, b?))?;

    say(&format!("\n2. Its status\n   $ qexec status {job}\n"))?;
    let status = admin.status(job).await?;
    show_status(&status_human(&status, super::now_ms()))?;

    say("\n3. A stop\n   $ qexec start -- sleep 600\n")?;
    let long = admin
        .start(request(&["sleep", "600"], Limits::default()))
        .await?;
    say(&format!(
        "   {}\n   $ qexec stop --grace 1s {}\n",
        long.job, long.job
    ))?;
    let stopped = admin.stop(long.job, Some(Duration::from_secs(1))).await?;
    say(&format!(
        "   job {}: {}\n",
        stopped.id,
        state_text(&stopped.state)
    ))?;

    say("\n4. A job with resource limits\n")?;
    limited(demo, &admin).await?;

    say("\n5. The jobs, as the viewer sees them\n   $ qexec list\n")?;
    let jobs = viewer.list(false).await?;
    show_status(&list_human(&jobs, super::now_ms()))?;

    super::finish(&viewer).await;
    super::finish(&admin).await;
    Ok(())
}

async fn limited(demo: &Demo, admin: &Client) -> Result<(), CliError> {
    if !demo.root {
        say(
            "   limits are off: this demo does not run as root, and cgroup limits and namespace\n   \
             isolation need root (run `sudo qexec demo` to see them). Everything else works.\n",
        )?;
        return Ok(());
    }
    let limits = Limits {
        cpu_millis: Some(500),
        memory_bytes: Some(64 << 20),
        pids: Some(8),
        ..Limits::default()
    };
    // Twelve background processes under a limit of eight: the shell's fork failures
    // are the pids limit at work.
    let argv = [
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 0.2 & done; wait; echo all done",
    ];
    say(&format!(
        "   $ qexec run --cpu {} --memory 64M --pids 8 --timeout 10s -- {}\n",
        format_cpu(500),
        command_text(&argv.map(|a| a.as_bytes().to_vec()))
    ))?;
    let mut req = request(&argv, limits);
    req.follow = true;
    req.timeout_ms = Some(10_000);
    match admin.start(req).await {
        Ok(mut started) => {
            let job = started.job;
            if let Some(sub) = started.output.take() {
                let end = follow_prefixed(sub, "|").await?;
                say(&format!("   {end}\n"))?;
            }
            let status = admin.status(job).await?;
            if status.state.termination() != Some(qexec_protocol::Termination::Exited(0)) {
                say(
                    "   `Cannot fork` is the pids limit at work: 8 processes and threads at most,\n   \
                     so the shell could not start all twelve sleeps (and exited 2)\n",
                )?;
            }
            show_status(&status_human(&status, super::now_ms()))?;
            if status.usage == ResourceUsage::default() {
                say(
                    "   note: qexecd reported no cgroup usage for this job, so the limits above were\n   \
                     accepted but may not be enforced here (no usable cgroup controllers?)\n",
                )?;
            }
        }
        Err(e) => say(&format!(
            "   limits are not available on this host: {e}\n   (they need the cgroup controllers cpu, memory and pids)\n"
        ))?,
    }
    Ok(())
}

/// Runs one command like `qexec run` against the demo server.
async fn run_command(demo: &Demo, command: &[OsString]) -> Result<u8, CliError> {
    use std::os::unix::ffi::OsStringExt;
    let client = demo.connect(None).await?;
    let req = StartRequest {
        argv: command.iter().map(|a| a.clone().into_vec()).collect(),
        ..request(&[], Limits::default())
    };
    let mut started = match client.run(req).await {
        Ok(s) => s,
        Err(e @ ClientError::Spawn { failure, .. }) => {
            report(&e);
            return Ok(super::spawn_exit(failure));
        }
        Err(e) => return Err(e.into()),
    };
    let job: JobId = started.job;
    let mut sub = started.output.take().ok_or_else(|| ClientError::Protocol {
        addr: demo.addr.to_string(),
        reason: "no output stream for a followed start".into(),
    })?;
    let code = loop {
        match sub.next().await? {
            Some(OutputEvent::Data { stream, data, .. }) => {
                let result = match stream {
                    OutputStream::Stdout => std::io::stdout().write_all(&data),
                    OutputStream::Stderr => std::io::stderr().write_all(&data),
                };
                result.map_err(|source| CliError::Output {
                    what: "stdout/stderr",
                    source,
                })?;
            }
            Some(OutputEvent::End(status)) => break super::run::exit_status(&status),
            None => break super::EXIT_QEXEC_ERROR,
        }
    };
    let _ = std::io::stdout().flush();
    report(&format!("demo: job {job} ended; exit status {code}"));
    super::finish(&client).await;
    Ok(code)
}

fn banner(demo: &Demo, dir: &Path) -> Result<(), CliError> {
    let mode = if demo.root {
        "running as root: cgroup limits and namespace isolation are on".to_owned()
    } else {
        "not running as root: limits and isolation are off (they need root)".to_owned()
    };
    say(&format!(
        "qexec demo: an in-process qexecd listening on {} (QUIC, mutual TLS)\n  \
         throwaway PKI in {} (CA, server, client certificates)\n  {mode}\n",
        demo.addr,
        dir.display()
    ))
}

pub(super) async fn demo(args: DemoArgs) -> Result<u8, CliError> {
    let demo = Demo::start().await?;
    let result = async {
        banner(&demo, demo.local.pki_dir())?;
        if args.command.is_empty() {
            tour(&demo).await?;
            say("\ndone: qexecd shut down; the PKI and job state are removed.\n")?;
            Ok(0)
        } else {
            run_command(&demo, &args.command).await
        }
    }
    .await;
    demo.close().await;
    result
}
