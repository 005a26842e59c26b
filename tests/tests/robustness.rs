//! qexecd under load, faults and bad input, over real QUIC on loopback.
//!
//! Most tests run the service in-process ([`TestServer`]); the SIGTERM and SIGKILL tests
//! run the `qexecd` binary as a child process. The tests of this file run one at a
//! time on one shared runtime ([`serial`]): they count this process's file descriptors,
//! tokio tasks and child processes before and after.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use qexec_protocol::limits::{MAX_ARGV, MAX_COMMAND_BYTES, MAX_ENV};
use qexec_protocol::{
    ClientMessage, ErrorCode, JobId, JobState, ServerMessage, StartRequest, StopReason,
    Termination, frame,
};
use qexec_server::service::ServerConfig;
use qexec_tests::TestServer;
use qexec_tests::conformance::Config;
use qexec_tests::conformance::wire::{self, Answer, End, Output, Peer, expect_fault, start_req};
use qexec_tests::daemon::Daemon;
use qexec_tls::{self as pki, CertKeyPem};
use tokio::net::UdpSocket;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;

type Result = anyhow::Result<()>;

/// Runs one test body on the runtime all tests here share, one test at a time: they
/// count this process's file descriptors, tokio tasks and child processes, so no other
/// test may create a runtime or a socket meanwhile.
fn serial(body: impl Future<Output = Result>) -> Result {
    static SERIAL: Mutex<()> = Mutex::new(());
    static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    RUNTIME.block_on(body)
}

/// Request deadline and idle timeout of the servers here: short, so slow peers are
/// cut off within the test's time.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for any single event.
const WAIT: Duration = Duration::from_secs(30);

async fn server() -> anyhow::Result<TestServer> {
    TestServer::start_with(tune).await
}

fn tune(c: &mut ServerConfig) {
    c.request_timeout = REQUEST_TIMEOUT;
    c.idle_timeout = IDLE_TIMEOUT;
    c.keep_alive = Duration::from_secs(1);
    // A cut connection is a lost one: its `run` job is stopped after this grace
    // period (spec: QX-STREAM-24), kept short here.
    c.detach_grace = Duration::from_millis(500);
    c.max_jobs = 4096;
    c.max_jobs_per_user = 4096;
}

fn config(server: &TestServer, addr: SocketAddr) -> Config {
    let id = |n: &str| server.identity(n).expect("default identity").clone();
    let mut c = Config::new(addr, server.pki.ca.cert_pem().to_owned(), id("alice"));
    c.user2 = Some(id("bob"));
    c.wait = WAIT;
    c.request_deadline = REQUEST_TIMEOUT;
    c
}

// ---------------------------------------------------------------------------------
// Leak accounting
// ---------------------------------------------------------------------------------

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// `(pid, state)` of every child process of this process.
fn children() -> Vec<(i32, char)> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may contain spaces: split after the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (Some(state), Some(ppid)) = (f.next(), f.next()) else {
            continue;
        };
        if ppid == me {
            let pid = head.split_whitespace().next().and_then(|p| p.parse().ok());
            if let Some(pid) = pid {
                out.push((pid, state.chars().next().unwrap_or('?')));
            }
        }
    }
    out
}

/// Every directory under /sys/fs/cgroup (3 levels) whose name mentions one of `jobs`.
fn job_cgroups(jobs: &HashSet<String>) -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, jobs: &HashSet<String>, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            if jobs.iter().any(|j| name.contains(j.as_str())) {
                out.push(e.path());
            }
            if depth > 0 {
                walk(&e.path(), depth - 1, jobs, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), 3, jobs, &mut out);
    out
}

/// Resource counts taken before a server started.
struct Baseline {
    fds: usize,
    tasks: usize,
}

impl Baseline {
    fn take() -> Self {
        Self {
            fds: open_fds(),
            tasks: tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks(),
        }
    }

