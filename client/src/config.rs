//! Connection settings and where they default from.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default server address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7443";

/// The default time to wait for the QUIC + TLS handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The PKI directory `qexec certs init` writes to: `$QEXEC_CONFIG_DIR`, else
/// `$XDG_CONFIG_HOME/qexec`, else `~/.config/qexec` (the layout agreed with qexecd).
pub fn default_config_dir() -> PathBuf {
    config_dir_from(
        std::env::var_os("QEXEC_CONFIG_DIR"),
        std::env::var_os("XDG_CONFIG_HOME"),
        std::env::var_os("HOME"),
    )
}

fn config_dir_from(
    qexec: Option<std::ffi::OsString>,
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    if let Some(d) = qexec.filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = xdg.filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("qexec");
    }
    let home = home
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".config").join("qexec")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_dir_precedence() {
        let s = |v: &str| Some(std::ffi::OsString::from(v));
        assert_eq!(
            config_dir_from(s("/q"), s("/x"), s("/h")),
            PathBuf::from("/q")
        );
        assert_eq!(
            config_dir_from(None, s("/x"), s("/h")),
            PathBuf::from("/x/qexec")
        );
        assert_eq!(
            config_dir_from(s(""), None, s("/h")),
            PathBuf::from("/h/.config/qexec")
        );
        assert_eq!(
            config_dir_from(None, None, None),
            PathBuf::from("/root/.config/qexec")
        );
    }
}
