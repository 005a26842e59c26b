//! `qexec-bench`: qexec against OpenSSH and the machine's limits (bench/README.md).
//!
//! One run starts its own `qexecd` (the binary built next to the harness) with a
//! throwaway PKI, its own `sshd` on a loopback port when OpenSSH is installed, and
//! measures the six sections of bench/README.md, each figure over several runs (median and
//! min–max), with ratios against baselines measured in the same run:
//! [`cold`], [`warm`], [`throughput`], [`hol`], [`fanout`], [`memory`], the terminal
//! keystroke latency of section 7, [`keystroke`], the job records of section 8,
//! [`records`], the worker pool over a local fleet of section 9, [`fleet`], and the
//! fuzz farm of section 10, [`farm`].

pub(crate) mod cold;
pub(crate) mod cpu;
pub(crate) mod delay;
pub(crate) mod fanout;
pub(crate) mod farm;
pub(crate) mod fleet;
pub(crate) mod hol;
pub(crate) mod keystroke;
pub(crate) mod memory;
pub(crate) mod procs;
pub(crate) mod records;
pub(crate) mod report;
pub(crate) mod stats;
pub(crate) mod throughput;
pub(crate) mod wakeup;
pub(crate) mod warm;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use qexec_client::{Client, OutputEvent};
use qexec_protocol::{JobStatus, StartRequest, Termination};

use procs::{Binaries, Qexecd, Sshd};

/// Sizes and repetitions of one harness run.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `quick` or `full`.
    pub(crate) mode: &'static str,
    /// Runs of every figure.
    pub(crate) runs: usize,
    /// Cold CLI invocations per run.
    pub(crate) cold_invocations: usize,
    /// Warm round trips per run.
    pub(crate) warm_jobs: usize,
    /// Bytes of the throughput job (1 GiB in a full run).
    pub(crate) stream_bytes: u64,
    /// Echo samples per head-of-line run.
    pub(crate) hol_samples: usize,
    /// Bytes the stalled follower's job writes.
    pub(crate) hol_stalled_bytes: u64,
    /// Followers in the fan-out.
    pub(crate) fanout_followers: usize,
    /// Connections the followers share.
    pub(crate) fanout_connections: usize,
    /// Bytes of the fan-out job (256 MiB in a full run).
    pub(crate) fanout_bytes: u64,
    /// Finished jobs before the second RSS reading (1,000 in a full run).
    pub(crate) memory_jobs: usize,
    /// One-byte echoes per keystroke figure (at least 500).
    pub(crate) keystroke_samples: usize,
    /// Finished jobs held while listing them (10,000 in a full run).
    pub(crate) record_jobs: usize,
    /// `/bin/true` jobs through the worker pool per fleet figure (10,000 in a full run).
    pub(crate) fleet_jobs: usize,
    /// Inputs of the fuzz farm's corpus (2,000 in a full run).
    pub(crate) farm_inputs: usize,
    /// Of those, crashing (20 in a full run).
    pub(crate) farm_crashing: usize,
}

impl Settings {
    /// The full benchmark (the sizes bench/README.md gives).
    pub(crate) fn full() -> Self {
        Self {
            mode: "full",
            runs: 5,
            cold_invocations: 20,
            warm_jobs: 500,
            stream_bytes: 1 << 30,
            hol_samples: 1000,
            hol_stalled_bytes: 256 << 20,
            fanout_followers: 64,
            fanout_connections: 8,
            fanout_bytes: 256 << 20,
            memory_jobs: 1000,
            keystroke_samples: 1000,
            record_jobs: 10_000,
            fleet_jobs: 10_000,
            farm_inputs: 2000,
            farm_crashing: 20,
        }
    }

    /// A smoke run (< 1 min): checks the harness works, not the numbers.
    pub(crate) fn quick() -> Self {
        Self {
            mode: "quick",
            runs: 1,
            cold_invocations: 3,
            warm_jobs: 50,
            stream_bytes: 64 << 20,
            hol_samples: 40,
            hol_stalled_bytes: 32 << 20,
            fanout_followers: 64,
            fanout_connections: 8,
            fanout_bytes: 4 << 20,
            memory_jobs: 200,
            keystroke_samples: 500,
            record_jobs: 1000,
            fleet_jobs: 1000,
            farm_inputs: 200,
            farm_crashing: 5,
        }
    }
}

/// What every section shares: settings, binaries, the PKI, the servers.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) settings: Settings,
    pub(crate) bins: Binaries,
    pub(crate) pki: tempfile::TempDir,
    /// qexecd without isolation (the default server of the measurements).
    pub(crate) plain: Qexecd,
    /// qexecd with its default settings: isolation on, and the job sandbox when the
    /// host allows it (spec/security.md QX-SBX-*). Sections 1 and 2 measure it too.
    pub(crate) default: Qexecd,
    /// OpenSSH, when installed.
    pub(crate) sshd: Option<Sshd>,
}

impl Ctx {
    /// The PKI directory.
    pub(crate) fn pki_dir(&self) -> PathBuf {
        self.pki.path().to_owned()
    }
}

/// A `StartRequest` for `argv` with default settings (no stdin, no follow).
pub(crate) fn request(argv: &[&str]) -> StartRequest {
    qexec_tests::start_request(argv, false)
}

/// Checks that a job exited 0.
pub(crate) fn expect_success(status: &JobStatus) -> anyhow::Result<()> {
    match status.state.termination() {
        Some(Termination::Exited(0)) => Ok(()),
        _ => anyhow::bail!(
            "job {} ({}) did not exit 0: {:?}",
            status.id,
            status
                .argv
                .iter()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
                .join(" "),
            status.state
        ),
    }
}

/// Runs `req` as `qexec run` does (follow, stop on detach) and collects its output.
pub(crate) async fn run_collect(
    client: &Client,
    req: StartRequest,
) -> anyhow::Result<(Vec<u8>, JobStatus)> {
    let mut job = client.run(req).await?;
    let output = job.output.as_mut().context("run did not follow")?;
    let mut data = Vec::new();
    while let Some(ev) = output.next().await? {
        match ev {
            OutputEvent::Data { data: d, .. } => data.extend_from_slice(&d),
            OutputEvent::End(status) => return Ok((data, *status)),
        }
    }
    anyhow::bail!("job {} ended without End", job.job)
}

/// Runs `req` as `qexec run` does and counts (without keeping) its output bytes.
pub(crate) async fn run_count(
    client: &Arc<Client>,
    req: StartRequest,
) -> anyhow::Result<(u64, JobStatus)> {
    let mut job = client.run(req).await?;
    let output = job.output.as_mut().context("run did not follow")?;
    let mut n = 0u64;
    while let Some(ev) = output.next().await? {
        match ev {
            OutputEvent::Data { data, .. } => n += data.len() as u64,
            OutputEvent::End(status) => return Ok((n, *status)),
        }
    }
    anyhow::bail!("job {} ended without End", job.job)
}
