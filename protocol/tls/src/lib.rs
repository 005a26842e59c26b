//! qexec's identity model, development PKI and the one TLS configuration both sides
//! use (spec/security.md).
//!
//! - Identity: who a verified client is — [`Identity`] (user name from the subject CN,
//!   [`Role`] from the subject OU), read by [`Identity::from_cert_der`].
//! - Issuance: a development [`Ca`] and the leaf certificates it signs
//!   ([`LeafParams`]); [`generate_in_memory`] makes a whole throwaway PKI.
//! - Store: the on-disk PKI directory ([`PkiPaths`], [`default_dir`], [`init`],
//!   [`issue_client`]) that `qexec certs` manages and qexecd reads.
//! - TLS: [`provider`] (suites and groups), [`server_config`] / [`client_config`]
//!   (TLS 1.3, ALPN, verifiers, no 0-RTT or resumption) and the quinn wrappers
//!   [`server_crypto`] / [`quic_client_config`], which give quinn AES-128-GCM for
//!   Initial packets only.
//! - Transport: the flow-control windows both sides agree on ([`client_transport`]).
//!
//! Cargo feature `pki` (on by default): certificate issuance (rcgen), writing a PKI
//! directory, reading the identity from a certificate (x509-parser) and the server's
//! configuration. The client library turns it off: a client needs only the client
//! configuration and the directory layout.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod close;
mod config;
mod error;
mod identity;
#[cfg(feature = "pki")]
mod issue;
mod pem;
mod store;
mod transport;
mod verify;

pub use close::CloseGate;
pub use config::{
    ClientIdentity, ClientTls, client_config, client_config_pem, initial_suite, provider,
    quic_client_config, quic_server_config,
};
#[cfg(feature = "pki")]
pub use config::{server_config, server_crypto};
pub use error::{PkiError, TlsError};
pub use identity::{Identity, IdentityError, MAX_NAME_LEN, ParseRoleError, Role, valid_name};
#[cfg(feature = "pki")]
pub use issue::{
    Ca, DEFAULT_USERS, InMemoryPki, InitOptions, LeafParams, LeafUsage, generate_in_memory,
};
pub use pem::{CertKeyPem, TlsSource};
pub use store::{ClientPaths, PkiPaths, default_dir, local_user_name};
#[cfg(feature = "pki")]
pub use store::{
    cert_validity, identity_of_cert_file, init, issue_client, issue_server, write_pki,
};
pub use transport::{
    CLIENT_CONNECTION_RECEIVE_WINDOW, CLIENT_MAX_OUTPUT_STREAMS, CLIENT_STREAM_RECEIVE_WINDOW,
    CONNECTION_RECEIVE_WINDOW, MTU_UPPER_BOUND, SEND_WINDOW, SOCKET_BUFFER, STREAM_RECEIVE_WINDOW,
    bind_endpoint, client_transport, endpoint_config, size_socket_buffers, tune_path,
};
#[cfg(feature = "pki")]
pub use verify::ChainError;
pub use verify::{ServerCertProblem, ServerCertVerdict};
