//! `qexec list`: the jobs visible to us.

use clap::Args;

use super::render::{JobJson, json_pretty, list_human};
use super::{CliError, ConnArgs};

pub(super) const HELP: &str = "\
Admins and viewers see every job; users see their own. Columns: ID, OWNER, STATE,
STARTED (UTC), TIME (run time so far), COMMAND. With --json: an array of status objects.

Examples:
  qexec list
  qexec list --running
  qexec list --json | jq -r '.[] | select(.state == \"running\") | .id'";

/// Arguments of `qexec list`.
#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// Only jobs that are still running.
    #[arg(long)]
    running: bool,
}

pub(super) async fn list(conn: &ConnArgs, json: bool, args: ListArgs) -> Result<u8, CliError> {
    let client = conn.connect().await?;
    let jobs = client.list(args.running).await?;
    super::finish(&client).await;
    let text = if json {
        json_pretty(&jobs.iter().map(JobJson::from).collect::<Vec<_>>())
    } else {
        let mut text = list_human(&jobs, super::now_ms());
        if super::stdout_colour() {
            text = super::render::colour_state(&text);
        }
        text
    };
    super::print_out(&text)?;
    Ok(0)
}
