//! The escape suite (issue 13, "Done when"): a real in-process qexecd with isolation
//! (and the sandbox) on, jobs started with the `user`-role certificate `alice` (and
//! `bob` where two users are needed). Each test tries to cross one boundary from
//! inside a job and shows it closed; the last ones show ordinary work still succeeds.
//!
//! Every test prints what it tried (the job's probe report) and needs root and job
//! isolation: without them it is skipped with a printed reason, and fails under
//! `CI=true`.
//!
//! Layout on disk (outside `/tmp`, which isolated jobs get privately): one directory
//! per test under the target dir, mode 0755, holding
//! - `pki/` (0700): `ca.pem`, `server.pem`, `server-key.pem` (the server reads these),
//!   `ca-key.pem` (0600): the files a job must not read;
//! - `state/` (0700): the server's state directory (other jobs' output);
//! - `world/` (1777): a world-writable host directory NOT opened with `--rw-path`;
//! - `rw/` (0777): the directory opened with `--rw-path`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context as _, Result, bail, ensure};
use qexec_protocol::{
    ClientMessage, JobId, Limits, OutputFrame, ServerMessage, StartRequest, StopRequest,
    Termination,
};
use qexec_server::job::testkit;
use qexec_server::service::{ServerConfig, TlsSource};
use qexec_tests::{Output, TestClient, TestServer, WAIT};

/// Python helpers every probe starts with: `e(f, ...)` runs `f` and gives `ok` or the
/// errno name; `report` prints one `what: result` line.
const PY_PRELUDE: &str = r#"
import ctypes, errno, os, stat, sys
def e(f, *a, **k):
    try:
        f(*a, **k)
        return "ok"
    except OSError as x:
        return errno.errorcode.get(x.errno, str(x.errno))
def report(what, res):
    print(f"{what}: {res}", flush=True)
def read(p):
    with open(p, "rb") as f:
        return f.read()
def open_w(p):
    os.close(os.open(p, os.O_WRONLY))
