//! Checks of §5.11 (server information): the shape of the `Info` answer, who may ask,
//! and that the counts follow running jobs per caller.

use qexec_protocol::{ClientMessage, ServerInfo, ServerMessage};

use super::frames::with_peer;
use super::wire::{Peer, start_req};
use super::{Check, Config, Outcome, check};

pub(super) fn checks() -> Vec<Check> {
    vec![
        check!(
            "QX-INFO-1",
            "Info is answered by exactly one Info frame and FIN: a version, limits of at \
             least 1, counts within them, at least one CPU",
            info_1
        ),
        check!(
            "QX-INFO-4",
            "a running job of the caller counts in its Info (running_jobs and \
             caller_running_jobs at least 1) and not in the caller count of another user",
            info_4
        ),
        check!(
            "QX-INFO-7",
            "a viewer may ask Info (QX-AUTHZ-6) and its own count is 0",
            info_7
        ),
    ]
}

/// `Info` as `peer`, checked against the response rules (spec: QX-STREAM-9).
pub(super) async fn info(peer: &Peer) -> anyhow::Result<ServerInfo> {
    match peer.ask(&ClientMessage::Info).await?.as_slice() {
        [ServerMessage::Info(info)] => Ok(info.clone()),
        other => anyhow::bail!("Info answered {other:?}"),
    }
}

async fn info_1(config: &Config) -> Outcome {
    // spec: QX-INFO-1, QX-INFO-2, QX-INFO-3, QX-INFO-5, QX-MSG-SRV-9
    with_peer(config, |peer| async move {
        let i = info(&peer).await?;
        let mut wrong = Vec::new();
        if i.server_version.is_empty() {
            wrong.push("an empty server_version".to_owned());
        }
        if i.max_jobs == 0 || i.max_jobs_per_user == 0 {
            wrong.push(format!(
                "a limit of 0 (max_jobs {}, max_jobs_per_user {})",
                i.max_jobs, i.max_jobs_per_user
            ));
        }
        if i.cpus == 0 {
            wrong.push("cpus 0".to_owned());
        }
        if i.caller_running_jobs > i.running_jobs {
            wrong.push(format!(
                "the caller's {} running jobs exceed the server's {}",
                i.caller_running_jobs, i.running_jobs
            ));
        }
        Ok(if wrong.is_empty() {
            Outcome::pass(format!("one Info frame, then FIN: {i:?}"))
        } else {
            Outcome::fail(format!("{}: {i:?}", wrong.join("; ")))
        })
    })
    .await
}

async fn info_4(config: &Config) -> Outcome {
    // spec: QX-INFO-3, QX-INFO-4, QX-INFO-7
    let Some(other) = &config.user2 else {
        return Outcome::skip("no second user given");
    };
    with_peer(config, |peer| async move {
        let them = Peer::connect(config, other).await?;
        let theirs_before = info(&them).await?;
        let (started, _) = peer.start(start_req(&[b"sleep", b"30"], false)).await?;
        let mine = info(&peer).await;
        let theirs = info(&them).await;
        let _ = peer.stop(started.job).await;
        let (mine, theirs) = (mine?, theirs?);
        Ok(
            if mine.running_jobs >= 1
                && mine.caller_running_jobs >= 1
                && theirs.running_jobs >= 1
                && theirs.caller_running_jobs <= theirs_before.caller_running_jobs
            {
                Outcome::pass(format!(
                    "with a sleep job running: the owner sees running_jobs {} and \
                     caller_running_jobs {}; the second user sees running_jobs {} and its \
                     own count {} (it was {} before)",
                    mine.running_jobs,
                    mine.caller_running_jobs,
                    theirs.running_jobs,
                    theirs.caller_running_jobs,
                    theirs_before.caller_running_jobs
                ))
            } else {
                Outcome::fail(format!(
                    "with a sleep job of the main user running, expected running_jobs ≥ 1 \
                     for both, the owner's own count ≥ 1 and the second user's unchanged \
                     ({}); got owner {mine:?}, second user {theirs:?}",
                    theirs_before.caller_running_jobs
                ))
            },
        )
    })
    .await
}

async fn info_7(config: &Config) -> Outcome {
    // spec: QX-INFO-7, QX-AUTHZ-6
    let Some(viewer) = &config.viewer else {
        return Outcome::skip("no viewer given");
    };
    let run = async {
        let peer = Peer::connect(config, viewer).await?;
        let i = info(&peer).await?;
        anyhow::Ok(if i.caller_running_jobs == 0 {
            Outcome::pass(format!("the viewer's Info: {i:?}"))
        } else {
            Outcome::fail(format!(
                "a viewer starts no job, yet its caller_running_jobs is {}",
                i.caller_running_jobs
            ))
        })
    };
    match run.await {
        Ok(o) => o,
        Err(e) => Outcome::fail(format!("{e:#}")),
    }
}
