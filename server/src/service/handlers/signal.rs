//! `Signal` → `Status` | `Error`.

use qexec_protocol::SignalRequest;

use super::{Outcome, job_error, lookup};
use crate::service::authz::Op;
use crate::service::conn::ConnCtx;

pub(crate) fn handle(ctx: &ConnCtx, req: SignalRequest) -> Outcome {
    let result = lookup(ctx, Op::Signal, req.job).and_then(|_| {
        ctx.shared
            .manager
            .signal(req.job, req.signal)
            .map_err(|e| job_error(req.job, &e))
    });
    Outcome::status(req.job, result)
}
