//! Unit tests on tempdir fixtures, and tests on the real cgroups of the host (as
//! root; the same tests run on cgroup v2 in the VM of `vm/run-cgroup-v2.sh`).

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use qexec_protocol::Limits;

use super::common::{freeze_kill_loop, wait_for};
use super::*;
use crate::testkit;

// ---------------------------------------------------------------------------------
// Fixtures (no root needed)
// ---------------------------------------------------------------------------------

fn entry(mount_point: &str, fs_type: &str, opts: &str) -> MountEntry {
    MountEntry {
        root: "/".into(),
        mount_point: mount_point.into(),
        fs_type: fs_type.into(),
        super_options: opts.split(',').map(str::to_owned).collect(),
    }
}

#[test]
fn choose_hybrid_with_empty_cgroup2_uses_v1() {
    let base = Path::new("/sys/fs/cgroup");
    let mounts = vec![
        entry("/sys/fs/cgroup", "tmpfs", "rw,mode=755"),
        entry("/sys/fs/cgroup/cpu,cpuacct", "cgroup", "rw,cpu,cpuacct"),
        entry("/sys/fs/cgroup/memory", "cgroup", "rw,memory"),
        entry("/sys/fs/cgroup/blkio", "cgroup", "rw,blkio"),
        entry("/sys/fs/cgroup/pids", "cgroup", "rw,pids"),
        entry("/sys/fs/cgroup/freezer", "cgroup", "rw,freezer"),
        entry("/sys/fs/cgroup/systemd", "cgroup", "rw,name=systemd"),
        entry("/sys/fs/cgroup/unified", "cgroup2", "rw"),
        // a cgroup mount elsewhere (a container's) is not ours
        entry("/srv/ctr/sys/fs/cgroup/pids", "cgroup", "rw,pids"),
    ];
    let Choice::V1 { host, mounts } = choose(FsKind::Tmpfs, &mounts, base) else {
        panic!("expected v1");
    };
    assert_eq!(host, HostLayout::Hybrid);
    let comount = PathBuf::from("/sys/fs/cgroup/cpu,cpuacct");
    assert_eq!(
        mounts,
        vec![
            (Controller::Cpu, comount.clone()),
            (Controller::Cpuacct, comount),
            (Controller::Memory, "/sys/fs/cgroup/memory".into()),
            (Controller::Io, "/sys/fs/cgroup/blkio".into()),
            (Controller::Pids, "/sys/fs/cgroup/pids".into()),
            (Controller::Freezer, "/sys/fs/cgroup/freezer".into()),
        ]
    );
}

#[test]
fn choose_unified_and_legacy_and_none() {
    let base = Path::new("/sys/fs/cgroup");
    let v2 = vec![entry("/sys/fs/cgroup", "cgroup2", "rw,nsdelegate")];
    assert_eq!(
        choose(FsKind::Cgroup2, &v2, base),
        Choice::V2 {
            host: HostLayout::Unified,
            root: base.to_owned()
        }
    );
    let legacy = vec![entry("/sys/fs/cgroup/pids", "cgroup", "rw,pids")];
    assert!(matches!(
        choose(FsKind::Tmpfs, &legacy, base),
        Choice::V1 {
            host: HostLayout::Legacy,
            ..
        }
    ));
    // hybrid whose controllers all moved to cgroup2
    let hybrid_v2 = vec![entry("/sys/fs/cgroup/unified", "cgroup2", "rw")];
    assert_eq!(
        choose(FsKind::Tmpfs, &hybrid_v2, base),
        Choice::V2 {
            host: HostLayout::Hybrid,
            root: "/sys/fs/cgroup/unified".into()
        }
    );
    assert!(matches!(
        choose(FsKind::Tmpfs, &[], base),
        Choice::None {
            host: HostLayout::None,
            ..
        }
    ));
    assert!(matches!(
        choose(FsKind::Other, &legacy, base),
        Choice::None { .. }
    ));
}

