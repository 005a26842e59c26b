//! Property tests of framing and message encoding (spec: QX-FRAME-*, QX-MSG-*).
//!
//! Every property runs 1,000 cases or more.

use proptest::collection::vec;
use proptest::prelude::*;
use qexec_protocol::frame::{self, Decoder};
use qexec_protocol::{
    AttachRequest, ClientMessage, EncodeError, ErrorCode, ErrorResponse, FrameError, JobId,
    JobState, JobStatus, Limits, ListEntry, ListQuery, ListRequest, ListStateFilter, MAX_FRAME_LEN,
    MAX_PREFIX_LEN, OutputFrame, OutputStream, ResourceUsage, ServerInfo, ServerMessage,
    SignalRequest, SpawnFailure, StartRequest, StartTerminalRequest, StartedResponse,
    StatusRequest, StopReason, StopRequest, TerminalSpec, Termination, WindowSize, fuzzing,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

const CASES: u32 = 1000;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(CASES)
}

// ---- strategies for every message type ----

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..=max)
}

fn job_id() -> impl Strategy<Value = JobId> {
    any::<u128>().prop_map(JobId::from_u128)
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        any::<Option<u32>>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        any::<Option<u32>>(),
    )
        .prop_map(
            |(
                cpu_millis,
                memory_bytes,
                io_read_bps,
                io_write_bps,
                io_read_iops,
                io_write_iops,
                pids,
            )| {
                Limits {
                    cpu_millis,
                    memory_bytes,
                    io_read_bps,
                    io_write_bps,
                    io_read_iops,
                    io_write_iops,
                    pids,
                }
            },
        )
}

fn start_request() -> BoxedStrategy<StartRequest> {
    (
        vec(bytes(12), 0..6),
        vec((bytes(8), bytes(12)), 0..4),
        proptest::option::of(bytes(16)),
        limits(),
        any::<Option<u64>>(),
        any::<(bool, bool, bool)>(),
    )
        .prop_map(
            |(argv, env, cwd, limits, timeout_ms, (stdin, follow, stop_on_detach))| StartRequest {
                argv,
                env,
                cwd,
                limits,
                timeout_ms,
                stdin,
                follow,
                stop_on_detach,
            },
        )
        .boxed()
}

fn client_message() -> BoxedStrategy<ClientMessage> {
    prop_oneof![
        start_request().prop_map(ClientMessage::Start),
        (job_id(), any::<Option<u64>>())
            .prop_map(|(job, grace_ms)| ClientMessage::Stop(StopRequest { job, grace_ms })),
        job_id().prop_map(|job| ClientMessage::Status(StatusRequest { job })),
        any::<bool>().prop_map(|running_only| ClientMessage::List(ListRequest { running_only })),
        (job_id(), any::<u64>())
            .prop_map(|(job, from)| ClientMessage::Attach(AttachRequest { job, from })),
        (job_id(), any::<i32>())
            .prop_map(|(job, signal)| ClientMessage::Signal(SignalRequest { job, signal })),
        bytes(300).prop_map(ClientMessage::StdinData),
        Just(ClientMessage::StdinEof),
        list_query().prop_map(ClientMessage::ListQuery),
        (start_request(), ".{0,20}", window_size()).prop_map(|(start, term, size)| {
            ClientMessage::StartTerminal(StartTerminalRequest {
                start,
                terminal: TerminalSpec { term, size },
            })
        }),
        window_size().prop_map(ClientMessage::Resize),
        Just(ClientMessage::Info),
    ]
    .boxed()
}

fn list_query() -> BoxedStrategy<ListQuery> {
    (
        prop_oneof![
            Just(ListStateFilter::Any),
            Just(ListStateFilter::Running),
            Just(ListStateFilter::Ended),
            Just(ListStateFilter::FailedToStart),
        ],
        proptest::option::of(".{0,12}"),
        any::<Option<u64>>(),
        proptest::option::of("[0-9a-fA-F]{0,34}"),
        any::<u32>(),
        any::<Option<u64>>(),
        any::<bool>(),
    )
        .prop_map(
            |(state, owner, since_ms, id_prefix, limit, cursor, newest_first)| ListQuery {
                state,
                owner,
                since_ms,
                id_prefix,
                limit,
                cursor,
                newest_first,
            },
        )
        .boxed()
}

