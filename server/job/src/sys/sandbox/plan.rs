//! The mount plan of a sandboxed job, as data: built by pure code from the job's
//! sandbox parameters ([`build`], unit-tested without root), applied step by step by
//! the executor in `super` (run by the job's init, inside the job's mount namespace).
//!
//! The plan, in order (spec: QX-SBX-4 … QX-SBX-9):
//! 1. a staging tmpfs on `/tmp` (the job's mount namespace is already private, so
//!    nothing of this reaches the host), the new root directory [`NEW_ROOT`] and an
//!    empty directory [`EMPTY_DIR`] (bound over masked directories) in it;
//! 2. the host's root filesystem bound on the new root, the host's other mounts
//!    except those the plan replaces ([`host_mounts_to_bind`]) bound below it, then
//!    all made read-only, nosuid and nodev with one `mount_setattr(AT_RECURSIVE)`;
//! 3. a fresh `/proc`; in the job's own network namespace the two sysctls that let
//!    root-in-the-job bind low ports and ping; runc's masked paths (files hidden
//!    under `/dev/null`, directories under an empty read-only directory) and read-only
//!    paths (`/proc/sys`, `/proc/sysrq-trigger`, …);
//! 4. a fresh read-only sysfs on `/sys` (no cgroupfs under it) with its masked paths;
//! 5. a minimal `/dev` on tmpfs: the host's null, zero, full, random, urandom and tty
//!    nodes bound in, a new devpts instance, `ptmx`/`fd`/`stdin`/`stdout`/`stderr`
//!    links and a private size-limited `/dev/shm`;
//! 6. a private size-limited `/tmp`;
//! 7. each operator `--rw-path` bound read-write (nosuid, nodev);
//! 8. qexecd's own directories (state, PKI, configuration) masked — after the
//!    read-write paths, so a mask inside a read-write path still wins;
//! 9. `pivot_root` into the new root, the old root detached, `chdir("/")`.

use super::calls::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

/// Where the staging tmpfs is mounted (inside the job's private mount namespace).
pub(crate) const STAGING: &str = "/tmp";
/// The new root, inside the staging tmpfs.
pub(crate) const NEW_ROOT: &str = "/tmp/qexec-root";
/// An empty directory of the staging tmpfs, bound (read-only) over masked
/// directories: one superblock for every mask instead of a tmpfs each.
pub(crate) const EMPTY_DIR: &str = "/tmp/qexec-empty";

/// runc's default masked paths (`libcontainer/specconv`): hidden from the job. The
/// flag says whether the kernel makes it a directory.
pub(crate) const MASKED_PROC_SYS: [(&str, bool); 11] = [
    ("/proc/acpi", true),
    ("/proc/asound", true),
    ("/proc/kcore", false),
    ("/proc/keys", false),
    ("/proc/latency_stats", false),
    ("/proc/timer_list", false),
    ("/proc/timer_stats", false),
    ("/proc/sched_debug", false),
    ("/proc/scsi", true),
    ("/sys/firmware", true),
    ("/sys/devices/virtual/powercap", true),
];

/// runc's default read-only paths.
pub(crate) const READONLY_PROC: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Host device nodes bound into the job's `/dev`.
pub(crate) const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Top-level directories the sandbox replaces; an `--rw-path` below them would bind
/// something the job never sees (or, for `/tmp`, the staging area), so it is refused.
pub(crate) const REPLACED: [&str; 4] = ["/proc", "/sys", "/dev", "/tmp"];

/// `MS_*` flags of a read-only, nosuid, nodev, noexec mount.
const RO_ALL: libc::c_ulong = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// What the executor needs to know about one job to build its plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountParams {
    /// Size of the private `/tmp`, bytes.
    pub(crate) tmp_size: u64,
    /// Size of the private `/dev/shm`, bytes.
    pub(crate) shm_size: u64,
    /// The job has its own network namespace (its sysctls may be set).
    pub(crate) own_network: bool,
    /// Absolute, normalised host paths bound read-write.
    pub(crate) rw_paths: Vec<Vec<u8>>,
    /// Absolute, normalised host paths masked (empty).
    pub(crate) masked_paths: Vec<Vec<u8>>,
}

