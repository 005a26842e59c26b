//! A real `qexecd` child process for tests that need one (SIGKILL, restarts, stderr,
//! several servers at once): its own PKI, state directory, cgroup subtree and
//! loopback port; every line it logs is kept.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use qexec_client::{Client, ClientConfig};
use qexec_protocol::JobId;
use qexec_tls::{self as pki, InitOptions};

/// Longest wait for the process to listen or to exit.
const WAIT: Duration = Duration::from_secs(30);

/// A `qexecd` child process; see the module docs. Dropping it sends SIGTERM and
/// waits for the process.
#[derive(Debug)]
pub struct Daemon {
    bin: PathBuf,
    child: Option<Child>,
    addr: SocketAddr,
    pki: PathBuf,
    state: PathBuf,
    subtree: String,
    args: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Makes a PKI (default client `client`, role admin, and the default users), picks
    /// a free loopback port and starts the process with `args` added to its command
    /// line; returns once it logs that it listens. `name` goes into the cgroup subtree
    /// (`qexec-<name>-<test pid>`), so tests running at once never share one.
    pub async fn start(name: &str, args: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let pki = dir.path().join("pki");
        pki::init(&pki, &InitOptions::default())?;
        let mut d = Daemon {
            bin: crate::qexecd_bin()?,
            child: None,
            addr: std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?,
            pki,
            state: dir.path().join("state"),
            subtree: format!("qexec-{name}-{}", std::process::id()),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            log: Arc::default(),
            _dir: dir,
        };
        d.spawn().await?;
        Ok(d)
    }

    /// Starts (or restarts) the process on the same address and state directory;
    /// returns once it logs that it listens.
    pub async fn spawn(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "qexecd is already running");
        let mut child = Command::new(&self.bin)
            .arg("--pki-dir")
            .arg(&self.pki)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--cgroup-subtree")
            .arg(&self.subtree)
            .args(&self.args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start qexecd")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let log = Arc::clone(&self.log);
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("qexecd listening")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(());
                }
                log.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        self.child = Some(child);
        tokio::time::timeout(WAIT, rx)
            .await
            .context("qexecd did not log that it listens")?
            .with_context(|| format!("qexecd exited before listening: {:?}", self.lines()))?;
        Ok(())
    }

    /// Every line the process logged so far (all its runs).
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its PKI directory (as `qexec certs init` writes it).
    pub fn pki_dir(&self) -> &Path {
        &self.pki
    }

    /// Its state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// Its cgroup subtree's name.
    pub fn subtree(&self) -> &str {
        &self.subtree
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Client settings for `users/<user>` of its PKI, pointed at its address.
    pub fn client_config(&self, user: &str) -> ClientConfig {
        ClientConfig::for_user(&self.pki, user).with_addr(self.addr.to_string())
    }

    /// A connected client as `users/<user>`.
    pub async fn client(&self, user: &str) -> anyhow::Result<Client> {
        Ok(Client::connect(&self.client_config(user)).await?)
    }

    /// Sends `sig` and waits for the process to exit.
    pub async fn stop(&mut self, sig: nix::sys::signal::Signal) -> anyhow::Result<()> {
        self.stop_status(sig).await.map(drop)
    }

    /// Sends `sig` and waits for the process to exit; returns how it exited.
    pub async fn stop_status(
        &mut self,
        sig: nix::sys::signal::Signal,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("qexecd is not running")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig)?;
        let status = tokio::time::timeout(WAIT, tokio::task::spawn_blocking(move || child.wait()))
            .await
            .context("qexecd did not exit")???;
        Ok(status)
    }

    /// The cgroups of these jobs that still exist in any hierarchy.
    pub fn cgroups_of(&self, jobs: &[JobId]) -> Vec<PathBuf> {
        let mut left = Vec::new();
        let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
            return left;
        };
        let mut roots: Vec<PathBuf> = hierarchies.flatten().map(|e| e.path()).collect();
        roots.push(PathBuf::from("/sys/fs/cgroup"));
        for root in roots {
            for id in jobs {
                let p = root.join(&self.subtree).join(id.to_string());
                if p.exists() {
                    left.push(p);
                }
            }
        }
        left
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = c.wait();
        }
    }
}
