//! Hostile clients (issue 14, "Done when"), over real QUIC on loopback, bounded in
//! count and time: a flood of unanswered Initials, one identity holding its
//! connection cap, partial request frames, forged log lines, qexecd with its stderr
//! gone, client chains through an intermediate CA or without digitalSignature.
//!
//! The memory and stderr tests run the `qexecd` binary as a child process (its own
//! state directory, cgroup subtree and port); the rest run an in-process server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use qexec_protocol::{
    AttachRequest, ClientMessage, Decoder, ErrorCode, ListRequest, ServerMessage, StatusRequest,
    frame,
};
use qexec_server::service::ServerConfig;
use qexec_tests::{TestClient, TestServer, WAIT, start_request};
use qexec_tls::{CertKeyPem, InitOptions, TlsSource};
use tracing_subscriber::fmt::MakeWriter;

type Result<T = ()> = anyhow::Result<T>;

fn list() -> ClientMessage {
    ClientMessage::List(ListRequest::default())
}

/// How a connection the server closed was closed: (application code, reason).
async fn close_of(c: &TestClient) -> Result<(u64, String)> {
    match tokio::time::timeout(WAIT, c.conn.closed()).await? {
        quinn::ConnectionError::ApplicationClosed(a) => Ok((
            a.error_code.into_inner(),
            String::from_utf8_lossy(&a.reason).into_owned(),
        )),
        other => bail!("connection ended otherwise: {other}"),
    }
}

// --- Initial flood -------------------------------------------------------------

/// Makes real QUIC client Initial datagrams (quinn-proto's client side) that are
/// sent once and never answered.
struct Initials {
    endpoint: quinn_proto::Endpoint,
    config: quinn::ClientConfig,
    server: SocketAddr,
}

impl Initials {
    fn new(server: SocketAddr, config: quinn::ClientConfig) -> Self {
        Self {
            endpoint: quinn_proto::Endpoint::new(
                Arc::new(quinn_proto::EndpointConfig::default()),
                None,
                false,
                None,
            ),
            config,
            server,
        }
    }

    /// The first datagram of a new connection attempt.
    fn next(&mut self) -> Result<Vec<u8>> {
        let now = Instant::now();
        let (_, mut conn) =
            self.endpoint
                .connect(now, self.config.clone(), self.server, "localhost")?;
        let mut buf = Vec::with_capacity(1500);
        let t = conn
            .poll_transmit(now, 1, &mut buf)
            .context("a new connection has an Initial to send")?;
        buf.truncate(t.size);
        Ok(buf)
    }
}

/// Sends `burst` Initials at once, reports that on `burst_sent`, then `rate` per
/// second for `secs` seconds. Returns how many were sent.
fn flood(
    mut initials: Initials,
    burst: usize,
    rate: u32,
    secs: u32,
    burst_sent: tokio::sync::oneshot::Sender<()>,
) -> Result<usize> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let server = initials.server;
    let mut sent = 0;
    for _ in 0..burst {
        // A full socket buffer drops datagrams: as the network would.
        let _ = sock.send_to(&initials.next()?, server);
        sent += 1;
    }
    let _ = burst_sent.send(());
    let start = Instant::now();
    for i in 0..rate * secs {
        let due = start + Duration::from_secs(1) * i / rate;
        // Pacing the traffic, not synchronising with the server.
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let _ = sock.send_to(&initials.next()?, server);
        sent += 1;
    }
    Ok(sent)
}