/// A v2 root with `subtree` whose `cgroup.controllers` lists `controllers`.
fn v2_fixture(controllers: &str) -> (tempfile::TempDir, Cgroups) {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("qexec")).unwrap();
    std::fs::write(t.path().join("qexec/cgroup.controllers"), controllers).unwrap();
    let cg = Cgroups::v2_at(HostLayout::Unified, t.path(), "qexec");
    (t, cg)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn v2_fixture_writes_limits() {
    let (t, cg) = v2_fixture("cpuset cpu io memory hugetlb pids rdma misc\n");
    assert!(cg.is_available());
    assert_eq!(cg.layout(), Some(CgroupVersion::V2));
    let caps = cg.capabilities();
    assert!(Controller::V2.iter().all(|c| caps.usable(*c)), "{caps}");
    assert_eq!(
        read(&t.path().join("qexec/cgroup.subtree_control")),
        "+pids"
    );
    let limits = Limits {
        cpu_millis: Some(200),
        memory_bytes: Some(64 << 20),
        io_write_bps: Some(5_000_000),
        io_read_iops: Some(100),
        pids: Some(32),
        ..Limits::default()
    };
    let disk = DeviceNumber {
        major: 254,
        minor: 0,
    };
    let job = cg.create("job1", &limits, &[disk]).unwrap();
    let d = t.path().join("qexec/job1");
    assert_eq!(job.paths(), vec![d.clone()]);
    assert_eq!(read(&d.join("cpu.max")), "20000 100000");
    assert_eq!(read(&d.join("memory.max")), "67108864");
    assert_eq!(read(&d.join("memory.oom.group")), "1");
    assert_eq!(read(&d.join("io.max")), "254:0 wbps=5000000 riops=100");
    assert_eq!(read(&d.join("pids.max")), "32");
    assert_eq!(job.procs_fds().len(), 1);

    // usage and OOM from the kernel's files
    std::fs::write(
        d.join("cpu.stat"),
        "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\nthrottled_usec 700\n",
    )
    .unwrap();
    std::fs::write(d.join("memory.peak"), "1048576\n").unwrap();
    std::fs::write(
        d.join("io.stat"),
        "254:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
    )
    .unwrap();
    std::fs::write(d.join("memory.events"), "low 0\nmax 3\noom 1\noom_kill 0\n").unwrap();
    let u = job.usage().unwrap();
    assert_eq!(u.cpu_usec, Some(2500));
    assert_eq!(u.cpu_throttled_usec, Some(700));
    assert_eq!(u.memory_peak_bytes, Some(1 << 20));
    assert_eq!((u.io_read_bytes, u.io_write_bytes), (Some(10), Some(20)));
    assert!(!job.oom_killed().unwrap());
    std::fs::write(d.join("memory.events"), "low 0\nmax 3\noom 1\noom_kill 1\n").unwrap();
    assert!(job.oom_killed().unwrap());

    // a second job of the same name is refused
    assert!(matches!(
        cg.create("job1", &Limits::default(), &[]),
        Err(CgroupError::AlreadyExists { .. })
    ));
    // IO limits without a device are refused
    let io_only = Limits {
        io_write_bps: Some(1),
        ..Limits::default()
    };
    assert!(matches!(
        cg.create("job2", &io_only, &[]),
        Err(CgroupError::NoIoDevice { .. })
    ));
}

#[test]
fn v2_fixture_missing_controller_is_reported() {
    let (_t, cg) = v2_fixture("cpu pids\n");
    let caps = cg.capabilities();
    assert!(caps.usable(Controller::Cpu));
    assert!(!caps.usable(Controller::Memory));
    let text = caps.to_string();
    assert!(text.contains("memory no (it is not enabled in"), "{text}");
    let mem = Limits {
        memory_bytes: Some(1 << 30),
        ..Limits::default()
    };
    assert!(matches!(
        cg.validate(&mem, &Limits::default()),
        Err(LimitError::Unsupported {
            limit: LimitKind::Memory,
            ..
        })
    ));
    assert!(matches!(
        cg.create("j", &mem, &[]),
        Err(CgroupError::ControllerUnavailable {
            controller: Controller::Memory,
            ..
        })
    ));
}