fn window_size() -> impl Strategy<Value = WindowSize> {
    any::<(u16, u16, u16, u16)>().prop_map(|(rows, cols, width_px, height_px)| WindowSize {
        rows,
        cols,
        width_px,
        height_px,
    })
}

fn termination() -> impl Strategy<Value = Termination> {
    prop_oneof![
        any::<i32>().prop_map(Termination::Exited),
        any::<i32>().prop_map(Termination::Signaled),
    ]
}

fn spawn_failure() -> impl Strategy<Value = SpawnFailure> {
    prop_oneof![
        Just(SpawnFailure::EmptyArgv),
        Just(SpawnFailure::NotFound),
        Just(SpawnFailure::PermissionDenied),
        Just(SpawnFailure::NotExecutable),
        Just(SpawnFailure::BadCwd),
        Just(SpawnFailure::TooManyJobs),
        Just(SpawnFailure::Setup),
        Just(SpawnFailure::Other),
    ]
}

fn stop_reason() -> impl Strategy<Value = StopReason> {
    prop_oneof![
        ".{0,12}".prop_map(|by| StopReason::Requested { by }),
        Just(StopReason::Timeout),
        Just(StopReason::OutputLimit),
        Just(StopReason::Detached),
        Just(StopReason::Shutdown),
    ]
}

fn job_state() -> BoxedStrategy<JobState> {
    prop_oneof![
        Just(JobState::Running),
        termination().prop_map(|termination| JobState::Exited { termination }),
        (stop_reason(), termination()).prop_map(|(reason, termination)| JobState::Stopped {
            reason,
            termination
        }),
        (spawn_failure(), ".{0,20}")
            .prop_map(|(failure, message)| JobState::FailedToStart { failure, message }),
    ]
    .boxed()
}

fn usage() -> impl Strategy<Value = ResourceUsage> {
    any::<[Option<u64>; 5]>().prop_map(|[a, b, c, d, e]| ResourceUsage {
        cpu_usec: a,
        cpu_throttled_usec: b,
        memory_peak_bytes: c,
        io_read_bytes: d,
        io_write_bytes: e,
    })
}

fn job_status() -> BoxedStrategy<JobStatus> {
    (
        (job_id(), "\\PC{0,16}", vec(bytes(10), 0..4), job_state()),
        (
            any::<Option<u32>>(),
            any::<u64>(),
            any::<Option<u64>>(),
            any::<u64>(),
            any::<u64>(),
        ),
        (any::<(bool, bool)>(), limits(), usage()),
    )
        .prop_map(
            |(
                (id, owner, argv, state),
                (pid, started_at_ms, ended_at_ms, stdout_bytes, stderr_bytes),
                ((output_truncated, oom_killed), limits, usage),
            )| JobStatus {
                id,
                owner,
                argv,
                state,
                pid,
                started_at_ms,
                ended_at_ms,
                stdout_bytes,
                stderr_bytes,
                output_truncated,
                oom_killed,
                limits,
                usage,
            },
        )
        .boxed()
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    proptest::sample::select(ErrorCode::ALL.to_vec())
}

fn server_message() -> BoxedStrategy<ServerMessage> {
    prop_oneof![
        (job_id(), any::<u32>())
            .prop_map(|(job, pid)| ServerMessage::Started(StartedResponse { job, pid })),
        job_status().prop_map(ServerMessage::Status),
        job_status().prop_map(ServerMessage::ListItem),
        Just(ServerMessage::ListEnd),
        job_id().prop_map(|job| ServerMessage::Attached { job }),
        (any::<u64>(), job_status())
            .prop_map(|(seq, status)| ServerMessage::ListEntry(ListEntry { seq, status })),
        any::<Option<u64>>().prop_map(|next| ServerMessage::ListPageEnd { next }),
        server_info().prop_map(ServerMessage::Info),
        (
            error_code(),
            ".{0,40}",
            proptest::option::of(spawn_failure())
        )
            .prop_map(
                |(code, message, spawn)| ServerMessage::Error(ErrorResponse {
                    code,
                    message,
                    spawn
                })
            ),
    ]
    .boxed()
}

