//! `qexec info`: how busy a server is — its version, running jobs and limits, your own
//! running jobs, its CPUs (spec: QX-INFO-1 to QX-INFO-6).

use clap::Args;
use serde::{Deserialize, Serialize};

use qexec_protocol::ServerInfo;

use super::render::{escape_str, json_pretty};
use super::{CliError, ConnArgs};

pub(super) const HELP: &str = "\
Human output: one `key value` line each (server, version, jobs, yours, free, cpus).
`jobs` counts every user's running jobs against the server's --max-jobs; `yours`
counts this certificate's user against --max-jobs-per-user; `free` is how many more
jobs you could start now (the smaller room of the two). A snapshot: other users start
and end jobs meanwhile. Any role may ask, viewer included.
With --json: one object (server_version, running_jobs, max_jobs, caller_running_jobs,
max_jobs_per_user, free_slots, cpus, and addr).

A qexecd older than this request answers Unsupported: qexec info then fails (exit 255)
saying the server does not support it.

Examples:
  qexec info
  qexec -s build info
  qexec info --json | jq .free_slots";

/// Arguments of `qexec info`.
#[derive(Debug, Args)]
pub(super) struct InfoArgs {}

/// `qexec info --json`: the server's answer, the room it leaves and where it was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoJson {
    /// The address asked (as given: `--addr`, the profile or the default).
    pub addr: String,
    /// The server software's version.
    pub server_version: String,
    /// Running jobs of all users.
    pub running_jobs: u32,
    /// The server's limit on running jobs (all users).
    pub max_jobs: u32,
    /// Running jobs of this certificate's user.
    pub caller_running_jobs: u32,
    /// The server's limit on one user's running jobs.
    pub max_jobs_per_user: u32,
    /// Jobs the caller could start now ([`ServerInfo::free_slots`]).
    pub free_slots: u32,
    /// CPUs the server's jobs can use.
    pub cpus: u32,
}

impl InfoJson {
    /// The JSON form of `info`, asked at `addr`.
    pub fn new(addr: &str, info: &ServerInfo) -> Self {
        Self {
            addr: addr.to_owned(),
            server_version: info.server_version.clone(),
            running_jobs: info.running_jobs,
            max_jobs: info.max_jobs,
            caller_running_jobs: info.caller_running_jobs,
            max_jobs_per_user: info.max_jobs_per_user,
            free_slots: info.free_slots(),
            cpus: info.cpus,
        }
    }
}

/// The human form: aligned `key value` lines. The version is server text: escaped
/// (spec: QX-SEC-6).
pub fn info_human(addr: &str, info: &ServerInfo) -> String {
    let rows = [
        ("server", escape_str(addr)),
        ("version", escape_str(&info.server_version)),
        (
            "jobs",
            format!(
                "{} running of {} (all users)",
                info.running_jobs, info.max_jobs
            ),
        ),
        (
            "yours",
            format!(
                "{} running of {} per user",
                info.caller_running_jobs, info.max_jobs_per_user
            ),
        ),
        ("free", info.free_slots().to_string()),
        ("cpus", info.cpus.to_string()),
    ];
    let mut out = String::new();
    for (key, value) in rows {
        out.push_str(&format!("{key:<8}{value}\n"));
    }
    out
}

pub(super) async fn info(conn: &ConnArgs, json: bool, _args: InfoArgs) -> Result<u8, CliError> {
    let addr = conn.config()?.addr;
    let client = conn.connect().await?;
    let answer = client.info().await;
    super::finish(&client).await;
    let info = answer?;
    let text = if json {
        json_pretty(&InfoJson::new(&addr, &info))
    } else {
        info_human(&addr, &info)
    };
    super::print_out(&text)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ServerInfo {
        ServerInfo {
            server_version: "0.1.0".into(),
            running_jobs: 3,
            max_jobs: 1024,
            caller_running_jobs: 1,
            max_jobs_per_user: 256,
            cpus: 8,
        }
    }

    #[test]
    fn human_lines_are_aligned_and_exact() {
        assert_eq!(
            info_human("10.0.0.5:7443", &sample()),
            "server  10.0.0.5:7443\n\
             version 0.1.0\n\
             jobs    3 running of 1024 (all users)\n\
             yours   1 running of 256 per user\n\
             free    255\n\
             cpus    8\n"
        );
    }

    #[test]
    fn server_text_is_escaped() {
        // spec: QX-SEC-6 — a hostile version string cannot drive the terminal.
        let mut info = sample();
        info.server_version = "1.0\x1b[2J\nfake line".into();
        let text = info_human("h", &info);
        assert_eq!(text.lines().count(), 6, "{text}");
        assert!(!text.contains('\x1b'), "{text:?}");
    }

    #[test]
    fn json_has_every_field_and_the_free_slots() {
        let json: serde_json::Value =
            serde_json::from_str(&json_pretty(&InfoJson::new("h:1", &sample()))).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "addr": "h:1",
                "server_version": "0.1.0",
                "running_jobs": 3,
                "max_jobs": 1024,
                "caller_running_jobs": 1,
                "max_jobs_per_user": 256,
                "free_slots": 255,
                "cpus": 8,
            })
        );
    }
}
