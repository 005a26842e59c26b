//! `qexec run -t` for real: the `qexec` binary on a pseudo-terminal this test
//! allocates (rustix's pty API), against an in-process qexecd over QUIC + mTLS
//! (spec: QX-TERM-1 to QX-TERM-8).

mod common;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::{PipeReader, TestServer, WAIT};
use rustix::pty::{OpenptFlags, grantpt, ioctl_tiocgptpeer, openpt, unlockpt};
use rustix::termios::{LocalModes, Winsize, tcgetattr, tcsetwinsize};

/// A pseudo-terminal standing in for the user's terminal.
struct Terminal {
    /// Our side: what the user types goes in, what qexec prints comes out.
    keys: File,
    /// The terminal qexec runs on (our copy, to inspect its settings).
    slave: OwnedFd,
    /// What qexec printed so far.
    screen: PipeReader,
}

impl Terminal {
    fn new(rows: u16, cols: u16) -> Self {
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY;
        let master = openpt(flags).expect("open a pty");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let slave = ioctl_tiocgptpeer(&master, flags).expect("open the pty's slave");
        let t = Self {
            keys: File::from(master.try_clone().expect("dup master")),
            slave,
            screen: PipeReader::new(File::from(master)),
        };
        t.resize(rows, cols);
        t
    }

    fn resize(&self, rows: u16, cols: u16) {
        let ws = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        tcsetwinsize(self.slave.as_fd(), ws).expect("set the pty's size");
    }

    fn stdio(&self) -> Stdio {
        Stdio::from(self.slave.try_clone().expect("dup slave"))
    }

    /// Starts `qexec ARGS` with this terminal as its stdin, stdout and stderr.
    fn qexec(&self, s: &TestServer, args: &[&str]) -> Child {
        let mut cmd = s.qexec();
        cmd.args(args)
            .env("TERM", "xterm")
            .stdin(self.stdio())
            .stdout(self.stdio())
            .stderr(self.stdio());
        cmd.spawn().expect("spawn qexec")
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.keys.write_all(keys).expect("type");
    }

    fn wait_for(&mut self, needle: &str) {
        self.screen.wait_for(needle, WAIT);
    }

    /// Canonical mode and echo: the settings of a terminal that is not in raw mode.
    fn cooked(&self) -> bool {
        let t = tcgetattr(self.slave.as_fd()).expect("tcgetattr");
        t.local_modes
            .contains(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG)
    }
}

