//! Stream state machines (spec: QX-STREAM-*), sans-IO.
//!
//! Each type here is fed the frames (and the end) of one stream as they are decoded
//! and says whether the peer is following the protocol. The server, the client and
//! the conformance suite share these, so they share one definition of "a frame the
//! peer may send now". A violation is answered by resetting/stopping that stream
//! with [`ErrorCode::ProtocolViolation`] (spec: QX-ERR-3); after one, the state
//! machine keeps refusing.
//!
//! - [`ControlStreamState`]: the client → server side of a control stream (server).
//! - [`ResponseState`]: the server → client side of a control stream (client).
//! - [`OutputStreamState`]: an output stream (client).

use crate::limits::{MAX_OUTPUT_CHUNK, MAX_STDIN_CHUNK};
use crate::{ClientMessage, ErrorCode, JobId, OutputFrame, ServerMessage};

/// A frame or stream end that the protocol does not allow at this point of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamViolation {
    /// The first frame on a control stream is not a request.
    #[error("the first frame on a control stream must be a request, got {got} (spec QX-STREAM-5)")]
    NotARequest {
        /// The frame received.
        got: &'static str,
    },
    /// A second request on a control stream that already carried one.
    #[error(
        "a control stream carries exactly one request, got a second one: {got} (spec QX-STREAM-6)"
    )]
    SecondRequest {
        /// The frame received.
        got: &'static str,
    },
    /// Standard input on a stream whose request was not a `Start` with `stdin: true`
    /// or a `StartTerminal`, or after `StdinEof`; or a `Resize` on a stream whose
    /// request was not a `StartTerminal`.
    #[error(
        "{got} is allowed only after a Start with stdin (Resize: a StartTerminal) and before StdinEof (spec QX-STREAM-7, QX-TERM-3)"
    )]
    UnexpectedStdin {
        /// The frame received.
        got: &'static str,
    },
    /// A `StdinData` payload above [`MAX_STDIN_CHUNK`].
    #[error("StdinData of {len} bytes exceeds the maximum of {max} bytes (spec QX-LIMIT-10)")]
    StdinChunkTooLarge {
        /// Payload length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The stream ended before its request (or its `StdinEof`) arrived.
    #[error("the stream ended before {missing} (spec QX-STREAM-8)")]
    EndedEarly {
        /// What was still expected.
        missing: &'static str,
    },
    /// A frame after the stream's last allowed frame.
    #[error("{got} after the last frame the stream may carry (spec {requirement})")]
    FrameAfterEnd {
        /// The frame received.
        got: &'static str,
        /// The requirement broken.
        requirement: &'static str,
    },
    /// A response that does not answer the request sent.
    #[error("{got} does not answer a {request} request (spec QX-STREAM-9)")]
    WrongResponse {
        /// The frame received.
        got: &'static str,
        /// The request sent.
        request: &'static str,
    },
    /// An output stream that does not start with `Header`, or a second `Header`.
    #[error("an output stream starts with exactly one Header, got {got} (spec QX-STREAM-11)")]
    BadHeader {
        /// The frame received.
        got: &'static str,
    },
    /// A `Data` frame whose offset is not where the previous one ended.
    #[error(
        "output Data at offset {got}, expected {expected}: offsets must be contiguous (spec QX-STREAM-12)"
    )]
    OffsetGap {
        /// Offset received.
        got: u64,
        /// Offset expected.
        expected: u64,
    },
    /// A `Data` payload above [`MAX_OUTPUT_CHUNK`].
    #[error("output Data of {len} bytes exceeds the maximum of {max} bytes (spec QX-LIMIT-11)")]
    OutputChunkTooLarge {
        /// Payload length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// An output frame naming another job than the one subscribed to.
    #[error("output stream for job {expected} carries job {got} (spec QX-STREAM-11)")]
    WrongJob {
        /// Job named by the frame.
        got: JobId,
        /// Job expected.
        expected: JobId,
    },
}

