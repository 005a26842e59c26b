//! Connection settings and where they default from.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default server address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7443";

/// The port of an address given without one (`--addr build-01`).
pub const DEFAULT_PORT: u16 = 7443;

/// The default time to wait for the QUIC + TLS handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The PKI directory `qexec certs init` writes to: `$QEXEC_CONFIG_DIR`, else
/// `$XDG_CONFIG_HOME/qexec`, else `~/.config/qexec` (the layout agreed with qexecd;
/// one definition, [`qexec_tls::default_dir`]).
pub fn default_config_dir() -> PathBuf {
    qexec_tls::default_dir()
}

/// Everything needed to connect to qexecd.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `HOST:PORT` of qexecd.
    pub addr: String,
    /// The CA certificate the server's certificate must be signed by.
    pub ca: PathBuf,
    /// Our certificate (PEM, the end-entity first).
    pub cert: PathBuf,
    /// Our private key (PEM).
    pub key: PathBuf,
    /// How long to wait for the handshake.
    pub connect_timeout: Duration,
    /// How long to wait for the answer to a request that the server answers at once
    /// (start, status, list, attach).
    pub request_timeout: Duration,
}

impl ClientConfig {
    /// Settings using the default identity of a PKI directory (`ca.pem`, `client.pem`,
    /// `client-key.pem`) and the default address.
    pub fn from_pki_dir(dir: &Path) -> Self {
        Self {
            addr: DEFAULT_ADDR.to_owned(),
            ca: dir.join("ca.pem"),
            cert: dir.join("client.pem"),
            key: dir.join("client-key.pem"),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Duration::from_secs(30),
        }
    }

    /// Settings for one of the `users/<name>.pem` identities of a PKI directory.
    pub fn for_user(dir: &Path, name: &str) -> Self {
        let users = dir.join("users");
        Self {
            cert: users.join(format!("{name}.pem")),
            key: users.join(format!("{name}-key.pem")),
            ..Self::from_pki_dir(dir)
        }
    }

    /// Replaces the address.
    pub fn with_addr(mut self, addr: impl Into<String>) -> Self {
        self.addr = addr.into();
        self
    }
}

/// Name of the file of named servers in the config dir.
pub const CONFIG_FILE: &str = "config.toml";

/// One named server of `config.toml`: any field left out falls back to the flag,
/// environment variable or default. Relative paths are relative to the config dir;
/// `~/` is the home directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// `HOST[:PORT]` of qexecd.
    pub addr: Option<String>,
    /// The CA certificate.
    pub ca: Option<PathBuf>,
    /// Our certificate.
    pub cert: Option<PathBuf>,
    /// Our private key.
    pub key: Option<PathBuf>,
}

/// `$QEXEC_CONFIG_DIR/config.toml`: named servers and which one is the default.
///
/// ```toml
/// default = "build"
///
/// [servers.build]
/// addr = "build-01.example.org"        # port 7443 unless given
/// ca = "build/ca.pem"                  # relative to the config dir
/// cert = "build/client.pem"
/// key = "build/client-key.pem"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The server used when none is named (`-s` / `QEXEC_SERVER`).
    pub default: Option<String>,
    /// The named servers.
    #[serde(default)]
    pub servers: std::collections::BTreeMap<String, Profile>,
}

/// `config.toml` could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error("{path} is not a valid qexec config: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong (with its line).
        reason: String,
    },
    /// The server name is not in the file.
    #[error("no server named {name:?} in {path}{}: add a [servers.{name}] table, or fix the name (-s / QEXEC_SERVER)",
        if known.is_empty() { String::new() } else { format!(" (it has {})", known.join(", ")) })]
    UnknownServer {
        /// The name asked for.
        name: String,
        /// The file.
        path: PathBuf,
        /// The names it has.
        known: Vec<String>,
    },
}

impl ConfigFile {
    /// Reads `config.toml` of `dir`; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<Self>, ConfigError> {
        let path = dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Self::parse(&text, &path).map(Some)
    }

    /// Parses the text of a config file (`path` is for messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: e.to_string().trim().replace('\n', " "),
        })
    }

    /// The server `name` (else the file's `default`, else none), its paths resolved
    /// against `dir`.
    pub fn profile(&self, name: Option<&str>, dir: &Path) -> Result<Option<Profile>, ConfigError> {
        let Some(name) = name.or(self.default.as_deref()) else {
            return Ok(None);
        };
        let p = self
            .servers
            .get(name)
            .ok_or_else(|| ConfigError::UnknownServer {
                name: name.to_owned(),
                path: dir.join(CONFIG_FILE),
                known: self.servers.keys().cloned().collect(),
            })?;
        let resolve = |p: &Option<PathBuf>| p.as_ref().map(|p| resolve_path(p, dir));
        Ok(Some(Profile {
            addr: p.addr.clone(),
            ca: resolve(&p.ca),
            cert: resolve(&p.cert),
            key: resolve(&p.key),
        }))
    }
}

/// `~/x` → `$HOME/x`; a relative path → under `dir`.
fn resolve_path(p: &Path, dir: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~")
        && let Some(home) = std::env::var_os("HOME")
    {
        return PathBuf::from(home).join(rest);
    }
    if p.is_absolute() {
        p.to_owned()
    } else {
        dir.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_resolve_paths_and_defaults() {
        let dir = Path::new("/etc/qexec");
        let file = ConfigFile::parse(
            r#"
default = "build"
[servers.build]
addr = "build-01"
ca = "build/ca.pem"
cert = "/abs/client.pem"
[servers.lab]
addr = "10.0.0.5:7000"
"#,
            &dir.join(CONFIG_FILE),
        )
        .unwrap();
        let build = file.profile(None, dir).unwrap().unwrap();
        assert_eq!(build.addr.as_deref(), Some("build-01"));
        assert_eq!(build.ca, Some(PathBuf::from("/etc/qexec/build/ca.pem")));
        assert_eq!(build.cert, Some(PathBuf::from("/abs/client.pem")));
        assert_eq!(build.key, None);
        let lab = file.profile(Some("lab"), dir).unwrap().unwrap();
        assert_eq!(lab.addr.as_deref(), Some("10.0.0.5:7000"));
        let e = file.profile(Some("nope"), dir).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no server named \"nope\" in /etc/qexec/config.toml (it has build, lab): add a \
             [servers.nope] table, or fix the name (-s / QEXEC_SERVER)"
        );
        assert_eq!(ConfigFile::default().profile(None, dir).unwrap(), None);
        let bad = ConfigFile::parse("[servers.x]\nport = 1\n", Path::new("c.toml")).unwrap_err();
        assert!(
            bad.to_string()
                .starts_with("c.toml is not a valid qexec config: "),
            "{bad}"
        );
    }
}