/// spec: QX-SRV-10 — 2000 unanswered Initials, then 100/s for 10 s: every attempt of
/// a real client meanwhile connects within 1 s and is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_flood_does_not_lock_out_real_clients() -> Result {
    let server = TestServer::start().await?;
    let tls = server.client_tls(Some(server.identity("alice")?))?;
    let initials = Initials::new(server.addr, qexec_tls::quic_client_config(tls)?);
    let (burst_tx, burst_rx) = tokio::sync::oneshot::channel();
    let flooder = std::thread::spawn(move || flood(initials, 2000, 100, 10, burst_tx));
    burst_rx
        .await
        .context("the flood thread failed before its burst")?;
    let mut attempts = 0;
    let mut slowest = Duration::ZERO;
    while !flooder.is_finished() {
        let began = Instant::now();
        let tls = server.client_tls(Some(server.identity("alice")?))?;
        let c = tokio::time::timeout(
            Duration::from_secs(1),
            TestClient::connect(server.addr, tls),
        )
        .await
        .with_context(|| format!("attempt {attempts} did not connect within 1 s"))??;
        slowest = slowest.max(began.elapsed());
        ensure!(
            c.request(&list()).await? == [ServerMessage::ListEnd],
            "attempt {attempts}: List not answered"
        );
        c.conn.close(0u32.into(), b"done");
        attempts += 1;
        // Two attempts a second for the flood's duration.
        tokio::time::sleep_until((began + Duration::from_millis(500)).into()).await;
    }
    let sent = flooder
        .join()
        .map_err(|_| anyhow::anyhow!("flood thread panicked"))??;
    println!("{sent} Initials sent; {attempts} real connects, slowest {slowest:?}");
    ensure!(attempts >= 10, "only {attempts} attempts during the flood");
    server.stop().await
}

// --- Per-identity caps ---------------------------------------------------------

/// spec: QX-SRV-9 — alice at her connection cap (4 of 8) cannot stop bob from
/// connecting; her fifth connection is closed with `ResourceExhausted` naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_at_its_connection_cap_cannot_lock_out_another() -> Result {
    let server = TestServer::start_with(|c: &mut ServerConfig| {
        c.max_connections = 8;
        c.max_connections_per_identity = 4;
    })
    .await?;
    let mut held = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..8 {
        let Ok(c) = server.connect("alice").await else {
            refused.push("refused before the handshake".to_owned());
            continue;
        };
        match c.request(&list()).await {
            Ok(answer) if answer == [ServerMessage::ListEnd] => held.push(c),
            _ => {
                let (code, reason) = close_of(&c).await?;
                ensure!(
                    code == u64::from(ErrorCode::ResourceExhausted.as_u32()),
                    "{code}"
                );
                ensure!(reason.contains("already has 4 connections"), "{reason}");
                refused.push(reason);
            }
        }
    }
    ensure!(held.len() == 4, "alice holds {} connections", held.len());
    ensure!(refused.len() == 4, "{refused:?}");
    let bob = server.connect("bob").await?;
    ensure!(bob.request(&list()).await? == [ServerMessage::ListEnd]);
    // A slot of alice's comes back when one of her connections ends.
    let one = held.pop().context("held")?;
    one.conn.close(0u32.into(), b"bye");
    drop(one);
    let deadline = Instant::now() + WAIT;
    loop {
        let c = server.connect("alice").await?;
        if c.request(&list()).await.is_ok() {
            break;
        }
        ensure!(Instant::now() < deadline, "alice's slot did not come back");
    }
    drop((held, bob));
    server.stop().await
}

/// spec: QX-SRV-9 — subscriptions and requests in flight are capped per identity
/// over all its connections; another identity is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_and_requests_are_capped_per_identity() -> Result {
    let server = TestServer::start_with(|c: &mut ServerConfig| {
        c.max_subscriptions_per_identity = 2;
        c.max_requests_per_identity = 3;
    })
    .await?;
    let a1 = server.connect("alice").await?;
    let a2 = server.connect("alice").await?;
    let job = a1.start(&["/bin/sleep", "1000"], false).await?;
    let _f1 = a1.attach(job, 0).await?;
    let _f2 = a2.attach(job, 0).await?;
    let third = a2
        .request(&ClientMessage::Attach(AttachRequest { job, from: 0 }))
        .await?;
    match third.as_slice() {
        [ServerMessage::Error(e)] => {
            ensure!(e.code == ErrorCode::ResourceExhausted, "{e:?}");
            ensure!(e.message.contains("over all its connections"), "{e:?}");
        }
        other => bail!("a third follow of alice answered {other:?}"),
    }
    // Two follows are in flight; a start with stdin open makes three.
    let mut held = start_request(&["/bin/cat"], false);
    held.stdin = true;
    let (_stdin, mut recv) = a2
        .open(&frame::encode(&ClientMessage::Start(held))?)
        .await?;
    let mut d = Decoder::new();
    let first = loop {
        if let Some(m) = d.next::<ServerMessage>()? {
            break m;
        }
        let chunk = tokio::time::timeout(WAIT, recv.read_chunk(1 << 16, true))
            .await??
            .context("start answer ended early")?;
        d.push(&chunk.bytes);
    };
    ensure!(matches!(first, ServerMessage::Started(_)), "{first:?}");
    let over = a1
        .request(&ClientMessage::Status(StatusRequest { job }))
        .await?;
    match over.as_slice() {
        [ServerMessage::Error(e)] => {
            ensure!(e.code == ErrorCode::ResourceExhausted, "{e:?}");
            ensure!(e.message.contains("3 requests in flight"), "{e:?}");
        }
        other => bail!("a fourth request of alice answered {other:?}"),
    }
    // The admin follows the same job: its own caps.
    let admin = server.connect("admin").await?;
    let _f3 = admin.attach(job, 0).await?;
    let stop = admin
        .request(&ClientMessage::Stop(qexec_protocol::StopRequest {
            job,
            grace_ms: Some(0),
        }))
        .await?;
    ensure!(
        matches!(stop.as_slice(), [ServerMessage::Status(_)]),
        "{stop:?}"
    );
    server.stop().await
}

