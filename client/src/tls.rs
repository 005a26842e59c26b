//! The client's TLS configuration (see spec/security.md for the reasons;
//! spec: QX-TRANS-2, QX-TRANS-3, QX-TRANS-4).
//!
//! - rustls with the aws-lc-rs provider, TLS 1.3 only.
//! - Cipher suites: AES-256-GCM-SHA384 and CHACHA20-POLY1305-SHA256, plus
//!   AES-128-GCM-SHA256, which QUIC needs for Initial packet protection (RFC 9001 §5.2;
//!   quinn refuses a configuration without it).
//! - Key exchange: X25519MLKEM768 (hybrid post-quantum) first, X25519 as fallback.
//! - ALPN `qexec/1`; our certificate for mutual TLS; the server's certificate verified
//!   by webpki against the one CA we are given, for the host name (or IP) we dial.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::config::ClientConfig;
use crate::error::{ClientError, CredentialKind, ServerCertProblem};

/// The crypto provider qexec uses on both sides: aws-lc-rs restricted to the suites
/// and groups above.
pub fn crypto_provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: vec![
            aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
            aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![
            aws_lc_rs::kx_group::X25519MLKEM768,
            aws_lc_rs::kx_group::X25519,
        ],
        ..aws_lc_rs::default_provider()
    }
}

/// Where the verifier leaves the reason it refused the server's certificate, so the
/// error a user sees can say exactly that (the QUIC error only carries an alert).
pub(crate) type VerdictSlot = Arc<Mutex<Option<ServerCertProblem>>>;

/// webpki verification that remembers why it failed.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    verdict: VerdictSlot,
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
        let result = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if let Err(e) = &result {
            let problem = match e {
                rustls::Error::InvalidCertificate(c) => match c {
                    CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                        ServerCertProblem::UnknownIssuer
                    }
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. } => {
                        ServerCertProblem::WrongName
                    }
                    CertificateError::Expired
                    | CertificateError::ExpiredContext { .. }
                    | CertificateError::NotValidYet
                    | CertificateError::NotValidYetContext { .. } => ServerCertProblem::Expired,
                    other => ServerCertProblem::Other(format!("{other:?}")),
                },
                other => ServerCertProblem::Other(other.to_string()),
            };
            // A poisoned lock only means another handshake thread panicked; the slot
            // is still a plain value.
            let mut slot = self.verdict.lock().unwrap_or_else(|p| p.into_inner());
            *slot = Some(problem);
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

fn credential_error(kind: CredentialKind, path: &Path, reason: impl ToString) -> ClientError {
    ClientError::Credential {
        kind,
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

fn read_pem(kind: CredentialKind, path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| credential_error(kind, path, e))
}

fn load_certs(
    kind: CredentialKind,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let pem = read_pem(kind, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| credential_error(kind, path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(credential_error(kind, path, "no certificate in the file"));
    }
    Ok(certs)
}

/// Builds the rustls client configuration (with ALPN) for `config`, and the slot its
/// verifier reports into.
pub(crate) fn client_tls(
    config: &ClientConfig,
) -> Result<(rustls::ClientConfig, VerdictSlot), ClientError> {
    let provider = Arc::new(crypto_provider());

    let mut roots = RootCertStore::empty();
    for ca in load_certs(CredentialKind::Ca, &config.ca)? {
        roots
            .add(ca)
            .map_err(|e| credential_error(CredentialKind::Ca, &config.ca, e))?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| credential_error(CredentialKind::Ca, &config.ca, e))?;
    let verdict = VerdictSlot::default();
    let verifier = Arc::new(RecordingVerifier {
        inner: webpki,
        verdict: verdict.clone(),
    });

    let chain = load_certs(CredentialKind::Cert, &config.cert)?;
    let key_pem = read_pem(CredentialKind::Key, &config.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        credential_error(
            CredentialKind::Key,
            &config.key,
            format!("not a PEM private key ({e})"),
        )
    })?;

    let tls_error = |e: rustls::Error| ClientError::Tls {
        cert: config.cert.clone(),
        key: config.key.clone(),
        reason: e.to_string(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(tls_error)?;
    tls.alpn_protocols = vec![qexec_protocol::ALPN.to_vec()];
    Ok((tls, verdict))
}
