//! Reading and writing cgroupfs files with errors that name the file.

use std::io;
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, access};

use super::error::CgroupError;

/// Reads a whole control file.
pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })
}

/// Reads a control file that may be absent (a controller or kernel feature missing).
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CgroupError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `value` to a control file in one `write(2)`, as cgroupfs requires.
pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

/// Creates one cgroup directory; an existing one is fine when `exist_ok`.
pub(crate) fn mkdir(path: &Path, exist_ok: bool) -> Result<(), CgroupError> {
    match std::fs::create_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if exist_ok && e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(CgroupError::AlreadyExists {
            path: path.to_owned(),
        }),
        Err(source) => Err(CgroupError::Io {
            action: "create",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Creates (or reuses) a subtree directory and checks that this process may create
/// job cgroups in it. A subtree another user (root) created is there, but useless to
/// us: without this check a non-root server would only fail at the first job.
pub(crate) fn prepare_subtree(path: &Path) -> Result<(), CgroupError> {
    mkdir(path, true)?;
    access(path, AccessFlags::W_OK | AccessFlags::X_OK).map_err(|errno| CgroupError::Io {
        action: "create job cgroups in",
        path: path.to_owned(),
        source: io::Error::from(errno),
    })
}

/// Removes one (empty) cgroup directory; an absent one is fine.
pub(crate) fn rmdir(path: &Path) -> Result<(), CgroupError> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(CgroupError::Io {
            action: "remove",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Names of the child cgroups (sub-directories) of `dir`; none when it is absent.
pub(crate) fn child_dirs(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CgroupError::Io {
                action: "list",
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CgroupError::Io {
            action: "list",
            path: dir.to_owned(),
            source,
        })?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}
