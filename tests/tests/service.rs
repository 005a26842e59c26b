//! qexecd over real QUIC on loopback: handshake, authorization, framing faults,
//! head-of-line isolation, the job operations.

use std::time::{Duration, Instant, SystemTime};

use qexec_protocol::{
    AttachRequest, ClientMessage, ErrorCode, JobId, JobState, Limits, ListRequest, OutputFrame,
    ServerMessage, SignalRequest, StatusRequest, StopReason, StopRequest, frame,
};
use qexec_server::job::testkit;
use qexec_server::service::ServerConfig;
use qexec_tests::{TestClient, TestServer, WAIT, read_all, start_msg};
use qexec_tls::{Ca, LeafParams, Role};
use quinn::{ConnectionError, ReadError, VarInt};

type Result = anyhow::Result<()>;

fn code(c: ErrorCode) -> VarInt {
    VarInt::from_u32(c.as_u32())
}

/// Asserts the connection attempt is refused: either the handshake fails, or (TLS 1.3:
/// the client finishes before the server checked its certificate) the connection is
/// closed right after with a TLS alert. Returns the QUIC error code (0x100 + alert).
async fn assert_refused(
    server: &TestServer,
    tls: rustls::ClientConfig,
    what: &str,
    reason: &str,
) -> u64 {
    let (_endpoint, connecting) = TestClient::connecting(server.addr, tls).unwrap();
    let err = match tokio::time::timeout(WAIT, connecting).await.unwrap() {
        Err(e) => e,
        Ok(conn) => {
            // A request must not succeed either.
            let r = tokio::time::timeout(WAIT, async {
                let (mut send, mut recv) = conn.open_bi().await?;
                send.write_all(&frame::encode(
                    &ClientMessage::List(ListRequest::default()),
                )?)
                .await?;
                send.finish()?;
                read_all(&mut recv).await
            })
            .await
            .unwrap();
            assert!(r.is_err(), "{what}: a request succeeded: {r:?}");
            tokio::time::timeout(WAIT, conn.closed()).await.unwrap()
        }
    };
    match &err {
        // A TLS alert: QUIC transport error codes 0x100..=0x1ff (RFC 9001 §4.8).
        ConnectionError::ConnectionClosed(c) => {
            let v = u64::from(c.error_code);
            assert!(
                (0x100..0x200).contains(&v),
                "{what}: closed with a non-TLS error {c:?}"
            );
            let text = String::from_utf8_lossy(&c.reason);
            assert!(
                text.contains(reason),
                "{what}: reason {text:?} lacks {reason:?}"
            );
            v
        }
        other => panic!("{what}: unexpected error {other:?}"),
    }
}

/// QUIC's code for the TLS alert `certificate_unknown` (46): 0x100 + 46.
const CERTIFICATE_UNKNOWN: u64 = 0x100 + 46;

// spec: QX-TRANS (mutual TLS), spec/security.md "Identity"
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_refusals() -> Result {
    let server = TestServer::start().await?;
    // Sanity: a proper identity connects.
    let ok = server.connect("alice").await?;
    ok.conn.close(0u32.into(), b"");

    // No client certificate.
    assert_refused(
        &server,
        server.client_tls(None)?,
        "no client cert",
        "no certificates",
    )
    .await;

    // A certificate from another CA.
    let other = Ca::generate()?;
    let stranger = other.issue_client("alice", Role::Admin)?;
    assert_refused(
        &server,
        server.client_tls(Some(&stranger))?,
        "other CA",
        "UnknownIssuer",
    )
    .await;

    // An expired certificate from the right CA.
    let mut p = LeafParams::client("alice", Role::User);
    p.not_before = SystemTime::now() - Duration::from_secs(3 * 86400);
    p.not_after = SystemTime::now() - Duration::from_secs(86400);
    let expired = server.pki.ca.issue(&p)?;
    assert_refused(
        &server,
        server.client_tls(Some(&expired))?,
        "expired",
        "expired",
    )
    .await;

    // The server's own certificate (EKU serverAuth) used as a client certificate.
    let server_cert = server.pki.server.clone();
    assert_refused(
        &server,
        server.client_tls(Some(&server_cert))?,
        "server EKU",
        "extended key usage for client",
    )
    .await;

    // A client certificate without a role (no OU), and one with an unknown role.
    let mut p = LeafParams::client("alice", Role::User);
    p.org_unit = None;
    // spec: QX-TRANS-8 (refused in the handshake with certificate_unknown)
    let no_role = server.pki.ca.issue(&p)?;
    let alert = assert_refused(
        &server,
        server.client_tls(Some(&no_role))?,
        "no role",
        "BadRole",
    )
    .await;
    assert_eq!(alert, CERTIFICATE_UNKNOWN, "no role");
    p.org_unit = Some("root".into());
    let bad_role = server.pki.ca.issue(&p)?;
    let alert = assert_refused(
        &server,
        server.client_tls(Some(&bad_role))?,
        "bad role",
        "BadRole { found: \"root\" }",
    )
    .await;
    assert_eq!(alert, CERTIFICATE_UNKNOWN, "bad role");

    // Wrong ALPN, and none at all.
    let mut tls = server.client_tls(Some(server.identity("alice")?))?;
    tls.alpn_protocols = vec![b"qexec/2".to_vec()];
    assert_refused(&server, tls, "wrong ALPN", "protocol").await;
    let mut tls = server.client_tls(Some(server.identity("alice")?))?;
    tls.alpn_protocols = vec![];
    assert_refused(&server, tls, "no ALPN", "protocol").await;

    // The server still works afterwards.
    let c = server.connect("admin").await?;
    let list = c
        .request(&ClientMessage::List(ListRequest::default()))
        .await?;
    assert_eq!(list, vec![ServerMessage::ListEnd]);
    server.stop().await
}

