//! TLS settings of qexec (spec/security.md, "TLS settings").
//!
//! - TLS 1.3 only (QUIC requires it), aws-lc-rs provider.
//! - Negotiable AEADs: AES-256-GCM-SHA384 and ChaCha20-Poly1305-SHA256. AES-128-GCM is
//!   *not* negotiable; quinn still gets it separately for Initial packet protection,
//!   which RFC 9001 §5.2 fixes to AES-128-GCM with keys derived from the public
//!   connection id (it protects nothing secret; see [`initial_suite`]).
//! - Key exchange: X25519MLKEM768 (post-quantum hybrid) first, X25519 fallback.
//! - ALPN `qexec/1` required on both sides.
//! - Client certificates required, verified against the configured CA by webpki
//!   (chain, validity, EKU clientAuth), then the identity (CN, OU) is checked during the
//!   handshake, so a certificate without a usable identity never gets a connection.
//! - No 0-RTT (a replayed `Start` would start a job twice), no session tickets (each
//!   connection re-verifies the client certificate, including its expiry).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, OtherError};
use rustls::{RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::pki::{CertKeyPem, Identity};

/// Where the server's CA, certificate and key come from.
#[derive(Clone)]
pub enum TlsSource {
    /// PEM files.
    Files {
        /// CA certificate(s) that sign client certificates.
        ca: PathBuf,
        /// Server certificate chain.
        cert: PathBuf,
        /// Server private key.
        key: PathBuf,
    },
    /// PEM text held in memory (tests, demos).
    Pem {
        /// CA certificate(s) that sign client certificates.
        ca: String,
        /// Server certificate chain.
        cert: String,
        /// Server private key.
        key: String,
    },
}

impl std::fmt::Debug for TlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Files { ca, cert, key } => f
                .debug_struct("Files")
                .field("ca", ca)
                .field("cert", cert)
                .field("key", key)
                .finish(),
            Self::Pem { .. } => f.write_str("Pem { <in memory> }"),
        }
    }
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

/// The crypto provider of both sides: aws-lc-rs restricted to the suites and groups
/// listed in the module docs.
pub fn provider() -> Arc<CryptoProvider> {
    // spec: QX-TLS-2, QX-TLS-4
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
            aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        kx_groups: vec![
            aws_lc_rs::kx_group::X25519MLKEM768,
            aws_lc_rs::kx_group::X25519,
        ],
        ..aws_lc_rs::default_provider()
    })
}

/// The suite quinn uses for Initial packets only. RFC 9001 §5.2 makes Initial packet
/// protection AES-128-GCM with keys derived from the client's destination connection
/// id, which is public: it is integrity against accidents, not confidentiality, so
/// using it does not weaken the negotiated AEAD of the handshake and 1-RTT packets.
pub fn initial_suite() -> rustls::quic::Suite {
    // spec: QX-TLS-3
    aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .and_then(|s| s.quic_suite())
        .expect("aws-lc-rs provides TLS13_AES_128_GCM_SHA256 with QUIC support")
}

struct Loaded {
    origin: String,
    text: String,
}

fn load(what: &'static str, path: Option<&Path>, text: Option<&str>) -> Result<Loaded, TlsError> {
    match (path, text) {
        (Some(p), _) => Ok(Loaded {
            origin: p.display().to_string(),
            text: std::fs::read_to_string(p).map_err(|source| TlsError::Read {
                what,
                path: p.to_owned(),
                source,
            })?,
        }),
        (None, t) => Ok(Loaded {
            origin: "<memory>".to_owned(),
            text: t.unwrap_or_default().to_owned(),
        }),
    }
}

fn certs(what: &'static str, l: &Loaded) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::BadPem {
        what,
        origin: l.origin.clone(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(l.text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no CERTIFICATE block found".to_owned()));
    }
    Ok(certs)
}

fn key(l: &Loaded) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(l.text.as_bytes()).map_err(|e| TlsError::BadPem {
        what: "private key",
        origin: l.origin.clone(),
        reason: e.to_string(),
    })
}

fn roots(l: &Loaded) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for c in certs("CA certificate", l)? {
        store.add(c).map_err(|e| TlsError::BadPem {
            what: "CA certificate",
            origin: l.origin.clone(),
            reason: e.to_string(),
        })?;
    }
    Ok(store)
}

/// Builds the server's QUIC crypto configuration.
pub fn server_crypto(
    source: &TlsSource,
) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
    let (ca, cert, key_pem) = match source {
        TlsSource::Files { ca, cert, key } => (
            load("CA certificate", Some(ca), None)?,
            load("server certificate", Some(cert), None)?,
            load("server private key", Some(key), None)?,
        ),
        TlsSource::Pem { ca, cert, key } => (
            load("CA certificate", None, Some(ca))?,
            load("server certificate", None, Some(cert))?,
            load("server private key", None, Some(key))?,
        ),
    };
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&ca)?), provider.clone())
            .build()
            .map_err(|source| TlsError::Verifier {
                origin: ca.origin.clone(),
                source,
            })?;
    let verifier = Arc::new(IdentityVerifier { inner: verifier });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        // spec: QX-TLS-1
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Rustls {
            what: "TLS 1.3 protocol version",
            source,
        })?
        // spec: QX-ID-1
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs("server certificate", &cert)?, key(&key_pem)?)
        .map_err(|source| TlsError::Rustls {
            what: "server certificate and key",
            source,
        })?;
    // spec: QX-VER-1, QX-TLS-5
    config.alpn_protocols = vec![qexec_protocol::ALPN.to_vec()];
    // spec: QX-TLS-6
    config.max_early_data_size = 0;
    // spec: QX-TLS-7
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    quinn::crypto::rustls::QuicServerConfig::with_initial(Arc::new(config), initial_suite())
        .map_err(|source| TlsError::Quic { source })
}

/// A client TLS configuration with qexec's settings: trusts only `ca_pem`, presents
/// `identity` (if any), offers ALPN `qexec/1`. Callers may adjust it (tests change the
/// ALPN) before [`quic_client_config`].
pub fn client_tls(
    ca_pem: &str,
    identity: Option<&CertKeyPem>,
) -> Result<rustls::ClientConfig, TlsError> {
    let ca = load("CA certificate", None, Some(ca_pem))?;
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|source| TlsError::Rustls {
            what: "TLS 1.3 protocol version",
            source,
        })?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots(&ca)?), provider)
        .build()
        .map_err(|source| TlsError::ServerVerifier { source })?;
    let builder = builder.with_webpki_verifier(verifier);
    let mut config = match identity {
        Some(id) => {
            let cert = load("client certificate", None, Some(&id.cert_pem))?;
            let key_pem = load("client private key", None, Some(&id.key_pem))?;
            builder
                .with_client_auth_cert(certs("client certificate", &cert)?, key(&key_pem)?)
                .map_err(|source| TlsError::Rustls {
                    what: "client certificate and key",
                    source,
                })?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![qexec_protocol::ALPN.to_vec()];
    Ok(config)
}

/// Wraps a rustls client configuration for quinn (with the Initial suite).
pub fn quic_client_config(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, TlsError> {
    let quic =
        quinn::crypto::rustls::QuicClientConfig::with_initial(Arc::new(tls), initial_suite())
            .map_err(|source| TlsError::Quic { source })?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

/// webpki's client verifier plus the identity rules: after the chain, validity and
/// EKU clientAuth were checked, the subject must carry a valid user name (CN) and role
/// (OU), else the handshake fails with that reason.
#[derive(Debug)]
struct IdentityVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

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