#[test]
fn v1_fixture_comounted_controllers_share_a_directory() {
    let t = tempfile::tempdir().unwrap();
    let m = |n: &str| {
        let p = t.path().join(n);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let cpu = m("cpu,cpuacct");
    let mounts = vec![
        (Controller::Cpu, cpu.clone()),
        (Controller::Cpuacct, cpu.clone()),
        (Controller::Memory, m("memory")),
        (Controller::Io, m("blkio")),
        (Controller::Pids, m("pids")),
        (Controller::Freezer, m("freezer")),
    ];
    let cg = Cgroups::v1_at(HostLayout::Legacy, &mounts, "qexec");
    assert_eq!(cg.layout(), Some(CgroupVersion::V1));
    assert_eq!(cg.capabilities().subtree.len(), 5);
    assert_eq!(cg.capabilities().kill, Some(KillMethod::FreezeAndKill));
    // Swap accounting present: memsw is set to the same value.
    std::fs::create_dir_all(t.path().join("memory/qexec")).unwrap();
    let limits = Limits {
        cpu_millis: Some(1500),
        memory_bytes: Some(64 << 20),
        io_write_bps: Some(5_000_000),
        pids: Some(32),
        ..Limits::default()
    };
    let dev = DeviceNumber { major: 8, minor: 0 };
    let mut job = cg.create("j1", &limits, &[dev]).unwrap();
    assert_eq!(job.paths().len(), 5);
    assert_eq!(job.procs_fds().len(), 5);
    let d = |n: &str| t.path().join(n).join("qexec/j1");
    assert_eq!(read(&d("cpu,cpuacct").join("cpu.cfs_quota_us")), "150000");
    assert_eq!(read(&d("cpu,cpuacct").join("cpu.cfs_period_us")), "100000");
    assert_eq!(read(&d("memory").join("memory.limit_in_bytes")), "67108864");
    // no memsw file in the fixture: swappiness 0 instead
    assert_eq!(read(&d("memory").join("memory.swappiness")), "0");
    assert_eq!(
        read(&d("blkio").join("blkio.throttle.write_bps_device")),
        "8:0 5000000"
    );
    assert_eq!(read(&d("pids").join("pids.max")), "32");

    std::fs::write(d("cpu,cpuacct").join("cpuacct.usage"), "3000000\n").unwrap();
    std::fs::write(
        d("cpu,cpuacct").join("cpu.stat"),
        "nr_periods 5\nnr_throttled 4\nthrottled_time 9000000\n",
    )
    .unwrap();
    std::fs::write(d("memory").join("memory.max_usage_in_bytes"), "4096\n").unwrap();
    std::fs::write(
        d("blkio").join("blkio.throttle.io_service_bytes"),
        "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
    )
    .unwrap();
    std::fs::write(
        d("memory").join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    )
    .unwrap();
    let u = job.usage().unwrap();
    assert_eq!(u.cpu_usec, Some(3000));
    assert_eq!(u.cpu_throttled_usec, Some(9000));
    assert_eq!(u.memory_peak_bytes, Some(4096));
    assert_eq!((u.io_read_bytes, u.io_write_bytes), (Some(1), Some(2)));
    assert!(job.oom_killed().unwrap());

    // Files in the fixture dirs keep rmdir from working; clear them, then remove.
    for p in job.paths() {
        for e in std::fs::read_dir(&p).unwrap() {
            std::fs::remove_file(e.unwrap().path()).unwrap();
        }
    }
    job.remove().unwrap();
    job.remove().unwrap(); // idempotent
    assert!(job.paths().iter().all(|p| !p.exists()));
    cg.remove_subtree().unwrap();
}

#[test]
fn unavailable_cgroups_refuse_limits_with_a_reason() {
    let cg = Cgroups::v2_at(
        HostLayout::Unified,
        Path::new("/nonexistent/qexec-test-root"),
        "qexec",
    );
    assert!(!cg.is_available());
    let caps = cg.capabilities();
    assert!(
        caps.to_string().contains("unavailable: failed to create"),
        "{caps}"
    );
    let l = Limits {
        pids: Some(4),
        ..Limits::default()
    };
    let err = cg.validate(&l, &Limits::default()).unwrap_err();
    assert!(matches!(err, LimitError::Unsupported { .. }));
    assert!(err.to_string().contains("cgroups are unavailable"), "{err}");
    // no limits: nothing to refuse
    cg.validate(&Limits::default(), &Limits::default()).unwrap();
    let err = cg.create("j", &Limits::default(), &[]).unwrap_err();
    assert!(matches!(err, CgroupError::Unavailable { .. }));
    assert_eq!(err.to_string().matches("unavailable").count(), 1, "{err}");
    assert!(cg.cleanup_stale().unwrap().is_empty());
}

#[test]
fn validation_refuses_above_max_and_below_min() {
    let (_t, cg) = v2_fixture("cpu io memory pids\n");
    let max = Limits {
        cpu_millis: Some(2000),
        memory_bytes: Some(1 << 30),
        pids: Some(100),
        ..Limits::default()
    };
    let ok = Limits {
        cpu_millis: Some(2000),
        memory_bytes: Some(1 << 30),
        io_write_bps: Some(u64::MAX), // no maximum configured for it
        pids: Some(1),
        ..Limits::default()
    };
    cg.validate(&ok, &max).unwrap();
    let over = Limits {
        memory_bytes: Some((1 << 30) + 1),
        ..Limits::default()
    };
    let err = cg.validate(&over, &max).unwrap_err();
    assert_eq!(
        err,
        LimitError::AboveMax {
            limit: LimitKind::Memory,
            requested: (1 << 30) + 1,
            max: 1 << 30
        }
    );
    assert_eq!(
        err.to_string(),
        "memory_bytes 1073741825 is above the server maximum 1073741824; ask for at most \
         1073741824"
    );
    let over_pids = Limits {
        pids: Some(101),
        ..Limits::default()
    };
    assert!(matches!(
        cg.validate(&over_pids, &max),
        Err(LimitError::AboveMax {
            limit: LimitKind::Pids,
            ..
        })
    ));
    let tiny_cpu = Limits {
        cpu_millis: Some(5),
        ..Limits::default()
    };
    assert!(matches!(
        cg.validate(&tiny_cpu, &max),
        Err(LimitError::BelowMin {
            limit: LimitKind::Cpu,
            min: 10,
            ..
        })
    ));
    // spec: QX-LIMIT-17 — the job library refuses it too (one constant).
    let tiny_memory = Limits {
        memory_bytes: Some(4096),
        ..Limits::default()
    };
    assert!(matches!(
        cg.validate(&tiny_memory, &max),
        Err(LimitError::BelowMin {
            limit: LimitKind::Memory,
            min: qexec_protocol::limits::MIN_MEMORY_BYTES,
            ..
        })
    ));
    let zero_io = Limits {
        io_read_bps: Some(0),
        ..Limits::default()
    };
    assert!(matches!(
        cg.validate(&zero_io, &max),
        Err(LimitError::BelowMin { .. })
    ));
}

#[test]
fn defaults_then_max_fill_unset_limits() {
    let requested = Limits {
        cpu_millis: Some(100),
        ..Limits::default()
    };
    let defaults = Limits {
        cpu_millis: Some(500),
        memory_bytes: Some(1 << 20),
        ..Limits::default()
    };
    let max = Limits {
        memory_bytes: Some(1 << 30),
        pids: Some(64),
        ..Limits::default()
    };
    let l = Cgroups::apply_defaults(&requested, &defaults, &max);
    assert_eq!(l.cpu_millis, Some(100));
    assert_eq!(l.memory_bytes, Some(1 << 20));
    assert_eq!(l.pids, Some(64));
    assert_eq!(l.io_read_bps, None);
}

#[test]
fn resolve_validates_the_request_then_fills_defaults() {
    let (_t, cg) = v2_fixture("cpu io memory pids\n");
    let defaults = Limits {
        pids: Some(64),
        ..Limits::default()
    };
    let max = Limits {
        pids: Some(128),
        memory_bytes: Some(1 << 30),
        ..Limits::default()
    };
    let l = cg.resolve(&Limits::default(), &defaults, &max).unwrap();
    assert_eq!((l.pids, l.memory_bytes), (Some(64), Some(1 << 30)));
    let over = Limits {
        pids: Some(129),
        ..Limits::default()
    };
    assert!(matches!(
        cg.resolve(&over, &defaults, &max),
        Err(LimitError::AboveMax { .. })
    ));

    // Without cgroups: no limit asked, none applied; a limit asked is refused.
    let none = Cgroups::v2_at(HostLayout::None, Path::new("/nonexistent/x"), "qexec");
    assert_eq!(
        none.resolve(&Limits::default(), &defaults, &max).unwrap(),
        Limits::default()
    );
    assert!(matches!(
        none.resolve(&defaults, &defaults, &max),
        Err(LimitError::Unsupported { .. })
    ));
}

#[test]
fn names_are_one_safe_component() {
    for bad in ["", ".", "..", "a/b", "cgroup.procs", "a b", "x\n"] {
        assert!(check_name(bad).is_err(), "{bad:?}");
    }
    for good in [
        "0123456789abcdef0123456789abcdef",
        "qexec-test-1-cpu",
        "a_b.c",
    ] {
        check_name(good).unwrap();
    }
}

// ---------------------------------------------------------------------------------
// Real cgroups (root)
// ---------------------------------------------------------------------------------

/// The host's cgroups under a subtree private to this test, or `None` (with the
/// reason printed) where they cannot be used. Under `CI=true` that is a failure.
fn real(tag: &str) -> Option<Real> {
    let what = format!("cgroup test {tag}");
    if !testkit::require_root(&what) {
        return None;
    }
    let subtree = format!("qexec-test-{}-{tag}", std::process::id());
    let cg = Cgroups::detect_with_subtree(&subtree);
    let available = match &cg.capabilities().unavailable {
        Some(r) => Err(format!("cgroups unavailable: {r}")),
        None => Ok(()),
    };
    if !testkit::skip_unless(&what, available) {
        return None;
    }
    eprintln!("{tag}: {}", cg.capabilities());
    Some(Real { cg })
}

/// Removes the test's subtree however the test ends; [`Real::finish`] checks it.
struct Real {
    cg: Cgroups,
}

impl Real {
    /// "No qexec cgroup remains after the tests": the subtree is gone.
    fn finish(self) {
        self.cg.remove_subtree().unwrap();
        for base in &self.cg.capabilities().subtree {
            assert!(!base.exists(), "{} remains", base.display());
        }
    }
}

impl Drop for Real {
    fn drop(&mut self) {
        if let Ok(stale) = self.cg.cleanup_stale() {
            for s in stale {
                eprintln!("test left cgroup {} (killed {:?})", s.name, s.killed);
            }
        }
        let _ = self.cg.remove_subtree();
    }
}

/// Starts `sh -c script` held at a gate, moves it into `job`, then releases it: the
/// script never runs outside the cgroup (the spawner does the same with
/// [`JobCgroup::procs_fds`] in the child).
fn start_in(job: &JobCgroup, script: &str) -> Child {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("read _gate; {script}"))
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    job.attach(child.id()).expect("attach to cgroup");
    let mut gate = child.stdin.take().unwrap();
    gate.write_all(b"go\n").unwrap();
    drop(gate);
    child
}

