//! The one TLS configuration of qexec, for both sides (spec/security.md, "TLS
//! settings"); the server, the client library, the CLI and the tests all build their
//! configurations here.
//!
//! - TLS 1.3 only (QUIC requires it), aws-lc-rs provider.
//! - Negotiable AEADs: AES-256-GCM-SHA384 and ChaCha20-Poly1305-SHA256. AES-128-GCM is
//!   *not* negotiable, on either side; quinn gets it separately for Initial packet
//!   protection, which RFC 9001 §5.2 fixes to AES-128-GCM with keys derived from the
//!   public connection id (it protects nothing secret; see [`initial_suite`]).
//! - Key exchange: X25519MLKEM768 (post-quantum hybrid) first, X25519 fallback.
//! - ALPN `qexec/1` on both sides.
//! - Client certificates required, verified against the configured CA by webpki
//!   (chain, validity, EKU clientAuth), then the identity (CN, OU) is checked during the
//!   handshake, so a certificate without a usable identity never gets a connection.
//! - The server's certificate verified by webpki against the one CA the client is
//!   given, for the host name (or IP) it dials; the reason of a refusal is recorded
//!   ([`ServerCertVerdict`]).
//! - No 0-RTT (a replayed `Start` would start a job twice), no session tickets (each
//!   connection re-verifies the client certificate, including its expiry).

use std::sync::Arc;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, aws_lc_rs};
#[cfg(feature = "pki")]
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::TlsError;
use crate::pem::{CertKeyPem, certs, key, load, roots};
use crate::verify::{RecordingVerifier, ServerCertVerdict};
#[cfg(feature = "pki")]
use crate::{pem::TlsSource, verify::IdentityVerifier};

/// The protocol versions of both sides: TLS 1.3 only.
static VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

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

fn tls13_only(what: &'static str) -> impl FnOnce(rustls::Error) -> TlsError {
    move |source| TlsError::Rustls { what, source }
}

#[cfg(feature = "pki")]
/// The server's rustls configuration: TLS 1.3, the qexec provider, client
/// certificates required and checked for an identity, ALPN `qexec/1`, no 0-RTT, no
/// resumption.
pub fn server_config(source: &TlsSource) -> Result<rustls::ServerConfig, TlsError> {
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
        .with_protocol_versions(VERSIONS)
        .map_err(tls13_only("TLS 1.3 protocol version"))?
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
    Ok(config)
}

/// Wraps a rustls server configuration for quinn, with AES-128-GCM for Initial
/// packets only (never offered through rustls).
pub fn quic_server_config(tls: rustls::ServerConfig) -> Result<QuicServerConfig, TlsError> {
    // spec: QX-TLS-3
    QuicServerConfig::with_initial(Arc::new(tls), initial_suite())
        .map_err(|source| TlsError::Quic { source })
}

#[cfg(feature = "pki")]
/// The server's QUIC crypto configuration: [`server_config`] wrapped by
/// [`quic_server_config`].
pub fn server_crypto(source: &TlsSource) -> Result<QuicServerConfig, TlsError> {
    quic_server_config(server_config(source)?)
}

/// A client's certificate chain (end-entity first) and private key.
pub type ClientIdentity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// A client configuration and the slot its verifier reports a refused server
/// certificate into.
#[derive(Debug)]
pub struct ClientTls {
    /// The rustls configuration (callers may adjust it, e.g. tests change the ALPN,
    /// before [`quic_client_config`]).
    pub config: rustls::ClientConfig,
    /// Why the server's certificate was refused, once it was.
    pub verdict: ServerCertVerdict,
}

/// The client's rustls configuration: TLS 1.3, the qexec provider, the server's
/// certificate verified against `roots` only (recording why it was refused), our
/// certificate for mutual TLS (none: a client the server must refuse, for tests),
/// ALPN `qexec/1`.
pub fn client_config(
    roots: RootCertStore,
    identity: Option<ClientIdentity>,
) -> Result<ClientTls, TlsError> {
    let provider = provider();
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|source| TlsError::ServerVerifier { source })?;
    let verdict = ServerCertVerdict::default();
    let verifier = Arc::new(RecordingVerifier {
        inner: webpki,
        verdict: verdict.clone(),
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        // spec: QX-TLS-1
        .with_protocol_versions(VERSIONS)
        .map_err(tls13_only("TLS 1.3 protocol version"))?
        .dangerous()
        // spec: QX-ID-4 (webpki, plus the recorded reason)
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        // spec: QX-TRANS-4
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|source| TlsError::Rustls {
                what: "client certificate and key",
                source,
            })?,
        None => builder.with_no_client_auth(),
    };
    // spec: QX-TRANS-3, QX-TLS-5
    config.alpn_protocols = vec![qexec_protocol::ALPN.to_vec()];
    // spec: QX-TLS-6 (the client never sends early data)
    config.enable_early_data = false;
    Ok(ClientTls { config, verdict })
}

