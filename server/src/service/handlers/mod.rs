//! One handler per request kind, and the dispatcher that runs them.
//!
//! A handler only decides: it authorizes with [`super::request::decide`] (through
//! [`lookup`] for requests that name a job), does the work, and returns an [`Outcome`]
//! — the job the audit line names and the reply. The [`dispatch`]er is the one place
//! that validates, refuses during shutdown, writes the request's audit line (spec:
//! QX-AUTHZ-4: exactly one per request, whatever the path) and sends the reply. A
//! request with a second phase (`Start`'s stdin and output stream, `Attach`'s output
//! stream) returns it as a [`Continuation`], run after the answer was sent.

pub(crate) mod attach;
pub(crate) mod list;
pub(crate) mod signal;
pub(crate) mod start;
pub(crate) mod status;
pub(crate) mod stop;

use qexec_protocol::{ClientMessage, ErrorCode, JobId, JobStatus, ServerMessage, SpawnFailure};

use super::authz::Op;
use super::conn::{ConnCtx, Control};
use super::request::{self, Refusal, StreamFault, decide, not_found_message};
use crate::job::JobError;

/// What a handler decided about one request.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The job the audit line names (the new job's id for a successful start).
    pub(crate) job: Option<JobId>,
    /// The reply, or the refusal.
    pub(crate) reply: Result<Reply, Refused>,
}

impl Outcome {
    /// A plain answer about `job`.
    fn answer(job: Option<JobId>, msgs: Vec<ServerMessage>) -> Self {
        Self {
            job,
            reply: Ok(Reply::Answer(msgs)),
        }
    }

    /// A refusal of a request about `job`.
    fn refused(job: Option<JobId>, refusal: Refusal) -> Self {
        Self {
            job,
            reply: Err(Refused {
                refusal,
                spawn: None,
            }),
        }
    }

    /// A `Status` answer or a refusal, about `job`.
    fn status(job: JobId, result: Result<JobStatus, Refusal>) -> Self {
        match result {
            Ok(status) => Self::answer(Some(job), vec![ServerMessage::Status(status)]),
            Err(r) => Self::refused(Some(job), r),
        }
    }
}

/// A refused request: the `Error` answer, with the spawn failure of a start.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) refusal: Refusal,
    pub(crate) spawn: Option<SpawnFailure>,
}

/// What the dispatcher sends for an accepted request.
#[derive(Debug)]
pub(crate) enum Reply {
    /// These messages, then FIN.
    Answer(Vec<ServerMessage>),
    /// Nothing: the connection closed while the request was carried out (a `Stop`
    /// waiting out its grace period); the work itself was done.
    Unheard,
    /// These messages (not finished), then the request's second phase.
    Continue(Vec<ServerMessage>, Continuation),
    /// A `List` answer, sent one page at a time as the client reads it.
    Pages(list::Pages),
}

/// The second phase of a request, after its answer.
#[derive(Debug)]
pub(crate) enum Continuation {
    /// `Attach`: the output stream.
    Attach(attach::Subscription),
    /// `Start`: stdin, the output stream of `follow`, the `stop_on_detach` watch.
    Start(Box<start::Running>),
}

/// Validates, refuses during shutdown, runs the handler of the request's kind, writes
/// the one audit line and sends the reply.
pub(crate) async fn dispatch(ctx: &ConnCtx, mut ctl: Control, op: Op, msg: ClientMessage) {
    let named = request::job_of(&msg);
    let outcome = if let Err(refusal) = request::validate(&msg) {
        Outcome::refused(named, refusal)
    } else if *ctx.shared.shutting_down.borrow() {
        // spec: QX-ERR-8
        let refusal = Refusal {
            code: ErrorCode::ShuttingDown,
            message: "the server is shutting down; retry against another server or later"
                .to_owned(),
        };
        Outcome::refused(named, refusal)
    } else {
        match msg {
            ClientMessage::Start(r) => start::handle(ctx, r).await,
            ClientMessage::Stop(r) => stop::handle(ctx, r).await,
            ClientMessage::Status(r) => status::handle(ctx, r),
            ClientMessage::List(r) => list::handle(ctx, r),
            ClientMessage::ListQuery(r) => list::handle_query(ctx, r),
            ClientMessage::Attach(r) => attach::handle(ctx, r),
            ClientMessage::Signal(r) => signal::handle(ctx, r),
            ClientMessage::StdinData(_) | ClientMessage::StdinEof => {
                // The caller's `op_of` refused these; kept total without a panic path.
                ctl.fault(&StreamFault {
                    code: ErrorCode::ProtocolViolation,
                    reason: "stdin frame before any Start request".to_owned(),
                });
                return;
            }
        }
    };
    // spec: QX-AUTHZ-4
    let result = match &outcome.reply {
        Ok(_) => Ok(()),
        Err(r) => Err(r.refusal.code),
    };
    ctx.audit(op, outcome.job, result);
    match outcome.reply {
        Err(Refused { refusal, spawn }) => ctl.refuse(refusal, spawn).await,
        Ok(Reply::Answer(msgs)) => ctl.answer(&msgs).await,
        Ok(Reply::Unheard) => {}
        Ok(Reply::Pages(pages)) => pages.run(ctx, &mut ctl).await,
        Ok(Reply::Continue(msgs, next)) => {
            ctl.answer(&msgs).await;
            match next {
                Continuation::Attach(sub) => sub.run(ctx, &ctl).await,
                Continuation::Start(running) => running.run(ctx, ctl).await,
            }
        }
    }
}

/// Maps a job-library error on job `id` to the answer. A job that vanished is
/// `NotFound` with the same message as an invisible one.
pub(crate) fn job_error(id: JobId, e: &JobError) -> Refusal {
    match e {
        JobError::NotFound(_) => Refusal {
            code: ErrorCode::NotFound,
            message: not_found_message(id),
        },
        JobError::InvalidSignal { .. } => Refusal {
            code: ErrorCode::InvalidArgument,
            message: e.to_string(),
        },
        // JobError is non_exhaustive (another crate) and growing.
        other => Refusal {
            code: ErrorCode::Internal,
            message: format!("job {id}: {other}"),
        },
    }
}

/// Looks job `id` up and authorizes `op` on it: its status if allowed; else the
/// refusal, `NotFound` alike for missing and invisible jobs.
pub(crate) fn lookup(ctx: &ConnCtx, op: Op, id: JobId) -> Result<JobStatus, Refusal> {
    let status = match ctx.shared.manager.status(id) {
        Ok(s) => Some(s),
        Err(JobError::NotFound(_)) => None,
        Err(e) => return Err(job_error(id, &e)),
    };
    decide(
        &ctx.identity,
        op,
        Some(id),
        status.as_ref().map(|s| s.owner.as_str()),
    )?;
    status.ok_or_else(|| job_error(id, &JobError::NotFound(id)))
}
