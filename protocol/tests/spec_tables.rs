//! spec/protocol.md's tables are the definition of the messages (spec: QX-MSG-ENC-2):
//! every enum table lists exactly the variants this crate decodes, in index order, and
//! every variant this crate encodes sits at the index its table gives. Also the varint
//! widths of QX-MSG-ENC-5 and the open `ErrorCode` set of QX-ERR-2 / QX-VER-3.
//!
//! A new variant needs a row in its table (the count check fails otherwise) and, here,
//! a sample in `samples()` so its index is checked too.

use qexec_protocol::frame::{decode_body, encode};
use qexec_protocol::{
    AttachRequest, ClientMessage, ErrorCode, ErrorResponse, FrameError, JobId, JobState, JobStatus,
    Limits, ListRequest, OutputFrame, OutputStream, ResourceUsage, ServerInfo, ServerMessage,
    SignalRequest, SpawnFailure, StartRequest, StartTerminalRequest, StartedResponse,
    StatusRequest, StopReason, StopRequest, TerminalSpec, Termination, WindowSize,
};
use serde::de::DeserializeOwned;

const SPEC: &str = include_str!("../../spec/protocol.md");

/// The rows `(index, name)` of the first table after `anchor` whose header starts with
/// `header`.
fn table(anchor: &str, header: &str) -> Vec<(u32, String)> {
    let at = SPEC
        .find(anchor)
        .unwrap_or_else(|| panic!("spec/protocol.md has no {anchor:?}"));
    let mut lines = SPEC[at..].lines().skip_while(|l| !l.starts_with(header));
    assert!(
        lines.next().is_some(),
        "no table {header:?} after {anchor:?}"
    );
    lines
        .skip(1) // the |---| line
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let index = cells[1]
                .parse()
                .unwrap_or_else(|_| panic!("bad index in {row:?}"));
            (index, cells[2].trim_matches('`').to_owned())
        })
        .collect()
}

/// The frame body of `value`'s encoding.
fn body<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let frame = encode(value).unwrap();
    let prefix = frame.iter().position(|b| b & 0x80 == 0).unwrap() + 1;
    frame[prefix..].to_vec()
}

/// A varint at the start of `bytes`.
fn leading_varint(bytes: &[u8]) -> u32 {
    let mut v = 0u32;
    for (i, b) in bytes.iter().enumerate() {
        v |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return v;
        }
    }
    panic!("no varint in {bytes:?}")
}

/// The minimal varint encoding of `v`.
fn varint(mut v: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return out;
        }
        out.push(b | 0x80);
    }
}

/// How many variants the decoder of `T` knows: the first index it calls unknown.
fn known_variants<T: DeserializeOwned>() -> u32 {
    (0..1000)
        .find(|&n| {
            matches!(
                decode_body::<T>(&varint(n)),
                Err(FrameError::UnknownVariant)
            )
        })
        .expect("fewer than 1000 variants")
}

fn status() -> JobStatus {
    JobStatus {
        id: JobId::from_u128(1),
        owner: "alice".into(),
        argv: vec![b"true".to_vec()],
        state: JobState::Running,
        pid: Some(2),
        started_at_ms: 3,
        ended_at_ms: None,
        stdout_bytes: 4,
        stderr_bytes: 5,
        output_truncated: false,
        oom_killed: false,
        limits: Limits::default(),
        usage: ResourceUsage::default(),
    }
}

/// A `ServerInfo` whose fields hold their own field numbers of the spec's table
/// (the version is the one-character string "1").
fn server_info() -> ServerInfo {
    ServerInfo {
        server_version: "1".into(),
        running_jobs: 2,
        max_jobs: 3,
        caller_running_jobs: 4,
        max_jobs_per_user: 5,
        cpus: 6,
    }
}