impl StreamViolation {
    /// The code to reset/stop the stream with: [`ErrorCode::ProtocolViolation`].
    pub fn code(&self) -> ErrorCode {
        ErrorCode::ProtocolViolation
    }
}

/// Short name of a client frame, for messages and logs.
pub fn client_message_name(msg: &ClientMessage) -> &'static str {
    match msg {
        ClientMessage::Start(_) => "Start",
        ClientMessage::Stop(_) => "Stop",
        ClientMessage::Status(_) => "Status",
        ClientMessage::List(_) => "List",
        ClientMessage::Attach(_) => "Attach",
        ClientMessage::Signal(_) => "Signal",
        ClientMessage::StdinData(_) => "StdinData",
        ClientMessage::StdinEof => "StdinEof",
        ClientMessage::ListQuery(_) => "ListQuery",
        ClientMessage::StartTerminal(_) => "StartTerminal",
        ClientMessage::Resize(_) => "Resize",
        ClientMessage::Info => "Info",
    }
}

/// Short name of a server control-stream frame, for messages and logs.
pub fn server_message_name(msg: &ServerMessage) -> &'static str {
    match msg {
        ServerMessage::Started(_) => "Started",
        ServerMessage::Status(_) => "Status",
        ServerMessage::ListItem(_) => "ListItem",
        ServerMessage::ListEnd => "ListEnd",
        ServerMessage::Attached { .. } => "Attached",
        ServerMessage::Error(_) => "Error",
        ServerMessage::ListEntry(_) => "ListEntry",
        ServerMessage::ListPageEnd { .. } => "ListPageEnd",
        ServerMessage::Info(_) => "Info",
    }
}

/// Short name of an output frame, for messages and logs.
pub fn output_frame_name(frame: &OutputFrame) -> &'static str {
    match frame {
        OutputFrame::Header { .. } => "Header",
        OutputFrame::Data { .. } => "Data",
        OutputFrame::End { .. } => "End",
    }
}

/// What the client may still send on a control stream, as the server sees it
/// (spec: QX-STREAM-5 to QX-STREAM-8).
///
/// ```text
/// AwaitingRequest --Start{stdin:true}--> Stdin --StdinData--> Stdin
///        |                                 |
///        +--any other request--> Complete <+--StdinEof
///        |                          |    ^
///        |                        (FIN)  +--StdinEof--+
///        |                          v                 |
///        |                       Finished             |
///        +--StartTerminal--> Terminal --StdinData, Resize--> Terminal
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ControlStreamState {
    /// Nothing received yet: the next frame must be a request.
    #[default]
    AwaitingRequest,
    /// A `Start` with `stdin: true` was received: `StdinData` frames and one
    /// `StdinEof` may follow.
    Stdin,
    /// A `StartTerminal` was received: `StdinData` (keystrokes), `Resize` and one
    /// `StdinEof` may follow (spec: QX-TERM-3).
    Terminal,
    /// The request (and its standard input) is complete: only the end of the stream
    /// (FIN) may follow.
    Complete,
    /// The client finished its send side after a complete request.
    Finished,
    /// The client broke the protocol; the stream is being reset.
    Violated(StreamViolation),
}

