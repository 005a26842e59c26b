//! `qexec start`: start a job in the background, print its id.

use std::ffi::OsString;

use clap::Args;

use super::render::{StartedJson, json_line};
use super::{CliError, ConnArgs, LimitArgs, spawn_exit};
use qexec_client::ClientError;

pub(super) const HELP: &str = "\
Prints the job id (32 hex digits) on stdout; with --json, {\"job\": ID, \"pid\": PID}.
Exit status: 0 when the job started; 127 if the program was not found, 126 if it
could not be executed (as `run`); 255 for a failure of qexec itself.
The job keeps running after qexec exits; see `qexec logs -f ID`, `qexec status ID`,
`qexec stop ID`.

Examples:
  ID=$(qexec start -- sleep 600)
  qexec start --memory 1G --timeout 1h -- ./long-batch --all";

/// Arguments of `qexec start`.
#[derive(Debug, Args)]
pub(super) struct StartArgs {
    #[command(flatten)]
    limits: LimitArgs,
    /// The program and its arguments, after `--`. Executed directly, no shell.
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    command: Vec<OsString>,
}

pub(super) async fn start(conn: &ConnArgs, json: bool, args: StartArgs) -> Result<u8, CliError> {
    let req = args.limits.request(&args.command, false)?;
    let client = conn.connect().await?;
    let started = match client.start(req).await {
        Ok(s) => s,
        Err(e @ ClientError::Spawn { failure, .. }) => {
            // The same codes as `run` (127 not found, 126 not executable).
            super::report_with_code(&e, e.code());
            super::finish(&client).await;
            return Ok(spawn_exit(failure));
        }
        Err(e) => return Err(args.limits.explain(e)),
    };
    let text = if json {
        json_line(&StartedJson {
            job: started.job.to_string(),
            pid: started.pid,
        })
    } else {
        format!("{}\n", started.job)
    };
    super::finish(&client).await;
    super::print_out(&text)?;
    Ok(0)
}
