//! Every message of the protocol (spec: QX-MSG-*).
//!
//! Three message families travel on three kinds of frames:
//! - [`ClientMessage`]: client → server on a control stream (client-opened bidirectional);
//! - [`ServerMessage`]: server → client on a control stream;
//! - [`OutputFrame`]: server → client on an output stream (server-opened unidirectional).
//!
//! Byte strings (argv, env, cwd, output) are raw bytes: Linux arguments and output are
//! not text, and the protocol never requires UTF-8 for them (spec: QX-MSG-ENC-3).
//!
//! The declaration order of variants and fields below is the wire format: never
//! reorder, remove or extend them; new messages go at the end of the three families
//! (spec: QX-VER-2, QX-VER-3, QX-VER-4). The tables of spec/protocol.md §5 are the
//! definition these types implement (spec: QX-MSG-ENC-2); `tests/spec_tables.rs`
//! checks the two agree. Control streams are QX-STREAM-1,
//! output streams QX-STREAM-2, and every stream carries whole frames (QX-STREAM-4).

use serde::{Deserialize, Serialize};

use crate::{ErrorCode, JobId};

/// A frame a client sends on a control stream.
///
/// The first frame on a control stream is a request (every variant but the `Stdin*`
/// ones); `StdinData`/`StdinEof` may follow only a `Start` with `stdin: true` on the
/// same stream (spec: QX-STREAM-5 to QX-STREAM-8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// Start a job (spec: QX-MSG-CTRL-1).
    Start(StartRequest),
    /// Stop a job (SIGTERM, grace period, SIGKILL) (spec: QX-MSG-CTRL-2).
    Stop(StopRequest),
    /// Ask for a job's status (spec: QX-MSG-CTRL-3).
    Status(StatusRequest),
    /// List jobs visible to the caller (spec: QX-MSG-CTRL-4).
    List(ListRequest),
    /// Subscribe to a job's output from a byte offset (spec: QX-MSG-CTRL-5).
    Attach(AttachRequest),
    /// Send a signal to a job's main process (spec: QX-MSG-CTRL-6).
    Signal(SignalRequest),
    /// Bytes for the job's standard input (spec: QX-MSG-CTRL-7).
    StdinData(#[serde(with = "crate::bytes")] Vec<u8>),
    /// Close the job's standard input (spec: QX-MSG-CTRL-8).
    StdinEof,
    /// List jobs visible to the caller, filtered, one page at a time
    /// (spec: QX-MSG-CTRL-9).
    ListQuery(ListQuery),
    /// Start a job on a terminal (a PTY): the job's stdin, stdout and stderr are the
    /// terminal, its output is the one terminal stream (recorded as `Stdout`), and the
    /// stream carries keystrokes (`StdinData`) and window sizes (`Resize`) after it
    /// (spec: QX-TERM-1, QX-TERM-3).
    StartTerminal(StartTerminalRequest),
    /// The terminal of the job started on this stream has a new size; the job's
    /// foreground process group gets `SIGWINCH` (spec: QX-TERM-2).
    Resize(WindowSize),
    /// Ask the server how busy it is: its version, running jobs and limits, the
    /// caller's own running jobs, its CPUs (spec: QX-MSG-CTRL-11, QX-INFO-1). The
    /// answer is [`ServerMessage::Info`]; a server that predates it answers
    /// `Unsupported` (spec: QX-INFO-8).
    Info,
}

/// Resource limits of a job. `None` means "the server's default" (spec: QX-MSG-TYPE-1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// CPU bandwidth in thousandths of one CPU (1000 = one full CPU, 500 = half).
    pub cpu_millis: Option<u32>,
    /// Memory limit in bytes (swap is not allowed on top of it).
    pub memory_bytes: Option<u64>,
    /// Disk read bandwidth in bytes per second.
    pub io_read_bps: Option<u64>,
    /// Disk write bandwidth in bytes per second.
    pub io_write_bps: Option<u64>,
    /// Disk read operations per second.
    pub io_read_iops: Option<u64>,
    /// Disk write operations per second.
    pub io_write_iops: Option<u64>,
    /// Maximum number of processes and threads.
    pub pids: Option<u32>,
}

