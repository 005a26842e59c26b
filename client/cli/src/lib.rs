//! The `qexec` command-line interface (the library behind the `qexec` binary; one file per
//! subcommand, pueue-style). Public so the tests can check rendering against golden
//! files; [`main`] is the entry point.

mod certs;
mod completions;
#[cfg(feature = "demo")]
mod demo;
mod fanout;
mod farm;
mod info;
mod jobref;
mod kill;
mod limits;
mod list;
mod logs;
mod man;
pub mod render;
mod run;
mod sink;
mod start;
mod status;
mod stop;
mod tty;
mod wait;

pub use info::{InfoJson, info_human};
pub use jobref::ResolveError;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use limits::LimitArgs;

use qexec_protocol::{JobId, SpawnFailure};

use qexec_client::ClientError;
use qexec_client::units::parse_duration;
use qexec_client::{Client, default_config_dir};
use qexec_client::{ClientConfig, ConfigError, ConfigFile, DEFAULT_ADDR};

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
  run, fan-out   0 if every host's job exited 0; 255 if any host failed (unreachable,
                 lost, refused); else the highest host status; 130 after Ctrl-C
  qexec start    0; 127 or 126 as for run
  qexec wait     as qexec run would exit, for the last job given
  qexec farm     0 nothing found, 1 findings kept, 2 not every input ran to an end
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
  qexec status 3f2a; qexec wait @last      a unique id prefix; your newest job
  qexec -s build list                      a named server of config.toml
  qexec -s rack1 run -- uptime             a group of config.toml: every host at once
  qexec --hosts a,b:7000 run -- uname -r   ad-hoc hosts (or --hosts-file FILE)
  qexec status $ID; qexec stop $ID --grace 2s; qexec list

Jobs: the id, a unique prefix of 4+ hex digits, or @last.";

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
    /// A named server of config.toml in the config dir (its address, CA, certificate
    /// and key; the flags below override it) [default: the file's `default`]. Give it
    /// before the command: `qexec -s build list`.
    #[arg(
        short = 's',
        long = "server",
        env = "QEXEC_SERVER",
        value_name = "NAME"
    )]
    server: Option<String>,
    /// qexecd address, HOST or HOST:PORT ([V6]:PORT for IPv6); port 7443 unless given
    /// [default: 127.0.0.1:7443].
    #[arg(long, env = "QEXEC_ADDR", global = true)]
    addr: Option<String>,
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
    /// How long to wait for qexecd to answer the handshake, e.g. 5s (a host that
    /// answers "port unreachable" fails at once).
    #[arg(long, env = "QEXEC_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration, global = true)]
    connect_timeout: Duration,
    /// Run on several hosts at once (`qexec run`, `qexec list`, `qexec farm`): names of servers (or groups)
    /// of config.toml, or HOST[:PORT] with the default CA and certificate; comma
    /// separated or the flag repeated. Replaces -s.
    #[arg(long, value_name = "HOST,…", value_delimiter = ',', global = true)]
    hosts: Vec<String>,
    /// As --hosts, one host per line of FILE (`#` starts a comment; blank lines are
    /// skipped).
    #[arg(long, value_name = "FILE", global = true)]
    hosts_file: Option<PathBuf>,
}

impl ConnArgs {
    /// The settings: a flag (or its variable) first, then the named server of
    /// config.toml, then the defaults.
    fn config(&self) -> Result<ClientConfig, CliError> {
        let dir = default_config_dir();
        let base = ClientConfig::from_pki_dir(&dir);
        let profile = match ConfigFile::load(&dir)? {
            Some(file) => file.profile(self.server.as_deref(), &dir)?,
            None => match &self.server {
                Some(name) => {
                    return Err(ConfigError::UnknownServer {
                        name: name.clone(),
                        path: dir.join(qexec_client::CONFIG_FILE),
                        known: Vec::new(),
                    }
                    .into());
                }
                None => None,
            },
        }
        .unwrap_or_default();
        Ok(self.merge(profile, base))
    }