/// Waits for `child` to exit, at most `timeout`.
fn wait_exit(child: Child, timeout: Duration) -> Option<ExitStatus> {
    let (tx, rx) = mpsc::channel();
    let mut child = child;
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    rx.recv_timeout(timeout).ok().map(|r| r.unwrap())
}

/// Waits for `cond` on the cgroup's files (the kernel offers no event for these).
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    wait_for(timeout, || Ok(cond())).unwrap()
}

/// Memory: a job that allocates past a 64 MiB limit is OOM-killed and its status says
/// so.
#[test]
fn real_memory_limit_oom_kills() {
    let Some(r) = real("memory") else { return };
    let limits = Limits {
        memory_bytes: Some(64 << 20),
        ..Limits::default()
    };
    let mut job = r.cg.create("oom", &limits, &[]).unwrap();
    // dd reads 256 MiB of zeros into one buffer: every page of it gets touched.
    let child = start_in(&job, "exec dd if=/dev/zero of=/dev/null bs=256M count=1");
    let status = wait_exit(child, Duration::from_secs(60)).expect("dd did not end");
    assert_eq!(
        status.signal(),
        Some(9),
        "dd should be OOM-killed: {status:?}"
    );
    assert!(job.oom_killed().unwrap(), "oom_killed() must say so");
    let u = job.usage().unwrap();
    let peak = u.memory_peak_bytes.expect("memory peak");
    assert!(
        peak <= (64 << 20) + (1 << 20),
        "peak {peak} above the limit"
    );
    assert!(peak >= 32 << 20, "peak {peak}: dd did not allocate");
    job.kill_all().unwrap();
    job.remove().unwrap();
    r.finish();
}

