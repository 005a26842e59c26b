//! The default seccomp filter of a job's program: what it denies, and its BPF program.
//!
//! # Design
//! - **Default allow, deny list answered `EPERM`** (spec: QX-SBX-20, QX-SBX-21), in the
//!   spirit of Docker's default profile (moby/profiles `seccomp/default.json`): what
//!   that profile refuses to a container without extra capabilities, minus the few
//!   calls listed in spec/security.md as deliberately allowed. A denied call fails
//!   with `EPERM` instead of killing the process, so programs that probe a feature
//!   (io_uring, `clone3`, user namespaces) fall back the way they do in a container.
//! - **Namespaces** (QX-SBX-22): `unshare` and `clone` are refused only when their
//!   flags ask for a new namespace (an argument mask, as Docker does for `clone`), so
//!   `fork`, threads and `unshare(CLONE_FILES)` keep working; `setns` is refused
//!   whole. `clone3` passes its flags in memory a filter cannot read, so it is answered
//!   `ENOSYS`, on which glibc and musl fall back to `clone`.
//! - **Foreign system call ABIs** (QX-SBX-23): a call made through another ABI than
//!   the native one (i386 `int 0x80` or x32 on x86-64, AArch32 on AArch64) is numbered
//!   differently, so the deny list would mean nothing for it: the process is killed
//!   (`SECCOMP_RET_KILL_PROCESS`, seen as `SIGSYS`).
//! - **Built once, before any fork**: [`build`] runs when the job manager starts (pure
//!   code: the rules are data, compiled to BPF by the `seccompiler` crate in chains
//!   of eight entries behind system call number range checks, after a short prelude
//!   of our own for the ABI check and `clone3`, which `seccompiler` cannot express:
//!   it has one match action per filter and compares arguments, not number ranges).
//!   Each spawn hands the finished instructions to the child, which installs them as
//!   its very last step before `execve` (`sys::child`, after `no_new_privs`); an
//!   isolated job's init receives them in its parameter file ([`Program::hex`]).
//! - Supported on x86-64 and AArch64; elsewhere [`build`] says the architecture is
//!   unsupported and the manager refuses to start unless seccomp is turned off.

use std::collections::BTreeMap;
use std::fmt;

use seccompiler::{
    BackendError, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::sys::{SockFilter, encode_hex};

/// Why a group of calls is denied (spec/security.md gives the full reasoning).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Group {
    /// Load, unload or replace kernel code: modules, kexec.
    KernelCode,
    /// Large kernel attack surface open to unprivileged users: eBPF, perf events,
    /// userfaultfd, io_uring, fanotify.
    AttackSurface,
    /// The kernel keyring (not namespaced; keys of other users of the host).
    Keyring,
    /// Administer the host: reboot, swap, accounting, quotas, hostname, console.
    HostAdmin,
    /// Set the host's clocks.
    Time,
    /// Mount, unmount, change the root, the new mount API.
    Mounts,
    /// Create or join namespaces.
    Namespaces,
    /// Open files by handle, bypassing path lookup (the "shocker" escape).
    FileHandles,
    /// Inspect or act on other processes beyond `ptrace`'s own checks.
    ProcessIntrospection,
    /// Read the kernel log (kernel addresses).
    KernelLog,
    /// Raw I/O port access (x86).
    IoPorts,
    /// Obsolete interfaces with a history of bugs.
    Obsolete,
    /// Execution domains other than plain Linux (disable ASLR, map page zero).
    Personality,
    /// Socket families with a history of kernel bugs: `AF_ALG`, `AF_VSOCK`.
    SocketFamilies,
}

/// How a denied call is matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Match {
    /// Every call.
    Always,
    /// When the flags (first argument, low 32 bits) contain any of these bits.
    AnyFlag(u32),
    /// When the first argument (low 32 bits) is none of these values.
    NoneOf(&'static [u32]),
    /// When the first argument (low 32 bits) is one of these values.
    OneOf(&'static [u32]),
}

/// One entry of the deny list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Denied {
    /// The system call's name.
    pub(crate) name: &'static str,
    /// Its number on this architecture.
    pub(crate) nr: libc::c_long,
    /// When it is denied.
    pub(crate) when: Match,
    /// Why.
    pub(crate) group: Group,
}