// spec/security.md "TLS settings": TLS 1.3, restricted AEADs, hybrid PQ key exchange.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiated_tls_parameters() -> Result {
    let server = TestServer::start().await?;
    // A client limited to X25519 still connects (fallback group).
    let mut provider = (*qexec_tls::provider()).clone();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let id = server.identity("alice")?;
    let certs = rustls_pemfile_certs(&id.cert_pem);
    let key = pem_key_der(&id.key_pem);
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(server.pki.ca.cert_pem()) {
        roots.add(c)?;
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(certs.clone(), key.clone_key())?;
    tls.alpn_protocols = vec![qexec_protocol::ALPN.to_vec()];
    let c = TestClient::connect(server.addr, tls).await?;
    c.conn.close(0u32.into(), b"");

    // A client offering only AES-128-GCM (not negotiable) is refused.
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites =
        vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256];
    let mut tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)?;
    tls.alpn_protocols = vec![qexec_protocol::ALPN.to_vec()];
    assert_refused(&server, tls, "AES-128 only", "NoCipherSuitesInCommon").await;
    server.stop().await
}

fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<_, _>>()
        .unwrap()
}

fn pem_key_der(pem: &str) -> rustls::pki_types::PrivateKeyDer<'static> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// Reads a control stream's answer expecting a reset with `want`.
async fn expect_reset(recv: &mut quinn::RecvStream, want: ErrorCode, what: &str) {
    let r = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20))
        .await
        .unwrap_or_else(|_| panic!("{what}: no reset in time"));
    match r {
        Err(quinn::ReadToEndError::Read(ReadError::Reset(c))) => {
            assert_eq!(c, code(want), "{what}: reset code")
        }
        other => panic!("{what}: expected a reset with {want}, got {other:?}"),
    }
}

