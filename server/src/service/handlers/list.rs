//! `List` → `ListItem`* `ListEnd` | `Error`. Only jobs visible to the caller.

use qexec_protocol::{ListRequest, ServerMessage};

use crate::service::authz::{Decision, Op, authorize, visible};
use crate::service::conn::{ConnCtx, Control};
use crate::service::request::Refusal;

pub(crate) async fn handle(ctx: &ConnCtx, mut ctl: Control, req: ListRequest) {
    if let Some(code) = authorize(&ctx.identity, Op::List, None).error_code() {
        ctx.audit(Op::List, None, Err(code));
        let refusal = Refusal {
            code,
            message: format!("role {} may not list jobs", ctx.identity.role),
        };
        ctl.refuse(refusal, None).await;
        return;
    }
    debug_assert_eq!(authorize(&ctx.identity, Op::List, None), Decision::Allow);
    let mut msgs: Vec<ServerMessage> = ctx
        .shared
        .manager
        .list()
        .into_iter()
        .filter(|s| visible(&ctx.identity, &s.owner))
        .filter(|s| !req.running_only || s.state.is_running())
        .map(ServerMessage::ListItem)
        .collect();
    msgs.push(ServerMessage::ListEnd);
    ctx.audit(Op::List, None, Ok(()));
    ctl.answer(&msgs).await;
}
