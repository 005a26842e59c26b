//! Job records: the `ListQuery` page protocol, durable records across restarts,
//! retention and budgets, failed starts (spec: QX-LIST-*, QX-DUR-*).
//!
//! The restart tests run a real `qexecd` (built by cargo, as `robustness.rs` does)
//! with its own PKI, state directory and cgroup subtree, and kill or stop it.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use qexec_client::{Client, OutputEvent, OutputSubscription};
use qexec_protocol::{
    ClientMessage, ErrorCode, JobId, JobState, JobStatus, ListEntry, ListQuery, ListStateFilter,
    OutputStream, ServerMessage, SpawnFailure, StartRequest, StopReason, Termination,
};
use qexec_tests::daemon::Daemon;
use qexec_tests::{TestClient, TestServer, start_request};
use qexec_tls as pki;

type Result = anyhow::Result<()>;

/// Longest wait for any single event.
const WAIT: Duration = Duration::from_secs(30);

/// Waits until the job database records at least `ended` jobs as no longer running
/// and `total` jobs in all (records are written off the request path, a moment
/// after the event; nothing on the wire says when: poll the database).
async fn wait_recorded(state: &Path, ended: i64, total: i64) -> Result {
    let db = state.join("jobs.db");
    let deadline = Instant::now() + WAIT;
    loop {
        let counts =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| {
                    c.query_row(
                        "SELECT count(*), coalesce(sum(state != 'running'), 0) FROM jobs",
                        [],
                        |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                    )
                });
        if let Ok((all, done)) = counts
            && all >= total
            && done >= ended
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the job database did not record {ended} ended of {total} jobs: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a subscription delivered: (stdout bytes, stderr bytes, combined bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Output {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    combined: Vec<u8>,
}

impl Output {
    fn add(&mut self, stream: OutputStream, offset: u64, data: &[u8]) {
        assert_eq!(offset, self.combined.len() as u64, "contiguous offsets");
        match stream {
            OutputStream::Stdout => self.stdout.extend_from_slice(data),
            OutputStream::Stderr => self.stderr.extend_from_slice(data),
        }
        self.combined.extend_from_slice(data);
    }
}

/// Reads a subscription to its end.
async fn drain(sub: &mut OutputSubscription) -> anyhow::Result<(Output, JobStatus)> {
    let mut out = Output::default();
    loop {
        match tokio::time::timeout(WAIT, sub.next()).await?? {
            Some(OutputEvent::Data {
                stream,
                offset,
                data,
            }) => out.add(stream, offset, &data),
            Some(OutputEvent::End(status)) => return Ok((out, *status)),
            None => bail!("the subscription ended without End"),
        }
    }
}

/// Reads a subscription until `want` combined bytes arrived.
async fn read_at_least(sub: &mut OutputSubscription, want: usize) -> anyhow::Result<Output> {
    let mut out = Output::default();
    while out.combined.len() < want {
        match tokio::time::timeout(WAIT, sub.next()).await?? {
            Some(OutputEvent::Data {
                stream,
                offset,
                data,
            }) => out.add(stream, offset, &data),
            other => bail!("expected output, got {other:?}"),
        }
    }
    Ok(out)
}

fn sh(script: &str) -> StartRequest {
    start_request(&["sh", "-c", script], true)
}

fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Every page of a `ListQuery` through the client library.
async fn list_all(client: &Client, mut query: ListQuery) -> anyhow::Result<Vec<ListEntry>> {
    let mut all = Vec::new();
    loop {
        let (entries, next) = client.list_query(query.clone()).await?;
        all.extend(entries);
        match next {
            Some(c) => query.cursor = Some(c),
            None => return Ok(all),
        }
    }
}

// ---------------------------------------------------------------------------------
// Restarts
// ---------------------------------------------------------------------------------

/// Jobs that ended before, and jobs running at, a stop of qexecd by `sig`; then a
/// restart on the same state directory.
async fn restart_keeps_records(name: &str, sig: Signal) -> Result {
    let mut d = Daemon::start(name, &[]).await?;
    let alice = d.client("alice").await?;
    let scripts = [
        "echo out; echo err >&2; echo out2",
        "seq 1 20000",
        "printf 'a\\000b'; echo late >&2; exit 3",
    ];
    let mut ended = Vec::new();
    for script in scripts {
        let mut job = alice.start(sh(script)).await?;
        let (out, status) = drain(job.output.as_mut().context("no output")?).await?;
        ended.push((job.job, out, status));
    }
    let mut running = Vec::new();
    for _ in 0..2 {
        let mut job = alice
            .start(sh("echo partial; echo perr >&2; exec sleep 300"))
            .await?;
        let out = read_at_least(job.output.as_mut().context("no output")?, 13).await?;
        running.push((job.job, job.pid, out));
    }
    let before = list_all(&alice, ListQuery::all(2)).await?;
    ensure!(before.len() == 5, "{before:?}");
    wait_recorded(d.state_dir(), 3, 5).await?;
    drop(alice);
    d.stop(sig).await?;
    d.spawn().await?;

    let alice = d.client("alice").await?;
    // spec: QX-DUR-2 — ended jobs: status and output byte-identical.
    for (id, out, status) in &ended {
        let now = alice.status(*id).await?;
        ensure!(
            qexec_protocol::encode(&ServerMessage::Status(now.clone()))?
                == qexec_protocol::encode(&ServerMessage::Status(status.clone()))?,
            "status of {id} changed across the restart:\n{status:?}\n{now:?}"
        );
        let mut sub = alice.attach(*id, 0).await?;
        let (again, end) = drain(&mut sub).await?;
        ensure!(again == *out, "output of {id} changed across the restart");
        ensure!(end == *status, "final status of {id} changed");
    }
    // Running ones: ended by the restart, with the output they wrote.
    for (id, pid, out) in &running {
        let s = alice.status(*id).await?;
        match &s.state {
            JobState::Stopped {
                reason: StopReason::Shutdown,
                termination,
            } => {
                if sig == Signal::SIGKILL {
                    ensure!(
                        *termination == Termination::Signaled(libc::SIGKILL),
                        "{termination:?}"
                    );
                }
            }
            other => bail!("job {id} running at the stop ended as {other:?}"),
        }
        ensure!(s.ended_at_ms.is_some());
        let mut sub = alice.attach(*id, 0).await?;
        let (again, _) = drain(&mut sub).await?;
        ensure!(
            again == *out,
            "partial output of {id}: {again:?} != {out:?}"
        );
        ensure!((s.stdout_bytes, s.stderr_bytes) == (8, 5), "{s:?}");
        let deadline = Instant::now() + WAIT;
        while alive(*pid) {
            ensure!(
                Instant::now() < deadline,
                "process {pid} of job {id} still runs"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let ids: Vec<JobId> = running.iter().map(|r| r.0).collect();
    let left = d.cgroups_of(&ids);
    ensure!(left.is_empty(), "cgroups left behind: {left:?}");
    // The listing is the same jobs in the same order; new jobs come after them.
    let after = list_all(&alice, ListQuery::all(2)).await?;
    let key = |v: &[ListEntry]| v.iter().map(|e| (e.seq, e.status.id)).collect::<Vec<_>>();
    ensure!(
        key(&after) == key(&before),
        "{:?} != {:?}",
        key(&after),
        key(&before)
    );
    let mut job = alice.start(sh("true")).await?;
    drain(job.output.as_mut().context("no output")?).await?;
    let newest = alice
        .list_query(ListQuery {
            newest_first: true,
            ..ListQuery::all(1)
        })
        .await?
        .0;
    ensure!(newest[0].status.id == job.job);
    ensure!(newest[0].seq > before.iter().map(|e| e.seq).max().unwrap_or(0));
    drop(alice);
    d.stop(Signal::SIGTERM).await
}

// spec: QX-DUR-1, QX-DUR-2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restart_keeps_ended_jobs_and_ends_running_ones() -> Result {
    restart_keeps_records("durable-kill", Signal::SIGKILL).await
}

// spec: QX-DUR-1, QX-DUR-2
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_keeps_ended_jobs_and_ends_running_ones() -> Result {
    restart_keeps_records("durable-term", Signal::SIGTERM).await
}

// spec: QX-DUR-6
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_database_or_log_never_stops_the_start() -> Result {
    let mut d = Daemon::start("durable-damage", &[]).await?;
    let alice = d.client("alice").await?;
    let mut jobs = Vec::new();
    for script in ["echo one", "echo two; echo two-err >&2", "echo three"] {
        let mut job = alice.start(sh(script)).await?;
        let (out, status) = drain(job.output.as_mut().context("no output")?).await?;
        jobs.push((job.job, out, status));
    }
    drop(alice);
    d.stop(Signal::SIGTERM).await?;

    // One record that does not decode, one log cut short.
    let db = d.state_dir().join("jobs.db");
    {
        let conn = rusqlite::Connection::open(&db)?;
        conn.execute(
            "UPDATE jobs SET status = x'00ff00' WHERE id = ?1",
            [jobs[0].0.to_string()],
        )?;
    }
    let log = d.state_dir().join(format!("jobs/{}/output", jobs[1].0));
    let len = std::fs::metadata(&log)?.len();
    std::fs::File::options()
        .write(true)
        .open(&log)?
        .set_len(len - 3)?;
    d.spawn().await?;
    let lines = d.lines();
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("does not decode") && l.contains(&jobs[0].0.to_string())),
        "the unreadable record is not reported: {lines:#?}"
    );
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("damaged") && l.contains(&jobs[1].0.to_string())),
        "the damaged log is not reported: {lines:#?}"
    );
    let alice = d.client("alice").await?;
    let gone = alice.status(jobs[0].0).await.unwrap_err();
    ensure!(gone.to_string().contains("not found"), "{gone}");
    // The cut log keeps its whole records and says it lost some.
    let s = alice.status(jobs[1].0).await?;
    ensure!(s.output_truncated, "{s:?}");
    let (out, _) = drain(&mut alice.attach(jobs[1].0, 0).await?).await?;
    ensure!(
        jobs[1].1.combined.starts_with(&out.combined)
            && out.combined.len() < jobs[1].1.combined.len(),
        "{out:?}"
    );
    // The intact job is byte-identical.
    ensure!(alice.status(jobs[2].0).await? == jobs[2].2);
    let (out, _) = drain(&mut alice.attach(jobs[2].0, 0).await?).await?;
    ensure!(out == jobs[2].1);
    drop(alice);
    d.stop(Signal::SIGTERM).await?;

    // A database that is no database at all: moved aside, qexecd starts empty.
    std::fs::write(&db, vec![0x5a; 8192])?;
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(d.state_dir().join(format!("jobs.db{suffix}")));
    }
    d.spawn().await?;
    ensure!(
        d.lines().iter().any(|l| l.contains("moved aside")),
        "the damaged database is not reported"
    );
    let aside = std::fs::read_dir(d.state_dir())?.flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("jobs.db.damaged-")
    });
    ensure!(aside, "the damaged database was not kept aside");
    let alice = d.client("alice").await?;
    let mut job = alice.start(sh("echo fresh")).await?;
    let (out, _) = drain(job.output.as_mut().context("no output")?).await?;
    ensure!(out.combined == b"fresh\n");
    drop(alice);
    d.stop(Signal::SIGTERM).await
}

