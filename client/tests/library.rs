//! The client library against an in-process qexecd: re-attach without loss, many jobs
//! on one connection, stdin, output routing.

mod common;

use std::time::Duration;

use common::{TestServer, WAIT};
use qexec_client::{Client, OutputEvent, OutputSubscription};
use qexec_protocol::{JobState, JobStatus, Limits, ListQuery, StartRequest, Termination};

fn request(argv: &[&str]) -> StartRequest {
    StartRequest {
        argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: Vec::new(),
        cwd: None,
        limits: Limits::default(),
        timeout_ms: None,
        stdin: false,
        follow: false,
        stop_on_detach: false,
    }
}

/// Reads a subscription to its end: (combined output, final status).
async fn drain(sub: &mut OutputSubscription) -> (Vec<u8>, JobStatus) {
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("output in time")
        {
            Ok(Some(OutputEvent::Data { offset, data, .. })) => {
                assert_eq!(offset, out.len() as u64, "offsets are contiguous");
                out.extend_from_slice(&data);
            }
            Ok(Some(OutputEvent::End(status))) => return (out, *status),
            Ok(None) => panic!("no End"),
            Err(e) => panic!("subscription failed: {e}"),
        }
    }
}

// spec: QX-STREAM-12, QX-STREAM-14 (contiguous offsets; re-attach from an offset)
#[test]
fn reattach_after_disconnect_loses_and_repeats_nothing() {
    let s = TestServer::start();
    let go = s.dir().join("go-reattach");
    let script = format!(
        "seq 1 30000; while [ ! -e {} ]; do sleep 0.02; done; seq 30001 60000",
        go.display()
    );
    let expected: Vec<u8> = (1..=60000)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    s.block_on(async {
        let first = Client::connect(&s.config(None)).await.unwrap();
        let job = first
            .start(request(&["sh", "-c", &script]))
            .await
            .unwrap()
            .job;
        let mut sub = first.attach(job, 0).await.unwrap();
        let mut got = Vec::new();
        // Take part of the first half, then lose the connection mid-stream.
        while got.len() < 50_000 {
            match tokio::time::timeout(WAIT, sub.next())
                .await
                .unwrap()
                .unwrap()
            {
                Some(OutputEvent::Data { data, .. }) => got.extend_from_slice(&data),
                other => panic!("unexpected {other:?}"),
            }
        }
        let position = sub.position();
        assert_eq!(position, got.len() as u64);
        drop(sub);
        drop(first);

        let second = Client::connect(&s.config(None)).await.unwrap();
        let mut sub = second.attach(job, position).await.unwrap();
        std::fs::write(&go, b"").unwrap();
        let mut rest = Vec::new();
        let status = loop {
            match tokio::time::timeout(WAIT, sub.next())
                .await
                .unwrap()
                .unwrap()
            {
                Some(OutputEvent::Data { offset, data, .. }) => {
                    assert_eq!(offset, position + rest.len() as u64);
                    rest.extend_from_slice(&data);
                }
                Some(OutputEvent::End(status)) => break status,
                None => panic!("no End"),
            }
        };
        got.extend_from_slice(&rest);
        assert!(
            got == expected,
            "output differs after re-attach ({} bytes vs {})",
            got.len(),
            expected.len()
        );
        assert_eq!(status.stdout_bytes, expected.len() as u64);
    });
}

#[test]
fn one_connection_carries_many_jobs_at_once() {
    let s = TestServer::start();
    s.block_on(async {
        let client = Client::connect(&s.config(None)).await.unwrap();
        let runs = (0..16).map(|i| {
            let client = &client;
            async move {
                let script = format!("echo job {i}; exit {i}");
                let mut started = client.run(request(&["sh", "-c", &script])).await.unwrap();
                let (out, status) = drain(started.output.as_mut().unwrap()).await;
                (i, out, status)
            }
        });
        let results = futures_join_all(runs.collect()).await;
        for (i, out, status) in results {
            assert_eq!(out, format!("job {i}\n").into_bytes());
            assert_eq!(
                status.state,
                JobState::Exited {
                    termination: Termination::Exited(i)
                }
            );
        }
        let listed = client.list(false).await.unwrap();
        assert_eq!(listed.len(), 16);

        // The same jobs through ListQuery, newest first, pages of 5 (spec: QX-LIST-2).
        let mut query = ListQuery {
            newest_first: true,
            ..ListQuery::all(5)
        };
        let mut paged = Vec::new();
        loop {
            let (entries, next) = client.list_query(query.clone()).await.unwrap();
            assert!(entries.len() <= 5);
            paged.extend(entries);
            match next {
                Some(c) => query.cursor = Some(c),
                None => break,
            }
        }
        let mut oldest_first: Vec<_> = listed.iter().map(|s| s.id).collect();
        oldest_first.reverse();
        assert_eq!(
            paged.iter().map(|e| e.status.id).collect::<Vec<_>>(),
            oldest_first
        );
        assert!(paged.windows(2).all(|w| w[0].seq > w[1].seq));
        // An invalid query is a typed server error.
        let err = client.list_query(ListQuery::all(0)).await.unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    });
}

