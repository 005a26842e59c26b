//! Authorization as seen from the wire (spec/security.md; spec: QX-ERR-6/7, QX-SEC-1/3):
//! needs the
//! optional second user, admin and viewer identities.

use qexec_protocol::{
    AttachRequest, ClientMessage, ErrorCode, JobId, ServerMessage, SignalRequest, StatusRequest,
    StopRequest,
};
use qexec_tls::CertKeyPem;

use super::wire::{Answer, Peer, start_req};
use super::{Check, Config, Outcome, check};

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "QX-ERR-6",
            "another user's job is answered NotFound, byte-identical (but for the id sent) to \
             a job that does not exist, for Status, Stop, Signal and Attach",
            not_found_identical
        ),
        check!(
            "QX-SEC-3",
            "List leaves out jobs the caller may not see",
            list_hides
        ),
        check!(
            "QX-ERR-7",
            "a viewer sees every job but Start, Stop and Signal are PermissionDenied",
            viewer
        ),
        check!(
            "QX-SEC-1",
            "the certificate's role decides: an admin lists and stops another user's job",
            admin
        ),
    ]
}

/// Runs `f` with a `sleep 30` job of the main user and a connection as `other`.
async fn with_foreign_job<F, Fut>(
    config: &Config,
    other: Option<&CertKeyPem>,
    flag: &str,
    f: F,
) -> Outcome
where
    F: FnOnce(Peer, JobId) -> Fut,
    Fut: Future<Output = anyhow::Result<Outcome>>,
{
    let Some(other) = other else {
        return Outcome::skip(format!("no {flag} given"));
    };
    let run = async {
        let owner = Peer::user(config).await?;
        let (started, _) = owner.start(start_req(&[b"sleep", b"30"], false)).await?;
        let peer = Peer::connect(config, other).await?;
        let out = f(peer, started.job).await;
        // The owner cleans up whatever the check did.
        let _ = owner.stop(started.job).await;
        out
    };
    match run.await {
        Ok(o) => o,
        Err(e) => Outcome::fail(format!("{e:#}")),
    }
}

/// The raw answer with every text form of `ids` replaced by `<job id>`.
fn masked(answer: &Answer, ids: &[JobId]) -> Option<Vec<u8>> {
    let Answer::Frames { raw, .. } = answer else {
        return None;
    };
    let mut out = raw.clone();
    for id in ids {
        let text = id.to_string().into_bytes();
        let mut i = 0;
        while i + text.len() <= out.len() {
            if out[i..i + text.len()] == text[..] {
                out[i..i + text.len()].copy_from_slice(&[b'#'; 32]);
                i += text.len();
            } else {
                i += 1;
            }
        }
    }
    Some(out)
}

fn requests(job: JobId) -> [ClientMessage; 4] {
    [
        ClientMessage::Status(StatusRequest { job }),
        ClientMessage::Stop(StopRequest {
            job,
            grace_ms: Some(100),
        }),
        ClientMessage::Signal(SignalRequest { job, signal: 18 }),
        ClientMessage::Attach(AttachRequest { job, from: 0 }),
    ]
}

async fn not_found_identical(config: &Config) -> Outcome {
    // spec: QX-ERR-6, QX-SEC-3
    with_foreign_job(config, config.user2.as_ref(), "--cert2/--key2", |peer, job| async move {
        let missing = JobId::from_u128(job.as_u128() ^ 0x5a5a_5a5a);
        for (foreign, absent) in requests(job).iter().zip(requests(missing).iter()) {
            let name = qexec_protocol::client_message_name(foreign);
            let a = peer.request(foreign).await?;
            let b = peer.request(absent).await?;
            let not_found = |x: &Answer| x.error().is_some_and(|e| e.code == ErrorCode::NotFound);
            if !not_found(&a) || !not_found(&b) {
                return Ok(Outcome::fail(format!(
                    "{name}: expected NotFound for both, got {} (other user's job) and {} (no job)",
                    a.describe(),
                    b.describe()
                )));
            }
            if masked(&a, &[job, missing]) != masked(&b, &[job, missing]) {
                return Ok(Outcome::fail(format!(
                    "{name}: the NotFound answers differ beyond the job id: {} vs {}",
                    a.describe(),
                    b.describe()
                )));
            }
        }
        Ok(Outcome::pass(
            "Status, Stop, Signal, Attach: identical NotFound answers",
        ))
    })
    .await
}

async fn viewer(config: &Config) -> Outcome {
    // spec: QX-ERR-7
    with_foreign_job(
        config,
        config.viewer.as_ref(),
        "--viewer-cert/--viewer-key",
        |peer, job| async move {
            let denied = |a: &Answer| {
                a.error()
                    .is_some_and(|e| e.code == ErrorCode::PermissionDenied)
            };
            let start = peer
                .request(&ClientMessage::Start(start_req(&[b"true"], false)))
                .await?;
            if !denied(&start) {
                return Ok(Outcome::fail(format!(
                    "viewer Start: expected PermissionDenied, got {}",
                    start.describe()
                )));
            }
            let [status, stop, signal, _] = requests(job);
            if peer.status(job).await.is_err() {
                let a = peer.request(&status).await?;
                return Ok(Outcome::fail(format!(
                    "viewer Status of a user's job: expected Status, got {}",
                    a.describe()
                )));
            }
            for msg in [stop, signal] {
                let a = peer.request(&msg).await?;
                if !denied(&a) {
                    return Ok(Outcome::fail(format!(
                        "viewer {}: expected PermissionDenied, got {}",
                        qexec_protocol::client_message_name(&msg),
                        a.describe()
                    )));
                }
            }
            Ok(Outcome::pass(
                "viewer: Status allowed; Start, Stop, Signal answered PermissionDenied",
            ))
        },
    )
    .await
}

async fn admin(config: &Config) -> Outcome {
    // spec: QX-SEC-1
    with_foreign_job(config, config.admin.as_ref(), "--admin-cert/--admin-key", |peer, job| async move {
        if !peer.list().await?.iter().any(|s| s.id == job) {
            return Ok(Outcome::fail("admin List does not show a user's job"));
        }
        let answer = peer
            .request(&ClientMessage::Stop(StopRequest {
                job,
                grace_ms: Some(100),
            }))
            .await?;
        Ok(match &answer {
            Answer::Frames { msgs, .. } if matches!(msgs.as_slice(), [ServerMessage::Status(s)] if !s.state.is_running()) => {
                Outcome::pass("admin listed and stopped a user's job")
            }
            a => Outcome::fail(format!("admin Stop of a user's job: expected its final Status, got {}", a.describe())),
        })
    })
    .await
}

async fn list_hides(config: &Config) -> Outcome {
    // spec: QX-SEC-3
    with_foreign_job(
        config,
        config.user2.as_ref(),
        "--cert2/--key2",
        |peer, job| async move {
            Ok(if peer.list().await?.iter().any(|s| s.id == job) {
                Outcome::fail("a second user's List shows the first user's job")
            } else {
                Outcome::pass("a second user's List leaves out the first user's job")
            })
        },
    )
    .await
}