// ---------------------------------------------------------------------------------
// Retention and budgets
// ---------------------------------------------------------------------------------

// spec: QX-DUR-4 — oldest first, any owner, logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_budget_evicts_the_oldest_ended_job_and_logs_it() -> Result {
    let mut d = Daemon::start("durable-budget", &["--log-budget", "10K"]).await?;
    let bob = d.client("bob").await?;
    let alice = d.client("alice").await?;
    let mut order = Vec::new();
    for (client, who) in [
        (&bob, "bob"),
        (&alice, "alice"),
        (&alice, "alice"),
        (&alice, "alice"),
    ] {
        let mut job = client.start(sh("head -c 4000 /dev/zero")).await?;
        drain(job.output.as_mut().context("no output")?).await?;
        order.push((job.job, who));
    }
    // 4005 bytes of log each: the third end passes 10 KiB and evicts bob's, the
    // fourth evicts alice's first.
    let bob_job = order[0].0;
    let err = bob.status(bob_job).await.unwrap_err();
    ensure!(err.to_string().contains("not found"), "{err}");
    ensure!(alice.status(order[1].0).await.is_err());
    for (id, _) in &order[2..] {
        alice.status(*id).await?;
    }
    ensure!(!d.state_dir().join(format!("jobs/{bob_job}")).exists());
    let lines = d.lines();
    let logged: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("disk budget") && l.contains("WARN"))
        .collect();
    ensure!(logged.len() == 2, "{lines:#?}");
    ensure!(
        logged[0].contains(&bob_job.to_string()) && logged[0].contains("owner=bob"),
        "{logged:?}"
    );
    drop((bob, alice));
    d.stop(Signal::SIGTERM).await
}

