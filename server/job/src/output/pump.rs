//! The output pump: one plain thread per job that moves its stdout and stderr pipes
//! into its output log, off the async runtime.
//!
//! A write into the page cache may sleep for milliseconds: the kernel throttles a
//! writer while much of memory is dirty (`balance_dirty_pages`), and a 1 MiB splice
//! yields to other runnable threads at each `cond_resched`, which on a busy machine
//! lasts a scheduler slice. On a tokio worker such a sleep stalls every task queued
//! behind it (another job's frames, a terminal's keystrokes): profiled in
//! bench/README.md ("Output-path stalls"). Here only this job's own pump waits.
//!
//! The thread waits in `poll(2)` on the two pipes and a control pipe, splices what
//! arrives into the log (or reads and appends where the file system cannot splice,
//! and reads and discards past the cap), and publishes each record through the
//! log's watch channel, which wakes the followers on the runtime. It tells the
//! supervisor once when the cap is reached, and hands the [`LogWriter`] back when
//! both pipes are closed, so the supervisor ends the log after the job's status is
//! final. Closing the control pipe asks for the end: a last bounded drain of what
//! the pipes hold, then both are closed (the supervisor's drain deadline, or its
//! drop).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use qexec_protocol::{JobId, OutputStream};
use tokio::sync::mpsc;

use super::{Appended, HEADER_LEN, LogWriter, SpliceError};

/// Size asked for each output pipe (the unprivileged maximum by default).
const PIPE_SIZE: i32 = 1 << 20;
/// Largest record moved by one splice (the pipe holds at most its size).
const SPLICE_MAX: usize = PIPE_SIZE as usize;
/// Most bytes taken from one pipe per wake-up before the other is looked at.
const BURST_MAX: usize = 4 * SPLICE_MAX;
/// Read buffer of the copy path, here and for a terminal's output (the header space
/// comes in front of it).
pub(crate) const READ_BUF: usize = 128 << 10;
/// Reads per pipe (or terminal) in the final drain, so a writer that never stops
/// cannot keep a job alive.
pub(crate) const FINAL_DRAIN_READS: usize = 64;
/// Whether pumps start the writeback behind their writes: on unless qexecd runs with
/// `QEXEC_LOG_WRITEBACK=0` (for measurements); read once, not at every job start.
static WRITE_BACK: std::sync::LazyLock<bool> =
    std::sync::LazyLock::new(|| std::env::var_os("QEXEC_LOG_WRITEBACK").is_none_or(|v| v != "0"));
/// Stack of the pump thread: it keeps its buffers on the heap.
const STACK_SIZE: usize = 128 << 10;

/// What the pump tells the supervisor.
#[derive(Debug)]
pub(crate) enum PumpEvent {
    /// The output cap was reached: output is being discarded (spec: QX-LIMIT-20).
    CapReached,
    /// Both pipes are closed; the writer comes back so the supervisor ends the log.
    Done(LogWriter),
}

/// The supervisor's side of a running pump.
#[derive(Debug)]
pub(crate) struct Pump {
    /// Write end of the control pipe; dropping it asks the pump to end.
    control: Option<OwnedFd>,
    events: mpsc::UnboundedReceiver<PumpEvent>,
}

impl Pump {
    /// Starts the pump thread of job `id` on its `stdout` and `stderr` pipes
    /// (enlarged and made non-blocking here).
    pub(crate) fn start(
        id: JobId,
        log: LogWriter,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> io::Result<Self> {
        for fd in [&stdout, &stderr] {
            prepare_pipe(fd.as_fd())?;
        }
        let (control_rx, control_tx) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let thread = PumpThread {
            id,
            log,
            pipes: [Some(stdout), Some(stderr)],
            control: control_rx,
            events: events_tx,
            buf: Vec::new(),
            splice: true,
            cap_reported: false,
            write_back: *WRITE_BACK,
        };
        std::thread::Builder::new()
            .name("qexec-output".into())
            .stack_size(STACK_SIZE)
            .spawn(move || thread.run())?;
        Ok(Self {
            control: Some(control_tx),
            events,
        })
    }

    /// Asks the pump to take what the pipes hold now and end (idempotent).
    pub(crate) fn end(&mut self) {
        self.control = None;
    }

    /// The next event; `None` once the pump has ended (after [`PumpEvent::Done`],
    /// or without it if the thread died, in which case the log ended with it).
    pub(crate) async fn next(&mut self) -> Option<PumpEvent> {
        self.events.recv().await
    }
}

/// Enlarges an output pipe to [`PIPE_SIZE`] when possible and makes it non-blocking.
fn prepare_pipe(fd: BorrowedFd<'_>) -> io::Result<()> {
    // A bigger pipe means fewer wake-ups and a writer that blocks less often.
    if let Err(e) = fcntl(fd, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
        tracing::debug!(error = %e, "cannot enlarge an output pipe; keeping its size");
    }
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Result of one read on an output pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pumped {
    /// Bytes were taken from the pipe; this many reached the log or were discarded
    /// past the cap.
    Data(usize),
    /// The pipe is closed (end of file, or an error reading it).
    Eof,
    /// Nothing to read now.
    WouldBlock,
}

/// The pump thread's state.
struct PumpThread {
    id: JobId,
    log: LogWriter,
    /// stdout, stderr; `None` once closed.
    pipes: [Option<OwnedFd>; 2],
    /// Read end of the control pipe: readable (hung up) when the end is asked.
    control: OwnedFd,
    events: mpsc::UnboundedSender<PumpEvent>,
    /// Read buffer of the copy path, allocated on first use.
    buf: Vec<u8>,
    /// Output is spliced into the log (until the file system says it cannot).
    splice: bool,
    cap_reported: bool,
    /// Start the writeback of the log behind the writer (`QEXEC_LOG_WRITEBACK=0`
    /// turns it off, for measurements).
    write_back: bool,
}

const STREAMS: [OutputStream; 2] = [OutputStream::Stdout, OutputStream::Stderr];

impl PumpThread {
    fn run(mut self) {
        while self.pipes.iter().any(Option::is_some) {
            let (ready, end) = match self.wait() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(job = %self.id, error = %e, "waiting on the job's output pipes failed; closing them");
                    ([false; 2], true)
                }
            };
            if end {
                self.final_drain();
                break;
            }
            for (i, ready) in ready.into_iter().enumerate() {
                if ready {
                    self.burst(i);
                }
            }
        }
        // The supervisor ends the log (after the job's status is final); if it is
        // gone, dropping the writer here ends it.
        let _ = self.events.send(PumpEvent::Done(self.log));
    }