/// spec: QX-SRV-12 — a connection with no open stream is closed after the idle
/// connection timeout, whatever keep-alives say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unused_connection_is_closed() -> Result {
    let server = TestServer::start_with(|c: &mut ServerConfig| {
        c.idle_connection_timeout = Some(Duration::from_secs(1));
        c.keep_alive = Duration::from_millis(200);
    })
    .await?;
    let c = server.connect("auditor").await?;
    ensure!(c.request(&list()).await? == [ServerMessage::ListEnd]);
    let (code, reason) = close_of(&c).await?;
    ensure!(code == u64::from(ErrorCode::NoError.as_u32()), "{code}");
    ensure!(reason.starts_with("idle"), "{reason}");
    server.stop().await
}

// --- Client chains -------------------------------------------------------------

/// A root CA (path length 0, as `qexec certs init` makes) with a server certificate,
/// and leaves issued by it or by an intermediate under it.
struct Chains {
    root: rcgen::Issuer<'static, rcgen::KeyPair>,
    root_pem: String,
    server: CertKeyPem,
}

fn key() -> Result<rcgen::KeyPair> {
    Ok(rcgen::KeyPair::generate_for(
        &rcgen::PKCS_ECDSA_P256_SHA256,
    )?)
}

fn params(cn: &str, ou: Option<&str>) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, cn);
    if let Some(ou) = ou {
        dn.push(rcgen::DnType::OrganizationalUnitName, ou);
    }
    p.distinguished_name = dn;
    p.use_authority_key_identifier_extension = true;
    p
}

fn ca_params(cn: &str) -> rcgen::CertificateParams {
    let mut p = params(cn, None);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    p
}

fn client_params(usages: Vec<rcgen::KeyUsagePurpose>) -> rcgen::CertificateParams {
    let mut p = params("admin", Some("admin"));
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = usages;
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    p
}

impl Chains {
    fn new() -> Result<Self> {
        let root_params = ca_params("hostile root");
        let root_key = key()?;
        let root_pem = root_params.self_signed(&root_key)?.pem();
        let root = rcgen::Issuer::new(root_params, root_key);
        let mut sp = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?;
        sp.is_ca = rcgen::IsCa::ExplicitNoCa;
        sp.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        sp.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let sk = key()?;
        let server = CertKeyPem {
            cert_pem: sp.signed_by(&sk, &root)?.pem(),
            key_pem: sk.serialize_pem(),
        };
        Ok(Self {
            root,
            root_pem,
            server,
        })
    }

    fn tls(&self) -> TlsSource {
        TlsSource::Pem {
            ca: self.root_pem.clone(),
            cert: self.server.cert_pem.clone(),
            key: self.server.key_pem.clone(),
        }
    }

    /// A client `admin` with `usages`, issued by the root.
    fn direct(&self, usages: Vec<rcgen::KeyUsagePurpose>) -> Result<CertKeyPem> {
        let k = key()?;
        Ok(CertKeyPem {
            cert_pem: client_params(usages).signed_by(&k, &self.root)?.pem(),
            key_pem: k.serialize_pem(),
        })
    }