// spec: QX-DUR-3 — one owner's activity never evicts another's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alices_1010_jobs_leave_bobs_history() -> Result {
    let server = TestServer::start().await?;
    let bob = server.connect("bob").await?;
    let mut bobs = Vec::new();
    for i in 0..3 {
        let id = bob.start(&["echo", &format!("bob {i}")], true).await?;
        bob.accept_output().await?.read_to_end().await?;
        bobs.push(id);
    }
    let alice = Arc::new(server.connect("alice").await?);
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let alice = Arc::clone(&alice);
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for _ in (worker..1010).step_by(8) {
                let id = alice.start(&["true"], false).await?;
                ids.push(id);
            }
            Ok::<_, anyhow::Error>(ids)
        });
    }
    let mut alices = Vec::new();
    while let Some(r) = tasks.join_next().await {
        alices.extend(r??);
    }
    // Wait for every one of alice's jobs to end.
    let admin = server.connect("admin").await?;
    let deadline = Instant::now() + WAIT;
    loop {
        let (running, _) = page(
            &admin,
            ListQuery {
                state: ListStateFilter::Running,
                ..ListQuery::all(10)
            },
        )
        .await?;
        if running.is_empty() {
            break;
        }
        ensure!(Instant::now() < deadline, "alice's jobs did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // bob's history is whole, with its output.
    for (i, id) in bobs.iter().enumerate() {
        let s = bob.status(*id).await?;
        ensure!(s.stdout_bytes == format!("bob {i}\n").len() as u64);
        let out = bob.attach(*id, 0).await?.read_to_end().await?;
        ensure!(out.data == format!("bob {i}\n").into_bytes());
    }
    // alice keeps her newest 1000.
    let mut query = ListQuery {
        owner: Some("alice".into()),
        ..ListQuery::all(1000)
    };
    let mut kept = Vec::new();
    loop {
        let (entries, next) = page(&admin, query.clone()).await?;
        kept.extend(entries);
        match next {
            Some(c) => query.cursor = Some(c),
            None => break,
        }
    }
    ensure!(kept.len() == 1000, "alice kept {}", kept.len());
    let kept: HashSet<JobId> = kept.iter().map(|e| e.status.id).collect();
    let forgotten: Vec<&JobId> = alices.iter().filter(|id| !kept.contains(id)).collect();
    ensure!(forgotten.len() == 10);
    server.stop().await
}

// spec: QX-DUR-7
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_cap_stops_the_job_with_output_limit() -> Result {
    let server = TestServer::start_with(|c| c.output_cap = 1024).await?;
    let alice = server.connect("alice").await?;
    // A writer that never ends by itself, so only the cap can end it (a bounded one
    // may exit before the stop reaches it, and then rightly ends `Exited`).
    let id = alice.start(&["cat", "/dev/zero"], true).await?;
    let out = alice.accept_output().await?.read_to_end().await?;
    ensure!(out.data.len() == 1024, "{}", out.data.len());
    let s = alice.status(id).await?;
    ensure!(
        matches!(
            s.state,
            JobState::Stopped {
                reason: StopReason::OutputLimit,
                ..
            }
        ),
        "{:?}",
        s.state
    );
    ensure!(s.output_truncated && s.stdout_bytes == 1024);
    server.stop().await
}

// spec: QX-DUR-5 — a failed start is a job in state FailedToStart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_starts_are_recorded_and_listed() -> Result {
    let server = TestServer::start().await?;
    let alice = server.connect("alice").await?;
    let answer = alice
        .request(&ClientMessage::Start(start_request(
            &["qexec-no-such-program"],
            false,
        )))
        .await?;
    let [ServerMessage::Error(e)] = answer.as_slice() else {
        bail!("{answer:?}");
    };
    ensure!(e.code == ErrorCode::SpawnFailed && e.spawn == Some(SpawnFailure::NotFound));
    let (failed, _) = page(
        &alice,
        ListQuery {
            state: ListStateFilter::FailedToStart,
            newest_first: true,
            ..ListQuery::all(1)
        },
    )
    .await?;
    let [entry] = failed.as_slice() else {
        bail!("{failed:?}");
    };
    let id = entry.status.id;
    ensure!(e.message.contains(&id.to_string()), "{}", e.message);
    ensure!(entry.status.pid.is_none() && entry.status.ended_at_ms.is_some());
    ensure!(matches!(
        alice.status(id).await?.state,
        JobState::FailedToStart {
            failure: SpawnFailure::NotFound,
            ..
        }
    ));
    // Old clients see it in List too; another user does not.
    let listed = alice
        .request(&ClientMessage::List(Default::default()))
        .await?;
    ensure!(
        listed
            .iter()
            .any(|m| matches!(m, ServerMessage::ListItem(s) if s.id == id))
    );
    let bob = server.connect("bob").await?;
    let (none, _) = page(
        &bob,
        ListQuery {
            state: ListStateFilter::FailedToStart,
            ..ListQuery::all(10)
        },
    )
    .await?;
    ensure!(none.is_empty());
    server.stop().await
}

