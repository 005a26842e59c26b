//! `qexec logs`: a job's output, optionally followed live.

use std::io::Write;
use std::time::Duration;

use clap::Args;

use qexec_protocol::{JobId, OutputStream};

use crate::jobref::JobRef;

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
  qexec logs -f @last
  qexec logs --tail 20 -f 3f2a
  qexec logs --from 4096 $ID
  qexec --json logs --timestamps $ID";

/// How many times `logs -f` reconnects in a row without receiving anything.
const MAX_RECONNECTS: u32 = 5;

/// Arguments of `qexec logs`.
#[derive(Debug, Args)]
pub(super) struct LogsArgs {
    /// The job: its id, a unique prefix (4+ hex digits) or @last.
    job: JobRef,
    /// Follow: keep printing until the job ends.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Start at this byte of the combined output.
    #[arg(
        long,
        value_name = "OFFSET",
        default_value_t = 0,
        conflicts_with = "tail"
    )]
    from: u64,
    /// Only the last N lines written so far (then, with -f, everything new).
    #[arg(short = 'n', long, value_name = "N")]
    tail: Option<u64>,
    /// With --json: add `ts_ms` (when qexec received the chunk, ms since the epoch)
    /// to every output event.
    #[arg(long)]
    timestamps: bool,
}

/// Where `logs` writes one event; `stamps`: `ts_ms` on JSON output events.
fn emit(json: bool, stamps: bool, event: &OutputEvent) -> Result<(), CliError> {
    match event {
        OutputEvent::Data {
            stream,
            offset,
            data,
        } => {
            if json {
                let mut e = EventJson::output(*stream, *offset, data);
                if stamps {
                    e = e.stamped(super::now_ms());
                }
                return super::print_out(&json_line(&e));
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
    stamps: bool,
    until: Option<u64>,
) -> Result<(), DrainError> {
    loop {
        if until.is_some_and(|u| sub.position() >= u) {
            return Ok(());
        }
        match sub.next().await.map_err(DrainError::Client)? {
            Some(event) => {
                let end = matches!(event, OutputEvent::End(_));
                emit(json, stamps, &event).map_err(DrainError::Cli)?;
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

/// The bytes `[start, end)` of a job's combined output (fewer if the job's output
/// ends before).
async fn read_range(
    client: &Client,
    job: JobId,
    start: u64,
    end: u64,
) -> Result<Vec<u8>, ClientError> {
    let mut sub = client.attach(job, start).await?;
    let mut buf = Vec::new();
    while sub.position() < end {
        match sub.next().await? {
            Some(OutputEvent::Data { data, .. }) => buf.extend_from_slice(&data),
            Some(OutputEvent::End(_)) | None => break,
        }
    }
    buf.truncate(usize::try_from(end - start).unwrap_or(usize::MAX));
    Ok(buf)
}

/// Where the last `lines` lines of the first `total` bytes start, given `tail` (the
/// bytes before `total`) read from `start`: `None` when `tail` holds fewer lines and
/// more lie before it.
fn tail_start(tail: &[u8], start: u64, lines: u64) -> Option<u64> {
    // A last line without its newline counts as a line.
    let body = tail.strip_suffix(b"\n").unwrap_or(tail);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == lines {
                return Some(start + i as u64 + 1);
            }
        }
    }
    (start == 0).then_some(0)
}

/// The offset where the last `lines` lines of the output written so far begin.
async fn tail_offset(client: &Client, job: JobId, total: u64, lines: u64) -> Result<u64, CliError> {
    if lines == 0 {
        return Ok(total);
    }
    // Read back from the end in growing windows until enough newlines are in.
    let mut window = 16 * 1024u64;
    loop {
        let start = total.saturating_sub(window);
        let tail = read_range(client, job, start, total).await?;
        if let Some(at) = tail_start(&tail, start, lines) {
            return Ok(at);
        }
        window = window.saturating_mul(4);
    }
}

pub(super) async fn logs(conn: &ConnArgs, json: bool, args: LogsArgs) -> Result<u8, CliError> {
    if args.timestamps && !json {
        return Err(CliError::Usage {
            reason: "--timestamps needs --json (without it, output bytes are passed as they are)"
                .into(),
        });
    }
    let stamps = args.timestamps;
    let (client, job) = conn.connect_for(&args.job).await?;
    let mut from = args.from;
    if let Some(lines) = args.tail {
        let total = client.status(job).await?.output_bytes();
        from = tail_offset(&client, job, total, lines).await?;
    }
    if !args.follow {
        let status = client.status(job).await?;
        let total = status.output_bytes();
        if from >= total && status.state.is_running() {
            super::finish(&client).await;
            return Ok(0);
        }
        let mut sub = client.attach(job, from).await?;
        let until = status.state.is_running().then_some(total);
        let result = drain(&mut sub, json, stamps, until).await;
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
    let mut position = from;
    let mut failures = 0;
    loop {
        let attempt = async {
            let mut sub = client
                .attach(job, position)
                .await
                .map_err(DrainError::Client)?;
            let result = drain(&mut sub, json, stamps, None).await;
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
