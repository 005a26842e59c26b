//! Client errors: each says what failed, on what, and what to do.

use std::path::PathBuf;
use std::time::Duration;

use qexec_protocol::{ErrorCode, FrameError, JobId, SpawnFailure};
use qexec_tls::ServerCertProblem;

/// Which local credential file a [`ClientError::Credential`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// The CA certificate that must have signed the server's certificate.
    Ca,
    /// Our client certificate (chain).
    Cert,
    /// Our client private key.
    Key,
}

impl CredentialKind {
    /// The flag and environment variable that set this file.
    pub fn setting(self) -> &'static str {
        match self {
            Self::Ca => "--ca / QEXEC_CA",
            Self::Cert => "--cert / QEXEC_CERT",
            Self::Key => "--key / QEXEC_KEY",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Ca => "CA certificate",
            Self::Cert => "client certificate",
            Self::Key => "client private key",
        }
    }
}

impl std::fmt::Display for CredentialKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.what())
    }
}

/// A failure of the qexec client library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A local credential file could not be read or parsed.
    #[error(
        "cannot use the {kind} {path}: {reason}: run `qexec certs init` or point {setting} at the right file",
        setting = kind.setting()
    )]
    Credential {
        /// Which file.
        kind: CredentialKind,
        /// Its path.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The TLS configuration could not be built from the credentials.
    #[error(
        "cannot build the TLS configuration from {cert} and {key}: {reason}: check that the key belongs to the certificate"
    )]
    Tls {
        /// Client certificate path.
        cert: PathBuf,
        /// Client key path.
        key: PathBuf,
        /// rustls' reason.
        reason: String,
    },
    /// `--addr` is not `HOST:PORT`.
    #[error(
        "invalid server address {addr:?}: expected HOST or HOST:PORT, e.g. build-01, 127.0.0.1:7443 or [::1]:7443 (--addr / QEXEC_ADDR)"
    )]
    BadAddress {
        /// What was given.
        addr: String,
    },
    /// The host name did not resolve.
    #[error("cannot resolve {addr}: {reason}: check the host name (--addr / QEXEC_ADDR)")]
    Resolve {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A local UDP socket could not be opened.
    #[error("cannot open a local UDP socket to reach {addr}: {source}")]
    Socket {
        /// Server address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No answer from the server in time.
    #[error("cannot reach qexecd at {addr} (timed out after {}s): is qexecd running? (--addr / QEXEC_ADDR)", after.as_secs_f64())]
    Unreachable {
        /// Server address.
        addr: String,
        /// How long we waited.
        after: Duration,
    },
    /// Nothing listens on the server's UDP port: the host answered ICMP "port
    /// unreachable".
    #[error(
        "cannot reach qexecd at {addr}: nothing listens on that UDP port (the host answered \
         port unreachable): is qexecd running, and on this port? (--addr / QEXEC_ADDR)"
    )]
    Refused {
        /// Server address.
        addr: String,
    },
    /// The server's certificate failed verification.
    #[error("{}", server_cert_message(problem, ca, name))]
    ServerCertUntrusted {
        /// What was wrong.
        problem: ServerCertProblem,
        /// The CA file we trust.
        ca: PathBuf,
        /// The name we expected in the certificate.
        name: String,
    },
    /// The server refused our certificate during or right after the handshake.
    #[error(
        "the server rejected our certificate {cert} ({reason}): is it issued by the server's CA, unexpired, and with a role? (`qexec certs issue NAME --role user`, --cert / QEXEC_CERT)"
    )]
    CertRejected {
        /// Our certificate.
        cert: PathBuf,
        /// The TLS alert or close reason.
        reason: String,
    },
    /// The TLS handshake failed for want of common parameters.
    #[error(
        "TLS handshake with {addr} failed ({reason}): the server accepts none of the cipher suites (AES-256-GCM, ChaCha20-Poly1305) or key exchange groups (X25519MLKEM768, X25519) qexec offers; configure it as spec/security.md says"
    )]
    HandshakeFailed {
        /// Server address.
        addr: String,
        /// The TLS alert and the server's reason.
        reason: String,
    },
    /// The server does not speak `qexec/1`.
    #[error(
        "the server at {addr} does not speak the qexec/1 protocol: is it a qexecd of a compatible version?"
    )]
    NoCommonProtocol {
        /// Server address.
        addr: String,
    },
    /// The connection failed or was closed.
    #[error("connection to qexecd at {addr} lost: {reason}")]
    ConnectionLost {
        /// Server address.
        addr: String,
        /// What happened.
        reason: String,
    },
    /// The server is shutting down.
    #[error("qexecd at {addr} is shutting down: try again once it is back")]
    ShuttingDown {
        /// Server address.
        addr: String,
    },
    /// The job does not exist or is not visible to us.
    #[error(
        "job {job} not found (or not visible to this certificate's identity): check the id with `qexec list`"
    )]
    NotFound {
        /// The job.
        job: JobId,
    },
    /// The program of a job could not be started.
    #[error("{}", spawn_message(*failure, message))]
    Spawn {
        /// Which failure.
        failure: SpawnFailure,
        /// The server's details.
        message: String,
    },
    /// Any other error answer from the server.
    #[error("the server refused the request ({code}): {message}")]
    Server {
        /// The error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
    },
    /// The server broke the protocol.
    #[error("protocol error talking to {addr}: {reason}")]
    Protocol {
        /// Server address.
        addr: String,
        /// What was wrong.
        reason: String,
    },
    /// A frame could not be decoded.
    #[error("protocol error talking to {addr}: {source}")]
    Frame {
        /// Server address.
        addr: String,
        /// The framing error.
        source: FrameError,
    },
    /// The server did not answer a request in time.
    #[error("qexecd at {addr} did not answer the {request} request within {}s: is it overloaded?", after.as_secs())]
    RequestTimeout {
        /// Server address.
        addr: String,
        /// Which request.
        request: &'static str,
        /// How long we waited.
        after: Duration,
    },
}