    /// After the server stopped: nothing it made is left. File descriptors and tasks
    /// are released asynchronously (socket drivers, blocking-pool reads), so they are
    /// checked until they match or [`WAIT`] passes.
    async fn assert_clean(&self, jobs: &[JobId]) -> Result {
        let deadline = Instant::now() + WAIT;
        loop {
            let fds = open_fds();
            let tasks = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks();
            let kids = children();
            if fds <= self.fds && tasks <= self.tasks && kids.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "leaked after shutdown: fds {fds} (before {}), tokio tasks {tasks} (before \
                     {}), child processes {kids:?} (state Z = zombie)",
                    self.fds,
                    self.tasks
                );
            }
            // Nothing to wait on for an fd count; check again shortly.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let names: HashSet<String> = jobs.iter().map(ToString::to_string).collect();
        let cgroups = job_cgroups(&names);
        ensure!(cgroups.is_empty(), "job cgroups left behind: {cgroups:?}");
        Ok(())
    }
}

// ---------------------------------------------------------------------------------
// Output-stream routing: many requests in flight on one connection
// ---------------------------------------------------------------------------------

enum Slot {
    Waiting(oneshot::Sender<anyhow::Result<Output>>),
    Ready(Box<anyhow::Result<Output>>),
}

/// Reads every output stream of a connection and hands each to the request whose
/// control stream it names (`Header.request_stream`); it may arrive before or after
/// the request's answer (spec: QX-STREAM-11).
#[derive(Clone)]
struct Router {
    slots: Arc<Mutex<HashMap<u64, Slot>>>,
}

impl Router {
    fn start(peer: &Peer, tasks: &mut JoinSet<()>) -> Self {
        let router = Router {
            slots: Arc::default(),
        };
        let conn = peer.conn.clone();
        let r = router.clone();
        tasks.spawn(async move {
            let mut readers = JoinSet::new();
            while let Ok(recv) = conn.accept_uni().await {
                let r = r.clone();
                readers.spawn(async move {
                    match wire::read_output(recv, WAIT).await {
                        Ok(out) => r.deliver(out.request_stream, Ok(out)),
                        Err(e) => eprintln!("output stream failed: {e:#}"),
                    }
                });
            }
            while readers.join_next().await.is_some() {}
        });
        router
    }

    fn deliver(&self, stream: u64, out: anyhow::Result<Output>) {
        let mut slots = self.slots.lock().unwrap();
        match slots.remove(&stream) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(out);
            }
            _ => {
                slots.insert(stream, Slot::Ready(Box::new(out)));
            }
        }
    }

    async fn output(&self, stream: u64) -> anyhow::Result<Output> {
        let rx = {
            let mut slots = self.slots.lock().unwrap();
            match slots.remove(&stream) {
                Some(Slot::Ready(out)) => return *out,
                _ => {
                    let (tx, rx) = oneshot::channel();
                    slots.insert(stream, Slot::Waiting(tx));
                    rx
                }
            }
        };
        tokio::time::timeout(WAIT, rx)
            .await
            .with_context(|| format!("no output stream for control stream {stream}"))?
            .context("output router ended")?
    }
}

/// FNV-1a, to compare outputs by checksum.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn seq_output(n: u32) -> Vec<u8> {
    (1..=n)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect()
}

// ---------------------------------------------------------------------------------
// Load
// ---------------------------------------------------------------------------------

/// 1,000 short jobs over 50 connections, 200 of them followed at any time; every
/// follower's bytes match the job's output; nothing leaks.
#[test]
fn load_1000_jobs_50_connections_200_followers() -> Result {
    serial(load_1000_jobs_50_connections_200_followers_body())
}

