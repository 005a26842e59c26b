//! Protocol limits (spec: QX-LIMIT-*).
//!
//! These are properties of the protocol, the same for every server. A server may
//! enforce tighter limits of its own (maximum memory, jobs per user…); those answer
//! `InvalidArgument` or `ResourceExhausted` as the spec says.

use std::time::Duration;

/// Largest frame body (spec: QX-LIMIT-1, QX-FRAME-2).
pub use crate::frame::MAX_FRAME_LEN;

/// Fewest entries in a job's argv (spec: QX-LIMIT-2).
pub const MIN_ARGV: usize = 1;

/// Most entries in a job's argv (spec: QX-LIMIT-2).
pub const MAX_ARGV: usize = 4096;

/// Most entries in a job's environment (spec: QX-LIMIT-3).
pub const MAX_ENV: usize = 4096;

/// Most bytes of argv entries, environment names and values, and cwd together
/// (spec: QX-LIMIT-4).
pub const MAX_COMMAND_BYTES: usize = 512 * 1024;

/// Lowest signal number a client may send (spec: QX-LIMIT-6).
pub const MIN_SIGNAL: i32 = 1;

/// Highest signal number a client may send: Linux's `SIGRTMAX` (spec: QX-LIMIT-6).
pub const MAX_SIGNAL: i32 = 64;

/// Longest wall-clock timeout a job may ask for: 30 days, in milliseconds
/// (spec: QX-LIMIT-7).
pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// Longest grace period between SIGTERM and SIGKILL a stop may ask for: 30 days, in
/// milliseconds (spec: QX-LIMIT-8).
pub const MAX_GRACE_MS: u64 = MAX_TIMEOUT_MS;

/// Grace period between SIGTERM and SIGKILL when a stop gives none: a `Stop` without
/// `grace_ms`, a job past its `timeout_ms`, over the output cap, detached
/// (`stop_on_detach`) or stopped by a server shutdown (spec: QX-LIMIT-18).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Smallest memory limit a job may ask for: 4 MiB (spec: QX-LIMIT-17).
///
/// Below it a job cannot start: measured on cgroup v1 (Linux 6.x, an isolated job's
/// init plus `echo`), 1152 KiB always ended in the OOM killer, 1280 KiB sometimes,
/// 4096 bytes killed the init's dynamic loader before anything ran (a bare exit 127).
/// cgroup v2 also charges kernel memory to the job, so the floor keeps about three
/// times the measured need. One constant, used by the server's validation and the CLI.
pub const MIN_MEMORY_BYTES: u64 = 4 * 1024 * 1024;

/// Time a server allows from a control stream's opening until its request frame is
/// complete; after it the server closes the stream with `Timeout`
/// (spec: QX-LIMIT-9).
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Most payload bytes in one `StdinData` frame (spec: QX-LIMIT-10).
pub const MAX_STDIN_CHUNK: usize = 64 * 1024;

/// Most payload bytes in one output `Data` frame (spec: QX-LIMIT-11).
pub const MAX_OUTPUT_CHUNK: usize = 64 * 1024;

/// Concurrent client-opened bidirectional streams a server allows per connection by
/// default, advertised as the QUIC `initial_max_streams_bidi` (spec: QX-LIMIT-12).
pub const DEFAULT_MAX_CONCURRENT_BIDI_STREAMS: u32 = 256;

/// Client-opened unidirectional streams a server allows: none, clients never open
/// them (spec: QX-STREAM-3).
pub const MAX_CLIENT_UNI_STREAMS: u32 = 0;

/// Most entries a `ListQuery` page may ask for (spec: QX-LIMIT-14).
pub const MAX_LIST_LIMIT: u32 = 1000;

/// Fewest hexadecimal digits in a `ListQuery` id prefix (spec: QX-LIMIT-15).
pub const MIN_ID_PREFIX: usize = 4;

/// Most hexadecimal digits in a `ListQuery` id prefix: a whole id (spec: QX-LIMIT-15).
pub const MAX_ID_PREFIX: usize = 32;

/// Most bytes in a `ListQuery` owner filter (spec: QX-LIMIT-16).
pub const MAX_OWNER_BYTES: usize = 256;

/// Largest number of rows or columns of a job's terminal (spec: QX-TERM-4).
pub const MAX_TERMINAL_CELLS: u16 = 4096;

/// Longest terminal type name, `TerminalSpec::term` (spec: QX-TERM-4).
pub const MAX_TERM_NAME: usize = 64;
