//! `qexec run -t`: the job on a remote terminal, this terminal in raw mode
//! (spec: QX-TERM-1 to QX-TERM-3, QX-TERM-9).
//!
//! - **Raw mode** (`cfmakeraw`, on standard input) for the whole session; a guard
//!   restores the saved settings on every way out: the job's end, an error, `~.`,
//!   SIGTERM/SIGINT/SIGHUP/SIGQUIT sent to qexec (caught, so the guard runs), and a
//!   panic (unwinding drops the guard). Only SIGKILL leaves the terminal raw (`reset`
//!   repairs it), as with ssh.
//! - **Keystrokes** go to the remote terminal as bytes, unchanged: `^C`, `^Z`, `^\`
//!   and `^D` are the remote terminal's to interpret (SIGINT, SIGTSTP, SIGQUIT, EOF
//!   to its foreground program), since raw mode turns off local signal generation.
//! - **`~.`** typed at the start of a line (after Enter, or first thing) disconnects,
//!   as in ssh; the job, started `stop_on_detach`, is stopped by the server. `~~`
//!   sends one `~`. Any other `~x` is sent as typed.
//! - **SIGWINCH** sends the new size (`Resize`); the remote foreground program gets
//!   its own SIGWINCH.
//! - **Exit status**: as `qexec run` (the job's code, 128+signal, 127/126/255); 255
//!   after `~.`; 128+N when qexec itself got signal N.
//!
//! Keystrokes are read on a plain thread (a blocking read of a terminal cannot be
//! cancelled); output is written to stdout as it comes, one flush per chunk.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;

use rustix::termios::{OptionalActions, Termios, tcgetattr, tcgetwinsize, tcsetattr};
use tokio::signal::unix::{Signal, SignalKind, signal};

use qexec_client::{ClientError, OutputEvent, TerminalWriter};
use qexec_protocol::{JobStatus, TerminalSpec, WindowSize};

use super::limits::LimitArgs;
use super::run::{end_note, exit_status};
use super::{CliError, ConnArgs, EXIT_QEXEC_ERROR, report, spawn_exit};

/// `TERM` sent when ours is unset or not a valid terminal name (spec: QX-TERM-4).
const FALLBACK_TERM: &str = "xterm";

/// The escape character (as ssh's default).
const ESCAPE: u8 = b'~';

/// The terminal settings to put back, restored when dropped.
#[derive(Debug)]
struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Saves standard input's terminal settings and switches it to raw mode.
    fn enter() -> std::io::Result<Self> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw)?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // Nothing better to do if the terminal is gone.
        let _ = tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, &self.saved);
    }
}

/// Recognises `~.` at the start of a line in the keystroke stream (ssh's escape).
#[derive(Debug)]
struct Escape {
    /// The last byte sent ended a line (or nothing was sent yet).
    line_start: bool,
    /// A `~` at the start of a line is held back until the next byte.
    held: bool,
}

impl Escape {
    fn new() -> Self {
        Self {
            line_start: true,
            held: false,
        }
    }

    /// Appends the bytes to send for `input` to `out`; true when `~.` was typed (the
    /// bytes before it are in `out`, nothing after it).
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> bool {
        for &b in input {
            if self.held {
                self.held = false;
                match b {
                    b'.' => return true,
                    ESCAPE => {
                        out.push(ESCAPE);
                        self.line_start = false;
                        continue;
                    }
                    _ => out.push(ESCAPE),
                }
            } else if self.line_start && b == ESCAPE {
                self.held = true;
                continue;
            }
            out.push(b);
            self.line_start = matches!(b, b'\r' | b'\n');
        }
        false
    }
}

/// Our terminal's size, or 80x24 when it cannot be read.
fn local_size() -> WindowSize {
    match tcgetwinsize(std::io::stdin().as_fd()) {
        Ok(ws) => WindowSize {
            rows: ws.ws_row,
            cols: ws.ws_col,
            width_px: ws.ws_xpixel,
            height_px: ws.ws_ypixel,
        },
        Err(_) => WindowSize {
            rows: 24,
            cols: 80,
            width_px: 0,
            height_px: 0,
        },
    }
}

/// `$TERM` when it is a valid terminal name, else [`FALLBACK_TERM`].
fn local_term() -> String {
    let valid = |t: &str| {
        !t.is_empty()
            && t.len() <= qexec_protocol::limits::MAX_TERM_NAME
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
    };
    match std::env::var("TERM") {
        Ok(t) if valid(&t) => t,
        _ => FALLBACK_TERM.to_owned(),
    }
}

/// Keystrokes from a plain thread (raw mode: each read returns what was typed).
fn keystrokes() -> Result<tokio::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>, CliError> {
    super::run::stdin_reader("qexec-keys", 4096, 64)
}

/// How a session ended.
enum End {
    /// The job ended.
    Job(Box<JobStatus>),
    /// `~.`, or our terminal went away.
    Detached,
    /// qexec got this signal.
    Signal(i32),
}

fn listen(kind: SignalKind) -> Result<Signal, CliError> {
    signal(kind).map_err(|source| CliError::Runtime { source })
}

fn write_stdout(data: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(data)
        .and_then(|()| out.flush())
        .map_err(|source| CliError::Output {
            what: "stdout",
            source,
        })
}