impl Limits {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Start a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    /// The program and its arguments; `argv[0]` is resolved against `PATH` of the
    /// job's environment unless it contains a `/`. Executed directly, no shell.
    pub argv: Vec<Vec<u8>>,
    /// The job's whole environment (`NAME`, `VALUE` pairs); the server adds a default
    /// `PATH` when none is given.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// Working directory; `None` means the server's default (`/`).
    pub cwd: Option<Vec<u8>>,
    /// Resource limits.
    pub limits: Limits,
    /// Wall-clock timeout in milliseconds; `None` means no timeout.
    pub timeout_ms: Option<u64>,
    /// Whether the client will send standard input on this stream. When false the
    /// job's stdin is `/dev/null`.
    pub stdin: bool,
    /// Whether the server opens an output stream for this job right away (from
    /// offset 0), as if an `Attach` had been sent.
    pub follow: bool,
    /// Stop the job when this control stream is reset or its connection is lost
    /// before the job ends (`qexec run` semantics).
    pub stop_on_detach: bool,
}

/// Start a job on a terminal: an ordinary start plus the terminal's description
/// (spec: QX-TERM-1).
///
/// The `start` fields keep their meaning, except `stdin`, which is ignored: the job's
/// standard input is always the terminal, and the client may send `StdinData`,
/// `Resize` and one `StdinEof` after this request (spec: QX-TERM-3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartTerminalRequest {
    /// The job, as in `Start`.
    pub start: StartRequest,
    /// The terminal.
    pub terminal: TerminalSpec,
}

/// The terminal a job gets (spec: QX-TERM-1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalSpec {
    /// Terminal type, set as the job's `TERM` (e.g. `xterm-256color`): 1 to 64 bytes
    /// of ASCII letters, digits and `.`, `_`, `+`, `-` (spec: QX-TERM-4).
    pub term: String,
    /// The initial window size.
    pub size: WindowSize,
}

/// A terminal window size, as the kernel's `struct winsize` (spec: QX-TERM-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    /// Rows (lines), 1 to [`crate::limits::MAX_TERMINAL_CELLS`].
    pub rows: u16,
    /// Columns, 1 to [`crate::limits::MAX_TERMINAL_CELLS`].
    pub cols: u16,
    /// Width in pixels; 0 when unknown.
    pub width_px: u16,
    /// Height in pixels; 0 when unknown.
    pub height_px: u16,
}

/// Stop a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    /// The job.
    pub job: JobId,
    /// Milliseconds between SIGTERM and SIGKILL; `None` means the server default.
    pub grace_ms: Option<u64>,
}

/// Ask for a job's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRequest {
    /// The job.
    pub job: JobId,
}

/// List jobs visible to the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {
    /// Only jobs that are still running.
    pub running_only: bool,
}

/// Which jobs a [`ListQuery`] selects by state (spec: QX-MSG-TYPE-9).
///
/// A nested enum: it never gains variants within `qexec/1` (spec: QX-VER-4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ListStateFilter {
    /// Every job.
    #[default]
    Any,
    /// Jobs whose state is `Running`.
    Running,
    /// Jobs that ran and ended: state `Exited` or `Stopped`.
    Ended,
    /// Jobs whose program could not be started: state `FailedToStart`.
    FailedToStart,
}

impl ListStateFilter {
    /// Whether a job in `state` is selected.
    pub fn selects(self, state: &JobState) -> bool {
        match self {
            Self::Any => true,
            Self::Running => matches!(state, JobState::Running),
            Self::Ended => matches!(state, JobState::Exited { .. } | JobState::Stopped { .. }),
            Self::FailedToStart => matches!(state, JobState::FailedToStart { .. }),
        }
    }
}

