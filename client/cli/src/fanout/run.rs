//! `qexec run` on several hosts: one task per host (at most `--parallel` at once), the
//! output written whole line by whole line behind the host's prefix, Ctrl-C stops
//! every job, a summary at the end.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use qexec_client::{Client, ClientConfig, ClientError, OutputEvent};
use qexec_protocol::{JobId, OutputStream, StartRequest};

use super::super::render::{EventJson, JobJson, json_line};
use super::super::run::{EXIT_PIPE, RunArgs, end_note, lost, reconnect};
use super::super::{CliError, ConnArgs, LimitArgs, note};
use super::lines::Lines;
use super::summary::{Outcome, Row, RowJson, exit_code, table};
use super::{DEFAULT_PARALLEL, FanoutError};

/// What the host tasks are told by Ctrl-C.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Halt {
    /// Go on.
    No,
    /// First Ctrl-C: stop the job (or do not start it) and report its end.
    Stop,
    /// Second Ctrl-C: do not wait for the stop any more.
    Detach,
}

/// Everything the host tasks share.
#[derive(Debug)]
struct Shared {
    req: StartRequest,
    limits: LimitArgs,
    json: bool,
    timestamps: bool,
    prefix: bool,
    /// Longest label (chars), for the prefix's padding.
    width: usize,
    /// Tells every host to give up (our stdout was closed).
    halt: watch::Sender<Halt>,
    /// Our stdout was closed: the reader is gone.
    pipe_closed: AtomicBool,
}

/// One line of `--json` output about one host.
#[derive(Serialize)]
struct HostEvent<'a> {
    host: &'a str,
    #[serde(flatten)]
    event: &'a EventJson,
}

/// `--json` events of a fan-out beyond those of a single `run`.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum FanoutJson<'a> {
    /// qexec failed with a host (could not connect, lost it, an error answer).
    Error {
        host: &'a str,
        error: &'a str,
        code: Option<&'static str>,
    },
    /// The last line: every host's row and the exit status.
    Summary { hosts: Vec<RowJson>, exit: u8 },
}

/// Writes `bytes` to stdout or stderr in one locked write (lines of different hosts
/// never mix); a closed stdout is our reader gone, as for `run`.
fn write_to(stream: OutputStream, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    match stream {
        OutputStream::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)?;
            out.flush()
        }
        OutputStream::Stderr => {
            let mut err = std::io::stderr().lock();
            err.write_all(bytes)?;
            err.flush()
        }
    }
}

/// One `--json` line on stdout.
fn print_json<T: Serialize>(v: &T) -> Result<(), CliError> {
    super::super::print_out(&json_line(v))
}

/// Why a host was left when Ctrl-C came while its connection was lost.
const DETACHED_LOST: &str =
    "Ctrl-C while reconnecting (the server stops the job after its grace period)";

/// Why a host was left by a second Ctrl-C.
const DETACHED_TWICE: &str = "Ctrl-C again while the server stopped the job";

