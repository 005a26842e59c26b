//! Checks of §5.8 (listing jobs) and the observable part of §5.10 (job records):
//! the order key, paging, visibility and recorded failed starts.

use qexec_protocol::{
    ClientMessage, ErrorCode, JobId, JobState, ListEntry, ListQuery, ListStateFilter, ServerMessage,
};

use super::frames::with_peer;
use super::wire::{Peer, start_req};
use super::{Check, Config, Outcome, check};

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "QX-LIST-1",
            "ListQuery entries carry distinct, increasing seq in creation order (also for \
             concurrent starts), newest_first is the exact reverse",
            list_1
        ),
        check!(
            "QX-LIST-2",
            "pages of 2 following next walk every job exactly once; the last page has no next",
            list_2
        ),
        check!(
            "QX-LIST-3",
            "another user's job matches neither an owner filter nor an id prefix",
            list_3
        ),
        check!(
            "QX-DUR-5",
            "a start of a missing program is a FailedToStart job: listed, its id in the \
             error message, its Status FailedToStart",
            dur_5
        ),
    ]
}

/// One page: entries and next.
async fn page(peer: &Peer, q: ListQuery) -> anyhow::Result<(Vec<ListEntry>, Option<u64>)> {
    let answer = peer.ask(&ClientMessage::ListQuery(q)).await?;
    let Some((ServerMessage::ListPageEnd { next }, entries)) = answer.split_last() else {
        anyhow::bail!("ListQuery answered {answer:?}");
    };
    let mut out = Vec::new();
    for m in entries {
        match m {
            ServerMessage::ListEntry(e) => out.push(e.clone()),
            other => anyhow::bail!("a ListQuery page held {other:?}"),
        }
    }
    Ok((out, *next))
}

/// Every page.
async fn walk(peer: &Peer, mut q: ListQuery) -> anyhow::Result<Vec<ListEntry>> {
    let mut all = Vec::new();
    for _ in 0..10_000 {
        let (entries, next) = page(peer, q.clone()).await?;
        all.extend(entries);
        match next {
            Some(c) => q.cursor = Some(c),
            None => return Ok(all),
        }
    }
    anyhow::bail!("the walk did not end after 10,000 pages")
}

/// Positions of `ids` in `entries`.
fn positions(entries: &[ListEntry], ids: &[JobId]) -> Vec<Option<usize>> {
    ids.iter()
        .map(|id| entries.iter().position(|e| e.status.id == *id))
        .collect()
}

async fn list_1(config: &Config) -> Outcome {
    // spec: QX-LIST-1 (issue 19 item 7)
    with_peer(config, |peer| async move {
        let mut sequential = Vec::new();
        for _ in 0..3 {
            let (s, _) = peer.start(start_req(&[b"true"], false)).await?;
            sequential.push(s.job);
        }
        // Concurrent starts: their order is the server's, by seq.
        let (a, b, c) = tokio::join!(
            peer.start(start_req(&[b"true"], false)),
            peer.start(start_req(&[b"true"], false)),
            peer.start(start_req(&[b"true"], false)),
        );
        let concurrent = [a?.0.job, b?.0.job, c?.0.job];
        let oldest = walk(&peer, ListQuery::all(1000)).await?;
        let newest = walk(
            &peer,
            ListQuery {
                newest_first: true,
                ..ListQuery::all(1000)
            },
        )
        .await?;
        let increasing = oldest.windows(2).all(|w| w[0].seq < w[1].seq);
        let mut reversed = newest.clone();
        reversed.reverse();
        let same = reversed.iter().map(|e| (e.seq, e.status.id)).collect::<Vec<_>>()
            == oldest.iter().map(|e| (e.seq, e.status.id)).collect::<Vec<_>>();
        let pos = positions(&oldest, &sequential);
        let in_order = pos.windows(2).all(|w| matches!(w, [Some(a), Some(b)] if a < b));
        let all_there = positions(&oldest, &concurrent).iter().all(Option::is_some);
        Ok(if increasing && same && in_order && all_there {
            Outcome::pass(format!(
                "{} jobs, seq strictly increasing, sequential starts in order, newest_first the reverse",
                oldest.len()
            ))
        } else {
            Outcome::fail(format!(
                "seq increasing: {increasing}; newest_first the reverse: {same}; \
                 sequential starts in order: {in_order}; concurrent starts listed: {all_there}"
            ))
        })
    })
    .await
}

