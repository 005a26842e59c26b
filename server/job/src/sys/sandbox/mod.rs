//! The job sandbox, init and target side (spec/security.md QX-SBX-*): what the job's
//! init does, still host root, before it starts the program — enter a cgroup
//! namespace and apply the mount plan ([`plan`], data built by pure code) with a tiny
//! executor ([`enter`]) — and how it starts the program in a user namespace of its
//! own ([`start_target`]), which then becomes root there and reduces its capabilities
//! ([`become_target`]). The raw system calls are in `calls`.
//!
//! It lives in `sys` because the init (`sys::init`) runs it and `sys` calls nothing
//! outside itself; the parent side (settings, id slots, error messages) is
//! `crate::sandbox`.

mod calls;
pub(crate) mod plan;

use std::convert::Infallible;
use std::ffi::{CStr, CString};

use self::plan::{Action, MountParams, Step};
use super::Errno;
use super::plan::{ChildPlan, Stage};

/// The capabilities a sandboxed target keeps (bounding set), relative to its own
/// user namespace: Docker's default list. spec: QX-SBX-11
pub(crate) const KEPT_CAPABILITIES: [u32; 14] = [
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    5,  // CAP_KILL
    6,  // CAP_SETGID
    7,  // CAP_SETUID
    8,  // CAP_SETPCAP
    10, // CAP_NET_BIND_SERVICE
    13, // CAP_NET_RAW
    18, // CAP_SYS_CHROOT
    27, // CAP_MKNOD
    29, // CAP_AUDIT_WRITE
    31, // CAP_SETFCAP
];

/// [`KEPT_CAPABILITIES`] as a bit mask.
pub(crate) const fn kept_capability_mask() -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < KEPT_CAPABILITIES.len() {
        mask |= 1 << KEPT_CAPABILITIES[i];
        i += 1;
    }
    mask
}

/// The sandbox of one job: its id slot and mount parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobSandbox {
    /// Host uid and gid of root in the job (first id of its slot).
    pub(crate) id_base: u32,
    /// Ids mapped (`0..id_count` inside).
    pub(crate) id_count: u32,
    /// What the mount plan is built from.
    pub(crate) mounts: MountParams,
}

/// Marker of the sandbox section in the init's parameter file.
const PARAMS_TAG: &str = "sandbox-v1";

impl JobSandbox {
    /// The fields passed to the init (NUL-free strings; the init's parameter file
    /// holds them NUL-terminated). `None`: no sandbox, one `-` field.
    pub(crate) fn encode(sandbox: Option<&Self>) -> Vec<Vec<u8>> {
        let Some(s) = sandbox else {
            return vec![b"-".to_vec()];
        };
        let m = &s.mounts;
        let mut f: Vec<Vec<u8>> = [
            PARAMS_TAG.to_owned(),
            s.id_base.to_string(),
            s.id_count.to_string(),
            m.tmp_size.to_string(),
            m.shm_size.to_string(),
            u8::from(m.own_network).to_string(),
            m.rw_paths.len().to_string(),
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect();
        f.extend(m.rw_paths.iter().cloned());
        f.push(m.masked_paths.len().to_string().into_bytes());
        f.extend(m.masked_paths.iter().cloned());
        f
    }

    /// Reads what [`JobSandbox::encode`] wrote, field by field from `next`.
    /// `Some(None)`: no sandbox; `None`: malformed.
    pub(crate) fn decode<'a>(mut next: impl FnMut() -> Option<&'a CStr>) -> Option<Option<Self>> {
        fn text<'a>(next: &mut impl FnMut() -> Option<&'a CStr>) -> Option<&'a str> {
            next()?.to_str().ok()
        }
        fn list<'a>(next: &mut impl FnMut() -> Option<&'a CStr>) -> Option<Vec<Vec<u8>>> {
            let n: usize = text(next)?.parse().ok()?;
            (0..n).map(|_| Some(next()?.to_bytes().to_vec())).collect()
        }
        match text(&mut next)? {
            "-" => return Some(None),
            PARAMS_TAG => {}
            _ => return None,
        }
        let id_base = text(&mut next)?.parse().ok()?;
        let id_count = text(&mut next)?.parse().ok()?;
        let tmp_size = text(&mut next)?.parse().ok()?;
        let shm_size = text(&mut next)?.parse().ok()?;
        let own_network = match text(&mut next)? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        let rw_paths = list(&mut next)?;
        let masked_paths = list(&mut next)?;
        Some(Some(Self {
            id_base,
            id_count,
            mounts: MountParams {
                tmp_size,
                shm_size,
                own_network,
                rw_paths,
                masked_paths,
            },
        }))
    }
}

