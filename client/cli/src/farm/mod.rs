//! `qexec farm`: run a target over a corpus across many workers, one job per input,
//! and keep what crashed, ran out of memory or hung.
//!
//! Rooms: this module (the command's flags and the loop that feeds the worker pool and
//! reads its results), `corpus` (the input files), `wrap` (the job's command line, `@@`
//! mode), `classify` (what an input did, from the job's final status), `store` (the
//! findings under `--out`), `workers` (which qexecd to use) and `report` (counts,
//! progress line, summary, exit status).

mod classify;
mod corpus;
mod report;
mod store;
mod workers;
mod wrap;

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use tokio::signal::unix::{SignalKind, signal};

use qexec_client::pool::{
    JobResult, Outcome, Pool, PoolError, PoolOptions, Submission, WorkerSnapshot,
};
use qexec_client::units::parse_size;
use qexec_protocol::{ErrorCode, SpawnFailure, StartRequest};

use super::{CliError, ConnArgs, LimitArgs};
use classify::Class;
use report::{EXIT_FARM_ERROR, FindingRef, Tally};
use store::{FindingMeta, Kept, Store};

pub(super) const HELP: &str = "\
Runs TARGET once per file under --corpus (recursively, sorted by path), each run a job
on one of the workers with the job flags given (--cpu, --memory, --pids, --timeout, -e
…), the input on its standard input. An argument that is exactly @@ is replaced by the
path of a file holding the input instead (the job runs `/bin/sh -c SCRIPT` which writes
stdin to a file with mktemp in the job's /tmp, then execs TARGET; any bytes in the
arguments pass through unchanged).

Each run is classified: ok (exit 0), exit N, crash (killed by SIGSEGV, SIGABRT, SIGBUS,
SIGILL, SIGFPE, SIGTRAP or SIGSYS), oom (the memory limit's OOM kill), timeout (ran past
--timeout, default 60s in a farm), failed-to-start, killed (another signal), stopped,
lost (its worker went away: resubmitted up to --retries-lost times, then reported).
Crashes, OOM kills and timeouts are findings: under --out, crashes/<id>-<kind> is the
input, .out the first --keep-output bytes of its output, .json its metadata (input
path, worker, job id, signal, elapsed); <id> is the input's SHA-256, first 16 hex
digits. The same input with the same kind is kept once, across runs too.

Workers: the hosts of -s GROUP, --hosts or --hosts-file, as for `qexec run` on several
hosts (servers and groups of config.toml, or HOST[:PORT] with the default
credentials); without them, the one server of -s (or config.toml's default, or
--addr). Each job goes
to the live worker with the most free room (by its --max-jobs and --max-jobs-per-user;
--per-worker caps it, e.g. at its CPUs).

On a terminal a progress line is kept on stderr. The summary (stdout) gives execs/s,
counts per class and per worker and the findings; with --json, stdout carries one JSON
line per finding then a summary object. Ctrl-C stops submitting, stops the running
jobs and prints the summary of what finished.

Exit status: 0 every input ran and nothing was found; 1 every input ran and there are
findings; 2 not every input ran to an end (lost beyond --retries-lost, unreadable, no
worker, failed to start, a refusal, Ctrl-C) or no worker could be reached; 255 a usage
error, as for every command.

Examples:
  qexec -s fuzzers farm --corpus seeds --out found \\
      --memory 512M --timeout 5s -- ./parse-one
  qexec farm --corpus corpus --out out --cpu 1 --pids 64 -- ./target -runs=1 @@
  qexec farm --json --corpus c --out o -- ./target @@ | jq 'select(.event == \"finding\")'";

/// The timeout of each job when `--timeout` is not given: a hung input must not hold a
/// worker for ever.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Submissions queued in the pool beyond what the workers run (each holds its input).
const QUEUE: usize = 256;

/// Progress line redraws, at most 4 a second (also how often the workers are looked at).
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// How long the farm waits with no live worker before it stops: the pool retries dead
/// workers for ever while it takes submissions.
const NO_WORKER_GRACE: Duration = Duration::from_secs(60);