/// Waits (bounded) for qexec to exit; its exit code.
fn exit_code(child: Child) -> i32 {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut child = child;
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(WAIT) {
        Ok(status) => status.expect("wait").code().expect("exited normally"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("qexec (pid {pid}) did not finish within {WAIT:?}");
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(ok.success(), "kill -{sig} failed");
}

#[test]
fn the_job_sees_a_terminal_of_our_size_and_term_and_its_code_is_ours() {
    // spec: QX-TERM-5, QX-TERM-6; exit codes as `qexec run`
    let s = TestServer::start();
    let mut t = Terminal::new(31, 101);
    let script = "for fd in 0 1 2; do test -t $fd && printf 'tty%s ' $fd; done; echo; \
                  stty size; tput cols; echo TERM=$TERM; exit 5";
    let child = t.qexec(&s, &["run", "-it", "--", "sh", "-c", script]);
    assert_eq!(exit_code(child), 5);
    for line in [
        "tty0 tty1 tty2 \r\n",
        "31 101\r\n",
        "101\r\n",
        "TERM=xterm\r\n",
    ] {
        t.wait_for(line);
    }
    assert!(t.cooked(), "the terminal is restored after the job ended");
}

#[test]
fn a_resize_reaches_the_program_as_sigwinch() {
    // spec: QX-TERM-2, QX-TERM-7
    let s = TestServer::start();
    let mut t = Terminal::new(24, 80);
    let script = "trap 'stty size; kill $! 2>/dev/null; exit 0' WINCH; echo ready; \
                  sleep 1000 & wait";
    let child = t.qexec(&s, &["run", "-t", "--", "sh", "-c", script]);
    t.wait_for("ready\r\n");
    t.resize(40, 132);
    // The kernel would signal qexec if this were its controlling terminal; the test's
    // terminal is not, so the signal is sent by hand.
    signal(&child, "WINCH");
    t.wait_for("40 132\r\n");
    assert_eq!(exit_code(child), 0);
}

#[test]
fn ctrl_c_goes_to_the_remote_program() {
    // spec: QX-TERM-5 — ^C is a byte; the remote terminal makes it SIGINT.
    let s = TestServer::start();
    let mut t = Terminal::new(24, 80);
    let child = t.qexec(
        &s,
        &[
            "run",
            "-it",
            "--",
            "sh",
            "-c",
            "echo ready; exec sleep 1000",
        ],
    );
    t.wait_for("ready\r\n");
    t.type_keys(&[0x03]);
    assert_eq!(exit_code(child), 128 + 2);
    assert!(t.cooked());
}

#[test]
fn python_round_trip() {
    // An interactive interpreter: prompt, expression, result, exit.
    let s = TestServer::start();
    let mut t = Terminal::new(24, 80);
    let have_python = std::path::Path::new("/usr/bin/python3").exists();
    let argv: &[&str] = if have_python {
        &["run", "-it", "--", "/usr/bin/python3", "-i", "-q"]
    } else {
        &["run", "-it", "--", "sh", "-i"]
    };
    let (prompt, expr, result, exit) = if have_python {
        (">>> ", "6 * 7\r", "42\r\n", "exit()\r")
    } else {
        ("# ", "echo $((6 * 7))\r", "42\r\n", "exit\r")
    };
    let child = t.qexec(&s, argv);
    t.wait_for(prompt);
    t.type_keys(expr.as_bytes());
    t.wait_for(result);
    t.type_keys(exit.as_bytes());
    assert_eq!(exit_code(child), 0);
}

#[test]
fn raw_mode_is_restored_when_qexec_is_killed_by_sigterm() {
    // The terminal must not stay raw whatever ends qexec (short of SIGKILL).
    let s = TestServer::start();
    let mut t = Terminal::new(24, 80);
    assert!(t.cooked(), "a fresh pty is cooked");
    let child = t.qexec(
        &s,
        &[
            "run",
            "-it",
            "--",
            "sh",
            "-c",
            "echo ready; exec sleep 1000",
        ],
    );
    t.wait_for("ready\r\n");
    assert!(!t.cooked(), "qexec put the terminal in raw mode");
    signal(&child, "TERM");
    assert_eq!(exit_code(child), 128 + 15);
    assert!(t.cooked(), "raw mode restored after SIGTERM");
}

#[test]
fn tilde_dot_after_enter_disconnects() {
    // As ssh: `~.` at the start of a line ends the session (the job is stopped).
    let s = TestServer::start();
    let mut t = Terminal::new(24, 80);
    let child = t.qexec(&s, &["run", "-it", "--", "cat"]);
    t.type_keys(b"abc\r");
    t.wait_for("abc\r\nabc\r\n");
    t.type_keys(b"~.");
    assert_eq!(exit_code(child), 255);
    t.wait_for("disconnected from job");
    assert!(t.cooked());
}

#[test]
fn dash_t_without_a_terminal_is_refused() {
    let s = TestServer::start();
    let out = s.run(&["run", "-t", "--", "true"]);
    assert_eq!(out.status.code(), Some(255));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("qexec: -t needs a terminal on standard input") && err.lines().count() == 1,
        "{err}"
    );
}

/// The end of output of a quick job arrives before qexec exits (no byte lost).
#[test]
fn output_of_a_short_job_is_complete() {
    let s = TestServer::start();
    let mut t = Terminal::new(24, 80);
    let child = t.qexec(&s, &["run", "-t", "--", "seq", "1", "3000"]);
    assert_eq!(exit_code(child), 0);
    t.wait_for("2999\r\n3000\r\n");
}
