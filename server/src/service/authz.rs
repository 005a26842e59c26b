//! Authorization: one function decides every request (spec/security.md,
//! "Authorization").
//!
//! | role   | start | list          | status, follow | stop, signal, stdin |
//! |--------|-------|---------------|----------------|---------------------|
//! | admin  | yes   | all jobs      | all jobs       | all jobs            |
//! | user   | yes   | own jobs      | own jobs       | own jobs            |
//! | viewer | no    | all jobs      | all jobs       | no                  |
//!
//! `Info` (how busy the server is) is allowed to every role (spec: QX-AUTHZ-6).
//!
//! Deny by default. A job the caller may not *see* (a user and another user's job) is
//! answered exactly like a job that does not exist: `NotFound`. `PermissionDenied` is
//! only used for a job the caller can see (a viewer stopping a job) or an operation the
//! role may never do (a viewer starting a job).

use qexec_protocol::ErrorCode;

use qexec_tls::{Identity, Role};

/// An operation a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Start a job (no job yet).
    Start,
    /// List jobs (each job is then filtered with [`visible`]).
    List,
    /// Read a job's status.
    Status,
    /// Follow (attach to) a job's output.
    Follow,
    /// Stop a job.
    Stop,
    /// Send a signal to a job.
    Signal,
    /// Write a job's standard input.
    Stdin,
    /// Ask how busy the server is (spec: QX-INFO-1, QX-AUTHZ-6).
    Info,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 8] = [
        Op::Start,
        Op::List,
        Op::Status,
        Op::Follow,
        Op::Stop,
        Op::Signal,
        Op::Stdin,
        Op::Info,
    ];

    /// Whether the operation acts on one existing job.
    pub const fn on_job(self) -> bool {
        !matches!(self, Op::Start | Op::List | Op::Info)
    }

    /// Lowercase name for logs.
    pub const fn name(self) -> &'static str {
        match self {
            Op::Start => "start",
            Op::List => "list",
            Op::Status => "status",
            Op::Follow => "follow",
            Op::Stop => "stop",
            Op::Signal => "signal",
            Op::Stdin => "stdin",
            Op::Info => "info",
        }
    }
}

/// The answer of [`authorize`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Answer `NotFound`: the job does not exist or is invisible to the caller.
    NotFound,
    /// Answer `PermissionDenied`: the caller sees the job (or asked for a job-less
    /// operation) but its role does not allow the operation.
    PermissionDenied,
}

impl Decision {
    /// The error code of a refusal, `None` for [`Decision::Allow`].
    pub const fn error_code(self) -> Option<ErrorCode> {
        match self {
            Decision::Allow => None,
            Decision::NotFound => Some(ErrorCode::NotFound),
            Decision::PermissionDenied => Some(ErrorCode::PermissionDenied),
        }
    }
}

/// Whether `identity` may see a job owned by `owner` (status, follow, list).
pub fn visible(identity: &Identity, owner: &str) -> bool {
    match identity.role {
        Role::Admin | Role::Viewer => true,
        Role::User => identity.name == owner,
    }
}

