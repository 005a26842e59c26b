//! Start-up: the jobs a previous manager recorded come back (spec: QX-DUR-2,
//! QX-DUR-6).
//!
//! Every record is loaded with its output log. A job recorded as running was running
//! when that manager died or was killed: its processes and cgroup were cleaned up
//! with the stale cgroups just before, so it ends now as
//! `Stopped { reason: Shutdown, termination: Signaled(SIGKILL) }`, ended at the time
//! of the recovery, with the output it wrote. A damaged log keeps its readable part; a
//! record whose log is missing keeps its status with no output. Job directories no
//! record names are leftovers and are deleted — unless the database was damaged, when
//! they are left for the operator.

use std::collections::HashSet;
use std::os::unix::fs::DirBuilderExt;
use std::sync::{Arc, Mutex};

use qexec_protocol::{JobState, StopReason, Termination};
use tokio::sync::Notify;

use super::store::{Loaded, Record, SEQ_BLOCK};
use super::table::{Job, RunState, Shared, lock, now_ms, remove_dir};
use crate::output::LogShared;

/// Loads `loaded` into the table of `shared` and applies retention.
pub(super) fn recover(shared: &Shared, loaded: Loaded) {
    for problem in &loaded.problems {
        tracing::error!(%problem, "job database: a part could not be read; everything else is kept");
    }
    let now = now_ms();
    let mut known = HashSet::new();
    let mut restarted = 0usize;
    let total = loaded.records.len();
    for record in loaded.records {
        known.insert(record.status.id.to_string());
        let Some((job, was_running)) = job_of(shared, record, now) else {
            continue;
        };
        if was_running {
            restarted += 1;
            shared.record(&job, None);
        }
        let mut table = lock(&shared.table);
        table.ended.insert(
            job.seq,
            super::retention::Ended {
                id: job.id,
                owner: job.owner.clone(),
                ended_at_ms: lock(&job.run).ended_at_ms.unwrap_or(job.started_at_ms),
                log_len: job.log.committed().file_len,
            },
        );
        table.jobs.insert(job.id, job);
    }
    {
        let mut table = lock(&shared.table);
        table.next_seq = loaded.next_seq.saturating_sub(1);
        table.seq_reserved = loaded.next_seq + SEQ_BLOCK;
    }
    if loaded.intact {
        remove_leftovers(shared, &known);
    } else {
        tracing::warn!(
            dir = %shared.jobs_dir.display(),
            "the job database was damaged: job directories it does not name are kept for inspection"
        );
    }
    if total > 0 {
        tracing::info!(
            jobs = total,
            ended_by_restart = restarted,
            database = %shared.store.path().display(),
            "recovered the job records of an earlier server"
        );
    }
    shared.apply_retention();
}

/// The job of one record, with its log, and whether it was running; `None` when
/// even an empty log cannot be put in place (reported).
fn job_of(shared: &Shared, record: Record, now: u64) -> Option<(Arc<Job>, bool)> {
    let Record {
        seq,
        status,
        log_len,
    } = record;
    let id = status.id;
    let dir = shared.jobs_dir.join(id.to_string());
    let path = dir.join("output");
    let recorded = status.output_bytes();
    let truncated = u64::from(status.output_truncated);
    let running = status.state.is_running();
    let log = match LogShared::recover(path.clone(), truncated) {
        Ok(r) => {
            let got = r.shared.committed().payload;
            if let Some(damage) = &r.damage {
                tracing::error!(job = %id, path = %path.display(), %damage, kept = got, "the output log of a job is damaged; its readable part is kept");
            }
            if !running && got < recorded {
                if r.damage.is_none() {
                    tracing::error!(job = %id, path = %path.display(), recorded, kept = got, log_len, "the output log of a job is shorter than recorded; its readable part is kept");
                }
                // Mark the loss: `output_truncated` (spec: QX-DUR-6).
                LogShared::recover(path.clone(), recorded - got)
                    .ok()?
                    .shared
            } else {
                r.shared
            }
        }
        Err(e) => {
            tracing::error!(job = %id, path = %path.display(), error = %e, "the output log of a job cannot be read; the job is kept without output");
            let created = std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .and_then(|()| std::fs::write(&path, b""));
            if let Err(e) = created {
                tracing::error!(job = %id, path = %path.display(), error = %e, "cannot put an empty output log in place; the job is forgotten");
                return None;
            }
            LogShared::recover(path, recorded.max(1)).ok()?.shared
        }
    };
    let (state, ended_at_ms) = if running {
        // spec: QX-DUR-2 (the server restarted while it ran)
        (
            JobState::Stopped {
                reason: StopReason::Shutdown,
                termination: Termination::Signaled(libc::SIGKILL),
            },
            Some(now),
        )
    } else {
        (status.state, status.ended_at_ms)
    };
    let job = Arc::new(Job {
        id,
        seq,
        owner: status.owner,
        argv: status.argv,
        limits: status.limits,
        pid: status.pid,
        started_at_ms: status.started_at_ms,
        dir,
        log,
        run: Mutex::new(RunState {
            state,
            ended_at_ms,
            usage: status.usage,
            oom_killed: status.oom_killed,
        }),
        pending_stop: Mutex::new(None),
        stop_notify: Notify::new(),
        process: Mutex::new(None),
        cgroup: Mutex::new(None),
    });
    Some((job, running))
}

/// Deletes job directories no record names (a start that never got a record).
fn remove_leftovers(shared: &Shared, known: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(&shared.jobs_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if let Some(n) = name.to_str()
            && n.parse::<qexec_protocol::JobId>().is_ok()
            && !known.contains(n)
        {
            tracing::debug!(dir = %entry.path().display(), "deleting a job directory no record names");
            remove_dir(&entry.path());
        }
    }
}