impl ControlStreamState {
    /// The state of a freshly opened control stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one decoded client frame. `Ok(())` if the client may send it now.
    pub fn on_frame(&mut self, msg: &ClientMessage) -> Result<(), StreamViolation> {
        let got = client_message_name(msg);
        // Frames that follow a request on its stream (stdin, terminal resizes).
        let is_stdin = matches!(
            msg,
            ClientMessage::StdinData(_) | ClientMessage::StdinEof | ClientMessage::Resize(_)
        );
        let next = match (*self, msg) {
            (Self::Violated(v), _) => return Err(v),
            // spec: QX-STREAM-5
            (Self::AwaitingRequest, _) if is_stdin => Err(StreamViolation::NotARequest { got }),
            // spec: QX-STREAM-7
            (Self::AwaitingRequest, ClientMessage::Start(s)) if s.stdin => Ok(Self::Stdin),
            // spec: QX-TERM-3
            (Self::AwaitingRequest, ClientMessage::StartTerminal(_)) => Ok(Self::Terminal),
            (Self::AwaitingRequest, _) => Ok(Self::Complete),
            // spec: QX-LIMIT-10
            (Self::Stdin | Self::Terminal, ClientMessage::StdinData(d))
                if d.len() > MAX_STDIN_CHUNK =>
            {
                Err(StreamViolation::StdinChunkTooLarge {
                    len: d.len(),
                    max: MAX_STDIN_CHUNK,
                })
            }
            (Self::Stdin, ClientMessage::StdinData(_)) => Ok(Self::Stdin),
            (Self::Terminal, ClientMessage::StdinData(_) | ClientMessage::Resize(_)) => {
                Ok(Self::Terminal)
            }
            (Self::Stdin | Self::Terminal, ClientMessage::StdinEof) => Ok(Self::Complete),
            // spec: QX-STREAM-6
            (Self::Stdin | Self::Complete | Self::Terminal, _) if !is_stdin => {
                Err(StreamViolation::SecondRequest { got })
            }
            (Self::Finished, _) => Err(StreamViolation::FrameAfterEnd {
                got,
                requirement: "QX-STREAM-8",
            }),
            // Only stdin frames reach here: stdin after StdinEof, a Resize without a
            // terminal.
            (Self::Complete | Self::Stdin | Self::Terminal, _) => {
                Err(StreamViolation::UnexpectedStdin { got })
            }
        };
        self.apply(next)
    }

    /// The client finished its send side (FIN received, all frames decoded). A FIN
    /// before the request, or before `StdinEof`, is a violation (spec: QX-STREAM-8).
    /// A server still closes the job's standard input in the second case.
    pub fn on_finish(&mut self) -> Result<(), StreamViolation> {
        let next = match *self {
            Self::Violated(v) => return Err(v),
            Self::AwaitingRequest => Err(StreamViolation::EndedEarly {
                missing: "its request",
            }),
            Self::Stdin | Self::Terminal => Err(StreamViolation::EndedEarly {
                missing: "StdinEof",
            }),
            Self::Complete | Self::Finished => Ok(Self::Finished),
        };
        self.apply(next)
    }

    fn apply(&mut self, next: Result<Self, StreamViolation>) -> Result<(), StreamViolation> {
        match next {
            Ok(s) => {
                *self = s;
                Ok(())
            }
            Err(v) => {
                *self = Self::Violated(v);
                Err(v)
            }
        }
    }

    /// True once the request frame has arrived (the request deadline no longer
    /// applies, spec: QX-LIMIT-9).
    pub fn has_request(&self) -> bool {
        matches!(
            self,
            Self::Stdin | Self::Terminal | Self::Complete | Self::Finished
        )
    }
}

/// Which answer a request expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Started,
    Status,
    List,
    ListPage,
    Attached,
    Info,
}

/// What the server may still send on a control stream, as the client sees it
/// (spec: QX-STREAM-9, QX-STREAM-10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseState {
    request: &'static str,
    answer: Answer,
    /// True once the last response frame arrived.
    complete: bool,
    violation: Option<StreamViolation>,
}

impl ResponseState {
    /// The state after sending `request`; `None` for `StdinData`/`StdinEof`, which
    /// are not requests.
    pub fn for_request(request: &ClientMessage) -> Option<Self> {
        let answer = match request {
            ClientMessage::Start(_) | ClientMessage::StartTerminal(_) => Answer::Started,
            ClientMessage::Stop(_) | ClientMessage::Status(_) | ClientMessage::Signal(_) => {
                Answer::Status
            }
            ClientMessage::List(_) => Answer::List,
            ClientMessage::ListQuery(_) => Answer::ListPage,
            ClientMessage::Attach(_) => Answer::Attached,
            ClientMessage::Info => Answer::Info,
            ClientMessage::StdinData(_) | ClientMessage::StdinEof | ClientMessage::Resize(_) => {
                return None;
            }
        };
        Some(Self {
            request: client_message_name(request),
            answer,
            complete: false,
            violation: None,
        })
    }

