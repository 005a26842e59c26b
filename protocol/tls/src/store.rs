//! The on-disk PKI directory: its layout, where it is by default, and the two
//! operations `qexec certs` exposes (`init`, `issue`).
//!
//! ```text
//! ca.pem, ca-key.pem            the CA (ECDSA P-256); trust anchor of both sides
//! server.pem, server-key.pem    server cert: EKU serverAuth, SANs localhost, 127.0.0.1, ::1 + extra
//! client.pem, client-key.pem    the default client identity: CN = local user name, role admin
//! users/<name>.pem, users/<name>-key.pem   alice (user), bob (user), admin (admin), auditor (viewer)
//! ```
//!
//! Private keys are written with mode 0600, directories with mode 0700.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::PkiError;
#[cfg(feature = "pki")]
use {
    crate::identity::{Role, valid_name},
    crate::issue::{Ca, InMemoryPki, InitOptions, generate_in_memory},
    crate::pem::CertKeyPem,
    std::io::Write,
    std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
};

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

/// The PKI directory: `$QEXEC_CONFIG_DIR` if set, else `$XDG_CONFIG_HOME/qexec`, else
/// `~/.config/qexec` (home from `$HOME`, else the password database).
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
    std::env::home_dir()
        .filter(|h| !h.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("/root"))
        .join(".config")
        .join("qexec")
}

/// The local user's name: `$USER`, else the `/etc/passwd` entry of this process's
/// uid (read without libc, so this crate needs no `unsafe` and no `nix`).
pub fn local_user_name() -> Result<String, PkiError> {
    use std::os::unix::fs::MetadataExt;
    if let Some(u) = std::env::var("USER").ok().filter(|u| !u.is_empty()) {
        return Ok(u);
    }
    let no_user = |reason: String| PkiError::NoLocalUser { reason };
    // /proc/self belongs to the process's effective uid.
    let uid = fs::metadata("/proc/self")
        .map_err(|e| no_user(format!("cannot stat /proc/self: {e}")))?
        .uid();
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(|e| no_user(format!("cannot read /etc/passwd: {e}")))?;
    passwd_name(&passwd, uid)
        .ok_or_else(|| no_user(format!("uid {uid} has no entry in /etc/passwd; set $USER")))
}

/// The name of `uid` in `passwd` text (`name:x:uid:gid:...` lines).
fn passwd_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

#[cfg(feature = "pki")]
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
    write_pki(dir, &pki)
}

#[cfg(feature = "pki")]
/// Writes a PKI held in memory to `dir` (see the module docs for the layout),
/// replacing whatever files of that layout are there.
pub fn write_pki(dir: &Path, pki: &InMemoryPki) -> Result<PkiPaths, PkiError> {
    let paths = PkiPaths::new(dir);
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

#[cfg(feature = "pki")]
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

#[cfg(feature = "pki")]
/// Reissues only the server certificate of the PKI in `dir` with the CA there: SANs
/// `localhost`, `127.0.0.1`, `::1` plus `extra_sans`, a fresh key, a fresh validity
/// period. Replaces `server.pem` and `server-key.pem`; the CA and every client
/// certificate stay valid (unlike `init --force`).
pub fn issue_server(dir: &Path, extra_sans: &[String]) -> Result<PkiPaths, PkiError> {
    let paths = PkiPaths::new(dir);
    let ca = Ca::load(dir)?;
    let pair = ca.issue_server(extra_sans)?;
    write_pair(&paths.server, &paths.server_key, &pair)?;
    Ok(paths)
}

#[cfg(feature = "pki")]
/// The validity period of the first certificate in the PEM file `path`:
/// (not before, not after).
pub fn cert_validity(
    path: &Path,
) -> Result<(std::time::SystemTime, std::time::SystemTime), PkiError> {
    let pem = read_pem_file(path)?;
    let bad = |reason: String| PkiError::BadPem {
        path: path.to_owned(),
        what: "certificate",
        reason,
    };
    let der = crate::issue::first_cert_der(&pem).map_err(bad)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| bad(e.to_string()))?;
    let at = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        let abs = std::time::Duration::from_secs(secs.unsigned_abs());
        if secs >= 0 {
            std::time::UNIX_EPOCH + abs
        } else {
            std::time::UNIX_EPOCH - abs
        }
    };
    let v = cert.validity();
    Ok((at(v.not_before), at(v.not_after)))
}

#[cfg(feature = "pki")]
/// The identity (name, role) in the first certificate of the PEM file `path`, e.g.
/// the client's own certificate.
pub fn identity_of_cert_file(path: &Path) -> Result<crate::Identity, PkiError> {
    let pem = read_pem_file(path)?;
    let bad = |reason: String| PkiError::BadPem {
        path: path.to_owned(),
        what: "client certificate",
        reason,
    };
    let der = crate::issue::first_cert_der(&pem).map_err(bad)?;
    crate::Identity::from_cert_der(&der).map_err(|e| bad(e.to_string()))
}

#[cfg(feature = "pki")]
pub(crate) fn read_pem_file(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

#[cfg(feature = "pki")]
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

#[cfg(feature = "pki")]
fn write_pair(cert: &Path, key: &Path, pair: &CertKeyPem) -> Result<(), PkiError> {
    write_file(key, &pair.key_pem, 0o600)?;
    write_file(cert, &pair.cert_pem, 0o644)
}

#[cfg(feature = "pki")]
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
    #[cfg(feature = "pki")]
    use crate::identity::Identity;
    #[cfg(feature = "pki")]
    use crate::issue::{DEFAULT_USERS, first_cert_der};

    #[cfg(feature = "pki")]
    fn cert_der(pem: &str) -> Vec<u8> {
        first_cert_der(pem).unwrap()
    }

    #[cfg(feature = "pki")]
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

    #[cfg(feature = "pki")]
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

    #[test]
    fn passwd_name_matches_the_uid_field() {
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\n\nbroken\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(passwd_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(passwd_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(passwd_name(passwd, 1001), None);
    }
}