/// One value of every variant this crate has, by the name its table gives it.
fn samples() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let job = JobId::from_u128(7);
    let start = StartRequest {
        argv: vec![b"true".to_vec()],
        env: vec![],
        cwd: None,
        limits: Limits::default(),
        timeout_ms: None,
        stdin: false,
        follow: false,
        stop_on_detach: false,
    };
    let error = ErrorResponse {
        code: ErrorCode::NotFound,
        message: String::new(),
        spawn: None,
    };
    let term = Termination::Exited(0);
    let size = WindowSize {
        rows: 24,
        cols: 80,
        width_px: 0,
        height_px: 0,
    };
    let terminal = StartTerminalRequest {
        start: start.clone(),
        terminal: TerminalSpec {
            term: "xterm".into(),
            size,
        },
    };
    vec![
        (
            "ClientMessage",
            "StartTerminal",
            body(&ClientMessage::StartTerminal(terminal)),
        ),
        (
            "ClientMessage",
            "Resize",
            body(&ClientMessage::Resize(size)),
        ),
        ("ClientMessage", "Start", body(&ClientMessage::Start(start))),
        (
            "ClientMessage",
            "Stop",
            body(&ClientMessage::Stop(StopRequest {
                job,
                grace_ms: None,
            })),
        ),
        (
            "ClientMessage",
            "Status",
            body(&ClientMessage::Status(StatusRequest { job })),
        ),
        (
            "ClientMessage",
            "List",
            body(&ClientMessage::List(ListRequest::default())),
        ),
        (
            "ClientMessage",
            "Attach",
            body(&ClientMessage::Attach(AttachRequest { job, from: 0 })),
        ),
        (
            "ClientMessage",
            "Signal",
            body(&ClientMessage::Signal(SignalRequest { job, signal: 9 })),
        ),
        (
            "ClientMessage",
            "StdinData",
            body(&ClientMessage::StdinData(vec![1])),
        ),
        ("ClientMessage", "StdinEof", body(&ClientMessage::StdinEof)),
        ("ClientMessage", "Info", body(&ClientMessage::Info)),
        (
            "ServerMessage",
            "Info",
            body(&ServerMessage::Info(server_info())),
        ),
        (
            "ServerMessage",
            "Started",
            body(&ServerMessage::Started(StartedResponse { job, pid: 1 })),
        ),
        (
            "ServerMessage",
            "Status",
            body(&ServerMessage::Status(status())),
        ),
        (
            "ServerMessage",
            "ListItem",
            body(&ServerMessage::ListItem(status())),
        ),
        ("ServerMessage", "ListEnd", body(&ServerMessage::ListEnd)),
        (
            "ServerMessage",
            "Attached",
            body(&ServerMessage::Attached { job }),
        ),
        ("ServerMessage", "Error", body(&ServerMessage::Error(error))),
        (
            "OutputFrame",
            "Header",
            body(&OutputFrame::Header {
                request_stream: 0,
                job,
                from: 0,
            }),
        ),
        (
            "OutputFrame",
            "Data",
            body(&OutputFrame::Data {
                stream: OutputStream::Stdout,
                offset: 0,
                data: vec![],
            }),
        ),
        (
            "OutputFrame",
            "End",
            body(&OutputFrame::End { status: status() }),
        ),
        ("OutputStream", "Stdout", body(&OutputStream::Stdout)),
        ("OutputStream", "Stderr", body(&OutputStream::Stderr)),
        ("Termination", "Exited", body(&Termination::Exited(1))),
        ("Termination", "Signaled", body(&Termination::Signaled(9))),
        (
            "StopReason",
            "Requested",
            body(&StopReason::Requested { by: "a".into() }),
        ),
        ("StopReason", "Timeout", body(&StopReason::Timeout)),
        ("StopReason", "OutputLimit", body(&StopReason::OutputLimit)),
        ("StopReason", "Detached", body(&StopReason::Detached)),
        ("StopReason", "Shutdown", body(&StopReason::Shutdown)),
        ("SpawnFailure", "EmptyArgv", body(&SpawnFailure::EmptyArgv)),
        ("SpawnFailure", "NotFound", body(&SpawnFailure::NotFound)),
        (
            "SpawnFailure",
            "PermissionDenied",
            body(&SpawnFailure::PermissionDenied),
        ),
        (
            "SpawnFailure",
            "NotExecutable",
            body(&SpawnFailure::NotExecutable),
        ),
        ("SpawnFailure", "BadCwd", body(&SpawnFailure::BadCwd)),
        (
            "SpawnFailure",
            "TooManyJobs",
            body(&SpawnFailure::TooManyJobs),
        ),
        ("SpawnFailure", "Setup", body(&SpawnFailure::Setup)),
        ("SpawnFailure", "Other", body(&SpawnFailure::Other)),
        ("JobState", "Running", body(&JobState::Running)),
        (
            "JobState",
            "Exited",
            body(&JobState::Exited { termination: term }),
        ),
        (
            "JobState",
            "Stopped",
            body(&JobState::Stopped {
                reason: StopReason::Timeout,
                termination: term,
            }),
        ),
        (
            "JobState",
            "FailedToStart",
            body(&JobState::FailedToStart {
                failure: SpawnFailure::Other,
                message: String::new(),
            }),
        ),
    ]
}

