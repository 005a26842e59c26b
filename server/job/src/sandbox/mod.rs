//! The job sandbox, parent side (spec/security.md QX-SBX-*): the settings
//! ([`SandboxConfig`]), their checks, the host id slots of running jobs ([`uidmap`]),
//! and the messages for a failed set-up step. What the job's init and its target do
//! is `sys::sandbox` (the init runs it; `sys` calls nothing outside itself).
//!
//! The model in short: the job's **init stays host root** (PID 1, owner of the job's
//! mount, network, UTS, IPC, PID and cgroup namespaces through the host user
//! namespace), enters a **cgroup namespace**, builds a **new root** (read-only host,
//! fresh `/proc`, `/sys`, `/dev`, `/tmp`, `/dev/shm`, qexecd's directories masked,
//! operator `--rw-path`s writable, `pivot_root`) and starts the program in a **user
//! namespace** of its own whose root is a host uid no other running job has, with
//! Docker's default capability set in that namespace only.

pub(crate) mod uidmap;

use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use self::uidmap::{DEFAULT_UID_BASE, SLOT_IDS, UidRange, UidRangeError};
use self::uidmap::{UidAllocator, UidSlot};
use crate::sys::sandbox::JobSandbox;
use crate::sys::sandbox::plan::{self, MountParams, REPLACED};

/// Default size of a sandboxed job's private `/tmp`: 1 GiB (its pages are charged
/// to the job's memory cgroup).
pub const DEFAULT_TMP_SIZE: u64 = 1 << 30;
/// Default size of a sandboxed job's private `/dev/shm`: 64 MiB (Docker's default).
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// The network a job gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JobNetwork {
    /// Its own network namespace with only `lo` (default).
    #[default]
    None,
    /// The host's network namespace: the job reaches (and may listen on) the host's
    /// networks. Weakens isolation; off by default.
    Host,
}

/// Sandbox settings of a [`crate::ManagerConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Sandbox isolated jobs (user namespace, new root, cgroup namespace, reduced
    /// capabilities) when the host allows it. Default: on. Needs isolation.
    pub enabled: bool,
    /// Host directories bound read-write into every sandboxed job (absolute,
    /// normalised; not `/`, not under `/proc`, `/sys`, `/dev`, `/tmp`). Everything
    /// else of the host is read-only.
    pub rw_paths: Vec<PathBuf>,
    /// Host paths hidden from every sandboxed job (directories under an empty
    /// read-only directory, files under `/dev/null`). The manager adds its own state
    /// directory; qexecd adds its PKI and configuration paths.
    pub masked_paths: Vec<PathBuf>,
    /// Host uid/gid range of the jobs' user namespaces; `None`: [`DEFAULT_UID_BASE`]
    /// with one 65536-id slot per running job ([`UidRange::default_for`]).
    pub uid_range: Option<UidRange>,
    /// Size of each job's private `/tmp`, bytes.
    pub tmp_size: u64,
    /// Size of each job's private `/dev/shm`, bytes.
    pub shm_size: u64,
    /// The jobs' network (isolated jobs only).
    pub network: JobNetwork,
    /// Let jobs run as host root when the sandbox is not active (no user namespaces,
    /// sandbox or isolation turned off) for callers that are not trusted with it
    /// (`JobSpec::host_root_allowed` false). Default: off — such starts are refused.
    pub insecure_root_jobs: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rw_paths: Vec::new(),
            masked_paths: Vec::new(),
            uid_range: None,
            tmp_size: DEFAULT_TMP_SIZE,
            shm_size: DEFAULT_SHM_SIZE,
            network: JobNetwork::None,
            insecure_root_jobs: false,
        }
    }
}

