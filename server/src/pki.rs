//! A small development PKI for qexec: one CA, one server certificate, client
//! certificates carrying a user name and a role (see `spec/security.md`).
//!
//! Layout of a PKI directory (agreed with the CLI, which exposes it as `qexec certs`):
//!
//! ```text
//! ca.pem, ca-key.pem            the CA (ECDSA P-256); trust anchor of both sides
//! server.pem, server-key.pem    server cert: EKU serverAuth, SANs localhost, 127.0.0.1, ::1 + extra
//! client.pem, client-key.pem    the default client identity: CN = local user name, role admin
//! users/<name>.pem, users/<name>-key.pem   alice (user), bob (user), admin (admin), auditor (viewer)
//! ```
//!
//! Private keys are written with mode 0600, directories with mode 0700. Client
//! certificates carry EKU clientAuth only; the identity is the subject CN and the role
//! the subject OU ([`Identity::from_cert_der`]).

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber,
};

/// Validity of the CA certificate.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Validity of server and client certificates.
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start to be valid this long before they are made (clock skew).
const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// Longest user name a client certificate may carry.
pub const MAX_NAME_LEN: usize = 64;
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

/// A client's role: what it may do (spec/security.md, authorization table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything on every job.
    Admin,
    /// Start jobs; operate on its own jobs only.
    User,
    /// Read-only: status, follow and list of every job.
    Viewer,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Admin, Role::User, Role::Viewer];

    /// The text form, as written in the certificate's subject OU.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::User => "user",
            Self::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not a role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {text:?}: expected one of admin, user, viewer")]
pub struct ParseRoleError {
    /// The rejected text (truncated to 64 characters).
    pub text: String,
}

impl FromStr for Role {
    type Err = ParseRoleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| ParseRoleError {
                text: s.chars().take(64).collect(),
            })
    }
}

/// Who a verified client is: its user name and role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// User name (subject CN).
    pub name: String,
    /// Role (subject OU).
    pub role: Role,
}

/// Why a client certificate does not carry a usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The bytes are not an X.509 certificate.
    #[error("client certificate cannot be parsed: {reason}")]
    Parse {
        /// The parser's explanation.
        reason: String,
    },
    /// The subject has no CN, several, or one that is not a valid user name.
    #[error(
        "client certificate subject CN {found:?} is not a user name \
         (exactly one CN of 1..=64 characters [A-Za-z0-9._@-]); reissue it with `qexec certs issue`"
    )]
    BadName {
        /// What was found (all CNs, joined with `,`).
        found: String,
    },
    /// The subject has no OU, several, or one that is not a role.
    #[error(
        "client certificate subject OU {found:?} is not a role \
         (exactly one of admin, user, viewer); reissue it with `qexec certs issue --role`"
    )]
    BadRole {
        /// What was found (all OUs, joined with `,`).
        found: String,
    },
    /// The certificate lacks the clientAuth extended key usage.
    #[error("certificate is not a client certificate (no extended key usage clientAuth)")]
    NotClientCert,
}

impl Identity {
    /// Reads the identity from a (verified) client end-entity certificate: the user
    /// name from the subject CN, the role from the subject OU; the certificate must
    /// carry EKU clientAuth.
    pub fn from_cert_der(der: &[u8]) -> Result<Self, IdentityError> {
        // spec: QX-ID-2
        let (_, cert) =
            x509_parser::parse_x509_certificate(der).map_err(|e| IdentityError::Parse {
                reason: e.to_string(),
            })?;
        let eku = cert
            .extended_key_usage()
            .map_err(|e| IdentityError::Parse {
                reason: e.to_string(),
            })?;
        if !eku.is_some_and(|e| e.value.client_auth) {
            return Err(IdentityError::NotClientCert);
        }
        let subject = cert.subject();
        let cns: Vec<&str> = subject
            .iter_common_name()
            .map(|a| a.as_str().unwrap_or("<not a string>"))
            .collect();
        let ous: Vec<&str> = subject
            .iter_organizational_unit()
            .map(|a| a.as_str().unwrap_or("<not a string>"))
            .collect();
        let name = match cns.as_slice() {
            [cn] if valid_name(cn) => (*cn).to_owned(),
            _ => {
                return Err(IdentityError::BadName {
                    found: truncate(&cns.join(",")),
                });
            }
        };
        let role = match ous.as_slice() {
            [ou] => ou.parse().map_err(|_| IdentityError::BadRole {
                found: truncate(ou),
            })?,
            _ => {
                return Err(IdentityError::BadRole {
                    found: truncate(&ous.join(",")),
                });
            }
        };
        Ok(Self { name, role })
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// True when `name` may be a user name: 1..=64 characters of `[A-Za-z0-9._@-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'))
}

/// Failure of a PKI operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    /// A file could not be read, written or created.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted (`read`, `write`, `create directory`…).
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `init` found an existing CA.
    #[error(
        "a CA already exists at {path}; refusing to overwrite it (use --force to replace \
         the whole PKI, which invalidates every certificate it issued)"
    )]
    CaExists {
        /// The existing CA file.
        path: PathBuf,
    },
    /// `issue_client` found an existing certificate for that user.
    #[error("a certificate for user {name:?} already exists at {path}; remove it first to reissue")]
    ClientExists {
        /// The user.
        name: String,
        /// The existing file.
        path: PathBuf,
    },
    /// A user name is not valid.
    #[error("invalid user name {name:?}: use 1..=64 characters of A-Z a-z 0-9 . _ @ -")]
    BadName {
        /// The rejected name.
        name: String,
    },
    /// A subject alternative name is neither an IP address nor a DNS name.
    #[error("invalid subject alternative name {name:?}: give a DNS name or an IP address")]
    BadSan {
        /// The rejected name.
        name: String,
    },
    /// The local user name could not be determined.
    #[error("cannot determine the local user name for the default client certificate: {reason}")]
    NoLocalUser {
        /// Why.
        reason: String,
    },
    /// A PEM file does not hold what was expected.
    #[error("{path} does not hold a valid {what}: {reason}")]
    BadPem {
        /// The file (or `<memory>`).
        path: PathBuf,
        /// What was expected (`certificate`, `private key`).
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// rcgen refused to build or sign a certificate.
    #[error("cannot generate {what}: {source}")]
    Generate {
        /// Which certificate or key.
        what: String,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// A certificate issued by a loaded CA would not chain to it (the CA's subject
    /// uses string types this tool does not reproduce).
    #[error(
        "the CA in {path} has a subject this tool cannot reproduce; create a new PKI with \
         `qexec certs init --force`"
    )]
    IssuerMismatch {
        /// The CA certificate file (or `<memory>`).
        path: PathBuf,
    },
}

