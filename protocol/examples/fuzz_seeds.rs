//! Writes the seed corpus of the fuzz targets: a few valid frames per message family.
//!
//! Run from the repository root: `cargo run -p qexec-protocol --example fuzz_seeds`
//! (writes `fuzz/corpus/{frame_decoder,message_decoder}/seed-*`).

use std::error::Error;
use std::path::Path;

use qexec_protocol::{
    ClientMessage, ErrorCode, ErrorResponse, JobId, JobState, JobStatus, Limits, ListEntry,
    ListQuery, ListStateFilter, OutputFrame, OutputStream, ResourceUsage, ServerInfo,
    ServerMessage, StartRequest, StopReason, Termination, encode_into,
};
use serde::Serialize;

fn status(id: JobId, state: JobState) -> JobStatus {
    JobStatus {
        id,
        owner: "alice".into(),
        argv: vec![b"/bin/echo".to_vec(), b"hi".to_vec()],
        state,
        pid: Some(4242),
        started_at_ms: 1_764_000_000_000,
        ended_at_ms: Some(1_764_000_000_500),
        stdout_bytes: 3,
        stderr_bytes: 0,
        output_truncated: false,
        oom_killed: false,
        limits: Limits {
            memory_bytes: Some(64 << 20),
            pids: Some(64),
            ..Limits::default()
        },
        usage: ResourceUsage {
            cpu_usec: Some(1200),
            ..ResourceUsage::default()
        },
    }
}

/// A frame-decoder input: family byte, piece-size seed byte, then frames.
fn frames<T: Serialize>(family: u8, msgs: &[T]) -> Result<Vec<u8>, Box<dyn Error>> {
    let mut out = vec![family, 0x5a];
    for m in msgs {
        encode_into(m, &mut out)?;
    }
    Ok(out)
}

/// A message-decoder input: family byte, then one body.
fn body<T: Serialize>(family: u8, msg: &T) -> Result<Vec<u8>, Box<dyn Error>> {
    let mut out = vec![family];
    out.extend(postcard::to_stdvec(msg)?);
    Ok(out)
}

fn main() -> Result<(), Box<dyn Error>> {
    let job = JobId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
    let start = ClientMessage::Start(StartRequest {
        argv: vec![b"cat".to_vec()],
        env: vec![(b"PATH".to_vec(), b"/usr/bin:/bin".to_vec())],
        cwd: Some(b"/tmp".to_vec()),
        limits: Limits {
            cpu_millis: Some(500),
            ..Limits::default()
        },
        timeout_ms: Some(30_000),
        stdin: true,
        follow: true,
        stop_on_detach: true,
    });
    let client = [
        start.clone(),
        ClientMessage::StdinData(b"hello\n".to_vec()),
        ClientMessage::StdinEof,
    ];
    let exited = status(
        job,
        JobState::Exited {
            termination: Termination::Exited(0),
        },
    );
    let stopped = status(
        job,
        JobState::Stopped {
            reason: StopReason::Requested { by: "bob".into() },
            termination: Termination::Signaled(15),
        },
    );
    let server = [
        ServerMessage::ListItem(exited.clone()),
        ServerMessage::ListItem(stopped),
        ServerMessage::ListEnd,
    ];
    let error = [ServerMessage::Error(ErrorResponse {
        code: ErrorCode::NotFound,
        message: "job 0123456789abcdef0011223344556677 not found".into(),
        spawn: None,
    })];
    let output = [
        OutputFrame::Header {
            request_stream: 4,
            job,
            from: 0,
        },
        OutputFrame::Data {
            stream: OutputStream::Stdout,
            offset: 0,
            data: b"hi\n".to_vec(),
        },
        OutputFrame::End {
            status: exited.clone(),
        },
    ];

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let query = ClientMessage::ListQuery(ListQuery {
        state: ListStateFilter::Ended,
        owner: Some("alice".into()),
        since_ms: Some(1_764_000_000_000),
        id_prefix: Some("0123".into()),
        limit: 50,
        cursor: Some(7),
        newest_first: true,
    });
    let page = [
        ServerMessage::ListEntry(ListEntry {
            seq: 8,
            status: exited.clone(),
        }),
        ServerMessage::ListPageEnd { next: Some(8) },
    ];
    let info = ServerMessage::Info(ServerInfo {
        server_version: "0.1.0".into(),
        running_jobs: 3,
        max_jobs: 1024,
        caller_running_jobs: 1,
        max_jobs_per_user: 256,
        cpus: 8,
    });
    let seeds: [(&str, &str, Vec<u8>); 11] = [
        ("frame_decoder", "seed-client", frames(0, &client)?),
        ("frame_decoder", "seed-server-list", frames(1, &server)?),
        ("frame_decoder", "seed-server-error", frames(1, &error)?),
        ("frame_decoder", "seed-output", frames(2, &output)?),
        ("message_decoder", "seed-start", body(0, &start)?),
        (
            "message_decoder",
            "seed-status",
            body(1, &ServerMessage::Status(exited))?,
        ),
        ("message_decoder", "seed-data", body(2, &output[1])?),
        ("message_decoder", "seed-list-query", body(0, &query)?),
        ("frame_decoder", "seed-server-list-page", frames(1, &page)?),
        (
            "message_decoder",
            "seed-info",
            body(0, &ClientMessage::Info)?,
        ),
        ("frame_decoder", "seed-server-info", frames(1, &[info])?),
    ];
    for (target, name, bytes) in seeds {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), &bytes)?;
        println!("{target}/{name}: {} bytes", bytes.len());
    }
    Ok(())
}