// spec: QX-FRAME-2, QX-FRAME-5 (a bad frame closes only its stream)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_stream() -> Result {
    let server = TestServer::start().await?;
    let c = server.connect("alice").await?;
    // A job whose output keeps flowing while the bad frames arrive.
    let job = c
        .start(
            &[
                "/bin/sh",
                "-c",
                "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); sleep 0.005; done",
            ],
            true,
        )
        .await?;
    let out = c.accept_output().await?;
    let reader = tokio::spawn(out.read_to_end());

    // Garbage: a length prefix then a body that is no message.
    let (mut s, mut r) = c.open(&[4, 0xff, 0xff, 0xff, 0xff]).await?;
    s.finish()?;
    expect_reset(&mut r, ErrorCode::ProtocolViolation, "garbage").await;
    // Oversized: declared length above 1 MiB, refused from the prefix alone.
    let (_s, mut r) = c.open(&[0x81, 0x80, 0xc0, 0x00]).await?;
    expect_reset(&mut r, ErrorCode::FrameTooLarge, "oversized").await;
    // Unknown message variant (discriminant 200).
    let (mut s, mut r) = c.open(&[2, 0xc8, 0x01]).await?;
    s.finish()?;
    expect_reset(&mut r, ErrorCode::Unsupported, "unknown variant").await;
    // Truncated: the stream ends inside a frame.
    let mut bytes = frame::encode(&ClientMessage::Status(StatusRequest { job }))?;
    bytes.truncate(bytes.len() - 3);
    let (mut s, mut r) = c.open(&bytes).await?;
    s.finish()?;
    expect_reset(&mut r, ErrorCode::ProtocolViolation, "truncated").await;
    // Wrong message for the state: stdin before any Start.
    let (mut s, mut r) = c.open(&frame::encode(&ClientMessage::StdinEof)?).await?;
    s.finish()?;
    expect_reset(&mut r, ErrorCode::ProtocolViolation, "stdin first").await;
    // Two requests on one stream.
    let mut two = frame::encode(&ClientMessage::List(ListRequest::default()))?;
    two.extend(frame::encode(&ClientMessage::List(ListRequest::default()))?);
    let (mut s, mut r) = c.open(&two).await?;
    s.finish()?;
    expect_reset(&mut r, ErrorCode::ProtocolViolation, "two requests").await;

    // The other job's output arrived whole, and the connection still works.
    let out = reader.await??;
    let expected: String = (0..300).map(|i| format!("line {i}\n")).collect();
    assert_eq!(String::from_utf8(out.data)?, expected);
    assert!(matches!(out.status.state, JobState::Exited { .. }));
    assert_eq!(c.status(job).await?.id, job);
    server.stop().await
}

// spec: QX-LIMIT (request deadline)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_request_times_out() -> Result {
    let server = TestServer::start_with(|c: &mut ServerConfig| {
        c.request_timeout = Duration::from_millis(300)
    })
    .await?;
    let c = server.connect("alice").await?;
    let bytes = frame::encode(&start_msg(&["/bin/true"], false))?;
    let (_s, mut r) = c.open(&bytes[..bytes.len() / 2]).await?;
    expect_reset(&mut r, ErrorCode::Timeout, "half a request").await;
    server.stop().await
}

// Happy path: start, follow from the start, status, list, stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path() -> Result {
    let server = TestServer::start().await?;
    let c = server.connect("alice").await?;

    // Start with follow: the output stream carries everything from offset 0.
    let (mut s, mut r) = c
        .open(&frame::encode(&start_msg(
            &["/bin/sh", "-c", "echo out; echo err >&2; exit 3"],
            true,
        ))?)
        .await?;
    let control_id = u64::from(s.id());
    s.finish()?;
    let answer = read_all(&mut r).await?;
    let [ServerMessage::Started(started)] = answer.as_slice() else {
        panic!("start answered {answer:?}");
    };
    let job = started.job;
    let out = c.accept_output().await?.read_to_end().await?;
    assert_eq!(out.request_stream, control_id);
    assert_eq!((out.job, out.from), (job, 0));
    let text = String::from_utf8(out.data.clone())?;
    assert!(text.contains("out\n") && text.contains("err\n"), "{text:?}");
    assert_eq!(out.data.len(), 8);
    assert_eq!(out.status.owner, "alice");
    assert_eq!(
        out.status.state,
        JobState::Exited {
            termination: qexec_protocol::Termination::Exited(3)
        }
    );

    // Status agrees.
    let st = c.status(job).await?;
    assert_eq!(st.state, out.status.state);
    assert_eq!(st.output_bytes(), 8);

    // Attach after the end from a middle offset gets the tail and End.
    let tail = c.attach(job, 4).await?.read_to_end().await?;
    assert_eq!(tail.from, 4);
    assert_eq!(tail.data, out.data[4..]);

    // A long job: list shows both, stop ends it with the caller's name.
    let long = c.start(&["/bin/sleep", "1000"], false).await?;
    let list = c
        .request(&ClientMessage::List(ListRequest::default()))
        .await?;
    let ids: Vec<JobId> = list
        .iter()
        .filter_map(|m| match m {
            ServerMessage::ListItem(s) => Some(s.id),
            _ => None,
        })
        .collect();
    assert!(ids.contains(&job) && ids.contains(&long), "{list:?}");
    assert_eq!(list.last(), Some(&ServerMessage::ListEnd));
    let running = c
        .request(&ClientMessage::List(ListRequest { running_only: true }))
        .await?;
    assert_eq!(running.len(), 2, "{running:?}");

    let stopped = c
        .request(&ClientMessage::Stop(StopRequest {
            job: long,
            grace_ms: Some(2000),
        }))
        .await?;
    let [ServerMessage::Status(st)] = stopped.as_slice() else {
        panic!("stop answered {stopped:?}");
    };
    assert!(
        matches!(&st.state, JobState::Stopped { reason: StopReason::Requested { by }, .. } if by == "alice"),
        "{st:?}"
    );
    server.stop().await
}

