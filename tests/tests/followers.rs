//! Followers that never read cost qexecd a bounded amount of memory and no file
//! descriptor each (spec: QX-SEC-4; issue 14, item 3).
//!
//! A `qexecd` child process (so its RSS and fds are its own) serves one finished job
//! with 8 MiB of output; 4 connections open 256 `Attach` each and never read. Each
//! output stream takes what its 64 KiB stream window accepts, then the server may
//! hold at most one more read chunk (64 KiB) for it. Measured: qexecd's RSS and open
//! fds before and after, once every stream's window is full.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use qexec_tests::TestClient;
use qexec_tests::daemon::Daemon;
use qexec_tls::{self as pki, CertKeyPem};

type Result = anyhow::Result<()>;

/// Connections and never-read followers on each.
const CONNECTIONS: usize = 4;
const FOLLOWERS_PER_CONNECTION: usize = 256;
/// The stream window the test client advertises per output stream.
const STREAM_WINDOW: u32 = 64 << 10;
/// The job's output: well past one window plus one read chunk per follower.
const OUTPUT_BYTES: u64 = 8 << 20;
/// What all the stalled followers together may add to qexecd's RSS.
const RSS_BOUND_MIB: u64 = 128;
/// Fds qexecd may open for all of them together (none per follower).
const FD_BOUND: usize = 16;
/// Longest wait for any one step.
const WAIT: Duration = Duration::from_secs(60);

/// The qexecd child: isolation off (no sandbox without it: `user` jobs would be
/// refused as host root, spec QX-SBX-13; this test accepts it), room for every
/// follower.
async fn daemon() -> anyhow::Result<Daemon> {
    Daemon::start(
        "followers",
        &[
            "--max-streams",
            "1024",
            "--max-subscriptions",
            "1024",
            "--no-isolation",
            "--insecure-root-jobs",
        ],
    )
    .await
}

/// A connection as `alice` whose output streams get a [`STREAM_WINDOW`] window each.
async fn connect(d: &Daemon) -> anyhow::Result<TestClient> {
    let paths = pki::PkiPaths::new(d.pki_dir());
    let user = paths.user("alice");
    let alice = CertKeyPem {
        cert_pem: std::fs::read_to_string(user.cert)?,
        key_pem: std::fs::read_to_string(user.key)?,
    };
    let ca_pem = std::fs::read_to_string(&paths.ca)?;
    let tls = pki::client_config_pem(&ca_pem, Some(&alice))?.config;
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    let mut cfg = pki::quic_client_config(tls)?;
    let mut transport = pki::client_transport();
    transport
        .stream_receive_window(STREAM_WINDOW.into())
        .receive_window(
            // Room for every stalled stream's window and the answers besides.
            (2 * u64::from(STREAM_WINDOW) * FOLLOWERS_PER_CONNECTION as u64).try_into()?,
        );
    cfg.transport_config(Arc::new(transport));
    endpoint.set_default_client_config(cfg);
    let conn = tokio::time::timeout(WAIT, endpoint.connect(d.addr(), "localhost")?)
        .await
        .context("handshake timed out")??;
    Ok(TestClient { conn, endpoint })
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

/// Open fds of `pid`.
fn fd_count(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

#[test]
fn a_thousand_never_read_followers_cost_bounded_memory_and_no_fd_each() -> Result {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let d = daemon().await?;
        let pid = d.pid().context("qexecd is not running")?;
        let mut conns = Vec::new();
        for _ in 0..CONNECTIONS {
            conns.push(connect(&d).await?);
        }
        let size = OUTPUT_BYTES.to_string();
        let job = conns[0]
            .start(&["head", "-c", &size, "/dev/zero"], false)
            .await?;
        // One follower that reads everything: the job has ended and its log is whole.
        let whole = conns[0].attach(job, 0).await?.read_to_end().await?;
        ensure!(whole.data.len() as u64 == OUTPUT_BYTES, "job output incomplete");

        let (rss_before, fds_before) = (rss_kib(pid)?, fd_count(pid)?);
        let received_before: Vec<u64> = conns.iter().map(|c| c.conn.stats().udp_rx.bytes).collect();
        let mut stalled = Vec::new();
        for (ci, c) in conns.iter().enumerate() {
            for i in 0..FOLLOWERS_PER_CONNECTION {
                // Accepted and kept, never read: the server fills its window only.
                stalled.push(
                    c.attach(job, 0)
                        .await
                        .with_context(|| format!("attach {i} on connection {ci}"))?
                        .recv,
                );
            }
        }
        // Every stream's window is full once each connection received that much.
        let want = u64::from(STREAM_WINDOW) * FOLLOWERS_PER_CONNECTION as u64;
        let deadline = Instant::now() + WAIT;
        for (c, before) in conns.iter().zip(&received_before) {
            while c.conn.stats().udp_rx.bytes - before < want {
                if Instant::now() > deadline {
                    bail!("the stalled followers' windows did not fill within {WAIT:?}");
                }
                // A request round trip on the same connection: lets the server's
                // pumps run, with no timed sleep.
                c.status(job).await?;
            }
            // One more round trip: the pumps have read their next chunk by now.
            c.status(job).await?;
        }
        let (rss_after, fds_after) = (rss_kib(pid)?, fd_count(pid)?);
        let grown_kib = rss_after.saturating_sub(rss_before);
        println!(
            "{} never-read followers: qexecd RSS {} → {} KiB (+{} KiB, {:.1} KiB each), fds {} → {}",
            stalled.len(),
            rss_before,
            rss_after,
            grown_kib,
            grown_kib as f64 / stalled.len() as f64,
            fds_before,
            fds_after
        );
        ensure!(
            grown_kib < RSS_BOUND_MIB << 10,
            "{} stalled followers raised qexecd's RSS by {grown_kib} KiB (bound {RSS_BOUND_MIB} MiB)",
            stalled.len()
        );
        ensure!(
            fds_after <= fds_before + FD_BOUND,
            "{} stalled followers raised qexecd's open fds from {fds_before} to {fds_after}",
            stalled.len()
        );
        drop(stalled);
        for c in conns {
            c.conn.close(0u32.into(), b"done");
        }
        Ok(())
    })
}