/// `qexec run -t`. spec: QX-TERM-1
pub(super) async fn run(
    conn: &ConnArgs,
    json: bool,
    limits: &LimitArgs,
    command: &[OsString],
) -> Result<u8, CliError> {
    if json {
        return Err(CliError::Usage {
            reason: "--json cannot be combined with -t: a terminal's output is not JSON events"
                .into(),
        });
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage {
            reason: "-t needs a terminal on standard input, and stdin is not one; drop -t \
                     (with -i to forward piped input)"
                .into(),
        });
    }
    let req = limits.request(command, true)?;
    // Caught from the start, so none of them can kill us with the terminal raw.
    let mut winch = listen(SignalKind::window_change())?;
    let mut term = listen(SignalKind::terminate())?;
    let mut hup = listen(SignalKind::hangup())?;
    let mut int = listen(SignalKind::interrupt())?;
    let mut quit = listen(SignalKind::quit())?;
    let client = conn.connect().await?;
    let spec = TerminalSpec {
        term: local_term(),
        size: local_size(),
    };
    let session = match client.run_terminal(req, spec).await {
        Ok(s) => s,
        Err(e @ ClientError::Spawn { failure, .. }) => {
            report(&e);
            super::finish(&client).await;
            return Ok(spawn_exit(failure));
        }
        Err(e) => return Err(limits.explain(e)),
    };
    let job = session.job;
    let mut input: TerminalWriter = session.input;
    let mut output = session.output;
    let mut keys = keystrokes()?;
    let raw = RawMode::enter().map_err(|source| CliError::Stdin { source })?;
    let mut escape = Escape::new();
    let mut send = Vec::new();
    let ended: Result<End, CliError> = loop {
        tokio::select! {
            event = output.next() => match event {
                Ok(Some(OutputEvent::Data { data, .. })) => {
                    if let Err(e) = write_stdout(&data) {
                        break Err(e);
                    }
                }
                Ok(Some(OutputEvent::End(status))) => break Ok(End::Job(status)),
                Ok(None) => break Err(CliError::Client(ClientError::Protocol {
                    addr: client.addr().to_owned(),
                    reason: format!("job {job}: output ended without a final status"),
                })),
                Err(e) => break Err(e.into()),
            },
            chunk = keys.recv() => match chunk {
                Some(Ok(bytes)) if !bytes.is_empty() => {
                    send.clear();
                    let detach = escape.feed(&bytes, &mut send);
                    if !send.is_empty()
                        && let Err(e) = input.write(&send).await
                    {
                        break Err(e.into());
                    }
                    if detach {
                        break Ok(End::Detached);
                    }
                }
                // Our terminal is gone (EOF or a read error): nobody can type.
                _ => break Ok(End::Detached),
            },
            _ = winch.recv() => {
                if let Err(e) = input.resize(local_size()).await {
                    break Err(e.into());
                }
            }
            _ = term.recv() => break Ok(End::Signal(15)),
            _ = hup.recv() => break Ok(End::Signal(1)),
            _ = int.recv() => break Ok(End::Signal(2)),
            _ = quit.recv() => break Ok(End::Signal(3)),
        }
    };
    // The terminal is ours again before anything is printed.
    drop(raw);
    drop(output);
    let result = match ended {
        Ok(End::Job(status)) => {
            if let Some(note) = end_note(&status, false) {
                report(&note);
            }
            Ok(exit_status(&status))
        }
        Ok(End::Detached) => {
            report(&format!(
                "disconnected from job {job}; the server stops it (see `qexec status {job}`)"
            ));
            Ok(EXIT_QEXEC_ERROR)
        }
        Ok(End::Signal(sig)) => {
            report(&format!(
                "terminated by signal {sig}; the server stops job {job}"
            ));
            Ok(128 + sig as u8)
        }
        Err(e) => Err(e),
    };
    super::finish(&client).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(e: &mut Escape, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        let detach = e.feed(input, &mut out);
        (out, detach)
    }

    #[test]
    fn tilde_dot_at_line_start_detaches() {
        assert_eq!(feed(&mut Escape::new(), b"~."), (vec![], true));
        assert_eq!(
            feed(&mut Escape::new(), b"ls\r~."),
            (b"ls\r".to_vec(), true)
        );
        assert_eq!(
            feed(&mut Escape::new(), b"ls\n~.x"),
            (b"ls\n".to_vec(), true)
        );
        // Split across reads.
        let mut e = Escape::new();
        assert_eq!(feed(&mut e, b"a\r~"), (b"a\r".to_vec(), false));
        assert_eq!(feed(&mut e, b"."), (vec![], true));
    }

    #[test]
    fn tilde_elsewhere_is_sent() {
        assert_eq!(feed(&mut Escape::new(), b"a~."), (b"a~.".to_vec(), false));
        assert_eq!(feed(&mut Escape::new(), b"~~."), (b"~.".to_vec(), false));
        assert_eq!(feed(&mut Escape::new(), b"~x"), (b"~x".to_vec(), false));
        assert_eq!(
            feed(&mut Escape::new(), b"\x03~."),
            (b"\x03~.".to_vec(), false)
        );
        // After `~x` the line is no longer at its start.
        let mut e = Escape::new();
        assert_eq!(feed(&mut e, b"~x~."), (b"~x~.".to_vec(), false));
        assert_eq!(feed(&mut e, b"\r~~"), (b"\r~".to_vec(), false));
    }
}