/// One action of the plan. Paths are absolute; targets lie under [`NEW_ROOT`] until
/// the pivot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// `mount(source, target, fstype, flags, data)`.
    Mount {
        source: &'static str,
        target: Vec<u8>,
        fstype: &'static str,
        flags: libc::c_ulong,
        data: String,
    },
    /// `mkdir(path, mode)` (an existing directory is fine).
    Mkdir { path: Vec<u8>, mode: u32 },
    /// Creates an empty file to bind a file on.
    Touch { path: Vec<u8> },
    /// `symlink(target, path)`.
    Symlink { target: &'static str, path: Vec<u8> },
    /// A bind mount, recursive or not.
    Bind {
        source: Vec<u8>,
        target: Vec<u8>,
        recursive: bool,
    },
    /// New flags for the single bind mount at `target`.
    RemountBind {
        target: Vec<u8>,
        flags: libc::c_ulong,
    },
    /// `mount_setattr(target, AT_RECURSIVE, set, clear)`.
    SetAttrRecursive {
        target: Vec<u8>,
        set: u64,
        clear: u64,
    },
    /// Writes `value` to a sysctl file.
    Sysctl { path: Vec<u8>, value: &'static str },
    /// Binds, recursively, every host mount listed in `/proc/self/mountinfo` that
    /// [`host_mounts_to_bind`] selects, at the same path under [`NEW_ROOT`].
    BindHostMounts,
    /// Hides `target`: a directory under [`EMPTY_DIR`] bound read-only, anything else
    /// under `/dev/null`. `dir`: what the target is; `None`: look (`lstat`).
    Mask { target: Vec<u8>, dir: Option<bool> },
    /// `chdir(new_root)` + `pivot_root(".", ".")`.
    PivotRoot { new_root: &'static str },
    /// `umount2(".", MNT_DETACH)`: the old root, stacked on the new one.
    DetachOldRoot,
    /// `chdir("/")`.
    ChdirRoot,
}

/// One step: an action, and whether a missing path (`ENOENT`) skips it (for paths
/// that not every kernel has, e.g. `/proc/timer_stats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Step {
    pub(crate) action: Action,
    pub(crate) if_exists: bool,
}

impl Step {
    fn must(action: Action) -> Self {
        Self {
            action,
            if_exists: false,
        }
    }

    fn optional(action: Action) -> Self {
        Self {
            action,
            if_exists: true,
        }
    }

    /// What the step does, with its path, for error messages.
    pub(crate) fn describe(&self) -> String {
        let p = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match &self.action {
            Action::Mount { fstype, target, .. } => format!("mount a {fstype} on {}", p(target)),
            Action::Mkdir { path, .. } => format!("create directory {}", p(path)),
            Action::Touch { path } => format!("create mount point file {}", p(path)),
            Action::Symlink { target, path } => format!("create symlink {} -> {target}", p(path)),
            Action::Bind {
                source,
                target,
                recursive,
            } => format!(
                "bind-mount {} on {}{}",
                p(source),
                p(target),
                if *recursive { " (recursively)" } else { "" }
            ),
            Action::RemountBind { target, .. } => format!("remount {} read-only", p(target)),
            Action::SetAttrRecursive { target, set, .. } if set & MOUNT_ATTR_RDONLY != 0 => {
                format!(
                    "make {} read-only recursively (mount_setattr, Linux 5.12+)",
                    p(target)
                )
            }
            Action::SetAttrRecursive { target, .. } => format!(
                "make {} writable recursively (mount_setattr, Linux 5.12+)",
                p(target)
            ),
            Action::Sysctl { path, value } => format!("write {value:?} to {}", p(path)),
            Action::BindHostMounts => {
                format!("bind the host's mounts (from /proc/self/mountinfo) under {NEW_ROOT}")
            }
            Action::Mask { target, .. } => format!("mask {}", p(target)),
            Action::PivotRoot { new_root } => format!("pivot_root into {new_root}"),
            Action::DetachOldRoot => "detach the old root (umount2 MNT_DETACH)".to_owned(),
            Action::ChdirRoot => "change to / in the new root".to_owned(),
        }
    }
}

/// `NEW_ROOT` + `path`.
fn under_root(path: &[u8]) -> Vec<u8> {
    let mut v = NEW_ROOT.as_bytes().to_vec();
    v.extend_from_slice(path);
    v
}

/// Whether `path` is `dir` or lies below it (byte-wise on normalised paths).
pub(crate) fn is_within(path: &[u8], dir: &str) -> bool {
    path == dir.as_bytes()
        || (path.starts_with(dir.as_bytes()) && path.get(dir.len()) == Some(&b'/'))
}

/// Decodes the octal escapes (`\040` for a space, …) of a `mountinfo` path.
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(oct) = b.get(i + 1..i + 4)
            && oct.iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// The host mounts to bind recursively under the new root, from the text of
/// `/proc/self/mountinfo`: every mount point except `/` itself and those at or below
/// a directory the plan replaces ([`REPLACED`]), keeping only the outermost ones (a
/// recursive bind of `/a` brings `/a/b` along). Pure; sorted.
pub(crate) fn host_mounts_to_bind(mountinfo: &str) -> Vec<Vec<u8>> {
    let mut points: Vec<Vec<u8>> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| p.as_slice() != b"/" && p.starts_with(b"/"))
        .filter(|p| !REPLACED.iter().any(|d| is_within(p, d)))
        .collect();
    points.sort();
    points.dedup();
    let mut outermost: Vec<Vec<u8>> = Vec::with_capacity(points.len());
    for p in points {
        // Sorted: an ancestor of `p`, if selected, is the last one kept so far or one
        // of its ancestors, all of which come before `p`.
        let covered = outermost
            .iter()
            .any(|o| p.starts_with(o) && p.get(o.len()) == Some(&b'/'));
        if !covered {
            outermost.push(p);
        }
    }
    outermost
}

