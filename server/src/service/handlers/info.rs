//! `Info` → `Info` | `Error`: how busy the server is (spec: QX-INFO-1 to QX-INFO-9).
//!
//! Answered from counters the server keeps anyway — the job manager's running slots
//! and the per-user running counts of `--max-jobs-per-user` — each read under its own
//! short lock, never held across an await; no per-job work (spec: QX-INFO-9).

use qexec_protocol::{ServerInfo, ServerMessage};

use super::Outcome;
use crate::service::authz::Op;
use crate::service::conn::ConnCtx;
use crate::service::request::decide;

/// qexecd's version, as `Info` reports it (spec: QX-INFO-2).
pub(crate) const SERVER_VERSION: &str = env!("CARGO_PKG_VERSION");

pub(crate) fn handle(ctx: &ConnCtx) -> Outcome {
    // spec: QX-AUTHZ-6 (every role may ask; the decision is still the one function's)
    if let Err(refusal) = decide(&ctx.identity, Op::Info, None, None) {
        return Outcome::refused(None, refusal);
    }
    let shared = &ctx.shared;
    let info = server_info(
        shared.manager.running_jobs(),
        shared.max_jobs,
        shared.user_jobs.running(&ctx.identity.name),
        shared.max_jobs_per_user,
        shared.cpus,
    );
    Outcome::answer(None, vec![ServerMessage::Info(info)])
}

/// The answer from the server's counts; counts beyond `u32::MAX` are sent as
/// `u32::MAX` (spec: QX-INFO-3, QX-INFO-4).
fn server_info(
    running: usize,
    max_jobs: usize,
    caller_running: usize,
    max_jobs_per_user: usize,
    cpus: u32,
) -> ServerInfo {
    let wire = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    ServerInfo {
        server_version: SERVER_VERSION.to_owned(),
        running_jobs: wire(running),
        max_jobs: wire(max_jobs),
        caller_running_jobs: wire(caller_running),
        max_jobs_per_user: wire(max_jobs_per_user),
        cpus,
    }
}

/// CPUs this process — and so the jobs it starts — can use: the standard library's
/// `available_parallelism` (the CPU affinity mask, and on Linux the cgroup CPU quota
/// qexecd runs under), at least 1 (spec: QX-INFO-5).
pub(crate) fn available_cpus() -> u32 {
    std::thread::available_parallelism()
        .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_go_to_the_wire_saturated() {
        let info = server_info(3, 1024, 1, 256, 8);
        assert_eq!(
            info,
            ServerInfo {
                server_version: SERVER_VERSION.to_owned(),
                running_jobs: 3,
                max_jobs: 1024,
                caller_running_jobs: 1,
                max_jobs_per_user: 256,
                cpus: 8,
            }
        );
        let huge = usize::try_from(u64::from(u32::MAX) + 1).unwrap_or(usize::MAX);
        let info = server_info(huge, huge, 0, huge, 1);
        assert_eq!(info.running_jobs, u32::MAX);
        assert_eq!(info.max_jobs, u32::MAX);
        assert_eq!(info.max_jobs_per_user, u32::MAX);
    }

    #[test]
    fn the_version_is_the_crate_version_and_cpus_at_least_one() {
        // spec: QX-INFO-2, QX-INFO-5
        assert_eq!(SERVER_VERSION, env!("CARGO_PKG_VERSION"));
        assert!(!SERVER_VERSION.is_empty());
        assert!(available_cpus() >= 1);
    }
}
