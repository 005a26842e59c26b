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
//! - Retention: the last [`ManagerConfig::retain_finished`] finished jobs are kept
//!   (status and output file), older ones are forgotten and their files deleted.

//!
//! # Modules and their dependencies
//! One room per file. Arrows are `use` edges between the crate's modules; the graph
//! is acyclic (`sys` and `cgroup` use nothing else of the crate):
//! ```text
//! lib (re-exports)
//! manager ──► manager::{table, limits, cgroups, start, supervisor}
//!   start ──► table, limits, cgroups, supervisor, spawn, stdin, output
//!   supervisor ──► table, cgroups, lifecycle, output, spawn, sys
//!   limits, cgroups ──► table? no: limits ──► table; cgroups ──► cgroup
//!   table ──► cgroups, probe, spawn, output, lifecycle
//! follow ──► manager::table, output          stdin ──► error
//! probe ──► spawn, sys                        testkit ──► probe, spawn
//! spawn ──► spawn::{resolve, isolation, process} ──► sys
//! config, error ──► cgroup                    lifecycle, output ──► (none)
//! sys ──► sys::{child, isolate, init, hook, process, ns, reactor}
//!   hook ──► init ──► child ──► isolate      (all inside sys; nothing calls up)
//! cgroup ──► cgroup::{v1, v2, job, fs, parse, device, error, report}
//! ```
//! `unsafe` code is denied everywhere but in `sys`, the one audited module (raw
//! system calls, the `clone` child, the init's `.init_array` entry point).
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
mod spawn;
mod stdin;
#[allow(
    unsafe_code,
    reason = "the one audited module of raw system calls and child-side code; every \
              unsafe block carries a SAFETY comment"
)]
mod sys;
#[doc(hidden)]
pub mod testkit;

pub use config::{Capabilities, JobSpec, ManagerConfig};
pub use error::{JobError, ManagerError, StartError};
pub use follow::{FollowEvent, Follower};
pub use manager::{JobManager, StartedJob};
pub use stdin::JobStdin;