/// Decides whether `identity` may do `op`. `job_owner` is the owner of the job the
/// operation targets, `None` when the job does not exist (or for `Start` and `List`,
/// which target no job).
pub fn authorize(identity: &Identity, op: Op, job_owner: Option<&str>) -> Decision {
    // spec: QX-AUTHZ-1, QX-AUTHZ-2 (invisible = missing), QX-AUTHZ-3
    if op.on_job() {
        let Some(owner) = job_owner else {
            return Decision::NotFound;
        };
        if !visible(identity, owner) {
            return Decision::NotFound;
        }
    }
    let allowed = match (identity.role, op) {
        (Role::Admin, _) => true,
        (Role::User, _) => true,
        // spec: QX-AUTHZ-6 (any authenticated role may ask Info)
        (Role::Viewer, Op::List | Op::Status | Op::Follow | Op::Info) => true,
        (Role::Viewer, Op::Start | Op::Stop | Op::Signal | Op::Stdin) => false,
    };
    if allowed {
        Decision::Allow
    } else {
        Decision::PermissionDenied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str, role: Role) -> Identity {
        Identity {
            name: name.into(),
            role,
        }
    }

    /// The whole matrix: role × operation × (no job, own job, foreign job, missing job).
    #[test]
    fn whole_matrix() {
        use Decision::{Allow as A, NotFound as N, PermissionDenied as P};
        // Columns: job-less (owner None for Start/List), own job, foreign job, missing.
        let table: [(Role, Op, [Decision; 3]); 24] = [
            (Role::Admin, Op::Start, [A, A, A]),
            (Role::Admin, Op::List, [A, A, A]),
            (Role::Admin, Op::Status, [A, A, N]),
            (Role::Admin, Op::Follow, [A, A, N]),
            (Role::Admin, Op::Stop, [A, A, N]),
            (Role::Admin, Op::Signal, [A, A, N]),
            (Role::Admin, Op::Stdin, [A, A, N]),
            (Role::Admin, Op::Info, [A, A, A]),
            (Role::User, Op::Start, [A, A, A]),
            (Role::User, Op::List, [A, A, A]),
            (Role::User, Op::Status, [A, N, N]),
            (Role::User, Op::Follow, [A, N, N]),
            (Role::User, Op::Stop, [A, N, N]),
            (Role::User, Op::Signal, [A, N, N]),
            (Role::User, Op::Stdin, [A, N, N]),
            (Role::User, Op::Info, [A, A, A]),
            (Role::Viewer, Op::Start, [P, P, P]),
            (Role::Viewer, Op::List, [A, A, A]),
            (Role::Viewer, Op::Status, [A, A, N]),
            (Role::Viewer, Op::Follow, [A, A, N]),
            (Role::Viewer, Op::Stop, [P, P, N]),
            (Role::Viewer, Op::Signal, [P, P, N]),
            (Role::Viewer, Op::Stdin, [P, P, N]),
            // spec: QX-AUTHZ-6
            (Role::Viewer, Op::Info, [A, A, A]),
        ];
        for (role, op, [own, foreign, missing]) in table {
            let me = id("alice", role);
            if op.on_job() {
                assert_eq!(authorize(&me, op, Some("alice")), own, "{role} {op:?} own");
                assert_eq!(
                    authorize(&me, op, Some("bob")),
                    foreign,
                    "{role} {op:?} foreign"
                );
                assert_eq!(authorize(&me, op, None), missing, "{role} {op:?} missing");
            } else {
                // Job-less operations ignore the owner argument.
                assert_eq!(authorize(&me, op, None), own, "{role} {op:?}");
                assert_eq!(authorize(&me, op, Some("bob")), own, "{role} {op:?}");
            }
        }
        // Every (role, op) pair is in the table.
        for role in Role::ALL {
            for op in Op::ALL {
                assert!(table.iter().any(|t| t.0 == role && t.1 == op));
            }
        }
    }

    #[test]
    fn invisible_is_not_found_never_permission_denied() {
        let user = id("alice", Role::User);
        for op in Op::ALL.into_iter().filter(|o| o.on_job()) {
            assert_eq!(
                authorize(&user, op, Some("bob")),
                authorize(&user, op, None),
                "{op:?}"
            );
        }
    }

    #[test]
    fn visibility() {
        assert!(visible(&id("a", Role::Admin), "b"));
        assert!(visible(&id("a", Role::Viewer), "b"));
        assert!(visible(&id("a", Role::User), "a"));
        assert!(!visible(&id("a", Role::User), "b"));
        // Names compare exactly: no case folding, no prefix match.
        assert!(!visible(&id("a", Role::User), "A"));
        assert!(!visible(&id("a", Role::User), "ab"));
    }
}
