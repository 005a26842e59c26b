//! `Start` and `StartTerminal` → `Started` | `Error`; then stdin frames (a terminal
//! job's keystrokes and `Resize`s), the output stream of `follow`, and the
//! `stop_on_detach` watch.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

use qexec_protocol::{
    ClientMessage, ErrorCode, JobId, ServerMessage, SpawnFailure, StartRequest,
    StartTerminalRequest, StartedResponse, StopReason, TerminalSpec, validate_window_size,
};

use super::{Continuation, Outcome, Refused, Reply, job_error};
use crate::job::{Follower, JobSpec, JobStdin, JobTerminal, StartError};
use crate::service::authz::Op;
use crate::service::conn::{ConnCtx, Control, ReadEnd, SubscriptionPermit};
use crate::service::output;
use crate::service::request::{Refusal, StreamFault, decide};
use crate::service::{OUTPUT_PRIORITY, TERMINAL_OUTPUT_PRIORITY};

/// How the client side of a start's control stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputEnd {
    /// Cleanly (FIN, after `StdinEof` when stdin was sent).
    Finished,
    /// The client reset the stream.
    Reset,
    /// The connection went away.
    Lost,
    /// A bad frame; the stream was stopped.
    Fault,
}

fn start_refusal(e: &StartError) -> (Refusal, Option<SpawnFailure>) {
    let refusal = |code| Refusal {
        code,
        message: e.to_string(),
    };
    match e {
        StartError::TooManyJobs { .. } | StartError::NoUidSlot { .. } => (
            refusal(ErrorCode::ResourceExhausted),
            Some(SpawnFailure::TooManyJobs),
        ),
        StartError::Spawn {
            failure: SpawnFailure::TooManyJobs,
            ..
        } => (
            refusal(ErrorCode::ResourceExhausted),
            Some(SpawnFailure::TooManyJobs),
        ),
        StartError::Spawn { failure, .. } => (refusal(ErrorCode::SpawnFailed), Some(*failure)),
        // spec: QX-ERR-5 — a limit the server cannot or will not honour is the
        // caller's argument, never clamped and never an internal failure.
        StartError::InvalidLimits { .. }
        | StartError::LimitTooSmall { .. }
        | StartError::LimitUnavailable { .. } => (refusal(ErrorCode::InvalidArgument), None),
        StartError::Cgroup { .. } => (refusal(ErrorCode::SpawnFailed), Some(SpawnFailure::Setup)),
        StartError::ShuttingDown => (refusal(ErrorCode::ShuttingDown), None),
        // spec: QX-SBX-13 (without the sandbox only admins may run host-root jobs)
        StartError::HostRootRefused { .. } => (refusal(ErrorCode::PermissionDenied), None),
        // `Io`, `Internal`, and any variant a later qexec-job adds (`StartError` is
        // non_exhaustive and defined in that crate): a server-side failure.
        _ => {
            tracing::error!(error = %e, "job start failed on the server side");
            (refusal(ErrorCode::Internal), None)
        }
    }
}

/// A started job's second phase: stdin, the output stream of `follow`, and the
/// `stop_on_detach` watch.
#[derive(Debug)]
pub(crate) struct Running {
    id: JobId,
    stdin: bool,
    stop_on_detach: bool,
    writer: Option<JobStdin>,
    /// A terminal job's window: keystrokes and `Resize` frames follow the start.
    terminal: Option<JobTerminal>,
    follower: Option<(SubscriptionPermit, Follower)>,
}

/// `StartTerminal`: a start whose job runs on a terminal (spec: QX-TERM-1, QX-TERM-5).
pub(crate) async fn handle_terminal(ctx: &ConnCtx, req: StartTerminalRequest) -> Outcome {
    start(ctx, req.start, Some(req.terminal)).await
}

pub(crate) async fn handle(ctx: &ConnCtx, req: StartRequest) -> Outcome {
    start(ctx, req, None).await
}

