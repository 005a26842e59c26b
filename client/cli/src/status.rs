//! `qexec status`: one job's status.

use clap::Args;

use crate::jobref::JobRef;

use super::render::{JobJson, json_pretty, status_human};
use super::{CliError, ConnArgs};

pub(super) const HELP: &str = "\
Human output: one `key value` line each (job, command, owner, state, pid, started,
ended/ran or running, output, limits, usage). With --json: the job's status object.

Examples:
  qexec status $ID
  qexec status 3f2a                 # any unique prefix of 4+ hex digits
  qexec status @last                # your newest job
  qexec status --json $ID | jq .exit_code";

/// Arguments of `qexec status`.
#[derive(Debug, Args)]
pub(super) struct StatusArgs {
    /// The job: its id, a unique prefix (4+ hex digits) or @last.
    job: JobRef,
}

pub(super) async fn status(conn: &ConnArgs, json: bool, args: StatusArgs) -> Result<u8, CliError> {
    let (client, job) = conn.connect_for(&args.job).await?;
    let status = client.status(job).await?;
    super::finish(&client).await;
    let text = if json {
        json_pretty(&JobJson::from(&status))
    } else {
        let mut text = status_human(&status, super::now_ms());
        if super::stdout_colour() {
            text = super::render::colour_state(&text);
        }
        text
    };
    super::print_out(&text)?;
    Ok(0)
}