/// Why the sandbox configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxConfigError {
    /// A read-write path is not acceptable.
    #[error("invalid --rw-path: {0}")]
    RwPath(#[from] SandboxPathError),
    /// A read-write path does not exist or is not a directory.
    #[error("--rw-path {path}: {message}; create it first (mode 1777 or owned by the job uids)")]
    RwPathMissing {
        /// The path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A masked path is not absolute.
    #[error("masked path {path} must be absolute")]
    MaskedPath {
        /// The path.
        path: PathBuf,
    },
    /// The uid range is not acceptable.
    #[error(transparent)]
    UidRange(#[from] UidRangeError),
    /// A size is too small to be useful (or zero, which tmpfs reads as "no limit").
    #[error("the {what} size must be at least 4096 bytes, got {size}")]
    Size {
        /// `/tmp` or `/dev/shm`.
        what: &'static str,
        /// The size given.
        size: u64,
    },
}

/// Why a path cannot be used as an `--rw-path`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxPathError {
    /// Not absolute, or not normalised (`.`/`..` components, `//`, trailing `/`).
    #[error(
        "sandbox path {path:?} must be absolute and normalised (no '.', '..', '//' or trailing '/')"
    )]
    NotNormalised {
        /// The path.
        path: String,
    },
    /// `/` itself: the whole host writable is what the sandbox exists to prevent.
    #[error("--rw-path / would make the whole host writable; open only the directories jobs need")]
    Root,
    /// Below a directory the sandbox replaces.
    #[error(
        "sandbox path {path:?} lies in {dir}, which every sandboxed job gets fresh; use a \
         directory elsewhere"
    )]
    Replaced {
        /// The path.
        path: String,
        /// The replaced directory.
        dir: &'static str,
    },
}

/// Checks that an `--rw-path` can be bound: absolute, normalised, not `/`, not below
/// a directory the sandbox replaces.
pub(crate) fn check_rw_path(path: &Path) -> Result<(), SandboxPathError> {
    let shown = || path.display().to_string();
    // `components()` silently drops `.`, `//` and a trailing `/`: rebuilding the path
    // from them and comparing bytes catches those.
    let rebuilt: PathBuf = path.components().collect();
    let normalised = path.is_absolute()
        && path
            .components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)))
        && rebuilt.as_os_str() == path.as_os_str();
    if !normalised {
        return Err(SandboxPathError::NotNormalised { path: shown() });
    }
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes == b"/" {
        return Err(SandboxPathError::Root);
    }
    match REPLACED.iter().find(|d| plan::is_within(bytes, d)) {
        Some(dir) => Err(SandboxPathError::Replaced { path: shown(), dir }),
        None => Ok(()),
    }
}

/// The manager's sandbox: settings every job shares and the id slots.
#[derive(Debug)]
pub(crate) struct Sandbox {
    mounts: MountParams,
    uids: Arc<Mutex<UidAllocator>>,
    range: UidRange,
}

/// No id slot is free (more sandboxed jobs run than the uid range has slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "every one of the {slots} uid slots of the job uid range is in use; wait for a job to \
     end or give qexecd a larger --job-uid-range"
)]
pub(crate) struct NoFreeSlot {
    pub(crate) slots: u32,
}

