//! The TLS handshake of the *shipped* `qexec` binary, seen from small quinn servers
//! that record its ClientHello (spec/security.md QX-TLS-2, QX-TLS-3, QX-TLS-4):
//! it offers exactly AES-256-GCM and ChaCha20-Poly1305 (never AES-128-GCM, which QUIC
//! uses for Initial packets only), X25519MLKEM768 first, and it refuses a server that
//! offers only AES-128-GCM with one clear line and exit status 255.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use quinn::crypto::rustls::QuicServerConfig;
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CipherSuite, NamedGroup};

mod common;
use common::{WAIT, make_pki, output_within, stderr};

/// What a ClientHello offered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Offer {
    suites: Vec<CipherSuite>,
    groups: Vec<NamedGroup>,
    alpn: Vec<Vec<u8>>,
}

/// Serves the PKI's server certificate and records every ClientHello it sees (the
/// resolver runs before rustls picks a suite, so even a failed handshake is seen).
#[derive(Debug)]
struct Recorder {
    key: Arc<CertifiedKey>,
    seen: Mutex<Vec<Offer>>,
}

impl ResolvesServerCert for Recorder {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offer = Offer {
            suites: hello.cipher_suites().to_vec(),
            groups: hello.named_groups().unwrap_or_default().to_vec(),
            alpn: hello
                .alpn()
                .map(|a| a.map(<[u8]>::to_vec).collect())
                .unwrap_or_default(),
        };
        self.seen.lock().unwrap().push(offer);
        Some(self.key.clone())
    }
}

/// A quinn server on 127.0.0.1 whose TLS offers `suites` only; it records the
/// ClientHellos and closes every connection right after the handshake.
struct RecordingServer {
    addr: SocketAddr,
    recorder: Arc<Recorder>,
    endpoint: quinn::Endpoint,
    _rt: tokio::runtime::Runtime,
}

impl RecordingServer {
    fn start(pki: &std::path::Path, suites: Vec<rustls::SupportedCipherSuite>) -> Self {
        let provider = Arc::new(CryptoProvider {
            cipher_suites: suites,
            ..aws_lc_rs::default_provider()
        });
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(pki.join("server.pem"))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        let key = PrivateKeyDer::from_pem_file(pki.join("server-key.pem")).unwrap();
        let key = Arc::new(CertifiedKey::from_der(chain, key, &provider).unwrap());
        let recorder = Arc::new(Recorder {
            key,
            seen: Mutex::new(Vec::new()),
        });
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_cert_resolver(recorder.clone());
        tls.alpn_protocols = vec![b"qexec/1".to_vec()];
        let initial = aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
            .tls13()
            .and_then(|s| s.quic_suite())
            .unwrap();
        let quic = QuicServerConfig::with_initial(Arc::new(tls), initial).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let endpoint = rt.block_on(async {
            quinn::Endpoint::server(
                quinn::ServerConfig::with_crypto(Arc::new(quic)),
                "127.0.0.1:0".parse().unwrap(),
            )
            .unwrap()
        });
        let addr = endpoint.local_addr().unwrap();
        rt.spawn({
            let endpoint = endpoint.clone();
            async move {
                while let Some(incoming) = endpoint.accept().await {
                    if let Ok(conn) = incoming.await {
                        conn.close(0u32.into(), b"recorded");
                    }
                }
            }
        });
        Self {
            addr,
            recorder,
            endpoint,
            _rt: rt,
        }
    }

    fn offers(&self) -> Vec<Offer> {
        self.recorder.seen.lock().unwrap().clone()
    }
}

impl Drop for RecordingServer {
    fn drop(&mut self) {
        self.endpoint.close(0u32.into(), b"done");
    }
}

/// Runs the shipped `qexec list` against `addr` with the PKI in `pki`.
fn qexec_list(addr: SocketAddr, pki: &std::path::Path) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qexec"));
    cmd.args(["list"])
        .env("QEXEC_ADDR", addr.to_string())
        .env("QEXEC_CONFIG_DIR", pki)
        .env_remove("QEXEC_CA")
        .env_remove("QEXEC_CERT")
        .env_remove("QEXEC_KEY")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    output_within(cmd, WAIT)
}

fn assert_qexec_offer(offer: &Offer) {
    // spec: QX-TLS-2, QX-TLS-3
    assert_eq!(
        offer.suites,
        [
            CipherSuite::TLS13_AES_256_GCM_SHA384,
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
        ],
        "{offer:?}"
    );
    assert!(
        !offer
            .suites
            .contains(&CipherSuite::TLS13_AES_128_GCM_SHA256)
    );
    // spec: QX-TLS-4
    assert_eq!(
        offer.groups,
        [NamedGroup::X25519MLKEM768, NamedGroup::X25519],
        "{offer:?}"
    );
    // spec: QX-TLS-5
    assert_eq!(offer.alpn, [b"qexec/1".to_vec()]);
}

#[test]
fn qexec_offers_the_two_suites_and_the_hybrid_group_first() {
    let pki = make_pki();
    let server = RecordingServer::start(
        pki.path(),
        vec![
            aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384,
            aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
    );
    let out = qexec_list(server.addr, pki.path());
    // The recording server closes the connection after the handshake.
    assert_eq!(out.status.code(), Some(255), "{}", stderr(&out));
    let offers = server.offers();
    eprintln!("qexec offered: {offers:?}");
    assert_eq!(offers.len(), 1, "{offers:?}");
    assert_qexec_offer(&offers[0]);
}

#[test]
fn qexec_refuses_a_server_offering_only_aes128_gcm() {
    // spec: QX-TLS-2
    let pki = make_pki();
    let server = RecordingServer::start(
        pki.path(),
        vec![aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256],
    );
    let out = qexec_list(server.addr, pki.path());
    let err = stderr(&out);
    eprintln!("qexec said: {err}");
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("qexec: TLS handshake with 127.0.0.1:")
            && err.contains("handshake_failure")
            && err.contains("cipher suites"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let offers = server.offers();
    eprintln!("qexec offered: {offers:?}");
    assert_eq!(offers.len(), 1, "{offers:?}");
    assert_qexec_offer(&offers[0]);
}