/// The `CLONE_NEW*` flags `clone` accepts (Docker's mask 0x7E020000): mount, cgroup,
/// UTS, IPC, user, PID, network namespaces.
pub(crate) const CLONE_NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;

/// `CLONE_NEWTIME`: `unshare` takes it (for `clone` the same bit is part of the exit
/// signal, so it is not in [`CLONE_NAMESPACE_FLAGS`]).
const CLONE_NEWTIME: u32 = 0x80;

/// `personality` values that stay allowed (as in Docker): `PER_LINUX`, `PER_LINUX32`,
/// `UNAME26` alone or with `PER_LINUX32`, and `0xffffffff` (query).
const ALLOWED_PERSONALITIES: &[u32] = &[0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// `AF_ALG` (38) and `AF_VSOCK` (40), refused to `socket` as in Docker.
const DENIED_SOCKET_FAMILIES: &[u32] = &[libc::AF_ALG as u32, libc::AF_VSOCK as u32];

/// `open_tree_attr` (Linux 6.15; not in `libc` yet). System calls added since 5.1
/// have the same number on every architecture.
const SYS_OPEN_TREE_ATTR: libc::c_long = 467;

/// Shorthand for an always-denied call.
const fn always(name: &'static str, nr: libc::c_long, group: Group) -> Denied {
    Denied {
        name,
        nr,
        when: Match::Always,
        group,
    }
}

/// The deny list of the default filter (spec: QX-SBX-21, QX-SBX-22).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
pub(crate) fn deny_list() -> Vec<Denied> {
    use Group::*;
    #[allow(
        unused_mut,
        reason = "only x86-64 appends architecture-specific entries"
    )]
    let mut list = vec![
        always("kexec_load", libc::SYS_kexec_load, KernelCode),
        always("kexec_file_load", libc::SYS_kexec_file_load, KernelCode),
        always("init_module", libc::SYS_init_module, KernelCode),
        always("finit_module", libc::SYS_finit_module, KernelCode),
        always("delete_module", libc::SYS_delete_module, KernelCode),
        always("bpf", libc::SYS_bpf, AttackSurface),
        always("perf_event_open", libc::SYS_perf_event_open, AttackSurface),
        always("userfaultfd", libc::SYS_userfaultfd, AttackSurface),
        always("io_uring_setup", libc::SYS_io_uring_setup, AttackSurface),
        always("io_uring_enter", libc::SYS_io_uring_enter, AttackSurface),
        always(
            "io_uring_register",
            libc::SYS_io_uring_register,
            AttackSurface,
        ),
        always("fanotify_init", libc::SYS_fanotify_init, AttackSurface),
        always("keyctl", libc::SYS_keyctl, Keyring),
        always("add_key", libc::SYS_add_key, Keyring),
        always("request_key", libc::SYS_request_key, Keyring),
        always("reboot", libc::SYS_reboot, HostAdmin),
        always("swapon", libc::SYS_swapon, HostAdmin),
        always("swapoff", libc::SYS_swapoff, HostAdmin),
        always("acct", libc::SYS_acct, HostAdmin),
        always("quotactl", libc::SYS_quotactl, HostAdmin),
        always("quotactl_fd", libc::SYS_quotactl_fd, HostAdmin),
        always("sethostname", libc::SYS_sethostname, HostAdmin),
        always("setdomainname", libc::SYS_setdomainname, HostAdmin),
        always("vhangup", libc::SYS_vhangup, HostAdmin),
        always("settimeofday", libc::SYS_settimeofday, Time),
        always("clock_settime", libc::SYS_clock_settime, Time),
        always("clock_adjtime", libc::SYS_clock_adjtime, Time),
        always("adjtimex", libc::SYS_adjtimex, Time),
        always("mount", libc::SYS_mount, Mounts),
        always("umount2", libc::SYS_umount2, Mounts),
        always("pivot_root", libc::SYS_pivot_root, Mounts),
        always("move_mount", libc::SYS_move_mount, Mounts),
        always("fsopen", libc::SYS_fsopen, Mounts),
        always("fsconfig", libc::SYS_fsconfig, Mounts),
        always("fsmount", libc::SYS_fsmount, Mounts),
        always("fspick", libc::SYS_fspick, Mounts),
        always("open_tree", libc::SYS_open_tree, Mounts),
        always("open_tree_attr", SYS_OPEN_TREE_ATTR, Mounts),
        always("mount_setattr", libc::SYS_mount_setattr, Mounts),
        always("setns", libc::SYS_setns, Namespaces),
        Denied {
            name: "unshare",
            nr: libc::SYS_unshare,
            when: Match::AnyFlag(CLONE_NAMESPACE_FLAGS | CLONE_NEWTIME),
            group: Namespaces,
        },
        Denied {
            name: "clone",
            nr: libc::SYS_clone,
            when: Match::AnyFlag(CLONE_NAMESPACE_FLAGS),
            group: Namespaces,
        },
        always(
            "open_by_handle_at",
            libc::SYS_open_by_handle_at,
            FileHandles,
        ),
        always(
            "name_to_handle_at",
            libc::SYS_name_to_handle_at,
            FileHandles,
        ),
        always("kcmp", libc::SYS_kcmp, ProcessIntrospection),
        always("pidfd_getfd", libc::SYS_pidfd_getfd, ProcessIntrospection),
        always(
            "process_madvise",
            libc::SYS_process_madvise,
            ProcessIntrospection,
        ),
        always("syslog", libc::SYS_syslog, KernelLog),
        always("lookup_dcookie", libc::SYS_lookup_dcookie, Obsolete),
        Denied {
            name: "personality",
            nr: libc::SYS_personality,
            when: Match::NoneOf(ALLOWED_PERSONALITIES),
            group: Personality,
        },
        Denied {
            name: "socket",
            nr: libc::SYS_socket,
            when: Match::OneOf(DENIED_SOCKET_FAMILIES),
            group: SocketFamilies,
        },
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([
        always("iopl", libc::SYS_iopl, IoPorts),
        always("ioperm", libc::SYS_ioperm, IoPorts),
        always("uselib", libc::SYS_uselib, Obsolete),
        always("ustat", libc::SYS_ustat, Obsolete),
        always("sysfs", libc::SYS_sysfs, Obsolete),
        always("_sysctl", libc::SYS__sysctl, Obsolete),
    ]);
    list
}

