//! Program, working directory and environment resolution: the parent turns a job's
//! argv, cwd and environment into the checked C data the child side uses, with
//! precise typed errors (spec: QX-MSG-TYPE-5).

use std::ffi::{CString, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use qexec_protocol::SpawnFailure;

use super::error::SpawnError;
use crate::sys::CStringArray;

/// `PATH` used to find the program (and given to the job) when its environment has
/// none.
pub(crate) const DEFAULT_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A job's program, resolved and checked, and its C data.
#[derive(Debug)]
pub(super) struct Target<'a> {
    /// `argv[0]` as given (for messages).
    pub(super) argv0: &'a [u8],
    /// The file to execute.
    pub(super) program: PathBuf,
    /// `program` as a C string.
    pub(super) path: CString,
    /// The working directory as a C string.
    pub(super) cwd: CString,
    /// The target's `argv`.
    pub(super) argv: CStringArray,
    /// The target's environment, `KEY=VALUE` (a default `PATH` added when absent).
    pub(super) env: Vec<CString>,
}

impl<'a> Target<'a> {
    /// Checks the working directory, resolves `argv[0]` against the job's `PATH` and
    /// builds the C strings.
    pub(super) fn resolve(
        argv: &'a [Vec<u8>],
        env: &[(Vec<u8>, Vec<u8>)],
        cwd: &Path,
    ) -> Result<Self, SpawnError> {
        let Some(argv0) = argv.first() else {
            return Err(SpawnError::new(
                SpawnFailure::EmptyArgv,
                "cannot start a job with an empty argv: give at least the program name",
            ));
        };
        check_cwd(cwd)?;
        let path_var = env
            .iter()
            .find(|(k, _)| k == b"PATH")
            .map(|(_, v)| v.as_slice());
        let program = resolve_program(argv0, path_var, cwd)?;
        let path = c_string(program.as_os_str().as_bytes(), "program path")?;
        let cwd = c_string(cwd.as_os_str().as_bytes(), "working directory")?;
        let argv = CStringArray::new(
            argv.iter()
                .enumerate()
                .map(|(i, a)| c_string(a, &format!("argument {i}")))
                .collect::<Result<_, _>>()?,
        );
        let env = build_env(env, path_var.is_none())?;
        Ok(Self {
            argv0,
            program,
            path,
            cwd,
            argv,
            env,
        })
    }

    /// The environment as a NULL-terminated array for `execve`.
    pub(super) fn envp(&self) -> CStringArray {
        CStringArray::new(self.env.clone())
    }
}

/// Checks the working directory exists and is a directory.
fn check_cwd(cwd: &Path) -> Result<(), SpawnError> {
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(SpawnError::new(
            SpawnFailure::BadCwd,
            format!(
                "working directory {} is not a directory: give an existing directory",
                cwd.display()
            ),
        )),
        Err(e) => Err(SpawnError::new(
            SpawnFailure::BadCwd,
            format!(
                "working directory {} cannot be used: {e}: give an existing directory",
                cwd.display()
            ),
        )),
    }
}

/// Finds the file to execute: `argv0` itself when it contains a `/` (relative to the
/// job's cwd), else the first executable `dir/argv0` over `PATH`.
/// spec: QX-MSG-TYPE-5 (precise `NotFound`, `PermissionDenied`, `NotExecutable`)
fn resolve_program(
    argv0: &[u8],
    path_var: Option<&[u8]>,
    cwd: &Path,
) -> Result<PathBuf, SpawnError> {
    let name = String::from_utf8_lossy(argv0);
    if argv0.is_empty() {
        return Err(SpawnError::new(
            SpawnFailure::NotFound,
            "the program name (argv[0]) is empty: give a program name or path",
        ));
    }
    if argv0.contains(&b'/') {
        let p = cwd.join(Path::new(OsStr::from_bytes(argv0)));
        check_candidate(&p)?;
        return Ok(p);
    }
    let path_var = path_var.unwrap_or(DEFAULT_PATH.as_bytes());
    let mut first_error = None;
    for dir in path_var.split(|b| *b == b':') {
        let dir = if dir.is_empty() { b".".as_slice() } else { dir };
        let candidate = cwd
            .join(Path::new(OsStr::from_bytes(dir)))
            .join(OsStr::from_bytes(argv0));
        match check_candidate(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.failure == SpawnFailure::NotFound => {}
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.unwrap_or_else(|| {
        SpawnError::new(
            SpawnFailure::NotFound,
            format!(
                "program {name} not found in PATH {}: install it, fix PATH, or give its full path",
                String::from_utf8_lossy(path_var)
            ),
        )
    }))
}

/// Checks that `p` is an existing regular file with an execute bit.
fn check_candidate(p: &Path) -> Result<(), SpawnError> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => Err(SpawnError::new(
            SpawnFailure::NotExecutable,
            format!("{} is a directory, not a program", p.display()),
        )),
        Ok(m) if !m.is_file() => Err(SpawnError::new(
            SpawnFailure::NotExecutable,
            format!(
                "{} is not a regular file, so it cannot be executed",
                p.display()
            ),
        )),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Err(SpawnError::new(
            SpawnFailure::NotExecutable,
            format!(
                "{} has no execute permission bit: chmod +x it or run it through its interpreter",
                p.display()
            ),
        )),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Err(SpawnError::new(
            SpawnFailure::PermissionDenied,
            format!("cannot access {}: {e}", p.display()),
        )),
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            Err(SpawnError::new(
                SpawnFailure::NotFound,
                format!("program {} does not exist", p.display()),
            ))
        }
        Err(e) => Err(SpawnError::new(
            SpawnFailure::Other,
            format!("cannot inspect program {}: {e}", p.display()),
        )),
    }
}

/// `KEY=VALUE` strings, plus the default `PATH` when `add_path`: exactly the job's
/// environment, nothing of the server's. spec: QX-SEC-5
fn build_env(env: &[(Vec<u8>, Vec<u8>)], add_path: bool) -> Result<Vec<CString>, SpawnError> {
    let mut out = Vec::with_capacity(env.len() + 1);
    for (k, v) in env {
        if k.is_empty() || k.contains(&b'=') {
            return Err(SpawnError::new(
                SpawnFailure::Other,
                format!(
                    "invalid environment variable name {:?}: it must be non-empty and contain no '='",
                    String::from_utf8_lossy(k)
                ),
            ));
        }
        let mut kv = Vec::with_capacity(k.len() + v.len() + 1);
        kv.extend_from_slice(k);
        kv.push(b'=');
        kv.extend_from_slice(v);
        out.push(c_string(&kv, "environment variable")?);
    }
    if add_path {
        out.push(c_string(format!("PATH={DEFAULT_PATH}").as_bytes(), "PATH")?);
    }
    Ok(out)
}

/// A C string, or a typed error naming `what` when `bytes` holds a NUL.
fn c_string(bytes: &[u8], what: &str) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| {
        SpawnError::new(
            SpawnFailure::Other,
            format!(
                "{what} {:?} contains a NUL byte, which cannot be passed to a program",
                String::from_utf8_lossy(bytes)
            ),
        )
    })
}