/// List jobs visible to the caller, filtered, one page at a time
/// (spec: QX-MSG-CTRL-9).
///
/// Jobs are ordered by their sequence number ([`ListEntry::seq`]), the order in which
/// the server created them. The answer is zero or more [`ServerMessage::ListEntry`]
/// then [`ServerMessage::ListPageEnd`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Only jobs in these states.
    pub state: ListStateFilter,
    /// Only jobs of this owner. A caller that may see only its own jobs (role `user`)
    /// gets an empty page for any other owner.
    pub owner: Option<String>,
    /// Only jobs started at or after this time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Only jobs whose id's text form starts with these hexadecimal digits (4 to 32,
    /// either case).
    pub id_prefix: Option<String>,
    /// At most this many entries in the page (1 to
    /// [`MAX_LIST_LIMIT`](crate::limits::MAX_LIST_LIMIT)).
    pub limit: u32,
    /// Continue after this sequence number: the `next` of the previous page.
    pub cursor: Option<u64>,
    /// Newest (highest sequence number) first instead of oldest first.
    pub newest_first: bool,
}

impl ListQuery {
    /// A query for the first page of every visible job, oldest first, `limit` entries.
    pub fn all(limit: u32) -> Self {
        Self {
            state: ListStateFilter::Any,
            owner: None,
            since_ms: None,
            id_prefix: None,
            limit,
            cursor: None,
            newest_first: false,
        }
    }
}

/// One job of a [`ListQuery`] page (spec: QX-MSG-SRV-7).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// The job's sequence number: unique per server, assigned when the job is
    /// created, increasing in creation order, never reused (spec: QX-LIST-1).
    pub seq: u64,
    /// The job's status.
    pub status: JobStatus,
}

/// Subscribe to a job's output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachRequest {
    /// The job.
    pub job: JobId,
    /// Offset in the job's combined output (stdout and stderr bytes in the order the
    /// server captured them) from which to send.
    pub from: u64,
}

/// Send a signal to a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalRequest {
    /// The job.
    pub job: JobId,
    /// Linux signal number (1–64).
    pub signal: i32,
}

/// A frame a server sends on a control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMessage {
    /// The job was started (spec: QX-MSG-SRV-1).
    Started(StartedResponse),
    /// A job's status (answer to `Status`, `Stop`, and `Signal`) (spec: QX-MSG-SRV-2).
    Status(JobStatus),
    /// One job of a `List` answer; zero or more precede `ListEnd` (spec: QX-MSG-SRV-3).
    ListItem(JobStatus),
    /// End of a `List` answer (spec: QX-MSG-SRV-4).
    ListEnd,
    /// The subscription was accepted; its output stream carries the data
    /// (spec: QX-MSG-SRV-5).
    Attached {
        /// The job.
        job: JobId,
    },
    /// The request failed (spec: QX-MSG-SRV-6, QX-ERR-4).
    Error(ErrorResponse),
    /// One job of a `ListQuery` page; zero or more precede `ListPageEnd`
    /// (spec: QX-MSG-SRV-7).
    ListEntry(ListEntry),
    /// End of a `ListQuery` page (spec: QX-MSG-SRV-8).
    ListPageEnd {
        /// The cursor of the next page (the `seq` of this page's last entry), or
        /// `None` when no more jobs match.
        next: Option<u64>,
    },
    /// Answer to `Info` (spec: QX-MSG-SRV-9).
    Info(ServerInfo),
}

/// What a server says about itself and its load, in answer to
/// [`ClientMessage::Info`] (spec: QX-MSG-TYPE-10, QX-INFO-2 to QX-INFO-6).
///
/// A snapshot: the counts may have changed by the time the answer arrives. The
/// declaration order is the wire format, and the struct never gains a field
/// (spec: QX-VER-2).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The server software's version, e.g. qexecd's crate version `"0.1.0"`
    /// (spec: QX-INFO-2). For people and logs; not a protocol version.
    pub server_version: String,
    /// Jobs of all users counted against `max_jobs` at the time of the answer:
    /// running ones and ones being started (spec: QX-INFO-3).
    pub running_jobs: u32,
    /// How many jobs the server runs at once, all users together (qexecd
    /// `--max-jobs`) (spec: QX-INFO-3).
    pub max_jobs: u32,
    /// The caller's own jobs counted against `max_jobs_per_user` (spec: QX-INFO-4).
    pub caller_running_jobs: u32,
    /// How many jobs one user may run at once (qexecd `--max-jobs-per-user`)
    /// (spec: QX-INFO-4).
    pub max_jobs_per_user: u32,
    /// CPUs the server's jobs can use (spec: QX-INFO-5).
    pub cpus: u32,
}