/// What a request answered: the error code, or `None` for success.
fn outcome(answer: &[ServerMessage]) -> Option<ErrorCode> {
    match answer {
        [ServerMessage::Error(e)] => Some(e.code),
        _ => None,
    }
}

// spec/security.md "Authorization": every role × operation × own/foreign/missing job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix_over_the_wire() -> Result {
    use ErrorCode::{NotFound as NF, PermissionDenied as PD};
    let server = TestServer::start().await?;
    let alice = server.connect("alice").await?;
    let bob = server.connect("bob").await?;
    let admin = server.connect("admin").await?;
    let auditor = server.connect("auditor").await?;
    let sleeper = ["/bin/sleep", "1000"];

    // Start: users and admins may, viewers may not.
    let a_job = alice.start(&sleeper, false).await?;
    let b_job = bob.start(&sleeper, false).await?;
    let admin_job = admin.start(&sleeper, false).await?;
    let denied = auditor.request(&start_msg(&sleeper, false)).await?;
    assert_eq!(outcome(&denied), Some(PD));
    let missing = JobId::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);

    // (client, own job, foreign job, expected for [status, follow, signal] on own,
    // on foreign, on missing)
    type Row<'a> = (
        &'a str,
        &'a TestClient,
        JobId,
        JobId,
        [Option<ErrorCode>; 3],
    );
    let rows: [Row<'_>; 3] = [
        ("alice", &alice, a_job, b_job, [None, Some(NF), Some(NF)]),
        ("admin", &admin, admin_job, b_job, [None, None, Some(NF)]),
        // The viewer owns no job; "own" is alice's job, seen like any other.
        ("auditor", &auditor, a_job, b_job, [None, None, Some(NF)]),
    ];
    for (name, c, own, foreign, [on_own, on_foreign, on_missing]) in rows {
        for (target, want) in [(own, on_own), (foreign, on_foreign), (missing, on_missing)] {
            let st = c
                .request(&ClientMessage::Status(StatusRequest { job: target }))
                .await?;
            assert_eq!(outcome(&st), want, "{name} status {target}");
            let at = c
                .request(&ClientMessage::Attach(AttachRequest {
                    job: target,
                    from: 0,
                }))
                .await?;
            assert_eq!(outcome(&at), want, "{name} attach {target}");
            if want.is_none() {
                // The subscription's output stream; cancel it (STOP_SENDING).
                let mut out = c.accept_output().await?;
                assert!(matches!(
                    out.next().await?,
                    Some(OutputFrame::Header { .. })
                ));
                out.recv.stop(code(ErrorCode::Cancelled))?;
            }
            // Signal 18 (SIGCONT) is harmless to a sleeping job. Viewers may not.
            let sig_want = if name == "auditor" && want.is_none() {
                Some(PD)
            } else {
                want
            };
            let sg = c
                .request(&ClientMessage::Signal(SignalRequest {
                    job: target,
                    signal: 18,
                }))
                .await?;
            assert_eq!(outcome(&sg), sig_want, "{name} signal {target}");
        }
    }

    // List: users see their own jobs only; admin and viewer see all.
    let listed = |answer: Vec<ServerMessage>| -> Vec<JobId> {
        answer
            .into_iter()
            .filter_map(|m| match m {
                ServerMessage::ListItem(s) => Some(s.id),
                _ => None,
            })
            .collect()
    };
    let all = [a_job, b_job, admin_job];
    let l = listed(
        alice
            .request(&ClientMessage::List(ListRequest::default()))
            .await?,
    );
    assert_eq!(l, vec![a_job]);
    for c in [&admin, &auditor] {
        let l = listed(
            c.request(&ClientMessage::List(ListRequest::default()))
                .await?,
        );
        assert!(all.iter().all(|j| l.contains(j)), "{l:?}");
    }

    // NotFound is byte-identical for an invisible job and a missing one (after
    // swapping the job id the message names).
    let invisible = alice
        .request_raw(&ClientMessage::Status(StatusRequest { job: b_job }))
        .await?;
    let absent = alice
        .request_raw(&ClientMessage::Status(StatusRequest { job: missing }))
        .await?;
    let swapped = replace(
        &invisible,
        b_job.to_string().as_bytes(),
        missing.to_string().as_bytes(),
    );
    assert_eq!(swapped, absent);
    let stop_invisible = alice
        .request_raw(&ClientMessage::Stop(StopRequest {
            job: b_job,
            grace_ms: None,
        }))
        .await?;
    assert_eq!(
        replace(
            &stop_invisible,
            b_job.to_string().as_bytes(),
            missing.to_string().as_bytes()
        ),
        absent
    );

    // Stop: viewer denied on a visible job, NotFound on a missing one; user NotFound
    // on a foreign job; own job and admin on anyone's succeed.
    let stop = |job| {
        ClientMessage::Stop(StopRequest {
            job,
            grace_ms: Some(1000),
        })
    };
    assert_eq!(outcome(&auditor.request(&stop(a_job)).await?), Some(PD));
    assert_eq!(outcome(&auditor.request(&stop(missing)).await?), Some(NF));
    assert_eq!(outcome(&alice.request(&stop(b_job)).await?), Some(NF));
    assert_eq!(outcome(&alice.request(&stop(missing)).await?), Some(NF));
    assert_eq!(outcome(&alice.request(&stop(a_job)).await?), None);
    assert_eq!(outcome(&admin.request(&stop(b_job)).await?), None);
    assert_eq!(outcome(&admin.request(&stop(admin_job)).await?), None);
    assert_eq!(outcome(&admin.request(&stop(missing)).await?), Some(NF));
    server.stop().await
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

