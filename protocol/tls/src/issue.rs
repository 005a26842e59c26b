//! Issuance: a development CA (ECDSA P-256) and the leaf certificates it signs —
//! the server's (EKU serverAuth) and the clients' (EKU clientAuth, CN = user name,
//! OU = role). Nothing here touches the file system; [`crate::store`] does.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber,
};

use crate::error::PkiError;
use crate::identity::{Role, valid_name};
use crate::pem::CertKeyPem;
use crate::store::{PkiPaths, local_user_name, read_pem_file};

/// Validity of the CA certificate.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Validity of server and client certificates.
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start to be valid this long before they are made (clock skew).
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Users `init` creates besides the default client, with their roles.
pub const DEFAULT_USERS: [(&str, Role); 4] = [
    ("alice", Role::User),
    ("bob", Role::User),
    ("admin", Role::Admin),
    ("auditor", Role::Viewer),
];
/// Common name of the server certificate.
const SERVER_CN: &str = "qexecd";
/// Common name of the CA certificate.
const CA_CN: &str = "qexec development CA";
/// Organization of every certificate.
const ORG: &str = "qexec";

/// What a leaf certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafUsage {
    /// EKU clientAuth.
    Client,
    /// EKU serverAuth.
    Server,
}

/// Everything about a leaf certificate; [`Ca::issue`] signs it. Tests use it to make
/// unusual certificates (expired, wrong EKU, missing role).
#[derive(Debug, Clone)]
pub struct LeafParams {
    /// Subject CN.
    pub common_name: String,
    /// Subject OU (the role of a client), if any.
    pub org_unit: Option<String>,
    /// Subject alternative names (DNS names or IP addresses).
    pub sans: Vec<String>,
    /// Extended key usage.
    pub usage: LeafUsage,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl LeafParams {
    /// A client certificate for `name` with `role`, valid from now for one year.
    pub fn client(name: &str, role: Role) -> Self {
        let now = SystemTime::now();
        Self {
            common_name: name.to_owned(),
            org_unit: Some(role.as_str().to_owned()),
            sans: Vec::new(),
            usage: LeafUsage::Client,
            not_before: now - BACKDATE,
            not_after: now + LEAF_VALIDITY,
        }
    }

    /// A server certificate for localhost, 127.0.0.1, ::1 and `extra_sans`, valid
    /// from now for one year.
    pub fn server(extra_sans: &[String]) -> Self {
        let now = SystemTime::now();
        let mut sans: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .into_iter()
            .map(str::to_owned)
            .collect();
        for s in extra_sans {
            if !sans.contains(s) {
                sans.push(s.clone());
            }
        }
        Self {
            common_name: SERVER_CN.to_owned(),
            org_unit: None,
            sans,
            usage: LeafUsage::Server,
            not_before: now - BACKDATE,
            not_after: now + LEAF_VALIDITY,
        }
    }
}

/// A certificate authority that can issue qexec certificates.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    origin: PathBuf,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, and exactly 16 bytes long once DER-encoded.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn gen_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |source| PkiError::Generate { what, source }
}

fn new_key(what: &str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err(format!("{what} key")))
}

