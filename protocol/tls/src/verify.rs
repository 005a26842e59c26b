//! The two certificate verifiers: webpki's, plus what qexec adds on each side.
//!
//! - Server side, [`IdentityVerifier`]: after webpki checked the client's chain,
//!   validity and EKU clientAuth, the subject must carry a valid user name (CN) and
//!   role (OU), else the handshake fails with that reason.
//! - Client side, [`RecordingVerifier`]: webpki's server verification, remembering
//!   *why* it refused, so the error a user sees can say exactly that (a QUIC close
//!   only carries a TLS alert number).

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
#[cfg(feature = "pki")]
use {
    crate::identity::Identity,
    rustls::server::danger::{ClientCertVerified, ClientCertVerifier},
    rustls::{DistinguishedName, OtherError},
};

/// Why the server's certificate was not accepted. Exhaustive on purpose: the client
/// has one user-facing message per case, and `Other` carries the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCertProblem {
    /// Not signed by our CA.
    UnknownIssuer,
    /// Valid, but not for the name we connected to.
    WrongName,
    /// Expired or not yet valid.
    Expired,
    /// Anything else webpki reported.
    Other(String),
}

impl ServerCertProblem {
    fn of(e: &rustls::Error) -> Self {
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                    Self::UnknownIssuer
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => Self::WrongName,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => Self::Expired,
                other => Self::Other(format!("{other:?}")),
            },
            other => Self::Other(other.to_string()),
        }
    }
}

/// Where a client configuration's verifier leaves the reason it refused the server's
/// certificate (see [`ClientTls`](crate::ClientTls)). Clones share the slot.
#[derive(Debug, Clone, Default)]
pub struct ServerCertVerdict(Arc<Mutex<Option<ServerCertProblem>>>);

impl ServerCertVerdict {
    /// The last refusal recorded, if the server's certificate was refused.
    pub fn get(&self) -> Option<ServerCertProblem> {
        // A poisoned lock only means another handshake thread panicked; the slot is
        // still a plain value.
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, problem: ServerCertProblem) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(problem);
    }
}

/// webpki's server verification that remembers why it failed.
#[derive(Debug)]
pub(crate) struct RecordingVerifier {
    pub(crate) inner: Arc<WebPkiServerVerifier>,
    pub(crate) verdict: ServerCertVerdict,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // spec: QX-ID-4
        let result = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if let Err(e) = &result {
            self.verdict.set(ServerCertProblem::of(e));
        }
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(feature = "pki")]
/// webpki's client verifier plus the identity rules (see the module docs).
#[derive(Debug)]
pub(crate) struct IdentityVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
}

#[cfg(feature = "pki")]
impl ClientCertVerifier for IdentityVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // spec: QX-ID-1 (webpki: chain, validity, EKU clientAuth), then QX-ID-2.
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        Identity::from_cert_der(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
