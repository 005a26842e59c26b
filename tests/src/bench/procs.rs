//! The processes the harness runs: its own `qexecd` (the release binary next to the
//! harness, a throwaway PKI and state directory), its own OpenSSH server on a loopback
//! port with throwaway keys and config; and facts about the machine.

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use qexec_client::{Client, ClientConfig};
use qexec_tls::{self as pki, InitOptions};

/// How long a server gets to come up or go down.
const START_LIMIT: Duration = Duration::from_secs(20);

/// The `qexecd` and `qexec` binaries built with the harness.
#[derive(Debug, Clone)]
pub(crate) struct Binaries {
    pub(crate) qexecd: PathBuf,
    pub(crate) qexec: PathBuf,
}

impl Binaries {
    /// Finds `qexecd` and `qexec` in the directory of the running executable (the
    /// same `target/<profile>/`); says how to build them when missing.
    pub(crate) fn locate() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the harness executable")?;
        let dir = exe
            .parent()
            .context("the harness executable has no directory")?;
        let profile = if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        };
        let b = Self {
            qexecd: dir.join("qexecd"),
            qexec: dir.join("qexec"),
        };
        for p in [&b.qexecd, &b.qexec] {
            if !p.is_file() {
                bail!(
                    "{} is missing: build the server and CLI with the harness's profile first \
                     (`cargo build{profile} -p qexec-server -p qexec-cli`), then run the \
                     harness again",
                    p.display()
                );
            }
        }
        // A stale server next to a fresh harness would measure old code: compare times.
        let harness_mtime = fs::metadata(&exe).and_then(|m| m.modified()).ok();
        for p in [&b.qexecd, &b.qexec] {
            let m = fs::metadata(p).and_then(|m| m.modified()).ok();
            if let (Some(m), Some(h)) = (m, harness_mtime)
                && h.duration_since(m)
                    .is_ok_and(|d| d > Duration::from_secs(3600))
            {
                eprintln!(
                    "warning: {} is over an hour older than the harness; rebuild with \
                     `cargo build{profile} -p qexec-server -p qexec-cli` if its sources changed",
                    p.display()
                );
            }
        }
        Ok(b)
    }
}

/// A throwaway PKI on disk (CA, server, default client `bench`, default users).
pub(crate) fn make_pki() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new()
        .prefix("qexec-bench-pki")
        .tempdir()?;
    pki::init(
        dir.path(),
        &InitOptions {
            client_name: Some("bench".into()),
            ..InitOptions::default()
        },
    )
    .context("cannot create the throwaway PKI")?;
    Ok(dir)
}

/// A free port on 127.0.0.1 for UDP (released at once; the server binds it next).
fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A free port on 127.0.0.1 for TCP.
fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Memory figures of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Memory {
    /// Resident set size now, KiB.
    pub(crate) rss_kib: u64,
    /// Peak resident set size since start or the last [`Qexecd::reset_peak`], KiB.
    pub(crate) hwm_kib: u64,
}

/// Reads VmRSS and VmHWM of `pid`.
pub(crate) fn memory_of(pid: u32) -> anyhow::Result<Memory> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {name} in {path}"))
    };
    Ok(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

/// A `qexecd` child process on a loopback port; stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub(crate) struct Qexecd {
    child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    pki: PathBuf,
    log: PathBuf,
    _state: tempfile::TempDir,
}

impl Qexecd {
    /// Starts `bin` with the PKI in `pki`, job isolation on or off, and waits until it
    /// accepts a connection.
    pub(crate) async fn start(bin: &Path, pki: &Path, isolation: bool) -> anyhow::Result<Self> {
        Self::start_with(bin, pki, isolation, &[]).await
    }

    /// Like [`Qexecd::start`], with more command-line arguments.
    pub(crate) async fn start_with(
        bin: &Path,
        pki: &Path,
        isolation: bool,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let state = tempfile::Builder::new()
            .prefix("qexec-bench-state")
            .tempdir()?;
        let log = state.path().join("qexecd.log");
        let port = free_udp_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut cmd = Command::new(bin);
        cmd.arg("--listen")
            .arg(addr.to_string())
            .arg("--pki-dir")
            .arg(pki)
            .arg("--state-dir")
            .arg(state.path().join("jobs"))
            .args(["--max-jobs", "4096", "--max-jobs-per-user", "4096"])
            .args(["--max-streams", "1024"])
            // Several qexecds run at once: each keeps its job cgroups to itself.
            .arg("--cgroup-subtree")
            .arg(format!("qexec-bench-{port}"))
            // Audit lines per request would measure the terminal, not qexecd.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log)?);
        if !isolation {
            cmd.arg("--no-isolation");
        }
        cmd.args(extra);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut d = Self {
            child,
            addr,
            pki: pki.to_owned(),
            log,
            _state: state,
        };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Some(st) = d.child.try_wait()? {
                bail!(
                    "qexecd exited ({st}) before accepting connections: {}",
                    fs::read_to_string(&d.log).unwrap_or_default().trim()
                );
            }
            let mut cfg = d.client_config();
            cfg.connect_timeout = Duration::from_millis(500);
            if let Ok(c) = Client::connect(&cfg).await {
                c.close();
                break;
            }
            if Instant::now() > deadline {
                bail!("qexecd did not accept a connection on {addr} within {START_LIMIT:?}");
            }
        }
        Ok(d)
    }

    /// Its pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Client settings (default identity `bench`, role admin).
    pub(crate) fn client_config(&self) -> ClientConfig {
        ClientConfig::from_pki_dir(&self.pki).with_addr(self.addr.to_string())
    }

    /// A new client connection.
    pub(crate) async fn connect(&self) -> anyhow::Result<Client> {
        Client::connect(&self.client_config())
            .await
            .with_context(|| format!("cannot connect to qexecd on {}", self.addr))
    }

    /// The `qexec` CLI pointed at this server.
    pub(crate) fn cli(&self, qexec: &Path) -> Command {
        let mut cmd = Command::new(qexec);
        cmd.env("QEXEC_ADDR", self.addr.to_string())
            .env("QEXEC_CONFIG_DIR", &self.pki)
            .env_remove("QEXEC_CA")
            .env_remove("QEXEC_CERT")
            .env_remove("QEXEC_KEY")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        cmd
    }

    /// Its memory now.
    pub(crate) fn memory(&self) -> anyhow::Result<Memory> {
        memory_of(self.pid())
    }

    /// Resets its peak RSS (VmHWM) to the current RSS (`/proc/<pid>/clear_refs`, 5).
    pub(crate) fn reset_peak(&self) -> anyhow::Result<()> {
        let path = format!("/proc/{}/clear_refs", self.pid());
        fs::write(&path, "5").with_context(|| format!("cannot write {path} (needs root)"))
    }

    /// What qexecd logged (warnings and errors).
    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Sends `signal` to `pid` with kill(1) (this crate has no libc binding).
