//! What every wrapper shares: the child-side error type and the C string arrays the
//! parent builds for `execve`.

use std::ffi::{CString, c_char};
use std::fmt;

/// A raw `errno` value reported by a child-side system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Errno(pub(crate) i32);

impl Errno {
    /// The calling thread's current `errno`.
    pub(super) fn last() -> Self {
        // `last_os_error` only reads errno; it does not allocate.
        Self(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }

    /// This errno as an [`std::io::Error`] (parent side; for messages).
    pub(crate) fn to_io(self) -> std::io::Error {
        std::io::Error::from_raw_os_error(self.0)
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_io().fmt(f)
    }
}

/// Result of a child-side system call.
pub(crate) type SysResult<T> = Result<T, Errno>;

/// Turns the `-1`-on-error convention of libc calls into a [`SysResult`].
pub(super) fn check(ret: libc::c_int) -> SysResult<libc::c_int> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// A NULL-terminated array of C strings (`argv`, `envp`), built by the parent before
/// cloning so the child only passes pointers along.
#[derive(Debug)]
pub(crate) struct CStringArray {
    /// Owns the bytes the pointers point into.
    _strings: Vec<CString>,
    /// One pointer per string, then NULL.
    ptrs: Vec<*const c_char>,
}

impl CStringArray {
    /// Builds the array; it keeps `strings` alive as long as itself.
    pub(crate) fn new(strings: Vec<CString>) -> Self {
        let mut ptrs: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Self {
            _strings: strings,
            ptrs,
        }
    }

    /// Pointer to the NULL-terminated pointer array.
    pub(super) fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}
