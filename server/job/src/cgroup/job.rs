//! One job's cgroup(s): placement fds, signalling, killing, usage, removal.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use qexec_protocol::ResourceUsage;

use super::common::{collect_pids, send};
use super::error::CgroupError;
use super::report::Controller;
use super::{fs, parse, v1, v2};

/// Task counts of a job cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidsStats {
    /// Tasks now.
    pub current: u64,
    /// Most tasks at once, when the kernel reports it (`pids.peak`).
    pub peak: Option<u64>,
    /// Times a fork was refused by the limit (`pids.events` `max`).
    pub limit_hits: u64,
}

#[derive(Debug)]
pub(super) enum Inner {
    V1(v1::Job),
    V2(v2::Job),
}

/// The cgroup(s) of one job: one directory on v2, one per controller on v1.
///
/// Dropping it without [`remove`](Self::remove) kills what is left in it and removes
/// it, as a last resort.
#[derive(Debug)]
pub struct JobCgroup {
    pub(super) name: String,
    pub(super) inner: Inner,
    pub(super) procs: Vec<File>,
    pub(super) removed: bool,
}

impl JobCgroup {
    /// The job name it was created with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its directories (one per hierarchy).
    pub fn paths(&self) -> Vec<PathBuf> {
        match &self.inner {
            Inner::V1(j) => j.dirs(),
            Inner::V2(j) => vec![j.dir().to_owned()],
        }
    }

    pub(super) fn open_procs(&self) -> Result<Vec<File>, CgroupError> {
        self.paths()
            .into_iter()
            .map(|d| {
                let path = d.join("cgroup.procs");
                std::fs::OpenOptions::new()
                    .write(true)
                    // Tempdir fixtures have no kernel-made cgroup.procs.
                    .create(cfg!(test))
                    .truncate(false)
                    .open(&path)
                    .map_err(|source| CgroupError::Io {
                        action: "open",
                        path,
                        source,
                    })
            })
            .collect()
    }

    /// `cgroup.procs` files opened for writing (close-on-exec), one per hierarchy.
    /// The spawner writes `0` to each in the child before exec (one `write(2)` each,
    /// async-signal-safe), so the job's program never runs outside its cgroup.
    pub fn procs_fds(&self) -> Vec<BorrowedFd<'_>> {
        self.procs.iter().map(|f| f.as_fd()).collect()
    }

    /// Closes the fds of [`procs_fds`](Self::procs_fds) once the job was spawned.
    pub fn release_procs_fds(&mut self) {
        self.procs.clear();
    }

    /// Moves process `pid` (and, on v2, all its threads) into the job's cgroup(s).
    pub fn attach(&self, pid: u32) -> Result<(), CgroupError> {
        for dir in self.paths() {
            fs::write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Every process in the job's cgroup (and any cgroup the job made below it).
    pub fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut all = BTreeSet::new();
        for dir in self.paths() {
            collect_pids(&dir, &mut all)?;
        }
        Ok(all.into_iter().collect())
    }

    /// Sends `signal` to every process of the job; returns how many were signalled.
    /// A process forking at that moment may miss it: use [`kill_all`](Self::kill_all)
    /// for a stop that must not miss any.
    pub fn signal_all(&self, signal: nix::sys::signal::Signal) -> Result<usize, CgroupError> {
        let pids = self.pids()?;
        Ok(pids.iter().filter(|&&p| send(p, signal)).count())
    }

    /// Kills every process of the job and waits until the cgroup is empty: v2
    /// `cgroup.kill` where present, else freeze → SIGKILL every pid → thaw, repeated
    /// until empty (bounded; [`CgroupError::KillIncomplete`] past that). Blocking:
    /// call it from a blocking thread.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        match &self.inner {
            Inner::V1(j) => j.kill_all(),
            Inner::V2(j) => j.kill_all(),
        }
    }

    /// Resource usage so far (what the kernel reports; `None` where not measured).
    pub fn usage(&self) -> Result<ResourceUsage, CgroupError> {
        match &self.inner {
            Inner::V1(j) => j.usage(),
            Inner::V2(j) => j.usage(),
        }
    }

    /// True when the kernel's OOM killer killed a process of the job.
    pub fn oom_killed(&self) -> Result<bool, CgroupError> {
        match &self.inner {
            Inner::V1(j) => j.oom_killed(),
            Inner::V2(j) => j.oom_killed(),
        }
    }

    /// Task counts, `None` without the pids controller.
    pub fn pids_stats(&self) -> Result<Option<PidsStats>, CgroupError> {
        let dir = match &self.inner {
            Inner::V1(j) => j.dir_of(Controller::Pids),
            Inner::V2(j) => j.has(Controller::Pids).then(|| j.dir().to_owned()),
        };
        let Some(dir) = dir else { return Ok(None) };
        let current = parse::single(&fs::read(&dir.join("pids.current"))?).unwrap_or(0);
        let peak = fs::read_optional(&dir.join("pids.peak"))?.and_then(|s| parse::single(&s));
        let limit_hits = fs::read_optional(&dir.join("pids.events"))?
            .and_then(|s| parse::keyed(&s, "max"))
            .unwrap_or(0);
        Ok(Some(PidsStats {
            current,
            peak,
            limit_hits,
        }))
    }

    /// Removes the job's cgroup directories (and any the job made below them). Call it
    /// after the job ended; it fails while processes remain. Idempotent.
    pub fn remove(&mut self) -> Result<(), CgroupError> {
        if self.removed {
            return Ok(());
        }
        self.procs.clear();
        for dir in self.paths() {
            rmdir_tree(&dir)?;
        }
        self.removed = true;
        Ok(())
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        if self.remove().is_ok() {
            return;
        }
        // Last resort: something is still running in it.
        if let Err(e) = self.kill_all() {
            tracing::warn!(cgroup = %self.name, error = %e, "killing a dropped job cgroup");
        }
        if let Err(e) = self.remove() {
            tracing::warn!(cgroup = %self.name, error = %e, "removing a dropped job cgroup");
        }
    }
}

/// Removes `dir` after every cgroup below it, deepest first.
fn rmdir_tree(dir: &Path) -> Result<(), CgroupError> {
    for child in fs::child_dirs(dir)? {
        rmdir_tree(&child)?;
    }
    fs::rmdir(dir)
}