def write(p, data):
    fd = os.open(p, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
def create(p, data=b"x"):
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
"#;

/// Errors that mean "refused" for an attempt to open or write something.
const REFUSED: &[&str] = &["EACCES", "EPERM", "EROFS", "ENOENT"];

/// A unique suffix for names on the host.
fn unique() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The test's server and its directories.
struct Escape {
    server: TestServer,
    _dir: tempfile::TempDir,
    pki: PathBuf,
    state: PathBuf,
    world: PathBuf,
    rw: PathBuf,
}

fn mkdir(path: &Path, mode: u32) -> Result<()> {
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .with_context(|| format!("mkdir {}", path.display()))?;
    // The umask may have removed bits.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    std::fs::write(path, data).with_context(|| format!("write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

impl Escape {
    /// A server with isolation on, its PKI on disk and its state outside `/tmp`;
    /// `None` when the test must be skipped.
    async fn start(test: &str) -> Result<Option<Self>> {
        if !testkit::require_root(test) {
            return Ok(None);
        }
        let dir = tempfile::Builder::new()
            .prefix("escape-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
        let pki = dir.path().join("pki");
        let state = dir.path().join("state");
        let world = dir.path().join("world");
        let rw = dir.path().join("rw");
        mkdir(&pki, 0o700)?;
        mkdir(&state, 0o700)?;
        mkdir(&world, 0o1777)?;
        mkdir(&rw, 0o777)?;
        let (pki_c, state_c) = (pki.clone(), state.clone());
        let rw_c = std::fs::canonicalize(&rw)?;
        let mut written = Ok(());
        let server = TestServer::start_with(|c: &mut ServerConfig| {
            c.isolation = true;
            c.state_dir = state_c;
            // The server reads its TLS files from the PKI directory, as deployed.
            if let TlsSource::Pem { ca, cert, key } = &c.tls {
                written = (|| -> Result<()> {
                    write_file(&pki_c.join("ca.pem"), ca.as_bytes(), 0o644)?;
                    write_file(&pki_c.join("server.pem"), cert.as_bytes(), 0o644)?;
                    write_file(&pki_c.join("server-key.pem"), key.as_bytes(), 0o600)?;
                    Ok(())
                })();
                c.tls = TlsSource::Files {
                    ca: pki_c.join("ca.pem"),
                    cert: pki_c.join("server.pem"),
                    key: pki_c.join("server-key.pem"),
                };
            }
            // Exactly the `rw` directory is opened (`world` must stay closed:
            // world_writable_host_dir_is_not_writable); the server masks its TLS files,
            // their directory (`pki`) and the state directory itself (QX-SBX-9/10).
            c.sandbox.rw_paths = vec![rw_c];
        })
        .await?;
        written?;
        write_file(
            &pki.join("ca-key.pem"),
            server.pki.ca.key_pem().as_bytes(),
            0o600,
        )?;
        let caps = server.server.manager().capabilities();
        if !caps.isolation {
            let why = caps.isolation_unavailable.unwrap_or_default();
            testkit::skip_unless(test, Err(format!("job isolation is unavailable: {why}")));
            return Ok(None);
        }
        Ok(Some(Self {
            server,
            _dir: dir,
            pki,
            state,
            world,
            rw,
        }))
    }

    async fn connect(&self, user: &str) -> Result<TestClient> {
        self.server.connect(user).await
    }
}

/// A start request of `argv` with a default `PATH`, following the output.
fn start_req(argv: &[&str]) -> StartRequest {
    qexec_tests::start_request(argv, true)
}

/// `python3 -c PRELUDE+body args...`.
fn python(body: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec![
        "python3".to_owned(),
        "-c".to_owned(),
        format!("{PY_PRELUDE}\n{body}"),
    ];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    argv
}

async fn start(c: &TestClient, req: StartRequest) -> Result<JobId> {
    match c.request(&ClientMessage::Start(req)).await?.as_slice() {
        [ServerMessage::Started(s)] => Ok(s.job),
        other => bail!("start answered {other:?}"),
    }
}

/// Runs a job to its end and returns its output.
async fn run(c: &TestClient, req: StartRequest) -> Result<Output> {
    start(c, req).await?;
    let out = c.accept_output().await?.read_to_end().await?;
    println!(
        "job {} ended {:?}; output:\n{}",
        out.job,
        out.status.state,
        String::from_utf8_lossy(&out.data)
    );
    Ok(out)
}

/// Runs a python probe job as `c` to its end; returns its `what: result` lines.
async fn probe(c: &TestClient, body: &str, args: &[&str]) -> Result<BTreeMap<String, String>> {
    let argv = python(body, args);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = run(c, start_req(&argv)).await?;
    ensure!(
        out.status.state.termination() == Some(Termination::Exited(0)),
        "the probe itself failed: {:?}",
        out.status.state
    );
    Ok(report_lines(&out.data))
}

fn report_lines(data: &[u8]) -> BTreeMap<String, String> {
    String::from_utf8_lossy(data)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Asserts every reported attempt whose name starts with `prefix` was refused.
fn assert_refused(report: &BTreeMap<String, String>, prefix: &str, allowed: &[&str]) {
    let attempts: Vec<_> = report
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .collect();
    assert!(
        !attempts.is_empty(),
        "no `{prefix}` attempt was reported: {report:?}"
    );
    for (what, res) in attempts {
        assert!(
            allowed.contains(&res.as_str()),
            "{what}: {res} (expected one of {allowed:?})"
        );
    }
}

/// A running job whose program printed `ready`.
struct Running {
    id: JobId,
    /// Host pid of the job's init.
    init: u32,
    /// Its output up to `ready`.
    seen: Vec<u8>,
    _output: qexec_tests::OutputReader,
}

/// Starts `argv` and waits (bounded) until it printed `ready`.
async fn start_ready(c: &TestClient, argv: &[&str], limits: Limits) -> Result<Running> {
    let mut req = start_req(argv);
    req.limits = limits;
    let id = start(c, req).await?;
    let mut output = c.accept_output().await?;
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        while !String::from_utf8_lossy(&seen).contains("ready") {
            match output.next().await? {
                Some(OutputFrame::Data { data, .. }) => seen.extend_from_slice(&data),
                Some(OutputFrame::Header { .. }) => {}
                Some(OutputFrame::End { status }) => bail!(
                    "job ended before ready: {:?}: {}",
                    status.state,
                    String::from_utf8_lossy(&seen)
                ),
                None => bail!("output ended before ready"),
            }
        }
        Ok(())
    })
    .await
    .context("job did not print ready")??;
    println!("job {id}: {}", String::from_utf8_lossy(&seen).trim());
    let init = c.status(id).await?.pid.context("running job has no pid")?;
    Ok(Running {
        id,
        init,
        seen,
        _output: output,
    })
}

async fn stop(c: &TestClient, id: JobId) -> Result<()> {
    let answer = c
        .request(&ClientMessage::Stop(StopRequest {
            job: id,
            grace_ms: Some(0),
        }))
        .await?;
    ensure!(
        matches!(answer.as_slice(), [ServerMessage::Status(_)]),
        "stop answered {answer:?}"
    );
    Ok(())
}

/// Host pids of the processes in the PID namespace of `init`, the init excluded.
fn job_processes(init: u32) -> Result<Vec<u32>> {
    let ns = std::fs::read_link(format!("/proc/{init}/ns/pid"))?;
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid != init && std::fs::read_link(entry.path().join("ns/pid")).is_ok_and(|l| l == ns) {
            pids.push(pid);
        }
    }
    ensure!(!pids.is_empty(), "no job process besides the init {init}");
    Ok(pids)
}

/// The four ids of a `Uid:` or `Gid:` line of `/proc/<pid>/status`.
fn status_ids(pid: u32, field: &str) -> Result<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .with_context(|| format!("no {field} in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect())
}

// ---------------------------------------------------------------------------------
// Boundaries
// ---------------------------------------------------------------------------------

/// Root-only host files: the CA key (and the server key) cannot be read, the PKI
/// directory shows nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_key_is_unreadable() -> Result<()> {
    let Some(t) = Escape::start("ca_key_is_unreadable").await? else {
        return Ok(());
    };
    let alice = t.connect("alice").await?;
    let pki = t.pki.to_string_lossy().into_owned();
    let r = probe(
        &alice,
        r#"
pki = sys.argv[1]
report("read ca-key.pem", e(read, pki + "/ca-key.pem"))
report("read server-key.pem", e(read, pki + "/server-key.pem"))
try:
    report("pki entries", sorted(os.listdir(pki)))
except OSError as x:
    report("pki entries", errno.errorcode.get(x.errno))
"#,
        &[&pki],
    )
    .await?;
    // Masked (empty tmpfs): ENOENT; merely unreadable to the job's uid: EACCES.
    assert_refused(&r, "read ", &["ENOENT", "EACCES"]);
    let entries = &r["pki entries"];
    assert!(
        !entries.contains("key"),
        "the job lists the PKI directory: {entries}"
    );
    t.server.stop().await
}

/// Another user's job output in the state directory cannot be read or listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_jobs_output_is_unreadable() -> Result<()> {
    let Some(t) = Escape::start("other_jobs_output_is_unreadable").await? else {
        return Ok(());
    };
    let bob = t.connect("bob").await?;
    let secret = format!("bob-secret-{}", unique());
    let out = run(&bob, start_req(&["/bin/echo", &secret])).await?;
    let bob_job = out.job.to_string();
    let file = t.state.join("jobs").join(&bob_job).join("output");
    let on_host = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
    ensure!(
        String::from_utf8_lossy(&on_host).contains(&secret),
        "test set-up: {} does not hold bob's output",
        file.display()
    );

    let alice = t.connect("alice").await?;
    let state = t.state.to_string_lossy().into_owned();
    let r = probe(
        &alice,
        r#"
state, job = sys.argv[1], sys.argv[2]
report("read bob output", e(read, f"{state}/jobs/{job}/output"))
try:
    report("state jobs entries", sorted(os.listdir(state + "/jobs")))
except OSError as x:
    report("state jobs entries", errno.errorcode.get(x.errno))
"#,
        &[&state, &bob_job],
    )
    .await?;
    assert_refused(&r, "read bob output", &["ENOENT", "EACCES"]);
    let entries = &r["state jobs entries"];
    assert!(
        !entries.contains(&bob_job),
        "alice's job lists bob's job in the state directory: {entries}"
    );
    t.server.stop().await
}

