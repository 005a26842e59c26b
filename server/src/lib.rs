//! qexec server: a job library that runs, follows, limits, isolates and stops Linux
//! processes ([`job`]), usable on its own, and the QUIC/mTLS service on top of it.
#![warn(missing_docs)]

pub mod cgroup;
pub mod job;
pub mod local;
pub mod service;
mod sys;
#[doc(hidden)]
pub use job::spawn::bench_hooks as __spawn_bench_hooks;

pub use job::{
    Capabilities, FollowEvent, Follower, JobError, JobManager, JobSpec, JobStdin, ManagerConfig,
    ManagerError, StartError, StartedJob,
};