/// Arguments of `qexec farm`.
#[derive(Debug, Args)]
pub(super) struct FarmArgs {
    /// Directory of inputs: every regular file under it (recursively) is one job.
    #[arg(long, value_name = "DIR")]
    corpus: PathBuf,
    /// Directory for the findings (created if missing): crashes/<id>-<kind>, .out, .json.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Bytes of each finding's output kept in its .out file (stdout and stderr in the
    /// order written), e.g. 64K; 0 keeps none.
    #[arg(long, value_name = "SIZE", default_value = "64K", value_parser = parse_size)]
    keep_output: u64,
    /// Most jobs of the farm at once on any one worker, e.g. its CPUs [default: as
    /// many as the worker's --max-jobs and --max-jobs-per-user allow].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    per_worker: Option<u32>,
    /// How many times an input whose worker was lost mid-run is resubmitted (to a live
    /// worker) before it is reported as lost.
    #[arg(long, value_name = "N", default_value_t = 1)]
    retries_lost: u32,
    #[command(flatten)]
    limits: LimitArgs,
    /// The target and its arguments, after `--`; an argument exactly `@@` is replaced
    /// by the path of a file holding the input (else the input is on stdin).
    #[arg(required = true, trailing_var_arg = true, value_name = "TARGET")]
    target: Vec<OsString>,
}

/// A failure that stops the farm (reported as one line; exit status 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(super) enum FarmError {
    /// The corpus could not be read.
    #[error("cannot read the corpus at {path}: {source}")]
    Corpus {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The corpus has no input file.
    #[error("the corpus {path} holds no regular file: put the inputs there (any depth)")]
    EmptyCorpus {
        /// The directory.
        path: PathBuf,
    },
    /// A finding could not be written under `--out`.
    #[error("cannot write {path}: {source} (is --out writable, with space left?)")]
    Store {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The pool could not start.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// No worker answered.
    #[error("no worker could be reached: {details}")]
    NoWorker {
        /// Each worker and its last error.
        details: String,
    },
    /// Settings (config.toml, flags) could not be used.
    #[error(transparent)]
    Cli(#[from] CliError),
}

/// One input file.
#[derive(Debug)]
struct Input {
    path: PathBuf,
    /// The path as text (lossy) for reports.
    name: String,
}

/// A submission in the pool: which input, its bytes (for a retry and for storing it),
/// how many times it was submitted.
#[derive(Debug)]
struct Flight {
    input: usize,
    data: bytes::Bytes,
    attempts: u32,
}

/// What a submit future gives back.
struct Submitted {
    flight: Flight,
    ticket: Result<u64, SubmitError>,
}

/// Why a submission did not enter the pool.
enum SubmitError {
    /// The input file could not be read.
    Read(std::io::Error),
    /// The pool refused it.
    Pool(PoolError),
}

/// The `--json` line of one finding.
#[derive(Serialize)]
struct FindingLine<'a> {
    event: &'static str,
    #[serde(flatten)]
    meta: &'a FindingMeta,
    /// False when the same input with the same kind was already kept.
    new: bool,
}

/// The `--json` summary line.
#[derive(Serialize)]
struct SummaryLine<'a> {
    event: &'static str,
    #[serde(flatten)]
    summary: &'a report::SummaryJson,
}