// ---------------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------------

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

// spec: QX-LIST-4 (issue 14 item 4) — an unread List pins one page, not a clone of
// every status. 60 jobs with 480 KiB of argv each (29 MiB of statuses); 20 Lists
// never read. Cloning every status per List (the old answer) would take > 1 GiB;
// one page per List is at most ~1.6 MiB of statuses plus 64 KiB being encoded, plus
// what QUIC buffers for the stream: the bound checked is 20 × 4 MiB + 32 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_lists_pin_one_page_each() -> Result {
    use qexec_tests::conformance::{Config, wire::Peer};
    let mut d = Daemon::start("durable-lists", &["--no-isolation", "--insecure-root-jobs"]).await?;
    let alice = d.client("alice").await?;
    let arg = "x".repeat(120 << 10);
    for _ in 0..60 {
        let mut req = start_request(&["true", &arg, &arg, &arg, &arg], true);
        req.stop_on_detach = false;
        let mut job = alice.start(req).await?;
        drain(job.output.as_mut().context("no output")?).await?;
    }
    let paths = pki::PkiPaths::new(d.pki_dir());
    let user = paths.user("alice");
    let config = Config::new(
        d.addr(),
        std::fs::read_to_string(&paths.ca)?,
        qexec_tls::CertKeyPem {
            cert_pem: std::fs::read_to_string(user.cert)?,
            key_pem: std::fs::read_to_string(user.key)?,
        },
    );
    let pid = d.pid().context("no qexecd")?;
    let rss = || -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .context("no VmRSS")?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("no number")?
            .parse()?)
    };
    let before = rss()?;
    let peer = Peer::user(&config).await?;
    let list = qexec_protocol::encode(&ClientMessage::List(Default::default()))?;
    let mut unread = Vec::new();
    for _ in 0..20 {
        let (mut send, recv) = peer.open(&list).await?;
        send.finish()?;
        unread.push((send, recv));
    }
    // The server keeps answering meanwhile; sample its RSS between round trips while
    // the Lists sit unread.
    let mut peak = before;
    for _ in 0..200 {
        alice.list_query(ListQuery::all(1)).await?;
        peak = peak.max(rss()?);
    }
    let growth_mib = (peak.saturating_sub(before)) as f64 / 1024.0;
    ensure!(
        growth_mib < 20.0 * 4.0 + 32.0,
        "20 unread Lists grew qexecd's RSS by {growth_mib:.1} MiB"
    );
    println!("20 unread Lists: qexecd RSS +{growth_mib:.1} MiB");
    drop(unread);
    drop((peer, alice));
    d.stop(Signal::SIGTERM).await
}
