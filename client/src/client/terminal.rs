//! Terminal jobs, client side (spec: QX-TERM-1 to QX-TERM-3, QX-TERM-9): the
//! `StartTerminal` request, and the writer that sends keystrokes and window sizes on
//! the job's control stream.

use quinn::{RecvStream, SendStream};

use qexec_protocol::{
    ClientMessage, ErrorCode, JobId, ServerMessage, StartRequest, StartTerminalRequest,
    TerminalSpec, WindowSize,
};

use super::Client;
use crate::context::Context;
use crate::error::ClientError;
use crate::output::OutputSubscription;
use crate::stdin::MAX_STDIN_CHUNK;
use crate::stream::write_frame;

/// QUIC send priority of a terminal's control stream: keystrokes go out before the
/// bytes of any other stream of the connection that is waiting to be sent (bulk
/// standard input of another job), so typing stays responsive whatever else the
/// connection carries.
const KEYSTROKE_PRIORITY: i32 = 100;

/// A job started on a terminal.
#[derive(Debug)]
pub struct TerminalJob {
    /// The job's id.
    pub job: JobId,
    /// Host pid of its first process.
    pub pid: u32,
    /// Keystrokes and window sizes.
    pub input: TerminalWriter,
    /// The terminal's output from offset 0 (as `Stdout` data), then the job's end.
    pub output: OutputSubscription,
    /// Kept open while the job runs, as for [`super::StartedJob`].
    _control: RecvStream,
}

/// Sends a terminal job's keystrokes (`StdinData`) and window sizes (`Resize`).
#[derive(Debug)]
pub struct TerminalWriter {
    send: SendStream,
    ctx: Context,
}

impl TerminalWriter {
    /// Sends keystrokes, unchanged: `^C`, `^Z`, `^\` and `^D` are bytes the job's
    /// terminal interprets.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), ClientError> {
        for chunk in data.chunks(MAX_STDIN_CHUNK) {
            write_frame(&mut self.send, &ClientMessage::StdinData(chunk.to_vec()))
                .await
                .map_err(|e| self.ctx.write_error(e))?;
        }
        Ok(())
    }

    /// Sends the terminal's new size; rows and columns are clamped to the protocol's
    /// range (spec: QX-TERM-2, QX-TERM-4).
    pub async fn resize(&mut self, size: WindowSize) -> Result<(), ClientError> {
        write_frame(&mut self.send, &ClientMessage::Resize(clamp(size)))
            .await
            .map_err(|e| self.ctx.write_error(e))
    }

    /// Ends the input (`StdinEof`, then the end of the stream). The job's terminal
    /// stays open.
    pub async fn finish(mut self) -> Result<(), ClientError> {
        write_frame(&mut self.send, &ClientMessage::StdinEof)
            .await
            .map_err(|e| self.ctx.write_error(e))?;
        let _ = self.send.finish();
        Ok(())
    }
}

/// Rows and columns within `1..=MAX_TERMINAL_CELLS` (a terminal reporting 0x0, e.g.
/// a serial console, gets the smallest valid size).
pub fn clamp(size: WindowSize) -> WindowSize {
    let max = qexec_protocol::limits::MAX_TERMINAL_CELLS;
    WindowSize {
        rows: size.rows.clamp(1, max),
        cols: size.cols.clamp(1, max),
        ..size
    }
}

impl Client {
    /// Starts a job on a terminal and follows it, `stop_on_detach`: what `qexec run
    /// -t` does (spec: QX-TERM-1). The job's stdin, stdout and stderr are the
    /// terminal; `TERM` is `terminal.term`; [`TerminalJob::output`] carries what the
    /// terminal shows. A server that does not know terminal jobs answers
    /// `Unsupported` (spec: QX-VER-3), reported as such with what to do.
    pub async fn run_terminal(
        &self,
        mut req: StartRequest,
        terminal: TerminalSpec,
    ) -> Result<TerminalJob, ClientError> {
        req.follow = true;
        req.stop_on_detach = true;
        req.stdin = true;
        let terminal = TerminalSpec {
            size: clamp(terminal.size),
            ..terminal
        };
        let mut control = self.open().await?;
        let _ = control.send().set_priority(KEYSTROKE_PRIORITY);
        let route = self.expect_output(control.send());
        let msg = ClientMessage::StartTerminal(StartTerminalRequest {
            start: req,
            terminal,
        });
        write_frame(control.send(), &msg)
            .await
            .map_err(|e| self.ctx.write_error(e))?;
        let answer = self
            .answer(control.reader(), "start", self.request_timeout)
            .await
            .map_err(unsupported)?;
        let (job, pid) = match answer {
            ServerMessage::Started(s) => (s.job, s.pid),
            ServerMessage::Error(e) => return Err(unsupported(self.ctx.server_error(e, None))),
            other => return Err(self.ctx.unexpected("start", &other)),
        };
        let (_guard, rx) = route;
        let output = self.output(rx, "start").await?;
        let (send, reader) = control.complete();
        let (control, _) = reader.into_parts();
        Ok(TerminalJob {
            job,
            pid,
            input: TerminalWriter {
                send,
                ctx: self.ctx.clone(),
            },
            output,
            _control: control,
        })
    }
}

/// spec: QX-TERM-9 — an older server abandons the unknown request with
/// `Unsupported`; say what it means.
fn unsupported(e: ClientError) -> ClientError {
    match e {
        ClientError::Server {
            code: ErrorCode::Unsupported,
            ..
        } => ClientError::Server {
            code: ErrorCode::Unsupported,
            message: "this qexecd does not support terminal jobs (qexec run -t); upgrade the \
                      server, or run without -t"
                .into(),
        },
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_says_the_server_cannot_run_terminal_jobs() {
        // spec: QX-TERM-9 — what an older server's reset of the stream becomes.
        let reset = ClientError::Server {
            code: ErrorCode::Unsupported,
            message: "the server reset the stream".into(),
        };
        let e = unsupported(reset);
        assert!(matches!(
            e,
            ClientError::Server {
                code: ErrorCode::Unsupported,
                ..
            }
        ));
        assert!(
            e.to_string().contains("does not support terminal jobs"),
            "{e}"
        );
        // Other failures pass through unchanged.
        let other = ClientError::Server {
            code: ErrorCode::PermissionDenied,
            message: "no".into(),
        };
        assert_eq!(
            unsupported(other).to_string(),
            "the server refused the request (permission_denied): no"
        );
    }

    #[test]
    fn window_sizes_are_clamped_to_the_protocol_range() {
        let max = qexec_protocol::limits::MAX_TERMINAL_CELLS;
        let s = |rows, cols| WindowSize {
            rows,
            cols,
            width_px: 7,
            height_px: 9,
        };
        assert_eq!(clamp(s(0, 0)), s(1, 1));
        assert_eq!(clamp(s(24, 80)), s(24, 80));
        assert_eq!(clamp(s(u16::MAX, max)), s(max, max));
        assert_eq!(clamp(s(max + 1, 1)), s(max, 1));
    }
}