/// Each worker's last error: `w1: cannot reach …; w2: …`.
fn worker_errors(workers: &[WorkerSnapshot]) -> String {
    workers
        .iter()
        .map(|w| {
            format!(
                "{}: {}",
                w.name,
                w.last_error.as_deref().unwrap_or("no answer yet")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Spawn failures that depend on the command only: every input would fail the same way.
fn fatal_spawn(failure: SpawnFailure) -> bool {
    matches!(
        failure,
        SpawnFailure::EmptyArgv
            | SpawnFailure::NotFound
            | SpawnFailure::PermissionDenied
            | SpawnFailure::NotExecutable
            | SpawnFailure::BadCwd
    )
}

/// The farm's state while it runs.
struct Farm<'a> {
    args: &'a FarmArgs,
    json: bool,
    inputs: Vec<Input>,
    request: StartRequest,
    store: Store,
    tally: Tally,
    in_flight: HashMap<u64, Flight>,
    retries: VecDeque<Flight>,
    /// Stop submitting: the reason goes to every input not run.
    stop: Option<String>,
}

/// Runs `qexec farm`.
pub(super) async fn farm(conn: &ConnArgs, json: bool, args: FarmArgs) -> Result<u8, CliError> {
    // Listen for Ctrl-C before anything runs remotely, so it is never lost.
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|source| CliError::Runtime { source })?;
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|source| CliError::Runtime { source })?;
    match prepare(conn, json, &args) {
        Err(FarmError::Cli(e)) => Err(e),
        Err(e) => {
            super::report(&e);
            Ok(EXIT_FARM_ERROR)
        }
        Ok((farm, workers)) => run(farm, workers, json, &mut interrupt, &mut terminate)
            .await
            .or_else(|e| match e {
                FarmError::Cli(e) => Err(e),
                e => {
                    super::report(&e);
                    Ok(EXIT_FARM_ERROR)
                }
            }),
    }
}

/// Everything checked before connecting: the request, the corpus, `--out`, the workers.
fn prepare<'a>(
    conn: &ConnArgs,
    json: bool,
    args: &'a FarmArgs,
) -> Result<(Farm<'a>, Vec<qexec_client::pool::Worker>), FarmError> {
    let (argv, _file_mode) = wrap::job_argv(&args.target);
    let argv: Vec<OsString> = argv
        .into_iter()
        .map(std::os::unix::ffi::OsStringExt::from_vec)
        .collect();
    let mut request = args.limits.request(&argv, true)?;
    request.timeout_ms = request
        .timeout_ms
        .or(Some(DEFAULT_TIMEOUT.as_millis() as u64));
    // A farm's jobs belong to it: when it goes away (Ctrl-C), so do they (spec:
    // QX-STREAM-17).
    request.stop_on_detach = true;
    let workers = workers::resolve(conn)?;
    let files = corpus::walk(&args.corpus)?;
    if files.is_empty() {
        return Err(FarmError::EmptyCorpus {
            path: args.corpus.clone(),
        });
    }
    let store = Store::open(&args.out)?;
    let inputs = files
        .into_iter()
        .map(|path| Input {
            name: path.to_string_lossy().into_owned(),
            path,
        })
        .collect::<Vec<_>>();
    let tally = Tally::new(inputs.len(), workers.iter().map(|w| w.name.clone()));
    Ok((
        Farm {
            args,
            json,
            inputs,
            request,
            store,
            tally,
            in_flight: HashMap::new(),
            retries: VecDeque::new(),
            stop: None,
        },
        workers,
    ))
}

/// Reads an input (unless it is a retry) and submits it.
async fn submit(
    pool: &Pool,
    request: StartRequest,
    path: PathBuf,
    mut flight: Flight,
    keep: usize,
) -> Submitted {
    if flight.attempts == 0 {
        match tokio::fs::read(&path).await {
            Ok(data) => flight.data = data.into(),
            Err(e) => {
                return Submitted {
                    flight,
                    ticket: Err(SubmitError::Read(e)),
                };
            }
        }
    }
    flight.attempts += 1;
    let ticket = pool
        .submit(Submission {
            request,
            stdin: Some(flight.data.clone()),
            keep_output: keep,
        })
        .await
        .map_err(SubmitError::Pool);
    Submitted { flight, ticket }
}