async fn start(ctx: &ConnCtx, req: StartRequest, terminal: Option<TerminalSpec>) -> Outcome {
    if let Err(refusal) = decide(&ctx.identity, Op::Start, None, None) {
        return Outcome::refused(None, refusal);
    }
    let max = ctx.shared.max_jobs_per_user;
    // spec: QX-SRV-2
    let Some(slot) = ctx.shared.user_jobs.reserve(&ctx.identity.name, max) else {
        let message = format!(
            "user {} already has {max} running jobs; wait for one to end or stop one",
            ctx.identity.name
        );
        let r = Refusal {
            code: ErrorCode::ResourceExhausted,
            message,
        };
        return Outcome::refused(None, r);
    };
    // A followed start needs an output stream: refuse before starting the job.
    let permit = if req.follow {
        match output::subscription_permit(ctx) {
            Ok(p) => Some(p),
            Err(r) => return Outcome::refused(None, r),
        }
    } else {
        None
    };
    let StartRequest {
        argv,
        env,
        cwd,
        limits,
        timeout_ms,
        stdin,
        follow,
        stop_on_detach,
    } = req;
    let spec = JobSpec {
        argv,
        env,
        cwd: cwd.map(|c| PathBuf::from(OsString::from_vec(c))),
        stdin,
        timeout: timeout_ms.map(Duration::from_millis),
        owner: ctx.identity.name.clone(),
        limits,
        // spec: QX-SBX-13 (only admins may run as host root without the sandbox)
        host_root_allowed: ctx.identity.role == qexec_tls::Role::Admin,
        terminal,
    };
    // Not cancelled by a lost connection: a job that was started must be tracked
    // (user slot, stop_on_detach) even if nobody hears the answer.
    let started = match ctx.shared.manager.start(spec).await {
        Ok(s) => s,
        Err(e) => {
            let (r, spawn) = start_refusal(&e);
            return Outcome {
                job: None,
                reply: Err(Refused { refusal: r, spawn }),
            };
        }
    };
    let id = started.id;
    ctx.shared.watch_job(id, slot);
    let follower = match (permit, follow) {
        (Some(permit), true) => match ctx.shared.manager.follow(id, 0) {
            Ok(f) => Some((permit, f)),
            Err(e) => {
                let r = job_error(id, &e);
                tracing::warn!(job = %id, error = %r.message, "cannot follow a job just started");
                None
            }
        },
        _ => None,
    };
    let answer = vec![ServerMessage::Started(StartedResponse {
        job: id,
        pid: started.pid,
    })];
    let running = Running {
        id,
        stdin,
        stop_on_detach,
        writer: started.stdin,
        terminal: started.terminal,
        follower,
    };
    Outcome {
        job: Some(id),
        reply: Ok(Reply::Continue(
            answer,
            Continuation::Start(Box::new(running)),
        )),
    }
}

impl Running {
    /// Runs stdin and the output stream side by side until both ended.
    pub(crate) async fn run(self, ctx: &ConnCtx, mut ctl: Control) {
        let Self {
            id,
            stdin,
            stop_on_detach,
            writer,
            terminal,
            follower,
        } = self;
        let request_stream = ctl.id;
        let on_terminal = terminal.is_some();
        let input = async {
            let (end, held_stdin) = if stdin || terminal.is_some() {
                input_phase(ctx, &mut ctl, writer, terminal).await
            } else {
                if let Some(w) = writer {
                    w.close();
                }
                (drain(&mut ctl).await, None)
            };
            if stop_on_detach {
                detach_watch(ctx, id, end, held_stdin).await;
            } else {
                drop(held_stdin);
            }
        };
        let priority = if on_terminal {
            TERMINAL_OUTPUT_PRIORITY
        } else {
            OUTPUT_PRIORITY
        };
        let output = async {
            if let Some((permit, f)) = follower {
                output::pump_at(ctx, request_stream, id, 0, f, priority).await;
                drop(permit);
            }
        };
        tokio::join!(input, output);
    }
}

fn bad_frame(ctl: &mut Control, reason: &str) -> InputEnd {
    ctl.stop_receiving(&StreamFault {
        code: ErrorCode::ProtocolViolation,
        reason: reason.to_owned(),
    });
    InputEnd::Fault
}

fn read_end(ctl: &mut Control, e: ReadEnd) -> InputEnd {
    match e {
        ReadEnd::Reset => InputEnd::Reset,
        ReadEnd::Lost => InputEnd::Lost,
        ReadEnd::Fault(f) => {
            ctl.stop_receiving(&f);
            InputEnd::Fault
        }
    }
}

/// No stdin: the client's side must simply finish.
async fn drain(ctl: &mut Control) -> InputEnd {
    match ctl.next_frame().await {
        Ok(None) => InputEnd::Finished,
        Ok(Some(_)) => bad_frame(ctl, "frame after a Start without stdin"),
        Err(e) => read_end(ctl, e),
    }
}