/// Joins futures concurrently on the current task (no extra dependency).
async fn futures_join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut results: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, r) in futures.iter_mut().zip(results.iter_mut()) {
            if r.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *r = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(|r| r.expect("ready")).collect()
}

#[test]
fn stdin_and_followers_on_one_connection() {
    let s = TestServer::start();
    s.block_on(async {
        let client = Client::connect(&s.config(None)).await.unwrap();
        let mut req = request(&["cat"]);
        req.stdin = true;
        req.follow = true;
        let mut started = client.start(req).await.unwrap();
        // A second follower of the same job on the same connection.
        let mut second = client.attach(started.job, 0).await.unwrap();
        let mut stdin = started.stdin.take().unwrap();
        stdin.write(b"hello ").await.unwrap();
        stdin.write(b"world\n").await.unwrap();
        stdin.eof().await.unwrap();
        let (a, status) = drain(started.output.as_mut().unwrap()).await;
        let (b, _) = drain(&mut second).await;
        assert_eq!(a, b"hello world\n");
        assert_eq!(b, b"hello world\n");
        assert_eq!(status.state.termination(), Some(Termination::Exited(0)));
    });
}

#[test]
fn stop_and_signal_report_the_final_state() {
    let s = TestServer::start();
    s.block_on(async {
        let client = Client::connect(&s.config(None)).await.unwrap();
        let job = client.start(request(&["sleep", "600"])).await.unwrap().job;
        let status = client.status(job).await.unwrap();
        assert!(status.state.is_running());
        let stopped = client
            .stop(job, Some(Duration::from_millis(500)))
            .await
            .unwrap();
        assert_eq!(stopped.state.termination(), Some(Termination::Signaled(15)));

        let job = client.start(request(&["sleep", "600"])).await.unwrap().job;
        client.signal(job, 9).await.unwrap();
        let mut sub = client.attach(job, 0).await.unwrap();
        let (_, status) = drain(&mut sub).await;
        assert_eq!(status.state.termination(), Some(Termination::Signaled(9)));
    });
}

// spec: QX-TERM-1, QX-TERM-8 — a terminal job over the library: keystrokes in, the
// terminal's bytes out, and a follower on another connection (`qexec logs -f`) sees
// exactly the same bytes.
#[test]
fn terminal_job_round_trip_and_followers_see_the_same_bytes() {
    let s = TestServer::start();
    s.block_on(async {
        let a = Client::connect(&s.config(None)).await.unwrap();
        let b = Client::connect(&s.config(None)).await.unwrap();
        let terminal = qexec_protocol::TerminalSpec {
            term: "xterm".into(),
            size: qexec_protocol::WindowSize {
                rows: 0,
                cols: 0,
                width_px: 0,
                height_px: 0,
            },
        };
        let script = "stty size; read line; echo got:$line";
        let mut session = a
            .run_terminal(request(&["sh", "-c", script]), terminal)
            .await
            .unwrap();
        let mut follower = b.attach(session.job, 0).await.unwrap();
        // Type only once the prompt-like first line is shown (typed-ahead input would
        // be echoed before it).
        let mut seen = Vec::new();
        while !seen.ends_with(b"1 1\r\n") {
            match tokio::time::timeout(WAIT, session.output.next())
                .await
                .unwrap()
            {
                Ok(Some(OutputEvent::Data { data, .. })) => seen.extend_from_slice(&data),
                other => panic!("unexpected {other:?}"),
            }
        }
        session.input.write(b"hi\r").await.unwrap();
        let status = loop {
            match tokio::time::timeout(WAIT, session.output.next())
                .await
                .unwrap()
            {
                Ok(Some(OutputEvent::Data { offset, data, .. })) => {
                    assert_eq!(offset, seen.len() as u64, "offsets are contiguous");
                    seen.extend_from_slice(&data);
                }
                Ok(Some(OutputEvent::End(status))) => break *status,
                other => panic!("unexpected {other:?}"),
            }
        };
        let (followed, _) = drain(&mut follower).await;
        // A 0x0 terminal is sent as the smallest valid size; the line is echoed.
        assert_eq!(String::from_utf8_lossy(&seen), "1 1\r\nhi\r\ngot:hi\r\n");
        assert_eq!(followed, seen);
        assert_eq!(
            status.state,
            JobState::Exited {
                termination: Termination::Exited(0)
            }
        );
        assert_eq!(status.stdout_bytes, seen.len() as u64);
    });
}