    /// Takes one decoded server frame. `Ok(true)` when it completes the answer (the
    /// server finishes the stream next), `Ok(false)` when more frames follow
    /// (`ListItem`).
    pub fn on_frame(&mut self, msg: &ServerMessage) -> Result<bool, StreamViolation> {
        if let Some(v) = self.violation {
            return Err(v);
        }
        let got = server_message_name(msg);
        let result = if self.complete {
            Err(StreamViolation::FrameAfterEnd {
                got,
                requirement: "QX-STREAM-10",
            })
        } else {
            match (self.answer, msg) {
                (_, ServerMessage::Error(_))
                | (Answer::Started, ServerMessage::Started(_))
                | (Answer::Status, ServerMessage::Status(_))
                | (Answer::List, ServerMessage::ListEnd)
                | (Answer::ListPage, ServerMessage::ListPageEnd { .. })
                | (Answer::Attached, ServerMessage::Attached { .. })
                | (Answer::Info, ServerMessage::Info(_)) => Ok(true),
                (Answer::List, ServerMessage::ListItem(_))
                | (Answer::ListPage, ServerMessage::ListEntry(_)) => Ok(false),
                _ => Err(StreamViolation::WrongResponse {
                    got,
                    request: self.request,
                }),
            }
        };
        match result {
            Ok(done) => self.complete = done,
            Err(v) => self.violation = Some(v),
        }
        result
    }

    /// The server finished its send side: fine only after a complete answer
    /// (spec: QX-STREAM-10).
    pub fn on_finish(&mut self) -> Result<(), StreamViolation> {
        if let Some(v) = self.violation {
            return Err(v);
        }
        if self.complete {
            Ok(())
        } else {
            let v = StreamViolation::EndedEarly {
                missing: "the response",
            };
            self.violation = Some(v);
            Err(v)
        }
    }

    /// True once the whole answer arrived.
    pub fn is_complete(&self) -> bool {
        self.complete
    }
}

/// What the server may still send on an output stream, as the client sees it
/// (spec: QX-STREAM-11 to QX-STREAM-13).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutputStreamState {
    /// After the header: the job and the offset the next `Data` must have.
    position: Option<(JobId, u64)>,
    ended: bool,
    violation: Option<StreamViolation>,
}

impl OutputStreamState {
    /// The state of a freshly accepted output stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one decoded output frame. `Ok(())` if the server may send it now.
    pub fn on_frame(&mut self, frame: &OutputFrame) -> Result<(), StreamViolation> {
        if let Some(v) = self.violation {
            return Err(v);
        }
        let got = output_frame_name(frame);
        let result = match (self.position, frame) {
            _ if self.ended => Err(StreamViolation::FrameAfterEnd {
                got,
                requirement: "QX-STREAM-13",
            }),
            (None, OutputFrame::Header { job, from, .. }) => {
                self.position = Some((*job, *from));
                Ok(())
            }
            (None, _) | (Some(_), OutputFrame::Header { .. }) => {
                Err(StreamViolation::BadHeader { got })
            }
            (Some((job, expected)), OutputFrame::Data { offset, data, .. }) => {
                if *offset != expected {
                    Err(StreamViolation::OffsetGap {
                        got: *offset,
                        expected,
                    })
                } else if data.len() > MAX_OUTPUT_CHUNK {
                    Err(StreamViolation::OutputChunkTooLarge {
                        len: data.len(),
                        max: MAX_OUTPUT_CHUNK,
                    })
                } else {
                    // A sum past u64::MAX cannot be matched by any later offset.
                    match expected.checked_add(data.len() as u64) {
                        Some(next) => {
                            self.position = Some((job, next));
                            Ok(())
                        }
                        None => Err(StreamViolation::OffsetGap {
                            got: *offset,
                            expected,
                        }),
                    }
                }
            }
            (Some((job, _)), OutputFrame::End { status }) => {
                if status.id == job {
                    self.ended = true;
                    Ok(())
                } else {
                    Err(StreamViolation::WrongJob {
                        got: status.id,
                        expected: job,
                    })
                }
            }
        };
        if let Err(v) = result {
            self.violation = Some(v);
        }
        result
    }

