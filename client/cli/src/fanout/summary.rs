//! The end of a fan-out: one row per host (a table on stderr, or a `summary` JSON
//! event) and the exit status of the whole.

use std::time::Duration;

use serde::Serialize;

use qexec_client::units::format_duration;
use qexec_protocol::{JobId, JobStatus, SpawnFailure};

use super::super::render::{JobJson, escape_str, spawn_failure_name, state_text, text_table};
use super::super::run::exit_status;
use super::super::{EXIT_QEXEC_ERROR, spawn_exit};

/// Exit status of a fan-out interrupted by Ctrl-C (128 + SIGINT, as a shell reports
/// a command it interrupted).
pub(super) const EXIT_INTERRUPTED: u8 = 130;

/// How one host's part ended.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    /// The job ended; its final status.
    Ended(Box<JobStatus>),
    /// The job could not start.
    FailedToStart {
        /// Why.
        failure: SpawnFailure,
        /// The server's details.
        message: String,
    },
    /// qexec failed with this host: could not connect, lost it, an error answer.
    Failed(String),
    /// Ctrl-C came before the job started here; nothing ran.
    NotStarted,
    /// qexec closed the connection without waiting for the job's end (the server
    /// stops a `run` job then, spec: QX-STREAM-17); why.
    Detached(&'static str),
}

/// One host's row.
#[derive(Debug, Clone)]
pub(super) struct Row {
    /// The host's label.
    pub(super) host: String,
    /// Its job, once started.
    pub(super) job: Option<JobId>,
    /// How it ended.
    pub(super) outcome: Outcome,
    /// From the start of the host's turn (connecting) to its end.
    pub(super) elapsed: Duration,
}

impl Row {
    /// The host's own exit status as `qexec run` on it alone would give it; `None`
    /// when qexec failed with the host or the job never ran to its end.
    pub(super) fn exit(&self) -> Option<u8> {
        match &self.outcome {
            Outcome::Ended(status) => Some(exit_status(status)),
            Outcome::FailedToStart { failure, .. } => Some(spawn_exit(*failure)),
            Outcome::Failed(_) | Outcome::NotStarted | Outcome::Detached(_) => None,
        }
    }

    /// The state phrase of the table (escaped: server text may be in it).
    fn state(&self) -> String {
        match &self.outcome {
            Outcome::Ended(status) => state_text(&status.state),
            Outcome::FailedToStart { failure, message } => format!(
                "failed to start ({}): {}",
                spawn_failure_name(*failure),
                escape_str(message)
            ),
            Outcome::Failed(e) => format!("failed: {}", escape_str(e)),
            Outcome::NotStarted => "not started (Ctrl-C)".to_owned(),
            Outcome::Detached(why) => format!("detached: {why}"),
        }
    }
}

/// The exit status of the whole fan-out (documented in CLI.md and `run --help`):
/// 130 after Ctrl-C; else 255 if qexec failed with any host; else the highest of
/// the hosts' statuses (0 when every job exited 0).
pub(super) fn exit_code(rows: &[Row], interrupted: bool) -> u8 {
    if interrupted {
        return EXIT_INTERRUPTED;
    }
    rows.iter()
        .map(|r| r.exit().unwrap_or(EXIT_QEXEC_ERROR))
        .max()
        .unwrap_or(0)
}

/// The human summary: a header and one row per host, columns padded; server text
/// and labels escaped.
pub(super) fn table(rows: &[Row]) -> String {
    let mut cells = vec![["HOST", "JOB", "EXIT", "TIME", "STATE"].map(str::to_owned)];
    for r in rows {
        cells.push([
            r.host.clone(),
            r.job
                .map_or_else(|| "-".to_owned(), |j| j.to_string()[..8].to_owned()),
            r.exit().map_or_else(|| "-".to_owned(), |c| c.to_string()),
            format_duration(r.elapsed),
            r.state(),
        ]);
    }
    text_table(&cells, usize::MAX, 0)
}