    /// A client `admin` issued by an intermediate CA under the root; the chain
    /// (leaf, intermediate) is what the client presents.
    fn via_intermediate(&self) -> Result<CertKeyPem> {
        let ip = ca_params("hostile intermediate");
        let ik = key()?;
        let inter_pem = ip.signed_by(&ik, &self.root)?.pem();
        let inter = rcgen::Issuer::new(ip, ik);
        let k = key()?;
        let leaf =
            client_params(vec![rcgen::KeyUsagePurpose::DigitalSignature]).signed_by(&k, &inter)?;
        Ok(CertKeyPem {
            cert_pem: format!("{}{inter_pem}", leaf.pem()),
            key_pem: k.serialize_pem(),
        })
    }
}

/// spec: QX-ID-6 — root (pathlen:0) → intermediate (CA:TRUE) → leaf `admin` is
/// refused, and so is a leaf whose only key usage is keyCertSign; a leaf issued
/// by the root with digitalSignature connects (the control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intermediate_chains_and_keycertsign_leaves_are_refused() -> Result {
    let chains = Chains::new()?;
    let tls = chains.tls();
    let server = TestServer::start_with(move |c: &mut ServerConfig| c.tls = tls).await?;
    let connect = |id: CertKeyPem| {
        let root = chains.root_pem.clone();
        let addr = server.addr;
        async move {
            let tls = qexec_tls::client_config_pem(&root, Some(&id))?.config;
            let c = TestClient::connect(addr, tls).await?;
            // TLS 1.3: the client finishes before the server checked its certificate.
            c.request(&list()).await
        }
    };
    let good = connect(chains.direct(vec![rcgen::KeyUsagePurpose::DigitalSignature])?).await;
    ensure!(
        matches!(good.as_deref(), Ok([ServerMessage::ListEnd])),
        "the control client failed: {good:?}"
    );
    let via = connect(chains.via_intermediate()?).await;
    ensure!(
        via.is_err(),
        "a leaf under an intermediate CA was served: {via:?}"
    );
    let kcs = connect(chains.direct(vec![rcgen::KeyUsagePurpose::KeyCertSign])?).await;
    ensure!(kcs.is_err(), "a keyCertSign-only leaf was served: {kcs:?}");
    server.stop().await
}

// --- Log injection -------------------------------------------------------------

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>, Arc<tokio::sync::Notify>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        self.1.notify_waiters();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Lines;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Lines {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until a line contains `needle`.
    async fn wait_for(&self, needle: &str) -> Result<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.1.notified();
            if let Some(l) = self.text().lines().find(|l| l.contains(needle)) {
                return Ok(l.to_owned());
            }
            tokio::time::timeout_at(deadline, notified)
                .await
                .with_context(|| format!("no log line with {needle:?}"))?;
        }
    }
}

const FORGED: &str = "2026-12-01T00:00:00.000000Z  INFO qexec::audit: peer=10.0.0.1:1 user=bob \
                      role=admin op=stop job=- result=ok request";

