//! `qexec run`: start a job, stream its output, exit with its code.

use std::ffi::OsString;
use std::io::Read;
use std::sync::Arc;

use clap::Args;
use tokio::signal::unix::{SignalKind, signal};

use qexec_protocol::{JobState, JobStatus, StopReason, Termination};

use super::render::{EventJson, JobJson, json_line, signal_name, spawn_failure_name, state_text};
use super::sink::OutputSink;
use super::{CliError, ConnArgs, EXIT_QEXEC_ERROR, LimitArgs, note, spawn_exit};
use qexec_client::units::format_duration;
use qexec_client::{ClientError, MAX_STDIN_CHUNK, OutputEvent, OutputSubscription, StdinWriter};
use qexec_protocol::JobId;

pub(super) const HELP: &str = "\
The job is stopped when qexec goes away. A lost connection (suspended laptop,
Ctrl-Z, network blip) is not going away: qexecd keeps the job for its grace period
(default 60s) and qexec reconnects and continues the output from the byte it had
reached; local stdin (-i) is then no longer forwarded and the job's stdin is closed.

Ctrl-C: the first stops the remote job (SIGTERM, the server's grace period, SIGKILL)
and skips the output not shown yet; when the job has ended qexec prints one line
saying how (`job ID stopped (Ctrl-C): stopped by NAME, SIGTERM`) and exits with the
job's status as usual (130 or 143 for most programs). A second Ctrl-C before that
detaches at once: qexec says the server is still stopping the job and exits 255.

-t runs the job on a remote terminal (this one in raw mode): keys such as Ctrl-C go to
the remote program, window size changes follow, and `~.` after Enter disconnects (the
job is stopped), as in ssh.

Exit status: the job's exit code; 128+N if it was killed by signal N; 127 if the program
was not found, 126 if it could not be executed; 255 for a failure of qexec itself.
With --json, stdout carries JSON Lines: a `started` event, `output` events, an `end` event.

Several hosts (-s GROUP of config.toml, --hosts a,b,c, --hosts-file FILE): the job runs
on every host at once (at most --parallel, default 32). Each line of output is printed
whole behind its host, `build-01 | …` (stdout to stdout, stderr to stderr; a last line
without a newline gets one; a line over 64 KiB is cut there); --no-prefix prints the
raw chunks instead. An unreachable or lost host is a row of the summary (on stderr),
not the end. Ctrl-C stops the job on every host (Stop), prints the summary and exits
130; a second Ctrl-C stops waiting. -i and -t work on one host only. With --json each
event carries `host`, an `error` event reports a failed host, and a last `summary`
event has every host's row and the exit status.
Exit status with several hosts: 0 if every job exited 0; else 255 if qexec failed with
any host (unreachable, connection lost, refused); else the highest of the hosts' own
statuses (as above, e.g. 3 if one job exited 3); 130 after Ctrl-C; 141 when our stdout
was closed (every job is stopped first).

Examples:
  qexec run -- uname -a
  echo hi | qexec run -i -- cat
  qexec run -it -- bash
  qexec run --cpu 0.5 --memory 256M --pids 64 --timeout 30s -- ./fuzz-one input.bin
  qexec run -e RUST_LOG=debug -C /srv/app -- ./server --check
  qexec -s rack1 run -- uptime                 # every server of group rack1
  qexec --hosts build-01,10.0.0.7:7000 run --parallel 8 -- make -C /src test
  qexec --hosts-file hosts.txt --json run -- df -h /";

/// Arguments of `qexec run`.
#[derive(Debug, Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    pub(super) limits: LimitArgs,
    /// Forward local standard input to the job, EOF included (else the job's stdin is
    /// /dev/null).
    #[arg(short = 'i', long = "stdin")]
    pub(super) stdin: bool,
    /// With --json: add `ts_ms` (when qexec received the chunk, ms since the epoch) to
    /// every output event.
    #[arg(long)]
    pub(super) timestamps: bool,
    /// Run the job on a remote terminal (interactive programs: shells, editors, REPLs).
    /// Needs a terminal on stdin; `~.` at the start of a line disconnects.
    #[arg(short = 't', long = "tty")]
    pub(super) tty: bool,
    #[command(flatten)]
    pub(super) fanout: super::fanout::FanoutArgs,
    /// The program and its arguments, after `--`. Executed directly, no shell.
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub(super) command: Vec<OsString>,
}

