//! The typed spawn failure both sides of the parent use.

use qexec_protocol::SpawnFailure;

/// A typed spawn failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct SpawnError {
    /// Which failure (maps to the wire's `SpawnFailure`).
    pub(crate) failure: SpawnFailure,
    /// What failed, on what, and what to do.
    pub(crate) message: String,
}

impl SpawnError {
    pub(crate) fn new(failure: SpawnFailure, message: impl Into<String>) -> Self {
        Self {
            failure,
            message: message.into(),
        }
    }
}

/// A set-up failure (pipes, descriptors, the init's preparation).
pub(crate) fn setup_error(message: String) -> SpawnError {
    SpawnError::new(SpawnFailure::Setup, message)
}