    /// The server finished the stream: fine only after `End` (spec: QX-STREAM-13).
    pub fn on_finish(&mut self) -> Result<(), StreamViolation> {
        if let Some(v) = self.violation {
            return Err(v);
        }
        if self.ended {
            Ok(())
        } else {
            let v = StreamViolation::EndedEarly { missing: "End" };
            self.violation = Some(v);
            Err(v)
        }
    }

    /// The job named by the header, once it arrived.
    pub fn job(&self) -> Option<JobId> {
        self.position.map(|(job, _)| job)
    }

    /// Combined-output offset the next `Data` frame must carry, once the header
    /// arrived: the number of output bytes received so far plus the header's `from`.
    /// A client that reconnects attaches again from here (spec: QX-STREAM-14).
    pub fn next_offset(&self) -> Option<u64> {
        self.position.map(|(_, offset)| offset)
    }

    /// True once `End` arrived.
    pub fn is_ended(&self) -> bool {
        self.ended
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        AttachRequest, ErrorResponse, JobState, JobStatus, Limits, ListEntry, ListQuery,
        ListRequest, ResourceUsage, StartRequest, StartedResponse, StatusRequest,
    };

    fn start(stdin: bool) -> ClientMessage {
        ClientMessage::Start(StartRequest {
            argv: vec![b"cat".to_vec()],
            env: Vec::new(),
            cwd: None,
            limits: Limits::default(),
            timeout_ms: None,
            stdin,
            follow: true,
            stop_on_detach: true,
        })
    }

    const JOB: JobId = JobId::from_u128(7);

    fn terminal() -> ClientMessage {
        let ClientMessage::Start(start) = start(false) else {
            unreachable!("start() builds a Start")
        };
        ClientMessage::StartTerminal(crate::StartTerminalRequest {
            start,
            terminal: crate::TerminalSpec {
                term: "xterm".into(),
                size: SIZE,
            },
        })
    }

    const SIZE: crate::WindowSize = crate::WindowSize {
        rows: 24,
        cols: 80,
        width_px: 0,
        height_px: 0,
    };

    fn status(id: JobId) -> JobStatus {
        JobStatus {
            id,
            owner: "alice".into(),
            argv: vec![b"cat".to_vec()],
            state: JobState::Running,
            pid: Some(42),
            started_at_ms: 1,
            ended_at_ms: None,
            stdout_bytes: 0,
            stderr_bytes: 0,
            output_truncated: false,
            oom_killed: false,
            limits: Limits::default(),
            usage: ResourceUsage::default(),
        }
    }

    fn feed(frames: &[ClientMessage]) -> (ControlStreamState, Result<(), StreamViolation>) {
        let mut s = ControlStreamState::new();
        for f in frames {
            if let Err(v) = s.on_frame(f) {
                return (s, Err(v));
            }
        }
        let r = s.on_finish();
        (s, r)
    }

    #[test]
    fn control_stream_accepts_the_allowed_sequences() {
        // spec: QX-STREAM-5, QX-STREAM-7, QX-STREAM-8
        let data = ClientMessage::StdinData(vec![1; MAX_STDIN_CHUNK]);
        for frames in [
            vec![start(false)],
            vec![start(true), ClientMessage::StdinEof],
            vec![start(true), data.clone(), data, ClientMessage::StdinEof],
            vec![ClientMessage::Status(StatusRequest { job: JOB })],
            vec![ClientMessage::List(ListRequest::default())],
            vec![ClientMessage::Attach(AttachRequest { job: JOB, from: 3 })],
            // spec: QX-INFO-1 (a one-frame request like Status)
            vec![ClientMessage::Info],
            // spec: QX-TERM-3
            vec![terminal(), ClientMessage::StdinEof],
            vec![
                terminal(),
                ClientMessage::StdinData(vec![3]),
                ClientMessage::Resize(SIZE),
                ClientMessage::StdinData(vec![4]),
                ClientMessage::Resize(SIZE),
                ClientMessage::StdinEof,
            ],
        ] {
            let (s, r) = feed(&frames);
            assert_eq!(r, Ok(()), "{frames:?}");
            assert_eq!(s, ControlStreamState::Finished);
            assert!(s.has_request());
        }
    }