/// Seen from the host, a job's processes do not run as uid 0 (nor gid 0), and two
/// users' concurrent jobs run as different host uids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_uid_is_unprivileged_and_differs_between_users() -> Result<()> {
    let Some(t) = Escape::start("host_uid_is_unprivileged_and_differs_between_users").await? else {
        return Ok(());
    };
    let alice = t.connect("alice").await?;
    let bob = t.connect("bob").await?;
    let script = ["/bin/sh", "-c", "echo ready; id; exec sleep 1000"];
    let a = start_ready(&alice, &script, Limits::default()).await?;
    let b = start_ready(&bob, &script, Limits::default()).await?;
    let mut uids: [BTreeSet<u32>; 2] = Default::default();
    for (i, job) in [&a, &b].into_iter().enumerate() {
        let mut checked = 0;
        for pid in job_processes(job.init)? {
            // A short-lived process of the job (`id`) may exit between the listing and
            // this read: skip it; the job's `sleep` stays and is always checked.
            let (Ok(u), Ok(g)) = (status_ids(pid, "Uid:"), status_ids(pid, "Gid:")) else {
                continue;
            };
            checked += 1;
            println!("job {} process {pid}: Uid {u:?} Gid {g:?}", job.id);
            assert!(
                u.iter().all(|v| *v != 0),
                "job process {pid} runs with host uid 0: {u:?}"
            );
            assert!(
                g.iter().all(|v| *v != 0),
                "job process {pid} runs with host gid 0: {g:?}"
            );
            uids[i].extend(u);
        }
        ensure!(checked > 0, "no process of job {} could be checked", job.id);
    }
    stop(&alice, a.id).await?;
    stop(&bob, b.id).await?;
    assert!(
        uids[0].is_disjoint(&uids[1]),
        "alice's and bob's concurrent jobs share host uids: {uids:?}"
    );
    t.server.stop().await
}