/// The input a started job's stream carries (spec: QX-STREAM-*): `StdinData`*
/// `StdinEof` FIN, or on a terminal (`terminal` given, spec: QX-TERM-3)
/// (`StdinData` | `Resize`)* `StdinEof` FIN.
///
/// Bytes go to the job's stdin, or to the terminal's master as keystrokes. If the job
/// stops reading its stdin, further data is read and dropped so the stream still ends
/// cleanly. A `Resize` sets the window size (the job's foreground group gets
/// SIGWINCH, spec: QX-TERM-7); one with rows or columns out of range breaks the
/// protocol (spec: QX-TERM-4). `StdinEof` closes a pipe stdin; on a terminal it ends
/// the input but not the terminal (a `^D` keystroke is how a terminal says EOF). When
/// the stream is reset or the connection lost, the writer is handed back still open,
/// so that a `stop_on_detach` stop comes before the job sees EOF.
async fn input_phase(
    ctx: &ConnCtx,
    ctl: &mut Control,
    mut stdin: Option<JobStdin>,
    terminal: Option<JobTerminal>,
) -> (InputEnd, Option<JobStdin>) {
    loop {
        match ctl.next_frame().await {
            Ok(Some(ClientMessage::StdinData(data))) => {
                if let Some(w) = stdin.as_mut() {
                    let written = tokio::select! {
                        r = w.write_all(&data) => r,
                        _ = ctx.conn.closed() => return (InputEnd::Lost, stdin),
                    };
                    if written.is_err() {
                        stdin = None;
                    }
                }
            }
            Ok(Some(ClientMessage::Resize(size))) if terminal.is_some() => {
                if let Err(e) = validate_window_size(&size) {
                    return (bad_frame(ctl, &e.to_string()), None);
                }
                if let Some(Err(e)) = terminal.as_ref().map(|t| t.resize(size)) {
                    tracing::debug!(error = %e, "resizing a terminal failed (job gone?)");
                }
            }
            Ok(Some(ClientMessage::StdinEof)) => {
                if terminal.is_none()
                    && let Some(w) = stdin.take()
                {
                    w.close();
                }
                let end = match ctl.next_frame().await {
                    Ok(None) => InputEnd::Finished,
                    Ok(Some(_)) => bad_frame(ctl, "frame after StdinEof"),
                    Err(e) => read_end(ctl, e),
                };
                return (end, None);
            }
            Ok(Some(_)) => {
                let reason = if terminal.is_some() {
                    "only StdinData, Resize and StdinEof may follow a StartTerminal"
                } else {
                    "only StdinData and StdinEof may follow a Start"
                };
                return (bad_frame(ctl, reason), None);
            }
            // The stream state refuses a FIN before StdinEof (a fault, below); the
            // job's stdin is closed either way when `stdin` is dropped.
            Ok(None) => return (InputEnd::Finished, None),
            Err(e) => {
                let end = read_end(ctl, e);
                let keep = matches!(end, InputEnd::Reset | InputEnd::Lost);
                return (end, if keep { stdin } else { None });
            }
        }
    }
}

/// `stop_on_detach`: stop the job if the control stream was reset or the connection
/// closed by the client before the job ends; a connection *lost* (idle timeout,
/// stateless reset) gets the grace period instead (spec: QX-STREAM-24). `stdin` is
/// held open until then: an EOF before the stop would let the job end by itself
/// (`cat` exits 0) instead of being stopped (spec: QX-SRV-7).
async fn detach_watch(ctx: &ConnCtx, id: JobId, end: InputEnd, stdin: Option<JobStdin>) {
    // spec: QX-SRV-7
    let detached = match end {
        InputEnd::Reset | InputEnd::Lost => true,
        InputEnd::Finished | InputEnd::Fault => {
            tokio::select! {
                _ = ctx.shared.manager.wait(id) => false,
                _ = ctx.conn.closed() => true,
            }
        }
    };
    if !detached {
        return;
    }
    // A reset stream or a close by the client is meant; a lost connection may come back.
    let meant = end == InputEnd::Reset || crate::service::closed_by_client(&ctx.conn);
    if !meant && !ctx.shared.detach_grace.is_zero() {
        ctx.shared
            .keep_detached(id, ctx.identity.name.clone(), stdin);
        return;
    }
    tracing::info!(job = %id, user = %ctx.identity.name, "client detached: stopping job");
    if let Err(e) = ctx
        .shared
        .manager
        .stop(id, None, StopReason::Detached)
        .await
    {
        tracing::warn!(job = %id, error = %e, "stopping a detached job failed");
    }
    drop(stdin);
}
