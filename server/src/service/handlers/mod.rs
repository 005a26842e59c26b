//! One handler per request kind. Each one authorizes with [`super::authorize`], writes
//! one audit line, answers, and finishes the control stream's send side.

pub(crate) mod attach;
pub(crate) mod list;
pub(crate) mod signal;
pub(crate) mod start;
pub(crate) mod status;
pub(crate) mod stop;

use qexec_protocol::{ErrorCode, JobId, JobStatus};

use super::authz::Op;
use super::conn::ConnCtx;
use super::request::{Refusal, decide, not_found_message};
use crate::job::JobError;

/// Maps a job-library error on job `id` to the answer. A job that vanished is
/// `NotFound` with the same message as an invisible one.
pub(crate) fn job_error(id: JobId, e: &JobError) -> Refusal {
    match e {
        JobError::NotFound(_) => Refusal {
            code: ErrorCode::NotFound,
            message: not_found_message(id),
        },
        #[allow(
            unreachable_patterns,
            reason = "JobError is non_exhaustive and growing"
        )]
        other => Refusal {
            code: ErrorCode::Internal,
            message: format!("job {id}: {other}"),
        },
    }
}

/// Looks job `id` up and authorizes `op` on it: its status if allowed; else the
/// refusal, `NotFound` alike for missing and invisible jobs.
pub(crate) fn lookup(ctx: &ConnCtx, op: Op, id: JobId) -> Result<JobStatus, Refusal> {
    let status = match ctx.shared.manager.status(id) {
        Ok(s) => Some(s),
        Err(JobError::NotFound(_)) => None,
        #[allow(
            unreachable_patterns,
            reason = "JobError is non_exhaustive and growing"
        )]
        Err(e) => return Err(job_error(id, &e)),
    };
    decide(
        &ctx.identity,
        op,
        Some(id),
        status.as_ref().map(|s| s.owner.as_str()),
    )?;
    status.ok_or_else(|| job_error(id, &JobError::NotFound(id)))
}
