//! Fan-out: one `qexec run` on several servers at once (a group of config.toml,
//! `--hosts`, `--hosts-file`), output prefixed by host, a summary at the end.
//!
//! Rooms: this module (which hosts: [`hosts`], the flags, the refusals), `lines`
//! (whole prefixed lines per host), `summary` (the table, the JSON rows and the exit
//! rule) and `run` (the concurrent jobs, Ctrl-C).

mod lines;
mod list;
mod run;
mod summary;

pub(crate) use list::list;
pub(crate) use run::run;

use std::path::PathBuf;

use clap::Args;

use qexec_client::{ClientConfig, ConfigError, ConfigFile, Profile, default_config_dir};

use super::render::escape_str;
use super::{CliError, ConnArgs};

/// Hosts run at once when `--parallel` is not given (as pssh's default): each is one
/// QUIC connection (a UDP socket) and one job; more wait their turn.
pub(crate) const DEFAULT_PARALLEL: u32 = 32;

/// Flags of `qexec run` that only mean something with several hosts.
#[derive(Debug, Args)]
#[command(next_help_heading = "Several hosts (-s GROUP, --hosts, --hosts-file)")]
pub(crate) struct FanoutArgs {
    /// Run on at most N hosts at once; the others start as these end [default: 32].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) parallel: Option<u32>,
    /// Print the jobs' output raw, chunk by chunk as it arrives, without the `HOST | `
    /// prefix and without waiting for whole lines (lines of different hosts may mix).
    #[arg(long)]
    pub(crate) no_prefix: bool,
}

/// A fan-out could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FanoutError {
    /// The hosts file cannot be read.
    #[error("cannot read the hosts file {path}: {source}: fix --hosts-file")]
    HostsFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `--hosts` / `--hosts-file` named no host.
    #[error("no host given: {what} lists none (one host per line; `#` starts a comment)")]
    NoHosts {
        /// `--hosts` or the file.
        what: String,
    },
    /// One host was given twice.
    #[error("host {host} is given twice (--hosts, --hosts-file, or a group): give each once")]
    Duplicate {
        /// The host (its label).
        host: String,
    },
    /// A flag that names one server was combined with several hosts.
    #[error(
        "{flag} names one server and cannot be combined with several hosts (-s GROUP, --hosts, --hosts-file): list the host there instead"
    )]
    OneServerFlag {
        /// The flag.
        flag: &'static str,
    },
    /// A command that works on one server was given several.
    #[error("{what} works on one server, and {selection}: name one server with -s (or --addr)")]
    SingleServerCommand {
        /// `qexec status`, …
        what: &'static str,
        /// What selected several (`-s rack1 is a group of 4 servers (a, b, c, d)`).
        selection: String,
    },
    /// A flag of `run` that needs several hosts was given with one.
    #[error("{flag} works with several hosts only (-s GROUP, --hosts, --hosts-file)")]
    NeedsSeveral {
        /// The flag.
        flag: &'static str,
    },
    /// The connection to a host was lost while its job ran, and taking the job back
    /// failed.
    #[error("{lost} while job {job} ran, and reconnecting failed: {again}")]
    Lost {
        /// The job.
        job: qexec_protocol::JobId,
        /// How the connection was lost.
        lost: String,
        /// Why the last attempt to reconnect failed.
        again: String,
    },
    /// A flag of `run` that cannot work with several hosts.
    #[error("{flag} cannot be used with several hosts: {why}")]
    NotWithSeveral {
        /// The flag.
        flag: &'static str,
        /// Why not, and what to do.
        why: &'static str,
    },
}

/// The config dir's `config.toml`, if any.
fn config_file() -> Result<Option<ConfigFile>, CliError> {
    Ok(ConfigFile::load(&default_config_dir())?)
}

/// The group `-s` (or `QEXEC_SERVER`, or the file's `default`) names, if it names one.
fn selected_group(conn: &ConnArgs, file: Option<&ConfigFile>) -> Option<(String, Vec<String>)> {
    let file = file?;
    let name = conn.server.as_deref().or(file.default.as_deref())?;
    file.group(name).map(|m| (name.to_owned(), m.to_vec()))
}

/// True when the connection flags select several hosts: `--hosts`, `--hosts-file`, or
/// a group named by `-s` (`QEXEC_SERVER`, the file's `default`).
pub(crate) fn fans_out(conn: &ConnArgs) -> Result<bool, CliError> {
    if !conn.hosts.is_empty() || conn.hosts_file.is_some() {
        return Ok(true);
    }
    Ok(selected_group(conn, config_file()?.as_ref()).is_some())
}

/// The error for `what` (a command that works on one server) given several.
pub(crate) fn refuse(conn: &ConnArgs, what: &'static str) -> CliError {
    let selection = if !conn.hosts.is_empty() {
        "--hosts gives several".to_owned()
    } else if conn.hosts_file.is_some() {
        "--hosts-file gives several".to_owned()
    } else {
        match config_file()
            .ok()
            .flatten()
            .and_then(|f| selected_group(conn, Some(&f)))
        {
            Some((name, members)) => format!(
                "{} is a group of {} servers ({})",
                escape_str(&name),
                members.len(),
                escape_str(&members.join(", "))
            ),
            None => "several servers are selected".to_owned(),
        }
    };
    FanoutError::SingleServerCommand { what, selection }.into()
}

