//! `List` → `ListItem`* `ListEnd` | `Error`. Only jobs visible to the caller.

use qexec_protocol::{ListRequest, ServerMessage};

use super::Outcome;
use crate::service::authz::{Op, visible};
use crate::service::conn::ConnCtx;
use crate::service::request::decide;

pub(crate) fn handle(ctx: &ConnCtx, req: ListRequest) -> Outcome {
    if let Err(refusal) = decide(&ctx.identity, Op::List, None, None) {
        return Outcome::refused(None, refusal);
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
    Outcome::answer(None, msgs)
}
