//! `Status` → `Status` | `Error`.

use qexec_protocol::{ServerMessage, StatusRequest};

use super::lookup;
use crate::service::authz::Op;
use crate::service::conn::{ConnCtx, Control};

pub(crate) async fn handle(ctx: &ConnCtx, mut ctl: Control, req: StatusRequest) {
    match lookup(ctx, Op::Status, req.job) {
        Ok(status) => {
            ctx.audit(Op::Status, Some(req.job), Ok(()));
            ctl.answer(&[ServerMessage::Status(status)]).await;
        }
        Err(r) => {
            ctx.audit(Op::Status, Some(req.job), Err(r.code));
            ctl.refuse(r, None).await;
        }
    }
}
