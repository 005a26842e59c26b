//! `qexec logs`: a job's output, optionally followed live.

use std::io::Write;
use std::time::Duration;

use clap::Args;

use qexec_protocol::{JobId, OutputStream};

use super::render::{EventJson, JobJson, json_line};
use super::{CliError, ConnArgs, note};
use qexec_client::{Client, ClientError, OutputEvent, OutputSubscription};

pub(super) const HELP: &str = "\
Without -f: prints the output written so far and exits. With -f: keeps printing as the
job writes, until it ends. If the connection drops, `logs -f` reconnects and continues
from the next byte (no byte lost or repeated). OFFSET counts bytes of the combined
output (stdout and stderr in the order written). With --json: JSON Lines (`output`
events with stream, offset and data; an `end` event with the final status).

Examples:
  qexec logs $ID
  qexec logs -f $ID
  qexec logs --from 4096 $ID";

/// How many times `logs -f` reconnects in a row without receiving anything.
const MAX_RECONNECTS: u32 = 5;

/// Arguments of `qexec logs`.
#[derive(Debug, Args)]
pub(super) struct LogsArgs {
    /// The job id (32 hex digits).
    job: JobId,
    /// Follow: keep printing until the job ends.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Start at this byte of the combined output.
    #[arg(long, value_name = "OFFSET", default_value_t = 0)]
    from: u64,
}

/// Where `logs` writes one event.
fn emit(json: bool, event: &OutputEvent) -> Result<(), CliError> {
    match event {
        OutputEvent::Data {
            stream,
            offset,
            data,
        } => {
            if json {
                return super::print_out(&json_line(&EventJson::output(*stream, *offset, data)));
            }
            let (what, result) = match stream {
                OutputStream::Stdout => {
                    let mut out = std::io::stdout().lock();
                    ("stdout", out.write_all(data).and_then(|()| out.flush()))
                }
                OutputStream::Stderr => {
                    let mut err = std::io::stderr().lock();
                    ("stderr", err.write_all(data).and_then(|()| err.flush()))
                }
            };
            result.map_err(|source| CliError::Output { what, source })
        }
        OutputEvent::End(status) if json => super::print_out(&json_line(&EventJson::End {
            status: Box::new(JobJson::from(&**status)),
        })),
        OutputEvent::End(_) => Ok(()),
    }
}

/// Prints events until the job ends (`until == None`) or the position reaches `until`.
async fn drain(
    sub: &mut OutputSubscription,
    json: bool,
    until: Option<u64>,
) -> Result<(), DrainError> {
    loop {
        if until.is_some_and(|u| sub.position() >= u) {
            return Ok(());
        }
        match sub.next().await.map_err(DrainError::Client)? {
            Some(event) => {
                let end = matches!(event, OutputEvent::End(_));
                emit(json, &event).map_err(DrainError::Cli)?;
                if end {
                    return Ok(());
                }
            }
            None => return Ok(()),
        }
    }
}

/// A failure while draining: from the connection (maybe retried) or local.
enum DrainError {
    Client(ClientError),
    Cli(CliError),
}

/// What went wrong with the connection, without advice (we are about to retry).
fn lost(e: &ClientError) -> String {
    match e {
        ClientError::ShuttingDown { addr } => format!("qexecd at {addr} is shutting down"),
        ClientError::Unreachable { addr, .. } => format!("cannot reach qexecd at {addr}"),
        other => other.to_string(),
    }
}

pub(super) async fn logs(conn: &ConnArgs, json: bool, args: LogsArgs) -> Result<u8, CliError> {
    let client = conn.connect().await?;
    if !args.follow {
        let status = client.status(args.job).await?;
        let total = status.output_bytes();
        if args.from >= total && status.state.is_running() {
            super::finish(&client).await;
            return Ok(0);
        }
        let mut sub = client.attach(args.job, args.from).await?;
        let until = status.state.is_running().then_some(total);
        let result = drain(&mut sub, json, until).await;
        drop(sub);
        super::finish(&client).await;
        return match result {
            Ok(()) => Ok(0),
            Err(DrainError::Client(e)) => Err(e.into()),
            Err(DrainError::Cli(e)) => Err(e),
        };
    }

    // Follow, reconnecting from the next byte when the connection drops.
    let mut client: Client = client;
    let mut position = args.from;
    let mut failures = 0;
    loop {
        let attempt = async {
            let mut sub = client
                .attach(args.job, position)
                .await
                .map_err(DrainError::Client)?;
            let result = drain(&mut sub, json, None).await;
            Ok::<_, DrainError>((sub.position(), result))
        };
        let (reached, result) = match attempt.await {
            Ok(r) => r,
            Err(e) => (position, Err(e)),
        };
        if reached > position {
            failures = 0;
        }
        position = reached;
        match result {
            Ok(()) => {
                super::finish(&client).await;
                return Ok(0);
            }
            Err(DrainError::Cli(e)) => return Err(e),
            Err(DrainError::Client(e)) if e.is_connection_lost() && failures < MAX_RECONNECTS => {
                failures += 1;
                // Once per outage, however many attempts it takes.
                if failures == 1 {
                    note(&format!("{}; reconnecting from byte {position}", lost(&e)));
                }
                // Product back-off between reconnection attempts (not a test wait).
                tokio::time::sleep(Duration::from_millis(200 * u64::from(failures))).await;
                client = match conn.connect().await {
                    Ok(c) => c,
                    Err(CliError::Client(e)) if e.is_connection_lost() => continue,
                    Err(e) => return Err(e),
                };
            }
            Err(DrainError::Client(e)) => return Err(e.into()),
        }
    }
}
