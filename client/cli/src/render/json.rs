//! The `--json` forms of the CLI's output (conventions in the parent module's docs and
//! client/CLI.md).

use serde::{Deserialize, Serialize};

use qexec_protocol::{JobStatus, OutputStream};

use super::*;

/// A job's status in `--json` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobJson {
    /// Job id (32 hex digits).
    pub id: String,
    /// Identity that started it.
    pub owner: String,
    /// argv as UTF-8 (lossy).
    pub argv: Vec<String>,
    /// argv as hex, only when some argument is not UTF-8.
    pub argv_hex: Option<Vec<String>>,
    /// `running`, `exited`, `stopped` or `failed_to_start`.
    pub state: String,
    /// Exit code when the main process exited.
    pub exit_code: Option<i32>,
    /// Signal number when it was killed by a signal.
    pub signal: Option<i32>,
    /// Why qexec stopped it: `requested`, `timeout`, `output_limit`, `detached`,
    /// `shutdown`.
    pub stop_reason: Option<String>,
    /// Who asked to stop it (for `requested`).
    pub stopped_by: Option<String>,
    /// Why it could not start (`not_found`, `permission_denied`, …).
    pub spawn_failure: Option<String>,
    /// Details of a failure to start.
    pub message: Option<String>,
    /// Host pid of its first process.
    pub pid: Option<u32>,
    /// Start time, ms since the epoch.
    pub started_at_ms: u64,
    /// End time, ms since the epoch.
    pub ended_at_ms: Option<u64>,
    /// Bytes written to stdout.
    pub stdout_bytes: u64,
    /// Bytes written to stderr.
    pub stderr_bytes: u64,
    /// The output cap was reached.
    pub output_truncated: bool,
    /// The OOM killer killed a process of the job.
    pub oom_killed: bool,
    /// Limits in force.
    pub limits: LimitsJson,
    /// Resource usage.
    pub usage: UsageJson,
}

/// Limits in `--json` output (`null` = unlimited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsJson {
    /// Thousandths of a CPU.
    pub cpu_millis: Option<u32>,
    /// Bytes.
    pub memory_bytes: Option<u64>,
    /// Bytes per second.
    pub io_read_bps: Option<u64>,
    /// Bytes per second.
    pub io_write_bps: Option<u64>,
    /// Operations per second.
    pub io_read_iops: Option<u64>,
    /// Operations per second.
    pub io_write_iops: Option<u64>,
    /// Processes and threads.
    pub pids: Option<u32>,
}

/// Resource usage in `--json` output (`null` = not measured).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageJson {
    /// CPU time in microseconds.
    pub cpu_usec: Option<u64>,
    /// Throttled time in microseconds.
    pub cpu_throttled_usec: Option<u64>,
    /// Peak memory in bytes.
    pub memory_peak_bytes: Option<u64>,
    /// Bytes read.
    pub io_read_bytes: Option<u64>,
    /// Bytes written.
    pub io_write_bytes: Option<u64>,
}

impl From<&JobStatus> for JobJson {
    fn from(s: &JobStatus) -> Self {
        let argv: Vec<(String, Option<String>)> = s.argv.iter().map(|a| text_and_hex(a)).collect();
        let any_hex = argv.iter().any(|(_, h)| h.is_some());
        let argv_hex = any_hex.then(|| s.argv.iter().map(|a| hex(a)).collect());
        let (mut exit_code, mut signal) = (None, None);
        match s.state.termination() {
            Some(Termination::Exited(c)) => exit_code = Some(c),
            Some(Termination::Signaled(n)) => signal = Some(n),
            None => {}
        }
        let (state, stop_reason, stopped_by, spawn_failure, message) = match &s.state {
            JobState::Running => ("running", None, None, None, None),
            JobState::Exited { .. } => ("exited", None, None, None, None),
            JobState::Stopped { reason, .. } => (
                "stopped",
                Some(stop_reason_name(reason).to_owned()),
                match reason {
                    StopReason::Requested { by } => Some(by.clone()),
                    _ => None,
                },
                None,
                None,
            ),
            JobState::FailedToStart { failure, message } => (
                "failed_to_start",
                None,
                None,
                Some(spawn_failure_name(*failure).to_owned()),
                Some(message.clone()),
            ),
        };
        let l = &s.limits;
        let u = &s.usage;
        Self {
            id: s.id.to_string(),
            owner: s.owner.clone(),
            argv: argv.into_iter().map(|(t, _)| t).collect(),
            argv_hex,
            state: state.to_owned(),
            exit_code,
            signal,
            stop_reason,
            stopped_by,
            spawn_failure,
            message,
            pid: s.pid,
            started_at_ms: s.started_at_ms,
            ended_at_ms: s.ended_at_ms,
            stdout_bytes: s.stdout_bytes,
            stderr_bytes: s.stderr_bytes,
            output_truncated: s.output_truncated,
            oom_killed: s.oom_killed,
            limits: LimitsJson {
                cpu_millis: l.cpu_millis,
                memory_bytes: l.memory_bytes,
                io_read_bps: l.io_read_bps,
                io_write_bps: l.io_write_bps,
                io_read_iops: l.io_read_iops,
                io_write_iops: l.io_write_iops,
                pids: l.pids,
            },
            usage: UsageJson {
                cpu_usec: u.cpu_usec,
                cpu_throttled_usec: u.cpu_throttled_usec,
                memory_peak_bytes: u.memory_peak_bytes,
                io_read_bytes: u.io_read_bytes,
                io_write_bytes: u.io_write_bytes,
            },
        }
    }
}