/// CPU: a busy-loop job limited to 0.2 CPU uses at most ~0.25 CPU-seconds per wall
/// second (measured from cgroup usage over ≥ 2 s).
#[test]
fn real_cpu_limit_throttles_busy_loop() {
    let Some(r) = real("cpu") else { return };
    let limits = Limits {
        cpu_millis: Some(200),
        ..Limits::default()
    };
    let mut job = r.cg.create("cpu", &limits, &[]).unwrap();
    let child = start_in(&job, "while :; do :; done");
    let cpu0 = job.usage().unwrap().cpu_usec.expect("cpu usage");
    let t0 = Instant::now();
    // The measurement window, not a synchronisation: usage is read from the cgroup.
    std::thread::sleep(Duration::from_millis(2500));
    let u = job.usage().unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = (u.cpu_usec.unwrap() - cpu0) as f64 / 1e6;
    let rate = cpu / wall;
    eprintln!(
        "cpu: {cpu:.3} CPU-s over {wall:.3} s wall = {rate:.3} CPU/s; throttled {:?} us",
        u.cpu_throttled_usec
    );
    assert!(
        rate <= 0.25,
        "busy loop used {rate:.3} CPU/s with a 0.2 CPU limit"
    );
    assert!(rate >= 0.02, "busy loop barely ran ({rate:.3} CPU/s)");
    assert!(
        u.cpu_throttled_usec.unwrap_or(0) > 0,
        "no throttling recorded"
    );
    job.kill_all().unwrap();
    let status = wait_exit(child, Duration::from_secs(10)).expect("loop did not end");
    assert_eq!(status.signal(), Some(9));
    job.remove().unwrap();
    r.finish();
}

