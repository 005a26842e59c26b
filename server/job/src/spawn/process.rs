//! The handle to a running job's first process: signal, reap, kill on drop.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use qexec_protocol::Termination;

use crate::sys::{self, init};

/// Decodes a raw `wait` status.
fn termination_from_wait_status(status: i32) -> Termination {
    if libc::WIFSIGNALED(status) {
        Termination::Signaled(libc::WTERMSIG(status))
    } else {
        Termination::Exited(libc::WEXITSTATUS(status))
    }
}

/// A job's first process: the target program itself, or the init of its namespaces
/// when isolated.
///
/// Its [`AsRawFd`] descriptor is the pidfd of that first process: it becomes readable
/// when the process exits (usable with tokio's `AsyncFd`); then call
/// [`ChildProcess::try_reap`].
///
/// **Zombie until dropped**: `try_reap` reports the termination but leaves the process
/// a zombie (`waitid(.., WNOWAIT)`), so its pid — which is also the job's process-group
/// id — cannot be reused while this handle lives: [`ChildProcess::terminate`] and
/// [`ChildProcess::kill`] can still reach processes the target left behind (e.g. a
/// background child holding the output pipe) without any risk of hitting an unrelated
/// group (pid_max is often only 32768). Dropping the handle reaps the zombie, so drop
/// it when the job is over. Dropping it while the process still runs kills it
/// ([`ChildProcess::kill`]) and reaps it, blocking until the kernel has ended it: the
/// last resort that guarantees no zombie is left.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    pid: u32,
    pidfd: OwnedFd,
    /// Read end of the init's status pipe (isolated jobs only).
    status: Option<OwnedFd>,
    /// How the job ended, once the first process has exited (it is then a zombie
    /// until dropped).
    exited: Option<Termination>,
    /// Isolated only: the init exited by itself without reporting the target's status,
    /// with this code — the job died before its program ran (the init's dynamic loader
    /// without memory, bad arguments, a broken init).
    init_failed: Option<i32>,
}

impl ChildProcess {
    /// A handle on the process `pid` whose pidfd is `pidfd`; `status` is the read end
    /// of the init's status pipe when the job is isolated.
    pub(super) fn new(pid: u32, pidfd: OwnedFd, status: Option<OwnedFd>) -> Self {
        Self {
            pid,
            pidfd,
            status,
            exited: None,
            init_failed: None,
        }
    }

    /// When the job died before its program ran: the exit code of its init, which
    /// ended by itself without reporting the program's status (isolated jobs only;
    /// known once reaped).
    pub(crate) fn init_failed(&self) -> Option<i32> {
        self.init_failed
    }

    /// Closes the server's end of the init's status pipe, as the server's death would.
    #[cfg(test)]
    pub(super) fn close_status_pipe(&mut self) {
        drop(self.status.take());
    }

    /// Whether the job runs in its own namespaces under an init.
    pub(crate) fn is_isolated(&self) -> bool {
        self.status.is_some()
    }

    /// How the job ended, if its first process has exited; never blocks. Returns the
    /// **target program's** termination, also when isolated (reported by the init);
    /// when the init itself was killed before the target ended (e.g. by
    /// [`ChildProcess::kill`]), the init's own termination (`Signaled(9)`). Every later
    /// call returns the same value. The process stays a zombie until the handle is
    /// dropped (see the type's docs). spec: QX-MSG-TYPE-3
    pub(crate) fn try_reap(&mut self) -> io::Result<Option<Termination>> {
        if let Some(t) = self.exited {
            return Ok(Some(t));
        }
        let Some(own) = sys::pidfd_try_wait(self.pidfd.as_fd(), true)? else {
            return Ok(None);
        };
        let t = self.target_termination(own);
        self.exited = Some(t);
        Ok(Some(t))
    }

    /// Waits for the first process to exit (blocking); otherwise as
    /// [`ChildProcess::try_reap`].
    pub(crate) fn wait_blocking(&mut self) -> io::Result<Termination> {
        if let Some(t) = self.exited {
            return Ok(t);
        }
        let own = sys::pidfd_wait(self.pidfd.as_fd(), true)?;
        let t = self.target_termination(own);
        self.exited = Some(t);
        Ok(t)
    }

    /// The target's status from the status pipe, else the first process's own (and
    /// an init that *exited* without a report is recorded in `init_failed`; killed,
    /// it is our stop or the OOM killer).
    fn target_termination(&mut self, own: Termination) -> Termination {
        let Some(status) = &self.status else {
            return own;
        };
        let mut buf = [0u8; 4];
        // A 4-byte pipe write is atomic: all or nothing. Non-blocking read end.
        match nix::unistd::read(status, &mut buf) {
            Ok(4) => termination_from_wait_status(i32::from_ne_bytes(buf)),
            _ => {
                if let Termination::Exited(code) = own {
                    self.init_failed = Some(code);
                }
                own
            }
        }
    }

    /// Sends `sig` to the job's main program (through the init when isolated; it
    /// forwards it to the target only). Uses the pidfd, so it cannot hit a recycled pid.
    /// spec: QX-MSG-CTRL-6
    pub(crate) fn signal(&self, sig: i32) -> io::Result<()> {
        let value = self.is_isolated().then_some(init::SIGNAL_TARGET_ONLY);
        sys::pidfd_send_signal(self.pidfd.as_fd(), sig, value)
    }

    /// Sends SIGTERM to every process of the job it can reach: when isolated, the init
    /// does `kill(-1, SIGTERM)` inside the namespace; else the job's process group
    /// (the target leads its own session), also after the target exited. Processes
    /// that left the group are only reachable through the job's cgroup. Not an error
    /// when nothing is left.
    pub(crate) fn terminate(&self) -> io::Result<()> {
        if self.is_isolated() {
            return ignore_gone(sys::pidfd_send_signal(
                self.pidfd.as_fd(),
                libc::SIGTERM,
                Some(init::SIGNAL_TERMINATE_ALL),
            ));
        }
        self.signal_group(libc::SIGTERM)
    }

    /// Sends SIGKILL to everything: when isolated, to the init, which ends the whole
    /// namespace; else to the target and its process group (same reach as
    /// [`ChildProcess::terminate`]). Not an error when nothing is left.
    pub(crate) fn kill(&self) -> io::Result<()> {
        if self.exited.is_none() {
            ignore_gone(sys::pidfd_send_signal(
                self.pidfd.as_fd(),
                libc::SIGKILL,
                None,
            ))?;
        }
        if self.is_isolated() {
            return Ok(());
        }
        self.signal_group(libc::SIGKILL)
    }

    /// Signals the target's process group. Its id is the target's pid, which cannot be
    /// recycled while this handle lives (the target is running, or a zombie we hold).
    fn signal_group(&self, sig: i32) -> io::Result<()> {
        match sys::kill(-(self.pid as i32), sig) {
            Ok(()) => Ok(()),
            Err(e) if e.0 == libc::ESRCH => Ok(()),
            Err(e) => Err(e.to_io()),
        }
    }
}

/// `ESRCH` (already exited) is not an error for terminate/kill.
fn ignore_gone(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
        r => r,
    }
}

impl AsRawFd for ChildProcess {
    fn as_raw_fd(&self) -> RawFd {
        self.pidfd.as_raw_fd()
    }
}

impl AsFd for ChildProcess {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }
}

impl Drop for ChildProcess {
    /// Reaps the zombie; a process still running is killed first.
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.kill();
        }
        let _ = sys::pidfd_wait(self.pidfd.as_fd(), false);
    }
}
