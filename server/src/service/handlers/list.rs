//! `List` → `ListItem`* `ListEnd` | `Error`, and `ListQuery` → `ListEntry`*
//! `ListPageEnd` | `Error`. Only jobs visible to the caller (spec: QX-AUTHZ-*,
//! QX-LIST-*).
//!
//! Neither answer is built whole: a `ListQuery` page holds at most `limit` entries
//! and [`MAX_PAGE_ARGV_BYTES`](crate::job::MAX_PAGE_ARGV_BYTES) of argv; a `List`
//! answer is sent [`LIST_PAGE`] jobs at a time, the next page built only once the
//! previous one was handed to QUIC (which waits while the client's stream window is
//! full). An unread answer pins one page (spec: QX-LIST-4).

use qexec_protocol::{ListEntry, ListQuery, ListRequest, ListStateFilter, ServerMessage};
use qexec_tls::{Identity, Role};

use super::{Outcome, Reply};
use crate::job::ListFilter;
use crate::service::authz::Op;
use crate::service::conn::{ConnCtx, Control};
use crate::service::request::decide;

/// Jobs per page of a `List` answer.
pub(crate) const LIST_PAGE: usize = 100;

pub(crate) fn handle(ctx: &ConnCtx, req: ListRequest) -> Outcome {
    if let Err(refusal) = decide(&ctx.identity, Op::List, None, None) {
        return Outcome::refused(None, refusal);
    }
    let query = ListQuery {
        state: if req.running_only {
            ListStateFilter::Running
        } else {
            ListStateFilter::Any
        },
        ..ListQuery::all(1)
    };
    let pages = filter_for(&ctx.identity, query).map(|mut filter| {
        filter.limit = LIST_PAGE;
        filter
    });
    Outcome {
        job: None,
        reply: Ok(Reply::Pages(Pages { filter: pages })),
    }
}

/// The rest of a `List` answer.
#[derive(Debug)]
pub(crate) struct Pages {
    /// `None`: nothing can match.
    filter: Option<ListFilter>,
}

impl Pages {
    /// Sends every page, then `ListEnd` and FIN.
    pub(crate) async fn run(self, ctx: &ConnCtx, ctl: &mut Control) {
        let Some(mut filter) = self.filter else {
            ctl.answer(&[ServerMessage::ListEnd]).await;
            return;
        };
        loop {
            let page = ctx.shared.manager.list_page(&filter);
            let mut msgs: Vec<ServerMessage> = page
                .entries
                .into_iter()
                .map(|(_, status)| ServerMessage::ListItem(status))
                .collect();
            match page.next {
                Some(cursor) => {
                    filter.cursor = Some(cursor);
                    if !ctl.answer_part(&msgs).await {
                        return;
                    }
                }
                None => {
                    msgs.push(ServerMessage::ListEnd);
                    ctl.answer(&msgs).await;
                    return;
                }
            }
        }
    }
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