impl ServerInfo {
    /// Jobs the caller could start now before a server limit refuses the next one:
    /// the smaller of the two limits' room (0 when either is reached). Advisory: other
    /// clients start and end jobs meanwhile (spec: QX-INFO-6).
    pub fn free_slots(&self) -> u32 {
        let all = self.max_jobs.saturating_sub(self.running_jobs);
        let mine = self
            .max_jobs_per_user
            .saturating_sub(self.caller_running_jobs);
        all.min(mine)
    }
}

/// Answer to `Start`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartedResponse {
    /// The new job's id.
    pub job: JobId,
    /// Host pid of the job's first process (its init when isolated).
    pub pid: u32,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What kind of failure.
    pub code: ErrorCode,
    /// A human-readable explanation (what failed, on what, what to do).
    pub message: String,
    /// For `SpawnFailed`: which spawn failure.
    pub spawn: Option<SpawnFailure>,
}

/// A frame a server sends on an output stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[allow(
    clippy::large_enum_variant,
    reason = "frames are transient values handled one at a time, and boxing `End`'s status \
              would change a type other crates already build on"
)]
pub enum OutputFrame {
    /// First frame of every output stream (spec: QX-MSG-OUT-1).
    Header {
        /// QUIC stream id of the control stream whose request opened this output
        /// stream, so the client can match them.
        request_stream: u64,
        /// The job.
        job: JobId,
        /// Combined-output offset of the first data byte that will follow.
        from: u64,
    },
    /// A chunk of output (spec: QX-MSG-OUT-2).
    Data {
        /// Which of the job's streams wrote it.
        stream: OutputStream,
        /// Combined-output offset of `data[0]`.
        offset: u64,
        /// The bytes, exactly as written.
        #[serde(with = "crate::bytes")]
        data: Vec<u8>,
    },
    /// Last frame: the job ended and all its output was sent (spec: QX-MSG-OUT-3).
    End {
        /// The job's final status.
        status: JobStatus,
    },
}

/// Which standard stream a chunk of output came from (spec: QX-MSG-TYPE-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a process ended (spec: QX-MSG-TYPE-3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Termination {
    /// It called exit with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

/// Why qexec stopped a job (spec: QX-MSG-TYPE-4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopReason {
    /// A client asked; `by` is the identity (certificate user name) that asked.
    Requested {
        /// Who asked.
        by: String,
    },
    /// The job ran past its wall-clock timeout.
    Timeout,
    /// The job wrote more output than the server's per-job cap.
    OutputLimit,
    /// The job was started with `stop_on_detach` and its client went away.
    Detached,
    /// The server shut down.
    Shutdown,
}

/// Why a job could not start (spec: QX-MSG-TYPE-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum SpawnFailure {
    /// `argv` was empty.
    EmptyArgv,
    /// The program was not found (no such file, or not on `PATH`).
    NotFound,
    /// The program or a directory on its path may not be accessed.
    PermissionDenied,
    /// The file is not an executable the kernel can run.
    NotExecutable,
    /// The working directory does not exist or is not a directory.
    BadCwd,
    /// The server runs as many jobs as it allows.
    TooManyJobs,
    /// Setting up limits or isolation failed.
    Setup,
    /// Anything else (the message says what).
    Other,
}

/// The lifecycle state of a job (spec: QX-MSG-TYPE-6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    /// The job's processes are running.
    Running,
    /// The job's main process exited by itself.
    Exited {
        /// How it ended.
        termination: Termination,
    },
    /// qexec stopped the job.
    Stopped {
        /// Why.
        reason: StopReason,
        /// How the main process ended.
        termination: Termination,
    },
    /// The program could not be started.
    FailedToStart {
        /// Which failure.
        failure: SpawnFailure,
        /// Details.
        message: String,
    },
}