/// First report code of a mount-plan step on the error pipe: step `i` reports
/// `PLAN_STAGE_BASE + i`, which the parent turns back into the step's description.
pub(crate) const PLAN_STAGE_BASE: u32 = 0x1000;

/// The message for a failed plan step `code` (a [`PLAN_STAGE_BASE`] report), if it is
/// one.
pub(crate) fn describe_plan_failure(sandbox: &JobSandbox, code: u32, errno: i32) -> Option<String> {
    let index = code.checked_sub(PLAN_STAGE_BASE)? as usize;
    let plan = plan::build(&sandbox.mounts);
    let step = plan.get(index)?;
    let err = std::io::Error::from_raw_os_error(errno);
    let hint = match errno {
        libc::ENOSYS => "; the sandbox needs Linux 5.12 or later (mount_setattr)",
        libc::EPERM => "; the sandbox needs qexecd to run as root",
        _ => "",
    };
    Some(format!(
        "cannot set up the job's sandbox: failed to {} (step {index}): {err}{hint}",
        step.describe()
    ))
}

/// Init side, before the target is started: enters a cgroup namespace (the init is
/// in the job's cgroups already) and applies the mount plan. Returns the report code
/// (a [`Stage`] or a plan step) and errno of a failure. spec: QX-SBX-3, QX-SBX-4
pub(crate) fn enter(sandbox: &JobSandbox) -> Result<(), (u32, Errno)> {
    calls::unshare(libc::CLONE_NEWCGROUP).map_err(|e| (Stage::CgroupNamespace as u32, e))?;
    for (i, step) in plan::build(&sandbox.mounts).iter().enumerate() {
        let code = PLAN_STAGE_BASE + i as u32;
        match apply(step) {
            Ok(()) => {}
            Err(e) if step.if_exists && e.0 == libc::ENOENT => {}
            Err(e) => return Err((code, e)),
        }
    }
    Ok(())
}

fn c(bytes: &[u8]) -> Result<CString, Errno> {
    CString::new(bytes).map_err(|_| Errno(libc::EINVAL))
}