    #[test]
    fn control_stream_refuses_everything_else() {
        // spec: QX-STREAM-5 .. QX-STREAM-8, QX-LIMIT-10
        let list = ClientMessage::List(ListRequest::default());
        let cases: Vec<(Vec<ClientMessage>, StreamViolation)> = vec![
            (
                vec![],
                StreamViolation::EndedEarly {
                    missing: "its request",
                },
            ),
            (
                vec![ClientMessage::StdinEof],
                StreamViolation::NotARequest { got: "StdinEof" },
            ),
            (
                vec![ClientMessage::StdinData(vec![1])],
                StreamViolation::NotARequest { got: "StdinData" },
            ),
            (
                vec![list.clone(), list.clone()],
                StreamViolation::SecondRequest { got: "List" },
            ),
            (
                vec![start(true), list.clone()],
                StreamViolation::SecondRequest { got: "List" },
            ),
            (
                vec![start(false), ClientMessage::StdinEof],
                StreamViolation::UnexpectedStdin { got: "StdinEof" },
            ),
            (
                vec![ClientMessage::Info, ClientMessage::StdinEof],
                StreamViolation::UnexpectedStdin { got: "StdinEof" },
            ),
            (
                vec![ClientMessage::Info, ClientMessage::Info],
                StreamViolation::SecondRequest { got: "Info" },
            ),
            (
                vec![
                    start(true),
                    ClientMessage::StdinEof,
                    ClientMessage::StdinData(vec![]),
                ],
                StreamViolation::UnexpectedStdin { got: "StdinData" },
            ),
            (
                vec![
                    start(true),
                    ClientMessage::StdinData(vec![0; MAX_STDIN_CHUNK + 1]),
                ],
                StreamViolation::StdinChunkTooLarge {
                    len: MAX_STDIN_CHUNK + 1,
                    max: MAX_STDIN_CHUNK,
                },
            ),
            (
                vec![start(true)],
                StreamViolation::EndedEarly {
                    missing: "StdinEof",
                },
            ),
            // spec: QX-TERM-3
            (
                vec![ClientMessage::Resize(SIZE)],
                StreamViolation::NotARequest { got: "Resize" },
            ),
            (
                vec![start(true), ClientMessage::Resize(SIZE)],
                StreamViolation::UnexpectedStdin { got: "Resize" },
            ),
            (
                vec![
                    terminal(),
                    ClientMessage::StdinEof,
                    ClientMessage::Resize(SIZE),
                ],
                StreamViolation::UnexpectedStdin { got: "Resize" },
            ),
            (
                vec![terminal(), terminal()],
                StreamViolation::SecondRequest {
                    got: "StartTerminal",
                },
            ),
            (
                vec![
                    terminal(),
                    ClientMessage::StdinData(vec![0; MAX_STDIN_CHUNK + 1]),
                ],
                StreamViolation::StdinChunkTooLarge {
                    len: MAX_STDIN_CHUNK + 1,
                    max: MAX_STDIN_CHUNK,
                },
            ),
            (
                vec![terminal(), ClientMessage::Resize(SIZE)],
                StreamViolation::EndedEarly {
                    missing: "StdinEof",
                },
            ),
        ];
        for (frames, want) in cases {
            let (mut s, r) = feed(&frames);
            assert_eq!(r, Err(want), "{frames:?}");
            assert_eq!(want.code(), ErrorCode::ProtocolViolation);
            // It keeps refusing.
            assert_eq!(s.on_frame(&list), Err(want));
            assert_eq!(s.on_finish(), Err(want));
        }
        let mut s = ControlStreamState::new();
        s.on_frame(&list).unwrap();
        s.on_finish().unwrap();
        assert_eq!(
            s.on_frame(&ClientMessage::StdinEof),
            Err(StreamViolation::FrameAfterEnd {
                got: "StdinEof",
                requirement: "QX-STREAM-8"
            })
        );
    }

