//! Seccomp filters: the kernel's instruction layout and its hex form (how the job's
//! init receives the program), installing a filter (child side), and probing kernel
//! support (parent side). What the filter says is `crate::seccomp`'s business.

use std::io;

use super::base::{Errno, SysResult, check};

/// One classic-BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SockFilter {
    /// Operation code.
    pub(crate) code: u16,
    /// Jump offset when the comparison holds.
    pub(crate) jt: u8,
    /// Jump offset when it does not.
    pub(crate) jf: u8,
    /// Operand.
    pub(crate) k: u32,
}

impl SockFilter {
    /// The instruction's 8 bytes in the kernel's layout (native byte order).
    pub(crate) fn to_bytes(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[..2].copy_from_slice(&self.code.to_ne_bytes());
        b[2] = self.jt;
        b[3] = self.jf;
        b[4..].copy_from_slice(&self.k.to_ne_bytes());
        b
    }

    /// The inverse of [`SockFilter::to_bytes`].
    pub(crate) fn from_bytes(b: [u8; 8]) -> Self {
        Self {
            code: u16::from_ne_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// Lower-case hex of `program` in the kernel's layout (8 bytes per instruction,
/// native byte order).
pub(crate) fn encode_hex(program: &[SockFilter]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(program.len() * 16);
    for ins in program {
        for b in ins.to_bytes() {
            hex.push(char::from(DIGITS[usize::from(b >> 4)]));
            hex.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
    }
    hex
}

/// Parses [`encode_hex`]; `None` when malformed or empty. (The job's init; it may
/// allocate.)
pub(crate) fn decode_hex(hex: &[u8]) -> Option<Vec<SockFilter>> {
    if hex.is_empty() || !hex.len().is_multiple_of(16) {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut program = Vec::with_capacity(hex.len() / 16);
    for chunk in hex.chunks_exact(16) {
        let mut bytes = [0u8; 8];
        for (b, pair) in bytes.iter_mut().zip(chunk.chunks_exact(2)) {
            *b = (nibble(pair[0])? << 4) | nibble(pair[1])?;
        }
        program.push(SockFilter::from_bytes(bytes));
    }
    Some(program)
}

/// The kernel's `struct sock_fprog`.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const SockFilter,
}

/// `SECCOMP_SET_MODE_FILTER` (linux/seccomp.h).
const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
/// `SECCOMP_GET_ACTION_AVAIL` (linux/seccomp.h).
const SECCOMP_GET_ACTION_AVAIL: libc::c_uint = 2;

/// Child side: installs `program` as a seccomp filter of the calling thread
/// (`seccomp(SECCOMP_SET_MODE_FILTER, 0, &prog)`; no `TSYNC`: the caller is the
/// single thread of a process about to `execve`). Needs `no_new_privs` (or
/// `CAP_SYS_ADMIN`) first. One raw system call: async-signal-safe, no allocation.
/// spec: QX-SBX-24
pub(crate) fn install_seccomp_filter(program: &[SockFilter]) -> SysResult<()> {
    let Ok(len) = libc::c_ushort::try_from(program.len()) else {
        return Err(Errno(libc::EINVAL));
    };
    let prog = SockFprog {
        len,
        filter: program.as_ptr(),
    };
    // SAFETY: `prog` points at `len` valid, initialised instructions that live for the
    // whole call (the kernel copies them); flags 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &prog as *const SockFprog,
        )
    };
    check(r as libc::c_int).map(drop)
}

/// Parent side: whether the kernel can filter system calls with the actions the
/// job filter uses (`SECCOMP_GET_ACTION_AVAIL` for `ERRNO` and `KILL_PROCESS`);
/// installs nothing.
pub(crate) fn seccomp_filter_available() -> io::Result<()> {
    for action in [libc::SECCOMP_RET_ERRNO, libc::SECCOMP_RET_KILL_PROCESS] {
        // SAFETY: the third argument points at a valid u32 for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_GET_ACTION_AVAIL,
                0 as libc::c_uint,
                &action as *const u32,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_rejects_garbage() {
        assert_eq!(decode_hex(b""), None);
        assert_eq!(decode_hex(b"0011"), None);
        assert_eq!(decode_hex(b"zz00000000000000"), None);
        let ret_allow = SockFilter {
            code: 6,
            jt: 1,
            jf: 2,
            k: libc::SECCOMP_RET_ALLOW,
        };
        let hex = encode_hex(&[ret_allow, ret_allow]);
        assert_eq!(hex.len(), 32);
        assert_eq!(decode_hex(hex.as_bytes()), Some(vec![ret_allow, ret_allow]));
        assert_eq!(ret_allow.to_bytes()[2..4], [1, 2]);
    }

    /// The errno of a raw system call (0 on success). A `clone` that unexpectedly
    /// succeeds ends its child at once.
    fn errno_of(nr: libc::c_long, a: [libc::c_long; 3]) -> i32 {
        // SAFETY: every call below passes integers or NULL pointers the kernel
        // validates (EFAULT at worst); a forked child exits without touching memory.
        let r =
            unsafe { libc::syscall(nr, a[0], a[1], a[2], 0 as libc::c_long, 0 as libc::c_long) };
        if r == 0 && nr == libc::SYS_clone {
            // SAFETY: _exit in the child of a raw fork.
            unsafe { libc::_exit(0) };
        }
        if r > 0 && nr == libc::SYS_clone {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(r as i32), None);
        }
        if r == -1 {
            io::Error::last_os_error().raw_os_error().unwrap_or(0)
        } else {
            0
        }
    }

    /// spec: QX-SBX-20, QX-SBX-22, QX-SBX-24 — the default filter (test-only use of
    /// `crate::seccomp`) installed for real on a fresh thread
    /// (`no_new_privs` and seccomp filters are per thread, and inherited by what the
    /// thread forks): the dangerous calls fail with EPERM, while fork (through glibc's
    /// `clone3` → `clone` fallback), exec, pipes, reads and writes work, and the
    /// children show `Seccomp: 2`.
    #[test]
    fn installed_filter_denies_with_eperm_and_ordinary_work_runs() {
        let program = crate::seccomp::build().unwrap();
        let (denied, out) = std::thread::spawn(move || {
            crate::sys::set_no_new_privs().unwrap();
            install_seccomp_filter(program.instructions()).unwrap();
            let key_spec_session_keyring: libc::c_long = -3;
            let probes: [(&str, libc::c_long, [libc::c_long; 3]); 8] = [
                ("keyctl", libc::SYS_keyctl, [0, key_spec_session_keyring, 0]),
                ("perf_event_open", libc::SYS_perf_event_open, [0, 0, -1]),
                ("bpf", libc::SYS_bpf, [0, 0, 0]),
                (
                    "unshare(CLONE_NEWUSER)",
                    libc::SYS_unshare,
                    [libc::CLONE_NEWUSER as _, 0, 0],
                ),
                ("mount", libc::SYS_mount, [0, 0, 0]),
                ("umount2", libc::SYS_umount2, [0, 0, 0]),
                (
                    "clone(CLONE_NEWNS)",
                    libc::SYS_clone,
                    [(libc::CLONE_NEWNS | libc::SIGCHLD) as _, 0, 0],
                ),
                ("setns", libc::SYS_setns, [-1, 0, 0]),
            ];
            let denied: Vec<(&str, i32)> = probes
                .iter()
                .map(|(name, nr, a)| (*name, errno_of(*nr, *a)))
                .collect();
            let out = std::process::Command::new("/bin/sh")
                .args([
                    "-c",
                    "echo piped | cat; (exit 3); echo $?; grep '^Seccomp:' /proc/self/status",
                ])
                .output()
                .unwrap();
            (denied, out)
        })
        .join()
        .unwrap();
        for (name, errno) in denied {
            assert_eq!(errno, libc::EPERM, "{name}: errno {errno}");
        }
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "piped\n3\nSeccomp:\t2\n"
        );
        // This thread never had the filter.
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert!(status.contains("Seccomp:\t0"), "{status}");
    }
}
