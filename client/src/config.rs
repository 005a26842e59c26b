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
