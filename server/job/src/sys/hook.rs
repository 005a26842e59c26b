//! Entry point of the re-executed init: a `.init_array` constructor.
//!
//! An isolated job's init is the server binary itself, re-executed (through
//! `/proc/self/exe`) with [`INIT_MODE_MAGIC`] as `argv[1]`. glibc calls `.init_array`
//! functions with `(argc, argv, envp)` before `main`, so this hook takes over such a
//! process before the Rust runtime starts, in every binary that links this crate (the
//! server, its tests and benchmarks) without any code in their `main`. For any other
//! command line it returns at once.

use std::ffi::{CStr, c_char, c_int};

/// `argv[1]` of a re-executed init.
pub(crate) const INIT_MODE_MAGIC: &CStr = c"\x01qexec-init-v1";
/// `argv[1]` of the isolation probe's target: prints [`PROBE_MODE_OUTPUT`], exits 0.
pub(crate) const PROBE_MODE_MAGIC: &CStr = c"\x01qexec-probe-v1";

/// What the probe-mode process writes to its stdout before exiting 0.
pub(crate) const PROBE_MODE_OUTPUT: &[u8] = b"qexec-probe-ok\n";

/// Registered in `.init_array`; kept by `#[used]`. Only glibc passes `(argc, argv,
/// envp)` to these functions; elsewhere there is no hook and the isolation probe fails.
#[cfg(target_env = "gnu")]
#[used]
#[unsafe(link_section = ".init_array")]
static INIT_MODE_HOOK: extern "C" fn(c_int, *const *const c_char, *const *const c_char) =
    init_mode_hook;

#[cfg(target_env = "gnu")]
#[allow(
    unreachable_code,
    reason = "reexec_main returns Infallible: the hook never returns in init mode"
)]
extern "C" fn init_mode_hook(argc: c_int, argv: *const *const c_char, envp: *const *const c_char) {
    if argc < 2 || argv.is_null() {
        return;
    }
    // SAFETY: glibc passes the process's argc/argv/envp to .init_array functions: argv
    // holds `argc` valid C strings followed by NULL.
    let second = unsafe { *argv.add(1) };
    if second.is_null() {
        return;
    }
    // SAFETY: a valid C string of argv (see above).
    let second = unsafe { CStr::from_ptr(second) };
    if second == PROBE_MODE_MAGIC {
        let _ = super::write_all(1, PROBE_MODE_OUTPUT);
        super::exit_now(0);
    }
    if second != INIT_MODE_MAGIC {
        return;
    }
    let args: Vec<&'static CStr> = (0..argc as usize)
        // SAFETY: indices below argc are valid C strings (see above); the strings live
        // for the whole process.
        .map(|i| unsafe { CStr::from_ptr(*argv.add(i)) })
        .collect();
    let mut env: Vec<&'static CStr> = Vec::new();
    if !envp.is_null() {
        let mut p = envp;
        // SAFETY: envp is a NULL-terminated array of valid C strings living for the
        // whole process.
        unsafe {
            while !(*p).is_null() {
                env.push(CStr::from_ptr(*p));
                p = p.add(1);
            }
        }
    }
    // Never returns: the init exits when the job ends.
    super::init::reexec_main(&args, &env);
}

/// References the hook, so that every binary that can start an isolated job links the
/// object file holding it (the isolation probe, `crate::probe`, checks it works).
pub(crate) fn keep_hook_linked() {
    #[cfg(target_env = "gnu")]
    std::hint::black_box(&INIT_MODE_HOOK);
}
