//! `Attach` → `Attached` (+ an output stream) | `Error`.

use qexec_protocol::{AttachRequest, ServerMessage};

use super::{job_error, lookup};
use crate::service::authz::Op;
use crate::service::conn::{ConnCtx, Control};
use crate::service::output;

pub(crate) async fn handle(ctx: &ConnCtx, mut ctl: Control, req: AttachRequest) {
    let follower = lookup(ctx, Op::Follow, req.job).and_then(|_| {
        ctx.shared
            .manager
            .follow(req.job, req.from)
            .map_err(|e| job_error(req.job, &e))
    });
    match follower {
        Ok(follower) => {
            ctx.audit(Op::Follow, Some(req.job), Ok(()));
            ctl.answer(&[ServerMessage::Attached { job: req.job }])
                .await;
            output::pump(ctx, ctl.id, req.job, req.from, follower).await;
        }
        Err(r) => {
            ctx.audit(Op::Follow, Some(req.job), Err(r.code));
            ctl.refuse(r, None).await;
        }
    }
}