// Head-of-line: a follower that never reads does not delay another job's output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_follower_does_not_block_others() -> Result {
    let server = TestServer::start().await?;
    let c = server.connect("alice").await?;
    // Job A writes 64 MiB; its output stream is accepted and never read.
    let a = c
        .start(&["/bin/sh", "-c", "head -c 67108864 /dev/zero"], true)
        .await?;
    let stalled = c.accept_output().await?;
    // Wait until A has written more than any window could hold.
    let deadline = Instant::now() + WAIT;
    loop {
        let st = c.status(a).await?;
        if st.output_bytes() > 32 << 20 || !st.state.is_running() {
            break;
        }
        assert!(Instant::now() < deadline, "job A did not produce output");
        tokio::task::yield_now().await;
    }
    // Job B's output still arrives, promptly.
    let t0 = Instant::now();
    let b = c.start(&["/bin/echo", "hello"], true).await?;
    let out = c.accept_output().await?.read_to_end().await?;
    assert_eq!(out.job, b);
    assert_eq!(out.data, b"hello\n");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    drop(stalled);
    server.stop().await
}

// stop_on_detach: connection loss stops the job with reason Detached; other jobs
// outlive their connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_stops_only_jobs_that_asked() -> Result {
    let server = TestServer::start().await?;
    let c = server.connect("alice").await?;
    let mut msg = start_msg(&["/bin/sleep", "1000"], false);
    if let ClientMessage::Start(s) = &mut msg {
        s.stop_on_detach = true;
    }
    let answer = c.request(&msg).await?;
    let [ServerMessage::Started(detaching)] = answer.as_slice() else {
        panic!("{answer:?}");
    };
    let keeps = c.start(&["/bin/sleep", "1000"], false).await?;
    c.conn.close(0u32.into(), b"bye");

    let other = server.connect("alice").await?;
    let end = other.attach(detaching.job, 0).await?.read_to_end().await?;
    assert!(
        matches!(
            end.status.state,
            JobState::Stopped {
                reason: StopReason::Detached,
                ..
            }
        ),
        "{:?}",
        end.status.state
    );
    assert!(other.status(keeps).await?.state.is_running());
    server.stop().await
}