/// IO: dd with oflag=direct limited to 5 MB/s writes at ≤ ~5.5 MB/s.
/// Target: `$QEXEC_CGROUP_TEST_IO_TARGET` (a block device such as /dev/ram0 in the VM,
/// or a file path), else a file in a tempdir under the current directory.
#[test]
fn real_io_limit_throttles_direct_writes() {
    let Some(r) = real("io") else { return };
    let (_tmp, target) = match std::env::var_os("QEXEC_CGROUP_TEST_IO_TARGET") {
        Some(t) => (None, PathBuf::from(t)),
        None => {
            let t = tempfile::tempdir_in(std::env::current_dir().unwrap()).unwrap();
            let p = t.path().join("io-test");
            (Some(t), p)
        }
    };
    let probe = if target.exists() {
        target.clone()
    } else {
        target.parent().unwrap().to_owned()
    };
    let dev = match block_device_of(&probe) {
        Ok(d) => d,
        Err(e) => {
            testkit::skip_unless("cgroup test io", Err(e.to_string()));
            return;
        }
    };
    let rate_limit = 5_000_000u64;
    let limits = Limits {
        io_write_bps: Some(rate_limit),
        ..Limits::default()
    };
    let mut job = r.cg.create("io", &limits, &[dev]).unwrap();
    let mib = 16u64;
    let t0 = Instant::now();
    let child = start_in(
        &job,
        &format!(
            "exec dd if=/dev/zero of='{}' bs=1M count={mib} oflag=direct 2>/dev/null",
            target.display()
        ),
    );
    let status = wait_exit(child, Duration::from_secs(60)).expect("dd did not end");
    let wall = t0.elapsed().as_secs_f64();
    assert!(status.success(), "dd failed: {status:?}");
    let written = job.usage().unwrap().io_write_bytes.unwrap_or(0);
    let bytes = (mib << 20) as f64;
    let rate = bytes / wall;
    eprintln!(
        "io: {bytes} bytes to {dev} in {wall:.3} s = {:.3} MB/s (cgroup counted {written})",
        rate / 1e6
    );
    assert!(
        written >= mib << 20,
        "cgroup counted only {written} bytes written"
    );
    assert!(
        rate <= 5_500_000.0,
        "direct writes ran at {rate:.0} B/s with a {rate_limit} B/s limit"
    );
    job.remove().unwrap();
    r.finish();
}