async fn load_1000_jobs_50_connections_200_followers_body() -> Result {
    const JOBS: usize = 1000;
    const CONNECTIONS: usize = 50;
    const FOLLOWERS: usize = 200;
    let baseline = Baseline::take();
    // The protocol's 10 s request deadline and the default 60 s idle timeout: on a
    // loaded 2-core machine a Start can wait longer than the 3 s the other tests use.
    let server = TestServer::start_with(|c| {
        tune(c);
        c.request_timeout = qexec_protocol::limits::REQUEST_DEADLINE;
        c.idle_timeout = Duration::from_secs(60);
    })
    .await?;
    let cfg = config(&server, server.addr);
    let t = Instant::now();
    let mut connecting = JoinSet::new();
    for _ in 0..CONNECTIONS {
        let cfg = cfg.clone();
        connecting.spawn(async move { Peer::user(&cfg).await });
    }
    let mut routers = JoinSet::new();
    let mut peers = Vec::new();
    while let Some(peer) = connecting.join_next().await {
        let peer = peer??;
        let router = Router::start(&peer, &mut routers);
        peers.push(Arc::new((peer, router)));
    }
    println!("{CONNECTIONS} connections in {:.1?}", t.elapsed());
    let started = Instant::now();
    let followers = Arc::new(Semaphore::new(FOLLOWERS));
    let mut jobs = JoinSet::new();
    for i in 0..JOBS {
        let pr = peers[i % CONNECTIONS].clone();
        let followers = followers.clone();
        jobs.spawn(async move {
            let _permit = followers.acquire_owned().await?;
            let (peer, router) = &*pr;
            let n = 20 + (i as u32 * 37) % 3000;
            let (s, stream) = peer
                .start(start_req(&[b"seq", b"1", n.to_string().as_bytes()], true))
                .await?;
            let out = router.output(stream).await?;
            let want = seq_output(n);
            ensure!(
                out.job == s.job && fnv(&out.data) == fnv(&want) && out.data.len() == want.len(),
                "job {i} ({}): follower got {} bytes (checksum {:x}), the job wrote {} (checksum {:x})",
                s.job,
                out.data.len(),
                fnv(&out.data),
                want.len(),
                fnv(&want)
            );
            ensure!(
                out.status.output_bytes() == want.len() as u64
                    && out.status.state.termination() == Some(Termination::Exited(0)),
                "job {i}: final status {:?}, {} output bytes",
                out.status.state,
                out.status.output_bytes()
            );
            Ok::<_, anyhow::Error>(s.job)
        });
    }
    let mut ids = Vec::with_capacity(JOBS);
    while let Some(r) = jobs.join_next().await {
        ids.push(r??);
    }
    let elapsed = started.elapsed();
    println!(
        "{JOBS} jobs over {CONNECTIONS} connections, {FOLLOWERS} followers at once: {elapsed:.1?} \
         ({:.0} jobs/s)",
        JOBS as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(ids.len(), JOBS);
    for pr in &peers {
        pr.0.conn.close(0u32.into(), b"done");
    }
    let t = Instant::now();
    let mut closing = JoinSet::new();
    for pr in peers {
        closing.spawn(async move { pr.0.endpoint.wait_idle().await });
    }
    while closing.join_next().await.is_some() {}
    routers.shutdown().await;
    println!("connections closed in {:.1?}", t.elapsed());
    let t = Instant::now();
    server.stop().await?;
    println!("server stopped in {:.1?}", t.elapsed());
    let t = Instant::now();
    baseline.assert_clean(&ids).await?;
    println!("no leaks (checked in {:.1?})", t.elapsed());
    Ok(())
}

// ---------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------

/// A UDP relay between a client and the server; [`Relay::cut`] drops every packet
/// from then on in both directions, as if the client machine had vanished (no
/// CONNECTION_CLOSE, no reset: the server learns only from its idle timeout).
struct Relay {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(server: SocketAddr) -> anyhow::Result<Relay> {
        let front = UdpSocket::bind("127.0.0.1:0").await?;
        let back = UdpSocket::bind("127.0.0.1:0").await?;
        back.connect(server).await?;
        let addr = front.local_addr()?;
        let (cut, mut is_cut) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut client = None;
            let (mut a, mut b) = (vec![0u8; 65536], vec![0u8; 65536]);
            loop {
                tokio::select! {
                    _ = is_cut.changed() => return,
                    r = front.recv_from(&mut a) => {
                        let Ok((n, from)) = r else { return };
                        client = Some(from);
                        let _ = back.send(&a[..n]).await;
                    }
                    r = back.recv(&mut b) => {
                        let Ok(n) = r else { return };
                        if let Some(c) = client {
                            let _ = front.send_to(&b[..n], c).await;
                        }
                    }
                }
            }
        });
        Ok(Relay { addr, cut, task })
    }

    async fn cut(self) {
        self.cut.send_replace(true);
        let _ = self.task.await;
    }
}