/// spec: QX-SRV-13 — a close reason with a newline, and a start whose argv and cwd
/// carry newline, ESC, BEL and CR, each yield one log line, escaped; no forged line.
#[tokio::test(flavor = "current_thread")]
async fn peer_text_is_logged_escaped_on_one_line() -> Result {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(lines.clone())
        .with_ansi(false)
        .with_env_filter("info")
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = TestServer::start().await?;

    let c = server.connect("alice").await?;
    let mut req = start_request(&["/bin/echo", "x\n", "\u{1b}[2J\u{7}\r"], false);
    req.cwd = Some(b"/\n/tmp".to_vec());
    let _ = c.request(&ClientMessage::Start(req)).await?;
    let audit = lines.wait_for("op=start").await?;
    ensure!(
        audit.contains(r#"argv="/bin/echo" "x\n" "\u{1b}[2J\u{7}\r""#),
        "{audit}"
    );
    ensure!(audit.contains(r"cwd=/\n/tmp"), "{audit}");

    let reason = format!("bye\n{FORGED}\r\u{1b}[1A");
    c.conn.close(7u32.into(), reason.as_bytes());
    let closed = lines.wait_for("connection closed").await?;
    ensure!(closed.contains(r"bye\n2026-12-01T00:00:00"), "{closed}");
    ensure!(closed.contains(r"\r\u{1b}[1A"), "{closed}");
    let text = lines.text();
    ensure!(
        !text
            .lines()
            .any(|l| l.starts_with("2026-12-01T00:00:00.000000Z")),
        "a forged line was logged:\n{text}"
    );
    ensure!(
        !text.chars().any(|ch| ch.is_control() && ch != '\n'),
        "a raw control character reached the log:\n{text:?}"
    );
    server.stop().await
}

// --- qexecd as a child process ---------------------------------------------------

/// A `qexecd` child with its own PKI, state directory, cgroup subtree and port,
/// stderr piped until it logged that it listens, then handed to the test.
struct Daemon {
    child: Child,
    addr: SocketAddr,
    pki: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts qexecd (isolation off) and waits for its "listening" line; returns the
    /// daemon and the rest of its stderr.
    async fn start(name: &str) -> Result<(Daemon, std::io::BufReader<std::process::ChildStderr>)> {
        use std::io::BufRead as _;
        let bin = qexec_tests::qexecd_bin()?;
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
        let pki_dir = dir.path().join("pki");
        qexec_tls::init(
            &pki_dir,
            &InitOptions {
                client_name: Some("tester".into()),
                ..Default::default()
            },
        )?;
        let addr = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        let mut child = Command::new(bin)
            .arg("--pki-dir")
            .arg(&pki_dir)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--cgroup-subtree")
            .arg(format!("qexec-h14-{name}-{}", std::process::id()))
            .args(["--no-isolation", "--insecure-root-jobs"])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start qexecd")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(stderr);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) if line.contains("listening") => {
                        let _ = tx.send(r);
                        return;
                    }
                    Ok(_) => {}
                }
            }
        });
        let stderr = tokio::time::timeout(WAIT, rx)
            .await
            .context("qexecd did not log that it listens")?
            .context("qexecd exited before listening")?;
        Ok((
            Daemon {
                child,
                addr,
                pki: pki_dir,
                _dir: dir,
            },
            stderr,
        ))
    }

    async fn connect(&self, user: &str) -> Result<TestClient> {
        let paths = qexec_tls::PkiPaths::new(&self.pki);
        let files = paths.user(user);
        let id = CertKeyPem {
            cert_pem: std::fs::read_to_string(files.cert)?,
            key_pem: std::fs::read_to_string(files.key)?,
        };
        let ca = std::fs::read_to_string(&paths.ca)?;
        let tls = qexec_tls::client_config_pem(&ca, Some(&id))?.config;
        TestClient::connect(self.addr, tls).await
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to exit.
    async fn wait(&mut self) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "qexecd did not exit within {WAIT:?}"
            );
            // A child's exit has no async notification here without a pidfd.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A field of /proc/<pid>/status in KiB (`VmRSS`, `VmHWM`).
fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(line.trim().trim_end_matches("kB").trim().parse()?)
}

/// True while `pid` is a live (not zombie) process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// spec: QX-SRV-13 — qexecd whose stderr reader went away keeps serving (start,
/// status), and SIGTERM still shuts it down gracefully: exit 0, its job stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qexecd_with_stderr_gone_keeps_serving_and_shuts_down() -> Result {
    let (mut d, stderr) = Daemon::start("stderr").await?;
    drop(stderr); // every later log write fails with EPIPE
    let c = d.connect("alice").await?;
    let answer = c
        .request(&ClientMessage::Start(start_request(
            &["/bin/sleep", "1000"],
            false,
        )))
        .await?;
    let [ServerMessage::Started(s)] = answer.as_slice() else {
        bail!("start answered {answer:?}");
    };
    let st = c
        .request(&ClientMessage::Status(StatusRequest { job: s.job }))
        .await?;
    ensure!(
        matches!(st.as_slice(), [ServerMessage::Status(_)]),
        "{st:?}"
    );
    kill(Pid::from_raw(d.pid() as i32), Signal::SIGTERM)?;
    let status = d.wait().await?;
    ensure!(status.code() == Some(0), "qexecd exited with {status}");
    ensure!(!alive(s.pid), "job process {} outlived qexecd", s.pid);
    Ok(())
}