fn server_info() -> impl Strategy<Value = ServerInfo> {
    ("\\PC{0,16}", any::<[u32; 5]>()).prop_map(
        |(
            server_version,
            [
                running_jobs,
                max_jobs,
                caller_running_jobs,
                max_jobs_per_user,
                cpus,
            ],
        )| ServerInfo {
            server_version,
            running_jobs,
            max_jobs,
            caller_running_jobs,
            max_jobs_per_user,
            cpus,
        },
    )
}

fn output_frame() -> BoxedStrategy<OutputFrame> {
    prop_oneof![
        (any::<u64>(), job_id(), any::<u64>()).prop_map(|(request_stream, job, from)| {
            OutputFrame::Header {
                request_stream,
                job,
                from,
            }
        }),
        (any::<bool>(), any::<u64>(), bytes(300)).prop_map(|(err, offset, data)| {
            OutputFrame::Data {
                stream: if err {
                    OutputStream::Stderr
                } else {
                    OutputStream::Stdout
                },
                offset,
                data,
            }
        }),
        job_status().prop_map(|status| OutputFrame::End { status }),
    ]
    .boxed()
}

// ---- helpers ----

/// Decodes every frame of `bytes`, fed in pieces that end at `cuts`.
fn decode_pieces<T: DeserializeOwned>(bytes: &[u8], cuts: &[usize]) -> Result<Vec<T>, FrameError> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    let mut d = Decoder::new();
    let mut out = Vec::new();
    let mut at = 0;
    for cut in cuts {
        d.push(&bytes[at..cut]);
        at = cut;
        while let Some(m) = d.next()? {
            out.push(m);
        }
    }
    d.finish()?;
    Ok(out)
}

fn round_trip<T>(msg: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = frame::encode(msg).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut d = Decoder::new();
    d.push(&bytes);
    let got = d
        .next::<T>()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert!(got.as_ref() == Some(msg), "{:?} != {:?}", got, msg);
    prop_assert_eq!(d.finish(), Ok(()));
    Ok(())
}

// ---- properties ----