/// A client vanishes while it follows a job mid-output and while it is in the middle
/// of a stdin frame: the server notices (idle timeout), closes the job's stdin, ends
/// the subscription, and keeps serving; nothing leaks.
#[test]
fn client_killed_mid_stream() -> Result {
    serial(client_killed_mid_stream_body())
}

async fn client_killed_mid_stream_body() -> Result {
    let baseline = Baseline::take();
    let server = server().await?;
    let relay = Relay::start(server.addr).await?;
    let doomed = Peer::user(&config(&server, relay.addr)).await?;
    let direct = Peer::user(&config(&server, server.addr)).await?;

    // A follower mid-stream: a job that writes 64 MiB, read only a little.
    let big: [&[u8]; 4] = [b"head", b"-c", b"67108864", b"/dev/zero"];
    let (producer, _) = doomed.start(start_req(&big, true)).await?;
    let mut out = tokio::time::timeout(WAIT, doomed.conn.accept_uni()).await??;
    let mut some = [0u8; 4096];
    tokio::time::timeout(WAIT, out.read_exact(&mut some)).await??;
    // Half of a StdinData frame to a `cat`.
    let mut req = start_req(&[b"cat"], false);
    req.stdin = true;
    let start = ClientMessage::Start(req);
    let (mut send, mut recv) = doomed.open(&frame::encode(&start)?).await?;
    let answer = wire::read_answer(&mut recv, WAIT).await.checked(&start)?;
    let [ServerMessage::Started(cat)] = answer.as_slice() else {
        bail!("Start answered {answer:?}");
    };
    let data = frame::encode(&ClientMessage::StdinData(b"partial".to_vec()))?;
    send.write_all(&data[..4]).await?;

    relay.cut().await;

    // cat's stdin is closed once the server gives the connection up; it exits 0 with
    // nothing written (a partial frame is never delivered).
    let cat_end = direct.wait_ended(cat.job).await?;
    ensure!(
        cat_end.state.termination() == Some(Termination::Exited(0)) && cat_end.output_bytes() == 0,
        "cat after its client vanished mid-frame: {:?}, {} bytes",
        cat_end.state,
        cat_end.output_bytes()
    );
    let producer_end = direct.wait_ended(producer.job).await?;
    ensure!(
        producer_end.output_bytes() == 64 << 20,
        "the producer's output was not stored whole: {} bytes",
        producer_end.output_bytes()
    );
    direct.list().await?;
    drop((out, send, recv, doomed, direct));
    server.stop().await?;
    baseline.assert_clean(&[producer.job, cat.job]).await
}

/// A `run`-style job (stop_on_detach, followed) whose connection drops: stopped with
/// reason `Detached` once the grace period is over (spec: QX-STREAM-17, QX-STREAM-24).
#[test]
fn dropped_connection_stops_run_job() -> Result {
    serial(dropped_connection_stops_run_job_body())
}