/// [`client_config`] from PEM text: trusts only `ca_pem`, presents `identity` (if any).
pub fn client_config_pem(
    ca_pem: &str,
    identity: Option<&CertKeyPem>,
) -> Result<ClientTls, TlsError> {
    let ca = load("CA certificate", None, Some(ca_pem))?;
    let identity = match identity {
        Some(id) => {
            let cert = load("client certificate", None, Some(&id.cert_pem))?;
            let key_pem = load("client private key", None, Some(&id.key_pem))?;
            Some((certs("client certificate", &cert)?, key(&key_pem)?))
        }
        None => None,
    };
    client_config(roots(&ca)?, identity)
}

/// Wraps a rustls client configuration for quinn, with AES-128-GCM for Initial
/// packets only: quinn's `TryFrom` would instead require AES-128-GCM among the
/// *negotiable* suites, i.e. offer it in the handshake, which QX-TLS-3 forbids.
pub fn quic_client_config(tls: rustls::ClientConfig) -> Result<quinn::ClientConfig, TlsError> {
    // spec: QX-TLS-3
    let quic = QuicClientConfig::with_initial(Arc::new(tls), initial_suite())
        .map_err(|source| TlsError::Quic { source })?;
    Ok(quinn::ClientConfig::new(Arc::new(quic)))
}

#[cfg(all(test, feature = "pki"))]
mod tests {
    use rustls::{CipherSuite, ClientConnection, NamedGroup, ProtocolVersion, ServerConnection};
    use rustls_pki_types::ServerName;

    use super::*;
    use crate::issue::{InitOptions, generate_in_memory};

    fn server_tls(pki: &crate::InMemoryPki) -> rustls::ServerConfig {
        server_config(&TlsSource::Pem {
            ca: pki.ca.cert_pem().to_owned(),
            cert: pki.server.cert_pem.clone(),
            key: pki.server.key_pem.clone(),
        })
        .unwrap()
    }