/// A world-writable host directory that was not opened with `--rw-path` cannot be
/// written (the host file system is mounted read-only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn world_writable_host_dir_is_not_writable() -> Result<()> {
    let Some(t) = Escape::start("world_writable_host_dir_is_not_writable").await? else {
        return Ok(());
    };
    let alice = t.connect("alice").await?;
    let target = t.world.join(format!("escape-{}", unique()));
    let r = probe(
        &alice,
        r#"
p = sys.argv[1]
report("create in world-writable dir", e(create, p))
report("mkdir in world-writable dir", e(os.mkdir, p + ".d"))
"#,
        &[&target.to_string_lossy()],
    )
    .await?;
    let exists = target.exists();
    let _ = std::fs::remove_file(&target);
    let _ = std::fs::remove_dir(target.with_extension("d"));
    assert_refused(&r, "create ", &["EROFS"]);
    assert_refused(&r, "mkdir ", &["EROFS"]);
    assert!(!exists, "the job created {}", target.display());
    t.server.stop().await
}

/// The job cannot raise its own limits or leave its cgroup: every write to its own
/// `pids.max` or its parent's `cgroup.procs`/`pids.max`, in every cgroup path it can
/// find (`/proc/self/cgroup` under `/sys/fs/cgroup`, and every cgroup mount it sees),
/// is refused; `/proc/self/cgroup` shows `/`; from the host, the job is still in its
/// cgroup with its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_cgroup_limits_are_not_writable_or_escapable() -> Result<()> {
    let Some(t) = Escape::start("own_cgroup_limits_are_not_writable_or_escapable").await? else {
        return Ok(());
    };
    let alice = t.connect("alice").await?;
    let body = r#"
lines = open("/proc/self/cgroup").read().split("\n")
for l in lines:
    if l:
        report("cgroup line " + l.split(":")[0], l.split(":", 2)[2])
roots = set()
for l in open("/proc/self/mountinfo"):
    f = l.split()
    fstype = f[f.index("-") + 1]
    if fstype in ("cgroup", "cgroup2"):
        roots.add(f[4])
report("cgroup mounts", sorted(roots) or "none")
cands = set()
for l in lines:
    if not l:
        continue
    _, ctrls, path = l.split(":", 2)
    for root in list(roots) + ["/sys/fs/cgroup", "/sys/fs/cgroup/" + ctrls.replace("name=", "")]:
        cands.add(os.path.normpath(root + "/" + path))