proptest! {
    #![proptest_config(config())]

    /// spec: QX-MSG-TYPE-10, QX-INFO-6: every ServerInfo survives encode/decode, and
    /// its free slots never exceed either limit's room.
    #[test]
    fn server_info_round_trips(info in server_info()) {
        round_trip(&info)?;
        round_trip(&ServerMessage::Info(info.clone()))?;
        let free = info.free_slots();
        prop_assert!(free <= info.max_jobs.saturating_sub(info.running_jobs));
        prop_assert!(free <= info.max_jobs_per_user.saturating_sub(info.caller_running_jobs));
        prop_assert!(
            free == info.max_jobs.saturating_sub(info.running_jobs)
                || free == info.max_jobs_per_user.saturating_sub(info.caller_running_jobs)
        );
    }

    /// spec: QX-FRAME-1, QX-MSG-CTRL-*: every client message survives encode/decode.
    #[test]
    fn client_messages_round_trip(msg in client_message()) {
        let bytes = frame::encode(&msg).unwrap();
        let mut d = Decoder::new();
        d.push(&bytes);
        prop_assert_eq!(d.next::<ClientMessage>(), Ok(Some(msg.clone())));
        prop_assert_eq!(d.buffered(), 0);
        prop_assert_eq!(d.finish(), Ok(()));
        prop_assert_eq!(frame::decode_body::<ClientMessage>(&bytes[bytes.len() - body_len(&bytes)..]), Ok(msg));
    }

    /// spec: QX-FRAME-1, QX-MSG-SRV-*: every server control message survives.
    #[test]
    fn server_messages_round_trip(msg in server_message()) {
        let bytes = frame::encode(&msg).unwrap();
        let mut d = Decoder::new();
        d.push(&bytes);
        prop_assert_eq!(d.next::<ServerMessage>(), Ok(Some(msg)));
        prop_assert_eq!(d.finish(), Ok(()));
    }

    /// spec: QX-FRAME-1, QX-MSG-OUT-*: every output frame survives.
    #[test]
    fn output_frames_round_trip(msg in output_frame()) {
        let bytes = frame::encode(&msg).unwrap();
        let mut d = Decoder::new();
        d.push(&bytes);
        prop_assert_eq!(d.next::<OutputFrame>(), Ok(Some(msg)));
        prop_assert_eq!(d.finish(), Ok(()));
    }

    /// spec: QX-FRAME-1: the same byte stream cut anywhere decodes to the same
    /// messages, for each family.
    #[test]
    fn split_streams_decode_the_same(
        client in vec(client_message(), 0..6),
        server in vec(server_message(), 0..4),
        output in vec(output_frame(), 0..6),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        let mut bytes = Vec::new();
        for m in &client {
            frame::encode_into(m, &mut bytes).unwrap();
        }
        prop_assert_eq!(decode_pieces::<ClientMessage>(&bytes, &cuts), Ok(client));
        bytes.clear();
        for m in &server {
            frame::encode_into(m, &mut bytes).unwrap();
        }
        prop_assert_eq!(decode_pieces::<ServerMessage>(&bytes, &cuts), Ok(server));
        bytes.clear();
        for m in &output {
            frame::encode_into(m, &mut bytes).unwrap();
        }
        prop_assert_eq!(decode_pieces::<OutputFrame>(&bytes, &cuts), Ok(output));
    }

    /// spec: QX-FRAME-5: arbitrary bytes in arbitrary pieces never panic; they give
    /// messages or a typed error, and whatever decodes re-encodes to a frame that
    /// decodes to the same message.
    #[test]
    fn arbitrary_bytes_never_panic(data in bytes(600), cuts in vec(any::<usize>(), 0..8)) {
        // The library's fuzz entry points check the invariants and panic on a breach.
        fuzzing::frame_decoder(&data);
        fuzzing::message_decoder(&data);
        for r in [
            decode_pieces::<ClientMessage>(&data, &cuts).map(|v| v.len()),
            decode_pieces::<ServerMessage>(&data, &cuts).map(|v| v.len()),
            decode_pieces::<OutputFrame>(&data, &cuts).map(|v| v.len()),
        ] {
            if let Err(e) = r {
                // Every error maps to a frame-level error code.
                prop_assert!(matches!(
                    e.code(),
                    ErrorCode::ProtocolViolation | ErrorCode::FrameTooLarge | ErrorCode::Unsupported
                ));
            }
        }
    }

    /// spec: QX-FRAME-2: a declared length above the maximum is refused from the
    /// prefix alone, nothing beyond the prefix is buffered, whatever follows.
    #[test]
    fn oversized_length_is_refused_from_the_prefix(
        len in (MAX_FRAME_LEN as u64 + 1)..=u64::MAX >> 1,
        tail in bytes(64),
        piece in 1usize..4,
    ) {
        let mut prefix = Vec::new();
        let mut v = len;
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                prefix.push(b);
                break;
            }
            prefix.push(b | 0x80);
        }
        let mut d = Decoder::new();
        let mut refused_after = None;
        for (i, chunk) in prefix.chunks(piece).enumerate() {
            d.push(chunk);
            prop_assert!(d.buffered() < MAX_PREFIX_LEN, "buffered {}", d.buffered());
            if d.error().is_some() {
                refused_after = Some(i);
                break;
            }
        }
        // Refused by the time at most MAX_PREFIX_LEN bytes were seen, before any body.
        prop_assert!(refused_after.is_some());
        prop_assert!(refused_after.unwrap() * piece < MAX_PREFIX_LEN);
        d.push(&tail);
        prop_assert_eq!(d.buffered(), 0);
        let e = d.next::<ClientMessage>().unwrap_err();
        prop_assert!(matches!(e, FrameError::TooLarge { .. }), "{:?}", e);
        prop_assert_eq!(e.code(), ErrorCode::FrameTooLarge);
    }

    /// spec: QX-FRAME-2: the encoder never produces a frame the decoder rejects, up to
    /// and including the largest body; a larger one is refused by the encoder.
    #[test]
    fn encoder_output_is_always_accepted(
        msg in prop_oneof![
            client_message().prop_map(Msg::Client),
            server_message().prop_map(Msg::Server),
            output_frame().prop_map(Msg::Output),
        ],
        big in (MAX_FRAME_LEN - 8)..=(MAX_FRAME_LEN + 2),
        which in 0u8..3,
    ) {
        msg.check()?;
        // Bodies at the limit: one byte of variant index, a 3-byte length varint and
        // the payload for StdinData.
        let payload = big.saturating_sub(4);
        let huge = match which {
            0 => Msg::Client(ClientMessage::StdinData(vec![0xa5; payload])),
            1 => Msg::Output(OutputFrame::Data { stream: OutputStream::Stdout, offset: 0, data: vec![1; payload - 2] }),
            _ => Msg::Server(ServerMessage::Attached { job: JobId::from_u128(big as u128) }),
        };
        huge.check()?;
    }
}