async fn list_2(config: &Config) -> Outcome {
    // spec: QX-LIST-2
    with_peer(config, |peer| async move {
        for _ in 0..5 {
            peer.start(start_req(&[b"true"], false)).await?;
        }
        let whole = walk(&peer, ListQuery::all(1000)).await?;
        let paged = walk(&peer, ListQuery::all(2)).await?;
        let ids = |v: &[ListEntry]| v.iter().map(|e| e.status.id).collect::<Vec<_>>();
        // Jobs of other checks may start meanwhile: every job of the first walk must
        // be in the second once, in the same order.
        let second = ids(&paged);
        let once = ids(&whole)
            .iter()
            .all(|id| second.iter().filter(|x| *x == id).count() == 1);
        let no_dup = {
            let mut s = second.clone();
            s.sort_unstable();
            s.windows(2).all(|w| w[0] != w[1])
        };
        let (_, last_next) = page(
            &peer,
            ListQuery {
                cursor: paged.last().map(|e| e.seq),
                ..ListQuery::all(1000)
            },
        )
        .await?;
        let (empty, empty_next) = page(
            &peer,
            ListQuery {
                cursor: Some(u64::MAX),
                ..ListQuery::all(10)
            },
        )
        .await?;
        Ok(
            if once && no_dup && last_next.is_none() && empty.is_empty() && empty_next.is_none() {
                Outcome::pass(format!("{} jobs in pages of 2, each once", whole.len()))
            } else {
                Outcome::fail(format!(
                    "each once: {once}; no duplicate: {no_dup}; after the last: next {last_next:?}; \
                     past the end: {} entries, next {empty_next:?}",
                    empty.len()
                ))
            },
        )
    })
    .await
}

async fn list_3(config: &Config) -> Outcome {
    // spec: QX-LIST-3
    let Some(other) = config.user2.as_ref() else {
        return Outcome::skip("no --cert2/--key2 given");
    };
    let run = async {
        let owner = Peer::user(config).await?;
        let (started, _) = owner.start(start_req(&[b"true"], false)).await?;
        let owner_name = owner.status(started.job).await?.owner;
        let peer = Peer::connect(config, other).await?;
        let prefix = started.job.to_string()[..8].to_owned();
        let by_prefix = page(
            &peer,
            ListQuery {
                id_prefix: Some(prefix.clone()),
                ..ListQuery::all(10)
            },
        )
        .await?;
        let by_owner = page(
            &peer,
            ListQuery {
                owner: Some(owner_name),
                ..ListQuery::all(10)
            },
        )
        .await?;
        let own = page(
            &owner,
            ListQuery {
                id_prefix: Some(prefix),
                ..ListQuery::all(10)
            },
        )
        .await?;
        let hidden = by_prefix.0.iter().all(|e| e.status.id != started.job)
            && by_owner.0.iter().all(|e| e.status.id != started.job)
            && by_owner.1.is_none();
        let found = own.0.iter().any(|e| e.status.id == started.job);
        anyhow::Ok(if hidden && found {
            Outcome::pass("the owner finds its job by prefix; the other user by neither filter")
        } else {
            Outcome::fail(format!(
                "hidden from the other user: {hidden}; found by its owner: {found}"
            ))
        })
    };
    match run.await {
        Ok(o) => o,
        Err(e) => Outcome::fail(format!("{e:#}")),
    }
}

async fn dur_5(config: &Config) -> Outcome {
    // spec: QX-DUR-5 (issue 19 item 9: FailedToStart is observable)
    with_peer(config, |peer| async move {
        let answer = peer
            .ask(&ClientMessage::Start(start_req(
                &[b"/nonexistent/qexec-conformance-missing"],
                false,
            )))
            .await?;
        let [ServerMessage::Error(e)] = answer.as_slice() else {
            return Ok(Outcome::fail(format!("start answered {answer:?}")));
        };
        if e.code != ErrorCode::SpawnFailed {
            return Ok(Outcome::fail(format!("start answered {e:?}")));
        }
        let (failed, _) = page(
            &peer,
            ListQuery {
                state: ListStateFilter::FailedToStart,
                newest_first: true,
                ..ListQuery::all(20)
            },
        )
        .await?;
        let Some(entry) = failed.iter().find(|f| {
            f.status.argv == [b"/nonexistent/qexec-conformance-missing".to_vec()]
                && e.message.contains(&f.status.id.to_string())
        }) else {
            return Ok(Outcome::fail(format!(
                "no FailedToStart job whose id the message names ({:?}) among {} listed",
                e.message,
                failed.len()
            )));
        };
        let status = peer.status(entry.status.id).await?;
        Ok(
            if matches!(status.state, JobState::FailedToStart { .. }) && status.pid.is_none() {
                Outcome::pass(format!("job {} in state FailedToStart", entry.status.id))
            } else {
                Outcome::fail(format!("its Status is {:?}", status.state))
            },
        )
    })
    .await
}
