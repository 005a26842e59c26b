//! Where TLS material comes from (files or PEM text) and how it is parsed, with
//! errors that name the file.

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::TlsError;

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertKeyPem {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for CertKeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertKeyPem")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

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

pub(crate) struct Loaded {
    pub(crate) origin: String,
    pub(crate) text: String,
}

pub(crate) fn load(
    what: &'static str,
    path: Option<&Path>,
    text: Option<&str>,
) -> Result<Loaded, TlsError> {
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

pub(crate) fn certs(
    what: &'static str,
    l: &Loaded,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
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

pub(crate) fn key(l: &Loaded) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(l.text.as_bytes()).map_err(|e| TlsError::BadPem {
        what: "private key",
        origin: l.origin.clone(),
        reason: e.to_string(),
    })
}

pub(crate) fn roots(l: &Loaded) -> Result<RootCertStore, TlsError> {
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