impl Sandbox {
    /// Checks `config` and prepares the slots. `state_dir` (already created) is masked
    /// with the configured paths; `own_network` says whether jobs get their own
    /// network namespace.
    pub(crate) fn new(
        config: &SandboxConfig,
        max_running_jobs: usize,
        state_dir: &Path,
    ) -> Result<Self, SandboxConfigError> {
        for (what, size) in [("/tmp", config.tmp_size), ("/dev/shm", config.shm_size)] {
            if size < 4096 {
                return Err(SandboxConfigError::Size { what, size });
            }
        }
        let mut rw_paths = Vec::new();
        for path in &config.rw_paths {
            check_rw_path(path)?;
            match std::fs::metadata(path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(SandboxConfigError::RwPathMissing {
                        path: path.clone(),
                        message: "not a directory".to_owned(),
                    });
                }
                Err(e) => {
                    return Err(SandboxConfigError::RwPathMissing {
                        path: path.clone(),
                        message: e.to_string(),
                    });
                }
            }
            rw_paths.push(path.as_os_str().as_encoded_bytes().to_vec());
        }
        let mut masked_paths = Vec::new();
        let state = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
        for path in config.masked_paths.iter().chain([&state]) {
            if !path.is_absolute() {
                return Err(SandboxConfigError::MaskedPath { path: path.clone() });
            }
            // Masks apply to the real location; a path that does not exist yet is
            // kept as given (the executor skips what is missing).
            let real = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            let bytes = real.as_os_str().as_encoded_bytes().to_vec();
            if !masked_paths.contains(&bytes) {
                masked_paths.push(bytes);
            }
        }
        let range = config
            .uid_range
            .unwrap_or_else(|| UidRange::default_for(max_running_jobs));
        range.validate()?;
        Ok(Self {
            mounts: MountParams {
                tmp_size: config.tmp_size,
                shm_size: config.shm_size,
                own_network: config.network == JobNetwork::None,
                rw_paths,
                masked_paths,
            },
            uids: Arc::new(Mutex::new(UidAllocator::new(range))),
            range,
        })
    }

    /// The sandbox of a new job and the slot it holds (give the slot back, by
    /// dropping it, only once the job's init was reaped).
    pub(crate) fn for_job(&self) -> Result<(JobSandbox, UidSlot), NoFreeSlot> {
        let slot = UidSlot::take(&self.uids).ok_or(NoFreeSlot {
            slots: self.range.slots(),
        })?;
        Ok((self.with_base(slot.base()), slot))
    }

    /// The sandbox of a job using the ids at `id_base` (for the start-up probe,
    /// which runs before any job).
    pub(crate) fn with_base(&self, id_base: u32) -> JobSandbox {
        JobSandbox {
            id_base,
            id_count: SLOT_IDS,
            mounts: self.mounts.clone(),
        }
    }

    /// The first id of the range (for the probe).
    pub(crate) fn range(&self) -> UidRange {
        self.range
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rw_paths_are_checked() {
        check_rw_path(Path::new("/srv/data")).unwrap();
        check_rw_path(Path::new("/tmpx")).unwrap();
        check_rw_path(Path::new("/work/devices")).unwrap();
        assert_eq!(check_rw_path(Path::new("/")), Err(SandboxPathError::Root));
        for bad in ["relative", "/a/../b", "/a/./b", "/a//b", "/a/"] {
            assert!(
                matches!(
                    check_rw_path(Path::new(bad)),
                    Err(SandboxPathError::NotNormalised { .. })
                ),
                "{bad}"
            );
        }
        for (bad, dir) in [
            ("/tmp", "/tmp"),
            ("/tmp/x", "/tmp"),
            ("/dev/shm", "/dev"),
            ("/proc/1", "/proc"),
            ("/sys", "/sys"),
        ] {
            assert_eq!(
                check_rw_path(Path::new(bad)),
                Err(SandboxPathError::Replaced {
                    path: bad.into(),
                    dir
                }),
            );
        }
    }

    #[test]
    fn config_is_checked() {
        let dir = tempfile::tempdir_in(std::env::current_exe().unwrap().parent().unwrap()).unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let ok = Sandbox::new(&SandboxConfig::default(), 4, &state).unwrap();
        assert_eq!(ok.range().slots(), 4);
        // The state directory is always masked, by its real path.
        let real = std::fs::canonicalize(&state).unwrap();
        assert!(
            ok.mounts
                .masked_paths
                .contains(&real.as_os_str().as_encoded_bytes().to_vec())
        );
        let bad = |c: SandboxConfig| Sandbox::new(&c, 4, &state).unwrap_err();
        assert!(matches!(
            bad(SandboxConfig {
                rw_paths: vec!["/tmp/x".into()],
                ..Default::default()
            }),
            SandboxConfigError::RwPath(SandboxPathError::Replaced { .. })
        ));
        assert!(matches!(
            bad(SandboxConfig {
                rw_paths: vec![dir.path().join("missing")],
                ..Default::default()
            }),
            SandboxConfigError::RwPathMissing { .. }
        ));
        assert!(matches!(
            bad(SandboxConfig {
                tmp_size: 0,
                ..Default::default()
            }),
            SandboxConfigError::Size { what: "/tmp", .. }
        ));
        assert!(matches!(
            bad(SandboxConfig {
                uid_range: Some(UidRange {
                    base: 0,
                    count: SLOT_IDS
                }),
                ..Default::default()
            }),
            SandboxConfigError::UidRange(_)
        ));
        assert!(matches!(
            bad(SandboxConfig {
                masked_paths: vec!["relative".into()],
                ..Default::default()
            }),
            SandboxConfigError::MaskedPath { .. }
        ));
    }

    #[test]
    fn slots_are_handed_out_per_job() {
        let dir = tempfile::tempdir_in(std::env::current_exe().unwrap().parent().unwrap()).unwrap();
        let s = Sandbox::new(&SandboxConfig::default(), 2, dir.path()).unwrap();
        let (a, slot_a) = s.for_job().unwrap();
        let (b, _slot_b) = s.for_job().unwrap();
        assert_ne!(a.id_base, b.id_base);
        assert_eq!(s.for_job().unwrap_err(), NoFreeSlot { slots: 2 });
        drop(slot_a);
        assert!(s.for_job().is_ok());
    }
}