/// The executor: one plan step, one or two raw calls.
fn apply(step: &Step) -> Result<(), Errno> {
    match &step.action {
        Action::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => {
            let data = (!data.is_empty()).then(|| c(data.as_bytes())).transpose()?;
            super::mount(
                &c(source.as_bytes())?,
                &c(target)?,
                &c(fstype.as_bytes())?,
                *flags,
                data.as_deref(),
            )
        }
        Action::Mkdir { path, mode } => calls::mkdir(&c(path)?, *mode),
        Action::Touch { path } => calls::touch(&c(path)?, 0o644),
        Action::Symlink { target, path } => calls::symlink(&c(target.as_bytes())?, &c(path)?),
        Action::Bind {
            source,
            target,
            recursive,
        } => calls::bind(&c(source)?, &c(target)?, *recursive),
        Action::RemountBind { target, flags } => calls::remount_bind(&c(target)?, *flags),
        Action::SetAttrRecursive { target, set, clear } => {
            calls::mount_setattr_recursive(&c(target)?, *set, *clear)
        }
        Action::Sysctl { path, value } => calls::write_file(&c(path)?, value.as_bytes()),
        Action::BindHostMounts => {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
                .map_err(|e| Errno(e.raw_os_error().unwrap_or(libc::EIO)))?;
            for path in plan::host_mounts_to_bind(&mountinfo) {
                let mut target = plan::NEW_ROOT.as_bytes().to_vec();
                target.extend_from_slice(&path);
                // A mount that cannot be bound (gone since mountinfo was read, hidden
                // under another mount, an automount that fails to mount) is left out:
                // the job then sees the directory below it, which is part of the
                // read-only root — never anything writable. Resource exhaustion is
                // still a failure.
                match calls::bind(&c(&path)?, &c(&target)?, true) {
                    Err(e) if e.0 == libc::ENOMEM || e.0 == libc::ENOSPC => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        }
        Action::Mask { target, dir } => {
            let target = c(target)?;
            let dir = match dir {
                Some(d) => *d,
                None => calls::is_dir(&target)?,
            };
            if dir {
                calls::bind(&c(plan::EMPTY_DIR.as_bytes())?, &target, false)?;
                calls::remount_bind(
                    &target,
                    libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                )
            } else {
                calls::bind(c"/dev/null", &target, false)
            }
        }
        Action::PivotRoot { new_root } => calls::pivot_root_here(&c(new_root.as_bytes())?),
        Action::DetachOldRoot => calls::umount_detach(c"."),
        Action::ChdirRoot => super::chdir(c"/"),
    }
}

/// Init side (single-threaded): starts the target in a new user namespace whose ids
/// `0..id_count` map to the job's slot and lets it run `exec_target` (which begins
/// with [`become_target`]). Returns the target's pid, or the report code and errno of
/// a failure (the child, if any, exits quietly when the sync pipe closes without a
/// byte). spec: QX-SBX-1, QX-SBX-2
pub(crate) fn start_target(
    sandbox: &JobSandbox,
    plan: &ChildPlan<'_>,
    exec_target: fn(&ChildPlan<'_>) -> Infallible,
) -> Result<i32, (u32, Errno)> {
    let fork_failed = |e| (Stage::UserNamespace as u32, e);
    let (sync_r, sync_w) = calls::pipe().map_err(fork_failed)?;
    let target_plan = ChildPlan {
        userns_sync: Some(sync_r),
        isolation: None,
        ..*plan
    };
    // SAFETY: the init is single-threaded; the closure closes a descriptor and runs
    // `exec_target` (async-signal-safe `sys` calls on `target_plan`, prepared before the
    // fork, ending in `execve` or `_exit`).
    let forked = unsafe {
        calls::fork_into_new_userns(|| {
            calls::close(sync_w);
            exec_target(&target_plan)
        })
    };
    calls::close(sync_r);
    let pid = match forked {
        Ok(pid) => pid,
        Err(e) => {
            calls::close(sync_w);
            return Err(fork_failed(e));
        }
    };
    let map = format!("0 {} {}\n", sandbox.id_base, sandbox.id_count);
    let write = |file: &str, stage: Stage| {
        let path = c(format!("/proc/{pid}/{file}").as_bytes()).map_err(|e| (stage as u32, e))?;
        calls::write_file(&path, map.as_bytes()).map_err(|e| (stage as u32, e))
    };
    let mapped = write("uid_map", Stage::UidMap).and_then(|()| write("gid_map", Stage::GidMap));
    if let Err(e) = mapped {
        // Closing without a byte makes the child exit quietly; this init reports.
        calls::close(sync_w);
        return Err(e);
    }
    let go = super::write_all(sync_w, b"1");
    calls::close(sync_w);
    go.map_err(fork_failed)?;
    Ok(pid)
}

/// Target side (child of [`start_target`], async-signal-safe): waits until the init
/// mapped its ids, becomes root of its user namespace (dropping host root's
/// supplementary groups), reduces the bounding set to [`KEPT_CAPABILITIES`] and
/// clears the ambient and inheritable sets. `Err((None, _))`: the init gave up before
/// mapping the ids (it reports its own failure). spec: QX-SBX-1, QX-SBX-11
pub(crate) fn become_target(sync: i32) -> Result<(), (Option<Stage>, Errno)> {
    match calls::read_byte(sync) {
        Ok(true) => {}
        Ok(false) => return Err((None, Errno(0))),
        Err(e) => return Err((Some(Stage::UsernsSync), e)),
    }
    calls::close(sync);
    calls::become_userns_root().map_err(|e| (Some(Stage::UsernsIdentity), e))?;
    calls::drop_bounding_except(kept_capability_mask())
        .map_err(|e| (Some(Stage::CapBounding), e))?;
    calls::clear_ambient().map_err(|e| (Some(Stage::CapAmbient), e))?;
    calls::clear_inheritable().map_err(|e| (Some(Stage::CapInheritable), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> JobSandbox {
        JobSandbox {
            id_base: 0x7001_0000,
            id_count: 65536,
            mounts: MountParams {
                tmp_size: 12345,
                shm_size: 678,
                own_network: false,
                rw_paths: vec![b"/srv/a b".to_vec(), b"/srv/\xffx".to_vec()],
                masked_paths: vec![b"/var/lib/qexec".to_vec()],
            },
        }
    }

    /// Runs `decode` over the NUL-terminated form of `fields`.
    fn round_trip(fields: &[Vec<u8>]) -> Option<Option<JobSandbox>> {
        let mut buf = Vec::new();
        for f in fields {
            buf.extend_from_slice(f);
            buf.push(0);
        }
        let mut it = buf
            .split_inclusive(|b| *b == 0)
            .map(|f| CStr::from_bytes_with_nul(f).unwrap());
        JobSandbox::decode(|| it.next())
    }

    #[test]
    fn params_round_trip() {
        let s = sample();
        assert_eq!(round_trip(&JobSandbox::encode(Some(&s))), Some(Some(s)));
        assert_eq!(round_trip(&JobSandbox::encode(None)), Some(None));
    }

    #[test]
    fn malformed_params_are_refused() {
        let good = JobSandbox::encode(Some(&sample()));
        assert_eq!(round_trip(&[b"sandbox-v0".to_vec()]), None);
        assert_eq!(round_trip(&good[..good.len() - 1]), None, "truncated");
        let mut bad = good.clone();
        bad[5] = b"2".to_vec();
        assert_eq!(round_trip(&bad), None, "network flag");
        let mut bad = good;
        bad[1] = b"-1".to_vec();
        assert_eq!(round_trip(&bad), None, "id base");
    }

    #[test]
    fn kept_capabilities_are_dockers_default_list() {
        let mask = kept_capability_mask();
        assert_eq!(mask.count_ones(), 14);
        // CAP_SYS_ADMIN (21), CAP_SYS_PTRACE (19), CAP_SYS_MODULE (16), CAP_NET_ADMIN
        // (12), CAP_DAC_READ_SEARCH (2), CAP_SYS_RAWIO (17) are not among them.
        for cap in [2, 12, 16, 17, 19, 21] {
            assert_eq!(mask & (1 << cap), 0, "cap {cap}");
        }
        assert_eq!(mask, 0x0000_0000_a804_25fb);
    }
    #[test]
    fn plan_failures_are_described_with_their_path() {
        let s = sample();
        let plan = plan::build(&s.mounts);
        let i = plan
            .iter()
            .position(|st| matches!(st.action, Action::SetAttrRecursive { .. }))
            .unwrap();
        let msg = describe_plan_failure(&s, PLAN_STAGE_BASE + i as u32, libc::ENOSYS).unwrap();
        assert!(msg.contains("/tmp/qexec-root"), "{msg}");
        assert!(msg.contains("5.12"), "{msg}");
        assert!(describe_plan_failure(&s, 7, libc::EIO).is_none());
        assert!(describe_plan_failure(&s, PLAN_STAGE_BASE + 10_000, libc::EIO).is_none());
    }
}