    /// A flag (or its variable) first, then `profile`, then `base`.
    fn merge(&self, profile: qexec_client::Profile, base: ClientConfig) -> ClientConfig {
        ClientConfig {
            addr: self
                .addr
                .clone()
                .or(profile.addr)
                .unwrap_or_else(|| DEFAULT_ADDR.to_owned()),
            ca: self.ca.clone().or(profile.ca).unwrap_or(base.ca),
            cert: self.cert.clone().or(profile.cert).unwrap_or(base.cert),
            key: self.key.clone().or(profile.key).unwrap_or(base.key),
            connect_timeout: self.connect_timeout,
            request_timeout: base.request_timeout,
            idle_timeout: base.idle_timeout,
        }
    }

    async fn connect(&self) -> Result<Client, CliError> {
        Ok(Client::connect(&self.config()?).await?)
    }

    /// Connects and resolves a job reference (short id, `@last`) on that connection.
    async fn connect_for(&self, job: &jobref::JobRef) -> Result<(Client, JobId), CliError> {
        let client = self.connect().await?;
        let id = job.resolve(&client, &self.config()?.cert).await?;
        Ok((client, id))
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
    /// Send a signal to a job's main process (default SIGTERM).
    #[command(after_help = kill::HELP)]
    Kill(kill::KillArgs),
    /// Wait for jobs to end; exit with the status of the last one.
    #[command(after_help = wait::HELP)]
    Wait(wait::WaitArgs),
    /// Show a job's status.
    #[command(after_help = status::HELP)]
    Status(status::StatusArgs),
    /// Print a job's output (stdout to stdout, stderr to stderr).
    #[command(after_help = logs::HELP)]
    Logs(logs::LogsArgs),
    /// List the jobs visible to you.
    #[command(after_help = list::HELP)]
    List(list::ListArgs),
    /// Show how busy the server is: running jobs, limits, yours, CPUs, version.
    #[command(after_help = info::HELP)]
    Info(info::InfoArgs),
    /// Make or extend the PKI (CA, server and client certificates).
    #[command(subcommand)]
    Certs(certs::CertsCommand),
    /// Print a shell completion script.
    #[command(after_help = completions::HELP)]
    Completions(completions::CompletionsArgs),
    /// Write the manual pages (qexec.1, qexec-run.1, …) to a directory.
    #[command(after_help = man::HELP)]
    Man(man::ManArgs),
    /// Run a target over a corpus across workers, keep the inputs that crash, OOM or hang.
    #[command(after_help = farm::HELP)]
    Farm(farm::FarmArgs),
    /// Show the whole system with no set-up: throwaway PKI, in-process qexecd, a tour.
    #[cfg(feature = "demo")]
    #[command(after_help = demo::HELP)]
    Demo(demo::DemoArgs),
}

impl Command {
    /// `qexec NAME` for a command that talks to exactly one server, else `None`.
    fn single_server_name(&self) -> Option<&'static str> {
        Some(match self {
            Self::Start(_) => "qexec start",
            Self::Stop(_) => "qexec stop",
            Self::Kill(_) => "qexec kill",
            Self::Wait(_) => "qexec wait",
            Self::Status(_) => "qexec status",
            Self::Logs(_) => "qexec logs",
            Self::Info(_) => "qexec info",
            Self::Run(_)
            | Self::List(_)
            | Self::Farm(_)
            | Self::Certs(_)
            | Self::Completions(_)
            | Self::Man(_) => {
                return None;
            }
            #[cfg(feature = "demo")]
            Self::Demo(_) => return None,
        })
    }
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
    /// A job reference matched no job, or several.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// config.toml could not be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
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
    /// A fan-out (several hosts) could not be set up.
    #[error(transparent)]
    Fanout(#[from] fanout::FanoutError),
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

/// Longest wait for a connection's close frame to leave before the CLI exits.
pub(crate) const CLOSE_SEND_WAIT: Duration = Duration::from_millis(200);

/// Closes the connection and waits (at most [`CLOSE_SEND_WAIT`]) until the close frame
/// has left: the server then frees the connection (one of the user's connection slots,
/// `--max-connections-per-user`) at once, so a script running `qexec` in a loop is
/// never refused for connections that already exited, and a `run` job is stopped at
/// once (QX-STREAM-17), not after the grace period of a lost connection; the fan-out
/// closes each host's connection with it too. This is not a synchronisation with the
/// server: were the frame lost, its idle timeout frees the connection.
async fn finish(client: &Client) {
    client.close_and_send(CLOSE_SEND_WAIT).await;
}

/// Milliseconds since the Unix epoch, now.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Set once at start-up when `--json` was given: errors then go to stderr as JSON.
static JSON_ERRORS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// An error on stderr with `--json`: `{"error": "…", "code": "not_found"}` (one line;
/// `code` is the server's error code when the server answered with one, else `null`).
#[derive(serde::Serialize)]
struct ErrorJson<'a> {
    error: &'a str,
    code: Option<String>,
}

/// Prints one line on stderr, `qexec: …`, with every control character of it escaped
/// (server text may be in it; spec: QX-SEC-6).
fn note(text: &dyn std::fmt::Display) {
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let prefix = if colour {
        "\x1b[1;31mqexec:\x1b[0m"
    } else {
        "qexec:"
    };
    eprintln!("{prefix} {}", render::escape_str(&text.to_string()));
}

/// Prints an error: one `qexec: …` line on stderr, or with `--json` one JSON object
/// line on stderr.
fn report(e: &dyn std::fmt::Display) {
    report_with_code(e, None);
}

fn report_with_code(e: &dyn std::fmt::Display, code: Option<qexec_protocol::ErrorCode>) {
    if JSON_ERRORS.load(std::sync::atomic::Ordering::Relaxed) {
        let text = e.to_string();
        let line = render::json_line(&ErrorJson {
            error: &text,
            code: code.map(|c| c.name().to_owned()),
        });
        let _ = std::io::stderr().write_all(line.as_bytes());
    } else {
        note(e);
    }
}

/// A clap error as the documented one line: `qexec: unexpected argument '--x' found
/// (see `qexec run --help`)`.
fn usage_line(e: &clap::Error) -> String {
    let rendered = e.render().to_string();
    let first = rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // The subcommand the user typed (its help has the examples), else the top level.
    let command = <Cli as clap::CommandFactory>::command();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut usage = "qexec".to_owned();
    if let Some(sub) = args
        .iter()
        .take_while(|a| *a != "--")
        .find_map(|a| command.find_subcommand(a))
    {
        usage = format!("qexec {}", sub.get_name());
    }
    format!("{first} (see `{usage} --help`)")
}

/// Runs the CLI with the process arguments and returns its exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            if !e.use_stderr() {
                // Help and version. Printing them to a closed stdout is not worth a
                // second error.
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            if std::env::args_os().any(|a| a == "--json") {
                JSON_ERRORS.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            report(&usage_line(&e));
            return ExitCode::from(EXIT_QEXEC_ERROR);
        }
    };
    JSON_ERRORS.store(cli.json, std::sync::atomic::Ordering::Relaxed);
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
            let code = match &e {
                CliError::Client(c) => c.code(),
                _ => None,
            };
            report_with_code(&e, code);
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
    // A group or --hosts selects several servers: `run` fans out, the others refuse.
    // (Only for commands that connect: a broken config.toml must not stop `certs`.)
    let single = command.single_server_name();
    let fans_out = if single.is_some() || matches!(command, Command::Run(_) | Command::List(_)) {
        fanout::fans_out(&conn)?
    } else {
        false
    };
    if let Some(what) = single
        && fans_out
    {
        return Err(fanout::refuse(&conn, what));
    }
    match command {
        Command::Run(args) if fans_out => fanout::run(&conn, json, args).await,
        Command::Run(args) => {
            fanout::check_single(&args.fanout)?;
            run::run(&conn, json, args).await
        }
        Command::Start(args) => start::start(&conn, json, args).await,
        Command::Stop(args) => stop::stop(&conn, json, args).await,
        Command::Kill(args) => kill::kill(&conn, json, args).await,
        Command::Wait(args) => wait::wait(&conn, json, args).await,
        Command::Status(args) => status::status(&conn, json, args).await,
        Command::Logs(args) => logs::logs(&conn, json, args).await,
        Command::List(args) if fans_out => fanout::list(&conn, json, args).await,
        Command::List(args) => list::list(&conn, json, args).await,
        Command::Info(args) => info::info(&conn, json, args).await,
        Command::Certs(cmd) => certs::certs(json, cmd),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => man::man(args),
        Command::Farm(args) => farm::farm(&conn, json, args).await,
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
