//! `Attach` → `Attached` (+ an output stream) | `Error`.
//!
//! The control stream ends with the answer; the subscription lives on its output
//! stream alone (spec: QX-STREAM-21, QX-STREAM-15).

use qexec_protocol::{AttachRequest, JobId, ServerMessage};

use super::{Continuation, Outcome, Reply, authorize_job, job_error};
use crate::job::Follower;
use crate::service::authz::Op;
use crate::service::conn::{ConnCtx, Control, SubscriptionPermit};
use crate::service::output;

/// An accepted subscription: the output stream still to be pumped.
#[derive(Debug)]
pub(crate) struct Subscription {
    job: JobId,
    from: u64,
    follower: Follower,
    /// One of the connection's output-stream permits, held while pumping.
    permit: SubscriptionPermit,
}

impl Subscription {
    /// Streams the output on its own stream until `End` or cancellation. The control
    /// stream ends with its answer: it is read to the client's FIN and released at
    /// once, so a live subscription holds no bidirectional-stream credit (spec:
    /// QX-STREAM-21). Only STOP_SENDING on the output stream cancels the subscription
    /// (spec: QX-STREAM-15); what the client does with the control stream after the
    /// request no longer matters to it.
    pub(crate) async fn run(self, ctx: &ConnCtx, mut ctl: Control) {
        // spec: QX-STREAM-24 — a job in its detach grace period is kept while its owner
        // follows it.
        let _following = ctx.shared.following(self.job, &ctx.identity.name);
        let request_stream = ctl.id;
        let control = async move {
            ctl.read_to_fin(ctx.shared.request_timeout).await;
            drop(ctl);
        };
        let output = output::pump(ctx, request_stream, self.job, self.from, self.follower);
        tokio::join!(control, output);
        drop(self.permit);
    }
}

pub(crate) fn handle(ctx: &ConnCtx, req: AttachRequest) -> Outcome {
    let subscription = authorize_job(ctx, Op::Follow, req.job).and_then(|()| {
        let permit = output::subscription_permit(ctx)?;
        let follower = ctx
            .shared
            .manager
            .follow(req.job, req.from)
            .map_err(|e| job_error(req.job, &e))?;
        Ok(Subscription {
            job: req.job,
            from: req.from,
            follower,
            permit,
        })
    });
    match subscription {
        Ok(sub) => Outcome {
            job: Some(req.job),
            reply: Ok(Reply::Continue(
                vec![ServerMessage::Attached { job: req.job }],
                Continuation::Attach(sub),
            )),
        },
        Err(r) => Outcome::refused(Some(req.job), r),
    }
}