/// The loop: keeps one submission going (retries first, then the next input), takes
/// results as they come, draws the progress line, stops on Ctrl-C.
async fn run(
    mut farm: Farm<'_>,
    workers: Vec<qexec_client::pool::Worker>,
    json: bool,
    interrupt: &mut tokio::signal::unix::Signal,
    terminate: &mut tokio::signal::unix::Signal,
) -> Result<u8, FarmError> {
    let started = Instant::now();
    let worker_count = workers.len();
    let options = PoolOptions {
        queue: QUEUE,
        max_per_worker: farm.args.per_worker,
        ..PoolOptions::default()
    };
    let (pool, mut results) = Pool::connect(workers, options).await?;
    let snapshot = pool.workers();
    if !snapshot.iter().any(|w| w.live) {
        return Err(FarmError::NoWorker {
            details: worker_errors(&snapshot),
        });
    }
    let mut no_live_since: Option<Instant> = None;
    let progress = !json && std::io::stderr().is_terminal();
    let keep = usize::try_from(farm.args.keep_output).unwrap_or(usize::MAX);
    let mut next_input = 0usize;
    let mut pending: Option<Pin<Box<dyn Future<Output = Submitted> + '_>>> = None;
    // The input of `pending`.
    let mut pending_input: Option<usize> = None;
    let mut closed = false;
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let pool_ref = &pool;
    loop {
        if farm.stop.is_some() {
            break;
        }
        if pending.is_none() {
            let flight = farm.retries.pop_front().or_else(|| {
                (next_input < farm.inputs.len()).then(|| {
                    next_input += 1;
                    Flight {
                        input: next_input - 1,
                        data: bytes::Bytes::new(),
                        attempts: 0,
                    }
                })
            });
            if let Some(flight) = flight {
                pending_input = Some(flight.input);
                let path = farm.inputs[flight.input].path.clone();
                pending = Some(Box::pin(submit(
                    pool_ref,
                    farm.request.clone(),
                    path,
                    flight,
                    keep,
                )));
            }
        }
        // Close once nothing more can be submitted: every input submitted and no job
        // in flight that a loss could send back (those may need a retry).
        if !closed
            && pending.is_none()
            && farm.retries.is_empty()
            && next_input == farm.inputs.len()
            && farm
                .in_flight
                .values()
                .all(|f| f.attempts > farm.args.retries_lost)
        {
            pool.close();
            closed = true;
        }
        tokio::select! {
            biased;
            _ = interrupt.recv() => {
                farm.tally.interrupt();
                farm.stop = Some("interrupted".to_owned());
            }
            _ = terminate.recv() => {
                farm.tally.interrupt();
                farm.stop = Some("interrupted (SIGTERM)".to_owned());
            }
            done = async { pending.as_mut().expect("guarded").await }, if pending.is_some() => {
                pending = None;
                pending_input = None;
                let Submitted { flight, ticket } = done;
                match ticket {
                    Ok(ticket) => {
                        farm.in_flight.insert(ticket, flight);
                    }
                    Err(SubmitError::Read(e)) => {
                        let name = farm.inputs[flight.input].name.clone();
                        farm.tally.not_run(&name, &format!("cannot read it: {e}"));
                    }
                    Err(SubmitError::Pool(e)) => {
                        let name = farm.inputs[flight.input].name.clone();
                        farm.tally.not_run(&name, &e.to_string());
                        farm.halt(e.to_string());
                    }
                }
            }
            result = results.next() => match result {
                Some(result) => farm.result(result)?,
                None => break,
            },
            _ = tick.tick() => {
                let snapshot = pool.workers();
                let live = snapshot.iter().filter(|w| w.live).count();
                if live > 0 {
                    no_live_since = None;
                } else if no_live_since.get_or_insert_with(Instant::now).elapsed()
                    >= NO_WORKER_GRACE
                {
                    farm.halt(format!(
                        "no worker has been reachable for {}: {}",
                        qexec_client::units::format_duration(NO_WORKER_GRACE),
                        worker_errors(&snapshot)
                    ));
                }
                if progress {
                    let line = farm.tally.progress(started.elapsed(), live, worker_count);
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[K{line}");
                    let _ = err.flush();
                }
            }
        }
    }
    // Whatever did not finish: the submission being made, the jobs in flight (shutting
    // the pool down closes every connection, and the servers stop the jobs: spec
    // QX-STREAM-17), the retries and the inputs never submitted.
    let reason = farm.stop.clone().unwrap_or_else(|| "not run".to_owned());
    drop(pending);
    drop(pool);
    results.shutdown(super::CLOSE_SEND_WAIT).await;
    let mut left: Vec<usize> = pending_input.into_iter().collect();
    left.extend(farm.in_flight.drain().map(|(_, f)| f.input));
    left.extend(farm.retries.drain(..).map(|f| f.input));
    left.extend(next_input..farm.inputs.len());
    left.sort_unstable();
    left.dedup();
    for i in left {
        let name = farm.inputs[i].name.clone();
        farm.tally.not_run(&name, &reason);
    }
    if progress {
        let _ = write!(std::io::stderr(), "\r\x1b[K");
    }
    let elapsed = started.elapsed();
    if json {
        let summary = farm.tally.summary(elapsed);
        super::print_out(&crate::render::json_line(&SummaryLine {
            event: "summary",
            summary: &summary,
        }))?;
    } else {
        super::print_out(
            &farm
                .tally
                .summary_text(elapsed, &farm.args.out.to_string_lossy()),
        )?;
    }
    Ok(farm.tally.exit_status())
}

impl Farm<'_> {
    /// Stops the farm because of `error`: nothing more is submitted, the jobs running
    /// are stopped, the inputs not run are reported.
    fn halt(&mut self, error: String) {
        self.tally.fail(error.clone());
        self.stop.get_or_insert(error);
    }

    /// Takes one result: classifies it, keeps a finding, resubmits a lost input.
    fn result(&mut self, result: JobResult) -> Result<(), FarmError> {
        let Some(flight) = self.in_flight.remove(&result.ticket) else {
            // Every ticket is recorded in the poll that submitted it, before its job
            // can end; a result for no flight is a bug of the pool, reported as such.
            self.halt(format!(
                "the worker pool returned a result for ticket {} it never issued",
                result.ticket
            ));
            return Ok(());
        };
        let worker = result.worker.as_deref();
        let name = self.inputs[flight.input].name.clone();
        let class = match &result.outcome {
            Outcome::Ended(status) => Class::of(status),
            Outcome::Lost { .. } => Class::Lost,
            Outcome::Refused(e) if e.code == ErrorCode::SpawnFailed => {
                Class::FailedToStart(e.spawn.unwrap_or(SpawnFailure::Other))
            }
            Outcome::Refused(e) => {
                let explained = self.args.limits.explain(qexec_client::ClientError::Server {
                    code: e.code,
                    message: e.message.clone(),
                });
                self.tally
                    .not_run(&name, &format!("refused: {}", e.message));
                self.halt(format!(
                    "{} refused the job: {explained}",
                    worker.unwrap_or("a worker")
                ));
                return Ok(());
            }
            Outcome::NoWorker { reason } => {
                self.tally.not_run(&name, &format!("no worker: {reason}"));
                return Ok(());
            }
            other => {
                self.tally.not_run(&name, &format!("{other:?}"));
                return Ok(());
            }
        };
        if class == Class::Lost {
            let reason = match &result.outcome {
                Outcome::Lost { reason } => reason.clone(),
                _ => "the worker stopped the job (its connection closed, or it shut down)".into(),
            };
            let retry = flight.attempts <= self.args.retries_lost;
            let why = format!(
                "lost on {} after {} attempt(s): {reason}",
                worker.unwrap_or("a worker"),
                flight.attempts
            );
            self.tally.lost(worker, &name, retry, &why);
            if retry {
                self.retries.push_back(flight);
            }
            return Ok(());
        }
        self.tally.ran(worker, &class);
        if let Class::FailedToStart(failure) = class {
            let reason = match &result.outcome {
                Outcome::Refused(e) => e.message.clone(),
                _ => crate::render::spawn_failure_name(failure).to_owned(),
            };
            self.tally
                .not_run(&name, &format!("failed to start: {reason}"));
            if fatal_spawn(failure) {
                self.halt(format!(
                    "the target could not start on {}: {reason}",
                    worker.unwrap_or("a worker")
                ));
            }
            return Ok(());
        }
        if class.is_finding() {
            self.keep(&flight, &result, &class)?;
        }
        Ok(())
    }

    /// Stores a finding and reports it (a `--json` line).
    fn keep(
        &mut self,
        flight: &Flight,
        result: &JobResult,
        class: &Class,
    ) -> Result<(), FarmError> {
        let input = &self.inputs[flight.input];
        let sha256 = store::sha256_hex(&flight.data);
        let entry = self.store.entry_path(&sha256, class.kind());
        let (name, name_hex) = crate::render::text_and_hex(std::os::unix::ffi::OsStrExt::as_bytes(
            input.path.as_os_str(),
        ));
        let meta = FindingMeta {
            kind: class.kind().to_owned(),
            signal: match class {
                Class::Crash(sig) => Some(crate::render::signal_name(*sig)),
                _ => None,
            },
            input: name,
            input_hex: name_hex,
            sha256,
            size: flight.data.len() as u64,
            entry: entry.to_string_lossy().into_owned(),
            worker: result.worker.clone(),
            job: result.job.map(|j| j.to_string()),
            elapsed_ms: u64::try_from(result.elapsed.as_millis()).unwrap_or(u64::MAX),
            output_kept: result.output.len() as u64,
            output_truncated: result.output_truncated,
        };
        let kept = self.store.keep(&meta, &flight.data, &result.output)?;
        if self.json {
            super::print_out(&crate::render::json_line(&FindingLine {
                event: "finding",
                meta: &meta,
                new: kept == Kept::New,
            }))?;
        }
        self.tally.finding(FindingRef {
            label: class.label(),
            input: input.name.clone(),
            entry: meta.entry,
            new: kept == Kept::New,
        });
        Ok(())
    }
}