impl JobState {
    /// True while the job runs.
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running)
    }

    /// How the main process ended, if it ran and ended.
    pub fn termination(&self) -> Option<Termination> {
        match self {
            Self::Exited { termination } | Self::Stopped { termination, .. } => Some(*termination),
            Self::Running | Self::FailedToStart { .. } => None,
        }
    }
}

/// Resource usage read from the job's cgroup; `None` where not measured
/// (spec: QX-MSG-TYPE-7).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceUsage {
    /// CPU time (user + system) in microseconds.
    pub cpu_usec: Option<u64>,
    /// Time the job was throttled by its CPU limit, in microseconds.
    pub cpu_throttled_usec: Option<u64>,
    /// Peak memory use in bytes.
    pub memory_peak_bytes: Option<u64>,
    /// Bytes read from block devices.
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices.
    pub io_write_bytes: Option<u64>,
}

/// Everything the server reports about a job (spec: QX-MSG-TYPE-8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job.
    pub id: JobId,
    /// Identity of the client that started it.
    pub owner: String,
    /// The job's argv.
    pub argv: Vec<Vec<u8>>,
    /// Lifecycle state.
    pub state: JobState,
    /// Host pid of the job's first process (its init when isolated); `None` if it
    /// never started.
    pub pid: Option<u32>,
    /// Start time, milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// End time, milliseconds since the Unix epoch; `None` while running.
    pub ended_at_ms: Option<u64>,
    /// Bytes the job wrote to stdout.
    pub stdout_bytes: u64,
    /// Bytes the job wrote to stderr.
    pub stderr_bytes: u64,
    /// True when the output cap was reached (the job was stopped, see
    /// [`StopReason::OutputLimit`]).
    pub output_truncated: bool,
    /// True when the kernel's OOM killer killed a process of the job.
    pub oom_killed: bool,
    /// Limits in force (after server defaults were applied).
    pub limits: Limits,
    /// Resource usage.
    pub usage: ResourceUsage,
}

impl JobStatus {
    /// Total combined output bytes.
    pub fn output_bytes(&self) -> u64 {
        self.stdout_bytes + self.stderr_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_slots_is_the_smaller_room() {
        // spec: QX-INFO-6
        let info = |running_jobs, max_jobs, caller_running_jobs, max_jobs_per_user| ServerInfo {
            server_version: String::new(),
            running_jobs,
            max_jobs,
            caller_running_jobs,
            max_jobs_per_user,
            cpus: 1,
        };
        assert_eq!(info(0, 8, 0, 4).free_slots(), 4);
        assert_eq!(info(6, 8, 0, 4).free_slots(), 2);
        assert_eq!(info(7, 8, 3, 4).free_slots(), 1);
        assert_eq!(info(8, 8, 0, 4).free_slots(), 0);
        assert_eq!(info(0, 8, 4, 4).free_slots(), 0);
        // Over a limit (the limit was lowered, or counts raced): no room, no underflow.
        assert_eq!(info(9, 8, 0, 4).free_slots(), 0);
        assert_eq!(info(0, 8, 5, 4).free_slots(), 0);
    }

    #[test]
    fn state_filters_select_as_specified() {
        // spec: QX-MSG-TYPE-9
        let exited = JobState::Exited {
            termination: Termination::Exited(0),
        };
        let stopped = JobState::Stopped {
            reason: StopReason::Timeout,
            termination: Termination::Signaled(9),
        };
        let failed = JobState::FailedToStart {
            failure: SpawnFailure::NotFound,
            message: String::new(),
        };
        let states = [JobState::Running, exited, stopped, failed];
        let selected = |f: ListStateFilter| states.iter().map(|s| f.selects(s)).collect::<Vec<_>>();
        assert_eq!(selected(ListStateFilter::Any), [true, true, true, true]);
        assert_eq!(
            selected(ListStateFilter::Running),
            [true, false, false, false]
        );
        assert_eq!(selected(ListStateFilter::Ended), [false, true, true, false]);
        assert_eq!(
            selected(ListStateFilter::FailedToStart),
            [false, false, false, true]
        );
    }
}