/// No system call table here: [`build`] reports the architecture as unsupported.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub(crate) fn deny_list() -> Vec<Denied> {
    Vec::new()
}

/// A finished BPF program, ready for `seccomp(SECCOMP_SET_MODE_FILTER)`, and its hex
/// form for the init's parameter file (computed once, not per spawn).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Program {
    instructions: Vec<SockFilter>,
    hex: String,
}

impl fmt::Debug for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Program({} instructions)", self.instructions.len())
    }
}

/// Why the filter cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SeccompError {
    /// qexec has no system call table for this architecture.
    #[error(
        "the job seccomp filter supports x86_64 and aarch64, not {arch}: start qexecd with \
         --no-seccomp to run jobs without it (weaker isolation)"
    )]
    UnsupportedArch {
        /// The architecture qexecd was built for.
        arch: &'static str,
    },
    /// The filter compiler refused the rules (a bug in the deny list).
    #[error("cannot compile the job seccomp filter: {reason}")]
    Compile {
        /// What the compiler said.
        reason: String,
    },
    /// The running kernel cannot filter system calls.
    #[error(
        "the kernel cannot install seccomp filters ({reason}): it needs CONFIG_SECCOMP_FILTER; \
         start qexecd with --no-seccomp to run jobs without a filter (weaker isolation)"
    )]
    KernelUnsupported {
        /// The probe's error.
        reason: String,
    },
}

impl From<BackendError> for SeccompError {
    fn from(e: BackendError) -> Self {
        Self::Compile {
            reason: e.to_string(),
        }
    }
}

impl Program {
    fn new(instructions: Vec<SockFilter>) -> Self {
        let hex = encode_hex(&instructions);
        Self { instructions, hex }
    }

    /// The instructions.
    pub(crate) fn instructions(&self) -> &[SockFilter] {
        &self.instructions
    }

    /// The instructions in hex (`crate::sys::encode_hex`): how the init's parameter
    /// file carries the program.
    pub(crate) fn hex(&self) -> &str {
        &self.hex
    }
}