/// Refuses the fan-out flags of `run` on one server.
pub(crate) fn check_single(args: &FanoutArgs) -> Result<(), CliError> {
    if args.parallel.is_some() {
        return Err(FanoutError::NeedsSeveral { flag: "--parallel" }.into());
    }
    if args.no_prefix {
        return Err(FanoutError::NeedsSeveral {
            flag: "--no-prefix",
        }
        .into());
    }
    Ok(())
}

/// The hosts of a `--hosts-file`: one per line, `#` to the end of the line a comment,
/// blanks trimmed, empty lines skipped.
fn hosts_file_entries(text: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The hosts the connection flags select, each with its label and the settings to
/// reach it — the one place that turns `-s` / `--hosts` / `--hosts-file` into hosts,
/// for every command that drives several servers (`qexec run` here; `qexec farm`).
///
/// - `--hosts a,b` and the lines of `--hosts-file` (together, in that order): a
///   name of `[servers.*]` in config.toml is that server (label: the name); a name
///   of `[groups]` is its servers; anything else is `HOST[:PORT]` (label: as given)
///   with the default CA, certificate and key of the config dir. `-s` is ignored.
/// - Else `-s NAME` (or `QEXEC_SERVER`, or the file's `default`) naming a group: its
///   servers, in the file's order.
/// - Else the one server the flags select, as every other command connects (label:
///   its name in config.toml, else its address).
///
/// `--ca`, `--cert`, `--key` and `--connect-timeout` apply to every host;
/// `--addr` names one server and is refused with several. A host given twice is
/// refused. Labels have control characters escaped (they are printed).
pub(crate) fn hosts(conn: &ConnArgs) -> Result<Vec<(String, ClientConfig)>, CliError> {
    let dir = default_config_dir();
    let file = config_file()?;
    let group = selected_group(conn, file.as_ref());
    let several = !conn.hosts.is_empty() || conn.hosts_file.is_some() || group.is_some();
    if !several {
        let config = conn.config()?;
        let label = conn
            .server
            .clone()
            .or_else(|| file.as_ref().and_then(|f| f.default.clone()))
            .unwrap_or_else(|| config.addr.clone());
        return Ok(vec![(escape_str(&label), config)]);
    }
    if conn.addr.is_some() {
        return Err(FanoutError::OneServerFlag {
            flag: "--addr (or QEXEC_ADDR)",
        }
        .into());
    }
    let mut entries: Vec<String> = Vec::new();
    if !conn.hosts.is_empty() || conn.hosts_file.is_some() {
        let given: Vec<String> = conn
            .hosts
            .iter()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .collect();
        entries.extend(given);
        if let Some(path) = &conn.hosts_file {
            let text = std::fs::read_to_string(path).map_err(|source| FanoutError::HostsFile {
                path: path.clone(),
                source,
            })?;
            entries.extend(hosts_file_entries(&text));
        }
        if entries.is_empty() {
            let what = match &conn.hosts_file {
                Some(p) => format!("the hosts file {}", p.display()),
                None => "--hosts".to_owned(),
            };
            return Err(FanoutError::NoHosts { what }.into());
        }
    } else if let Some((_, members)) = group {
        entries = members;
    }
    let base = ClientConfig::from_pki_dir(&dir);
    let mut out: Vec<(String, ClientConfig)> = Vec::with_capacity(entries.len());
    let mut push = |label: &str, config: ClientConfig| {
        let label = escape_str(label);
        if out.iter().any(|(l, _)| *l == label) {
            return Err(CliError::from(FanoutError::Duplicate { host: label }));
        }
        out.push((label, config));
        Ok(())
    };
    for entry in entries {
        match file.as_ref() {
            Some(f) if f.servers.contains_key(&entry) => {
                push(&entry, profile_config(conn, f, &entry, &dir, &base)?)?;
            }
            Some(f) if f.group(&entry).is_some() => {
                for member in f.group(&entry).unwrap_or_default() {
                    push(member, profile_config(conn, f, member, &dir, &base)?)?;
                }
            }
            _ => {
                let profile = Profile {
                    addr: Some(entry.clone()),
                    ..Profile::default()
                };
                push(&entry, conn.merge(profile, base.clone()))?;
            }
        }
    }
    Ok(out)
}

/// The settings of server `name` of the file, the flags over them.
fn profile_config(
    conn: &ConnArgs,
    file: &ConfigFile,
    name: &str,
    dir: &std::path::Path,
    base: &ClientConfig,
) -> Result<ClientConfig, ConfigError> {
    let profile = file.profile(Some(name), dir)?.unwrap_or_default();
    Ok(conn.merge(profile, base.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files_skip_comments_and_blank_lines() {
        let text = "# rack 1\nbuild-01\n  build-02:7000  # the odd one\n\n   \n#x\nlab\n";
        assert_eq!(
            hosts_file_entries(text),
            ["build-01", "build-02:7000", "lab"]
        );
        assert!(hosts_file_entries("# nothing\n\n").is_empty());
    }
}
