//! Validation of request contents against the protocol limits (spec: QX-LIMIT-*).
//!
//! A server runs these on every request before acting on it; a failure is answered
//! with an `Error` response whose code is `InvalidArgument` (spec: QX-ERR-5). Clients
//! may run them too, to fail early with the same message.

use std::fmt;

use crate::limits::{
    MAX_ARGV, MAX_COMMAND_BYTES, MAX_ENV, MAX_GRACE_MS, MAX_ID_PREFIX, MAX_LIST_LIMIT,
    MAX_OWNER_BYTES, MAX_SIGNAL, MAX_TERM_NAME, MAX_TERMINAL_CELLS, MAX_TIMEOUT_MS, MIN_ARGV,
    MIN_ID_PREFIX, MIN_MEMORY_BYTES, MIN_SIGNAL,
};
use crate::{
    ClientMessage, ErrorCode, ErrorResponse, Limits, ListQuery, SignalRequest, StartRequest,
    StartTerminalRequest, StopRequest, WindowSize,
};

/// Which part of a request broke a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Field {
    /// `argv` as a whole.
    Argv,
    /// One `argv` entry.
    ArgvEntry {
        /// Its index.
        index: usize,
    },
    /// `env` as a whole.
    Env,
    /// The name of one `env` entry.
    EnvName {
        /// Its index.
        index: usize,
    },
    /// The value of one `env` entry.
    EnvValue {
        /// Its index.
        index: usize,
    },
    /// `cwd`.
    Cwd,
    /// `argv`, `env` and `cwd` together.
    Command,
    /// `timeout_ms`.
    TimeoutMs,
    /// One of the resource limits; the name is the field of [`Limits`].
    Limit {
        /// Field name, e.g. `memory_bytes`.
        name: &'static str,
    },
    /// `grace_ms` of a stop.
    GraceMs,
    /// `signal` of a signal request.
    Signal,
    /// `limit` of a list query.
    ListLimit,
    /// `id_prefix` of a list query.
    IdPrefix,
    /// `owner` of a list query.
    Owner,
    /// `terminal.term` of a terminal start.
    Term,
    /// The `rows` of a terminal's window size.
    Rows,
    /// The `cols` of a terminal's window size.
    Cols,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Argv => f.write_str("argv"),
            Self::ArgvEntry { index } => write!(f, "argv[{index}]"),
            Self::Env => f.write_str("env"),
            Self::EnvName { index } => write!(f, "name of env[{index}]"),
            Self::EnvValue { index } => write!(f, "value of env[{index}]"),
            Self::Cwd => f.write_str("cwd"),
            Self::Command => f.write_str("argv, env and cwd together"),
            Self::TimeoutMs => f.write_str("timeout_ms"),
            Self::Limit { name } => write!(f, "limits.{name}"),
            Self::GraceMs => f.write_str("grace_ms"),
            Self::Signal => f.write_str("signal"),
            Self::ListLimit => f.write_str("limit"),
            Self::IdPrefix => f.write_str("id_prefix"),
            Self::Owner => f.write_str("owner"),
            Self::Term => f.write_str("terminal.term"),
            Self::Rows => f.write_str("window rows"),
            Self::Cols => f.write_str("window cols"),
        }
    }
}

