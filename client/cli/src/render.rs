//! Output of the CLI: human text and the `--json` forms.
//!
//! JSON conventions (stable; documented in client/CLI.md):
//! - job ids are 32-hex-digit strings; times are milliseconds since the Unix epoch;
//!   sizes are bytes; CPU amounts are thousandths of a CPU (`cpu_millis`).
//! - byte strings (argv, output) are given as a UTF-8 string (invalid sequences
//!   replaced by U+FFFD) in the plain field, and, only when the bytes are not valid
//!   UTF-8, exactly as lowercase hex in the `_hex` field next to it (else `null`).

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use qexec_protocol::{
    JobState, JobStatus, Limits, OutputStream, ResourceUsage, SpawnFailure, StopReason, Termination,
};

use qexec_client::units::{format_cpu, format_duration, format_size, format_timestamp};

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The UTF-8 (lossy) text and, when the bytes are not UTF-8, their hex form.
pub fn text_and_hex(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(hex(bytes)),
        ),
    }
}

/// A signal's name (`SIGKILL`), or `signal N`.
pub fn signal_name(sig: i32) -> String {
    const NAMES: [&str; 32] = [
        "",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    match usize::try_from(sig).ok().and_then(|i| NAMES.get(i)) {
        Some(n) if !n.is_empty() => (*n).to_owned(),
        _ => format!("signal {sig}"),
    }
}

/// Parses a signal given as a number (`9`) or a name (`KILL`, `SIGKILL`, `kill`).
pub fn parse_signal(text: &str) -> Result<i32, String> {
    if let Ok(n) = text.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
        return Err(format!("signal {n} is out of range: use 1 to 64"));
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    (1..32)
        .find(|&n| signal_name(n) == name)
        .ok_or_else(|| format!("unknown signal {text:?}: use a number (9) or a name (KILL, TERM)"))
}

/// The wire name of a spawn failure, as used in JSON.
pub fn spawn_failure_name(f: SpawnFailure) -> &'static str {
    match f {
        SpawnFailure::EmptyArgv => "empty_argv",
        SpawnFailure::NotFound => "not_found",
        SpawnFailure::PermissionDenied => "permission_denied",
        SpawnFailure::NotExecutable => "not_executable",
        SpawnFailure::BadCwd => "bad_cwd",
        SpawnFailure::TooManyJobs => "too_many_jobs",
        SpawnFailure::Setup => "setup",
        _ => "other",
    }
}

fn stop_reason_name(r: &StopReason) -> &'static str {
    match r {
        StopReason::Requested { .. } => "requested",
        StopReason::Timeout => "timeout",
        StopReason::OutputLimit => "output_limit",
        StopReason::Detached => "detached",
        StopReason::Shutdown => "shutdown",
    }
}

fn termination_text(t: Termination) -> String {
    match t {
        Termination::Exited(c) => format!("code {c}"),
        Termination::Signaled(s) => signal_name(s),
    }
}

/// One short phrase for a job's state: `running`, `exited 0`, `killed by SIGKILL`,
/// `stopped (timeout), SIGKILL`, `failed to start (not_found)`.
pub fn state_text(state: &JobState) -> String {
    match state {
        JobState::Running => "running".to_owned(),
        JobState::Exited {
            termination: Termination::Exited(c),
        } => format!("exited {c}"),
        JobState::Exited {
            termination: Termination::Signaled(s),
        } => format!("killed by {}", signal_name(*s)),
        JobState::Stopped {
            reason,
            termination,
        } => {
            let why = match reason {
                StopReason::Requested { by } => format!("by {}", escape_str(by)),
                other => format!("({})", stop_reason_name(other).replace('_', " ")),
            };
            format!("stopped {why}, {}", termination_text(*termination))
        }
        JobState::FailedToStart { failure, .. } => {
            format!("failed to start ({})", spawn_failure_name(*failure))
        }
    }
}

/// True for the characters a terminal may act on: C0 controls (newline and tab
/// included), DEL and the C1 controls U+0080..U+009F.
fn is_control(c: char) -> bool {
    c.is_control()
}

