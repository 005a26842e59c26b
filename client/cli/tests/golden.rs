//! Human output of `status` and `list` against golden files (pueue-style templates).
//!
//! The statuses are fixed values, so no normalisation is needed here; the CLI tests
//! over real QUIC check the same renderer end to end with ids and times normalised.
//! Set `UPDATE_GOLDEN=1` to rewrite the files after an intended change.

use std::path::PathBuf;

use qexec_cli::render::{JobJson, list_human, status_human};
use qexec_protocol::{
    JobId, JobState, JobStatus, Limits, ResourceUsage, SpawnFailure, StopReason, Termination,
};

/// 2026-11-28 19:00:00 UTC.
const T0: u64 = 1_795_892_400_000;

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create)",
            path.display()
        )
    });
    assert_eq!(actual, expected, "output differs from {}", path.display());
}

fn base(id: u128, argv: &[&[u8]], state: JobState) -> JobStatus {
    JobStatus {
        id: JobId::from_u128(id),
        owner: "alice".into(),
        argv: argv.iter().map(|a| a.to_vec()).collect(),
        state,
        pid: Some(4242),
        started_at_ms: T0,
        ended_at_ms: Some(T0 + 1_250),
        stdout_bytes: 1536,
        stderr_bytes: 12,
        output_truncated: false,
        oom_killed: false,
        limits: Limits::default(),
        usage: ResourceUsage::default(),
    }
}

fn jobs() -> Vec<JobStatus> {
    let mut running = base(
        0x0123_4567_89ab_cdef_0011_2233_4455_6677,
        &[b"sleep", b"600"],
        JobState::Running,
    );
    running.ended_at_ms = None;
    running.owner = "bob".into();
    running.limits = Limits {
        cpu_millis: Some(500),
        memory_bytes: Some(256 << 20),
        io_read_bps: Some(10 << 20),
        io_write_bps: None,
        io_read_iops: None,
        io_write_iops: Some(100),
        pids: Some(64),
    };
    running.usage = ResourceUsage {
        cpu_usec: Some(1_500),
        cpu_throttled_usec: Some(0),
        memory_peak_bytes: Some(3 << 20),
        io_read_bytes: Some(0),
        io_write_bytes: Some(4096),
    };
    let exited = base(
        0xfedc_ba98_7654_3210_0000_0000_0000_0001,
        &[b"sh", b"-c", b"echo hi; exit 3"],
        JobState::Exited {
            termination: Termination::Exited(3),
        },
    );
    let mut stopped = base(
        0x0000_0000_0000_0000_0000_0000_0000_0002,
        &[b"yes"],
        JobState::Stopped {
            reason: StopReason::Timeout,
            termination: Termination::Signaled(9),
        },
    );
    stopped.output_truncated = true;
    stopped.ended_at_ms = Some(T0 + 3_723_000);
    let failed = base(
        0x0000_0000_0000_0000_0000_0000_0000_0003,
        &[b"no-such-program", b"\xff"],
        JobState::FailedToStart {
            failure: SpawnFailure::NotFound,
            message: "no-such-program: not found on PATH".into(),
        },
    );
    vec![running, exited, stopped, failed]
}

#[test]
fn status_human_output() {
    let now = T0 + 65_000;
    let out: Vec<String> = jobs().iter().map(|j| status_human(j, now)).collect();
    golden("status.txt", &out.join("---\n"));
}

#[test]
fn list_human_output() {
    golden("list.txt", &list_human(&jobs(), T0 + 65_000));
    assert_eq!(list_human(&[], T0), "no jobs\n");
}

#[test]
fn json_output_round_trips_and_marks_non_utf8() {
    let jobs = jobs();
    let json: Vec<JobJson> = jobs.iter().map(JobJson::from).collect();
    let text = serde_json::to_string_pretty(&json).unwrap();
    let back: Vec<JobJson> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, json);
    assert_eq!(back[0].id, "0123456789abcdef0011223344556677");
    assert_eq!(back[0].state, "running");
    assert_eq!(back[0].limits.memory_bytes, Some(256 << 20));
    assert_eq!(back[1].exit_code, Some(3));
    assert_eq!(back[1].argv_hex, None);
    assert_eq!(back[2].stop_reason.as_deref(), Some("timeout"));
    assert_eq!(back[2].signal, Some(9));
    assert_eq!(back[3].spawn_failure.as_deref(), Some("not_found"));
    assert_eq!(back[3].argv[1], "\u{fffd}");
    assert_eq!(
        back[3].argv_hex,
        Some(vec![
            "6e6f2d737563682d70726f6772616d".to_owned(),
            "ff".to_owned()
        ])
    );
    golden("status.json", &text);
}
