//! The example frames printed in spec/protocol.md §5.9, byte for byte
//! (spec: QX-MSG-ENC-1, QX-MSG-ENC-2, QX-FRAME-1).

use qexec_protocol::{
    ClientMessage, ErrorCode, ErrorResponse, JobId, ListQuery, ListRequest, ListStateFilter,
    OutputFrame, OutputStream, ServerMessage, SignalRequest, StatusRequest, encode,
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