/// The rule a field broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rule {
    /// Wrong number of entries.
    Count {
        /// Entries given.
        actual: usize,
        /// Fewest allowed.
        min: usize,
        /// Most allowed.
        max: usize,
    },
    /// Must be non-empty.
    Empty,
    /// Contains a NUL byte.
    ContainsNul,
    /// An environment name contains `=`.
    ContainsEquals,
    /// A path is not absolute.
    NotAbsolute,
    /// Too many bytes.
    TooManyBytes {
        /// Bytes given.
        actual: usize,
        /// Most allowed.
        max: usize,
    },
    /// Not only hexadecimal digits.
    NotHex,
    /// Too few or too many characters.
    Length {
        /// Characters given.
        actual: usize,
        /// Fewest allowed.
        min: usize,
        /// Most allowed.
        max: usize,
    },
    /// A number outside its range.
    OutOfRange {
        /// Value given.
        actual: i128,
        /// Smallest allowed.
        min: i128,
        /// Largest allowed.
        max: i128,
    },
    /// A byte outside the allowed characters.
    BadCharacter {
        /// Index of the first such byte.
        index: usize,
        /// The characters allowed, for the message.
        allowed: &'static str,
    },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Count { actual, min, max } => {
                write!(f, "has {actual} entries, allowed are {min} to {max}")
            }
            Self::Empty => f.write_str("is empty"),
            Self::ContainsNul => f.write_str("contains a NUL byte"),
            Self::ContainsEquals => f.write_str("contains '='"),
            Self::NotAbsolute => f.write_str("is not an absolute path (must start with '/')"),
            Self::TooManyBytes { actual, max } => {
                write!(f, "has {actual} bytes, at most {max} are allowed")
            }
            Self::NotHex => f.write_str("is not only hexadecimal digits (0-9, a-f)"),
            Self::Length { actual, min, max } => {
                write!(f, "has {actual} characters, allowed are {min} to {max}")
            }
            Self::OutOfRange { actual, min, max } => {
                write!(f, "is {actual}, allowed are {min} to {max}")
            }
            Self::BadCharacter { index, allowed } => {
                write!(
                    f,
                    "has a byte at index {index} that is not one of {allowed}"
                )
            }
        }
    }
}

/// A request that breaks a protocol limit: which field, which rule, and the spec
/// requirement. Answered with [`ErrorCode::InvalidArgument`] (spec: QX-ERR-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid request: {field} {rule} (spec {requirement}); correct it and retry")]
pub struct InvalidRequest {
    /// The offending field.
    pub field: Field,
    /// The rule it breaks.
    pub rule: Rule,
    /// Id of the requirement in spec/protocol.md, e.g. `QX-LIMIT-2`.
    pub requirement: &'static str,
}

impl InvalidRequest {
    /// The error code of the response: always [`ErrorCode::InvalidArgument`].
    pub fn code(&self) -> ErrorCode {
        ErrorCode::InvalidArgument
    }

    /// The `Error` response a server sends for this failure.
    pub fn to_response(&self) -> ErrorResponse {
        ErrorResponse {
            code: self.code(),
            message: self.to_string(),
            spawn: None,
        }
    }
}

fn invalid(field: Field, rule: Rule, requirement: &'static str) -> InvalidRequest {
    InvalidRequest {
        field,
        rule,
        requirement,
    }
}

fn check_range(
    field: Field,
    actual: i128,
    min: i128,
    max: i128,
    requirement: &'static str,
) -> Result<(), InvalidRequest> {
    if (min..=max).contains(&actual) {
        Ok(())
    } else {
        Err(invalid(
            field,
            Rule::OutOfRange { actual, min, max },
            requirement,
        ))
    }
}

fn check_no_nul(
    field: Field,
    bytes: &[u8],
    requirement: &'static str,
) -> Result<(), InvalidRequest> {
    if bytes.contains(&0) {
        Err(invalid(field, Rule::ContainsNul, requirement))
    } else {
        Ok(())
    }
}

