//! Job records: the `ListQuery` page protocol, durable records across restarts,
//! retention and budgets (spec: QX-LIST-*, QX-DUR-*).

use qexec_protocol::{
    ClientMessage, ErrorCode, JobId, ListEntry, ListQuery, ListStateFilter, ServerMessage,
};
use qexec_tests::{TestClient, TestServer};

type Result = anyhow::Result<()>;

/// One `ListQuery` page: entries and the next cursor; panics on any other answer.
async fn page(
    client: &TestClient,
    query: ListQuery,
) -> anyhow::Result<(Vec<ListEntry>, Option<u64>)> {
    let answer = client.request(&ClientMessage::ListQuery(query)).await?;
    let (last, entries) = answer.split_last().expect("an answer");
    let ServerMessage::ListPageEnd { next } = last else {
        anyhow::bail!("page ended with {last:?}");
    };
    let entries = entries
        .iter()
        .map(|m| match m {
            ServerMessage::ListEntry(e) => e.clone(),
            other => panic!("not an entry: {other:?}"),
        })
        .collect();
    Ok((entries, *next))
}

/// Every page of `query`, following cursors.
async fn all_pages(client: &TestClient, mut query: ListQuery) -> anyhow::Result<Vec<ListEntry>> {
    let mut all = Vec::new();
    loop {
        let (entries, next) = page(client, query.clone()).await?;
        all.extend(entries);
        match next {
            Some(c) => query.cursor = Some(c),
            None => return Ok(all),
        }
    }
}

fn ids(entries: &[ListEntry]) -> Vec<JobId> {
    entries.iter().map(|e| e.status.id).collect()
}

// spec: QX-MSG-CTRL-9, QX-LIST-1, QX-LIST-2, QX-LIST-3
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_query_pages_filters_and_visibility() -> Result {
    let server = TestServer::start().await?;
    let alice = server.connect("alice").await?;
    let bob = server.connect("bob").await?;
    let admin = server.connect("admin").await?;
    let viewer = server.connect("auditor").await?;

    let mut alice_jobs = Vec::new();
    for _ in 0..5 {
        let id = alice.start(&["true"], true).await?;
        alice.accept_output().await?.read_to_end().await?;
        alice_jobs.push(id);
    }
    let bob_job = bob.start(&["sleep", "600"], false).await?;

    // Oldest first, pages of 2, strictly increasing sequence numbers.
    let got = all_pages(&alice, ListQuery::all(2)).await?;
    assert_eq!(ids(&got), alice_jobs);
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
    // Newest first is the exact reverse.
    let newest = all_pages(
        &alice,
        ListQuery {
            newest_first: true,
            ..ListQuery::all(3)
        },
    )
    .await?;
    let mut reversed = alice_jobs.clone();
    reversed.reverse();
    assert_eq!(ids(&newest), reversed);
    // A page of exactly the rest has no cursor.
    let (first, next) = page(&alice, ListQuery::all(5)).await?;
    assert_eq!(first.len(), 5);
    assert_eq!(next, None);

    // A user never sees another owner's job, whatever the filter.
    let bob_prefix = bob_job.to_string()[..8].to_owned();
    for q in [
        ListQuery {
            id_prefix: Some(bob_prefix.clone()),
            ..ListQuery::all(10)
        },
        ListQuery {
            owner: Some("bob".into()),
            ..ListQuery::all(10)
        },
    ] {
        let (entries, next) = page(&alice, q).await?;
        assert!(entries.is_empty(), "{entries:?}");
        assert_eq!(next, None);
    }
    // Its owner, an admin and a viewer find it by prefix (either case).
    for c in [&bob, &admin, &viewer] {
        let (entries, _) = page(
            c,
            ListQuery {
                id_prefix: Some(bob_prefix.to_uppercase()),
                ..ListQuery::all(10)
            },
        )
        .await?;
        assert_eq!(ids(&entries), vec![bob_job]);
    }
    // State and owner filters for an admin.
    let (running, _) = page(
        &admin,
        ListQuery {
            state: ListStateFilter::Running,
            ..ListQuery::all(100)
        },
    )
    .await?;
    assert_eq!(ids(&running), vec![bob_job]);
    let (ended, _) = page(
        &admin,
        ListQuery {
            state: ListStateFilter::Ended,
            owner: Some("alice".into()),
            ..ListQuery::all(100)
        },
    )
    .await?;
    assert_eq!(ids(&ended), alice_jobs);
    let since = ended[3].status.started_at_ms;
    let (recent, _) = page(
        &admin,
        ListQuery {
            since_ms: Some(since),
            owner: Some("alice".into()),
            ..ListQuery::all(100)
        },
    )
    .await?;
    assert!(recent.iter().all(|e| e.status.started_at_ms >= since));
    assert!(ids(&recent).contains(&alice_jobs[4]));

    // Invalid queries: typed InvalidArgument naming the field.
    for (q, field) in [
        (ListQuery::all(0), "limit"),
        (
            ListQuery {
                id_prefix: Some("abc".into()),
                ..ListQuery::all(1)
            },
            "id_prefix",
        ),
        (
            ListQuery {
                owner: Some(String::new()),
                ..ListQuery::all(1)
            },
            "owner",
        ),
    ] {
        let answer = alice.request(&ClientMessage::ListQuery(q)).await?;
        match answer.as_slice() {
            [ServerMessage::Error(e)] => {
                assert_eq!(e.code, ErrorCode::InvalidArgument);
                assert!(e.message.contains(field), "{}", e.message);
            }
            other => panic!("{other:?}"),
        }
    }
    server.stop().await
}
