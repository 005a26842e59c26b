//! Limits mapping: a request's limits checked against the server's maximums and the
//! host, completed with defaults, and cgroup limit errors turned into start errors.

use qexec_protocol::Limits;

use crate::StartError;
use crate::cgroup::{LimitError, LimitKind};

use super::table::Shared;

/// The limits a start runs with: the request checked against the server maximums and
/// what the host can enforce (never clamped), then completed with server defaults.
pub(super) fn effective_limits(shared: &Shared, req: &Limits) -> Result<Limits, StartError> {
    let config = &shared.config;
    match &shared.cgroups {
        Some(cg) => cg
            .resolve(req, &config.default_limits, &config.max_limits)
            .map_err(limit_error),
        None => match first_limit(req) {
            // spec: a start asking for limits the server cannot enforce is refused.
            Some(field) => Err(StartError::LimitUnavailable {
                field,
                reason: "cgroups are turned off in the server configuration".into(),
            }),
            None => Ok(Limits::default()),
        },
    }
}

/// The field name of the first limit set in `l`.
fn first_limit(l: &Limits) -> Option<&'static str> {
    [
        ("cpu_millis", l.cpu_millis.is_some()),
        ("memory_bytes", l.memory_bytes.is_some()),
        ("io_read_bps", l.io_read_bps.is_some()),
        ("io_write_bps", l.io_write_bps.is_some()),
        ("io_read_iops", l.io_read_iops.is_some()),
        ("io_write_iops", l.io_write_iops.is_some()),
        ("pids", l.pids.is_some()),
    ]
    .into_iter()
    .find_map(|(name, set)| set.then_some(name))
}

fn limit_field(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::Cpu => "cpu_millis",
        LimitKind::Memory => "memory_bytes",
        LimitKind::IoReadBps => "io_read_bps",
        LimitKind::IoWriteBps => "io_write_bps",
        LimitKind::IoReadIops => "io_read_iops",
        LimitKind::IoWriteIops => "io_write_iops",
        LimitKind::Pids => "pids",
    }
}

fn limit_error(e: LimitError) -> StartError {
    match e {
        // spec: QX-ERR-5 (over a server maximum: refused, never clamped)
        LimitError::AboveMax {
            limit,
            requested,
            max,
        } => StartError::InvalidLimits {
            field: limit_field(limit),
            requested,
            max,
        },
        LimitError::BelowMin {
            limit,
            requested,
            min,
        } => StartError::LimitTooSmall {
            field: limit_field(limit),
            requested,
            min,
        },
        LimitError::Unsupported { limit, reason } => StartError::LimitUnavailable {
            field: limit_field(limit),
            reason,
        },
    }
}
