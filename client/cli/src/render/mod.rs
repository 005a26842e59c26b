//! Output of the CLI: human text and the `--json` forms.
//!
//! JSON conventions (stable; documented in client/CLI.md):
//! - job ids are 32-hex-digit strings; times are milliseconds since the Unix epoch;
//!   sizes are bytes; CPU amounts are thousandths of a CPU (`cpu_millis`).
//! - byte strings (argv, output) are given as a UTF-8 string (invalid sequences
//!   replaced by U+FFFD) in the plain field, and, only when the bytes are not valid
//!   UTF-8, exactly as lowercase hex in the `_hex` field next to it (else `null`).
//!
//! Rooms: this module (human text: names of signals and states, `status`, `list`),
//! `escape` (neutralising server text for a terminal, shell quoting) and `json`
//! (the `--json` forms).

mod escape;
mod json;

pub use escape::{command_text, escape_str, escape_text};
pub use json::{EventJson, JobJson, LimitsJson, StartedJson, UsageJson, json_line, json_pretty};

use std::fmt::Write as _;
use std::time::Duration;

use qexec_protocol::{
    JobState, JobStatus, Limits, ResourceUsage, SpawnFailure, StopReason, Termination,
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
    text_table(&rows, LIST_WIDTH, 16)
}

/// `rows` as a text table: each column but the last padded to its widest cell plus
/// two spaces, the last cut (the cut marked `…`) to what is left of `line_width`
/// characters, but never below `last_min`; no trailing spaces.
pub(crate) fn text_table<const N: usize>(
    rows: &[[String; N]],
    line_width: usize,
    last_min: usize,
) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let used: usize = widths[..N.saturating_sub(1)].iter().map(|w| w + 2).sum();
    let last_width = line_width.saturating_sub(used).max(last_min);
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let len = cell.chars().count();
            if i + 1 == N {
                if len > last_width {
                    line.extend(cell.chars().take(last_width.saturating_sub(1)));
                    line.push('…');
                } else {
                    line.push_str(cell);
                }
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(widths[i] - len + 2));
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

#[cfg(test)]
mod tests {
    use super::text_table;

    fn row<const N: usize>(cells: [&str; N]) -> [String; N] {
        cells.map(str::to_owned)
    }

    #[test]
    fn columns_are_padded_to_their_widest_cell_and_the_last_is_cut() {
        let rows = [
            row(["ID", "STATE", "COMMAND"]),
            row(["é1", "running", "sleep 600"]),
            row(["abcd", "exited 3", "x"]),
        ];
        assert_eq!(
            text_table(&rows, 6 + 16, 0),
            "ID    STATE     COMMA…\n\
             é1    running   sleep…\n\
             abcd  exited 3  x\n"
        );
        assert_eq!(
            text_table(&rows, usize::MAX, 0),
            "ID    STATE     COMMAND\n\
             é1    running   sleep 600\n\
             abcd  exited 3  x\n"
        );
        assert_eq!(
            text_table(&rows, 0, 6),
            text_table(&rows, 6 + 16, 0),
            "the last column keeps its minimum"
        );
    }
}