// spec: QX-INFO-1 to QX-INFO-5, QX-AUTHZ-6 — Client::info: the limits the server was
// given, the counts moving with a running job, per caller; a viewer may ask.
#[test]
fn info_tells_limits_and_the_callers_own_running_jobs() {
    let s = TestServer::start_with(|c| {
        c.max_jobs = 7;
        c.max_jobs_per_user = 3;
    });
    s.block_on(async {
        let alice = Client::connect(&s.config(Some("alice"))).await.unwrap();
        let bob = Client::connect(&s.config(Some("bob"))).await.unwrap();
        let viewer = Client::connect(&s.config(Some("auditor"))).await.unwrap();
        let before = alice.info().await.unwrap();
        assert_eq!(before.server_version, env!("CARGO_PKG_VERSION"));
        assert_eq!((before.max_jobs, before.max_jobs_per_user), (7, 3));
        assert_eq!((before.running_jobs, before.caller_running_jobs), (0, 0));
        assert!(before.cpus >= 1);
        assert_eq!(before.free_slots(), 3);

        let job = alice.start(request(&["sleep", "600"])).await.unwrap().job;
        let mine = alice.info().await.unwrap();
        assert_eq!((mine.running_jobs, mine.caller_running_jobs), (1, 1));
        assert_eq!(mine.free_slots(), 2);
        let theirs = bob.info().await.unwrap();
        assert_eq!((theirs.running_jobs, theirs.caller_running_jobs), (1, 0));
        let seen = viewer.info().await.unwrap();
        assert_eq!((seen.running_jobs, seen.caller_running_jobs), (1, 0));

        alice.stop(job, Some(Duration::ZERO)).await.unwrap();
        // The slots are released when the job's end is handled: wait for it on the
        // event (the count reaching 0), bounded.
        let released = tokio::time::timeout(WAIT, async {
            loop {
                let now = alice.info().await.unwrap();
                if now.running_jobs == 0 && now.caller_running_jobs == 0 {
                    return now;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the ended job's slots are released");
        assert_eq!(released.free_slots(), 3);
    });
}

/// A server of an older revision, for `Info` purposes: it speaks qexec/1 with the same
/// PKI but knows no `Info`, so it abandons every control stream with `Unsupported`
/// (what qexecd does with an unknown request variant, spec: QX-VER-3, QX-ERR-3).
async fn serve_as_an_old_server(endpoint: quinn::Endpoint) {
    let unsupported = quinn::VarInt::from_u32(qexec_protocol::ErrorCode::Unsupported.as_u32());
    while let Some(incoming) = endpoint.accept().await {
        let Ok(conn) = incoming.await else { continue };
        tokio::spawn(async move {
            while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                // The whole request (a client FINs right after it), then the reset.
                let _ = recv.read_to_end(64).await;
                let _ = send.reset(unsupported);
                let _ = recv.stop(unsupported);
            }
        });
    }
}

// spec: QX-INFO-8 — an older server's `Unsupported` is the typed error with that code,
// and the connection stays usable (the server is not failed, its capacity unknown).
#[test]
fn info_from_an_older_server_is_unsupported_not_a_failure() {
    let s = TestServer::start();
    s.block_on(async {
        let pki = qexec_tls::PkiPaths::new(s.dir());
        let crypto = qexec_tls::server_crypto(&qexec_tls::TlsSource::Files {
            ca: pki.ca.clone(),
            cert: pki.server.clone(),
            key: pki.server_key.clone(),
        })
        .unwrap();
        let config = quinn::ServerConfig::with_crypto(std::sync::Arc::new(crypto));
        let endpoint =
            qexec_tls::bind_endpoint("127.0.0.1:0".parse().unwrap(), Some(config)).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let server = tokio::spawn(serve_as_an_old_server(endpoint));

        let client = Client::connect(&s.config(None).with_addr(addr.to_string()))
            .await
            .unwrap();
        for _ in 0..2 {
            let e = client.info().await.unwrap_err();
            assert_eq!(
                e.code(),
                Some(qexec_protocol::ErrorCode::Unsupported),
                "{e}"
            );
            assert!(
                matches!(e, qexec_client::ClientError::Server { .. }),
                "{e:?}"
            );
            assert!(!e.is_connection_lost(), "{e:?}");
            assert!(
                e.to_string().contains("does not support the Info request"),
                "{e}"
            );
        }
        server.abort();
    });
}