/// Every enum table: its anchor in the spec and the number of variants the decoder
/// knows.
fn enums() -> Vec<(&'static str, &'static str, u32)> {
    vec![
        (
            "ClientMessage",
            "### 5.3 `ClientMessage`",
            known_variants::<ClientMessage>(),
        ),
        (
            "ServerMessage",
            "### 5.4 `ServerMessage`",
            known_variants::<ServerMessage>(),
        ),
        (
            "OutputFrame",
            "### 5.5 `OutputFrame`",
            known_variants::<OutputFrame>(),
        ),
        (
            "OutputStream",
            "**[QX-MSG-TYPE-2]** `OutputStream`",
            known_variants::<OutputStream>(),
        ),
        (
            "Termination",
            "**[QX-MSG-TYPE-3]** `Termination`",
            known_variants::<Termination>(),
        ),
        (
            "StopReason",
            "**[QX-MSG-TYPE-4]** `StopReason`",
            known_variants::<StopReason>(),
        ),
        (
            "SpawnFailure",
            "**[QX-MSG-TYPE-5]** `SpawnFailure`",
            known_variants::<SpawnFailure>(),
        ),
        (
            "JobState",
            "**[QX-MSG-TYPE-6]** `JobState`",
            known_variants::<JobState>(),
        ),
    ]
}

// spec: QX-MSG-ENC-2
#[test]
fn every_enum_table_lists_exactly_the_known_variants_in_index_order() {
    for (name, anchor, known) in enums() {
        let rows = table(anchor, "| index | variant |");
        let indexes: Vec<u32> = rows.iter().map(|(i, _)| *i).collect();
        assert_eq!(
            indexes,
            (0..known).collect::<Vec<_>>(),
            "the {name} table must list indexes 0..{known}, one row each"
        );
    }
}

// spec: QX-MSG-ENC-2
#[test]
fn every_variant_is_encoded_at_its_table_index() {
    let tables: Vec<(&str, Vec<(u32, String)>)> = enums()
        .into_iter()
        .map(|(name, anchor, _)| (name, table(anchor, "| index | variant |")))
        .collect();
    for (family, variant, bytes) in samples() {
        let rows = &tables.iter().find(|(n, _)| *n == family).unwrap().1;
        let (index, _) = rows
            .iter()
            .find(|(_, n)| n == variant)
            .unwrap_or_else(|| panic!("{family}::{variant} has no row in its table"));
        assert_eq!(
            leading_varint(&bytes),
            *index,
            "{family}::{variant} is encoded with another index than its table gives"
        );
    }
}

// spec: QX-MSG-ENC-2, QX-MSG-ERR-1 — the §6.1 table is the ErrorCode enum.
#[test]
fn error_code_table_is_the_error_code_numbers() {
    let rows = table("### 6.1 Numbers", "| code | name |");
    assert_eq!(rows.len(), ErrorCode::ALL.len());
    for ((number, name), code) in rows.iter().zip(ErrorCode::ALL) {
        assert_eq!(*number, code.as_u32(), "{name}");
        assert_eq!(*name, format!("{code:?}"), "code {number}");
        assert_eq!(leading_varint(&body(&code)), *number);
    }
}

fn error_frame(code_varint: &[u8]) -> Vec<u8> {
    let mut b = vec![5]; // ServerMessage::Error
    b.extend_from_slice(code_varint);
    b.extend_from_slice(&[0, 0]); // empty message, spawn None
    b
}

// spec: QX-MSG-ENC-5, QX-VER-3
#[test]
fn variant_index_widths() {
    // 2^32 - 1 in 5 bytes: fits, unknown → Unsupported.
    let max = [0xff, 0xff, 0xff, 0xff, 0x0f];
    assert_eq!(
        decode_body::<ClientMessage>(&max),
        Err(FrameError::UnknownVariant)
    );
    assert_eq!(FrameError::UnknownVariant.code(), ErrorCode::Unsupported);
    // Over 2^32 - 1, or 6 bytes: malformed → ProtocolViolation.
    for bad in [
        &[0xff, 0xff, 0xff, 0xff, 0x1f][..],
        &[0x80, 0x80, 0x80, 0x80, 0x80, 0x00][..],
    ] {
        let err = decode_body::<ClientMessage>(bad).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ProtocolViolation, "{bad:02x?}");
    }
    // A non-minimal index of a known variant is accepted (spec: QX-MSG-ENC-4).
    assert_eq!(
        decode_body::<ClientMessage>(&[0x87, 0x00]),
        Ok(ClientMessage::StdinEof)
    );
}

