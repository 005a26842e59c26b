//! Loading the client's credential files, with errors that name the file and the
//! setting that points at it. The TLS configuration itself is the shared one of
//! `qexec-tls` ([`qexec_tls::client_config`]; spec/security.md, "TLS settings").

use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ClientConfig;
use crate::error::{ClientError, CredentialKind};

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

/// Builds the shared client TLS configuration for the files of `config`.
pub(crate) fn client_tls(config: &ClientConfig) -> Result<qexec_tls::ClientTls, ClientError> {
    let mut roots = RootCertStore::empty();
    for ca in load_certs(CredentialKind::Ca, &config.ca)? {
        roots
            .add(ca)
            .map_err(|e| credential_error(CredentialKind::Ca, &config.ca, e))?;
    }
    let chain = load_certs(CredentialKind::Cert, &config.cert)?;
    let key_pem = read_pem(CredentialKind::Key, &config.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        credential_error(
            CredentialKind::Key,
            &config.key,
            format!("not a PEM private key ({e})"),
        )
    })?;
    qexec_tls::client_config(roots, Some((chain, key))).map_err(|e| match e {
        qexec_tls::TlsError::ServerVerifier { source } => {
            credential_error(CredentialKind::Ca, &config.ca, source)
        }
        other => ClientError::Tls {
            cert: config.cert.clone(),
            key: config.key.clone(),
            reason: tls_reason(&other),
        },
    })
}

/// rustls' own words, without our wrapper's prefix (the client error adds its own).
fn tls_reason(e: &qexec_tls::TlsError) -> String {
    match e {
        qexec_tls::TlsError::Rustls { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}
