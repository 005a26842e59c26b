//! `Attach` → `Attached` (+ an output stream) | `Error`.

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
    /// Streams the output on its own stream until `End` or cancellation.
    pub(crate) async fn run(self, ctx: &ConnCtx, ctl: &Control) {
        output::pump(ctx, ctl.id, self.job, self.from, self.follower).await;
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
