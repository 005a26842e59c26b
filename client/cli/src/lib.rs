//! The `qexec` command-line interface (the library behind the `qexec` binary; one file per
//! subcommand, pueue-style). Public so the tests can check rendering against golden
//! files; [`main`] is the entry point.

mod certs;
mod completions;
#[cfg(feature = "demo")]
mod demo;
mod limits;
mod list;
mod logs;
pub mod render;
mod run;
mod sink;
mod start;
mod status;
mod stop;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use limits::LimitArgs;

use qexec_protocol::SpawnFailure;

use qexec_client::ClientError;
use qexec_client::units::parse_duration;
use qexec_client::{Client, default_config_dir};
use qexec_client::{ClientConfig, DEFAULT_ADDR};

/// Exit status of qexec's own failures (connection, TLS, usage, server errors), as
/// ssh uses 255. A job's own codes pass through `run` unchanged.
pub const EXIT_QEXEC_ERROR: u8 = 255;
/// Exit status of `run` when the program was not found (shell convention).
pub const EXIT_NOT_FOUND: u8 = 127;
/// Exit status of `run` when the program could not be executed (shell convention).
pub const EXIT_NOT_EXECUTABLE: u8 = 126;

const EXIT_HELP: &str = "\
Exit status:
  qexec run      the job's exit code; 128+N if the job was killed by signal N;
                 127 if the program was not found, 126 if it could not be executed
  other commands 0 on success
  255            a failure of qexec itself: usage, connection, TLS, or an error
                 answer from the server (one line on stderr says what and how to fix it)";

const MAIN_EXAMPLES: &str = "\
Examples:
  qexec demo                               try everything with no set-up
  qexec certs init                         make a CA and certificates in ~/.config/qexec
  qexec run -- uname -a                    run a command remotely, stream its output
  echo hi | qexec run -i -- cat            forward stdin (EOF included)
  qexec run --cpu 0.5 --memory 256M --timeout 30s -- make -j4
  ID=$(qexec start -- sleep 60)            start in the background
  qexec logs -f $ID                        follow its output
  qexec status $ID; qexec stop $ID --grace 2s; qexec list";

/// qexec: run commands on remote Linux machines, fast (QUIC + mutual TLS).
#[derive(Debug, Parser)]
#[command(
    name = "qexec",
    version,
    after_help = format!("{MAIN_EXAMPLES}\n\n{EXIT_HELP}"),
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    conn: ConnArgs,

    /// Print machine-readable JSON instead of text (stable field names; see CLI.md).
    #[arg(long, global = true)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

/// Where qexecd is and who we are.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection")]
struct ConnArgs {
    /// qexecd address, HOST:PORT ([V6]:PORT for IPv6).
    #[arg(long, env = "QEXEC_ADDR", default_value = DEFAULT_ADDR, global = true)]
    addr: String,
    /// CA certificate the server's certificate must be signed by [default: ca.pem in
    /// the config dir, $QEXEC_CONFIG_DIR or ~/.config/qexec].
    #[arg(long, env = "QEXEC_CA", global = true)]
    ca: Option<PathBuf>,
    /// Our client certificate [default: client.pem in the config dir].
    #[arg(long, env = "QEXEC_CERT", global = true)]
    cert: Option<PathBuf>,
    /// Our client private key [default: client-key.pem in the config dir].
    #[arg(long, env = "QEXEC_KEY", global = true)]
    key: Option<PathBuf>,
    /// How long to wait for qexecd to answer the handshake, e.g. 5s.
    #[arg(long, env = "QEXEC_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration, global = true)]
    connect_timeout: Duration,
}

impl ConnArgs {
    fn config(&self) -> ClientConfig {
        let base = ClientConfig::from_pki_dir(&default_config_dir());
        ClientConfig {
            addr: self.addr.clone(),
            ca: self.ca.clone().unwrap_or(base.ca),
            cert: self.cert.clone().unwrap_or(base.cert),
            key: self.key.clone().unwrap_or(base.key),
            connect_timeout: self.connect_timeout,
            request_timeout: base.request_timeout,
        }
    }

