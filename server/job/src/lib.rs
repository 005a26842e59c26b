//! qexec's job library: start, follow, stop and report Linux processes. No network
//! code: it depends on no QUIC or TLS crate and opens no socket of its own. It uses
//! tokio's `net` feature only for the fd reactor (`AsyncFd` on pidfds, and
//! `tokio::net::unix::pipe` on the job's stdio pipes) — not for networking.
//!
//! API contract (shared by the service, the CLI demo and the tests):
//! - [`JobManager::new`] prepares the state directory and the cgroup subtree
//!   (removing stale job cgroups a crashed server left).
//! - [`JobManager::start`] runs argv directly (no shell) and returns at once with the
//!   job id and, if asked, a stdin writer.
//! - [`JobManager::follow`] returns a [`Follower`] that yields the job's output from a
//!   combined-output byte offset, then the final status.
//! - [`JobManager::stop`] sends SIGTERM to every process of the job, waits the grace
//!   period, then SIGKILLs what remains; stopping a finished job returns its status.
//! - Dropping or [`JobManager::shutdown`] stops every running job.
//!
//! # Design
//! - The manager is an `Arc`; jobs live in a table behind a `std::sync::Mutex` that
//!   is never held across an `.await`. Each job has a random 128-bit id and **one
//!   supervisor task**, owned by the manager, that waits at once on the job's pidfd,
//!   its stdout/stderr pipes, its timeout and stop requests (`manager` module docs).
//! - Output goes to an append-only file per job, `<state_dir>/jobs/<id>/output`;
//!   followers read that file at their own pace and are woken by a watch channel of
//!   the committed length, never by polling. Memory does not grow with output
//!   (`output` module docs).
//! - Isolation ([`ManagerConfig::isolation`], on by default when the host allows it):
//!   each job runs in its own PID, mount, network, UTS and IPC namespaces under an
//!   init (the `spawn` module and `sys::init`); the status' pid is the init's host pid.
//! - Sandbox ([`ManagerConfig::sandbox`], on by default when the host allows it; the
//!   `sandbox` module and `sys::sandbox`): an isolated job's program runs in its own
//!   user namespace as a host uid of its own, in a read-only view of the host with
//!   fresh `/proc`, `/sys`, `/dev` and `/tmp`, in a cgroup namespace, with a reduced
//!   capability set. When it is not active, a start that would run as host root is
//!   refused unless the caller may ([`JobSpec::host_root_allowed`]) or the operator
//!   accepted it.
//! - Cgroups ([`ManagerConfig::cgroups`], on by default when the host allows it):
//!   every job gets its own cgroup, created before the spawn and joined by the child
//!   before it executes anything, with the job's effective limits; it is used for
//!   accounting ([`JobStatus::usage`](qexec_protocol::JobStatus::usage), `oom_killed`), to stop the job as a whole and
//!   is removed when the job ended. Without cgroups a start that asks for limits is
//!   refused ([`StartError::LimitUnavailable`]).
//! - Stop: SIGTERM to every process of the job, `grace`, then SIGKILL (`lifecycle`
//!   module docs). "Every process" means every process of the job's cgroup (the
//!   primary mechanism; a `setsid` or double-fork does not escape it), plus, isolated,
//!   every process of the job's PID namespace and, not isolated, the job's process
//!   group. The job has ended when its main process was reaped and its cgroup is
//!   empty.
//! - A job has ended when its main process was reaped and its output pipes were
//!   closed, or a bounded drain after the main process' exit ran out
//!   ([`ManagerConfig::output_drain`]); what is left of the job (its cgroup) is then
//!   killed, so no daemonised grandchild outlives its job.
//! - Output cap: past [`ManagerConfig::output_cap`] combined bytes the job is stopped
//!   with `StopReason::OutputLimit`; bytes up to the cap are kept, the rest is read
//!   and discarded, and the status has `output_truncated = true`. `stdout_bytes` and
//!   `stderr_bytes` count the bytes kept.
//! - Records: every job (also one that failed to start) has a record in the job
//!   database in the state directory; records and output logs survive a restart,
//!   and jobs that were running end as stopped by `Shutdown` (spec: QX-DUR-*).
//! - Retention: per owner the last [`ManagerConfig::retain_finished`] ended jobs,
//!   none older than [`ManagerConfig::retain_age`], and ended jobs' logs within
//!   [`ManagerConfig::log_budget`] (oldest first); the rest are forgotten and their
//!   files deleted.

