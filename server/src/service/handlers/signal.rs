//! `Signal` → `Status` | `Error`.

use qexec_protocol::{ServerMessage, SignalRequest};

use super::{job_error, lookup};
use crate::service::authz::Op;
use crate::service::conn::{ConnCtx, Control};

pub(crate) async fn handle(ctx: &ConnCtx, mut ctl: Control, req: SignalRequest) {
    let result = lookup(ctx, Op::Signal, req.job).and_then(|_| {
        ctx.shared
            .manager
            .signal(req.job, req.signal)
            .map_err(|e| job_error(req.job, &e))
    });
    match result {
        Ok(status) => {
            ctx.audit(Op::Signal, Some(req.job), Ok(()));
            ctl.answer(&[ServerMessage::Status(status)]).await;
        }
        Err(r) => {
            ctx.audit(Op::Signal, Some(req.job), Err(r.code));
            ctl.refuse(r, None).await;
        }
    }
}