/// Waits until the halt level reaches `at` (forever if the sender is gone).
async fn halted(rx: &mut watch::Receiver<Halt>, at: Halt) {
    if rx.wait_for(|h| *h >= at).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// One host: its output printer and its part of the work.
struct Host {
    label: String,
    config: ClientConfig,
    shared: Arc<Shared>,
    halt: watch::Receiver<Halt>,
    out: Lines,
    err: Lines,
}

impl Host {
    /// Prints a chunk of the job's output (JSON event, raw, or whole prefixed lines).
    fn output(&mut self, stream: OutputStream, offset: u64, data: &[u8]) -> Result<(), CliError> {
        let what = match stream {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        };
        let written = if self.shared.json {
            let mut e = EventJson::output(stream, offset, data);
            if self.shared.timestamps {
                e = e.stamped(super::super::now_ms());
            }
            return print_json(&HostEvent {
                host: &self.label,
                event: &e,
            });
        } else if !self.shared.prefix {
            write_to(stream, data)
        } else {
            let lines = match stream {
                OutputStream::Stdout => &mut self.out,
                OutputStream::Stderr => &mut self.err,
            };
            let mut buf = Vec::with_capacity(data.len() + 64);
            lines.push(data, &mut buf);
            write_to(stream, &buf)
        };
        written.map_err(|source| CliError::Output { what, source })
    }

    /// Prints what is held of a last line without a newline.
    fn flush(&mut self) {
        for (stream, lines) in [
            (OutputStream::Stdout, &mut self.out),
            (OutputStream::Stderr, &mut self.err),
        ] {
            let mut buf = Vec::new();
            lines.finish(&mut buf);
            let _ = write_to(stream, &buf);
        }
    }

    /// Says that qexec failed with this host, live (stderr, or an `error` event).
    fn report(&self, e: &str, code: Option<qexec_protocol::ErrorCode>) {
        if self.shared.json {
            let _ = print_json(&FanoutJson::Error {
                host: &self.label,
                error: e,
                code: code.map(|c| c.name()),
            });
        } else {
            note(&format!("{}: {e}", self.label));
        }
    }

    /// A row for this host.
    fn row(&self, job: Option<JobId>, outcome: Outcome, t0: Instant) -> Row {
        Row {
            host: self.label.clone(),
            job,
            outcome,
            elapsed: t0.elapsed(),
        }
    }

    /// A failed row, reported live.
    fn failed(&self, job: Option<JobId>, e: &CliError, t0: Instant) -> Row {
        let code = match e {
            CliError::Client(c) => c.code(),
            _ => None,
        };
        let text = e.to_string();
        self.report(&text, code);
        self.row(job, Outcome::Failed(text), t0)
    }

    /// The host's whole part: waits for its turn, connects, runs, follows, reports.
    async fn work(mut self, turns: Arc<Semaphore>) -> Row {
        let t0 = Instant::now();
        let mut halt = self.halt.clone();
        let _turn = tokio::select! {
            t = turns.acquire_owned() => match t {
                Ok(t) => t,
                Err(_) => return self.row(None, Outcome::NotStarted, t0),
            },
            () = halted(&mut halt, Halt::Stop) => return self.row(None, Outcome::NotStarted, t0),
        };
        let t0 = Instant::now();
        let client = tokio::select! {
            c = Client::connect(&self.config) => match c {
                Ok(c) => c,
                Err(e) => return self.failed(None, &e.into(), t0),
            },
            () = halted(&mut halt, Halt::Stop) => return self.row(None, Outcome::NotStarted, t0),
        };
        // Not abandoned on Ctrl-C: once asked for, the job may have started, and the
        // answer (within the request timeout) says which one to stop below. (Closing
        // the connection instead would rely on the close frame arriving.)
        let started = client.run(self.shared.req.clone()).await;
        let mut started = match started {
            Ok(s) => s,
            Err(ClientError::Spawn { failure, message }) => {
                if self.shared.json {
                    let _ = print_json(&HostEvent {
                        host: &self.label,
                        event: &EventJson::FailedToStart {
                            spawn_failure: super::super::render::spawn_failure_name(failure)
                                .to_owned(),
                            message: message.clone(),
                            exit: super::super::spawn_exit(failure),
                        },
                    });
                } else {
                    note(&format!(
                        "{}: the job could not start: {message}",
                        self.label
                    ));
                }
                crate::finish(&client).await;
                return self.row(None, Outcome::FailedToStart { failure, message }, t0);
            }
            Err(e) => {
                let e = self.shared.limits.explain(e);
                crate::finish(&client).await;
                return self.failed(None, &e, t0);
            }
        };
        let job = started.job;
        if self.shared.json {
            let _ = print_json(&HostEvent {
                host: &self.label,
                event: &EventJson::Started {
                    job: job.to_string(),
                    pid: started.pid,
                },
            });
        }
        let Some(mut output) = started.output.take() else {
            let e = CliError::Client(ClientError::Protocol {
                addr: client.addr().to_owned(),
                reason: "no output stream for a followed start".into(),
            });
            crate::finish(&client).await;
            return self.failed(Some(job), &e, t0);
        };
        let mut client = client;
        let outcome = loop {
            tokio::select! {
                // A halt first: a job that floods its output is still stopped.
                biased;
                () = halted(&mut halt, Halt::Stop) => {
                    // Skip the backlog (as `run`): the stop's answer is the final status.
                    drop(output);
                    let stopped = tokio::select! {
                        s = client.stop(job, None) => s.map(|s| (Box::new(s), true)).map_err(CliError::from),
                        () = halted(&mut halt, Halt::Detach) => {
                            self.flush();
                            crate::finish(&client).await;
                            return self.row(Some(job), Outcome::Detached(DETACHED_TWICE), t0);
                        }
                    };
                    break stopped;
                }
                event = output.next() => match event {
                    Ok(Some(OutputEvent::Data { stream, offset, data })) => {
                        if let Err(e) = self.output(stream, offset, &data) {
                            if let CliError::Output { source, .. } = &e
                                && source.kind() == std::io::ErrorKind::BrokenPipe
                            {
                                // As `run` (141): our reader is gone. Every job is stopped
                                // by a Stop request (delivered reliably; a close frame
                                // lost under a flood of output would leave the job to
                                // the server's grace period), then qexec exits.
                                self.shared.pipe_closed.store(true, Ordering::Relaxed);
                                self.shared.halt.send_if_modified(|h| {
                                    let raise = *h < Halt::Stop;
                                    if raise {
                                        *h = Halt::Stop;
                                    }
                                    raise
                                });
                                continue;
                            }
                            break Err(e);
                        }
                    }
                    Ok(Some(OutputEvent::End(status))) => break Ok((status, false)),
                    Ok(None) => break Err(CliError::Client(ClientError::Protocol {
                        addr: client.addr().to_owned(),
                        reason: format!("job {job}: output ended without a final status"),
                    })),
                    Err(e) if e.is_connection_lost() => {
                        // As `run`: the server keeps the job through its grace period
                        // (spec: QX-STREAM-24); take it back from where we were.
                        let position = output.position();
                        if !self.shared.json {
                            note(&format!(
                                "{}: {}; reconnecting to job {job} from byte {position}",
                                self.label,
                                lost(&e)
                            ));
                        }
                        let again = tokio::select! {
                            r = reconnect(&self.config, job, position) => r,
                            () = halted(&mut halt, Halt::Stop) => {
                                self.flush();
                                return self.row(Some(job), Outcome::Detached(DETACHED_LOST), t0);
                            }
                        };
                        match again {
                            Ok((c, sub)) => {
                                client = c;
                                output = sub;
                            }
                            Err(again) => {
                                break Err(FanoutError::Lost {
                                    job,
                                    lost: lost(&e),
                                    again: again.to_string(),
                                }
                                .into());
                            }
                        }
                    }
                    Err(e) => break Err(e.into()),
                },
            }
        };
        self.flush();
        crate::finish(&client).await;
        match outcome {
            Ok((status, asked_stop)) => {
                if self.shared.json {
                    let _ = print_json(&HostEvent {
                        host: &self.label,
                        event: &EventJson::End {
                            status: Box::new(JobJson::from(&*status)),
                        },
                    });
                } else if self.shared.pipe_closed.load(Ordering::Relaxed) {
                    // Stopped because our reader went away: nothing to explain.
                } else if let Some(line) = end_note(&status, asked_stop) {
                    note(&format!("{}: {line}", self.label));
                }
                self.row(Some(job), Outcome::Ended(status), t0)
            }
            Err(e) => self.failed(Some(job), &e, t0),
        }
    }
}

/// `qexec run` on the hosts the connection flags select (see [`super::hosts`]).
pub(crate) async fn run(conn: &ConnArgs, json: bool, args: RunArgs) -> Result<u8, CliError> {
    if args.tty {
        return Err(FanoutError::NotWithSeveral {
            flag: "-t",
            why: "one terminal cannot drive several remote programs; run -t on one server (-s NAME)",
        }
        .into());
    }
    if args.stdin {
        return Err(FanoutError::NotWithSeveral {
            flag: "-i",
            why: "local standard input is not copied to several jobs; put the input in a file on the hosts, or run on one server",
        }
        .into());
    }
    if args.timestamps && !json {
        return Err(CliError::Usage {
            reason: "--timestamps needs --json (without it, output bytes are passed as they are)"
                .into(),
        });
    }
    let req = args.limits.request(&args.command, false)?;
    let hosts = super::hosts(conn)?;
    // Listen for Ctrl-C before anything runs remotely, so it is never lost.
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|source| CliError::Runtime { source })?;
    let width = hosts
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    let (halt_tx, halt_rx) = watch::channel(Halt::No);
    let shared = Arc::new(Shared {
        req,
        limits: args.limits,
        json,
        timestamps: args.timestamps,
        prefix: !args.fanout.no_prefix,
        width,
        halt: halt_tx.clone(),
        pipe_closed: false.into(),
    });
    let parallel = args.fanout.parallel.unwrap_or(DEFAULT_PARALLEL) as usize;
    let turns = Arc::new(Semaphore::new(parallel));
    let mut tasks = JoinSet::new();
    let n = hosts.len();
    for (i, (label, config)) in hosts.into_iter().enumerate() {
        let prefix = format!("{label:<w$} | ", w = shared.width);
        let host = Host {
            label,
            config,
            shared: Arc::clone(&shared),
            halt: halt_rx.clone(),
            out: Lines::new(prefix.as_bytes()),
            err: Lines::new(prefix.as_bytes()),
        };
        let turns = Arc::clone(&turns);
        tasks.spawn(async move { (i, host.work(turns).await) });
    }
    let mut rows: Vec<Option<Row>> = vec![None; n];
    let mut interrupts = 0u32;
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                None => break,
                Some(Ok((i, row))) => rows[i] = Some(row),
                Some(Err(e)) => {
                    return Err(CliError::Runtime { source: std::io::Error::other(e) });
                }
            },
            _ = interrupt.recv() => {
                interrupts += 1;
                if interrupts == 1 {
                    if !json {
                        note(&format!(
                            "stopping the jobs on {n} hosts; output not shown yet is skipped \
                             (Ctrl-C again to stop waiting)"
                        ));
                    }
                    let _ = halt_tx.send(Halt::Stop);
                } else {
                    let _ = halt_tx.send(Halt::Detach);
                }
            }
        }
    }
    let rows: Vec<Row> = rows.into_iter().flatten().collect();
    let pipe_closed = shared.pipe_closed.load(Ordering::Relaxed);
    let code = if pipe_closed {
        EXIT_PIPE
    } else {
        exit_code(&rows, interrupts > 0)
    };
    if json && !pipe_closed {
        print_json(&FanoutJson::Summary {
            hosts: rows.iter().map(RowJson::from).collect(),
            exit: code,
        })?;
    } else {
        let text = table(&rows);
        std::io::stderr()
            .lock()
            .write_all(text.as_bytes())
            .map_err(|source| CliError::Output {
                what: "stderr",
                source,
            })?;
    }
    Ok(code)
}