/// Checks a `Start` request against the protocol limits (spec: QX-LIMIT-2 to
/// QX-LIMIT-5, QX-LIMIT-7, QX-LIMIT-13). Reports the first broken rule, checking
/// argv, env, cwd, total size, timeout and limits in that order.
pub fn validate_start(req: &StartRequest) -> Result<(), InvalidRequest> {
    // spec: QX-LIMIT-2
    let n = req.argv.len();
    if !(MIN_ARGV..=MAX_ARGV).contains(&n) {
        return Err(invalid(
            Field::Argv,
            Rule::Count {
                actual: n,
                min: MIN_ARGV,
                max: MAX_ARGV,
            },
            "QX-LIMIT-2",
        ));
    }
    if req.argv[0].is_empty() {
        return Err(invalid(
            Field::ArgvEntry { index: 0 },
            Rule::Empty,
            "QX-LIMIT-2",
        ));
    }
    for (index, arg) in req.argv.iter().enumerate() {
        check_no_nul(Field::ArgvEntry { index }, arg, "QX-LIMIT-2")?;
    }

    // spec: QX-LIMIT-3
    let n = req.env.len();
    if n > MAX_ENV {
        return Err(invalid(
            Field::Env,
            Rule::Count {
                actual: n,
                min: 0,
                max: MAX_ENV,
            },
            "QX-LIMIT-3",
        ));
    }
    for (index, (name, value)) in req.env.iter().enumerate() {
        if name.is_empty() {
            return Err(invalid(Field::EnvName { index }, Rule::Empty, "QX-LIMIT-3"));
        }
        check_no_nul(Field::EnvName { index }, name, "QX-LIMIT-3")?;
        if name.contains(&b'=') {
            return Err(invalid(
                Field::EnvName { index },
                Rule::ContainsEquals,
                "QX-LIMIT-3",
            ));
        }
        check_no_nul(Field::EnvValue { index }, value, "QX-LIMIT-3")?;
    }

    // spec: QX-LIMIT-5
    if let Some(cwd) = &req.cwd {
        check_no_nul(Field::Cwd, cwd, "QX-LIMIT-5")?;
        if cwd.first() != Some(&b'/') {
            return Err(invalid(Field::Cwd, Rule::NotAbsolute, "QX-LIMIT-5"));
        }
    }

    // spec: QX-LIMIT-4
    let total = command_bytes(req);
    if total > MAX_COMMAND_BYTES {
        return Err(invalid(
            Field::Command,
            Rule::TooManyBytes {
                actual: total,
                max: MAX_COMMAND_BYTES,
            },
            "QX-LIMIT-4",
        ));
    }

    // spec: QX-LIMIT-7
    if let Some(t) = req.timeout_ms {
        check_range(
            Field::TimeoutMs,
            t.into(),
            1,
            MAX_TIMEOUT_MS.into(),
            "QX-LIMIT-7",
        )?;
    }

    validate_limits(&req.limits)
}

/// The size that [`MAX_COMMAND_BYTES`] bounds: the lengths of every argv entry,
/// every env name and value, and cwd, added up (spec: QX-LIMIT-4).
pub fn command_bytes(req: &StartRequest) -> usize {
    let argv: usize = req.argv.iter().map(Vec::len).sum();
    let env: usize = req.env.iter().map(|(n, v)| n.len() + v.len()).sum();
    argv + env + req.cwd.as_ref().map_or(0, Vec::len)
}

