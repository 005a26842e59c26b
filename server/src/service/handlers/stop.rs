//! `Stop` → `Status` | `Error`.

use std::time::Duration;

use qexec_protocol::{ServerMessage, StopReason, StopRequest};

use super::{job_error, lookup};
use crate::service::authz::Op;
use crate::service::conn::{ConnCtx, Control};

pub(crate) async fn handle(ctx: &ConnCtx, mut ctl: Control, req: StopRequest) {
    if let Err(r) = lookup(ctx, Op::Stop, req.job) {
        ctx.audit(Op::Stop, Some(req.job), Err(r.code));
        ctl.refuse(r, None).await;
        return;
    }
    let stop = ctx.shared.manager.stop(
        req.job,
        req.grace_ms.map(Duration::from_millis),
        StopReason::Requested {
            by: ctx.identity.name.clone(),
        },
    );
    // The stop waits up to the grace period; a lost connection abandons the answer,
    // not the stop (the job manager finishes it).
    let result = tokio::select! {
        r = stop => r,
        _ = ctx.conn.closed() => {
            ctx.audit(Op::Stop, Some(req.job), Ok(()));
            return;
        }
    };
    match result {
        Ok(status) => {
            ctx.audit(Op::Stop, Some(req.job), Ok(()));
            ctl.answer(&[ServerMessage::Status(status)]).await;
        }
        Err(e) => {
            let r = job_error(req.job, &e);
            ctx.audit(Op::Stop, Some(req.job), Err(r.code));
            ctl.refuse(r, None).await;
        }
    }
}