/// One line of `qexec run --json` / `qexec logs --json` (JSON Lines).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventJson {
    /// The job started (`run` only).
    Started {
        /// Job id.
        job: String,
        /// Host pid.
        pid: u32,
    },
    /// A chunk of output.
    Output {
        /// `stdout` or `stderr`.
        stream: String,
        /// Combined-output offset of the first byte.
        offset: u64,
        /// The bytes as UTF-8 (lossy).
        data: String,
        /// The bytes as hex, only when they are not UTF-8.
        data_hex: Option<String>,
        /// When qexec received them, ms since the epoch (only with `--timestamps`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ts_ms: Option<u64>,
    },
    /// The job ended.
    End {
        /// Its final status.
        status: Box<JobJson>,
    },
    /// The job could not start (`run` only; then no other event comes).
    FailedToStart {
        /// Why: `not_found`, `permission_denied`, … (as `spawn_failure` of a status).
        spawn_failure: String,
        /// The server's details.
        message: String,
        /// The exit status `qexec run` exits with (127, 126 or 255).
        exit: u8,
    },
}

impl EventJson {
    /// An output event.
    pub fn output(stream: OutputStream, offset: u64, data: &[u8]) -> Self {
        let (data, data_hex) = text_and_hex(data);
        Self::Output {
            stream: match stream {
                OutputStream::Stdout => "stdout",
                OutputStream::Stderr => "stderr",
            }
            .to_owned(),
            offset,
            data,
            data_hex,
            ts_ms: None,
        }
    }

    /// The same event with its receive time (`--timestamps`).
    pub fn stamped(self, now_ms: u64) -> Self {
        match self {
            Self::Output {
                stream,
                offset,
                data,
                data_hex,
                ..
            } => Self::Output {
                stream,
                offset,
                data,
                data_hex,
                ts_ms: Some(now_ms),
            },
            other => other,
        }
    }
}

/// `qexec start --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedJson {
    /// Job id.
    pub job: String,
    /// Host pid.
    pub pid: u32,
}

/// Serializes a value as one line of JSON.
pub fn json_line<T: Serialize>(v: &T) -> String {
    // Serializing these plain structs cannot fail (no maps with non-string keys).
    let mut s = serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// Serializes a value as indented JSON.
pub fn json_pretty<T: Serialize>(v: &T) -> String {
    let mut s =
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert!(parse_signal("0").is_err());
        assert!(parse_signal("65").is_err());
        assert!(parse_signal("NOPE").is_err());
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(40), "signal 40");
    }

    #[test]
    fn bytes_are_text_plus_hex_when_needed() {
        assert_eq!(text_and_hex(b"hi\n"), ("hi\n".to_owned(), None));
        assert_eq!(
            text_and_hex(b"a\xff"),
            ("a\u{fffd}".to_owned(), Some("61ff".to_owned()))
        );
    }

    #[test]
    fn commands_are_quoted() {
        let argv = vec![b"sh".to_vec(), b"-c".to_vec(), b"echo 'hi'".to_vec()];
        assert_eq!(command_text(&argv), r#"sh -c 'echo '\''hi'\'''"#);
        assert_eq!(command_text(&[b"a\xff b".to_vec()]), r"$'a\xff b'");
    }

    #[test]
    fn short_ids_are_unique_prefixes_of_at_least_8_digits() {
        let ids: Vec<String> = [
            "0123456789abcdef0123456789abcdef",
            "0123456789ab0000ffffffffffffffff",
            "fedcba98765432100000000000000000",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            short_ids(&ids),
            ["0123456789abc", "0123456789ab0", "fedcba98"]
        );
        assert_eq!(short_ids(&ids[2..]), ["fedcba98"]);
    }

    #[test]
    fn control_characters_are_shell_escaped() {
        // spec: QX-SEC-6 — like `ls --quoting-style=shell-escape`.
        let argv = vec![b"printf".to_vec(), b"\x1b[31mred\x07\rover".to_vec()];
        assert_eq!(command_text(&argv), r"printf $'\e[31mred\a\rover'");
        assert_eq!(command_text(&[b"it's\n".to_vec()]), r"$'it\'s\n'");
        // C1 (U+009B, a one-character CSI) as its UTF-8 bytes.
        assert_eq!(command_text(&["a\u{9b}b".into()]), r"$'a\xc2\x9bb'");
        assert_eq!(escape_str("bob\x1b]0;pwned\x07"), r"bob$'\e']0;pwned$'\a'");
        assert_eq!(escape_text(b"ok \xff\xfe end"), r"ok $'\xff\xfe' end");
        assert_eq!(escape_str("plain text: ok"), "plain text: ok");
        assert_eq!(escape_str("é ü"), "é ü");
    }
}