async fn dropped_connection_stops_run_job_body() -> Result {
    let baseline = Baseline::take();
    let server = server().await?;
    let relay = Relay::start(server.addr).await?;
    let doomed = Peer::user(&config(&server, relay.addr)).await?;
    // Watched by the viewer: a follower with the owner's identity would keep the job
    // alive past the grace period (spec: QX-STREAM-24).
    let auditor = server
        .identity("auditor")
        .expect("default identity")
        .clone();
    let direct = Peer::connect(&config(&server, server.addr), &auditor).await?;
    let mut req = start_req(&[b"sh", b"-c", b"echo started; exec sleep 300"], true);
    req.stop_on_detach = true;
    req.timeout_ms = None;
    let (s, _) = doomed.start(req).await?;
    let mut out = tokio::time::timeout(WAIT, doomed.conn.accept_uni()).await??;
    let mut first = [0u8; 1];
    tokio::time::timeout(WAIT, out.read_exact(&mut first)).await??;

    let cut_at = Instant::now();
    relay.cut().await;
    let end = direct.wait_ended(s.job).await?;
    ensure!(
        matches!(
            end.state,
            JobState::Stopped {
                reason: StopReason::Detached,
                ..
            }
        ),
        "expected Stopped(Detached), got {:?}",
        end.state
    );
    println!(
        "run job stopped {:.1?} after its client vanished",
        cut_at.elapsed()
    );
    drop((out, doomed, direct));
    server.stop().await?;
    baseline.assert_clean(&[s.job]).await
}

/// A real qexecd for these tests (isolation off unless asked); its own cgroup subtree
/// (`qexec-robust-<name>-<pid>`), so another qexecd on the machine never interferes.
async fn daemon(name: &str, isolation: bool) -> anyhow::Result<Daemon> {
    // No sandbox without isolation: `user` jobs would be refused as host root
    // (spec: QX-SBX-13); these tests accept it.
    let args: &[&str] = if isolation {
        &[]
    } else {
        &["--no-isolation", "--insecure-root-jobs"]
    };
    Daemon::start(&format!("robust-{name}"), args).await
}

/// Conformance-peer settings for `alice` of the daemon's PKI.
fn peer_config(d: &Daemon) -> anyhow::Result<Config> {
    let paths = pki::PkiPaths::new(d.pki_dir());
    let user = paths.user("alice");
    let mut c = Config::new(
        d.addr(),
        std::fs::read_to_string(&paths.ca)?,
        CertKeyPem {
            cert_pem: std::fs::read_to_string(user.cert)?,
            key_pem: std::fs::read_to_string(user.key)?,
        },
    );
    c.wait = WAIT;
    Ok(c)
}

/// True while `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Waits until none of `pids` is alive.
async fn all_gone(pids: &[u32]) -> bool {
    let deadline = Instant::now() + WAIT;
    while pids.iter().any(|p| alive(*p)) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// SIGTERM while jobs run: jobs stopped, followers told, clean exit.
#[test]
fn sigterm_stops_jobs_and_exits_cleanly() -> Result {
    serial(sigterm_stops_jobs_and_exits_cleanly_body())
}

async fn sigterm_stops_jobs_and_exits_cleanly_body() -> Result {
    let mut d = daemon("sigterm", false).await?;
    let peer = Peer::user(&peer_config(&d)?).await?;
    let mut pids = Vec::new();
    let mut ids = Vec::new();
    for follow in [false, false, true] {
        let mut req = start_req(&[b"sleep", b"300"], follow);
        req.timeout_ms = None;
        let (s, _) = peer.start(req).await?;
        pids.push(s.pid);
        ids.push(s.job);
    }
    let follower = tokio::time::timeout(WAIT, peer.conn.accept_uni()).await??;
    let status = d.stop_status(Signal::SIGTERM).await?;
    ensure!(
        status.success(),
        "qexecd exited with {status} after SIGTERM"
    );
    ensure!(
        all_gone(&pids).await,
        "jobs still run after qexecd exited: {pids:?}"
    );
    // The follower got End { Stopped(Shutdown) } or a reset with ShuttingDown.
    match wire::read_output(follower, WAIT).await {
        Ok(out) => ensure!(
            matches!(
                out.status.state,
                JobState::Stopped {
                    reason: StopReason::Shutdown,
                    ..
                }
            ),
            "follower's End: {:?}",
            out.status.state
        ),
        Err(e) => ensure!(
            e.to_string().contains("shutting_down"),
            "follower after SIGTERM: {e:#}"
        ),
    }
    let names: HashSet<String> = ids.iter().map(ToString::to_string).collect();
    let cgroups = job_cgroups(&names);
    ensure!(
        cgroups.is_empty(),
        "job cgroups left after shutdown: {cgroups:?}"
    );
    Ok(())
}

/// SIGKILL leaves jobs behind; the next qexecd on the same state directory must find
/// none of them running (orphan processes killed, stale cgroups removed).
async fn sigkill_then_restart(isolation: bool) -> Result {
    let name = if isolation { "kill-iso" } else { "kill" };
    let mut d = daemon(name, isolation).await?;
    let peer = Peer::user(&peer_config(&d)?).await?;
    let mut pids = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut req = start_req(&[b"sleep", b"300"], false);
        req.timeout_ms = None;
        let (s, _) = peer.start(req).await?;
        pids.push(s.pid);
        ids.push(s.job);
    }
    drop(peer);
    d.stop(Signal::SIGKILL).await?;
    d.spawn().await?;
    let cleaned = all_gone(&pids).await;
    let names: HashSet<String> = ids.iter().map(ToString::to_string).collect();
    let stale = job_cgroups(&names);
    let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    // Whatever the outcome, leave nothing running.
    for p in &left {
        let _ = kill(Pid::from_raw(*p as i32), Signal::SIGKILL);
    }
    d.stop(Signal::SIGTERM).await?;
    ensure!(
        cleaned,
        "job processes {left:?} of the killed qexecd still run after a restart"
    );
    ensure!(
        stale.is_empty(),
        "stale job cgroups after a restart: {stale:?}"
    );
    Ok(())
}

