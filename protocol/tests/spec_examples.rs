//! The example frames printed in spec/protocol.md §5.7, byte for byte
//! (spec: QX-MSG-ENC-1, QX-MSG-ENC-2, QX-FRAME-1).

use qexec_protocol::{
    ClientMessage, ErrorCode, ErrorResponse, JobId, Limits, ListQuery, ListRequest,
    ListStateFilter, OutputFrame, OutputStream, ServerInfo, ServerMessage, SignalRequest,
    StartRequest, StartTerminalRequest, StatusRequest, TerminalSpec, WindowSize, encode,
};

const JOB: JobId = JobId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
const JOB_BYTES: [u8; 16] = [
    0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
];

#[test]
fn client_examples() {
    assert_eq!(encode(&ClientMessage::StdinEof).unwrap(), [0x01, 0x07]);
    assert_eq!(
        encode(&ClientMessage::List(ListRequest { running_only: true })).unwrap(),
        [0x02, 0x03, 0x01]
    );
    // ListQuery is ClientMessage index 8, ListStateFilter::Running index 1.
    assert_eq!(
        encode(&ClientMessage::ListQuery(ListQuery {
            state: ListStateFilter::Running,
            id_prefix: Some("abcd".into()),
            limit: 10,
            newest_first: true,
            ..ListQuery::all(10)
        }))
        .unwrap(),
        [
            0x0d, 0x08, 0x01, 0x00, 0x00, 0x01, 0x04, b'a', b'b', b'c', b'd', 0x0a, 0x00, 0x01
        ]
    );
    let mut status = vec![0x11, 0x02];
    status.extend(JOB_BYTES);
    assert_eq!(
        encode(&ClientMessage::Status(StatusRequest { job: JOB })).unwrap(),
        status
    );
    let mut signal = vec![0x12, 0x05];
    signal.extend(JOB_BYTES);
    signal.push(0x1e);
    assert_eq!(
        encode(&ClientMessage::Signal(SignalRequest {
            job: JOB,
            signal: 15
        }))
        .unwrap(),
        signal
    );
}

/// Index of the last `ClientMessage` variant but `n` (the terminal variants are the
/// last two; written this way so that variants added later shift one line).
const RESIZE_INDEX: u8 = 10;

#[test]
fn terminal_examples() {
    // spec: QX-TERM-2 — Resize{rows 24, cols 80, 0, 0}: varints, 80 = 0x50.
    let resize = ClientMessage::Resize(WindowSize {
        rows: 24,
        cols: 80,
        width_px: 0,
        height_px: 0,
    });
    assert_eq!(
        encode(&resize).unwrap(),
        [0x05, RESIZE_INDEX, 0x18, 0x50, 0x00, 0x00]
    );
    // spec: QX-TERM-1 — the seed of fuzz/corpus/message_decoder/seed-start-terminal.
    let start = ClientMessage::StartTerminal(StartTerminalRequest {
        start: StartRequest {
            argv: vec![b"sh".to_vec()],
            env: Vec::new(),
            cwd: None,
            limits: Limits::default(),
            timeout_ms: None,
            stdin: true,
            follow: true,
            stop_on_detach: true,
        },
        terminal: TerminalSpec {
            term: "xterm".into(),
            size: WindowSize {
                rows: 24,
                cols: 80,
                width_px: 0,
                height_px: 0,
            },
        },
    });
    let mut body = vec![RESIZE_INDEX - 1, 0x01, 0x02, b's', b'h', 0x00, 0x00];
    body.extend([0; 8]); // seven limits and the timeout: None
    body.extend([0x01, 0x01, 0x01, 0x05]);
    body.extend(b"xterm");
    body.extend([0x18, 0x50, 0x00, 0x00]);
    let mut frame = vec![body.len() as u8];
    frame.extend(&body);
    assert_eq!(encode(&start).unwrap(), frame);
}

#[test]
fn info_examples() {
    // spec: QX-MSG-CTRL-11 — Info is ClientMessage index 11, a unit variant.
    assert_eq!(encode(&ClientMessage::Info).unwrap(), [0x01, 0x0b]);
    // spec: QX-MSG-SRV-9, QX-MSG-TYPE-10 — ServerMessage index 8, then the six fields;
    // 1024 = 80 08, 256 = 80 02.
    let info = ServerMessage::Info(ServerInfo {
        server_version: "0.1.0".into(),
        running_jobs: 3,
        max_jobs: 1024,
        caller_running_jobs: 1,
        max_jobs_per_user: 256,
        cpus: 8,
    });
    assert_eq!(
        encode(&info).unwrap(),
        [
            0x0e, 0x08, 0x05, b'0', b'.', b'1', b'.', b'0', 0x03, 0x80, 0x08, 0x01, 0x80, 0x02,
            0x08
        ]
    );
}

#[test]
fn server_and_output_examples() {
    assert_eq!(
        encode(&ServerMessage::Error(ErrorResponse {
            code: ErrorCode::NotFound,
            message: "no".into(),
            spawn: None,
        }))
        .unwrap(),
        [0x06, 0x05, 0x05, 0x02, b'n', b'o', 0x00]
    );
    // ListPageEnd is ServerMessage index 7.
    assert_eq!(
        encode(&ServerMessage::ListPageEnd { next: Some(300) }).unwrap(),
        [0x04, 0x07, 0x01, 0xac, 0x02]
    );
    assert_eq!(
        encode(&OutputFrame::Data {
            stream: OutputStream::Stderr,
            offset: 300,
            data: b"hi".to_vec(),
        })
        .unwrap(),
        [0x07, 0x01, 0x01, 0xac, 0x02, 0x02, b'h', b'i']
    );
}
