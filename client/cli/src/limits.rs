//! The job flags (`--cpu`, `--memory`, `--io-*`, `--pids`, `--timeout`, `--env`,
//! `--cwd` …) in human units, the start request they make, and how a refusal of one
//! of them is explained with the flag the user typed.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use qexec_client::ClientError;
use qexec_client::units::{UnitError, parse_cpu, parse_duration, parse_size};
use qexec_protocol::limits::MIN_MEMORY_BYTES;
use qexec_protocol::{ErrorCode, Field, InvalidRequest, Limits, Rule, StartRequest};

use crate::CliError;

/// Resource limits and timeout of a job, in human units.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Job")]
pub(crate) struct LimitArgs {
    /// CPU bandwidth in CPUs: 0.5 = half a CPU, 2 = two CPUs (also 250m).
    #[arg(long, value_name = "CPUS")]
    cpu: Option<Human<u32>>,
    /// Memory limit: 256M, 1.5G, 4096 (K/M/G/T are powers of 1024; KiB… accepted).
    #[arg(long, value_name = "SIZE")]
    memory: Option<Human<u64>>,
    /// Disk read bandwidth per second, e.g. 10M.
    #[arg(long, value_name = "SIZE")]
    io_read: Option<Human<u64>>,
    /// Disk write bandwidth per second, e.g. 10M.
    #[arg(long, value_name = "SIZE")]
    io_write: Option<Human<u64>>,
    /// Disk read operations per second.
    #[arg(long, value_name = "N")]
    io_read_iops: Option<u64>,
    /// Disk write operations per second.
    #[arg(long, value_name = "N")]
    io_write_iops: Option<u64>,
    /// Maximum number of processes and threads.
    #[arg(long, value_name = "N")]
    pids: Option<u32>,
    /// Stop the job after this long: 500ms, 30s, 2m, 1h.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Set an environment variable of the job (repeatable); NAME alone passes the local
    /// value of NAME. The job gets only these (and --env-file's), plus a default PATH
    /// from the server.
    #[arg(short = 'e', long = "env", value_name = "NAME[=VALUE]")]
    env: Vec<String>,
    /// Read environment variables from a file: one NAME=VALUE (or NAME, for the local
    /// value) per line; blank lines and lines starting with # are skipped. -e wins
    /// over the file for the same name.
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
    /// Working directory of the job (default: /).
    #[arg(short = 'C', long, value_name = "DIR")]
    cwd: Option<PathBuf>,
}

/// A limit flag the user gave, for explaining a refusal.
struct GivenLimit {
    /// The flag.
    flag: &'static str,
    /// What the user typed.
    text: String,
    /// Words a server message about this limit contains.
    words: &'static [&'static str],
    /// Shows a number in this limit's unit.
    show: fn(u64) -> String,
}

/// A number parsed from human units, with the text the user typed (for messages).
#[derive(Debug, Clone)]
struct Human<T> {
    value: T,
    text: String,
}

impl std::str::FromStr for Human<u64> {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self {
            value: parse_size(s)?,
            text: s.to_owned(),
        })
    }
}

impl std::str::FromStr for Human<u32> {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self {
            value: parse_cpu(s)?,
            text: s.to_owned(),
        })
    }
}