impl Ca {
    /// Makes a new CA (ECDSA P-256, valid ten years).
    pub fn generate() -> Result<Self, PkiError> {
        // spec: QX-ID-5
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // A random suffix tells CAs apart: a certificate from another qexec CA is then
        // refused as "unknown issuer", not as a bad signature under a same-named CA.
        let tag: u32 = rand::random();
        dn.push(DnType::CommonName, format!("{CA_CN} {tag:08x}"));
        dn.push(DnType::OrganizationName, ORG);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + CA_VALIDITY).into();
        params.serial_number = Some(random_serial());
        let key = new_key("CA")?;
        let cert = params
            .self_signed(&key)
            .map_err(gen_err("CA certificate"))?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
            origin: PathBuf::from("<memory>"),
        })
    }

    /// Loads a CA from its certificate and private key (PEM). `origin` names where
    /// they came from, for error messages.
    pub fn from_pem(cert_pem: &str, key_pem: &str, origin: &Path) -> Result<Self, PkiError> {
        let bad = |what: &'static str, reason: String| PkiError::BadPem {
            path: origin.to_owned(),
            what,
            reason,
        };
        let cert_der = first_cert_der(cert_pem).map_err(|r| bad("CA certificate", r))?;
        let key = KeyPair::from_pem(key_pem).map_err(|e| bad("CA private key", e.to_string()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&cert_der)
            .map_err(|e| bad("CA certificate", e.to_string()))?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(bad(
                "CA private key",
                "the key does not belong to the CA certificate".to_owned(),
            ));
        }
        // Rebuild the subject so issued certificates name this CA as their issuer.
        let mut dn = DistinguishedName::new();
        for attr in cert.subject().iter_attributes() {
            let oid: Vec<u64> = attr
                .attr_type()
                .iter()
                .map(Iterator::collect)
                .unwrap_or_default();
            let value = attr
                .as_str()
                .map_err(|_| PkiError::IssuerMismatch {
                    path: origin.to_owned(),
                })?
                .to_owned();
            dn.push(DnType::from_oid(&oid), DnValue::Utf8String(value));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            cert_der,
            issuer: Issuer::new(params, key),
            origin: origin.to_owned(),
        })
    }

    /// Loads the CA of a PKI directory (`ca.pem`, `ca-key.pem`).
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let paths = PkiPaths::new(dir);
        let cert = read_pem_file(&paths.ca)?;
        let key = read_pem_file(&paths.ca_key)?;
        Self::from_pem(&cert, &key, &paths.ca)
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a client certificate (EKU clientAuth, CN `name`, OU `role`).
    pub fn issue_client(&self, name: &str, role: Role) -> Result<CertKeyPem, PkiError> {
        if !valid_name(name) {
            return Err(PkiError::BadName {
                name: name.to_owned(),
            });
        }
        self.issue(&LeafParams::client(name, role))
    }

    /// Issues a server certificate (EKU serverAuth, SANs localhost, 127.0.0.1, ::1
    /// and `extra_sans`).
    pub fn issue_server(&self, extra_sans: &[String]) -> Result<CertKeyPem, PkiError> {
        self.issue(&LeafParams::server(extra_sans))
    }

    /// Issues any leaf certificate; no check of the name or role (tests use this to
    /// make certificates the server must refuse).
    pub fn issue(&self, leaf: &LeafParams) -> Result<CertKeyPem, PkiError> {
        let what = format!("certificate for {:?}", leaf.common_name);
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err(&what))?;
        for san in &leaf.sans {
            let one = CertificateParams::new(vec![san.clone()])
                .map_err(|_| PkiError::BadSan { name: san.clone() })?;
            params.subject_alt_names.extend(one.subject_alt_names);
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, leaf.common_name.as_str());
        dn.push(DnType::OrganizationName, ORG);
        if let Some(ou) = &leaf.org_unit {
            dn.push(DnType::OrganizationalUnitName, ou.as_str());
        }
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match leaf.usage {
            LeafUsage::Client => ExtendedKeyUsagePurpose::ClientAuth,
            LeafUsage::Server => ExtendedKeyUsagePurpose::ServerAuth,
        }];
        params.use_authority_key_identifier_extension = true;
        params.not_before = leaf.not_before.into();
        params.not_after = leaf.not_after.into();
        params.serial_number = Some(random_serial());
        let key = new_key(&what)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(gen_err(&what))?;
        self.check_issuer(cert.der())?;
        Ok(CertKeyPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    fn check_issuer(&self, leaf_der: &[u8]) -> Result<(), PkiError> {
        let mismatch = || PkiError::IssuerMismatch {
            path: self.origin.clone(),
        };
        let (_, ca) =
            x509_parser::parse_x509_certificate(&self.cert_der).map_err(|_| mismatch())?;
        let (_, leaf) = x509_parser::parse_x509_certificate(leaf_der).map_err(|_| mismatch())?;
        if ca.subject().as_raw() == leaf.issuer().as_raw() {
            Ok(())
        } else {
            Err(mismatch())
        }
    }
}