    #[test]
    fn responses_match_requests() {
        // spec: QX-STREAM-9, QX-STREAM-10
        let error = ServerMessage::Error(ErrorResponse {
            code: ErrorCode::NotFound,
            message: "no such job".into(),
            spawn: None,
        });
        let started = ServerMessage::Started(StartedResponse { job: JOB, pid: 1 });
        let st = ServerMessage::Status(status(JOB));
        let item = ServerMessage::ListItem(status(JOB));
        let attached = ServerMessage::Attached { job: JOB };
        let status_req = ClientMessage::Status(StatusRequest { job: JOB });
        let list_req = ClientMessage::List(ListRequest::default());
        let attach_req = ClientMessage::Attach(AttachRequest { job: JOB, from: 0 });
        let query_req = ClientMessage::ListQuery(ListQuery::all(10));
        let entry = ServerMessage::ListEntry(ListEntry {
            seq: 1,
            status: status(JOB),
        });
        let page_end = ServerMessage::ListPageEnd { next: None };
        let info = ServerMessage::Info(crate::ServerInfo {
            server_version: "0.1.0".into(),
            running_jobs: 1,
            max_jobs: 2,
            caller_running_jobs: 0,
            max_jobs_per_user: 1,
            cpus: 4,
        });
        // spec: QX-INFO-1 — Info is answered by Info or Error, nothing else, and no
        // other request is answered by Info.
        for wrong in [&st, &ServerMessage::ListEnd, &page_end, &attached] {
            let mut s = ResponseState::for_request(&ClientMessage::Info).unwrap();
            assert!(
                matches!(
                    s.on_frame(wrong),
                    Err(StreamViolation::WrongResponse {
                        request: "Info",
                        ..
                    })
                ),
                "{wrong:?}"
            );
        }
        for req in [&status_req, &list_req, &attach_req, &query_req] {
            let mut s = ResponseState::for_request(req).unwrap();
            assert!(
                matches!(
                    s.on_frame(&info),
                    Err(StreamViolation::WrongResponse { got: "Info", .. })
                ),
                "{req:?}"
            );
        }
        let mut s = ResponseState::for_request(&ClientMessage::Info).unwrap();
        assert_eq!(s.on_frame(&info), Ok(true));
        assert!(matches!(
            s.on_frame(&info),
            Err(StreamViolation::FrameAfterEnd { .. })
        ));
        // A page answer never mixes with the old List answer.
        let mut s = ResponseState::for_request(&query_req).unwrap();
        assert!(matches!(
            s.on_frame(&item),
            Err(StreamViolation::WrongResponse {
                got: "ListItem",
                request: "ListQuery"
            })
        ));
        let mut s = ResponseState::for_request(&list_req).unwrap();
        assert!(matches!(
            s.on_frame(&page_end),
            Err(StreamViolation::WrongResponse {
                got: "ListPageEnd",
                request: "List"
            })
        ));
        let ok: Vec<(&ClientMessage, Vec<&ServerMessage>)> = vec![
            (&status_req, vec![&st]),
            (&status_req, vec![&error]),
            (&list_req, vec![&ServerMessage::ListEnd]),
            (&list_req, vec![&item, &item, &ServerMessage::ListEnd]),
            (&list_req, vec![&item, &error]),
            (&attach_req, vec![&attached]),
            (&query_req, vec![&page_end]),
            (&query_req, vec![&entry, &entry, &page_end]),
            (&query_req, vec![&entry, &error]),
            (&ClientMessage::Info, vec![&info]),
            (&ClientMessage::Info, vec![&error]),
        ];
        for (req, answers) in ok {
            let mut s = ResponseState::for_request(req).unwrap();
            for (i, a) in answers.iter().enumerate() {
                assert_eq!(s.on_frame(a), Ok(i + 1 == answers.len()), "{req:?} {a:?}");
            }
            assert!(s.is_complete());
            s.on_finish().unwrap();
        }
        let start_req = start(false);
        let mut s = ResponseState::for_request(&start_req).unwrap();
        s.on_frame(&started).unwrap();
        assert!(matches!(
            s.on_frame(&started),
            Err(StreamViolation::FrameAfterEnd { .. })
        ));
        let mut s = ResponseState::for_request(&start_req).unwrap();
        assert_eq!(
            s.on_frame(&st),
            Err(StreamViolation::WrongResponse {
                got: "Status",
                request: "Start"
            })
        );
        let mut s = ResponseState::for_request(&list_req).unwrap();
        s.on_frame(&item).unwrap();
        assert!(matches!(
            s.on_finish(),
            Err(StreamViolation::EndedEarly { .. })
        ));
        assert!(ResponseState::for_request(&ClientMessage::StdinEof).is_none());
    }