/// The exit status `qexec run` reports for a finished job.
pub(super) fn exit_status(status: &JobStatus) -> u8 {
    match &status.state {
        JobState::FailedToStart { failure, .. } => spawn_exit(*failure),
        // Still running cannot be final; treat as our own failure.
        JobState::Running => EXIT_QEXEC_ERROR,
        JobState::Exited { termination } | JobState::Stopped { termination, .. } => {
            match *termination {
                // The low 8 bits, as a shell sees them.
                Termination::Exited(code) => (code & 0xff) as u8,
                Termination::Signaled(sig) => 128u8.wrapping_add((sig & 0x7f) as u8),
            }
        }
    }
}

/// One line on stderr when the end of a job needs explaining beyond its code;
/// `asked_stop` when our own Ctrl-C asked for the stop (then the line always comes).
pub(super) fn end_note(status: &JobStatus, asked_stop: bool) -> Option<String> {
    let id = status.id;
    let ran = format_duration(std::time::Duration::from_millis(
        status
            .ended_at_ms
            .unwrap_or(status.started_at_ms)
            .saturating_sub(status.started_at_ms),
    ));
    match &status.state {
        JobState::FailedToStart { message, .. } => {
            Some(format!("job {id} could not start: {message}"))
        }
        JobState::Stopped { reason, .. } => match reason {
            StopReason::Timeout => Some(format!("job {id} stopped: timeout after {ran}")),
            StopReason::OutputLimit => Some(format!(
                "job {id} stopped: its output reached the server's cap (output truncated)"
            )),
            StopReason::Shutdown => Some(format!("job {id} stopped: qexecd shut down")),
            StopReason::Requested { .. } if asked_stop => Some(format!(
                "job {id} stopped (Ctrl-C): {}",
                state_text(&status.state)
            )),
            // Someone else (or `qexec stop`) stopped it: say who.
            StopReason::Requested { .. } => Some(format!("job {id} {}", state_text(&status.state))),
            StopReason::Detached => None,
        },
        JobState::Exited {
            termination: Termination::Signaled(9),
        } if status.oom_killed => Some(format!(
            "job {id} was killed by the OOM killer (memory limit reached)"
        )),
        JobState::Exited {
            termination: Termination::Signaled(sig),
        } => Some(format!("job {id} was killed by {}", signal_name(*sig))),
        _ if asked_stop => Some(format!(
            "job {id} ended before the stop (Ctrl-C): {}",
            state_text(&status.state)
        )),
        _ => None,
    }
}

/// Local stdin read on a plain thread (a blocking read of a terminal or pipe cannot
/// be cancelled), `buf` bytes at most per read, `depth` chunks queued: each chunk as
/// read, then an empty one at EOF or the error. The thread ends there, or as soon as
/// the receiver is gone (its next send fails) — at the latest when the process exits.
pub(super) fn stdin_reader(
    name: &str,
    buf: usize,
    depth: usize,
) -> Result<tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>, CliError> {
    let (tx, rx) = tokio::sync::mpsc::channel(depth);
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; buf];
            loop {
                let chunk = match stdin.read(&mut buf) {
                    Ok(n) => Ok(buf[..n].to_vec()),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let stop = !matches!(&chunk, Ok(c) if !c.is_empty());
                if tx.blocking_send(chunk).is_err() || stop {
                    return;
                }
            }
        })
        .map_err(|source| CliError::Stdin { source })?;
    Ok(rx)
}

/// Copies local stdin to the job until EOF (then sends `StdinEof`).
///
/// Reading happens on a plain thread (a blocking read of a terminal or pipe cannot be
/// cancelled); it ends at EOF, on a read error, or as soon as this task is gone (its
/// next send fails) — at the latest when the process exits.
async fn forward_stdin(mut writer: StdinWriter) -> Result<(), CliError> {
    let mut rx = stdin_reader("qexec-stdin", MAX_STDIN_CHUNK, 4)?;
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk.map_err(|source| CliError::Stdin { source })?;
        if chunk.is_empty() {
            break;
        }
        writer.write(&chunk).await?;
    }
    writer.eof().await?;
    Ok(())
}

/// What the first Ctrl-C leads to: the job's final status once the server stopped it.
/// How long `run` waits for the answer to the Stop it sends when its stdout is closed.
const STOP_ON_EPIPE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

type StopTask = tokio::task::JoinHandle<Result<JobStatus, ClientError>>;

/// Waits for the stop asked by the first Ctrl-C (pending forever when none was asked).
async fn stopped(task: &mut Option<StopTask>) -> Result<JobStatus, CliError> {
    match task {
        Some(t) => match t.await {
            Ok(r) => r.map_err(CliError::from),
            Err(e) => Err(CliError::Runtime {
                source: std::io::Error::other(e),
            }),
        },
        None => std::future::pending().await,
    }
}