// Running jobs per user are limited (→ ResourceExhausted); other users are not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_job_limit() -> Result {
    let server = TestServer::start_with(|c: &mut ServerConfig| c.max_jobs_per_user = 1).await?;
    let alice = server.connect("alice").await?;
    let bob = server.connect("bob").await?;
    let first = alice.start(&["/bin/sleep", "1000"], false).await?;
    let second = alice
        .request(&start_msg(&["/bin/sleep", "1000"], false))
        .await?;
    assert_eq!(outcome(&second), Some(ErrorCode::ResourceExhausted));
    bob.start(&["/bin/true"], false).await?;
    // Once the first job ended, alice may start again.
    alice
        .request(&ClientMessage::Stop(StopRequest {
            job: first,
            grace_ms: Some(1000),
        }))
        .await?;
    let deadline = Instant::now() + WAIT;
    loop {
        let again = alice.request(&start_msg(&["/bin/true"], false)).await?;
        if outcome(&again).is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "slot never released");
        tokio::task::yield_now().await;
    }
    server.stop().await
}

// spec: QX-ERR-5. A start above a server maximum is refused with InvalidArgument naming
// the maximum, never clamped; one at the maximum is not refused for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_above_server_maximum_is_refused() -> Result {
    let server = TestServer::start_with(|c: &mut ServerConfig| {
        c.max_limits = Limits {
            memory_bytes: Some(64 << 20),
            ..Limits::default()
        };
    })
    .await?;
    let alice = server.connect("alice").await?;
    let mut msg = start_msg(&["/bin/true"], false);
    if let ClientMessage::Start(req) = &mut msg {
        req.limits.memory_bytes = Some(128 << 20);
    }
    let answer = alice.request(&msg).await?;
    let [ServerMessage::Error(e)] = answer.as_slice() else {
        panic!("expected one error, got {answer:?}");
    };
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e:?}");
    assert!(e.message.contains("memory_bytes"), "{}", e.message);
    assert!(
        e.message.contains(&(64u64 << 20).to_string()),
        "message does not name the maximum: {}",
        e.message
    );
    assert!(
        e.message.contains(&(128u64 << 20).to_string()),
        "{}",
        e.message
    );
    // No job was created for the refused start.
    let list = alice
        .request(&ClientMessage::List(ListRequest {
            running_only: false,
        }))
        .await?;
    assert_eq!(list, [ServerMessage::ListEnd], "a refused start left a job");
    server.stop().await
}

// Connection limit: past it, new connections are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit() -> Result {
    let server = TestServer::start_with(|c: &mut ServerConfig| c.max_connections = 1).await?;
    let first = server.connect("alice").await?;
    // A request answered on the first connection: the server has given it its slot (a
    // client's handshake can end before the server's task took the slot, and then a
    // second connection could take it first).
    assert_eq!(
        first
            .request(&ClientMessage::List(ListRequest::default()))
            .await?,
        vec![ServerMessage::ListEnd]
    );
    // Refused before the handshake, or (when the first connection's slot was taken
    // only after that check) closed right after it with ResourceExhausted.
    if let Ok(second) = server.connect("bob").await {
        match tokio::time::timeout(WAIT, second.conn.closed()).await? {
            ConnectionError::ApplicationClosed(a) => assert_eq!(
                a.error_code.into_inner(),
                u64::from(ErrorCode::ResourceExhausted.as_u32()),
                "{a:?}"
            ),
            other => panic!("second connection accepted, then: {other}"),
        }
    }
    assert_eq!(
        first
            .request(&ClientMessage::List(ListRequest::default()))
            .await?,
        vec![ServerMessage::ListEnd]
    );
    server.stop().await
}

// IPv6 loopback works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_listen() -> Result {
    let server =
        TestServer::start_with(|c: &mut ServerConfig| c.listen = "[::1]:0".parse().unwrap())
            .await?;
    assert!(server.addr.is_ipv6());
    let c = server.connect("alice").await?;
    let out = {
        let job = c.start(&["/bin/echo", "v6"], true).await?;
        let out = c.accept_output().await?.read_to_end().await?;
        assert_eq!(out.job, job);
        out
    };
    assert_eq!(out.data, b"v6\n");
    server.stop().await
}

