//! `qexec stop`: stop a job (SIGTERM, grace period, SIGKILL).

use std::time::Duration;

use clap::Args;

use crate::jobref::JobRef;

use super::render::{JobJson, json_pretty, state_text};
use super::{CliError, ConnArgs};
use qexec_client::units::parse_duration;

pub(super) const HELP: &str = "\
Sends SIGTERM to every process of the job, waits the grace period, then SIGKILLs what
is left; prints the final state (with --json, the job's status). Stopping a finished
job just prints its state.

Examples:
  qexec stop 0123456789abcdef0123456789abcdef
  qexec stop --grace 500ms $ID
  qexec stop @last";

/// Arguments of `qexec stop`.
#[derive(Debug, Args)]
pub(super) struct StopArgs {
    /// The job: its id, a unique prefix (4+ hex digits) or @last.
    job: JobRef,
    /// Time between SIGTERM and SIGKILL, e.g. 5s (default: the server's).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    grace: Option<Duration>,
}

pub(super) async fn stop(conn: &ConnArgs, json: bool, args: StopArgs) -> Result<u8, CliError> {
    let (client, job) = conn.connect_for(&args.job).await?;
    let status = client.stop(job, args.grace).await?;
    super::finish(&client).await;
    let text = if json {
        json_pretty(&JobJson::from(&status))
    } else {
        format!("job {}: {}\n", status.id, state_text(&status.state))
    };
    super::print_out(&text)?;
    Ok(0)
}
