//! The `qexecd` binary: starts with no flags from the PKI directory, serves over
//! QUIC, logs refused handshakes with their reason, shuts down on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use qexec_protocol::{ClientMessage, Decoder, ListRequest, ServerMessage, frame};
use qexec_tls::{self as pki, CertKeyPem, InitOptions, Role};

const WAIT: Duration = Duration::from_secs(20);

/// qexecd's stderr, line by line, from a reader thread.
struct Logs {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Logs {
    /// Waits for a line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?}; saw:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

struct Daemon {
    child: Option<Child>,
    logs: Logs,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_udp_port() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

fn start_daemon(pki_dir: &std::path::Path, state: &std::path::Path, addr: SocketAddr) -> Daemon {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qexecd"))
        .env("QEXEC_CONFIG_DIR", pki_dir)
        .env("QEXECD_LISTEN", addr.to_string())
        .env("QEXECD_STATE_DIR", state)
        .env("QEXECD_NO_ISOLATION", "true")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn qexecd");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Daemon {
        child: Some(child),
        logs: Logs {
            rx,
            seen: Vec::new(),
        },
    }
}

async fn list(addr: SocketAddr, ca: &str, id: &CertKeyPem) -> anyhow::Result<Vec<ServerMessage>> {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(qexec_tls::quic_client_config(
        qexec_tls::client_config_pem(ca, Some(id))?.config,
    )?);
    let conn = tokio::time::timeout(WAIT, endpoint.connect(addr, "localhost")?).await??;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(&frame::encode(
        &ClientMessage::List(ListRequest::default()),
    )?)
    .await?;
    send.finish()?;
    let bytes = tokio::time::timeout(WAIT, recv.read_to_end(1 << 20)).await??;
    let mut d = Decoder::new();
    d.push(&bytes);
    let mut out = Vec::new();
    while let Some(m) = d.next::<ServerMessage>()? {
        out.push(m);
    }
    conn.close(0u32.into(), b"");
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qexecd_runs_from_the_pki_dir_and_stops_on_sigterm() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let pki_dir = tmp.path().join("pki");
    let paths = pki::init(
        &pki_dir,
        &InitOptions {
            client_name: Some("tester".into()),
            ..Default::default()
        },
    )?;
    let ca = std::fs::read_to_string(&paths.ca)?;
    let client = CertKeyPem {
        cert_pem: std::fs::read_to_string(&paths.client)?,
        key_pem: std::fs::read_to_string(&paths.client_key)?,
    };
    let addr = free_udp_port();
    let mut d = start_daemon(&pki_dir, &tmp.path().join("state"), addr);
    d.logs.wait_for("qexecd listening");

    // The default client of the PKI is served.
    assert_eq!(
        list(addr, &ca, &client).await?,
        vec![ServerMessage::ListEnd]
    );
    let audit = d.logs.wait_for("qexec::audit");
    assert!(
        audit.contains("tester") && audit.contains("list") && audit.contains("ok"),
        "{audit}"
    );

    // A certificate from another CA is refused and the reason logged.
    let stranger = pki::Ca::generate()?.issue_client("tester", Role::Admin)?;
    assert!(list(addr, &ca, &stranger).await.is_err());
    let refused = d.logs.wait_for("handshake refused");
    assert!(refused.contains("UnknownIssuer"), "{refused}");

    // SIGTERM: graceful shutdown, exit status 0.
    let mut child = d.child.take().expect("daemon running");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.into());
    }
    d.logs.wait_for("shutdown complete");
    let waited =
        tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || child.wait())).await;
    let Ok(status) = waited else {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        panic!("qexecd did not exit within {WAIT:?} of SIGTERM");
    };
    let status = status??;
    assert!(status.success(), "{status}");
    Ok(())
}
