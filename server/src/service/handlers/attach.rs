//! `Attach` → `Attached` (+ an output stream) | `Error`.

use qexec_protocol::{AttachRequest, ServerMessage};

use super::{job_error, lookup};
use crate::service::authz::Op;
use crate::service::conn::{ConnCtx, Control};
use crate::service::output;

pub(crate) async fn handle(ctx: &ConnCtx, mut ctl: Control, req: AttachRequest) {
    let follower = lookup(ctx, Op::Follow, req.job).and_then(|_| {
        let permit = output::subscription_permit(ctx)?;
        let follower = ctx
            .shared
            .manager
            .follow(req.job, req.from)
            .map_err(|e| job_error(req.job, &e))?;
        Ok((permit, follower))
    });
    match follower {
        Ok((permit, follower)) => {
            ctx.audit(Op::Follow, Some(req.job), Ok(()));
            ctl.answer(&[ServerMessage::Attached { job: req.job }])
                .await;
            output::pump(ctx, ctl.id, req.job, req.from, follower).await;
            drop(permit);
        }
        Err(r) => {
            ctx.audit(Op::Follow, Some(req.job), Err(r.code));
            ctl.refuse(r, None).await;
        }
    }
}