/// Checks that every limit present is at least 1: 0 would make the job unable to run
/// (or, for some cgroup v1 files, mean "unlimited"), so it is refused rather than
/// guessed at (spec: QX-LIMIT-13); a memory limit is at least [`MIN_MEMORY_BYTES`],
/// below which no program can start (spec: QX-LIMIT-17). Upper bounds are the
/// server's own.
pub fn validate_limits(limits: &Limits) -> Result<(), InvalidRequest> {
    let Limits {
        cpu_millis,
        memory_bytes,
        io_read_bps,
        io_write_bps,
        io_read_iops,
        io_write_iops,
        pids,
    } = limits;
    let fields: [(&'static str, Option<u64>); 7] = [
        ("cpu_millis", cpu_millis.map(u64::from)),
        ("memory_bytes", *memory_bytes),
        ("io_read_bps", *io_read_bps),
        ("io_write_bps", *io_write_bps),
        ("io_read_iops", *io_read_iops),
        ("io_write_iops", *io_write_iops),
        ("pids", pids.map(u64::from)),
    ];
    for (name, value) in fields {
        if value == Some(0) {
            let max = if matches!(name, "cpu_millis" | "pids") {
                u32::MAX.into()
            } else {
                u64::MAX.into()
            };
            return Err(invalid(
                Field::Limit { name },
                Rule::OutOfRange {
                    actual: 0,
                    min: 1,
                    max,
                },
                "QX-LIMIT-13",
            ));
        }
    }
    // spec: QX-LIMIT-17
    if let Some(m) = memory_bytes {
        check_range(
            Field::Limit {
                name: "memory_bytes",
            },
            (*m).into(),
            MIN_MEMORY_BYTES.into(),
            u64::MAX.into(),
            "QX-LIMIT-17",
        )?;
    }
    Ok(())
}

/// Checks a `Stop` request: the grace period is at most [`MAX_GRACE_MS`]
/// (spec: QX-LIMIT-8).
pub fn validate_stop(req: &StopRequest) -> Result<(), InvalidRequest> {
    if let Some(g) = req.grace_ms {
        check_range(
            Field::GraceMs,
            g.into(),
            0,
            MAX_GRACE_MS.into(),
            "QX-LIMIT-8",
        )?;
    }
    Ok(())
}

/// Checks a `Signal` request: the signal is in `1..=64` (spec: QX-LIMIT-6).
pub fn validate_signal(req: &SignalRequest) -> Result<(), InvalidRequest> {
    check_range(
        Field::Signal,
        req.signal.into(),
        MIN_SIGNAL.into(),
        MAX_SIGNAL.into(),
        "QX-LIMIT-6",
    )
}

/// Checks a `ListQuery`: `limit` is 1 to [`MAX_LIST_LIMIT`] (spec: QX-LIMIT-14),
/// `id_prefix` is [`MIN_ID_PREFIX`] to [`MAX_ID_PREFIX`] hexadecimal digits
/// (spec: QX-LIMIT-15), `owner` is 1 to [`MAX_OWNER_BYTES`] bytes (spec: QX-LIMIT-16);
/// checked in that order.
pub fn validate_list_query(req: &ListQuery) -> Result<(), InvalidRequest> {
    check_range(
        Field::ListLimit,
        req.limit.into(),
        1,
        MAX_LIST_LIMIT.into(),
        "QX-LIMIT-14",
    )?;
    if let Some(prefix) = &req.id_prefix {
        let n = prefix.chars().count();
        if !(MIN_ID_PREFIX..=MAX_ID_PREFIX).contains(&n) {
            return Err(invalid(
                Field::IdPrefix,
                Rule::Length {
                    actual: n,
                    min: MIN_ID_PREFIX,
                    max: MAX_ID_PREFIX,
                },
                "QX-LIMIT-15",
            ));
        }
        if !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(Field::IdPrefix, Rule::NotHex, "QX-LIMIT-15"));
        }
    }
    if let Some(owner) = &req.owner {
        if owner.is_empty() {
            return Err(invalid(Field::Owner, Rule::Empty, "QX-LIMIT-16"));
        }
        if owner.len() > MAX_OWNER_BYTES {
            return Err(invalid(
                Field::Owner,
                Rule::TooManyBytes {
                    actual: owner.len(),
                    max: MAX_OWNER_BYTES,
                },
                "QX-LIMIT-16",
            ));
        }
    }
    Ok(())
}

/// Checks a terminal's window size: rows and columns in
/// `1..=`[`MAX_TERMINAL_CELLS`]; pixel sizes are free (0: unknown) (spec: QX-TERM-4).
pub fn validate_window_size(size: &WindowSize) -> Result<(), InvalidRequest> {
    let max = MAX_TERMINAL_CELLS.into();
    check_range(Field::Rows, size.rows.into(), 1, max, "QX-TERM-4")?;
    check_range(Field::Cols, size.cols.into(), 1, max, "QX-TERM-4")
}

