//! The command line of one job: the target as given (the input on its stdin), or, when
//! an argument is exactly `@@`, the target behind a small `sh` wrapper that first writes
//! stdin to a file and puts that file's path where each `@@` was.
//!
//! The wrapper's script is a constant: the target and its arguments reach it as
//! positional parameters, never as script text, so any bytes in them (spaces, quotes,
//! `$`, newlines, non-UTF-8) pass through unchanged; an argument is replaced only when
//! it is exactly `@@`. The file is made by `mktemp` in the job's `/tmp` (a private
//! tmpfs discarded with the job on a worker that isolates jobs, qexecd's default). The
//! target then replaces the shell (`exec`), so its exit status or signal is the job's,
//! exactly as without the wrapper.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

/// The placeholder argument replaced by the input file's path.
pub(super) const INPUT_FILE_ARG: &[u8] = b"@@";

/// The shell that runs [`SCRIPT`] (absolute: the job's `PATH` is not ours to know).
pub(super) const SHELL: &[u8] = b"/bin/sh";

/// Name of the wrapper as `$0` (shown in the shell's own error messages).
const WRAPPER_NAME: &[u8] = b"qexec-farm";

/// Writes stdin to a new file (exit status 125 with a message on stderr when it cannot:
/// the target never ran), rebuilds the positional parameters with every `@@`
/// replaced by the file's path, and execs them. `for a in "$@"` expands the list once,
/// before the loop changes it; `case` compares without interpreting the argument (a
/// `test` could read `-n` or `(` as an operator).
pub(super) const SCRIPT: &str = r#"f=$(mktemp) && cat >"$f" || { echo "qexec-farm: cannot write the input to a file in ${TMPDIR:-/tmp}" >&2; exit 125; }
for a in "$@"; do
  shift
  case $a in
    @@) set -- "$@" "$f" ;;
    *) set -- "$@" "$a" ;;
  esac
done
exec "$@""#;

/// The argv of a job for `target` (the program and its arguments), and whether the
/// input goes through a file (`@@` mode).
pub(super) fn job_argv(target: &[OsString]) -> (Vec<Vec<u8>>, bool) {
    let target: Vec<Vec<u8>> = target.iter().map(|a| a.clone().into_vec()).collect();
    if !target.iter().any(|a| a == INPUT_FILE_ARG) {
        return (target, false);
    }
    let mut argv = vec![
        SHELL.to_vec(),
        b"-c".to_vec(),
        SCRIPT.as_bytes().to_vec(),
        WRAPPER_NAME.to_vec(),
    ];
    argv.extend(target);
    (argv, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::process::{Command, Stdio};

    fn os(args: &[&[u8]]) -> Vec<OsString> {
        args.iter()
            .map(|a| std::ffi::OsStr::from_bytes(a).to_owned())
            .collect()
    }

    #[test]
    fn stdin_mode_passes_the_target_unchanged() {
        let (argv, file) = job_argv(&os(&[b"./fuzz", b"-x", b"@@x", b"@"]));
        assert!(!file);
        assert_eq!(argv, [&b"./fuzz"[..], b"-x", b"@@x", b"@"]);
    }

    #[test]
    fn file_mode_wraps_with_a_constant_script() {
        let (argv, file) = job_argv(&os(&[b"./fuzz", b"@@"]));
        assert!(file);
        assert_eq!(argv[0], SHELL);
        assert_eq!(argv[1], b"-c");
        assert_eq!(argv[2], SCRIPT.as_bytes());
        assert_eq!(argv[3..], [&b"qexec-farm"[..], b"./fuzz", b"@@"]);
    }

    /// Runs the wrapper here, as a worker would (same /bin/sh), and returns what the
    /// probe printed: each argument it got, then the input file's bytes.
    fn run_wrapped(target_args: &[&[u8]], input: &[u8]) -> (Vec<u8>, i32) {
        use std::io::Write as _;
        // The probe: prints its arguments (one per line, `<…>` around each) and the
        // content of every argument that names a file under the temporary dir.
        let probe: &[u8] = br#"for a in "$@"; do printf '<%s>\n' "$a"; done; for a in "$@"; do case $a in "${TMPDIR:-/tmp}"/*) cat -- "$a" ;; esac; done"#;
        let mut target: Vec<&[u8]> = vec![b"/bin/sh", b"-c", probe, b"probe"];
        target.extend_from_slice(target_args);
        let (argv, file) = job_argv(&os(&target));
        assert!(file);
        let tmp = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::ffi::OsStr::from_bytes(&argv[0]))
            .args(argv[1..].iter().map(|a| std::ffi::OsStr::from_bytes(a)))
            .env("TMPDIR", tmp.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.stdout, out.status.code().unwrap_or(-1))
    }

    #[test]
    fn file_mode_replaces_exactly_the_at_at_arguments_and_keeps_any_bytes() {
        let input = b"a\0b\nc\xff\n\0";
        let odd: &[u8] = b"$(echo no) `x` \"q\" 'y' \\ *\n-n \xfe";
        let (out, code) = run_wrapped(&[b"@@", odd, b"@@x", b"-n", b"(", b"@@"], input);
        assert_eq!(code, 0);
        let text = out.clone();
        let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        // The first argument is the file.
        assert!(
            lines[0].starts_with(b"<") && lines[0].ends_with(b">"),
            "{out:?}"
        );
        let path = &lines[0][1..lines[0].len() - 1];
        let expected_args: Vec<u8> = [
            b"<".as_slice(),
            path,
            b">\n<",
            odd,
            b">\n<@@x>\n<-n>\n<(>\n<",
            path,
            b">\n",
        ]
        .concat();
        assert!(out.starts_with(&expected_args), "{out:?}");
        // The file holds the input, NUL and newline bytes included (printed twice: the
        // probe `cat`s each file argument).
        assert_eq!(
            &out[expected_args.len()..],
            [&input[..], &input[..]].concat()
        );
    }

    #[test]
    fn the_target_status_is_the_jobs() {
        // `exec`: no shell left to change the status.
        let (argv, _) = job_argv(&os(&[b"/bin/sh", b"-c", b"exit 7", b"@@"]));
        let status = Command::new("/bin/sh")
            .args(argv[1..].iter().map(|a| std::ffi::OsStr::from_bytes(a)))
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(7));
        let (argv, _) = job_argv(&os(&[b"/bin/sh", b"-c", b"kill -SEGV $$", b"@@"]));
        let status = Command::new("/bin/sh")
            .args(argv[1..].iter().map(|a| std::ffi::OsStr::from_bytes(a)))
            .stdin(Stdio::null())
            .status()
            .unwrap();
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(status.signal(), Some(11));
    }
}