    /// Waits until a pipe is readable or closed, or the control pipe says to end.
    fn wait(&self) -> io::Result<([bool; 2], bool)> {
        let interest = PollFlags::POLLIN;
        let mut fds = Vec::with_capacity(3);
        fds.push(PollFd::new(self.control.as_fd(), interest));
        let mut which = Vec::with_capacity(2);
        for (i, pipe) in self.pipes.iter().enumerate() {
            if let Some(fd) = pipe {
                fds.push(PollFd::new(fd.as_fd(), interest));
                which.push(i);
            }
        }
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        let fired = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
        let end = fired(&fds[0]);
        let mut ready = [false; 2];
        for (fd, i) in fds[1..].iter().zip(which) {
            ready[i] = fired(fd);
        }
        Ok((ready, end))
    }

    /// Takes what pipe `i` holds, up to [`BURST_MAX`] bytes.
    fn burst(&mut self, i: usize) {
        let mut moved = 0;
        while moved < BURST_MAX {
            match self.pump(i) {
                Pumped::Data(n) => moved += n,
                Pumped::Eof | Pumped::WouldBlock => break,
            }
        }
        if self.write_back {
            self.log.write_back_behind();
        }
    }

    /// Takes what the pipes hold now (a bounded number of reads each), then closes
    /// them.
    fn final_drain(&mut self) {
        for i in 0..2 {
            for _ in 0..FINAL_DRAIN_READS {
                if !matches!(self.pump(i), Pumped::Data(_)) {
                    break;
                }
            }
            self.pipes[i] = None;
        }
    }

    /// One read from pipe `i` into the log.
    fn pump(&mut self, i: usize) -> Pumped {
        let stream = STREAMS[i];
        let Some(fd) = self.pipes[i].as_ref() else {
            return Pumped::Eof;
        };
        // Fast path: pipe → file in the kernel, while there is room under the cap.
        if self.splice && self.log.room() > 0 {
            match self.log.splice_from(stream, fd.as_fd(), SPLICE_MAX) {
                Ok(0) => {
                    self.pipes[i] = None;
                    return Pumped::Eof;
                }
                Ok(n) => return Pumped::Data(n),
                Err(SpliceError::Log(e)) => {
                    self.log_failed(&e);
                    // The bytes left the pipe, none reached the log (they are
                    // counted as discarded); the copy path takes the rest.
                    return Pumped::Data(0);
                }
                Err(SpliceError::Unsupported) => {
                    tracing::debug!(job = %self.id, "the state directory cannot splice; copying output instead");
                    self.splice = false;
                }
                Err(SpliceError::Io(e)) => return self.read_failed(i, &e),
            }
        }
        // Copy path: past the cap (read and discard), or where splicing is unsupported.
        if self.buf.is_empty() {
            self.buf.resize(HEADER_LEN + READ_BUF, 0);
        }
        let Some(fd) = self.pipes[i].as_ref() else {
            return Pumped::Eof;
        };
        match nix::unistd::read(fd, &mut self.buf[HEADER_LEN..]) {
            Ok(0) => {
                self.pipes[i] = None;
                Pumped::Eof
            }
            Ok(n) => {
                match self.log.append_framed(stream, &mut self.buf, n) {
                    Ok(Appended::CapReached) if !self.cap_reported => {
                        self.cap_reported = true;
                        // The supervisor stops the job; if it is gone, so is the job.
                        let _ = self.events.send(PumpEvent::CapReached);
                    }
                    Ok(_) => {}
                    Err(e) => self.log_failed(&e),
                }
                Pumped::Data(n)
            }
            Err(e) => self.read_failed(i, &e.into()),
        }
    }

    fn log_failed(&self, e: &io::Error) {
        tracing::error!(
            job = %self.id,
            path = %self.log.shared().path().display(),
            error = %e,
            "cannot write the job's output log; further output is discarded and the status says output_truncated"
        );
    }

    /// A read of pipe `i` failed: empty (`WouldBlock`, also for `Interrupted`: the
    /// next wake-up retries), else the pipe is closed.
    fn read_failed(&mut self, i: usize, e: &io::Error) -> Pumped {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Pumped::WouldBlock,
            _ => {
                tracing::warn!(job = %self.id, stream = ?STREAMS[i], error = %e, "reading an output pipe failed; closing it");
                self.pipes[i] = None;
                Pumped::Eof
            }
        }
    }
}
