//! `qexec kill`: send a signal to a job's main process.

use clap::Args;

use super::render::{JobJson, json_pretty, parse_signal, signal_name, state_text};
use super::{CliError, ConnArgs};
use crate::jobref::JobRef;

pub(super) const HELP: &str = "\
Sends the signal to the job's main process only (its children are not signalled; use
`qexec stop` to end the whole job). Prints the job's state after sending; with --json,
its status. Signals: a number (9) or a name (KILL, SIGKILL, term).

Examples:
  qexec kill @last
  qexec kill -s HUP 3f2a
  qexec kill -s 9 $ID";

/// Arguments of `qexec kill`.
#[derive(Debug, Args)]
pub(super) struct KillArgs {
    /// The signal: a name (TERM, SIGHUP, kill) or a number 1–64.
    #[arg(short = 's', long, value_name = "SIGNAL", default_value = "TERM", value_parser = parse_signal)]
    signal: i32,
    /// The job: its id, a unique prefix (4+ hex digits) or @last.
    job: JobRef,
}

pub(super) async fn kill(conn: &ConnArgs, json: bool, args: KillArgs) -> Result<u8, CliError> {
    let (client, job) = conn.connect_for(&args.job).await?;
    let status = client.signal(job, args.signal).await?;
    super::finish(&client).await;
    let text = if json {
        json_pretty(&JobJson::from(&status))
    } else {
        format!(
            "job {}: sent {}; {}\n",
            status.id,
            signal_name(args.signal),
            state_text(&status.state)
        )
    };
    super::print_out(&text)?;
    Ok(0)
}