/// A certificate and its private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CertKeyPem {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM.
    pub key_pem: String,
}

impl fmt::Debug for CertKeyPem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertKeyPem")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

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
        let cert = read_to_string(&paths.ca)?;
        let key = read_to_string(&paths.ca_key)?;
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

fn first_cert_der(pem: &str) -> Result<Vec<u8>, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| "no CERTIFICATE block found".to_owned())?
        .map(|c| c.to_vec())
        .map_err(|e| e.to_string())
}

/// Options of [`init`] and [`generate_in_memory`].
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Extra subject alternative names of the server certificate.
    pub sans: Vec<String>,
    /// Replace an existing PKI (the old CA and everything it issued become useless).
    pub force: bool,
    /// User name of the default client certificate; `None` means the local user name.
    pub client_name: Option<String>,
}

/// Where the files of a PKI directory are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PkiPaths {
    /// The directory.
    pub dir: PathBuf,
    /// CA certificate.
    pub ca: PathBuf,
    /// CA private key.
    pub ca_key: PathBuf,
    /// Server certificate.
    pub server: PathBuf,
    /// Server private key.
    pub server_key: PathBuf,
    /// Default client certificate.
    pub client: PathBuf,
    /// Default client private key.
    pub client_key: PathBuf,
    /// Directory of the per-user client certificates.
    pub users: PathBuf,
}

impl PkiPaths {
    /// The layout of `dir`.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            server: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
            users: dir.join("users"),
        }
    }

    /// Certificate and key files of user `name`.
    pub fn user(&self, name: &str) -> ClientPaths {
        ClientPaths {
            cert: self.users.join(format!("{name}.pem")),
            key: self.users.join(format!("{name}-key.pem")),
        }
    }
}

/// Files of one client identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientPaths {
    /// Certificate.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
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

/// The PKI directory: `$QEXEC_CONFIG_DIR` if set, else `$XDG_CONFIG_HOME/qexec`, else
/// `~/.config/qexec`.
pub fn default_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = env("QEXEC_CONFIG_DIR") {
        return d;
    }
    if let Some(d) = env("XDG_CONFIG_HOME") {
        return d.join("qexec");
    }
    let home = env("HOME").or_else(|| {
        nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten()
            .map(|u| u.dir)
    });
    home.unwrap_or_else(|| PathBuf::from("/root"))
        .join(".config")
        .join("qexec")
}

/// The local user's name (`$USER`, else the password database).
pub fn local_user_name() -> Result<String, PkiError> {
    if let Some(u) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return Ok(u);
    }
    match nix::unistd::User::from_uid(nix::unistd::getuid()) {
        Ok(Some(u)) => Ok(u.name),
        Ok(None) => Err(PkiError::NoLocalUser {
            reason: format!("uid {} has no passwd entry", nix::unistd::getuid()),
        }),
        Err(e) => Err(PkiError::NoLocalUser {
            reason: e.to_string(),
        }),
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

/// Writes a new PKI to `dir` (see the module docs for the layout). Refuses to
/// overwrite an existing CA unless `opts.force`.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<PkiPaths, PkiError> {
    let paths = PkiPaths::new(dir);
    if !opts.force {
        for p in [&paths.ca, &paths.ca_key] {
            if p.exists() {
                return Err(PkiError::CaExists { path: p.clone() });
            }
        }
    }
    let pki = generate_in_memory(opts)?;
    make_private_dir(dir)?;
    make_private_dir(&paths.users)?;
    write_file(&paths.ca, pki.ca.cert_pem(), 0o644)?;
    write_file(&paths.ca_key, &pki.ca.key_pem(), 0o600)?;
    write_pair(&paths.server, &paths.server_key, &pki.server)?;
    write_pair(&paths.client, &paths.client_key, &pki.client.1)?;
    for (name, _, pair) in &pki.users {
        let up = paths.user(name);
        write_pair(&up.cert, &up.key, pair)?;
    }
    Ok(paths)
}