/// The native architecture's audit value and `seccompiler` target.
#[cfg(target_arch = "x86_64")]
const NATIVE: Option<(u32, TargetArch)> = Some((AUDIT_ARCH_X86_64, TargetArch::x86_64));
#[cfg(target_arch = "aarch64")]
const NATIVE: Option<(u32, TargetArch)> = Some((AUDIT_ARCH_AARCH64, TargetArch::aarch64));
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const NATIVE: Option<(u32, TargetArch)> = None;

/// `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code, reason = "per-arch"))]
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// `AUDIT_ARCH_AARCH64` (`EM_AARCH64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`).
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code, reason = "per-arch"))]
const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;
/// The bit that marks an x32 system call on x86-64 (`__X32_SYSCALL_BIT`).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// Classic BPF opcodes (linux/bpf_common.h) and seccomp return values used by the
// prelude.
/// `BPF_LD | BPF_W | BPF_ABS` (the first two are 0).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;
/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

fn stmt(code: u16, k: u32) -> SockFilter {
    SockFilter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// `SECCOMP_RET_ERRNO` with `errno`.
fn ret_errno(errno: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
}

/// The prelude: foreign ABI → kill; `clone3` → `ENOSYS`; else fall through to the
/// deny list.
fn prelude(audit_arch: u32) -> Vec<SockFilter> {
    let mut p = vec![
        stmt(BPF_LD_W_ABS, DATA_ARCH),
        jump(BPF_JMP_JEQ_K, audit_arch, 1, 0),
        stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS),
        stmt(BPF_LD_W_ABS, DATA_NR),
    ];
    if audit_arch == AUDIT_ARCH_X86_64 {
        // x32 calls share AUDIT_ARCH_X86_64 and set this bit in the number.
        p.push(jump(BPF_JMP_JGE_K, X32_SYSCALL_BIT, 0, 1));
        p.push(stmt(BPF_RET_K, libc::SECCOMP_RET_KILL_PROCESS));
    }
    p.push(jump(BPF_JMP_JEQ_K, libc::SYS_clone3 as u32, 0, 1));
    p.push(stmt(BPF_RET_K, ret_errno(libc::ENOSYS)));
    p
}

/// The rules of one deny-list entry (any rule matching → `EPERM`).
fn rules(when: Match) -> Result<Vec<SeccompRule>, BackendError> {
    let arg0 = |op, value| SeccompCondition::new(0, SeccompCmpArgLen::Dword, op, value);
    match when {
        Match::Always => Ok(Vec::new()),
        // One rule per bit: rules of a chain are alternatives.
        Match::AnyFlag(mask) => (0..32)
            .map(|i| 1u32 << i)
            .filter(|bit| mask & bit != 0)
            .map(|bit| {
                SeccompRule::new(vec![arg0(
                    SeccompCmpOp::MaskedEq(u64::from(bit)),
                    u64::from(bit),
                )?])
            })
            .collect(),
        // Conditions of a rule all have to hold.
        Match::NoneOf(values) => Ok(vec![SeccompRule::new(
            values
                .iter()
                .map(|v| arg0(SeccompCmpOp::Ne, u64::from(*v)))
                .collect::<Result<_, _>>()?,
        )?]),
        Match::OneOf(values) => values
            .iter()
            .map(|v| SeccompRule::new(vec![arg0(SeccompCmpOp::Eq, u64::from(*v))?]))
            .collect(),
    }
}

/// Builds the default filter for the architecture qexecd was built for.
/// spec: QX-SBX-20, QX-SBX-21, QX-SBX-22, QX-SBX-23
pub(crate) fn build() -> Result<Program, SeccompError> {
    let Some((audit_arch, target)) = NATIVE else {
        return Err(SeccompError::UnsupportedArch {
            arch: std::env::consts::ARCH,
        });
    };
    build_for(audit_arch, target, &deny_list())
}

/// Deny-list entries per `seccompiler` chain (see [`build_for`]).
const BUCKET: usize = 8;