// Graceful shutdown: jobs stopped, connections closed with ShuttingDown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_with_code() -> Result {
    let server = TestServer::start().await?;
    let c = server.connect("alice").await?;
    let job = c.start(&["/bin/sleep", "1000"], false).await?;
    let manager = server.server.manager().clone();
    server.stop().await?;
    match tokio::time::timeout(WAIT, c.conn.closed()).await? {
        ConnectionError::ApplicationClosed(a) => {
            assert_eq!(a.error_code, code(ErrorCode::ShuttingDown))
        }
        other => panic!("closed with {other:?}"),
    }
    let st = manager.status(job)?;
    assert!(
        matches!(
            st.state,
            JobState::Stopped {
                reason: StopReason::Shutdown,
                ..
            }
        ),
        "{st:?}"
    );
    Ok(())
}

fn start_with(
    argv: &[&str],
    adjust: impl FnOnce(&mut qexec_protocol::StartRequest),
) -> ClientMessage {
    let mut m = start_msg(argv, false);
    if let ClientMessage::Start(s) = &mut m {
        adjust(s);
    }
    m
}

// Start{stdin}: StdinData* StdinEof FIN on the control stream; the job reads it all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_round_trip() -> Result {
    let server = TestServer::start().await?;
    let c = server.connect("alice").await?;
    let msg = start_with(&["/bin/cat"], |s| {
        s.stdin = true;
        s.follow = true;
    });
    let (mut send, mut recv) = c.open(&frame::encode(&msg)?).await?;
    // All 256 byte values, in several frames, the last one a full 64 KiB.
    let mut input: Vec<u8> = (0..=255u8).cycle().take(3 * 64 * 1024 + 17).collect();
    input.extend(std::iter::repeat_n(7u8, 64 * 1024));
    for chunk in input.chunks(64 * 1024) {
        send.write_all(&frame::encode(&ClientMessage::StdinData(chunk.to_vec()))?)
            .await?;
    }
    send.write_all(&frame::encode(&ClientMessage::StdinEof)?)
        .await?;
    send.finish()?;
    let answer = read_all(&mut recv).await?;
    assert!(
        matches!(answer.as_slice(), [ServerMessage::Started(_)]),
        "{answer:?}"
    );
    let out = c.accept_output().await?.read_to_end().await?;
    assert_eq!(out.data.len(), input.len());
    assert!(out.data == input, "stdin came back altered");
    assert!(matches!(out.status.state, JobState::Exited { .. }));

    // A StdinData frame above 64 KiB stops the stream with ProtocolViolation.
    let msg = start_with(&["/bin/cat"], |s| s.stdin = true);
    let (mut send, mut recv) = c.open(&frame::encode(&msg)?).await?;
    let answer = {
        // Read the Started answer first (the server finishes its side after it).
        let bytes = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20)).await??;
        let mut d = qexec_protocol::Decoder::new();
        d.push(&bytes);
        d.next::<ServerMessage>()?
    };
    let Some(ServerMessage::Started(st)) = answer else {
        panic!("{answer:?}");
    };
    send.write_all(&frame::encode(&ClientMessage::StdinData(vec![
        0;
        64 * 1024
            + 1
    ]))?)
    .await?;
    match tokio::time::timeout(WAIT, send.stopped()).await? {
        Ok(Some(code_)) => assert_eq!(code_, code(ErrorCode::ProtocolViolation)),
        other => panic!("expected STOP_SENDING, got {other:?}"),
    }
    // The job saw EOF (stdin closed with the stream) and ended by itself.
    let end = c.attach(st.job, 0).await?.read_to_end().await?;
    assert!(
        matches!(end.status.state, JobState::Exited { .. }),
        "{:?}",
        end.status.state
    );
    server.stop().await
}

// stop_on_detach: a reset control stream (client still connected) stops the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_control_stream_detaches() -> Result {
    let server = TestServer::start().await?;
    let c = server.connect("alice").await?;
    let msg = start_with(&["/bin/cat"], |s| {
        s.stdin = true;
        s.stop_on_detach = true;
    });
    let (mut send, mut recv) = c.open(&frame::encode(&msg)?).await?;
    let mut d = qexec_protocol::Decoder::new();
    let started = loop {
        if let Some(m) = d.next::<ServerMessage>()? {
            break m;
        }
        let chunk = tokio::time::timeout(WAIT, recv.read_chunk(1024, true))
            .await??
            .expect("answer before FIN");
        d.push(&chunk.bytes);
    };
    let ServerMessage::Started(st) = started else {
        panic!("{started:?}");
    };
    send.reset(code(ErrorCode::Cancelled))?;
    let end = c.attach(st.job, 0).await?.read_to_end().await?;
    assert!(
        matches!(
            end.status.state,
            JobState::Stopped {
                reason: StopReason::Detached,
                ..
            }
        ),
        "{:?}",
        end.status.state
    );
    server.stop().await
}