n = 0
for d in sorted(cands):
    parent = os.path.dirname(d)
    n += 1
    report(f"write own pids.max {d}", e(write, d + "/pids.max", b"max"))
    try:
        cur = read(parent + "/pids.max")
    except OSError:
        cur = b"max"
    report(f"write parent pids.max {parent}", e(write, parent + "/pids.max", cur))
    report(f"write parent cgroup.procs {parent}", e(write, parent + "/cgroup.procs", b"0"))
report("candidates", n)
print("ready", flush=True)
os.execv("/bin/sleep", ["sleep", "1000"])
"#;
    // The probe reports, then stays running (as `sleep`) so the host can look at it.
    let argv = python(body, &[]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let limits = Limits {
        pids: Some(64),
        ..Limits::default()
    };
    let job = start_ready(&alice, &argv, limits).await?;
    let out = job.seen.clone();
    let r = report_lines(&out);
    // From the host: every job process is still in the job's own pids cgroup, whose
    // limit is still 64.
    let mut host_view = Vec::new();
    for pid in job_processes(job.init)? {
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
        let pids_path = cg
            .lines()
            .find_map(|l| {
                let (_, rest) = l.split_once(':')?;
                let (ctrls, path) = rest.split_once(':')?;
                ctrls
                    .split(',')
                    .any(|c| c == "pids")
                    .then(|| format!("/sys/fs/cgroup/pids{path}"))
                    .or_else(|| (ctrls.is_empty()).then(|| format!("/sys/fs/cgroup{path}")))
            })
            .filter(|p| Path::new(p).join("pids.max").exists());
        host_view.push((pid, pids_path.clone()));
        let path = pids_path.context("job process not in a pids cgroup")?;
        assert!(
            path.contains(&job.id.to_string()),
            "job process {pid} left its cgroup: now in {path}"
        );
        let max = std::fs::read_to_string(Path::new(&path).join("pids.max"))?;
        assert_eq!(max.trim(), "64", "the job raised its pids.max");
    }
    println!("host view: {host_view:?}");
    stop(&alice, job.id).await?;
    for (k, v) in &r {
        if let Some(line) = k.strip_prefix("cgroup line ") {
            assert_eq!(v, "/", "cgroup {line}: the job sees its host cgroup path");
        }
    }
    assert_refused(&r, "write ", REFUSED);
    t.server.stop().await
}

/// Other jobs' cgroups are invisible: nothing under `/sys/fs/cgroup` nor in any
/// `/proc/*/cgroup` the job can read names bob's running job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_jobs_cgroups_are_invisible() -> Result<()> {
    let Some(t) = Escape::start("other_jobs_cgroups_are_invisible").await? else {
        return Ok(());
    };
    let bob = t.connect("bob").await?;
    let b = start_ready(
        &bob,
        &["/bin/sh", "-c", "echo ready; exec sleep 1000"],
        Limits::default(),
    )
    .await?;
    let alice = t.connect("alice").await?;
    let bob_job = b.id.to_string();
    let r = probe(
        &alice,
        r#"
job = sys.argv[1]
found = []
for root, dirs, files in os.walk("/sys/fs/cgroup"):
    if job in root:
        found.append(root)
        dirs[:] = []
        for name in ("freezer.state", "cgroup.freeze", "cgroup.procs"):
            if name in files:
                report("open other job's " + name + " for writing", e(open_w, root + "/" + name))
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            if job in open(f"/proc/{p}/cgroup").read():
                found.append(f"/proc/{p}/cgroup")
        except OSError:
            pass
report("bob's job found at", found or "nowhere")
"#,
        &[&bob_job],
    )
    .await?;
    stop(&bob, b.id).await?;
    assert_eq!(r["bob's job found at"], "nowhere");
    t.server.stop().await
}