/// Builds the mount plan of one job. Pure: no system call. spec: QX-SBX-4
pub(crate) fn build(p: &MountParams) -> Vec<Step> {
    let mut plan = Vec::with_capacity(64);
    let root = |path: &str| under_root(path.as_bytes());

    // 1. Staging area and the new root's mount point.
    plan.push(Step::must(Action::Mount {
        source: "tmpfs",
        target: STAGING.as_bytes().to_vec(),
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: "mode=0700,size=64k".to_owned(),
    }));
    plan.push(Step::must(Action::Mkdir {
        path: NEW_ROOT.as_bytes().to_vec(),
        mode: 0o755,
    }));
    plan.push(Step::must(Action::Mkdir {
        path: EMPTY_DIR.as_bytes().to_vec(),
        mode: 0o555,
    }));

    // 2. The host, read-only. spec: QX-SBX-4
    // The root filesystem, then the host's other mounts except those below /proc,
    // /sys, /dev and /tmp, which the plan replaces: never copied, so there is nothing
    // to detach later and no cgroupfs or block device below the fresh mounts.
    plan.push(Step::must(Action::Bind {
        source: b"/".to_vec(),
        target: NEW_ROOT.as_bytes().to_vec(),
        recursive: false,
    }));
    plan.push(Step::must(Action::BindHostMounts));
    plan.push(Step::must(Action::SetAttrRecursive {
        target: NEW_ROOT.as_bytes().to_vec(),
        set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        clear: 0,
    }));

    // 3. /proc. spec: QX-SBX-5
    plan.push(Step::must(Action::Mount {
        source: "proc",
        target: root("/proc"),
        fstype: "proc",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: String::new(),
    }));
    if p.own_network {
        // Before /proc/sys becomes read-only; only in the job's own network
        // namespace (with the host's network these would be the host's settings).
        plan.push(Step::optional(Action::Sysctl {
            path: root("/proc/sys/net/ipv4/ip_unprivileged_port_start"),
            value: "0",
        }));
        plan.push(Step::optional(Action::Sysctl {
            path: root("/proc/sys/net/ipv4/ping_group_range"),
            value: "0 2147483647",
        }));
    }
    for (path, dir) in MASKED_PROC_SYS.iter().filter(|m| m.0.starts_with("/proc/")) {
        plan.push(Step::optional(Action::Mask {
            target: root(path),
            dir: Some(*dir),
        }));
    }
    for path in READONLY_PROC {
        plan.push(Step::optional(Action::Bind {
            source: root(path),
            target: root(path),
            recursive: false,
        }));
        plan.push(Step::optional(Action::RemountBind {
            target: root(path),
            flags: RO_ALL,
        }));
    }

    // 4. /sys: fresh, read-only, no cgroupfs below it. spec: QX-SBX-6
    plan.push(Step::must(Action::Mount {
        source: "sysfs",
        target: root("/sys"),
        fstype: "sysfs",
        flags: RO_ALL,
        data: String::new(),
    }));
    for (path, dir) in MASKED_PROC_SYS.iter().filter(|m| m.0.starts_with("/sys/")) {
        plan.push(Step::optional(Action::Mask {
            target: root(path),
            dir: Some(*dir),
        }));
    }

    // 5. A minimal /dev. spec: QX-SBX-7
    plan.push(Step::must(Action::Mount {
        source: "tmpfs",
        target: root("/dev"),
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: "mode=0755,size=64k".to_owned(),
    }));
    for dev in DEVICES {
        let target = root(&format!("/dev/{dev}"));
        plan.push(Step::must(Action::Touch {
            path: target.clone(),
        }));
        plan.push(Step::must(Action::Bind {
            source: format!("/dev/{dev}").into_bytes(),
            target,
            recursive: false,
        }));
    }
    plan.push(Step::must(Action::Mkdir {
        path: root("/dev/pts"),
        mode: 0o755,
    }));
    plan.push(Step::must(Action::Mount {
        source: "devpts",
        target: root("/dev/pts"),
        fstype: "devpts",
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: "newinstance,ptmxmode=0666,mode=0620".to_owned(),
    }));
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        plan.push(Step::must(Action::Symlink {
            target,
            path: root(link),
        }));
    }
    plan.push(Step::must(Action::Mkdir {
        path: root("/dev/shm"),
        mode: 0o755,
    }));
    plan.push(Step::must(Action::Mount {
        source: "shm",
        target: root("/dev/shm"),
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: format!("mode=1777,size={}", p.shm_size),
    }));

    // 6. /tmp. spec: QX-SBX-8
    plan.push(Step::must(Action::Mount {
        source: "tmpfs",
        target: root("/tmp"),
        fstype: "tmpfs",
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: format!("mode=1777,size={}", p.tmp_size),
    }));

    // 7. Operator-opened read-write paths. spec: QX-SBX-9
    for path in &p.rw_paths {
        plan.push(Step::must(Action::Bind {
            source: path.clone(),
            target: under_root(path),
            recursive: true,
        }));
        plan.push(Step::must(Action::SetAttrRecursive {
            target: under_root(path),
            set: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            clear: MOUNT_ATTR_RDONLY,
        }));
    }

    // 8. qexecd's own directories, wherever they are (those under a replaced
    // directory are not visible anyway). spec: QX-SBX-10
    for path in &p.masked_paths {
        if REPLACED.iter().any(|d| is_within(path, d)) {
            continue;
        }
        plan.push(Step::optional(Action::Mask {
            target: under_root(path),
            dir: None,
        }));
    }

    // 9. Into the new root. spec: QX-SBX-4
    plan.push(Step::must(Action::PivotRoot { new_root: NEW_ROOT }));
    plan.push(Step::must(Action::DetachOldRoot));
    plan.push(Step::must(Action::ChdirRoot));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> MountParams {
        MountParams {
            tmp_size: 1 << 30,
            shm_size: 64 << 20,
            own_network: true,
            rw_paths: vec![b"/srv/data".to_vec()],
            masked_paths: vec![
                b"/var/lib/qexec".to_vec(),
                b"/etc/qexec/pki".to_vec(),
                b"/tmp/qexec-0".to_vec(),
            ],
        }
    }

    fn index(plan: &[Step], f: impl Fn(&Action) -> bool) -> usize {
        plan.iter()
            .position(|s| f(&s.action))
            .expect("step is in the plan")
    }

    fn targets(plan: &[Step]) -> Vec<String> {
        plan.iter()
            .filter_map(|s| match &s.action {
                Action::Mount { target, .. }
                | Action::Bind { target, .. }
                | Action::Mask { target, .. } => Some(String::from_utf8_lossy(target).into_owned()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn host_root_is_bound_then_read_only_before_anything_is_mounted_on_it() {
        let plan = build(&params());
        let bind = index(
            &plan,
            |a| matches!(a, Action::Bind { source, recursive: false, .. } if source == b"/"),
        );
        let ro = index(&plan, |a| {
            matches!(a, Action::SetAttrRecursive { target, set, clear: 0 }
                if target == NEW_ROOT.as_bytes()
                    && *set == MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
        });
        let proc_ = index(&plan, |a| matches!(a, Action::Mount { fstype: "proc", .. }));
        assert!(bind < ro && ro < proc_);
        // The host's other mounts are bound before the read-only pass covers them.
        let host = index(&plan, |a| matches!(a, Action::BindHostMounts));
        assert!(bind < host && host < ro);
        // The staging tmpfs comes first, so the new root is a mount point of its own.
        assert!(
            matches!(&plan[0].action, Action::Mount { target, fstype: "tmpfs", .. } if target == STAGING.as_bytes())
        );
        assert!(NEW_ROOT.starts_with(&format!("{STAGING}/")));
    }

    #[test]
    fn plan_ends_with_pivot_detach_chdir() {
        let plan = build(&params());
        let n = plan.len();
        assert_eq!(plan[n - 3].action, Action::PivotRoot { new_root: NEW_ROOT });
        assert_eq!(plan[n - 2].action, Action::DetachOldRoot);
        assert_eq!(plan[n - 1].action, Action::ChdirRoot);
        assert!(plan[n - 3..].iter().all(|s| !s.if_exists));
    }

    #[test]
    fn proc_sys_and_dev_are_fresh_and_restricted() {
        let plan = build(&params());
        let t = targets(&plan);
        for want in [
            "/tmp/qexec-root/proc",
            "/tmp/qexec-root/sys",
            "/tmp/qexec-root/dev",
            "/tmp/qexec-root/dev/pts",
            "/tmp/qexec-root/dev/shm",
            "/tmp/qexec-root/tmp",
            "/tmp/qexec-root/proc/kcore",
            "/tmp/qexec-root/proc/keys",
            "/tmp/qexec-root/sys/firmware",
        ] {
            assert!(t.iter().any(|x| x == want), "{want} missing from {t:#?}");
        }
        // sysfs read-only, nosuid, nodev, noexec.
        assert!(plan.iter().any(|s| matches!(&s.action,
            Action::Mount { fstype: "sysfs", flags, .. } if *flags == RO_ALL)));
        // Every runc read-only path is bound on itself then remounted read-only.
        for path in READONLY_PROC {
            let target = under_root(path.as_bytes());
            let b = index(
                &plan,
                |a| matches!(a, Action::Bind { source, target: t, recursive: false } if *source == target && *t == target),
            );
            let r = index(
                &plan,
                |a| matches!(a, Action::RemountBind { target: t, flags } if *t == target && flags & libc::MS_RDONLY != 0),
            );
            assert_eq!(b + 1, r, "{path}");
        }
        // Only the listed device nodes, each bound from the host's /dev.
        let devs: Vec<_> = plan
            .iter()
            .filter_map(|s| match &s.action {
                Action::Bind { source, .. } if source.starts_with(b"/dev/") => {
                    Some(String::from_utf8_lossy(source).into_owned())
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            devs,
            [
                "/dev/null",
                "/dev/zero",
                "/dev/full",
                "/dev/random",
                "/dev/urandom",
                "/dev/tty"
            ]
        );
        // /dev/shm and /tmp carry their size limits and the sticky mode.
        assert!(plan.iter().any(|s| matches!(&s.action,
            Action::Mount { target, data, .. } if target.ends_with(b"/dev/shm") && data == "mode=1777,size=67108864")));
        assert!(plan.iter().any(|s| matches!(&s.action,
            Action::Mount { target, data, flags, .. } if target == b"/tmp/qexec-root/tmp"
                && data == "mode=1777,size=1073741824" && flags & libc::MS_NODEV != 0)));
    }

    #[test]
    fn sysctls_only_in_the_jobs_own_network_namespace_and_before_proc_sys_is_read_only() {
        let plan = build(&params());
        let sysctl = index(&plan, |a| matches!(a, Action::Sysctl { .. }));
        let ro = index(
            &plan,
            |a| matches!(a, Action::RemountBind { target, .. } if target.ends_with(b"/proc/sys")),
        );
        assert!(sysctl < ro);
        let host_net = build(&MountParams {
            own_network: false,
            ..params()
        });
        assert!(
            !host_net
                .iter()
                .any(|s| matches!(s.action, Action::Sysctl { .. }))
        );
    }

    #[test]
    fn rw_paths_are_bound_writable_and_masks_come_after_them() {
        let plan = build(&params());
        let bind = index(
            &plan,
            |a| matches!(a, Action::Bind { source, .. } if source == b"/srv/data"),
        );
        assert_eq!(
            plan[bind + 1].action,
            Action::SetAttrRecursive {
                target: b"/tmp/qexec-root/srv/data".to_vec(),
                set: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                clear: MOUNT_ATTR_RDONLY,
            }
        );
        let tmp = index(
            &plan,
            |a| matches!(a, Action::Mount { target, .. } if target == b"/tmp/qexec-root/tmp"),
        );
        assert!(tmp < bind);
        let mask = index(
            &plan,
            |a| matches!(a, Action::Mask { target, dir: None } if target == b"/tmp/qexec-root/var/lib/qexec"),
        );
        assert!(bind < mask);
        assert!(plan.iter().any(|s| s.action
            == Action::Mask {
                target: b"/tmp/qexec-root/etc/qexec/pki".to_vec(),
                dir: None,
            }));
        // A masked path under /tmp is invisible anyway: not in the plan.
        assert!(!targets(&plan).iter().any(|t| t.contains("qexec-0")));
    }

    #[test]
    fn only_kernel_dependent_paths_are_optional() {
        for s in build(&params()) {
            let optional_kind = matches!(s.action, Action::Mask { .. } | Action::Sysctl { .. })
                || matches!(&s.action, Action::Bind { target, .. } | Action::RemountBind { target, .. }
                if READONLY_PROC.iter().any(|p| target.ends_with(p.as_bytes())));
            assert_eq!(s.if_exists, optional_kind, "{}", s.describe());
        }
    }

    #[test]
    fn descriptions_name_the_path() {
        for s in build(&params()) {
            let d = s.describe();
            match &s.action {
                Action::Mount { target, .. } | Action::Mask { target, .. } => {
                    assert!(d.contains(&*String::from_utf8_lossy(target)), "{d}");
                }
                _ => assert!(!d.is_empty()),
            }
        }
    }

    #[test]
    fn host_mounts_are_the_outermost_outside_replaced_directories() {
        let mountinfo = "\
22 1 254:0 / / rw,relatime - ext4 /dev/vda rw
23 22 0:21 / /proc rw - proc proc rw
24 22 0:22 / /sys rw - sysfs sysfs rw
25 24 0:23 / /sys/fs/cgroup rw - tmpfs tmpfs rw
26 22 0:5 / /dev rw - devtmpfs devtmpfs rw
27 26 0:24 / /dev/shm rw - tmpfs tmpfs rw
28 22 0:25 / /tmp rw - tmpfs tmpfs rw
29 28 0:26 / /tmp/x rw - tmpfs tmpfs rw
30 22 0:27 / /home rw - ext4 /dev/vdb rw
31 30 0:28 / /home/a\\040b rw - tmpfs tmpfs rw
32 22 0:29 / /srv/data rw - xfs /dev/vdc rw
33 22 0:30 / /tmpx rw - tmpfs tmpfs rw
34 22 0:31 / /devices rw - tmpfs tmpfs rw
35 22 0:27 / /home rw - ext4 /dev/vdb rw
";
        let got: Vec<String> = host_mounts_to_bind(mountinfo)
            .into_iter()
            .map(|p| String::from_utf8(p).unwrap())
            .collect();
        assert_eq!(got, ["/devices", "/home", "/srv/data", "/tmpx"]);
        assert_eq!(unescape("/a\\040b\\134c\\0"), b"/a b\\c\\0");
        assert!(host_mounts_to_bind("").is_empty());
    }

    #[test]
    fn masks_of_known_kernel_paths_do_not_look_and_use_the_empty_directory() {
        let plan = build(&params());
        for (path, dir) in MASKED_PROC_SYS {
            let want = Action::Mask {
                target: under_root(path.as_bytes()),
                dir: Some(dir),
            };
            assert!(plan.iter().any(|s| s.action == want), "{path}");
        }
        let mk = index(
            &plan,
            |a| matches!(a, Action::Mkdir { path, mode: 0o555 } if path == EMPTY_DIR.as_bytes()),
        );
        let first_mask = index(&plan, |a| matches!(a, Action::Mask { .. }));
        assert!(mk < first_mask);
        assert!(EMPTY_DIR.starts_with(&format!("{STAGING}/")));
    }
}
