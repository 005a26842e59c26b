//! `Attach` → `Attached` (+ an output stream) | `Error`.

use qexec_protocol::{AttachRequest, JobId, ServerMessage};
use tokio::sync::OwnedSemaphorePermit;

use super::{Continuation, Outcome, Reply, job_error, lookup};
use crate::job::Follower;
use crate::service::authz::Op;
use crate::service::conn::{ConnCtx, Control};
use crate::service::output;

/// An accepted subscription: the output stream still to be pumped.
#[derive(Debug)]
pub(crate) struct Subscription {
    job: JobId,
    from: u64,
    follower: Follower,
    /// One of the connection's output-stream permits, held while pumping.
    permit: OwnedSemaphorePermit,
}

impl Subscription {
    /// Streams the output on its own stream until `End` or cancellation.
    pub(crate) async fn run(self, ctx: &ConnCtx, ctl: &Control) {
        // spec: QX-STREAM-21 — a job in its detach grace period is kept while its owner
        // follows it.
        let _following = ctx.shared.following(self.job, &ctx.identity.name);
        output::pump(ctx, ctl.id, self.job, self.from, self.follower).await;
        drop(self.permit);
    }
}

pub(crate) fn handle(ctx: &ConnCtx, req: AttachRequest) -> Outcome {
    let subscription = lookup(ctx, Op::Follow, req.job).and_then(|_| {
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