/// pids: a fork bomb limited to 32 pids cannot exceed it and is stopped cleanly.
#[test]
fn real_pids_limit_contains_fork_bomb() {
    let Some(r) = real("pids") else { return };
    let limits = Limits {
        pids: Some(32),
        ..Limits::default()
    };
    let mut job = r.cg.create("bomb", &limits, &[]).unwrap();
    let child = start_in(&job, "exec 2>/dev/null; b() { b | b & }; b; wait");
    let hit = wait_until(Duration::from_secs(30), || {
        job.pids_stats().unwrap().unwrap().limit_hits > 0
    });
    assert!(hit, "the fork bomb never reached the limit");
    let s = job.pids_stats().unwrap().unwrap();
    eprintln!("pids: {s:?}");
    assert!(s.current <= 32, "{s:?}");
    if let Some(peak) = s.peak {
        assert!(peak <= 32, "{s:?}");
    }
    job.kill_all().unwrap();
    assert!(job.pids().unwrap().is_empty());
    // The bomb's first shell may have ended by itself (its jobs are orphans): only
    // require that it ended.
    wait_exit(child, Duration::from_secs(10)).expect("sh did not end");
    // Killed tasks count until their zombies are reaped (ours above, the orphans by
    // init): wait for the count to drain.
    let drained = wait_until(Duration::from_secs(10), || {
        job.pids_stats().unwrap().unwrap().current == 0
    });
    assert!(drained, "{:?}", job.pids_stats().unwrap());
    job.remove().unwrap();
    r.finish();
}

/// Stop kills a tree that tries to escape by double-forking; no qexec cgroup remains
/// after the tests.
#[test]
fn real_kill_all_kills_double_forked_tree() {
    let Some(r) = real("kill") else { return };
    let mut job = r.cg.create("tree", &Limits::default(), &[]).unwrap();
    // Two grandchildren whose parents exit at once (re-parented away from the job's
    // main process), one in a new session, then the main process itself.
    let child = start_in(
        &job,
        "(sleep 1000 &) ; (setsid sleep 1000 &) ; (sh -c 'sleep 1000 & sleep 1000' &) ; \
         exec sleep 1000",
    );
    // Wait for the five sleeps (short-lived subshells come and go meanwhile).
    let sleeps = |pids: &[u32]| {
        pids.iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c == "sleep\n")
            })
            .count()
    };
    let escaped = wait_until(Duration::from_secs(20), || {
        sleeps(&job.pids().unwrap()) >= 5
    });
    let pids = job.pids().unwrap();
    assert!(escaped, "expected 5 sleeps, got {pids:?}");
    let n = job.signal_all(nix::sys::signal::Signal::SIGSTOP).unwrap();
    assert!(n >= 5, "signalled {n} of {pids:?}");
    job.kill_all().unwrap();
    assert!(job.pids().unwrap().is_empty());
    let status = wait_exit(child, Duration::from_secs(10)).expect("sleep did not end");
    assert_eq!(status.signal(), Some(9));
    job.remove().unwrap();
    assert!(job.paths().iter().all(|p| !p.exists()));
    r.finish();
}

/// Start-up cleanup: a cgroup left by a "crashed server", with a process in it, is
/// emptied and removed.
#[test]
fn real_cleanup_stale_removes_planted_cgroup() {
    let Some(r) = real("stale") else { return };
    let job = r.cg.create("stale-job", &Limits::default(), &[]).unwrap();
    let child = start_in(&job, "exec sleep 1000");
    let pid = child.id();
    assert!(wait_until(Duration::from_secs(10), || job
        .pids()
        .unwrap()
        .contains(&pid)));
    let paths = job.paths();
    // The server "crashes": its handle is lost without cleanup.
    std::mem::forget(job);
    // A restarted server finds it.
    let restarted =
        Cgroups::detect_with_subtree(&format!("qexec-test-{}-stale", std::process::id()));
    let removed = restarted.cleanup_stale().unwrap();
    assert_eq!(
        removed,
        vec![StaleCgroup {
            name: "stale-job".into(),
            killed: vec![pid]
        }]
    );
    assert!(paths.iter().all(|p| !p.exists()));
    let status = wait_exit(child, Duration::from_secs(10)).expect("sleep did not end");
    assert_eq!(status.signal(), Some(9));
    r.finish();
}