/// One host in the `summary` event of `--json`.
#[derive(Debug, Serialize)]
pub(super) struct RowJson {
    /// The label.
    host: String,
    /// The job id, once started.
    job: Option<String>,
    /// `ended`, `failed_to_start`, `failed`, `not_started` or `detached`.
    outcome: &'static str,
    /// The host's own exit status, as `qexec run` on it alone (`null`: none).
    exit: Option<u8>,
    /// Milliseconds from the start of its turn to its end.
    elapsed_ms: u64,
    /// The job's final status (for `ended`).
    status: Option<Box<JobJson>>,
    /// What failed (`failed`, `failed_to_start`), or why qexec did not wait
    /// (`detached`).
    error: Option<String>,
}

impl From<&Row> for RowJson {
    fn from(r: &Row) -> Self {
        let (outcome, status, error) = match &r.outcome {
            Outcome::Ended(s) => ("ended", Some(Box::new(JobJson::from(&**s))), None),
            Outcome::FailedToStart { message, .. } => {
                ("failed_to_start", None, Some(message.clone()))
            }
            Outcome::Failed(e) => ("failed", None, Some(e.clone())),
            Outcome::NotStarted => ("not_started", None, None),
            Outcome::Detached(why) => ("detached", None, Some((*why).to_owned())),
        };
        Self {
            host: r.host.clone(),
            job: r.job.map(|j| j.to_string()),
            outcome,
            exit: r.exit(),
            elapsed_ms: u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX),
            status,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qexec_protocol::{JobState, Limits, ResourceUsage, Termination};

    fn ended(host: &str, code: i32) -> Row {
        Row {
            host: host.into(),
            job: Some(JobId::from_u128(0x0123_4567_89ab_cdef << 64)),
            outcome: Outcome::Ended(Box::new(JobStatus {
                id: JobId::from_u128(1),
                owner: "alice".into(),
                argv: vec![b"true".to_vec()],
                state: JobState::Exited {
                    termination: Termination::Exited(code),
                },
                pid: Some(1),
                started_at_ms: 0,
                ended_at_ms: Some(1),
                stdout_bytes: 0,
                stderr_bytes: 0,
                output_truncated: false,
                oom_killed: false,
                limits: Limits::default(),
                usage: ResourceUsage::default(),
            })),
            elapsed: Duration::from_millis(1500),
        }
    }

    fn failed(host: &str, why: &str) -> Row {
        Row {
            host: host.into(),
            job: None,
            outcome: Outcome::Failed(why.into()),
            elapsed: Duration::from_secs(5),
        }
    }

    #[test]
    fn exit_rule() {
        assert_eq!(exit_code(&[ended("a", 0), ended("b", 0)], false), 0);
        assert_eq!(
            exit_code(&[ended("a", 0), ended("b", 3), ended("c", 1)], false),
            3
        );
        assert_eq!(exit_code(&[ended("a", 3), failed("b", "x")], false), 255);
        assert_eq!(exit_code(&[ended("a", 0), ended("b", 0)], true), 130);
        let not_found = Row {
            outcome: Outcome::FailedToStart {
                failure: SpawnFailure::NotFound,
                message: "no".into(),
            },
            ..failed("c", "")
        };
        assert_eq!(exit_code(&[ended("a", 3), not_found], false), 127);
        assert_eq!(exit_code(&[], false), 0);
    }

    #[test]
    fn the_table_pads_and_escapes() {
        let rows = [
            ended("build-01", 0),
            failed("b2", "cannot reach qexecd at b2:7443\x1b[2J"),
        ];
        assert_eq!(
            table(&rows),
            "HOST      JOB       EXIT  TIME   STATE\n\
             build-01  01234567  0     1.50s  exited 0\n\
             b2        -         -     5.00s  failed: cannot reach qexecd at b2:7443$'\\e'[2J\n"
        );
    }
}
