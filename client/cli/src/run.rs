//! `qexec run`: start a job, stream its output, exit with its code.

use std::ffi::OsString;
use std::io::Read;
use std::sync::Arc;

use clap::Args;
use tokio::signal::unix::{SignalKind, signal};

use qexec_protocol::{JobState, JobStatus, StopReason, Termination};

use super::render::{EventJson, JobJson, json_line, signal_name};
use super::sink::OutputSink;
use super::{CliError, ConnArgs, EXIT_QEXEC_ERROR, LimitArgs, report, spawn_exit};
use qexec_client::units::format_duration;
use qexec_client::{ClientError, MAX_STDIN_CHUNK, OutputEvent, StdinWriter};

pub(super) const HELP: &str = "\
The job is stopped when qexec goes away (connection lost, qexec killed).

Ctrl-C: the first stops the remote job (SIGTERM, the server's grace period, SIGKILL);
qexec then exits with the job's status as usual (130 or 143 for most programs). A
second Ctrl-C detaches at once: qexec prints the job id on stderr and exits 255 (the
job is still being stopped by the server).

Exit status: the job's exit code; 128+N if it was killed by signal N; 127 if the program
was not found, 126 if it could not be executed; 255 for a failure of qexec itself.
With --json, stdout carries JSON Lines: a `started` event, `output` events, an `end` event.

Examples:
  qexec run -- uname -a
  echo hi | qexec run -i -- cat
  qexec run --cpu 0.5 --memory 256M --pids 64 --timeout 30s -- ./fuzz-one input.bin
  qexec run -e RUST_LOG=debug -C /srv/app -- ./server --check";

/// Arguments of `qexec run`.
#[derive(Debug, Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    pub(super) limits: LimitArgs,
    /// Forward local standard input to the job, EOF included (else the job's stdin is
    /// /dev/null).
    #[arg(short = 'i', long = "stdin")]
    stdin: bool,
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

/// One line on stderr when the end of a job needs explaining beyond its code.
fn end_note(status: &JobStatus) -> Option<String> {
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
            StopReason::Detached | StopReason::Requested { .. } => None,
        },
        JobState::Exited {
            termination: Termination::Signaled(9),
        } if status.oom_killed => Some(format!(
            "job {id} was killed by the OOM killer (memory limit reached)"
        )),
        JobState::Exited {
            termination: Termination::Signaled(sig),
        } => Some(format!("job {id} was killed by {}", signal_name(*sig))),
        _ => None,
    }
}

/// Copies local stdin to the job until EOF (then sends `StdinEof`).
///
/// Reading happens on a plain thread (a blocking read of a terminal or pipe cannot be
/// cancelled); it ends at EOF, on a read error, or as soon as this task is gone (its
/// next send fails) — at the latest when the process exits.
async fn forward_stdin(mut writer: StdinWriter) -> Result<(), CliError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(4);
    std::thread::Builder::new()
        .name("qexec-stdin".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; MAX_STDIN_CHUNK];
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

pub(super) async fn run(conn: &ConnArgs, json: bool, args: RunArgs) -> Result<u8, CliError> {
    let req = args.limits.request(&args.command, args.stdin)?;
    // Listen for Ctrl-C before anything runs remotely, so it is never lost.
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|source| CliError::Runtime { source })?;
    let client = Arc::new(conn.connect().await?);
    let mut started = match client.run(req).await {
        Ok(s) => s,
        Err(e @ ClientError::Spawn { failure, .. }) => {
            report(&e);
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
    let mut output = started.output.take().ok_or_else(|| ClientError::Protocol {
        addr: client.addr().to_owned(),
        reason: "no output stream for a followed start".into(),
    })?;
    // Owned here; aborted below whatever way the loop ends.
    let stdin_task = started.stdin.take().map(|w| tokio::spawn(forward_stdin(w)));
    let mut stop_task = None;
    let mut interrupts = 0;
    let mut sink = OutputSink::new();

    let result = loop {
        tokio::select! {
            event = output.next() => match event {
                Ok(Some(OutputEvent::Data { stream, offset, data })) => {
                    let written = if json {
                        super::print_out(&json_line(&EventJson::output(stream, offset, &data)))
                            .map_err(|e| match e {
                                CliError::Output { source, .. } => source,
                                other => std::io::Error::other(other.to_string()),
                            })
                    } else {
                        sink.write(stream, &data)
                    };
                    if let Err(e) = written {
                        if e.kind() == std::io::ErrorKind::BrokenPipe {
                            // Like a local process killed by SIGPIPE: our reader is gone;
                            // closing the connection stops the job.
                            break Ok(128 + 13);
                        }
                        break Err(CliError::Output { what: "stdout/stderr", source: e });
                    }
                }
                Ok(Some(OutputEvent::End(status))) => {
                    if json {
                        super::print_out(&json_line(&EventJson::End {
                            status: Box::new(JobJson::from(&*status)),
                        }))?;
                    } else if let Some(note) = end_note(&status) {
                        report(&note);
                    }
                    break Ok(exit_status(&status));
                }
                Ok(None) => break Err(CliError::Client(ClientError::Protocol {
                    addr: client.addr().to_owned(),
                    reason: format!("job {job}: output ended without a final status"),
                })),
                Err(e) => break Err(e.into()),
            },
            _ = interrupt.recv() => {
                interrupts += 1;
                if interrupts == 1 {
                    report(&format!("stopping job {job} (Ctrl-C again to detach)"));
                    let c = client.clone();
                    // The answer is not needed: the job's end arrives on the output stream.
                    stop_task = Some(tokio::spawn(async move { c.stop(job, None).await }));
                } else {
                    report(&format!(
                        "detached from job {job}; the server is stopping it (see `qexec status {job}`)"
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