/// Checks a `StartTerminal` request: the start as [`validate_start`], then the terminal
/// type (1 to [`MAX_TERM_NAME`] bytes of `A-Z a-z 0-9 . _ + -`) and the window size
/// (spec: QX-TERM-4).
pub fn validate_terminal(req: &StartTerminalRequest) -> Result<(), InvalidRequest> {
    validate_start(&req.start)?;
    let term = req.terminal.term.as_bytes();
    if term.is_empty() {
        return Err(invalid(Field::Term, Rule::Empty, "QX-TERM-4"));
    }
    if term.len() > MAX_TERM_NAME {
        return Err(invalid(
            Field::Term,
            Rule::TooManyBytes {
                actual: term.len(),
                max: MAX_TERM_NAME,
            },
            "QX-TERM-4",
        ));
    }
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-');
    if let Some(index) = term.iter().position(|b| !allowed(b)) {
        return Err(invalid(
            Field::Term,
            Rule::BadCharacter {
                index,
                allowed: "A-Z a-z 0-9 . _ + -",
            },
            "QX-TERM-4",
        ));
    }
    validate_window_size(&req.terminal.size)
}

/// Checks the contents of any request frame. `Status`, `List`, `Attach` and `Info`
/// have no field a limit applies to; `StdinData`/`StdinEof` are not requests and are checked
/// by [`ControlStreamState`](crate::ControlStreamState) instead.
pub fn validate_request(msg: &ClientMessage) -> Result<(), InvalidRequest> {
    match msg {
        ClientMessage::Start(r) => validate_start(r),
        ClientMessage::Stop(r) => validate_stop(r),
        ClientMessage::Signal(r) => validate_signal(r),
        ClientMessage::ListQuery(r) => validate_list_query(r),
        ClientMessage::StartTerminal(r) => validate_terminal(r),
        // Not a request; its size is checked when it arrives (spec: QX-TERM-4).
        ClientMessage::Resize(s) => validate_window_size(s),
        ClientMessage::Status(_)
        | ClientMessage::List(_)
        | ClientMessage::Attach(_)
        | ClientMessage::Info
        | ClientMessage::StdinData(_)
        | ClientMessage::StdinEof => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JobId;

    fn start(argv: &[&[u8]]) -> StartRequest {
        StartRequest {
            argv: argv.iter().map(|a| a.to_vec()).collect(),
            env: vec![(b"PATH".to_vec(), b"/usr/bin:/bin".to_vec())],
            cwd: Some(b"/tmp".to_vec()),
            limits: Limits::default(),
            timeout_ms: Some(1000),
            stdin: false,
            follow: true,
            stop_on_detach: false,
        }
    }

    fn rule_of(r: Result<(), InvalidRequest>) -> (Field, Rule, &'static str) {
        let e = r.unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArgument);
        assert_eq!(e.to_response().code, ErrorCode::InvalidArgument);
        (e.field, e.rule, e.requirement)
    }

    #[test]
    fn list_queries_are_checked_in_order() {
        let ok = ListQuery::all(1);
        validate_list_query(&ok).unwrap();
        validate_list_query(&ListQuery::all(MAX_LIST_LIMIT)).unwrap();
        assert_eq!(
            rule_of(validate_list_query(&ListQuery::all(0))),
            (
                Field::ListLimit,
                Rule::OutOfRange {
                    actual: 0,
                    min: 1,
                    max: 1000
                },
                "QX-LIMIT-14"
            )
        );
        assert_eq!(
            rule_of(validate_list_query(&ListQuery::all(MAX_LIST_LIMIT + 1))).0,
            Field::ListLimit
        );
        let with_prefix = |p: &str| ListQuery {
            id_prefix: Some(p.to_owned()),
            ..ListQuery::all(10)
        };
        validate_list_query(&with_prefix("abcd")).unwrap();
        validate_list_query(&with_prefix("ABCD0123")).unwrap();
        validate_list_query(&with_prefix(&"f".repeat(32))).unwrap();
        assert_eq!(
            rule_of(validate_list_query(&with_prefix("abc"))),
            (
                Field::IdPrefix,
                Rule::Length {
                    actual: 3,
                    min: 4,
                    max: 32
                },
                "QX-LIMIT-15"
            )
        );
        assert_eq!(
            rule_of(validate_list_query(&with_prefix(&"0".repeat(33)))).1,
            Rule::Length {
                actual: 33,
                min: 4,
                max: 32
            }
        );
        assert_eq!(
            rule_of(validate_list_query(&with_prefix("abcg"))).1,
            Rule::NotHex
        );
        // Four characters but not four ASCII bytes: still not hex.
        assert_eq!(
            rule_of(validate_list_query(&with_prefix("abcé"))).1,
            Rule::NotHex
        );
        let with_owner = |o: String| ListQuery {
            owner: Some(o),
            ..ListQuery::all(10)
        };
        validate_list_query(&with_owner("a".repeat(MAX_OWNER_BYTES))).unwrap();
        assert_eq!(
            rule_of(validate_list_query(&with_owner(String::new()))),
            (Field::Owner, Rule::Empty, "QX-LIMIT-16")
        );
        assert_eq!(
            rule_of(validate_list_query(&with_owner(
                "a".repeat(MAX_OWNER_BYTES + 1)
            )))
            .1,
            Rule::TooManyBytes {
                actual: MAX_OWNER_BYTES + 1,
                max: MAX_OWNER_BYTES
            }
        );
        // The limit is checked first.
        let mut all_bad = with_prefix("x");
        all_bad.limit = 0;
        all_bad.owner = Some(String::new());
        assert_eq!(rule_of(validate_list_query(&all_bad)).0, Field::ListLimit);
        assert_eq!(
            rule_of(validate_request(&ClientMessage::ListQuery(with_prefix(
                "zz"
            ))))
            .0,
            Field::IdPrefix
        );
    }

    #[test]
    fn a_plain_request_is_valid() {
        validate_start(&start(&[b"/bin/echo", b"hi"])).unwrap();
        let mut r = start(&[b"true"]);
        r.cwd = None;
        r.env.clear();
        r.timeout_ms = None;
        validate_start(&r).unwrap();
    }

    #[test]
    fn argv_rules() {
        // spec: QX-LIMIT-2
        assert_eq!(
            rule_of(validate_start(&start(&[]))),
            (
                Field::Argv,
                Rule::Count {
                    actual: 0,
                    min: 1,
                    max: 4096
                },
                "QX-LIMIT-2"
            )
        );
        let many: Vec<&[u8]> = vec![b"x"; MAX_ARGV];
        validate_start(&start(&many)).unwrap();
        let too_many: Vec<&[u8]> = vec![b"x"; MAX_ARGV + 1];
        assert_eq!(rule_of(validate_start(&start(&too_many))).0, Field::Argv);
        assert_eq!(
            rule_of(validate_start(&start(&[b"", b"x"]))),
            (Field::ArgvEntry { index: 0 }, Rule::Empty, "QX-LIMIT-2")
        );
        // Later entries may be empty strings.
        validate_start(&start(&[b"echo", b""])).unwrap();
        assert_eq!(
            rule_of(validate_start(&start(&[b"echo", b"a\0b"]))),
            (
                Field::ArgvEntry { index: 1 },
                Rule::ContainsNul,
                "QX-LIMIT-2"
            )
        );
    }

    #[test]
    fn env_rules() {
        // spec: QX-LIMIT-3
        let mut r = start(&[b"env"]);
        r.env = vec![(b"A".to_vec(), Vec::new()); MAX_ENV];
        validate_start(&r).unwrap();
        r.env.push((b"B".to_vec(), Vec::new()));
        assert_eq!(rule_of(validate_start(&r)).0, Field::Env);
        for (name, value, field, rule) in [
            (
                &b""[..],
                &b"v"[..],
                Field::EnvName { index: 0 },
                Rule::Empty,
            ),
            (
                b"A=B",
                b"v",
                Field::EnvName { index: 0 },
                Rule::ContainsEquals,
            ),
            (b"A\0", b"v", Field::EnvName { index: 0 }, Rule::ContainsNul),
            (
                b"A",
                b"v\0",
                Field::EnvValue { index: 0 },
                Rule::ContainsNul,
            ),
        ] {
            r.env = vec![(name.to_vec(), value.to_vec())];
            assert_eq!(rule_of(validate_start(&r)), (field, rule, "QX-LIMIT-3"));
        }
        // Values may contain '=' and be empty.
        r.env = vec![
            (b"A".to_vec(), b"x=y".to_vec()),
            (b"B".to_vec(), Vec::new()),
        ];
        validate_start(&r).unwrap();
    }

    #[test]
    fn cwd_rules() {
        // spec: QX-LIMIT-5
        let mut r = start(&[b"pwd"]);
        for (cwd, rule) in [
            (&b"tmp"[..], Rule::NotAbsolute),
            (b"", Rule::NotAbsolute),
            (b"/t\0mp", Rule::ContainsNul),
        ] {
            r.cwd = Some(cwd.to_vec());
            assert_eq!(
                rule_of(validate_start(&r)),
                (Field::Cwd, rule, "QX-LIMIT-5")
            );
        }
    }

    #[test]
    fn total_size_rule() {
        // spec: QX-LIMIT-4
        let mut r = start(&[b"x"]);
        r.env.clear();
        r.cwd = Some(b"/".to_vec());
        let room = MAX_COMMAND_BYTES - 2;
        r.argv.push(vec![b'a'; room]);
        assert_eq!(command_bytes(&r), MAX_COMMAND_BYTES);
        validate_start(&r).unwrap();
        r.env.push((b"B".to_vec(), Vec::new()));
        assert_eq!(
            rule_of(validate_start(&r)),
            (
                Field::Command,
                Rule::TooManyBytes {
                    actual: MAX_COMMAND_BYTES + 1,
                    max: MAX_COMMAND_BYTES
                },
                "QX-LIMIT-4"
            )
        );
    }

    #[test]
    fn timeout_and_limits_rules() {
        // spec: QX-LIMIT-7, QX-LIMIT-13
        let mut r = start(&[b"sleep", b"1"]);
        r.timeout_ms = Some(MAX_TIMEOUT_MS);
        validate_start(&r).unwrap();
        for bad in [0, MAX_TIMEOUT_MS + 1, u64::MAX] {
            r.timeout_ms = Some(bad);
            let (field, _, req) = rule_of(validate_start(&r));
            assert_eq!((field, req), (Field::TimeoutMs, "QX-LIMIT-7"));
        }
        r.timeout_ms = None;
        r.limits.memory_bytes = Some(MIN_MEMORY_BYTES);
        r.limits.pids = Some(u32::MAX);
        validate_start(&r).unwrap();
        r.limits.pids = Some(0);
        let (field, _, req) = rule_of(validate_start(&r));
        assert_eq!((field, req), (Field::Limit { name: "pids" }, "QX-LIMIT-13"));
    }

    #[test]
    fn memory_below_the_minimum_is_refused() {
        // spec: QX-LIMIT-17 — the boundary itself is allowed, one byte less is not.
        let mut r = start(&[b"echo", b"hello"]);
        r.limits.memory_bytes = Some(MIN_MEMORY_BYTES);
        validate_start(&r).unwrap();
        for bad in [MIN_MEMORY_BYTES - 1, 4096, 1] {
            r.limits.memory_bytes = Some(bad);
            let (field, rule, req) = rule_of(validate_start(&r));
            assert_eq!(
                (field, req),
                (
                    Field::Limit {
                        name: "memory_bytes"
                    },
                    "QX-LIMIT-17"
                )
            );
            assert_eq!(
                rule,
                Rule::OutOfRange {
                    actual: bad.into(),
                    min: MIN_MEMORY_BYTES.into(),
                    max: u64::MAX.into()
                }
            );
        }
        // 0 stays the QX-LIMIT-13 refusal.
        r.limits.memory_bytes = Some(0);
        let (_, _, req) = rule_of(validate_start(&r));
        assert_eq!(req, "QX-LIMIT-13");
    }

    #[test]
    fn terminal_rules() {
        // spec: QX-TERM-4
        let req = |term: &str, rows: u16, cols: u16| StartTerminalRequest {
            start: start(&[b"sh"]),
            terminal: crate::TerminalSpec {
                term: term.into(),
                size: WindowSize {
                    rows,
                    cols,
                    width_px: 0,
                    height_px: 0,
                },
            },
        };
        let max = MAX_TERMINAL_CELLS;
        assert_eq!(validate_terminal(&req("xterm-256color", 24, 80)), Ok(()));
        assert_eq!(validate_terminal(&req("screen.xterm+a_b", 1, max)), Ok(()));
        let long = "x".repeat(MAX_TERM_NAME);
        assert_eq!(validate_terminal(&req(&long, max, 1)), Ok(()));
        let longer = "x".repeat(MAX_TERM_NAME + 1);
        let cases = [
            (req("", 24, 80), Field::Term, Rule::Empty),
            (
                req(&longer, 24, 80),
                Field::Term,
                Rule::TooManyBytes {
                    actual: MAX_TERM_NAME + 1,
                    max: MAX_TERM_NAME,
                },
            ),
            (
                req("xterm\n", 24, 80),
                Field::Term,
                Rule::BadCharacter {
                    index: 5,
                    allowed: "A-Z a-z 0-9 . _ + -",
                },
            ),
            (
                req("a b", 24, 80),
                Field::Term,
                Rule::BadCharacter {
                    index: 1,
                    allowed: "A-Z a-z 0-9 . _ + -",
                },
            ),
        ];
        for (r, field, rule) in cases {
            assert_eq!(rule_of(validate_terminal(&r)), (field, rule, "QX-TERM-4"));
        }
        let range = |actual: u16| Rule::OutOfRange {
            actual: actual.into(),
            min: 1,
            max: max.into(),
        };
        for (rows, cols, field, bad) in [
            (0, 80, Field::Rows, 0),
            (max + 1, 80, Field::Rows, max + 1),
            (24, 0, Field::Cols, 0),
            (24, max + 1, Field::Cols, max + 1),
        ] {
            let r = req("xterm", rows, cols);
            assert_eq!(
                rule_of(validate_terminal(&r)),
                (field, range(bad), "QX-TERM-4")
            );
            let msg = ClientMessage::Resize(r.terminal.size);
            assert_eq!(
                rule_of(validate_request(&msg)),
                (field, range(bad), "QX-TERM-4")
            );
        }
        // The start inside is checked first.
        let mut bad_start = req("", 0, 0);
        bad_start.start.argv.clear();
        assert_eq!(rule_of(validate_terminal(&bad_start)).0, Field::Argv);
        let msg = ClientMessage::StartTerminal(req("xterm", 24, 80));
        assert_eq!(validate_request(&msg), Ok(()));
    }

    #[test]
    fn stop_and_signal_rules() {
        // spec: QX-LIMIT-6, QX-LIMIT-8
        let job = JobId::from_u128(1);
        for (signal, ok) in [
            (0, false),
            (1, true),
            (9, true),
            (64, true),
            (65, false),
            (-9, false),
        ] {
            let r = validate_request(&ClientMessage::Signal(SignalRequest { job, signal }));
            assert_eq!(r.is_ok(), ok, "{signal}");
        }
        for (grace_ms, ok) in [
            (None, true),
            (Some(0), true),
            (Some(MAX_GRACE_MS), true),
            (Some(MAX_GRACE_MS + 1), false),
        ] {
            let r = validate_request(&ClientMessage::Stop(StopRequest { job, grace_ms }));
            assert_eq!(r.is_ok(), ok, "{grace_ms:?}");
        }
    }

    #[test]
    fn message_says_what_and_where() {
        let e = validate_start(&start(&[b"echo", b"a\0"])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid request: argv[1] contains a NUL byte (spec QX-LIMIT-2); correct it and retry"
        );
    }
}