/// Appends the `$'…'` escape of one byte (bash's ANSI-C quoting).
fn push_byte_escape(out: &mut String, b: u8) {
    match b {
        0x1b => out.push_str("\\e"),
        0x07 => out.push_str("\\a"),
        0x08 => out.push_str("\\b"),
        b'\t' => out.push_str("\\t"),
        b'\n' => out.push_str("\\n"),
        b'\r' => out.push_str("\\r"),
        0x0b => out.push_str("\\v"),
        0x0c => out.push_str("\\f"),
        _ => {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// Neutralises text from the server before it reaches a terminal (spec: QX-SEC-6):
/// every control character (C0 — newline included —, DEL, C1) and every byte of an
/// invalid UTF-8 sequence becomes a visible `$'…'` escape (`\e`, `\a`, `\r`,
/// `\xHH`), as `ls --quoting-style=shell-escape` shows them; everything else is
/// unchanged. Job *output* is never passed through this: it is the job's bytes.
pub fn escape_text(bytes: &[u8]) -> String {
    fn flush(out: &mut String, run: &mut String) {
        if !run.is_empty() {
            out.push_str("$'");
            out.push_str(run);
            out.push('\'');
            run.clear();
        }
    }
    let mut out = String::with_capacity(bytes.len());
    // Escapes waiting to be closed into one `$'…'` group.
    let mut run = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if is_control(c) {
                let mut buf = [0u8; 4];
                for &b in c.encode_utf8(&mut buf).as_bytes() {
                    push_byte_escape(&mut run, b);
                }
            } else {
                flush(&mut out, &mut run);
                out.push(c);
            }
        }
        for &b in chunk.invalid() {
            push_byte_escape(&mut run, b);
        }
    }
    flush(&mut out, &mut run);
    out
}

/// [`escape_text`] of a string.
pub fn escape_str(text: &str) -> String {
    if text.chars().any(is_control) {
        escape_text(text.as_bytes())
    } else {
        text.to_owned()
    }
}

/// Quotes one argument for display the way a POSIX shell would need it; control
/// characters and invalid UTF-8 use bash's `$'…'` form, so nothing reaches the
/// terminal raw (spec: QX-SEC-6).
fn shell_quote(arg: &[u8]) -> String {
    let text = match std::str::from_utf8(arg) {
        Ok(text) if !text.chars().any(is_control) => text,
        _ => {
            // bash's $'…' form shows every byte exactly.
            let mut s = String::from("$'");
            for chunk in arg.utf8_chunks() {
                for c in chunk.valid().chars() {
                    if is_control(c) {
                        let mut buf = [0u8; 4];
                        for &b in c.encode_utf8(&mut buf).as_bytes() {
                            push_byte_escape(&mut s, b);
                        }
                    } else if c == '\'' || c == '\\' {
                        s.push('\\');
                        s.push(c);
                    } else {
                        s.push(c);
                    }
                }
                for &b in chunk.invalid() {
                    push_byte_escape(&mut s, b);
                }
            }
            s.push('\'');
            return s;
        }
    };
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// The command line of a job, shell-quoted for reading.
pub fn command_text(argv: &[Vec<u8>]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How long the job ran (or has run so far, given `now_ms`).
pub fn run_time(status: &JobStatus, now_ms: u64) -> Duration {
    let end = status.ended_at_ms.unwrap_or(now_ms);
    Duration::from_millis(end.saturating_sub(status.started_at_ms))
}

fn limits_text(l: &Limits) -> String {
    let mut parts = Vec::new();
    if let Some(c) = l.cpu_millis {
        parts.push(format!("cpu {}", format_cpu(c)));
    }
    if let Some(m) = l.memory_bytes {
        parts.push(format!("memory {}", format_size(m)));
    }
    if let Some(v) = l.io_read_bps {
        parts.push(format!("io-read {}/s", format_size(v)));
    }
    if let Some(v) = l.io_write_bps {
        parts.push(format!("io-write {}/s", format_size(v)));
    }
    if let Some(v) = l.io_read_iops {
        parts.push(format!("io-read-iops {v}"));
    }
    if let Some(v) = l.io_write_iops {
        parts.push(format!("io-write-iops {v}"));
    }
    if let Some(p) = l.pids {
        parts.push(format!("pids {p}"));
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

fn usage_text(u: &ResourceUsage) -> String {
    let mut parts = Vec::new();
    if let Some(v) = u.cpu_usec {
        parts.push(format!("cpu {}", format_duration(Duration::from_micros(v))));
    }
    if let Some(v) = u.cpu_throttled_usec {
        parts.push(format!(
            "throttled {}",
            format_duration(Duration::from_micros(v))
        ));
    }
    if let Some(v) = u.memory_peak_bytes {
        parts.push(format!("peak memory {}", format_size(v)));
    }
    if let Some(v) = u.io_read_bytes {
        parts.push(format!("read {}", format_size(v)));
    }
    if let Some(v) = u.io_write_bytes {
        parts.push(format!("written {}", format_size(v)));
    }
    if parts.is_empty() {
        "not measured".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The human `qexec status` block.
pub fn status_human(s: &JobStatus, now_ms: u64) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<9} {v}");
    };
    line("job", s.id.to_string());
    line("command", command_text(&s.argv));
    line("owner", escape_str(&s.owner));
    line("state", state_text(&s.state));
    if let JobState::FailedToStart { message, .. } = &s.state {
        line("reason", escape_str(message));
    }
    line(
        "pid",
        s.pid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
    );
    line("started", format_timestamp(s.started_at_ms));
    if let Some(end) = s.ended_at_ms {
        line("ended", format_timestamp(end));
        line("ran", format_duration(run_time(s, now_ms)));
    } else {
        line("running", format_duration(run_time(s, now_ms)));
    }
    let mut output = format!(
        "{} stdout, {} stderr",
        format_size(s.stdout_bytes),
        format_size(s.stderr_bytes)
    );
    if s.output_truncated {
        output.push_str(" (truncated at the server's output cap)");
    }
    line("output", output);
    if s.oom_killed {
        line("oom", "killed by the kernel's OOM killer".to_owned());
    }
    line("limits", limits_text(&s.limits));
    line("usage", usage_text(&s.usage));
    out
}

/// Width the `qexec list` table fits in (the command column is cut to fit).
pub const LIST_WIDTH: usize = 80;

/// Fewest hex digits of a job id `qexec list` shows.
pub const SHORT_ID_DIGITS: usize = 8;

/// The shortest prefixes (at least [`SHORT_ID_DIGITS`] digits) that tell the ids
/// apart, in the order given.
pub fn short_ids(ids: &[String]) -> Vec<String> {
    let mut sorted: Vec<&str> = ids.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let common = |a: &str, b: &str| a.bytes().zip(b.bytes()).take_while(|(x, y)| x == y).count();
    ids.iter()
        .map(|id| {
            let i = sorted.binary_search(&id.as_str()).unwrap_or(0);
            let before = i.checked_sub(1).map_or(0, |j| common(sorted[j], id));
            let after = sorted.get(i + 1).map_or(0, |n| common(n, id));
            let len = (before.max(after) + 1).clamp(SHORT_ID_DIGITS, id.len());
            id[..len].to_owned()
        })
        .collect()
}

/// Start time in the list: `MM-DD HH:MM` (UTC).
fn short_time(ms: u64) -> String {
    let full = format_timestamp(ms); // 2026-11-28 19:00:00 UTC
    full.get(5..16).unwrap_or(&full).to_owned()
}

/// The human `qexec list` table: short ids (unique prefixes, as `qexec status` takes
/// them), one row per job in the order given, at most [`LIST_WIDTH`] columns (the
/// command is cut with `…`). Server text is escaped (spec: QX-SEC-6).
pub fn list_human(jobs: &[JobStatus], now_ms: u64) -> String {
    if jobs.is_empty() {
        return "no jobs\n".to_owned();
    }
    let ids = short_ids(&jobs.iter().map(|s| s.id.to_string()).collect::<Vec<_>>());
    let header = ["ID", "OWNER", "STATE", "STARTED", "TIME", "COMMAND"].map(str::to_owned);
    let mut rows = vec![header];
    for (s, id) in jobs.iter().zip(ids) {
        rows.push([
            id,
            escape_str(&s.owner),
            state_text(&s.state),
            short_time(s.started_at_ms),
            format_duration(run_time(s, now_ms)),
            command_text(&s.argv),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let used: usize = widths[..5].iter().map(|w| w + 2).sum();
    let command_width = LIST_WIDTH.saturating_sub(used).max(16);
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                if cell.chars().count() > command_width {
                    line.extend(cell.chars().take(command_width - 1));
                    line.push('…');
                } else {
                    line.push_str(cell);
                }
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Adds terminal colours to the state in `status`/`list` output (only used on a tty):
/// green for running and success, yellow for other exit codes, red for the rest.
pub fn colour_state(text: &str) -> String {
    const PHRASES: [(&str, &str); 6] = [
        ("running", "32"),
        ("exited 0", "32"),
        ("exited ", "33"),
        ("killed by", "31"),
        ("stopped ", "31"),
        ("failed to start", "31"),
    ];
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.split_inclusive('\n') {
        let hex_digits = line.bytes().take_while(u8::is_ascii_hexdigit).count();
        let is_row = line.starts_with("state ")
            || (hex_digits >= SHORT_ID_DIGITS && line[hex_digits..].starts_with("  "));
        let found = is_row
            .then(|| {
                PHRASES
                    .iter()
                    .filter_map(|(p, c)| line.find(p).map(|at| (at, *p, *c)))
                    .min_by_key(|(at, ..)| *at)
            })
            .flatten();
        match found {
            Some((at, phrase, colour)) => {
                let end = at + phrase.len();
                out.push_str(&line[..at]);
                out.push_str(&format!("\x1b[{colour}m{}\x1b[0m", &line[at..end]));
                out.push_str(&line[end..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

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
