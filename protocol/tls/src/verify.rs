//! The two certificate verifiers: webpki's, plus what qexec adds on each side.
//!
//! - Server side, [`IdentityVerifier`]: webpki checks the client's certificate
//!   against the configured CA *directly* (intermediates the client sends are not
//!   used: a client certificate must be issued by a configured CA itself, so no
//!   intermediate CA, whatever its path length, can mint identities), its validity
//!   and EKU clientAuth; then the leaf must not be a CA, its key usage (if present)
//!   must allow digitalSignature, and the subject must carry a valid user name (CN)
//!   and role (OU), else the handshake fails with that reason.
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

/// A client chain qexec refuses although webpki could build it.
#[cfg(feature = "pki")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The client certificate is not signed by a configured CA itself.
    #[error(
        "client certificate is not signed directly by the server's CA (intermediate CAs are \
         not accepted); issue it with the CA's `qexec certs issue`"
    )]
    NotDirectlyUnderCa,
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
        // spec: QX-ID-1 (webpki: chain, validity, EKU clientAuth), QX-ID-6 (no
        // intermediates: the leaf must be signed by a configured CA), then QX-ID-2.
        let verified = self
            .inner
            .verify_client_cert(end_entity, &[], now)
            .map_err(|e| match e {
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)
                    if !intermediates.is_empty() =>
                {
                    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
                        Arc::new(ChainError::NotDirectlyUnderCa),
                    )))
                }
                other => other,
            })?;
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

#[cfg(all(test, feature = "pki"))]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use rustls::RootCertStore;
    use rustls::server::WebPkiClientVerifier;

    use super::*;

    fn key() -> KeyPair {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap()
    }

    fn named(cn: &str, ou: Option<&str>) -> CertificateParams {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        if let Some(ou) = ou {
            dn.push(DnType::OrganizationalUnitName, ou);
        }
        p.distinguished_name = dn;
        p
    }

    fn ca_params(cn: &str, constraint: BasicConstraints) -> CertificateParams {
        let mut p = named(cn, None);
        p.is_ca = IsCa::Ca(constraint);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    }

    /// A client leaf `admin`/admin with these key usages and CA flag.
    fn leaf(usages: Vec<KeyUsagePurpose>, is_ca: IsCa) -> CertificateParams {
        let mut p = named("admin", Some("admin"));
        p.is_ca = is_ca;
        p.key_usages = usages;
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        p.use_authority_key_identifier_extension = true;
        p
    }

    /// A root CA (path length 0, as `qexec certs init` makes) and the server-side
    /// verifier trusting it.
    fn root() -> (
        Issuer<'static, KeyPair>,
        CertificateDer<'static>,
        IdentityVerifier,
    ) {
        let params = ca_params("root", BasicConstraints::Constrained(0));
        let k = key();
        let cert = params.self_signed(&k).unwrap();
        let der = cert.der().clone();
        let mut roots = RootCertStore::empty();
        roots.add(der.clone()).unwrap();
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), crate::provider())
            .build()
            .unwrap();
        (Issuer::new(params, k), der, IdentityVerifier { inner })
    }

    fn verify(
        v: &IdentityVerifier,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), String> {
        v.verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_leaf_directly_under_the_ca_is_accepted() {
        let (ca, ca_der, v) = root();
        let cert = leaf(vec![KeyUsagePurpose::DigitalSignature], IsCa::ExplicitNoCa)
            .signed_by(&key(), &ca)
            .unwrap();
        verify(&v, cert.der(), &[]).unwrap();
        // Sending the CA itself along (a PEM bundle) changes nothing.
        verify(&v, cert.der(), &[ca_der]).unwrap();
    }

    #[test]
    fn a_leaf_under_an_intermediate_ca_is_refused() {
        // spec: QX-ID-6 — root (pathlen:0) → intermediate (CA:TRUE) → leaf `admin`,
        // and the same under an unconstrained intermediate.
        let (ca, _, v) = root();
        for constraint in [
            BasicConstraints::Unconstrained,
            BasicConstraints::Constrained(0),
        ] {
            let params = ca_params("intermediate", constraint);
            let k = key();
            let inter = params.signed_by(&k, &ca).unwrap();
            let inter_issuer = Issuer::new(params, k);
            let cert = leaf(vec![KeyUsagePurpose::DigitalSignature], IsCa::ExplicitNoCa)
                .signed_by(&key(), &inter_issuer)
                .unwrap();
            let e = verify(&v, cert.der(), &[inter.der().clone()]).unwrap_err();
            assert!(e.contains("NotDirectlyUnderCa"), "{e}");
            // Without the intermediate it is simply an unknown issuer.
            assert!(verify(&v, cert.der(), &[]).is_err());
        }
    }

    #[test]
    fn a_leaf_without_digital_signature_is_refused() {
        // spec: QX-ID-6
        let (ca, _, v) = root();
        for usages in [
            vec![KeyUsagePurpose::KeyCertSign],
            vec![KeyUsagePurpose::KeyEncipherment],
        ] {
            let cert = leaf(usages.clone(), IsCa::ExplicitNoCa)
                .signed_by(&key(), &ca)
                .unwrap();
            let e = verify(&v, cert.der(), &[]).unwrap_err();
            assert!(e.contains("NoDigitalSignature"), "{usages:?}: {e}");
        }
        // No key usage extension at all allows every use.
        let cert = leaf(vec![], IsCa::ExplicitNoCa)
            .signed_by(&key(), &ca)
            .unwrap();
        verify(&v, cert.der(), &[]).unwrap();
    }

    #[test]
    fn a_ca_certificate_as_the_leaf_is_refused() {
        // spec: QX-ID-6
        let (ca, _, v) = root();
        let cert = leaf(
            vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
            ],
            IsCa::Ca(BasicConstraints::Unconstrained),
        )
        .signed_by(&key(), &ca)
        .unwrap();
        assert!(verify(&v, cert.der(), &[]).is_err());
        assert_eq!(
            Identity::from_cert_der(cert.der()),
            Err(crate::IdentityError::CaCertificate)
        );
    }
}