/// The deny list compiled as [`BUCKET`]-sized chains in system call number order,
/// each behind one range check: `seccompiler` emits one linear chain per filter, and
/// the kernel walks a filter once per system call number when it installs it (to
/// find the calls it can allow without running it) and for every call that depends
/// on arguments; short chains keep both cheap.
fn build_for(
    audit_arch: u32,
    target: TargetArch,
    list: &[Denied],
) -> Result<Program, SeccompError> {
    let mut sorted: Vec<&Denied> = list.iter().collect();
    sorted.sort_by_key(|d| d.nr);
    let mut chains = Vec::new();
    for bucket in sorted.chunks(BUCKET) {
        let mut map: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for d in bucket {
            #[allow(
                clippy::useless_conversion,
                reason = "c_long is i64 on the supported targets only"
            )]
            map.insert(i64::from(d.nr), rules(d.when)?);
        }
        let filter = SeccompFilter::new(
            map,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            target,
        )?;
        let chain: seccompiler::BpfProgram = filter.try_into()?;
        let first = u32::try_from(bucket[0].nr).map_err(|_| SeccompError::Compile {
            reason: format!("negative system call number {}", bucket[0].nr),
        })?;
        chains.push((first, chain));
    }
    // The prelude leaves the call's number in the accumulator; each range check jumps
    // over a chain to the next check when the number belongs to a later chain. A
    // chain ends in a return on every path, so nothing falls through into the next.
    let mut program = prelude(audit_arch);
    for (i, (_, chain)) in chains.iter().enumerate() {
        if let Some((next_first, _)) = chains.get(i + 1) {
            let skip = u8::try_from(chain.len()).map_err(|_| SeccompError::Compile {
                reason: format!(
                    "a chain of {} instructions is too long to jump over",
                    chain.len()
                ),
            })?;
            program.push(jump(BPF_JMP_JGE_K, *next_first, skip, 0));
        }
        program.extend(chain.iter().map(|i| SockFilter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        }));
    }
    // BPF_MAXINSNS.
    if program.len() > 4096 {
        return Err(SeccompError::Compile {
            reason: format!("{} instructions, the kernel takes 4096", program.len()),
        });
    }
    Ok(Program::new(program))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// What the kernel does with a call.
    #[derive(Debug, PartialEq, Eq)]
    pub(crate) enum Verdict {
        Allow,
        Errno(i32),
        KillProcess,
    }

    /// A classic-BPF interpreter for the instructions seccomp programs use, to check
    /// the program's meaning without installing it.
    pub(crate) fn run(p: &Program, arch: u32, nr: u32, args: [u64; 6]) -> Verdict {
        let mut data = Vec::with_capacity(64);
        data.extend_from_slice(&nr.to_ne_bytes());
        data.extend_from_slice(&arch.to_ne_bytes());
        data.extend_from_slice(&0u64.to_ne_bytes());
        for a in args {
            data.extend_from_slice(&a.to_ne_bytes());
        }
        let ins = p.instructions();
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = ins[pc];
            pc += 1;
            match i.code {
                0x20 => {
                    let k = i.k as usize;
                    acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
                }
                0x54 => acc &= i.k,
                0x05 => pc += i.k as usize,
                0x15 | 0x25 | 0x35 | 0x45 => {
                    let hit = match i.code {
                        0x15 => acc == i.k,
                        0x25 => acc > i.k,
                        0x35 => acc >= i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += usize::from(if hit { i.jt } else { i.jf });
                }
                0x06 => {
                    return match i.k & libc::SECCOMP_RET_ACTION_FULL {
                        libc::SECCOMP_RET_ALLOW => Verdict::Allow,
                        libc::SECCOMP_RET_ERRNO => {
                            Verdict::Errno((i.k & libc::SECCOMP_RET_DATA) as i32)
                        }
                        libc::SECCOMP_RET_KILL_PROCESS => Verdict::KillProcess,
                        other => panic!("unexpected return {other:#x}"),
                    };
                }
                other => panic!("opcode {other:#x} at {} not interpreted", pc - 1),
            }
        }
    }

    fn native() -> u32 {
        NATIVE.unwrap().0
    }

    fn call(p: &Program, nr: libc::c_long, arg0: u64) -> Verdict {
        run(p, native(), nr as u32, [arg0, 0, 0, 0, 0, 0])
    }

    /// spec: QX-SBX-21 — the list holds what spec/security.md names, once each.
    #[test]
    fn deny_list_has_the_spec_entries_once() {
        let list = deny_list();
        let names: Vec<&str> = list.iter().map(|d| d.name).collect();
        for want in [
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "fanotify_init",
            "keyctl",
            "add_key",
            "request_key",
            "reboot",
            "swapon",
            "swapoff",
            "acct",
            "quotactl",
            "quotactl_fd",
            "sethostname",
            "setdomainname",
            "vhangup",
            "settimeofday",
            "clock_settime",
            "clock_adjtime",
            "adjtimex",
            "mount",
            "umount2",
            "pivot_root",
            "move_mount",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "open_tree",
            "open_tree_attr",
            "mount_setattr",
            "setns",
            "unshare",
            "clone",
            "open_by_handle_at",
            "name_to_handle_at",
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "syslog",
            "lookup_dcookie",
            "personality",
            "socket",
        ] {
            assert!(names.contains(&want), "{want} is not denied");
        }
        #[cfg(target_arch = "x86_64")]
        for want in ["iopl", "ioperm", "uselib", "ustat", "sysfs", "_sysctl"] {
            assert!(names.contains(&want), "{want} is not denied");
        }
        let mut nrs: Vec<i64> = list.iter().map(|d| d.nr).collect();
        nrs.sort_unstable();
        nrs.dedup();
        assert_eq!(nrs.len(), list.len(), "a system call is listed twice");
        // Decided in spec/security.md: these stay allowed.
        for allowed in ["ptrace", "process_vm_readv", "chroot", "clone3"] {
            assert!(!names.contains(&allowed), "{allowed} must not be EPERM");
        }
    }

    /// The program builds for the host and fits the kernel's limit.
    #[test]
    fn program_builds_for_the_host_arch() {
        let p = build().unwrap();
        assert!(p.instructions().len() > 60 && p.instructions().len() < 4096);
        assert_eq!(p.hex(), encode_hex(p.instructions()));
    }

    /// spec: QX-SBX-21 — every always-denied call gets EPERM whatever its arguments;
    /// ordinary calls pass.
    #[test]
    fn denied_calls_get_eperm_and_others_pass() {
        let p = build().unwrap();
        for d in deny_list().iter().filter(|d| d.when == Match::Always) {
            assert_eq!(call(&p, d.nr, 0), Verdict::Errno(libc::EPERM), "{}", d.name);
            assert_eq!(
                run(&p, native(), d.nr as u32, [u64::MAX; 6]),
                Verdict::Errno(libc::EPERM),
                "{}",
                d.name
            );
        }
        for nr in [
            libc::SYS_read,
            libc::SYS_write,
            libc::SYS_openat,
            libc::SYS_execve,
            libc::SYS_wait4,
            libc::SYS_pipe2,
            libc::SYS_ptrace,
            libc::SYS_chroot,
            libc::SYS_mmap,
            libc::SYS_exit_group,
        ] {
            assert_eq!(call(&p, nr, 0), Verdict::Allow, "syscall {nr}");
        }
    }

    /// Every system call number of the native ABI gets exactly what the deny list
    /// says (with arguments that match no argument rule): EPERM for the entries that
    /// are always denied, ENOSYS for clone3, allow for the rest — across every range
    /// check of the program.
    #[test]
    fn every_number_gets_the_deny_lists_verdict() {
        let p = build().unwrap();
        let list = deny_list();
        // Arguments no argument rule matches: personality(0), socket(AF_UNIX),
        // clone/unshare without namespace flags.
        let arg0 = |nr: libc::c_long| {
            if nr == libc::SYS_socket {
                libc::AF_UNIX as u64
            } else {
                0
            }
        };
        for nr in 0..600 as libc::c_long {
            let want = match list.iter().find(|d| d.nr == nr) {
                Some(d) if d.when == Match::Always => Verdict::Errno(libc::EPERM),
                _ if nr == libc::SYS_clone3 => Verdict::Errno(libc::ENOSYS),
                _ => Verdict::Allow,
            };
            assert_eq!(
                run(&p, native(), nr as u32, [arg0(nr), 0, 0, 0, 0, 0]),
                want,
                "system call {nr}"
            );
        }
    }

    /// spec: QX-SBX-22 — clone/unshare with a namespace flag: EPERM; without: allowed;
    /// clone3: ENOSYS; setns: EPERM.
    #[test]
    fn namespace_creation_is_refused_by_flag() {
        let p = build().unwrap();
        let fork_flags =
            (libc::CLONE_CHILD_SETTID | libc::CLONE_CHILD_CLEARTID) as u64 | libc::SIGCHLD as u64;
        let thread_flags = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(call(&p, libc::SYS_clone, fork_flags), Verdict::Allow);
        assert_eq!(call(&p, libc::SYS_clone, thread_flags), Verdict::Allow);
        // The exit signal byte may hold any signal number (0x80 is not NEWTIME here).
        assert_eq!(call(&p, libc::SYS_clone, 0xff), Verdict::Allow);
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
        ] {
            let f = flag as u64;
            assert_eq!(
                call(&p, libc::SYS_clone, fork_flags | f),
                Verdict::Errno(libc::EPERM),
                "clone {flag:#x}"
            );
            assert_eq!(
                call(&p, libc::SYS_unshare, f),
                Verdict::Errno(libc::EPERM),
                "unshare {flag:#x}"
            );
            // The upper half of the 64-bit register is ignored by the kernel, so it
            // cannot hide the flag either.
            assert_eq!(
                call(&p, libc::SYS_unshare, f | 0xffff_0000_0000_0000),
                Verdict::Errno(libc::EPERM)
            );
        }
        assert_eq!(
            call(&p, libc::SYS_unshare, u64::from(CLONE_NEWTIME)),
            Verdict::Errno(libc::EPERM)
        );
        assert_eq!(
            call(
                &p,
                libc::SYS_unshare,
                (libc::CLONE_FILES | libc::CLONE_FS) as u64
            ),
            Verdict::Allow
        );
        assert_eq!(call(&p, libc::SYS_setns, 0), Verdict::Errno(libc::EPERM));
        assert_eq!(call(&p, libc::SYS_clone3, 0), Verdict::Errno(libc::ENOSYS));
    }

    /// personality: the values Docker allows pass, others (ADDR_NO_RANDOMIZE,
    /// READ_IMPLIES_EXEC, MMAP_PAGE_ZERO) get EPERM. socket: AF_ALG and AF_VSOCK get
    /// EPERM, the usual families pass.
    #[test]
    fn argument_rules() {
        let p = build().unwrap();
        for v in ALLOWED_PERSONALITIES {
            assert_eq!(
                call(&p, libc::SYS_personality, u64::from(*v)),
                Verdict::Allow
            );
        }
        for v in [0x004_0000u64, 0x040_0000, 0x010_0000, 0x1] {
            assert_eq!(
                call(&p, libc::SYS_personality, v),
                Verdict::Errno(libc::EPERM),
                "personality {v:#x}"
            );
        }
        for af in [libc::AF_ALG, libc::AF_VSOCK] {
            assert_eq!(
                call(&p, libc::SYS_socket, af as u64),
                Verdict::Errno(libc::EPERM)
            );
        }
        for af in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
            libc::AF_PACKET,
        ] {
            assert_eq!(call(&p, libc::SYS_socket, af as u64), Verdict::Allow);
        }
    }

    /// spec: QX-SBX-23 — a foreign ABI (i386 or AArch32: another audit arch; x32 on
    /// x86-64) is killed, whatever the call.
    #[test]
    fn foreign_abis_are_killed() {
        let p = build().unwrap();
        const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
        const AUDIT_ARCH_ARM: u32 = 40 | 0x4000_0000;
        for arch in [AUDIT_ARCH_I386, AUDIT_ARCH_ARM] {
            assert_eq!(run(&p, arch, 0, [0; 6]), Verdict::KillProcess);
            assert_eq!(run(&p, arch, 3, [0; 6]), Verdict::KillProcess);
        }
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(
                run(&p, native(), X32_SYSCALL_BIT, [0; 6]),
                Verdict::KillProcess
            );
            assert_eq!(
                run(
                    &p,
                    native(),
                    X32_SYSCALL_BIT | libc::SYS_write as u32,
                    [0; 6]
                ),
                Verdict::KillProcess
            );
        }
    }
}