    async fn connect(&self) -> Result<Client, CliError> {
        Ok(Client::connect(&self.config()).await?)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a command remotely: stream its output, exit with its exit code.
    #[command(after_help = run::HELP)]
    Run(run::RunArgs),
    /// Start a command remotely in the background and print its job id.
    #[command(after_help = start::HELP)]
    Start(start::StartArgs),
    /// Stop a job: SIGTERM, a grace period, then SIGKILL.
    #[command(after_help = stop::HELP)]
    Stop(stop::StopArgs),
    /// Show a job's status.
    #[command(after_help = status::HELP)]
    Status(status::StatusArgs),
    /// Print a job's output (stdout to stdout, stderr to stderr).
    #[command(after_help = logs::HELP)]
    Logs(logs::LogsArgs),
    /// List the jobs visible to you.
    #[command(after_help = list::HELP)]
    List(list::ListArgs),
    /// Make or extend the PKI (CA, server and client certificates).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Print a shell completion script.
    #[command(after_help = completions::HELP)]
    Completions(completions::CompletionsArgs),
    /// Show the whole system with no set-up: throwaway PKI, in-process qexecd, a tour.
    #[cfg(feature = "demo")]
    #[command(after_help = demo::HELP)]
    Demo(demo::DemoArgs),
}

/// A failure of the CLI; printed as one line `qexec: …`, exit status 255.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The client library failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A limit is above what the server allows.
    #[error(
        "{flag} {value} is above the server maximum ({max}): ask for less, or raise qexecd's maximum"
    )]
    LimitAboveMax {
        /// The flag.
        flag: &'static str,
        /// What the user typed.
        value: String,
        /// The server's maximum (or its whole message when it has no number).
        max: String,
    },
    /// A PKI operation failed.
    #[error(transparent)]
    Pki(#[from] qexec_tls::PkiError),
    /// Arguments that clap could not check.
    #[error("{reason} (see --help)")]
    Usage {
        /// What is wrong.
        reason: String,
    },
    /// Writing our own output failed.
    #[error("cannot write to {what}: {source}")]
    Output {
        /// stdout or stderr.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// Reading local stdin failed.
    #[error("cannot read standard input: {source}")]
    Stdin {
        /// The OS error.
        source: std::io::Error,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {source}")]
    Runtime {
        /// The OS error.
        source: std::io::Error,
    },
    /// The demo could not run.
    #[error("demo: {reason}")]
    Demo {
        /// What failed.
        reason: String,
    },
}

/// Exit status for a job that could not start.
fn spawn_exit(failure: SpawnFailure) -> u8 {
    match failure {
        SpawnFailure::NotFound => EXIT_NOT_FOUND,
        SpawnFailure::PermissionDenied | SpawnFailure::NotExecutable => EXIT_NOT_EXECUTABLE,
        _ => EXIT_QEXEC_ERROR,
    }
}

/// True when text to stdout may use colour (a terminal and no `NO_COLOR`).
fn stdout_colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Writes all of `text` to stdout and flushes.
fn print_out(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| CliError::Output {
            what: "stdout",
            source,
        })
}

/// Closes the connection and lets its driver send the close frame before we exit.
async fn finish(client: &Client) {
    client.close();
    // The close frame leaves when the connection's driver task next runs; on this
    // single-threaded runtime, yielding lets it run. This is not a synchronisation
    // with the server: if the frame were lost, the server's idle timeout frees the
    // connection (and `run` jobs were stopped by then anyway).
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Prints an error as one line on stderr.
fn report(e: &dyn std::fmt::Display) {
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let prefix = if colour {
        "\x1b[1;31mqexec:\x1b[0m"
    } else {
        "qexec:"
    };
    eprintln!("{prefix} {e}");
}

/// Runs the CLI with the process arguments and returns its exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let usage_error = e.use_stderr();
            // Printing help to a closed stdout is not worth a second error.
            let _ = e.print();
            return if usage_error {
                ExitCode::from(EXIT_QEXEC_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    // The CLI talks to one server at a time: one thread is plenty and starts fastest
    // (cold `qexec run` latency is a headline figure). The demo also hosts qexecd.
    #[cfg(feature = "demo")]
    let hosts_qexecd = matches!(cli.command, Command::Demo(_));
    #[cfg(not(feature = "demo"))]
    let hosts_qexecd = false;
    let mut builder = if hosts_qexecd {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(source) => {
            report(&CliError::Runtime { source });
            return ExitCode::from(EXIT_QEXEC_ERROR);
        }
    };
    let code = match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            EXIT_QEXEC_ERROR
        }
    };
    // A blocking read of local stdin (run -i) may still be parked in the runtime's
    // blocking pool; do not wait for it.
    runtime.shutdown_background();
    ExitCode::from(code)
}

async fn dispatch(cli: Cli) -> Result<u8, CliError> {
    let Cli {
        conn,
        json,
        command,
    } = cli;
    match command {
        Command::Run(args) => run::run(&conn, json, args).await,
        Command::Start(args) => start::start(&conn, json, args).await,
        Command::Stop(args) => stop::stop(&conn, json, args).await,
        Command::Status(args) => status::status(&conn, json, args).await,
        Command::Logs(args) => logs::logs(&conn, json, args).await,
        Command::List(args) => list::list(&conn, json, args).await,
        Command::Certs(cmd) => certs::certs(json, cmd),
        Command::Completions(args) => completions::completions(args),
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::demo(args).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn limits_parse_from_human_units() {
        let cli = Cli::try_parse_from([
            "qexec",
            "run",
            "--cpu",
            "0.5",
            "--memory",
            "256M",
            "--io-read",
            "10M",
            "--pids",
            "64",
            "--timeout",
            "30s",
            "--",
            "true",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run")
        };
        let req = args.limits.request(&args.command, false).unwrap();
        assert_eq!(req.limits.cpu_millis, Some(500));
        assert_eq!(req.limits.memory_bytes, Some(256 << 20));
        assert_eq!(req.limits.io_read_bps, Some(10 << 20));
        assert_eq!(req.limits.pids, Some(64));
        assert_eq!(req.timeout_ms, Some(30_000));
        assert_eq!(req.argv, vec![b"true".to_vec()]);
    }
}
