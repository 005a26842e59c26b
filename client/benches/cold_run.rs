//! Cold `qexec run -- /bin/true` (new process, new QUIC + mTLS connection, a job on the
//! server, its exit status back) against `ssh -p PORT 127.0.0.1 /bin/true` to an
//! OpenSSH server this program starts on loopback with throwaway keys, and a local
//! `/bin/true` as the floor. Prints the median and p90 wall time of each, side by side
//! in one run, and the ratio (target: qexec ≥ 30× faster than ssh).
//!
//! `cargo bench -p qexec-client --bench cold_run` (QEXEC_BENCH_RUNS to change the count).
//! The ssh part is skipped, with the reason printed, when sshd or ssh is missing
//! (Debian: `apt-get install openssh-server`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;

fn runs() -> usize {
    std::env::var("QEXEC_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
}

/// Wall time of each of `n` runs of `cmd` (which must succeed).
fn time_runs(n: usize, mut make: impl FnMut() -> Command) -> Vec<Duration> {
    // One warm-up run: page cache, dynamic loader, sshd's first fork.
    let warm = make()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("spawn");
    assert!(
        warm.status.success(),
        "warm-up failed: {}",
        String::from_utf8_lossy(&warm.stderr)
    );
    (0..n)
        .map(|_| {
            let t = Instant::now();
            let out = make()
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .expect("spawn");
            let elapsed = t.elapsed();
            assert!(
                out.status.success(),
                "run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            elapsed
        })
        .collect()
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    let idx = ((s.len() - 1) as f64 * p).round() as usize;
    s[idx]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// An sshd on 127.0.0.1 with throwaway host and user keys; killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(paths: &[&str]) -> Option<PathBuf> {
    paths.iter().map(PathBuf::from).find(|p| p.exists())
}

fn keygen(path: &Path) -> Result<(), String> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run ssh-keygen: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn start_sshd() -> Result<Sshd, String> {
    let sshd = find(&["/usr/sbin/sshd", "/usr/bin/sshd"])
        .ok_or("sshd not found (Debian: apt-get install openssh-server)")?;
    find(&["/usr/bin/ssh"]).ok_or("ssh not found (Debian: apt-get install openssh-client)")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let host_key = dir.path().join("host_key");
    let key = dir.path().join("user_key");
    keygen(&host_key)?;
    keygen(&key)?;
    let authorized = dir.path().join("authorized_keys");
    std::fs::copy(key.with_extension("pub"), &authorized).map_err(|e| e.to_string())?;
    // A free TCP port (released right away; sshd binds it next).
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let config = dir.path().join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
             PidFile {}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\nUseDNS no\n",
            host_key.display(),
            authorized.display(),
            dir.path().join("sshd.pid").display(),
        ),
    )
    .map_err(|e| e.to_string())?;
    // sshd's privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let child = Command::new(&sshd)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", sshd.display()))?;
    let sshd = Sshd {
        child,
        port,
        key,
        _dir: dir,
    };
    // Wait (bounded) until sshd accepts connections.
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("sshd did not listen on {addr} within 10 s"));
        }
        std::thread::yield_now();
    }
    Ok(sshd)
}

fn ssh_command(sshd: &Sshd) -> Command {
    let mut cmd = Command::new("ssh");
    cmd.args(["-p", &sshd.port.to_string(), "-i"])
        .arg(&sshd.key)
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
            "-F",
            "/dev/null",
            "127.0.0.1",
            "/bin/true",
        ])
        .stdin(Stdio::null());
    cmd
}

fn row(name: &str, samples: &[Duration]) {
    println!(
        "{name:<34} median {:>8.2} ms   p90 {:>8.2} ms   ({} runs)",
        ms(percentile(samples, 0.5)),
        ms(percentile(samples, 0.9)),
        samples.len()
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we use.
    let n = runs();
    println!("cold run benchmark: {n} runs each, one process and one connection per run");
    let local = time_runs(n, || Command::new("/bin/true"));
    row("local /bin/true", &local);
    // qexecd as the test harness runs it (no namespaces), and with its default
    // isolation (namespaces) when this runs as root.
    let mut qexec_rows = Vec::new();
    for isolation in [false, true] {
        if isolation && !is_root() {
            println!("qexec with isolation: skipped: namespaces need root");
            continue;
        }
        let server = TestServer::start_with(|c| c.isolation = isolation);
        let samples = time_runs(n, || {
            let mut cmd = server.qexec();
            cmd.args(["run", "--", "/bin/true"]);
            cmd
        });
        let name = if isolation {
            "qexec run -- /bin/true (isolated)"
        } else {
            "qexec run -- /bin/true"
        };
        row(name, &samples);
        qexec_rows.push((name, samples));
    }

    match start_sshd() {
        Ok(sshd) => {
            let ssh = time_runs(n, || ssh_command(&sshd));
            row(&format!("ssh -p {} 127.0.0.1 /bin/true", sshd.port), &ssh);
            for (name, samples) in &qexec_rows {
                let ratio = ms(percentile(&ssh, 0.5)) / ms(percentile(samples, 0.5));
                println!(
                    "ratio ssh / {name} (medians): {ratio:.1}x  (target >= 30x: {})",
                    if ratio >= 30.0 { "met" } else { "NOT met" }
                );
            }
        }
        Err(reason) => println!("ssh: skipped: {reason}"),
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}