/// Any one message, for properties that cover every family.
#[derive(Debug, Clone)]
enum Msg {
    Client(ClientMessage),
    Server(ServerMessage),
    Output(OutputFrame),
}

impl Msg {
    /// Encodes and, if the encoder accepted it, decodes again: the decoder must accept
    /// it and give back the same message. The encoder must refuse exactly the bodies
    /// above the maximum.
    fn check(&self) -> Result<(), TestCaseError> {
        match self {
            Self::Client(m) => check_one(m),
            Self::Server(m) => check_one(m),
            Self::Output(m) => check_one(m),
        }
    }
}

fn check_one<T>(msg: &T) -> Result<(), TestCaseError>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let body = postcard::to_stdvec(msg).unwrap();
    match frame::encode(msg) {
        Ok(bytes) => {
            prop_assert!(body.len() <= MAX_FRAME_LEN);
            prop_assert_eq!(body_len(&bytes), body.len());
            round_trip(msg)?;
        }
        Err(EncodeError::TooLarge { len, max }) => {
            prop_assert_eq!(len, body.len());
            prop_assert!(len > max);
        }
        Err(e) => return Err(TestCaseError::fail(e.to_string())),
    }
    Ok(())
}

/// Length of the body of the single frame `bytes`.
fn body_len(bytes: &[u8]) -> usize {
    let mut len = 0usize;
    for (i, b) in bytes.iter().enumerate().take(MAX_PREFIX_LEN) {
        len |= usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            assert_eq!(bytes.len(), i + 1 + len, "one frame expected");
            return len;
        }
    }
    panic!("prefix longer than {MAX_PREFIX_LEN} bytes")
}

#[test]
fn largest_body_is_accepted_and_one_more_is_refused() {
    // spec: QX-FRAME-2
    let at_limit = ClientMessage::StdinData(vec![7; MAX_FRAME_LEN - 4]);
    let bytes = frame::encode(&at_limit).unwrap();
    assert_eq!(bytes.len(), MAX_PREFIX_LEN + MAX_FRAME_LEN);
    let mut d = Decoder::new();
    d.push(&bytes);
    assert_eq!(d.next::<ClientMessage>(), Ok(Some(at_limit)));
    let over = ClientMessage::StdinData(vec![7; MAX_FRAME_LEN - 3]);
    assert_eq!(
        frame::encode(&over),
        Err(EncodeError::TooLarge {
            len: MAX_FRAME_LEN + 1,
            max: MAX_FRAME_LEN
        })
    );
}
