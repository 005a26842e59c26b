//! `List` → `ListItem`* `ListEnd` | `Error`, and `ListQuery` → `ListEntry`*
//! `ListPageEnd` | `Error`. Only jobs visible to the caller (spec: QX-AUTHZ-*,
//! QX-LIST-*).

use qexec_protocol::{ListEntry, ListQuery, ListRequest, ServerMessage};
use qexec_tls::{Identity, Role};

use super::Outcome;
use crate::job::ListFilter;
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

/// The manager's filter for `query` asked by `identity`; `None` when nothing can
/// match (a `user` asking for another owner's jobs: spec QX-LIST-3).
pub(crate) fn filter_for(identity: &Identity, query: ListQuery) -> Option<ListFilter> {
    let owner = match identity.role {
        Role::Admin | Role::Viewer => query.owner,
        Role::User => match query.owner {
            Some(o) if o != identity.name => return None,
            _ => Some(identity.name.clone()),
        },
    };
    Some(ListFilter {
        state: query.state,
        owner,
        since_ms: query.since_ms,
        id_prefix: query.id_prefix,
        limit: usize::try_from(query.limit).unwrap_or(usize::MAX),
        cursor: query.cursor,
        newest_first: query.newest_first,
    })
}

pub(crate) fn handle_query(ctx: &ConnCtx, query: ListQuery) -> Outcome {
    if let Err(refusal) = decide(&ctx.identity, Op::List, None, None) {
        return Outcome::refused(None, refusal);
    }
    let page = match filter_for(&ctx.identity, query) {
        Some(filter) => ctx.shared.manager.list_page(&filter),
        None => Default::default(),
    };
    let mut msgs: Vec<ServerMessage> = page
        .entries
        .into_iter()
        .map(|(seq, status)| ServerMessage::ListEntry(ListEntry { seq, status }))
        .collect();
    msgs.push(ServerMessage::ListPageEnd { next: page.next });
    Outcome::answer(None, msgs)
}
