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
pub(crate) mod info;
pub(crate) mod list;
pub(crate) mod signal;
pub(crate) mod start;
pub(crate) mod status;
pub(crate) mod stop;

use qexec_protocol::{ClientMessage, ErrorCode, JobId, JobStatus, ServerMessage, SpawnFailure};

use super::authz::Op;
use super::conn::{ConnCtx, Control};
use super::escape::StartAudit;
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
    // spec: QX-SRV-13 (the audit line of a start names its argv and cwd)
    let start = match &msg {
        ClientMessage::Start(r) => Some(StartAudit::of(r)),
        _ => None,
    };
    // spec: QX-SRV-9: held until the control stream is done.
    let mut _in_flight = None;
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
    } else if let Err(refusal) = ctx.request_slot().map(|s| _in_flight = Some(s)) {
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
            ClientMessage::StartTerminal(r) => start::handle_terminal(ctx, r).await,
            ClientMessage::Info => info::handle(ctx),
            ClientMessage::StdinData(_) | ClientMessage::StdinEof | ClientMessage::Resize(_) => {
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
    ctx.audit(op, outcome.job, result, start.as_ref());
    match outcome.reply {
        Err(Refused { refusal, spawn }) => {
            ctl.refuse(refusal, spawn).await;
            end_of_request(ctx, &mut ctl).await;
        }
        Ok(Reply::Answer(msgs)) => {
            ctl.answer(&msgs).await;
            end_of_request(ctx, &mut ctl).await;
        }
        Ok(Reply::Unheard) => {}
        Ok(Reply::Pages(pages)) => pages.run(ctx, &mut ctl).await,
        Ok(Reply::Continue(msgs, next)) => {
            ctl.answer(&msgs).await;
            match next {
                Continuation::Attach(sub) => sub.run(ctx, ctl).await,
                Continuation::Start(running) => running.run(ctx, ctl).await,
            }
        }
    }
}

/// After a final answer: the client's FIN ends the stream, so the server sends no
/// STOP_SENDING after a good request (spec: QX-STREAM-21). Standard input that follows
/// a refused `Start` is not wanted: that side is stopped with `Cancelled`
/// (spec: QX-STREAM-22).
async fn end_of_request(ctx: &ConnCtx, ctl: &mut Control) {
    if ctl.in_stdin() {
        ctl.stop_receiving(&StreamFault {
            code: ErrorCode::Cancelled,
            reason: "standard input of a refused start".to_owned(),
        });
        return;
    }
    ctl.read_to_fin(ctx.shared.request_timeout).await;
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

/// Authorizes `op` on job `id` and then builds its status; else the refusal,
/// `NotFound` alike for missing and invisible jobs.
pub(crate) fn lookup(ctx: &ConnCtx, op: Op, id: JobId) -> Result<JobStatus, Refusal> {
    lookup_with(
        &ctx.identity,
        op,
        id,
        |id| ctx.shared.manager.owner(id),
        |id| ctx.shared.manager.status(id),
    )
}

/// Authorizes `op` on job `id` from its owner alone, before any per-job work (spec:
/// QX-SEC-3: no status built, no cgroupfs read, no argv copied for a job the caller
/// may not see).
pub(crate) fn authorize_job(ctx: &ConnCtx, op: Op, id: JobId) -> Result<(), Refusal> {
    authorize_with(&ctx.identity, op, id, |id| ctx.shared.manager.owner(id))
}

fn authorize_with(
    identity: &qexec_tls::Identity,
    op: Op,
    id: JobId,
    owner_of: impl FnOnce(JobId) -> Result<String, JobError>,
) -> Result<(), Refusal> {
    let owner = match owner_of(id) {
        Ok(o) => Some(o),
        Err(JobError::NotFound(_)) => None,
        Err(e) => return Err(job_error(id, &e)),
    };
    decide(identity, op, Some(id), owner.as_deref())?;
    match owner {
        Some(_) => Ok(()),
        None => Err(job_error(id, &JobError::NotFound(id))),
    }
}

/// [`lookup`] with the job table's two look-ups passed in (unit-testable).
fn lookup_with(
    identity: &qexec_tls::Identity,
    op: Op,
    id: JobId,
    owner_of: impl FnOnce(JobId) -> Result<String, JobError>,
    status_of: impl FnOnce(JobId) -> Result<JobStatus, JobError>,
) -> Result<JobStatus, Refusal> {
    // spec: QX-SEC-3, QX-SRV-14 (authorize first, then the work)
    authorize_with(identity, op, id, owner_of)?;
    status_of(id).map_err(|e| job_error(id, &e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use qexec_tls::{Identity, Role};

    fn who(name: &str, role: Role) -> Identity {
        Identity {
            name: name.to_owned(),
            role,
        }
    }

    #[test]
    fn a_foreign_or_missing_job_is_refused_before_its_status_is_built() {
        let id = JobId::from_u128(42);
        let bob = who("bob", Role::User);
        let never = |_: JobId| -> Result<JobStatus, JobError> {
            panic!("the status of a job the caller may not see was built")
        };
        // Another user's job and a missing job: the same refusal, no status built.
        let foreign =
            lookup_with(&bob, Op::Status, id, |_| Ok("alice".to_owned()), never).unwrap_err();
        let missing = lookup_with(
            &bob,
            Op::Status,
            id,
            |id| Err(JobError::NotFound(id)),
            never,
        )
        .unwrap_err();
        assert_eq!(foreign, missing);
        assert_eq!(foreign.code, ErrorCode::NotFound);
        // A viewer may see the job but not stop it: refused before any work.
        let viewer = who("eve", Role::Viewer);
        let denied = authorize_with(&viewer, Op::Stop, id, |_| Ok("alice".to_owned())).unwrap_err();
        assert_eq!(denied.code, ErrorCode::PermissionDenied);
        // The owner gets past authorization to the status.
        let mut built = false;
        let alice = who("alice", Role::User);
        let r = lookup_with(
            &alice,
            Op::Status,
            id,
            |_| Ok("alice".to_owned()),
            |id| {
                built = true;
                Err(JobError::NotFound(id))
            },
        );
        assert!(built);
        assert_eq!(r.unwrap_err().code, ErrorCode::NotFound);
    }
}
