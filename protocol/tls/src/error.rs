//! Errors of the PKI and of the TLS set-up.

use std::path::PathBuf;

/// Failure of a PKI operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file could not be read, written or created.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted (`read`, `write`, `create directory`…).
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `init` found an existing CA.
    #[error(
        "a CA already exists at {path}; refusing to overwrite it: to change or renew only \
         the server certificate use `qexec certs issue-server --san NAME`; --force replaces \
         the whole PKI, which invalidates every certificate it issued"
    )]
    CaExists {
        /// The existing CA file.
        path: PathBuf,
    },
    /// `issue_client` found an existing certificate for that user.
    #[error("a certificate for user {name:?} already exists at {path}; remove it first to reissue")]
    ClientExists {
        /// The user.
        name: String,
        /// The existing file.
        path: PathBuf,
    },
    /// A user name is not valid.
    #[error("invalid user name {name:?}: use 1..=64 characters of A-Z a-z 0-9 . _ @ -")]
    BadName {
        /// The rejected name.
        name: String,
    },
    /// A subject alternative name is neither an IP address nor a DNS name.
    #[error("invalid subject alternative name {name:?}: give a DNS name or an IP address")]
    BadSan {
        /// The rejected name.
        name: String,
    },
    /// The local user name could not be determined.
    #[error("cannot determine the local user name for the default client certificate: {reason}")]
    NoLocalUser {
        /// Why.
        reason: String,
    },
    /// A PEM file does not hold what was expected.
    #[error("{path} does not hold a valid {what}: {reason}")]
    BadPem {
        /// The file (or `<memory>`).
        path: PathBuf,
        /// What was expected (`certificate`, `private key`).
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// rcgen refused to build or sign a certificate.
    #[cfg(feature = "pki")]
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// Which certificate or key.
        what: String,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// A certificate issued by a loaded CA would not chain to it (the CA's subject
    /// uses string types this tool does not reproduce).
    #[error(
        "the CA in {path} has a subject this tool cannot reproduce; create a new PKI with \
         `qexec certs init --force`"
    )]
    IssuerMismatch {
        /// The CA certificate file (or `<memory>`).
        path: PathBuf,
    },
}

/// Failure to set up TLS.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read {what} from {path}: {source}")]
    Read {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A PEM source holds nothing usable.
    #[error(
        "{origin} does not hold a valid {what}: {reason} (run `qexec certs init` to create a PKI)"
    )]
    BadPem {
        /// What was expected.
        what: &'static str,
        /// The file, or `<memory>`.
        origin: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("cannot use the {what}: {source}")]
    Rustls {
        /// Which part.
        what: &'static str,
        /// rustls' error.
        source: rustls::Error,
    },
    /// The client-certificate verifier could not be built.
    #[error("cannot build the client certificate verifier from the CA in {origin}: {source}")]
    Verifier {
        /// Where the CA came from.
        origin: String,
        /// rustls' error.
        source: rustls::server::VerifierBuilderError,
    },
    /// The server certificate verifier could not be built.
    #[error("cannot build the server certificate verifier from the CA: {source}")]
    ServerVerifier {
        /// rustls' error.
        source: rustls::client::VerifierBuilderError,
    },
    /// quinn refused the TLS configuration.
    #[error("quinn refused the TLS configuration: {source}")]
    Quic {
        /// quinn's error.
        source: quinn::crypto::rustls::NoInitialCipherSuite,
    },
}
