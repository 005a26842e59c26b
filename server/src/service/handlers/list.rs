//! `List` → `ListItem`* `ListEnd` | `Error`. Only jobs visible to the caller.

use qexec_protocol::{ListRequest, ServerMessage};

use crate::service::authz::{Op, visible};
use crate::service::conn::{ConnCtx, Control};
use crate::service::request::decide;

pub(crate) async fn handle(ctx: &ConnCtx, mut ctl: Control, req: ListRequest) {
    if let Err(refusal) = decide(&ctx.identity, Op::List, None, None) {
        ctx.audit(Op::List, None, Err(refusal.code));
        ctl.refuse(refusal, None).await;
        return;
    }
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
