//! Raw system calls of the job sandbox: the mount calls of its executor (run by the
//! job's init, host root, inside the job's mount namespace), the user-namespace fork
//! of the target and the capability reduction of the target.
//!
//! Everything here is async-signal-safe (one or a few raw system calls, no
//! allocation, no lock, no panic) because the target-side functions run in a forked
//! child between `clone` and `execve`; the init-side ones would not need to be, but
//! keeping one rule for the whole module keeps it easy to audit.

use std::convert::Infallible;
use std::ffi::{CStr, c_void};
use std::os::fd::RawFd;

use super::super::base::{Errno, SysResult, check};

/// `MOUNT_ATTR_RDONLY` of `<linux/mount.h>`.
pub(super) const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `MOUNT_ATTR_NOSUID`.
pub(super) const MOUNT_ATTR_NOSUID: u64 = 0x2;
/// `MOUNT_ATTR_NODEV`.
pub(super) const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `struct mount_attr` (version 0, 32 bytes).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `mount_setattr(AT_FDCWD, path, AT_RECURSIVE, {set, clr})`: changes the flags of the
/// mount at `path` and of every mount below it in one call (Linux 5.12+; `ENOSYS`
/// before).
pub(super) fn mount_setattr_recursive(path: &CStr, set: u64, clear: u64) -> SysResult<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is a valid NUL-terminated string; `attr` is a valid mount_attr
    // of the size passed; the kernel only reads both.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            (libc::AT_RECURSIVE | libc::AT_NO_AUTOMOUNT) as libc::c_uint,
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    };
    check(r as libc::c_int).map(drop)
}

/// Bind-mounts `source` on `target` (`MS_BIND`, with `MS_REC` when `recursive`).
pub(super) fn bind(source: &CStr, target: &CStr, recursive: bool) -> SysResult<()> {
    let flags = libc::MS_BIND | if recursive { libc::MS_REC } else { 0 };
    // SAFETY: valid NUL-terminated strings; NULL fstype and data are valid for a bind.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    })
    .map(drop)
}

/// Changes the flags of the single bind mount at `target` (`MS_REMOUNT | MS_BIND`).
pub(super) fn remount_bind(target: &CStr, flags: libc::c_ulong) -> SysResult<()> {
    // SAFETY: valid NUL-terminated string; NULL source/fstype/data are valid for a
    // remount of a bind mount.
    check(unsafe {
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND | flags,
            std::ptr::null(),
        )
    })
    .map(drop)
}

/// `pivot_root(".", ".")` after `chdir(new_root)`: the new root becomes `/`, the old
/// root is stacked on top of it, to be detached with [`umount_detach`]`(".")`. Needs
/// no directory for the old root (the new root may be read-only).
pub(super) fn pivot_root_here(new_root: &CStr) -> SysResult<()> {
    // SAFETY: valid NUL-terminated strings.
    check(unsafe { libc::chdir(new_root.as_ptr()) })?;
    // SAFETY: valid NUL-terminated strings.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    check(r as libc::c_int).map(drop)
}