/// The freeze-and-kill fallback (v2 kernels before 5.14 have no `cgroup.kill`; v1
/// always uses it) empties a cgroup whose processes keep forking.
#[test]
fn real_freeze_kill_loop_empties_forking_job() {
    let Some(r) = real("freezeloop") else { return };
    let mut job = r.cg.create("forker", &Limits::default(), &[]).unwrap();
    let child = start_in(&job, "while :; do sleep 1000 & done");
    assert!(wait_until(Duration::from_secs(10), || job
        .pids()
        .unwrap()
        .len()
        >= 10));
    let dir = job.paths()[0].clone();
    let freeze = |on: bool| -> Result<(), CgroupError> {
        match &job.inner {
            Inner::V2(j) => {
                fs::write(&j.dir().join("cgroup.freeze"), if on { "1" } else { "0" })?;
                wait_for(Duration::from_millis(500), || {
                    Ok(
                        parse::keyed(&fs::read(&j.dir().join("cgroup.events"))?, "frozen")
                            == Some(u64::from(on)),
                    )
                })?;
                Ok(())
            }
            Inner::V1(j) => {
                let Some(d) = j.dir_of(Controller::Freezer) else {
                    return Ok(());
                };
                let want = if on { "FROZEN" } else { "THAWED" };
                fs::write(&d.join("freezer.state"), want)?;
                wait_for(Duration::from_millis(500), || {
                    Ok(fs::read(&d.join("freezer.state"))?.trim() == want)
                })?;
                Ok(())
            }
        }
    };
    freeze_kill_loop(&dir, || job.pids(), freeze).unwrap();
    assert!(job.pids().unwrap().is_empty());
    let status = wait_exit(child, Duration::from_secs(10)).expect("sh did not end");
    assert_eq!(status.signal(), Some(9));
    job.remove().unwrap();
    r.finish();
}

/// The spawner's placement: the child writes `0` to each fd of `procs_fds` before
/// exec and is then in the job's cgroup in every hierarchy. Here `sh` plays the child
/// (fds handed down by number), then execs the program.
#[test]
fn real_procs_fds_place_the_writing_process() {
    let Some(r) = real("procsfd") else { return };
    let mut job = r.cg.create("placed", &Limits::default(), &[]).unwrap();
    // dup: the copies lack close-on-exec, so sh inherits them under these numbers.
    let inherited: Vec<std::os::fd::OwnedFd> = job
        .procs_fds()
        .iter()
        .map(|fd| nix::unistd::dup(fd).unwrap())
        .collect();
    let writes: String = inherited
        .iter()
        .map(|fd| format!("echo 0 >&{}; ", std::os::fd::AsRawFd::as_raw_fd(fd)))
        .collect();
    // dash cannot redirect to fds above 9; bash and busybox ash (the VM's sh) can.
    let shell = if Path::new("/bin/bash").exists() {
        "/bin/bash"
    } else {
        "sh"
    };
    let child = Command::new(shell)
        .arg("-c")
        .arg(format!("{writes} exec sleep 1000"))
        .spawn()
        .unwrap();
    drop(inherited);
    job.release_procs_fds();
    let pid = child.id();
    // Once it runs `sleep`, every write happened (they precede the exec).
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c == "sleep\n")
    }));
    assert_eq!(job.pids().unwrap(), vec![pid]);
    // /proc/<pid>/cgroup names the job's cgroup in each hierarchy qexec uses.
    let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let needle = format!("/qexec-test-{}-procsfd/placed", std::process::id());
    let hits = own.lines().filter(|l| l.ends_with(&needle)).count();
    assert_eq!(hits, job.paths().len(), "{own}");
    job.kill_all().unwrap();
    let status = wait_exit(child, Duration::from_secs(10)).expect("sleep did not end");
    assert_eq!(status.signal(), Some(9));
    job.remove().unwrap();
    r.finish();
}

/// A handle dropped while its job still runs kills the job and removes the cgroup:
/// nothing leaks when the manager loses track of a job.
#[test]
fn real_drop_kills_and_removes_as_last_resort() {
    let Some(r) = real("drop") else { return };
    let job = r.cg.create("dropped", &Limits::default(), &[]).unwrap();
    let child = start_in(&job, "exec sleep 1000");
    let pid = child.id();
    assert!(wait_until(Duration::from_secs(10), || job
        .pids()
        .unwrap()
        .contains(&pid)));
    let paths = job.paths();
    drop(job);
    let status = wait_exit(child, Duration::from_secs(10)).expect("sleep did not end");
    assert_eq!(status.signal(), Some(9));
    assert!(paths.iter().all(|p| !p.exists()));
    r.finish();
}