/// `/proc/sys`, `/proc/sysrq-trigger` and host `/sys` are read-only: opening their
/// files for writing is refused (nothing is written if it were not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_sys_sysrq_and_sys_are_read_only() -> Result<()> {
    let Some(t) = Escape::start("proc_sys_sysrq_and_sys_are_read_only").await? else {
        return Ok(());
    };
    let alice = t.connect("alice").await?;
    let r = probe(
        &alice,
        r#"
for p in ["/proc/sys/kernel/core_pattern", "/proc/sys/vm/drop_caches",
          "/proc/sys/kernel/hostname", "/proc/sysrq-trigger",
          "/sys/kernel/mm/transparent_hugepage/enabled", "/sys/kernel/profiling"]:
    report("open for writing " + p, e(open_w, p))
report("create in /sys/kernel", e(create, "/sys/kernel/qexec-escape"))
"#,
        &[],
    )
    .await?;
    let mut r = r;
    // A kernel built without CONFIG_MAGIC_SYSRQ has no /proc/sysrq-trigger at all.
    if !Path::new("/proc/sysrq-trigger").exists() {
        let sysrq = r.remove("open for writing /proc/sysrq-trigger");
        assert_eq!(sysrq.as_deref(), Some("ENOENT"), "{r:?}");
    }
    // EROFS (read-only mount) or EACCES (the file is host root's and the job's uid
    // is not); never ok.
    assert_refused(&r, "open for writing", &["EROFS", "EACCES"]);
    assert_refused(&r, "create in /sys", &["EROFS", "EACCES"]);
    t.server.stop().await
}

/// No block device is visible in `/dev`, and none can be made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_block_devices() -> Result<()> {
    let Some(t) = Escape::start("no_block_devices").await? else {
        return Ok(());
    };
    let alice = t.connect("alice").await?;
    let r = probe(
        &alice,
        r#"
blk = []
for root, dirs, files in os.walk("/dev"):
    for n in dirs + files:
        p = os.path.join(root, n)
        try:
            if stat.S_ISBLK(os.lstat(p).st_mode):
                blk.append(p)
        except OSError:
            pass
report("block devices", blk or "none")
report("dev entries", sorted(os.listdir("/dev")))
report("mknod block device in /tmp", e(os.mknod, "/tmp/sda", stat.S_IFBLK | 0o600, os.makedev(8, 0)))
"#,
        &[],
    )
    .await?;
    assert_eq!(r["block devices"], "none");
    assert_refused(&r, "mknod", &["EPERM"]);
    t.server.stop().await
}

/// `/dev/shm` is private: a file a job leaves there is not on the host's `/dev/shm`
/// and is gone after the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_dev_shm_is_gone_after_the_job() -> Result<()> {
    let Some(t) = Escape::start("private_dev_shm_is_gone_after_the_job").await? else {
        return Ok(());
    };
    let alice = t.connect("alice").await?;
    let name = format!("qexec-escape-{}", unique());
    let r = probe(
        &alice,
        r#"report("create /dev/shm file", e(create, "/dev/shm/" + sys.argv[1]))"#,
        &[&name],
    )
    .await?;
    let host = Path::new("/dev/shm").join(&name);
    let leaked = host.exists();
    let _ = std::fs::remove_file(&host);
    assert_eq!(r["create /dev/shm file"], "ok", "/dev/shm must stay usable");
    assert!(!leaked, "{} outlived the job on the host", host.display());
    let r = probe(
        &alice,
        r#"report("second job sees it", os.path.exists("/dev/shm/" + sys.argv[1]))"#,
        &[&name],
    )
    .await?;
    assert_eq!(r["second job sees it"], "False");
    t.server.stop().await
}

/// The job's program runs under the seccomp filter: `Seccomp: 2`, and a denied call
/// (keyctl) fails with EPERM. spec: QX-SBX-20, QX-SBX-21, QX-SBX-24
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_filter_is_on() -> Result<()> {
    let Some(t) = Escape::start("seccomp_filter_is_on").await? else {
        return Ok(());
    };
    let alice = t.connect("alice").await?;
    let keyctl = libc::SYS_keyctl.to_string();
    let r = probe(
        &alice,
        r#"
for l in open("/proc/self/status"):
    if l.startswith("Seccomp:"):
        report("Seccomp", l.split()[1])
libc = ctypes.CDLL(None, use_errno=True)
r = libc.syscall(ctypes.c_long(int(sys.argv[1])), ctypes.c_long(0), ctypes.c_long(-3), ctypes.c_long(0))
report("keyctl", "ok" if r != -1 else errno.errorcode.get(ctypes.get_errno()))
"#,
        &[&keyctl],
    )
    .await?;
    assert_eq!(r["Seccomp"], "2");
    assert_eq!(r["keyctl"], "EPERM");
    t.server.stop().await
}