    #[test]
    fn output_stream_offsets_are_contiguous() {
        // spec: QX-STREAM-11 .. QX-STREAM-13, QX-LIMIT-11
        let header = OutputFrame::Header {
            request_stream: 0,
            job: JOB,
            from: 10,
        };
        let data = |offset: u64, len: usize| OutputFrame::Data {
            stream: crate::OutputStream::Stdout,
            offset,
            data: vec![b'x'; len],
        };
        let end = OutputFrame::End {
            status: status(JOB),
        };
        let mut s = OutputStreamState::new();
        for f in [
            &header,
            &data(10, 5),
            &data(15, 0),
            &data(15, MAX_OUTPUT_CHUNK),
            &end,
        ] {
            s.on_frame(f).unwrap();
        }
        assert_eq!(s.job(), Some(JOB));
        assert_eq!(s.next_offset(), Some(15 + MAX_OUTPUT_CHUNK as u64));
        s.on_finish().unwrap();

        let bad: Vec<(Vec<OutputFrame>, StreamViolation)> = vec![
            (vec![data(0, 1)], StreamViolation::BadHeader { got: "Data" }),
            (
                vec![header.clone(), header.clone()],
                StreamViolation::BadHeader { got: "Header" },
            ),
            (
                vec![header.clone(), data(11, 1)],
                StreamViolation::OffsetGap {
                    got: 11,
                    expected: 10,
                },
            ),
            (
                vec![header.clone(), data(10, MAX_OUTPUT_CHUNK + 1)],
                StreamViolation::OutputChunkTooLarge {
                    len: MAX_OUTPUT_CHUNK + 1,
                    max: MAX_OUTPUT_CHUNK,
                },
            ),
            (
                vec![header.clone(), end.clone(), data(10, 1)],
                StreamViolation::FrameAfterEnd {
                    got: "Data",
                    requirement: "QX-STREAM-13",
                },
            ),
        ];
        for (frames, want) in bad {
            let mut s = OutputStreamState::new();
            let got = frames.iter().try_for_each(|f| s.on_frame(f));
            assert_eq!(got, Err(want));
            assert_eq!(s.on_finish(), Err(want));
        }
        let mut s = OutputStreamState::new();
        s.on_frame(&header).unwrap();
        assert_eq!(
            s.on_frame(&OutputFrame::End {
                status: status(JobId::from_u128(8))
            }),
            Err(StreamViolation::WrongJob {
                got: JobId::from_u128(8),
                expected: JOB
            })
        );
        let mut s = OutputStreamState::new();
        s.on_frame(&header).unwrap();
        assert_eq!(
            s.on_finish(),
            Err(StreamViolation::EndedEarly { missing: "End" })
        );
    }
}