/// With isolation (the default), each job's init dies with its qexecd.
#[test]
fn sigkill_then_restart_leaves_no_jobs() -> Result {
    serial(sigkill_then_restart_leaves_no_jobs_body())
}

async fn sigkill_then_restart_leaves_no_jobs_body() -> Result {
    sigkill_then_restart(true).await
}

/// Without isolation nothing ties a job to its qexecd: the restart must clean up.
#[test]
fn sigkill_then_restart_no_isolation_leaves_no_jobs() -> Result {
    serial(sigkill_then_restart_no_isolation_leaves_no_jobs_body())
}

async fn sigkill_then_restart_no_isolation_leaves_no_jobs_body() -> Result {
    sigkill_then_restart(false).await
}

// ---------------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------------

/// Every malformed-frame class of the spec, 20 times each, all on one connection at
/// once with good requests in between: each bad stream is closed with its code, every
/// good request is answered, the connection survives, nothing leaks.
#[test]
fn malformed_frame_storm() -> Result {
    serial(malformed_frame_storm_body())
}

async fn malformed_frame_storm_body() -> Result {
    let baseline = Baseline::take();
    let server = server().await?;
    let peer = Arc::new(Peer::user(&config(&server, server.addr)).await?);
    let status = frame::encode(&ClientMessage::Status(qexec_protocol::StatusRequest {
        job: JobId::from_u128(1),
    }))?;
    let mut two = status.clone();
    two.extend(frame::encode(&wire::list_msg())?);
    let pv = ErrorCode::ProtocolViolation;
    let classes: Vec<(&str, Vec<u8>, End, ErrorCode)> = vec![
        ("non-minimal prefix", vec![0x80, 0x00], End::Open, pv),
        (
            "declared length > 1 MiB",
            vec![0xff, 0xff, 0x7f],
            End::Open,
            ErrorCode::FrameTooLarge,
        ),
        (
            "continuation on the 3rd prefix byte",
            vec![0x80, 0x80, 0x81],
            End::Open,
            ErrorCode::FrameTooLarge,
        ),
        ("bad bool", vec![0x02, 0x03, 0x02], End::Finish, pv),
        (
            "trailing bytes",
            vec![0x03, 0x03, 0x00, 0x00],
            End::Finish,
            pv,
        ),
        ("empty body", vec![0x00], End::Finish, pv),
        ("FIN mid-frame", status[..6].to_vec(), End::Finish, pv),
        (
            "StdinData first",
            frame::encode(&ClientMessage::StdinData(vec![1]))?,
            End::Finish,
            pv,
        ),
        (
            "StdinEof first",
            frame::encode(&ClientMessage::StdinEof)?,
            End::Finish,
            pv,
        ),
        ("second request", two, End::Finish, pv),
        ("FIN before any frame", Vec::new(), End::Finish, pv),
    ];
    let mut tasks = JoinSet::new();
    for round in 0..20 {
        for (name, bytes, end, code) in &classes {
            let (peer, bytes, end, code, name) = (peer.clone(), bytes.clone(), *end, *code, *name);
            tasks.spawn(async move {
                let r = expect_fault(&peer, &bytes, end, code).await?;
                r.map_err(|why| anyhow::anyhow!("round {round}, {name}: {why}"))?;
                peer.list().await?;
                Ok::<_, anyhow::Error>(())
            });
        }
        // Reset mid-frame: nothing to observe on the stream itself.
        let peer = peer.clone();
        let half = status[..5].to_vec();
        tasks.spawn(async move {
            let (mut send, _recv) = peer.open(&half).await?;
            send.reset(quinn::VarInt::from_u32(ErrorCode::Cancelled.as_u32()))?;
            peer.list().await?;
            Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    ensure!(peer.is_open(), "the connection did not survive the storm");
    drop(peer);
    server.stop().await?;
    baseline.assert_clean(&[]).await
}

/// Streams opened without a byte written (QUIC opens every lower-numbered stream when
/// a higher one is used): each is reset with `Timeout` at the request deadline.
#[test]
fn streams_opened_without_writing_time_out() -> Result {
    serial(streams_opened_without_writing_time_out_body())
}

async fn streams_opened_without_writing_time_out_body() -> Result {
    let server = server().await?;
    let peer = Peer::user(&config(&server, server.addr)).await?;
    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(peer.conn.open_bi().await?);
    }
    // One byte on an 11th stream makes all of them exist for the server.
    let (_s, mut last) = peer.open(&[0x02]).await?;
    let t = Instant::now();
    let timeout = u64::from(ErrorCode::Timeout.as_u32());
    for (_, recv) in &mut silent {
        let a = wire::read_answer(recv, WAIT).await;
        ensure!(
            a == Answer::Reset(timeout),
            "a silent stream got {}",
            a.describe()
        );
    }
    let a = wire::read_answer(&mut last, WAIT).await;
    ensure!(
        a == Answer::Reset(timeout),
        "the one-byte stream got {}",
        a.describe()
    );
    println!(
        "11 idle streams reset with Timeout after {:.1?}",
        t.elapsed()
    );
    peer.list().await?;
    drop((silent, peer));
    server.stop().await
}

/// Slowloris: a Start frame written 1 byte per second is cut off by the request
/// deadline. (A peer that vanishes is cut off by the idle timeout: see
/// `client_killed_mid_stream`.)
#[test]
fn slowloris_is_cut_off() -> Result {
    serial(slowloris_is_cut_off_body())
}

async fn slowloris_is_cut_off_body() -> Result {
    let server = server().await?;
    let peer = Peer::user(&config(&server, server.addr)).await?;
    let bytes = frame::encode(&ClientMessage::Start(start_req(&[b"true"], false)))?;
    let (mut send, mut recv) = peer.open(&bytes[..1]).await?;
    let t = Instant::now();
    let trickle = async {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.tick().await;
        for b in &bytes[1..] {
            ticks.tick().await;
            if send.write_all(std::slice::from_ref(b)).await.is_err() {
                // Stopped by the server: the answer side tells how.
                std::future::pending::<()>().await;
            }
        }
    };
    let answer = tokio::select! {
        a = wire::read_answer(&mut recv, WAIT) => a,
        () = trickle => bail!("the whole {}-byte frame was accepted at 1 byte/s", bytes.len()),
    };
    let took = t.elapsed();
    ensure!(
        answer == Answer::Reset(ErrorCode::Timeout.as_u32().into()),
        "slowloris stream: {}",
        answer.describe()
    );
    ensure!(
        took < REQUEST_TIMEOUT + Duration::from_secs(2),
        "reset only after {took:?}"
    );
    peer.list().await?;
    println!("slowloris reset after {took:.1?}");
    drop(peer);
    server.stop().await
}

/// Maximum argv and env are accepted and run; one more entry or one more byte is
/// refused with `InvalidArgument` (spec: QX-LIMIT-2 to QX-LIMIT-4).
#[test]
fn maximum_argv_and_env() -> Result {
    serial(maximum_argv_and_env_body())
}

async fn maximum_argv_and_env_body() -> Result {
    let server = server().await?;
    let peer = Peer::user(&config(&server, server.addr)).await?;
    let run = |req: StartRequest| {
        let peer = &peer;
        async move {
            let answer = peer.request(&ClientMessage::Start(req)).await?;
            Ok::<_, anyhow::Error>(answer)
        }
    };
    let started = |a: &Answer| matches!(a, Answer::Frames { msgs, .. } if matches!(msgs.as_slice(), [ServerMessage::Started(_)]));
    let invalid = |a: &Answer| {
        a.error()
            .is_some_and(|e| e.code == ErrorCode::InvalidArgument)
    };

    let mut argv = start_req(&[b"true"], false);
    argv.argv.resize(MAX_ARGV, b"x".to_vec());
    let a = run(argv.clone()).await?;
    ensure!(started(&a), "{MAX_ARGV} argv entries: {}", a.describe());
    argv.argv.push(b"x".to_vec());
    let a = run(argv).await?;
    ensure!(
        invalid(&a),
        "{} argv entries: {}",
        MAX_ARGV + 1,
        a.describe()
    );

    let mut env = start_req(&[b"true"], false);
    env.env = (0..MAX_ENV)
        .map(|i| (format!("V{i}").into_bytes(), b"1".to_vec()))
        .collect();
    let a = run(env.clone()).await?;
    ensure!(started(&a), "{MAX_ENV} env entries: {}", a.describe());
    env.env.push((b"W".to_vec(), b"1".to_vec()));
    let a = run(env).await?;
    ensure!(invalid(&a), "{} env entries: {}", MAX_ENV + 1, a.describe());

    // Exactly MAX_COMMAND_BYTES through env values (each under Linux's 128 KiB per
    // string), then one byte more.
    let mut big = start_req(&[b"true"], false);
    big.env.clear();
    let mut left = MAX_COMMAND_BYTES - 4;
    let mut i = 0;
    while left > 0 {
        let name = format!("B{i}").into_bytes();
        let n = (left - name.len()).min(100_000);
        left -= name.len() + n;
        big.env.push((name, vec![b'v'; n]));
        i += 1;
    }
    ensure!(qexec_protocol::command_bytes(&big) == MAX_COMMAND_BYTES);
    let a = run(big.clone()).await?;
    ensure!(
        started(&a),
        "{MAX_COMMAND_BYTES} command bytes: {}",
        a.describe()
    );
    big.env[0].1.push(b'v');
    let a = run(big).await?;
    ensure!(
        invalid(&a),
        "{} command bytes: {}",
        MAX_COMMAND_BYTES + 1,
        a.describe()
    );
    drop(peer);
    server.stop().await
}

/// argv with invalid UTF-8 (every byte value but NUL) runs and comes back byte-exact.
#[test]
fn invalid_utf8_argv_is_byte_exact() -> Result {
    serial(invalid_utf8_argv_is_byte_exact_body())
}

async fn invalid_utf8_argv_is_byte_exact_body() -> Result {
    let server = server().await?;
    let peer = Peer::user(&config(&server, server.addr)).await?;
    let bytes: Vec<u8> = (1..=255u8).rev().collect();
    let (s, _) = peer
        .start(start_req(&[b"printf", b"%s", &bytes], true))
        .await?;
    let out = peer.next_output().await?;
    ensure!(out.data == bytes, "printf %s returned {:02x?}", out.data);
    let status = peer.status(s.job).await?;
    ensure!(
        status.argv[2] == bytes,
        "Status.argv[2] is not the bytes sent"
    );
    drop(peer);
    server.stop().await
}
