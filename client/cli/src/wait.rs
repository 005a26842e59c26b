//! `qexec wait`: wait for jobs to end, exit with the last one's status.

use clap::Args;

use qexec_client::{Client, OutputEvent};
use qexec_protocol::{JobId, JobStatus};

use super::render::{JobJson, json_line};
use super::{CliError, ConnArgs};
use crate::jobref::JobRef;

pub(super) const HELP: &str = "\
Waits until every job given has ended, in order, and exits with the status of the last
one as `qexec run` would (its exit code, 128+N for signal N, 127/126 if it could not
start); 255 for a failure of qexec itself. Prints nothing; with --json, each job's final
status as one line of JSON.

Examples:
  qexec wait @last
  ID=$(qexec start -- make -j8); qexec wait $ID && echo built
  qexec wait 3f2a 9b1c";

/// Arguments of `qexec wait`.
#[derive(Debug, Args)]
pub(super) struct WaitArgs {
    /// The jobs: ids, unique prefixes (4+ hex digits) or @last.
    #[arg(required = true)]
    jobs: Vec<JobRef>,
}

/// The final status of `job`: at once if it ended, else when it ends (followed from the
/// end of its output, so no output is transferred).
async fn ended(client: &Client, job: JobId) -> Result<JobStatus, CliError> {
    let status = client.status(job).await?;
    if !status.state.is_running() {
        return Ok(status);
    }
    let mut sub = client.attach(job, status.output_bytes()).await?;
    loop {
        match sub.next().await? {
            Some(OutputEvent::End(status)) => return Ok(*status),
            Some(OutputEvent::Data { .. }) => {}
            None => return client.status(job).await.map_err(CliError::from),
        }
    }
}

pub(super) async fn wait(conn: &ConnArgs, json: bool, args: WaitArgs) -> Result<u8, CliError> {
    let client = conn.connect().await?;
    let cert = conn.config()?.cert;
    let mut code = 0;
    for job in &args.jobs {
        let id = job.resolve(&client, &cert).await?;
        let status = ended(&client, id).await?;
        if json {
            super::print_out(&json_line(&JobJson::from(&status)))?;
        }
        code = super::run::exit_status(&status);
    }
    super::finish(&client).await;
    Ok(code)
}
