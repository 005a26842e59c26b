//! qexec server: the QUIC/mTLS service ([`service`]) on top of qexec's job library
//! ([`qexec_job`], re-exported here as [`job`]), and [`local`], an in-process qexecd
//! for the demo and the tests. Identity, PKI and TLS settings are `qexec-tls`'s.
#![warn(missing_docs)]

pub mod local;
pub mod service;

/// The job library (the `qexec-job` crate), under the path the service has always
/// used (`qexec_server::job`).
pub use qexec_job as job;
pub use qexec_job::cgroup;
pub use qexec_job::{
    Capabilities, FollowEvent, Follower, JobError, JobManager, JobSpec, JobStdin, ManagerConfig,
    ManagerError, SeccompError, StartError, StartedJob,
};
pub use qexec_job::{JobNetwork, SandboxConfig, UidRange};
