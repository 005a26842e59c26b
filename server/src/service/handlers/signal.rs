//! `Signal` → `Status` | `Error`.

use qexec_protocol::SignalRequest;

use super::{Outcome, authorize_job, job_error};
use crate::service::authz::Op;
use crate::service::conn::ConnCtx;

pub(crate) fn handle(ctx: &ConnCtx, req: SignalRequest) -> Outcome {
    let result = authorize_job(ctx, Op::Signal, req.job).and_then(|()| {
        ctx.shared
            .manager
            .signal(req.job, req.signal)
            .map_err(|e| job_error(req.job, &e))
    });
    Outcome::status(req.job, result)
}