fn kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// Waits (bounded) for `child` to exit; kills it when it does not.
fn stop_child(child: &mut Child, limit: Duration) {
    kill(child.id(), "-TERM");
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    std::thread::scope(|s| {
        s.spawn(|| {
            let r = child.wait();
            let _ = tx.send(r.is_ok());
        });
        if rx.recv_timeout(limit).is_err() {
            kill(pid, "-KILL");
            let _ = rx.recv();
        }
    });
}

impl Drop for Qexecd {
    fn drop(&mut self) {
        stop_child(&mut self.child, START_LIMIT);
    }
}

/// An OpenSSH server on 127.0.0.1 with throwaway host and user keys and config in a
/// temp dir; stopped on drop.
#[derive(Debug)]
pub(crate) struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
    /// `ssh -V` of the client.
    pub(crate) version: String,
    _dir: tempfile::TempDir,
}

fn keygen(path: &Path) -> anyhow::Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .context("cannot run ssh-keygen")?;
    if !out.status.success() {
        bail!(
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl Sshd {
    /// Starts sshd, or says why it cannot (not installed, …).
    pub(crate) fn start() -> anyhow::Result<Self> {
        let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context("sshd is not installed (Debian: apt-get install -y openssh-server)")?;
        let version = Command::new("ssh")
            .arg("-V")
            .output()
            .context("ssh is not installed (Debian: apt-get install -y openssh-client)")?;
        let version = String::from_utf8_lossy(&version.stderr).trim().to_owned();
        let dir = tempfile::Builder::new()
            .prefix("qexec-bench-ssh")
            .tempdir()?;
        let host_key = dir.path().join("host_key");
        let key = dir.path().join("user_key");
        keygen(&host_key)?;
        keygen(&key)?;
        let authorized = dir.path().join("authorized_keys");
        fs::copy(key.with_extension("pub"), &authorized)?;
        let port = free_tcp_port()?;
        let config = dir.path().join("sshd_config");
        fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin yes\n\
                 PubkeyAuthentication yes\nUseDNS no\n",
                host_key.display(),
                authorized.display(),
                dir.path().join("sshd.pid").display(),
            ),
        )?;
        // sshd's privilege separation directory must exist.
        let _ = fs::create_dir_all("/run/sshd");
        let child = Command::new(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("sshd.log"))?)
            .spawn()
            .with_context(|| format!("cannot start {}", sshd.display()))?;
        let mut s = Self {
            child,
            port,
            key,
            version,
            _dir: dir,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + START_LIMIT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(st) = s.child.try_wait()? {
                bail!(
                    "sshd exited ({st}): {}",
                    fs::read_to_string(s._dir.path().join("sshd.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("sshd did not listen on {addr} within {START_LIMIT:?}");
            }
            // A refused connect returns at once: give sshd the CPU instead of spinning.
            std::thread::yield_now();
        }
        Ok(s)
    }

    /// The listening sshd's pid (it reaps every session's processes).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ssh … 127.0.0.1 ARGS` (a fresh connection, no multiplexing).
    pub(crate) fn ssh(&self, remote: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-p", &self.port.to_string(), "-i"])
            .arg(&self.key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ControlMaster=no",
                "-o",
                "ControlPath=none",
                "root@127.0.0.1",
            ])
            .args(remote)
            .stdin(Stdio::null());
        cmd
    }
}

impl Sshd {
    /// `ssh … 127.0.0.1 ARGS` through the `ControlMaster` socket `control` (`-S`):
    /// `extra` `-M -N` makes the master, then every command with the same socket is a
    /// channel of that one connection.
    pub(crate) fn ssh_mux(&self, control: &Path, extra: &[&str], remote: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "/dev/null", "-p", &self.port.to_string(), "-i"])
            .arg(&self.key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "-S",
            ])
            .arg(control)
            .args(extra)
            .arg("root@127.0.0.1")
            .args(remote);
        cmd
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        stop_child(&mut self.child, START_LIMIT);
    }
}

/// The commit of the source tree this harness was built from, as it stands when the
/// run starts (`-dirty` with uncommitted changes), or `unknown` without git.
pub(crate) fn source_commit() -> String {
    Command::new("git")
        .arg("-C")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// `/proc/loadavg`'s three averages.
pub(crate) fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The first `model name` of /proc/cpuinfo.
pub(crate) fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// MemTotal in MiB.
pub(crate) fn mem_total_mib() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |k| k / 1024)
}

/// A one-line file of /proc/sys, trimmed.
pub(crate) fn proc_sys(path: &str) -> String {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// Now as `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02} UTC")
}