// Subscriptions per connection are limited; a cancelled one frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_limit() -> Result {
    let server =
        TestServer::start_with(|c: &mut ServerConfig| c.max_subscriptions_per_connection = 1)
            .await?;
    let c = server.connect("alice").await?;
    let job = c.start(&["/bin/sleep", "1000"], false).await?;
    let mut first = c.attach(job, 0).await?;
    assert!(matches!(
        first.next().await?,
        Some(OutputFrame::Header { .. })
    ));
    let second = c
        .request(&ClientMessage::Attach(AttachRequest { job, from: 0 }))
        .await?;
    assert_eq!(outcome(&second), Some(ErrorCode::ResourceExhausted));
    let followed = c.request(&start_msg(&["/bin/true"], true)).await?;
    assert_eq!(outcome(&followed), Some(ErrorCode::ResourceExhausted));
    // Cancel the first subscription (spec: QX-STREAM-15); attaching works again.
    first.recv.stop(code(ErrorCode::Cancelled))?;
    let deadline = Instant::now() + WAIT;
    loop {
        let again = c
            .request(&ClientMessage::Attach(AttachRequest { job, from: 0 }))
            .await?;
        if outcome(&again).is_none() {
            break;
        }
        assert_eq!(outcome(&again), Some(ErrorCode::ResourceExhausted));
        assert!(
            Instant::now() < deadline,
            "cancelled subscription kept its slot"
        );
        tokio::task::yield_now().await;
    }
    server.stop().await
}

// spec: QX-SRV-1, QX-STREAM-21 — with the default limits, one connection reaches 1024
// live subscriptions (far past its 256 control streams: a subscription holds no
// control-stream credit), then `Attach` is answered `ResourceExhausted`, and other
// requests on that connection are still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_subscription_limit_is_reachable() -> Result {
    let server = TestServer::start().await?;
    let c = server.connect("alice").await?;
    let job = c.start(&["/bin/sleep", "1000"], false).await?;
    let attach = ClientMessage::Attach(AttachRequest { job, from: 0 });
    let limit = ServerConfig::from_pki_dir(server.pki_dir()).max_subscriptions_per_connection;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..limit {
        let conn = c.conn.clone();
        let bytes = frame::encode(&attach)?;
        tasks.spawn(async move {
            // Bounded: a wedged connection gives no credit for a new control stream.
            let (mut send, mut recv) = tokio::time::timeout(WAIT, conn.open_bi()).await??;
            send.write_all(&bytes).await?;
            send.finish()?;
            read_all(&mut recv).await
        });
    }
    while let Some(answer) = tasks.join_next().await {
        assert!(
            matches!(answer??.as_slice(), [ServerMessage::Attached { .. }]),
            "every Attach up to the limit is accepted"
        );
    }
    let over = tokio::time::timeout(WAIT, c.request(&attach)).await??;
    assert_eq!(outcome(&over), Some(ErrorCode::ResourceExhausted));
    let status = tokio::time::timeout(WAIT, c.status(job)).await??;
    assert!(status.state.is_running());
    server.stop().await
}

// The service with isolation on (the qexecd default): jobs run in their own PID
// namespace under an init, so the job sees itself as a low pid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_jobs_over_the_wire() -> Result {
    let server = TestServer::start_with(|c: &mut ServerConfig| c.isolation = true).await?;
    let caps = server.server.manager().capabilities();
    if !caps.isolation {
        let why = caps.isolation_unavailable.unwrap_or_default();
        testkit::skip_unless(
            "isolated_jobs_over_the_wire",
            Err(format!("isolation is unavailable: {why}")),
        );
        return server.stop().await;
    }
    let c = server.connect("alice").await?;
    c.start(&["/bin/sh", "-c", "echo $$"], true).await?;
    let out = c.accept_output().await?.read_to_end().await?;
    let pid: u32 = String::from_utf8(out.data)?.trim().parse()?;
    assert!(pid <= 3, "job pid {pid} is not from a fresh PID namespace");
    assert_eq!(
        out.status.state.termination(),
        Some(qexec_protocol::Termination::Exited(0))
    );
    server.stop().await
}