fn server_cert_message(problem: &ServerCertProblem, ca: &std::path::Path, name: &str) -> String {
    let ca = ca.display();
    match problem {
        ServerCertProblem::UnknownIssuer => format!(
            "server certificate is not signed by the CA in {ca}: use the CA of this server (--ca / QEXEC_CA)"
        ),
        ServerCertProblem::WrongName => format!(
            "server certificate is not valid for {name}: connect with a name in its SANs, or reissue it with `qexec certs issue-server --san {name}` on the server host"
        ),
        ServerCertProblem::Expired => format!(
            "server certificate has expired or is not yet valid (checked against the CA in {ca}): reissue it with `qexec certs issue-server` on the server host, or check the clock"
        ),
        ServerCertProblem::Other(reason) => format!(
            "server certificate was refused ({reason}) when checked against the CA in {ca} (--ca / QEXEC_CA)"
        ),
    }
}

fn spawn_message(failure: SpawnFailure, message: &str) -> String {
    let hint = match failure {
        SpawnFailure::NotFound => "check the program name and the server's PATH",
        SpawnFailure::PermissionDenied | SpawnFailure::NotExecutable => {
            "check the file's permissions and format"
        }
        SpawnFailure::BadCwd => "check the working directory",
        SpawnFailure::TooManyJobs => "wait for jobs to finish and try again",
        _ => "see the server log",
    };
    // The server's message often carries its own advice ("…: install it, fix PATH,
    // or give its full path"); never say it twice.
    let advised = [
        "install", "check", "fix", "try", "wait", "give", "use ", "ask ",
    ]
    .iter()
    .any(|w| message.to_ascii_lowercase().contains(w));
    if advised || message.is_empty() && failure == SpawnFailure::Other {
        format!("the job could not start: {message}")
    } else {
        format!("the job could not start: {message}: {hint}")
    }
}

impl ClientError {
    /// The wire error code of a server error answer, if this is one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::NotFound { .. } => Some(ErrorCode::NotFound),
            Self::Spawn { .. } => Some(ErrorCode::SpawnFailed),
            Self::Server { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// True when the connection itself is gone (a new connection may succeed).
    pub fn is_connection_lost(&self) -> bool {
        matches!(
            self,
            Self::ConnectionLost { .. }
                | Self::ShuttingDown { .. }
                | Self::Unreachable { .. }
                | Self::Refused { .. }
        )
    }
}