/// `umount2(target, MNT_DETACH)`.
pub(super) fn umount_detach(target: &CStr) -> SysResult<()> {
    // SAFETY: valid NUL-terminated string.
    check(unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

/// `mkdir(path, mode)`; an existing directory is not an error.
pub(super) fn mkdir(path: &CStr, mode: u32) -> SysResult<()> {
    // SAFETY: valid NUL-terminated string.
    match check(unsafe { libc::mkdir(path.as_ptr(), mode) }) {
        Err(e) if e.0 == libc::EEXIST => Ok(()),
        r => r.map(drop),
    }
}

/// Creates an empty regular file (a mount point for a bind-mounted file); an existing
/// one is kept.
pub(super) fn touch(path: &CStr, mode: u32) -> SysResult<()> {
    // SAFETY: valid NUL-terminated string; flags and mode are integers.
    let fd = check(unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    Ok(())
}

/// `symlink(target, path)`.
pub(super) fn symlink(target: &CStr, path: &CStr) -> SysResult<()> {
    // SAFETY: valid NUL-terminated strings.
    check(unsafe { libc::symlink(target.as_ptr(), path.as_ptr()) }).map(drop)
}

/// What a path is (`lstat`), for masking: `Ok(true)` for a directory, `Ok(false)` for
/// anything else.
pub(super) fn is_dir(path: &CStr) -> SysResult<bool> {
    // SAFETY: stat is plain data; all-zero is valid; `path` is a valid string.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid for writes.
    check(unsafe { libc::lstat(path.as_ptr(), &mut st) })?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// Opens `path` for writing (no create, no truncation beyond what the file does) and
/// writes all of `data` in one `write` (procfs files such as `uid_map` and sysctls
/// want one write).
pub(super) fn write_file(path: &CStr, data: &[u8]) -> SysResult<()> {
    // SAFETY: valid NUL-terminated string.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) })?;
    // SAFETY: `data` is valid for reads of its length.
    let n = unsafe { libc::write(fd, data.as_ptr().cast::<c_void>(), data.len()) };
    let result = if n < 0 {
        Err(Errno::last())
    } else if n as usize != data.len() {
        Err(Errno(libc::EIO))
    } else {
        Ok(())
    };
    // SAFETY: `fd` is ours and closed once.
    unsafe { libc::close(fd) };
    result
}

/// `unshare(flags)` (e.g. `CLONE_NEWCGROUP`).
pub(super) fn unshare(flags: libc::c_int) -> SysResult<()> {
    // SAFETY: integer argument only.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// A close-on-exec pipe `(read, write)`.
pub(super) fn pipe() -> SysResult<(RawFd, RawFd)> {
    let mut fds = [-1; 2];
    // SAFETY: `fds` is valid for two ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    Ok((fds[0], fds[1]))
}

/// Closes `fd` (errors ignored: nothing useful can be done about them).
pub(super) fn close(fd: RawFd) {
    // SAFETY: the caller owns `fd` and does not use it afterwards.
    unsafe { libc::close(fd) };
}

/// Reads one byte from `fd`: `Ok(true)` when one came, `Ok(false)` on EOF.
pub(super) fn read_byte(fd: RawFd) -> SysResult<bool> {
    let mut b = 0u8;
    loop {
        // SAFETY: `b` is valid for a one-byte write.
        let n = unsafe { libc::read(fd, (&mut b as *mut u8).cast::<c_void>(), 1) };
        if n < 0 {
            let e = Errno::last();
            if e.0 == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        return Ok(n == 1);
    }
}

/// Forks the calling (single-threaded) process into a **new user namespace**:
/// `clone(CLONE_NEWUSER | SIGCHLD)` without `CLONE_VM`, so the child gets a copy of
/// the caller's memory and runs `child` on a copy of its stack, as after `fork`. The
/// child has every capability inside its new user namespace and none outside it; its
/// uid and gid stay unmapped (the overflow ids) until the parent writes its maps.
/// Returns the child's pid in the caller's PID namespace.
///
/// # Safety
/// The caller must be single-threaded (the job's init is): a thread missing in the
/// child could hold a lock. `child` must only call the async-signal-safe child-side
/// functions of `sys` on data prepared before the call, must not panic, and must end
/// in `execve` or `exit_now` (its `Infallible` return type makes returning
/// impossible).
#[allow(
    unreachable_code,
    reason = "`child` returns `Infallible`; the empty match only ends the child's branch"
)]
pub(super) unsafe fn fork_into_new_userns<F>(child: F) -> SysResult<i32>
where
    F: FnOnce() -> Infallible,
{
    let flags = libc::CLONE_NEWUSER as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: a raw fork-style clone (no new stack: the child continues on a copy of
    // ours, no CLONE_VM: it has a copy of our memory). The caller is single-threaded
    // (this function's contract), so no lock can be held by a thread missing in the
    // child; the child only runs `child`, which never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            std::ptr::null_mut::<c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    if pid < 0 {
        return Err(Errno::last());
    }
    if pid == 0 {
        match child() {}
    }
    Ok(pid as i32)
}

/// Child side: `setresgid(0,0,0)`, `setgroups(0, NULL)`, `setresuid(0,0,0)` — the
/// caller becomes root of its own user namespace (and loses the supplementary groups
/// it inherited from host root, which would otherwise still count on host files).
/// The order matters: gid and groups need `CAP_SETGID`, which a uid change could drop.
pub(super) fn become_userns_root() -> SysResult<()> {
    super::super::setgid(0)?;
    super::super::setgroups_empty()?;
    super::super::setuid(0)
}

/// Highest capability number this code knows to try; `PR_CAPBSET_DROP` answers
/// `EINVAL` for numbers above the kernel's `CAP_LAST_CAP`, which ends the loop.
const CAP_MAX: u32 = 63;

/// Child side: drops every capability whose bit is not set in `keep` from the
/// bounding set (`PR_CAPBSET_DROP`, needs `CAP_SETPCAP` in the caller's user
/// namespace).
pub(super) fn drop_bounding_except(keep: u64) -> SysResult<()> {
    for cap in 0..=CAP_MAX {
        if keep & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r == -1 {
            let e = Errno::last();
            if e.0 == libc::EINVAL {
                // Past the kernel's last capability.
                return Ok(());
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Child side: clears the ambient set (`PR_CAP_AMBIENT_CLEAR_ALL`).
pub(super) fn clear_ambient() -> SysResult<()> {
    // SAFETY: integer arguments only.
    check(unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    })
    .map(drop)
}

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3` (64-bit sets in two words).
const CAP_VERSION_3: u32 = 0x2008_0522;

/// Child side: empties the inheritable set, keeping the effective and permitted ones
/// (`capget` + `capset`).
pub(super) fn clear_inheritable() -> SysResult<()> {
    let mut header = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: header and a 2-element data array, as version 3 requires.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) };
    check(r as libc::c_int)?;
    for d in &mut data {
        d.inheritable = 0;
    }
    // SAFETY: as above; the kernel only reads them.
    let r = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    check(r as libc::c_int).map(drop)
}