// spec: QX-ERR-2, QX-VER-3 — ErrorCode is an open set inside its u32 varint.
#[test]
fn unknown_error_codes_decode_as_internal() {
    let want = |code| {
        Ok(ServerMessage::Error(ErrorResponse {
            code,
            message: String::new(),
            spawn: None,
        }))
    };
    assert_eq!(
        decode_body::<ServerMessage>(&error_frame(&varint(200))),
        want(ErrorCode::Internal)
    );
    assert_eq!(
        decode_body::<ServerMessage>(&error_frame(&[0xff, 0xff, 0xff, 0xff, 0x0f])),
        want(ErrorCode::Internal)
    );
    let err =
        decode_body::<ServerMessage>(&error_frame(&[0xff, 0xff, 0xff, 0xff, 0x1f])).unwrap_err();
    assert_eq!(err.code(), ErrorCode::ProtocolViolation);
}

// spec: QX-MSG-ENC-5 — lengths: u64 varints of up to 10 bytes; past the body: malformed.
#[test]
fn length_widths() {
    // StdinData (6) with a 1-byte payload whose length takes 10 bytes.
    let mut ten = vec![6, 0x81];
    ten.extend([0x80; 8]);
    ten.extend([0x00, b'x']);
    assert_eq!(
        decode_body::<ClientMessage>(&ten),
        Ok(ClientMessage::StdinData(b"x".to_vec()))
    );
    // 11 bytes, or a 10th byte above 01: malformed.
    let mut eleven = vec![6, 0x81];
    eleven.extend([0x80; 9]);
    eleven.extend([0x00, b'x']);
    let mut too_big = vec![6];
    too_big.extend([0xff; 9]);
    too_big.push(0x02);
    // A length past the end of the body.
    let past = vec![6, 0x05, b'x'];
    for bad in [eleven, too_big, past] {
        let err = decode_body::<ClientMessage>(&bad).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ProtocolViolation, "{bad:02x?}");
    }
}

/// The rows `(#, field, type)` of the first struct table after `anchor`.
fn struct_table(anchor: &str) -> Vec<(u32, String, String)> {
    let at = SPEC
        .find(anchor)
        .unwrap_or_else(|| panic!("spec/protocol.md has no {anchor:?}"));
    SPEC[at..]
        .lines()
        .skip_while(|l| !l.starts_with("| # | field | type |"))
        .skip(2) // the header and the |---| line
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let index = cells[1]
                .parse()
                .unwrap_or_else(|_| panic!("bad field number in {row:?}"));
            (
                index,
                cells[2].trim_matches('`').to_owned(),
                cells[3].trim_matches('`').to_owned(),
            )
        })
        .collect()
}

// spec: QX-MSG-ENC-2, QX-MSG-TYPE-10 — the ServerInfo table is the struct: its rows
// are the fields in declaration order with their types, and nothing else is encoded.
#[test]
fn server_info_table_is_the_struct() {
    let rows = struct_table("**[QX-MSG-TYPE-10]** `ServerInfo`");
    let want = [
        (1, "server_version", "String"),
        (2, "running_jobs", "u32"),
        (3, "max_jobs", "u32"),
        (4, "caller_running_jobs", "u32"),
        (5, "max_jobs_per_user", "u32"),
        (6, "cpus", "u32"),
    ];
    let got: Vec<(u32, &str, &str)> = rows
        .iter()
        .map(|(i, f, t)| (*i, f.as_str(), t.as_str()))
        .collect();
    assert_eq!(got, want);
    // The encoding is those fields in that order: `server_info` gives each named field
    // its table number, so the bytes count 1 to 6 exactly when the declaration order
    // is the table's; no tag, no length.
    let bytes = body(&server_info());
    assert_eq!(bytes, [0x01, b'1', 2, 3, 4, 5, 6]);
}