/// spec: QX-SRV-11 — 2 connections × 64 streams, each sending a 1 MiB request frame
/// without its last byte (128 MiB offered): qexecd's peak RSS grows by less than
/// 64 MiB. Bound per connection: the 2 MiB request budget (its vector allocation at
/// most twice that) plus QUIC's connection receive window (8 × (1 MiB + 64 KiB)),
/// about 13 MiB, so about 26 MiB here plus allocator slack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_request_frames_are_bounded_per_connection() -> Result {
    let (d, _stderr) = Daemon::start("partial").await?;
    let warm = d.connect("alice").await?;
    ensure!(warm.request(&list()).await? == [ServerMessage::ListEnd]);
    let before = status_kib(d.pid(), "VmHWM")?;
    // A List request frame padded to 1 MiB would be refused when complete; it never
    // is: the last byte is not sent.
    let len = qexec_protocol::MAX_FRAME_LEN;
    // The length prefix: a 3-byte LEB128 varint (spec: QX-FRAME-1).
    let mut bytes = vec![
        0x80 | (len & 0x7f) as u8,
        0x80 | ((len >> 7) & 0x7f) as u8,
        (len >> 14) as u8,
    ];
    bytes.resize(3 + len - 1, 0);
    let bytes = Arc::new(bytes);
    let mut tasks = tokio::task::JoinSet::new();
    let mut conns = Vec::new();
    for _ in 0..2 {
        let c = Arc::new(d.connect("alice").await?);
        for _ in 0..64 {
            let (c, bytes) = (c.clone(), bytes.clone());
            tasks.spawn(async move {
                let (mut send, mut recv) = c.conn.open_bi().await?;
                // Blocks on flow control once the server stops reading; the server's
                // request timeout then stops the stream.
                let (_, read) = tokio::join!(send.write_all(&bytes), recv.read_to_end(1 << 20));
                anyhow::Ok(match read {
                    Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
                        code.into_inner()
                    }
                    other => bail!("stream ended otherwise: {other:?}"),
                })
            });
        }
        conns.push(c);
    }
    let mut codes = Vec::new();
    while let Some(r) = tokio::time::timeout(WAIT * 2, tasks.join_next())
        .await
        .context("streams not reset within the request timeout")?
    {
        codes.push(r??);
    }
    let after = status_kib(d.pid(), "VmHWM")?;
    let grown = after.saturating_sub(before) / 1024;
    println!("peak RSS {before} KiB → {after} KiB (+{grown} MiB) for 128 MiB of partial frames");
    ensure!(
        codes
            .iter()
            .all(|c| *c == u64::from(ErrorCode::Timeout.as_u32())),
        "{codes:?}"
    );
    ensure!(grown < 64, "peak RSS grew by {grown} MiB");
    // The connections still serve.
    ensure!(conns[0].request(&list()).await? == [ServerMessage::ListEnd]);
    Ok(())
}

/// spec: QX-SRV-11 — large requests arriving together on one connection share the
/// request budget in turn: 40 `Start`s of 300 KiB at once (6 budgets' worth) are
/// all answered, none waits out the request deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_requests_at_once_are_all_served() -> Result {
    let server = TestServer::start().await?;
    let c = Arc::new(server.connect("admin").await?);
    // Three 100 KiB arguments: one argument may not exceed 128 KiB (MAX_ARG_STRLEN).
    let big = "x".repeat(100 << 10);
    let msg = ClientMessage::Start(start_request(&["/bin/true", &big, &big, &big], false));
    let bytes = Arc::new(frame::encode(&msg)?);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let (c, bytes) = (c.clone(), bytes.clone());
        tasks.spawn(async move {
            let (mut send, mut recv) = c.conn.open_bi().await?;
            send.write_all(&bytes).await?;
            send.finish()?;
            qexec_tests::read_all(&mut recv).await
        });
    }
    while let Some(answer) = tasks.join_next().await {
        let answer = answer??;
        ensure!(
            matches!(answer.as_slice(), [ServerMessage::Started(_)]),
            "{answer:?}"
        );
    }
    server.stop().await
}
