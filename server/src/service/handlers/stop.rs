//! `Stop` → `Status` | `Error`.

use std::time::Duration;

use qexec_protocol::{StopReason, StopRequest};

use super::{Outcome, Reply, authorize_job, job_error};
use crate::service::authz::Op;
use crate::service::conn::ConnCtx;

pub(crate) async fn handle(ctx: &ConnCtx, req: StopRequest) -> Outcome {
    if let Err(r) = authorize_job(ctx, Op::Stop, req.job) {
        return Outcome::refused(Some(req.job), r);
    }
    let stop = ctx.shared.manager.stop(
        req.job,
        req.grace_ms.map(Duration::from_millis),
        StopReason::Requested {
            by: ctx.identity.name.clone(),
        },
    );
    // The stop waits up to the grace period; a lost connection abandons the answer,
    // not the stop (the job manager finishes it).
    tokio::select! {
        r = stop => Outcome::status(req.job, r.map_err(|e| job_error(req.job, &e))),
        _ = ctx.conn.closed() => Outcome {
            job: Some(req.job),
            reply: Ok(Reply::Unheard),
        },
    }
}
