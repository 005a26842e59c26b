//! spec: QX-AUTHZ-4 — exactly one audit line per request, on every path: accepted,
//! refused by validation, refused by authorization, refused by the job library, and a
//! request with a second phase (`Start{follow}`, `Attach`).
//!
//! The test runs on a current-thread runtime, so the in-process server's tasks run on
//! the test's thread and a thread-local subscriber sees their audit events.

use std::io::Write;
use std::sync::{Arc, Mutex};

use qexec_protocol::{
    AttachRequest, ClientMessage, JobId, ListRequest, ServerMessage, SignalRequest, StatusRequest,
    StopRequest,
};
use qexec_tests::{TestServer, start_msg};
use tracing_subscriber::fmt::MakeWriter;

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Lines {
    /// The audit lines written so far, as `op result` pairs.
    fn audit(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter(|l| l.contains("qexec::audit"))
            .map(|l| {
                let field = |name: &str| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix(&format!("{name}=")))
                        .unwrap_or("?")
                        .to_owned()
                };
                format!("{} {}", field("op"), field("result"))
            })
            .collect()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn one_audit_line_per_request_on_every_path() -> anyhow::Result<()> {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(lines.clone())
        .with_ansi(false)
        .with_env_filter("qexec::audit=info")
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = TestServer::start().await?;
    let alice = server.connect("alice").await?;
    let bob = server.connect("bob").await?;
    let viewer = server.connect("auditor").await?;
    let mut expected = Vec::new();
    let mut expect = |line: &str| expected.push(line.to_owned());

    // Accepted start with a second phase (follow): one line, not two.
    let job = alice.start(&["/bin/echo", "hi"], true).await?;
    alice.accept_output().await?.read_to_end().await?;
    expect("start ok");
    // Refused by validation (empty argv) and by authorization (viewer).
    let answer = alice.request(&start_msg(&[], false)).await?;
    assert!(
        matches!(answer[..], [ServerMessage::Error(_)]),
        "{answer:?}"
    );
    expect("start invalid_argument");
    let answer = viewer.request(&start_msg(&["/bin/true"], false)).await?;
    assert!(
        matches!(answer[..], [ServerMessage::Error(_)]),
        "{answer:?}"
    );
    expect("start permission_denied");
    // Status: own job, someone else's (invisible), missing.
    alice
        .request(&ClientMessage::Status(StatusRequest { job }))
        .await?;
    expect("status ok");
    bob.request(&ClientMessage::Status(StatusRequest { job }))
        .await?;
    expect("status not_found");
    let missing = JobId::from_u128(0x5eed);
    alice
        .request(&ClientMessage::Status(StatusRequest { job: missing }))
        .await?;
    expect("status not_found");
    // Attach: accepted (second phase: an output stream), refused.
    alice
        .request(&ClientMessage::Attach(AttachRequest { job, from: 0 }))
        .await?;
    alice.accept_output().await?.read_to_end().await?;
    expect("follow ok");
    bob.request(&ClientMessage::Attach(AttachRequest { job, from: 0 }))
        .await?;
    expect("follow not_found");
    // Signal: invalid number (validation), a finished job (the job library).
    alice
        .request(&ClientMessage::Signal(SignalRequest { job, signal: 0 }))
        .await?;
    expect("signal invalid_argument");
    // Stop of a finished job answers its status; a viewer may not stop.
    alice
        .request(&ClientMessage::Stop(StopRequest {
            job,
            grace_ms: Some(0),
        }))
        .await?;
    expect("stop ok");
    viewer
        .request(&ClientMessage::Stop(StopRequest {
            job,
            grace_ms: Some(0),
        }))
        .await?;
    expect("stop permission_denied");
    viewer
        .request(&ClientMessage::List(ListRequest::default()))
        .await?;
    expect("list ok");

    server.stop().await?;
    assert_eq!(lines.audit(), expected);
    Ok(())
}
