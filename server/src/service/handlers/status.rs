//! `Status` → `Status` | `Error`.

use qexec_protocol::StatusRequest;

use super::{Outcome, lookup};
use crate::service::authz::Op;
use crate::service::conn::ConnCtx;

pub(crate) fn handle(ctx: &ConnCtx, req: StatusRequest) -> Outcome {
    Outcome::status(req.job, lookup(ctx, Op::Status, req.job))
}