/// `umount /tmp` (and a lazy detach) is refused and uncovers nothing: a marker the
/// host put in its own `/tmp` stays invisible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn umount_tmp_uncovers_nothing() -> Result<()> {
    let Some(t) = Escape::start("umount_tmp_uncovers_nothing").await? else {
        return Ok(());
    };
    let marker = PathBuf::from(format!("/tmp/qexec-escape-marker-{}", unique()));
    std::fs::write(&marker, b"host /tmp")?;
    let alice = t.connect("alice").await?;
    let out = run(
        &alice,
        start_req(&[
            "/bin/sh",
            "-c",
            r#"umount /tmp 2>/dev/null; echo "umount exit: $?"; umount -l /tmp 2>/dev/null; echo "umount -l exit: $?"; python3 -c 'import ctypes, errno; l = ctypes.CDLL(None, use_errno=True); r = l.umount2(b"/tmp", 2); print("umount2: " + ("ok" if r == 0 else errno.errorcode[ctypes.get_errno()]))'; if [ -e "$0" ]; then echo "marker: visible"; else echo "marker: hidden"; fi"#,
            &marker.to_string_lossy(),
        ]),
    )
    .await;
    let _ = std::fs::remove_file(&marker);
    let r = report_lines(&out?.data);
    assert_eq!(r["umount2"], "EPERM");
    assert_ne!(r["umount exit"], "0");
    assert_ne!(r["umount -l exit"], "0");
    assert_eq!(r["marker"], "hidden");
    t.server.stop().await
}

// ---------------------------------------------------------------------------------
// Ordinary work still succeeds
// ---------------------------------------------------------------------------------

/// Write `/tmp`, read `/usr`, python3, pipes, `sh -c` with subshells, 100 forked
/// children: all work in the sandbox.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordinary_work_succeeds() -> Result<()> {
    let Some(t) = Escape::start("ordinary_work_succeeds").await? else {
        return Ok(());
    };
    let alice = t.connect("alice").await?;
    let script = r#"
set -e
echo hello > /tmp/f; echo "tmp: $(cat /tmp/f)"
echo "usr: $(head -c 4 /usr/bin/env | tail -c 3)"
echo "python: $(python3 -c 'print(6 * 7)')"
echo "pipe: $(seq 1 1000 | sort -rn | head -n 1)"
echo "subshells: $( (echo a; (echo b; (echo c))) | wc -l)"
echo "children: $(python3 -c '
import os
pids = [os.fork() or os._exit(7) for _ in range(100)]
print(sum(os.WEXITSTATUS(os.waitpid(p, 0)[1]) == 7 for p in pids))
')"
i=0; while [ $i -lt 100 ]; do (exit 0) & i=$((i+1)); done; wait; echo "sh children: done"
"#;
    let out = run(&alice, start_req(&["/bin/sh", "-c", script])).await?;
    assert_eq!(
        out.status.state.termination(),
        Some(Termination::Exited(0)),
        "{}",
        String::from_utf8_lossy(&out.data)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.data),
        "tmp: hello\nusr: ELF\npython: 42\npipe: 1000\nsubshells: 3\nchildren: 100\nsh children: done\n"
    );
    t.server.stop().await
}

/// A job reads a file from an `--rw-path` directory and writes one back; the host
/// sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rw_path_round_trip() -> Result<()> {
    let Some(t) = Escape::start("rw_path_round_trip").await? else {
        return Ok(());
    };
    // `t.rw` is opened with `--rw-path` (Escape::start); without it the sandbox makes
    // the write fail with EROFS.
    write_file(&t.rw.join("in.txt"), b"from the host\n", 0o644)?;
    let alice = t.connect("alice").await?;
    let out = run(
        &alice,
        start_req(&[
            "/bin/sh",
            "-c",
            r#"cat "$0/in.txt" && echo "from the job" > "$0/out.txt" && echo written"#,
            &t.rw.to_string_lossy(),
        ]),
    )
    .await?;
    assert_eq!(
        String::from_utf8_lossy(&out.data),
        "from the host\nwritten\n"
    );
    assert_eq!(
        std::fs::read_to_string(t.rw.join("out.txt"))?,
        "from the job\n"
    );
    t.server.stop().await
}
