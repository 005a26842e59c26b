//! Connection settings and where they default from.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The default server address.
pub const DEFAULT_ADDR: &str = "127.0.0.1:7443";

/// The port of an address given without one (`--addr build-01`).
pub const DEFAULT_PORT: u16 = 7443;

/// The default time to wait for the QUIC + TLS handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a server may stay silent before its connection counts as lost.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// How long a server may stay silent (keep-alives are sent every 5 s, or every
    /// third of this if shorter) before the connection counts as lost. Default 30 s;
    /// the worker pool uses a shorter one to find dead workers sooner.
    pub idle_timeout: Duration,
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
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
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

/// `$QEXEC_CONFIG_DIR/config.toml`: named servers, groups of them, and which server is
/// the default.
///
/// ```toml
/// default = "build"
///
/// [servers.build]
/// addr = "build-01.example.org"        # port 7443 unless given
/// ca = "build/ca.pem"                  # relative to the config dir
/// cert = "build/client.pem"
/// key = "build/client-key.pem"
///
/// [groups]
/// rack1 = ["build", "lab"]             # names of [servers.*]; no nesting
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The server used when none is named (`-s` / `QEXEC_SERVER`).
    pub default: Option<String>,
    /// The named servers.
    #[serde(default)]
    pub servers: std::collections::BTreeMap<String, Profile>,
    /// Named groups of servers (`-s GROUP` fans a command out over them): each a list
    /// of names of [`servers`](Self::servers), at least one, no group inside a group.
    #[serde(default)]
    pub groups: std::collections::BTreeMap<String, Vec<String>>,
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
    /// A group of `[groups]` is not usable.
    #[error("group {name:?} in {path} {problem}")]
    BadGroup {
        /// The group.
        name: String,
        /// The file.
        path: PathBuf,
        /// What is wrong with it, and what to do.
        problem: GroupProblem,
    },
    /// A group was named where one server is needed.
    #[error("{name:?} is a group of servers in {path} ({}): {what} works on one server; name one of them with -s",
        members.join(", "))]
    GroupNotAllowed {
        /// The group.
        name: String,
        /// The file.
        path: PathBuf,
        /// Its servers.
        members: Vec<String>,
        /// What needed one server (`the default`, `qexec status`).
        what: String,
    },
}

/// What is wrong with a group of `config.toml`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupProblem {
    /// It has the name of a server too.
    #[error("has the name of a server too: rename the group or the [servers.*] table")]
    ShadowsServer,
    /// It lists no server.
    #[error("is empty: list at least one server in it, or remove it")]
    Empty,
    /// It names a group (groups do not nest).
    #[error("names the group {member:?}: groups do not nest; list that group's servers instead")]
    Nested {
        /// The group it names.
        member: String,
    },
    /// It names something that is not a server of the file.
    #[error(
        "names {member:?}, which is not a [servers.*] table of the file: add [servers.{member}] or fix the name"
    )]
    UnknownMember {
        /// The unknown name.
        member: String,
    },
    /// It names one server twice.
    #[error("names {member:?} twice: list each server once")]
    Duplicate {
        /// The repeated name.
        member: String,
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
    /// Groups are checked: each names servers of the file, at least one, no group and
    /// no server twice, and no group has a server's name.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: e.to_string().trim().replace('\n', " "),
        })?;
        file.check_groups(path)?;
        Ok(file)
    }

    fn check_groups(&self, path: &Path) -> Result<(), ConfigError> {
        for (name, members) in &self.groups {
            let bad = |problem| ConfigError::BadGroup {
                name: name.clone(),
                path: path.to_owned(),
                problem,
            };
            if self.servers.contains_key(name) {
                return Err(bad(GroupProblem::ShadowsServer));
            }
            if members.is_empty() {
                return Err(bad(GroupProblem::Empty));
            }
            let mut seen = std::collections::BTreeSet::new();
            for member in members {
                if self.groups.contains_key(member) {
                    return Err(bad(GroupProblem::Nested {
                        member: member.clone(),
                    }));
                }
                if !self.servers.contains_key(member) {
                    return Err(bad(GroupProblem::UnknownMember {
                        member: member.clone(),
                    }));
                }
                if !seen.insert(member) {
                    return Err(bad(GroupProblem::Duplicate {
                        member: member.clone(),
                    }));
                }
            }
        }
        Ok(())
    }

    /// The servers of group `name`, in the file's order; `None` when there is no
    /// such group.
    pub fn group(&self, name: &str) -> Option<&[String]> {
        self.groups.get(name).map(Vec::as_slice)
    }

    /// The server `name` (else the file's `default`, else none), its paths resolved
    /// against `dir`.
    pub fn profile(&self, name: Option<&str>, dir: &Path) -> Result<Option<Profile>, ConfigError> {
        let Some(name) = name.or(self.default.as_deref()) else {
            return Ok(None);
        };
        if let Some(members) = self.group(name) {
            return Err(ConfigError::GroupNotAllowed {
                name: name.to_owned(),
                path: dir.join(CONFIG_FILE),
                members: members.to_vec(),
                what: "this command".to_owned(),
            });
        }
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

    #[test]
    fn groups_name_servers_of_the_file() {
        let path = Path::new("/etc/qexec/config.toml");
        let servers = "[servers.a]\naddr = \"a\"\n[servers.b]\naddr = \"b\"\n";
        let file = ConfigFile::parse(&format!("{servers}[groups]\nrack = [\"b\", \"a\"]\n"), path)
            .unwrap();
        assert_eq!(
            file.group("rack"),
            Some(&["b".to_owned(), "a".to_owned()][..])
        );
        assert_eq!(file.group("a"), None);
        // A group where one server is needed says so.
        let e = file
            .profile(Some("rack"), Path::new("/etc/qexec"))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "\"rack\" is a group of servers in /etc/qexec/config.toml (b, a): this command \
             works on one server; name one of them with -s"
        );
        let bad = |groups: &str| {
            ConfigFile::parse(&format!("{servers}[groups]\n{groups}\n"), path)
                .unwrap_err()
                .to_string()
        };
        let prefix = |name: &str| format!("group {name:?} in /etc/qexec/config.toml ");
        assert_eq!(
            bad("a = [\"b\"]"),
            prefix("a") + "has the name of a server too: rename the group or the [servers.*] table"
        );
        assert_eq!(
            bad("r = []"),
            prefix("r") + "is empty: list at least one server in it, or remove it"
        );
        assert_eq!(
            bad("r = [\"a\", \"s\"]\ns = [\"b\"]"),
            prefix("r")
                + "names the group \"s\": groups do not nest; list that group's servers instead"
        );
        assert_eq!(
            bad("r = [\"a\", \"c\"]"),
            prefix("r")
                + "names \"c\", which is not a [servers.*] table of the file: add [servers.c] or fix the name"
        );
        assert_eq!(
            bad("r = [\"a\", \"a\"]"),
            prefix("r") + "names \"a\" twice: list each server once"
        );
    }
}