pub(crate) fn first_cert_der(pem: &str) -> Result<Vec<u8>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| "no CERTIFICATE block found".to_owned())?
        .map(|c| c.to_vec())
        .map_err(|e| e.to_string())
}

/// Options of [`init`](crate::init) and [`generate_in_memory`].
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Extra subject alternative names of the server certificate.
    pub sans: Vec<String>,
    /// Replace an existing PKI (the old CA and everything it issued become useless).
    pub force: bool,
    /// User name of the default client certificate; `None` means the local user name.
    pub client_name: Option<String>,
}

/// A whole PKI held in memory (tests, demos).
#[derive(Debug)]
pub struct InMemoryPki {
    /// The CA.
    pub ca: Ca,
    /// The server certificate and key.
    pub server: CertKeyPem,
    /// The default client: its name and certificate (role admin).
    pub client: (String, CertKeyPem),
    /// The default users (name, role, certificate), see [`DEFAULT_USERS`].
    pub users: Vec<(String, Role, CertKeyPem)>,
}

impl InMemoryPki {
    /// The certificate of default user `name`, if there is one.
    pub fn user(&self, name: &str) -> Option<&CertKeyPem> {
        self.users.iter().find(|u| u.0 == name).map(|u| &u.2)
    }
}

/// Generates a whole PKI in memory: CA, server certificate, default client (role
/// admin) and the [`DEFAULT_USERS`].
pub fn generate_in_memory(opts: &InitOptions) -> Result<InMemoryPki, PkiError> {
    let client_name = match &opts.client_name {
        Some(n) => n.clone(),
        None => local_user_name()?,
    };
    if !valid_name(&client_name) {
        return Err(PkiError::BadName { name: client_name });
    }
    let ca = Ca::generate()?;
    let server = ca.issue_server(&opts.sans)?;
    let client = ca.issue_client(&client_name, Role::Admin)?;
    let users = DEFAULT_USERS
        .iter()
        .map(|&(name, role)| Ok((name.to_owned(), role, ca.issue_client(name, role)?)))
        .collect::<Result<Vec<_>, PkiError>>()?;
    Ok(InMemoryPki {
        ca,
        server,
        client: (client_name, client),
        users,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Identity, IdentityError};

    fn cert_der(pem: &str) -> Vec<u8> {
        first_cert_der(pem).unwrap()
    }

    #[test]
    fn identity_comes_from_cn_and_ou() {
        let ca = Ca::generate().unwrap();
        for role in Role::ALL {
            let c = ca.issue_client("alice", role).unwrap();
            let id = Identity::from_cert_der(&cert_der(&c.cert_pem)).unwrap();
            assert_eq!(
                id,
                Identity {
                    name: "alice".into(),
                    role
                }
            );
        }
    }

    #[test]
    fn identity_refuses_bad_certificates() {
        let ca = Ca::generate().unwrap();
        let server = ca.issue_server(&[]).unwrap();
        assert_eq!(
            Identity::from_cert_der(&cert_der(&server.cert_pem)),
            Err(IdentityError::NotClientCert)
        );
        let mut p = LeafParams::client("alice", Role::User);
        p.org_unit = None;
        let c = ca.issue(&p).unwrap();
        assert!(matches!(
            Identity::from_cert_der(&cert_der(&c.cert_pem)),
            Err(IdentityError::BadRole { .. })
        ));
        p.org_unit = Some("root".into());
        let c = ca.issue(&p).unwrap();
        assert!(matches!(
            Identity::from_cert_der(&cert_der(&c.cert_pem)),
            Err(IdentityError::BadRole { .. })
        ));
        let mut p = LeafParams::client("a b", Role::User);
        p.common_name = "a b".into();
        let c = ca.issue(&p).unwrap();
        assert!(matches!(
            Identity::from_cert_der(&cert_der(&c.cert_pem)),
            Err(IdentityError::BadName { .. })
        ));
        assert!(matches!(
            Identity::from_cert_der(b"garbage"),
            Err(IdentityError::Parse { .. })
        ));
        assert!(matches!(
            ca.issue_client("a b", Role::User),
            Err(PkiError::BadName { .. })
        ));
    }
}