    /// Runs a whole TLS handshake in memory between the two configurations.
    fn handshake(
        client: rustls::ClientConfig,
        server: rustls::ServerConfig,
    ) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
        let name = ServerName::try_from("localhost").unwrap();
        let mut c = ClientConnection::new(Arc::new(client), name)?;
        let mut s = ServerConnection::new(Arc::new(server))?;
        // Each flight is a few kilobytes; a handshake takes a handful of rounds.
        for _ in 0..10 {
            let mut to_server = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut to_server).unwrap();
            }
            let mut rest = &to_server[..];
            while !rest.is_empty() {
                s.read_tls(&mut rest).unwrap();
                s.process_new_packets()?;
            }
            let mut to_client = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut to_client).unwrap();
            }
            let mut rest = &to_client[..];
            while !rest.is_empty() {
                c.read_tls(&mut rest).unwrap();
                c.process_new_packets()?;
            }
            if !c.is_handshaking() && !s.is_handshaking() {
                return Ok((c, s));
            }
        }
        panic!("handshake did not finish in 10 rounds");
    }

    fn pki() -> crate::InMemoryPki {
        generate_in_memory(&InitOptions {
            client_name: Some("tester".into()),
            ..InitOptions::default()
        })
        .unwrap()
    }

    fn suites(p: &CryptoProvider) -> Vec<CipherSuite> {
        p.cipher_suites.iter().map(|s| s.suite()).collect()
    }

    fn groups(p: &CryptoProvider) -> Vec<NamedGroup> {
        p.kx_groups.iter().map(|g| g.name()).collect()
    }

    const SUITES: [CipherSuite; 2] = [
        CipherSuite::TLS13_AES_256_GCM_SHA384,
        CipherSuite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    const GROUPS: [NamedGroup; 2] = [NamedGroup::X25519MLKEM768, NamedGroup::X25519];

    #[test]
    fn provider_has_exactly_the_two_suites_and_hybrid_group_first() {
        let p = provider();
        assert_eq!(suites(&p), SUITES);
        assert_eq!(groups(&p), GROUPS);
        assert_eq!(
            initial_suite().suite.common.suite,
            CipherSuite::TLS13_AES_128_GCM_SHA256
        );
    }

    #[test]
    fn server_config_is_tls13_alpn_no_early_data_no_tickets() {
        let pki = pki();
        let config = server_tls(&pki);
        assert_eq!(suites(config.crypto_provider()), SUITES);
        assert_eq!(groups(config.crypto_provider()), GROUPS);
        assert_eq!(config.alpn_protocols, [b"qexec/1".to_vec()]);
        assert_eq!(config.max_early_data_size, 0);
        assert_eq!(config.send_tls13_tickets, 0);
        quic_server_config(config).unwrap();
        // spec: QX-ID-1 (client certificates are mandatory)
        let anonymous = client_config_pem(pki.ca.cert_pem(), None).unwrap();
        let e = handshake(anonymous.config, server_tls(&pki)).unwrap_err();
        assert_eq!(e, rustls::Error::NoCertificatesPresented, "{e:?}");
    }

    #[test]
    fn client_config_is_tls13_alpn_and_the_same_provider() {
        let pki = pki();
        let tls = client_config_pem(pki.ca.cert_pem(), Some(&pki.client.1)).unwrap();
        let c = &tls.config;
        assert_eq!(suites(c.crypto_provider()), SUITES);
        assert_eq!(groups(c.crypto_provider()), GROUPS);
        assert_eq!(c.alpn_protocols, [b"qexec/1".to_vec()]);
        assert!(!c.enable_early_data);
        assert!(c.client_auth_cert_resolver.has_certs());
        assert_eq!(tls.verdict.get(), None);
        quic_client_config(tls.config).unwrap();
    }

    #[test]
    fn both_sides_negotiate_tls13_hybrid_group_and_alpn() {
        let pki = pki();
        let client = client_config_pem(pki.ca.cert_pem(), Some(&pki.client.1)).unwrap();
        let (c, s) = handshake(client.config, server_tls(&pki)).unwrap();
        assert_eq!(c.protocol_version(), Some(ProtocolVersion::TLSv1_3));
        assert_eq!(
            c.negotiated_cipher_suite().map(|s| s.suite()),
            Some(CipherSuite::TLS13_AES_256_GCM_SHA384)
        );
        assert_eq!(
            s.negotiated_key_exchange_group().map(|g| g.name()),
            Some(NamedGroup::X25519MLKEM768)
        );
        assert_eq!(c.alpn_protocol(), Some(&b"qexec/1"[..]));
        assert!(s.peer_certificates().is_some_and(|p| !p.is_empty()));
    }

    #[test]
    fn server_refuses_a_client_offering_only_aes128_gcm() {
        // spec: QX-TLS-2
        let pki = pki();
        let provider = CryptoProvider {
            cipher_suites: vec![aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256],
            ..(*provider()).clone()
        };
        let ca = load("CA certificate", None, Some(pki.ca.cert_pem())).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(VERSIONS)
            .unwrap()
            .with_root_certificates(roots(&ca).unwrap())
            .with_no_client_auth();
        let e = handshake(client, server_tls(&pki)).unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoCipherSuitesInCommon)
            ),
            "{e:?}"
        );
    }

    #[test]
    fn client_records_why_it_refused_the_server() {
        let pki = pki();
        let other = generate_in_memory(&InitOptions {
            client_name: Some("tester".into()),
            ..InitOptions::default()
        })
        .unwrap();
        let client = client_config_pem(other.ca.cert_pem(), Some(&other.client.1)).unwrap();
        let verdict = client.verdict.clone();
        assert!(handshake(client.config, server_tls(&pki)).is_err());
        assert_eq!(verdict.get(), Some(crate::ServerCertProblem::UnknownIssuer));
    }

    #[test]
    fn bad_pem_names_what_was_expected() {
        let e = client_config_pem("not pem", None).unwrap_err();
        assert!(
            e.to_string()
                .contains("does not hold a valid CA certificate"),
            "{e}"
        );
        let e = server_config(&TlsSource::Pem {
            ca: String::new(),
            cert: String::new(),
            key: String::new(),
        })
        .unwrap_err();
        assert!(e.to_string().contains("CA certificate"), "{e}");
    }
}