/// One `NAME=VALUE` (or `NAME`: its local value) of `-e` or `--env-file`; `what`
/// names it in messages.
fn env_entry(text: &[u8], what: &str) -> Result<(Vec<u8>, Vec<u8>), CliError> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let usage = |reason: String| CliError::Usage { reason };
    let (name, value) = match text.iter().position(|b| *b == b'=') {
        Some(at) => (text[..at].to_vec(), text[at + 1..].to_vec()),
        None => {
            let name = std::ffi::OsStr::from_bytes(text);
            let value = std::env::var_os(name).ok_or_else(|| {
                usage(format!(
                    "{what}: {} is not set here (give NAME=VALUE to set it)",
                    name.to_string_lossy()
                ))
            })?;
            (text.to_vec(), value.into_vec())
        }
    };
    if name.is_empty() {
        return Err(usage(format!("{what} has an empty name")));
    }
    Ok((name, value))
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            cpu_millis: self.cpu.as_ref().map(|h| h.value),
            memory_bytes: self.memory.as_ref().map(|h| h.value),
            io_read_bps: self.io_read.as_ref().map(|h| h.value),
            io_write_bps: self.io_write.as_ref().map(|h| h.value),
            io_read_iops: self.io_read_iops,
            io_write_iops: self.io_write_iops,
            pids: self.pids,
        }
    }

    /// The limit flags given.
    fn given(&self) -> Vec<GivenLimit> {
        fn size(v: u64) -> String {
            qexec_client::units::format_size(v)
        }
        fn rate(v: u64) -> String {
            format!("{}/s", qexec_client::units::format_size(v))
        }
        fn cpu(v: u64) -> String {
            u32::try_from(v).map_or_else(|_| v.to_string(), qexec_client::units::format_cpu)
        }
        fn plain(v: u64) -> String {
            v.to_string()
        }
        let human = |h: &Option<Human<u64>>| h.as_ref().map(|h| h.text.clone());
        let number = |n: Option<u64>| n.map(|n| n.to_string());
        let limit = |flag, text: Option<String>, words, show| {
            text.map(|text| GivenLimit {
                flag,
                text,
                words,
                show,
            })
        };
        [
            limit(
                "--cpu",
                self.cpu.as_ref().map(|h| h.text.clone()),
                &["cpu"][..],
                cpu as fn(u64) -> String,
            ),
            limit("--memory", human(&self.memory), &["memory"], size),
            limit(
                "--io-read",
                human(&self.io_read),
                &["io_read_bps", "read_bps"],
                rate,
            ),
            limit(
                "--io-write",
                human(&self.io_write),
                &["io_write_bps", "write_bps"],
                rate,
            ),
            limit(
                "--io-read-iops",
                number(self.io_read_iops),
                &["io_read_iops", "read_iops"],
                plain,
            ),
            limit(
                "--io-write-iops",
                number(self.io_write_iops),
                &["io_write_iops", "write_iops"],
                plain,
            ),
            limit("--pids", self.pids.map(|n| n.to_string()), &["pids"], plain),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Builds the start request for `command`.
    pub(crate) fn request(
        &self,
        command: &[std::ffi::OsString],
        stdin: bool,
    ) -> Result<StartRequest, CliError> {
        use std::os::unix::ffi::{OsStrExt, OsStringExt};
        let mut env: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut set = |(name, value): (Vec<u8>, Vec<u8>)| {
            // One entry per name, the last given wins (a program's getenv would
            // otherwise see the first).
            env.retain(|(n, _)| *n != name);
            env.push((name, value));
        };
        if let Some(file) = &self.env_file {
            let text = std::fs::read(file).map_err(|e| CliError::Usage {
                reason: format!("--env-file {}: {e}", file.display()),
            })?;
            for (i, line) in text.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let trimmed = line.trim_ascii_start();
                if trimmed.is_empty() || trimmed.starts_with(b"#") {
                    continue;
                }
                let what = format!("--env-file {} line {}", file.display(), i + 1);
                set(env_entry(line, &what)?);
            }
        }
        for e in &self.env {
            set(env_entry(e.as_bytes(), &format!("--env {e:?}"))?);
        }
        let timeout_ms = self
            .timeout
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let req = StartRequest {
            argv: command.iter().map(|a| a.clone().into_vec()).collect(),
            env,
            cwd: self.cwd.as_ref().map(|c| c.as_os_str().as_bytes().to_vec()),
            limits: self.limits(),
            timeout_ms,
            stdin,
            follow: false,
            stop_on_detach: false,
        };
        // The protocol's own rules (spec: QX-LIMIT-2..7, QX-LIMIT-13, QX-LIMIT-17),
        // checked before connecting so a typo costs no round trip.
        qexec_protocol::validate_start(&req).map_err(|e| CliError::Usage {
            reason: self.explain_invalid(&e),
        })?;
        Ok(req)
    }

    /// A request the protocol refuses, said with the flag the user typed (no wire
    /// field names, no spec ids: those are for implementers).
    fn explain_invalid(&self, e: &InvalidRequest) -> String {
        let typed = |name: &str| -> Option<(&'static str, String)> {
            self.given()
                .into_iter()
                .find(|g| g.words.first().is_some_and(|w| name.starts_with(w)))
                .map(|g| (g.flag, g.text))
        };
        match (e.field, e.rule) {
            (Field::Limit { name }, Rule::OutOfRange { min, .. }) => {
                let (flag, text) = typed(name).unwrap_or(("a limit", String::new()));
                if e.requirement == "QX-LIMIT-17" {
                    let min = u64::try_from(min).unwrap_or(MIN_MEMORY_BYTES);
                    format!(
                        "{flag} {text} is below the minimum of {}: no program can start with \
                         less memory",
                        qexec_client::units::format_size(min)
                    )
                } else {
                    format!("{flag} {text} must be at least {min}")
                }
            }
            (Field::Cwd, Rule::NotAbsolute) => {
                let cwd = self
                    .cwd
                    .as_ref()
                    .map_or_else(String::new, |c| c.display().to_string());
                format!("-C {cwd} is not an absolute path: give a path starting with /")
            }
            (Field::Cwd, _) => "-C contains a NUL byte".to_owned(),
            (Field::TimeoutMs, _) => format!(
                "--timeout is above the maximum of {}",
                qexec_client::units::format_duration(Duration::from_millis(
                    qexec_protocol::limits::MAX_TIMEOUT_MS
                ))
            ),
            (Field::EnvName { index } | Field::EnvValue { index }, rule) => {
                let e = self.env.get(index).map_or("", String::as_str);
                format!("-e {e:?} {rule}")
            }
            (Field::Argv, Rule::Count { max, .. }) => {
                format!("the command has more than {max} arguments")
            }
            (Field::ArgvEntry { index }, Rule::ContainsNul) => {
                format!("argument {index} of the command contains a NUL byte")
            }
            (Field::ArgvEntry { .. }, _) => "the program name is empty".to_owned(),
            (Field::Env, Rule::Count { max, .. }) => format!("more than {max} -e variables"),
            (Field::Command, Rule::TooManyBytes { actual, max }) => format!(
                "the command, its -e variables and -C together are {actual} bytes, at most \
                 {max} are allowed"
            ),
            (field, rule) => format!("{field} {rule}"),
        }
    }

    /// Turns an `InvalidArgument` answer about one of our limits into a message that
    /// names the flag the user typed (the server's text is kept).
    pub(crate) fn explain(&self, e: ClientError) -> CliError {
        let ClientError::Server {
            code: ErrorCode::InvalidArgument,
            message,
        } = &e
        else {
            return e.into();
        };
        let lower = message.to_ascii_lowercase();
        let given = self.given();
        let mentioned: Vec<_> = given
            .iter()
            .filter(|g| g.words.iter().any(|w| lower.contains(w)))
            .collect();
        let about_max =
            lower.contains("max") || lower.contains("above") || lower.contains("exceed");
        let pick = match (mentioned.as_slice(), given.len()) {
            ([one], _) => Some(*one),
            ([], 1) => given.first(),
            _ => None,
        };
        match pick {
            Some(GivenLimit {
                flag, text, show, ..
            }) if about_max => {
                // The manager says "... maximum N ..."; show N in the flag's units.
                let max = lower
                    .split("maximum")
                    .nth(1)
                    .and_then(|rest| {
                        let digits: String = rest
                            .trim_start()
                            .chars()
                            .take_while(char::is_ascii_digit)
                            .collect();
                        digits.parse::<u64>().ok()
                    })
                    .map_or_else(|| message.clone(), show);
                CliError::LimitAboveMax {
                    flag,
                    value: text.clone(),
                    max,
                }
            }
            _ => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_above_max_names_the_flag() {
        let limits = LimitArgs {
            memory: Some("64G".parse().unwrap()),
            cpu: Some("1".parse().unwrap()),
            ..LimitArgs::default()
        };
        let e = limits.explain(ClientError::Server {
            code: ErrorCode::InvalidArgument,
            message: "limit memory_bytes = 68719476736 is above the server's maximum \
                      1073741824; ask for less"
                .into(),
        });
        assert_eq!(
            e.to_string(),
            "--memory 64G is above the server maximum (1 GiB): ask for less, or raise qexecd's \
             maximum"
        );
    }
}