/// Reports the end of a job: the `end` event with --json, else the note (if any).
fn report_end(json: bool, status: &JobStatus, asked_stop: bool) -> Result<(), CliError> {
    if json {
        return super::print_out(&json_line(&EventJson::End {
            status: Box::new(JobJson::from(status)),
        }));
    }
    if let Some(line) = end_note(status, asked_stop) {
        note(&line);
    }
    Ok(())
}

/// How many connection attempts a `run` makes in a row to take its job back.
const MAX_RECONNECTS: u32 = 5;

/// Exit status when our stdout was closed: 128 + SIGPIPE, as for a local process
/// killed by it.
pub(super) const EXIT_PIPE: u8 = 128 + 13;

/// What went wrong with the connection, without advice (we are about to retry).
pub(super) fn lost(e: &ClientError) -> String {
    match e {
        ClientError::ShuttingDown { addr } => format!("qexecd at {addr} is shutting down"),
        ClientError::Unreachable { addr, .. } => format!("cannot reach qexecd at {addr}"),
        other => other.to_string(),
    }
}

/// A new connection attached to `job` from `position`; while it follows the job the
/// server keeps it (spec: QX-STREAM-24). Up to [`MAX_RECONNECTS`] attempts in a row
/// while the connection is what fails (`run` on one host and on several).
pub(super) async fn reconnect(
    config: &qexec_client::ClientConfig,
    job: JobId,
    position: u64,
) -> Result<(qexec_client::Client, OutputSubscription), CliError> {
    let mut failures = 0;
    loop {
        let attempt = async {
            let client = qexec_client::Client::connect(config).await?;
            let sub = client.attach(job, position).await?;
            Ok::<_, ClientError>((client, sub))
        }
        .await;
        match attempt {
            Ok(pair) => return Ok(pair),
            Err(e) if e.is_connection_lost() && failures + 1 < MAX_RECONNECTS => {
                failures += 1;
                // Product back-off between reconnection attempts (not a test wait).
                tokio::time::sleep(std::time::Duration::from_millis(200 * u64::from(failures)))
                    .await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

pub(super) async fn run(conn: &ConnArgs, json: bool, args: RunArgs) -> Result<u8, CliError> {
    if args.tty {
        return super::tty::run(conn, json, &args.limits, &args.command).await;
    }
    let req = args.limits.request(&args.command, args.stdin)?;
    if args.timestamps && !json {
        return Err(CliError::Usage {
            reason: "--timestamps needs --json (without it, output bytes are passed as they are)"
                .into(),
        });
    }
    // Listen for Ctrl-C before anything runs remotely, so it is never lost.
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|source| CliError::Runtime { source })?;
    let mut client = Arc::new(conn.connect().await?);
    let mut started = match client.run(req).await {
        Ok(s) => s,
        Err(ClientError::Spawn { failure, message }) => {
            // spec: QX-MSG-TYPE-5 — the job never ran; say so on stdout too with --json.
            if json {
                super::print_out(&json_line(&EventJson::FailedToStart {
                    spawn_failure: spawn_failure_name(failure).to_owned(),
                    message: message.clone(),
                    exit: spawn_exit(failure),
                }))?;
            }
            super::report_with_code(
                &ClientError::Spawn { failure, message },
                Some(qexec_protocol::ErrorCode::SpawnFailed),
            );
            super::finish(&client).await;
            return Ok(spawn_exit(failure));
        }
        Err(e) => return Err(args.limits.explain(e)),
    };
    let job = started.job;
    if json {
        super::print_out(&json_line(&EventJson::Started {
            job: job.to_string(),
            pid: started.pid,
        }))?;
    }
    let mut output = Some(started.output.take().ok_or_else(|| ClientError::Protocol {
        addr: client.addr().to_owned(),
        reason: "no output stream for a followed start".into(),
    })?);
    // Owned here; aborted below whatever way the loop ends.
    let mut stdin_task = started.stdin.take().map(|w| tokio::spawn(forward_stdin(w)));
    let mut stop_task: Option<StopTask> = None;
    // The output position of the last reconnection, if any.
    let mut reconnected_at: Option<u64> = None;
    let mut sink = OutputSink::new();

    let result = loop {
        tokio::select! {
            event = async { output.as_mut().expect("output is read until Ctrl-C").next().await },
                if output.is_some() => match event {
                Ok(Some(OutputEvent::Data { stream, offset, data })) => {
                    let written = if json {
                        let mut e = EventJson::output(stream, offset, &data);
                        if args.timestamps {
                            e = e.stamped(super::now_ms());
                        }
                        super::print_out(&json_line(&e))
                            .map_err(|e| match e {
                                CliError::Output { source, .. } => source,
                                other => std::io::Error::other(other.to_string()),
                            })
                    } else {
                        sink.write(stream, &data)
                    };
                    if let Err(e) = written {
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            // Like a local process killed by SIGPIPE: our reader is gone.
                            // The job is stopped by a Stop request, whose answer proves
                            // it arrived: the close frame alone can be lost under a
                            // flood of output, leaving the job to the server's grace
                            // period. The wait is bounded: once the server has the
                            // request it stops the job without us.
                            drop(output.take());
                            let _ = tokio::time::timeout(STOP_ON_EPIPE_WAIT, client.stop(job, None)).await;
                            break Ok(EXIT_PIPE);
                        }
                        break Err(CliError::Output { what: "stdout/stderr", source: e });
                    }
                }
                Ok(Some(OutputEvent::End(status))) => {
                    report_end(json, &status, false)?;
                    break Ok(exit_status(&status));
                }
                Ok(None) => break Err(CliError::Client(ClientError::Protocol {
                    addr: client.addr().to_owned(),
                    reason: format!("job {job}: output ended without a final status"),
                })),
                Err(e) if e.is_connection_lost() => {
                    // The server keeps a `run` job through a grace period after a lost
                    // connection (spec: QX-STREAM-24): take it back from where we were.
                    let position = output.as_ref().map_or(0, OutputSubscription::position);
                    // Once per outage: not again while no byte came in between.
                    if reconnected_at != Some(position) {
                        note(&format!(
                            "{}; reconnecting to job {job} from byte {position}",
                            lost(&e)
                        ));
                    }
                    reconnected_at = Some(position);
                    if let Some(t) = stdin_task.take() {
                        t.abort();
                        note(&"local stdin is no longer forwarded: the job's stdin is closed");
                    }
                    match reconnect(&conn.config()?, job, position).await {
                        Ok((c, sub)) => {
                            client = Arc::new(c);
                            output = Some(sub);
                        }
                        Err(e) => break Err(e),
                    }
                }
                Err(e) => break Err(e.into()),
            },
            status = stopped(&mut stop_task) => {
                // The first Ctrl-C's stop is done: its answer is the final status.
                break match status {
                    Ok(status) => {
                        report_end(json, &status, true)?;
                        Ok(exit_status(&status))
                    }
                    Err(e) => Err(e),
                };
            }
            _ = interrupt.recv() => {
                if stop_task.is_none() {
                    note(&format!(
                        "stopping job {job}; output not shown yet is skipped (Ctrl-C again to detach)"
                    ));
                    // Skip the backlog: closing our end of the output stream tells the
                    // server to stop sending it. The stop's answer is the final status.
                    drop(output.take());
                    let c = client.clone();
                    stop_task = Some(tokio::spawn(async move { c.stop(job, None).await }));
                } else {
                    note(&format!(
                        "detached from job {job} while the server stops it (SIGTERM sent, \
                         SIGKILL after its grace period): see `qexec status {job}`"
                    ));
                    break Ok(EXIT_QEXEC_ERROR);
                }
            }
        }
    };
    if let Some(t) = stdin_task {
        t.abort();
    }
    if let Some(t) = stop_task {
        t.abort();
    }
    drop(output);
    super::finish(&client).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use qexec_protocol::{JobId, Limits, ResourceUsage, SpawnFailure};

    fn status(state: JobState) -> JobStatus {
        JobStatus {
            id: JobId::from_u128(1),
            owner: "alice".into(),
            argv: vec![b"true".to_vec()],
            state,
            pid: Some(1),
            started_at_ms: 0,
            ended_at_ms: Some(1),
            stdout_bytes: 0,
            stderr_bytes: 0,
            output_truncated: false,
            oom_killed: false,
            limits: Limits::default(),
            usage: ResourceUsage::default(),
        }
    }

    #[test]
    fn exit_status_follows_shell_conventions() {
        let exited = |c| JobState::Exited {
            termination: Termination::Exited(c),
        };
        assert_eq!(exit_status(&status(exited(0))), 0);
        assert_eq!(exit_status(&status(exited(3))), 3);
        assert_eq!(exit_status(&status(exited(256 + 7))), 7);
        assert_eq!(
            exit_status(&status(JobState::Exited {
                termination: Termination::Signaled(9)
            })),
            137
        );
        assert_eq!(
            exit_status(&status(JobState::Stopped {
                reason: StopReason::Timeout,
                termination: Termination::Signaled(15)
            })),
            143
        );
        let failed = |failure| JobState::FailedToStart {
            failure,
            message: String::new(),
        };
        assert_eq!(exit_status(&status(failed(SpawnFailure::NotFound))), 127);
        assert_eq!(
            exit_status(&status(failed(SpawnFailure::PermissionDenied))),
            126
        );
        assert_eq!(exit_status(&status(failed(SpawnFailure::Setup))), 255);
    }
}