//!
//! # Modules and their dependencies
//! One room per file. `A -> B` means a file of `A` uses an item defined in `B`
//! (`lib.rs` and `sys/mod.rs` only declare modules and re-export, so edges through
//! them are drawn to the defining file). The graph has no cycle; `sys` and `cgroup`
//! use nothing else of the crate, and nothing in `sys` calls up into `spawn`.
//! ```text
//! config, error          -> cgroup, sandbox;  error -> seccomp
//! stdin                  -> error
//! follow                 -> error, output, manager::table
//! manager (JobManager)   -> manager::{table, start, query}, follow, output, config, error
//!   manager::start       -> manager::{table, limits, cgroups, supervisor}, spawn, stdin,
//!                           output, cgroup, sandbox
//!   manager::supervisor  -> manager::{table, cgroups}, lifecycle, output, sys, cgroup
//!   manager::table       -> manager::{cgroups, store, retention, recovery}, probe,
//!                           sandbox, spawn, output, seccomp, config, error, cgroup
//!   manager::recovery    -> manager::{table, store, retention}, output
//!   manager::store, manager::retention, manager::query  (protocol types only)
//!   manager::limits      -> manager::table, error, cgroup
//!   manager::cgroups     -> config, cgroup
//! sandbox (parent side)  -> sys::sandbox
//! probe                  -> spawn, sys
//! seccomp                -> sys::seccomp (the instruction type, hex)
//! testkit                -> probe, sandbox, spawn
//! spawn (parent side)    -> spawn::{error, pipes, resolve, isolation, process},
//!                           seccomp, sys::{child, plan, isolate, sandbox}
//!   spawn::isolation     -> spawn::{error, pipes}, sys::{plan, sandbox}, sys
//!   spawn::resolve       -> spawn::error, sys::base
//!   spawn::pipes         -> spawn::error
//!   spawn::process       -> sys::init (signal values), sys
//! sys::hook              -> sys::init -> sys::child -> sys::isolate -> sys::plan -> sys::base
//!   sys::init, sys::child -> sys::plan, sys::seccomp;  sys::{process, ns, seccomp} ->
//!   sys::base;  sys::reactor
//!   sys::init, sys::child -> sys::sandbox -> sys::{plan, base}  (the init passes
//!                           `child::exec_target` to `sandbox::start_target` as a fn)
//! cgroup (Cgroups)       -> cgroup::{job, v1, v2, common, parse, report, device,
//!                           device_number, error, fs}
//!   cgroup::job          -> cgroup::{common, v1, v2, fs, parse, error, report}
//!   cgroup::{v1, v2}     -> cgroup::{common, fs, parse, error, report, device_number}
//!   cgroup::common       -> cgroup::{fs, parse, error, device_number}
//!   cgroup::device       -> cgroup::{device_number, error}
//!   cgroup::error        -> cgroup::{device_number, report};  cgroup::fs -> cgroup::error
//! lifecycle, output, cgroup::{parse, report, device_number}, sys::base: leaves
//! ```
//!
//! # Unsafe code
//! Denied everywhere but in `sys`, the one audited module: raw system calls, the code
//! that runs between `clone` and `execve` (`sys::child`, `sys::isolate`), the job's
//! init (`sys::init`), its `.init_array` entry point (`sys::hook`) and what the init
//! does for the job sandbox (`sys::sandbox`). The two `unsafe fn`s, `vfork_and_run`
//! and the sandbox's `fork_into_new_userns`, are private to `sys`; their callers there
//! fix the closure they run, so every caller outside `sys` is safe code.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cgroup;
mod config;
mod error;
mod follow;
mod lifecycle;
mod manager;
mod output;
mod probe;
mod sandbox;
mod seccomp;
mod spawn;
mod stdin;
#[allow(
    unsafe_code,
    reason = "the one audited module of raw system calls and child-side code; every \
              unsafe block carries a SAFETY comment"
)]
mod sys;
mod terminal;
#[doc(hidden)]
pub mod testkit;

pub use config::{Capabilities, JobSpec, ManagerConfig};
pub use error::{JobError, ManagerError, StartError};
pub use follow::{FollowEvent, Follower};
pub use manager::query::{ListFilter, ListPage, MAX_PAGE_ARGV_BYTES};
pub use manager::store::StoreError;
pub use manager::{JobManager, StartedJob};
pub use sandbox::{
    DEFAULT_SHM_SIZE, DEFAULT_TMP_SIZE, DEFAULT_UID_BASE, JobNetwork, SLOT_IDS, SandboxConfig,
    SandboxConfigError, SandboxPathError, UidRange, UidRangeError,
};
pub use seccomp::SeccompError;
pub use stdin::JobStdin;
pub use terminal::JobTerminal;
