//! `Start` → `Started` | `Error`; then stdin frames, the output stream of `follow`,
//! and the `stop_on_detach` watch.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;
use std::time::Duration;

use qexec_protocol::{
    ClientMessage, ErrorCode, JobId, ServerMessage, SpawnFailure, StartRequest, StartedResponse,
    StopReason,
};

use super::job_error;
use crate::job::{JobSpec, JobStdin, StartError};
use crate::service::authz::Op;
use crate::service::conn::{ConnCtx, Control, ReadEnd};
use crate::service::output;
use crate::service::request::{MAX_STDIN_FRAME, Refusal, StreamFault, decide};

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
    match e {
        StartError::Spawn {
            failure: SpawnFailure::TooManyJobs,
            message,
        } => (
            Refusal {
                code: ErrorCode::ResourceExhausted,
                message: message.clone(),
            },
            Some(SpawnFailure::TooManyJobs),
        ),
        StartError::Spawn { failure, message } => (
            Refusal {
                code: ErrorCode::SpawnFailed,
                message: message.clone(),
            },
            Some(*failure),
        ),
        #[allow(
            unreachable_patterns,
            reason = "StartError is non_exhaustive and growing"
        )]
        other => (
            Refusal {
                code: ErrorCode::Internal,
                message: other.to_string(),
            },
            None,
        ),
    }
}

pub(crate) async fn handle(ctx: &ConnCtx, mut ctl: Control, req: StartRequest) {
    if let Err(refusal) = decide(&ctx.identity, Op::Start, None, None) {
        ctx.audit(Op::Start, None, Err(refusal.code));
        ctl.refuse(refusal, None).await;
        return;
    }
    let max = ctx.shared.max_jobs_per_user;
    // spec: QX-SRV-2
    let Some(slot) = ctx.shared.user_jobs.reserve(&ctx.identity.name, max) else {
        ctx.audit(Op::Start, None, Err(ErrorCode::ResourceExhausted));
        let message = format!(
            "user {} already has {max} running jobs; wait for one to end or stop one",
            ctx.identity.name
        );
        let r = Refusal {
            code: ErrorCode::ResourceExhausted,
            message,
        };
        ctl.refuse(r, None).await;
        return;
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
    };
    let started = tokio::select! {
        s = ctx.shared.manager.start(spec) => s,
        _ = ctx.conn.closed() => return,
    };
    let started = match started {
        Ok(s) => s,
        Err(e) => {
            let (r, spawn) = start_refusal(&e);
            ctx.audit(Op::Start, None, Err(r.code));
            ctl.refuse(r, spawn).await;
            return;
        }
    };
    let id = started.id;
    ctx.shared.watch_job(id, slot);
    ctx.audit(Op::Start, Some(id), Ok(()));
    let follower = if follow {
        match ctx.shared.manager.follow(id, 0) {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::warn!(job = %id, error = %job_error(id, &e).message, "cannot follow a job just started");
                None
            }
        }
    } else {
        None
    };
    ctl.answer(&[ServerMessage::Started(StartedResponse {
        job: id,
        pid: started.pid,
    })])
    .await;

    let request_stream = ctl.id;
    let input = async {
        let end = if stdin {
            stdin_phase(ctx, &mut ctl, started.stdin).await
        } else {
            if let Some(w) = started.stdin {
                w.close();
            }
            drain(&mut ctl).await
        };
        if stop_on_detach {
            detach_watch(ctx, id, end).await;
        }
    };
    let output = async {
        if let Some(f) = follower {
            output::pump(ctx, request_stream, id, 0, f).await;
        }
    };
    tokio::join!(input, output);
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

/// `StdinData`* `StdinEof` FIN (spec: QX-STREAM-*). If the job stops reading its
/// stdin, further data is read and dropped so the stream still ends cleanly.
async fn stdin_phase(ctx: &ConnCtx, ctl: &mut Control, mut stdin: Option<JobStdin>) -> InputEnd {
    loop {
        match ctl.next_frame().await {
            Ok(Some(ClientMessage::StdinData(data))) => {
                if data.len() > MAX_STDIN_FRAME {
                    return bad_frame(ctl, "StdinData frame larger than 64 KiB");
                }
                if let Some(w) = stdin.as_mut() {
                    let written = tokio::select! {
                        r = w.write_all(&data) => r,
                        _ = ctx.conn.closed() => return InputEnd::Lost,
                    };
                    if written.is_err() {
                        stdin = None;
                    }
                }
            }
            Ok(Some(ClientMessage::StdinEof)) => {
                if let Some(w) = stdin.take() {
                    w.close();
                }
                return match ctl.next_frame().await {
                    Ok(None) => InputEnd::Finished,
                    Ok(Some(_)) => bad_frame(ctl, "frame after StdinEof"),
                    Err(e) => read_end(ctl, e),
                };
            }
            Ok(Some(_)) => {
                return bad_frame(ctl, "only StdinData and StdinEof may follow a Start");
            }
            // FIN without StdinEof: the input ends there too.
            Ok(None) => return InputEnd::Finished,
            Err(e) => return read_end(ctl, e),
        }
    }
}

/// `stop_on_detach`: stop the job if the control stream was reset or the connection
/// is lost before the job ends.
async fn detach_watch(ctx: &ConnCtx, id: JobId, end: InputEnd) {
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
    if detached {
        tracing::info!(job = %id, user = %ctx.identity.name, "client detached: stopping job");
        if let Err(e) = ctx
            .shared
            .manager
            .stop(id, None, StopReason::Detached)
            .await
        {
            tracing::warn!(job = %id, error = %e, "stopping a detached job failed");
        }
    }
}