/// Issues a client certificate for `name` with `role` using the CA in `dir`, written
/// to `users/<name>.pem` and `users/<name>-key.pem`. Refuses to overwrite.
pub fn issue_client(dir: &Path, name: &str, role: Role) -> Result<ClientPaths, PkiError> {
    if !valid_name(name) {
        return Err(PkiError::BadName {
            name: name.to_owned(),
        });
    }
    let paths = PkiPaths::new(dir);
    let out = paths.user(name);
    if out.cert.exists() {
        return Err(PkiError::ClientExists {
            name: name.to_owned(),
            path: out.cert,
        });
    }
    let ca = Ca::load(dir)?;
    let pair = ca.issue_client(name, role)?;
    make_private_dir(&paths.users)?;
    write_pair(&out.cert, &out.key, &pair)?;
    Ok(out)
}

fn read_to_string(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

fn make_private_dir(dir: &Path) -> Result<(), PkiError> {
    let io = |action, source| PkiError::Io {
        action,
        path: dir.to_owned(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io("create directory", e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| io("chmod", e))
}

fn write_pair(cert: &Path, key: &Path, pair: &CertKeyPem) -> Result<(), PkiError> {
    write_file(key, &pair.key_pem, 0o600)?;
    write_file(cert, &pair.cert_pem, 0o644)
}

/// Writes `contents` to `path` with `mode`, atomically (temporary file + rename), so
/// a private key is never readable by others, not even while being written.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    let tmp = path.with_extension("pem.tmp");
    let io = |action, p: &Path, source| PkiError::Io {
        action,
        path: p.to_owned(),
        source,
    };
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io("create", &tmp, e))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io("write", &tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| io("rename into place", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_der(pem: &str) -> Vec<u8> {
        first_cert_der(pem).unwrap()
    }

    #[test]
    fn role_text_round_trips() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert!("Admin".parse::<Role>().is_err());
        assert!("".parse::<Role>().is_err());
    }

    #[test]
    fn names_are_checked() {
        for ok in ["alice", "a", "b.o_b-1@x", &"x".repeat(64)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a b", "a/b", "é", "a\0", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
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

    #[test]
    fn init_writes_the_layout_with_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let opts = InitOptions {
            sans: vec!["qexec.example".into(), "10.0.0.1".into()],
            force: false,
            client_name: Some("me".into()),
        };
        let paths = init(&dir, &opts).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&paths.users), 0o700);
        for key in [&paths.ca_key, &paths.server_key, &paths.client_key] {
            assert_eq!(mode(key), 0o600, "{}", key.display());
        }
        for (name, role) in DEFAULT_USERS {
            let up = paths.user(name);
            assert_eq!(mode(&up.key), 0o600);
            let id =
                Identity::from_cert_der(&cert_der(&fs::read_to_string(&up.cert).unwrap())).unwrap();
            assert_eq!(id.name, name);
            assert_eq!(id.role, role);
        }
        let client =
            Identity::from_cert_der(&cert_der(&fs::read_to_string(&paths.client).unwrap()))
                .unwrap();
        assert_eq!(client.name, "me");
        assert_eq!(client.role, Role::Admin);

        let server = fs::read_to_string(&paths.server).unwrap();
        let der = cert_der(&server);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|g| g.to_string())
            .collect();
        for want in ["localhost", "qexec.example"] {
            assert!(names.iter().any(|n| n.contains(want)), "{names:?}");
        }
        assert_eq!(names.len(), 5, "{names:?}");
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );

        // A second init refuses; force replaces the CA.
        let old_ca = fs::read_to_string(&paths.ca).unwrap();
        assert!(matches!(init(&dir, &opts), Err(PkiError::CaExists { .. })));
        let forced = InitOptions {
            force: true,
            ..opts.clone()
        };
        init(&dir, &forced).unwrap();
        assert_ne!(fs::read_to_string(&paths.ca).unwrap(), old_ca);
    }

    #[test]
    fn issue_client_uses_the_directory_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            client_name: Some("me".into()),
            ..Default::default()
        };
        let paths = init(tmp.path(), &opts).unwrap();
        let out = issue_client(tmp.path(), "carol", Role::Viewer).unwrap();
        let der = cert_der(&fs::read_to_string(&out.cert).unwrap());
        let id = Identity::from_cert_der(&der).unwrap();
        assert_eq!(id.role, Role::Viewer);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ca_der = cert_der(&fs::read_to_string(&paths.ca).unwrap());
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
        assert!(matches!(
            issue_client(tmp.path(), "carol", Role::User),
            Err(PkiError::ClientExists { .. })
        ));
        assert!(matches!(
            issue_client(tmp.path(), "no/slash", Role::User),
            Err(PkiError::BadName { .. })
        ));
    }
}
