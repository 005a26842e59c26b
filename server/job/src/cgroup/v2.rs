//! The unified (v2) hierarchy: `<root>/<subtree>/<job>`, controllers enabled in
//! `<root>/<subtree>/cgroup.subtree_control`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qexec_protocol::{Limits, ResourceUsage};

use super::common::{
    CPU_PERIOD_USEC, ControllerFiles, KILL_TIMEOUT, collect_pids, freeze_kill_loop, wait_for,
};
use super::device_number::DeviceNumber;
use super::error::CgroupError;
use super::report::{Controller, ControllerStatus, KillMethod};
use super::{fs, parse};

/// qexec's subtree in the v2 hierarchy.
#[derive(Debug)]
pub(crate) struct Tree {
    base: PathBuf,
    controllers: BTreeSet<Controller>,
    has_kill: bool,
    has_freeze: bool,
}

impl Tree {
    /// Creates `<root>/<subtree>` and enables every controller qexec uses that the
    /// root delegates. Err: why cgroups are unusable.
    pub(crate) fn prepare(
        root: &Path,
        subtree: &str,
    ) -> Result<(Self, Vec<ControllerStatus>), String> {
        let base = root.join(subtree);
        fs::prepare_subtree(&base).map_err(|e| e.to_string())?;
        // spec note: the subtree holds no process, so enabling controllers in it
        // respects the no-internal-process rule.
        let available = fs::read(&base.join("cgroup.controllers"))
            .map_err(|e| e.to_string())?
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect::<BTreeSet<_>>();
        let mut controllers = BTreeSet::new();
        let mut statuses = Vec::new();
        for c in Controller::V2 {
            let unusable = if !available.contains(c.v2_name()) {
                Some(format!(
                    "it is not enabled in {}/cgroup.subtree_control (enable it with \
                     `echo +{} > {0}/cgroup.subtree_control`)",
                    root.display(),
                    c.v2_name()
                ))
            } else {
                match fs::write(
                    &base.join("cgroup.subtree_control"),
                    &format!("+{}", c.v2_name()),
                ) {
                    Ok(()) => {
                        controllers.insert(c);
                        None
                    }
                    Err(e) => Some(e.to_string()),
                }
            };
            statuses.push(ControllerStatus {
                controller: c,
                unusable,
            });
        }
        let tree = Self {
            has_kill: base.join("cgroup.kill").exists(),
            has_freeze: base.join("cgroup.freeze").exists(),
            base,
            controllers,
        };
        Ok((tree, statuses))
    }

    pub(crate) fn base(&self) -> &Path {
        &self.base
    }

    pub(crate) fn kill_method(&self) -> KillMethod {
        if self.has_kill {
            KillMethod::CgroupKill
        } else if self.has_freeze {
            KillMethod::FreezeAndKill
        } else {
            KillMethod::KillLoop
        }
    }

    pub(crate) fn job_names(&self) -> Result<BTreeSet<String>, CgroupError> {
        Ok(fs::child_dirs(&self.base)?
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }

    pub(crate) fn open(&self, name: &str) -> Job {
        Job {
            dir: self.base.join(name),
            controllers: self.controllers.clone(),
            has_kill: self.has_kill,
            has_freeze: self.has_freeze,
        }
    }

    pub(crate) fn create(
        &self,
        name: &str,
        limits: &Limits,
        io_devices: &[DeviceNumber],
    ) -> Result<Job, CgroupError> {
        let job = self.open(name);
        fs::mkdir(&job.dir, false)?;
        if let Err(e) = job.apply(limits, io_devices) {
            if let Err(e2) = fs::rmdir(&job.dir) {
                tracing::warn!(error = %e2, "removing a half-created job cgroup");
            }
            return Err(e);
        }
        Ok(job)
    }
}

/// One job's v2 cgroup.
#[derive(Debug)]
pub(crate) struct Job {
    dir: PathBuf,
    controllers: BTreeSet<Controller>,
    has_kill: bool,
    has_freeze: bool,
}

impl Job {
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn has(&self, c: Controller) -> bool {
        self.controllers.contains(&c)
    }

    fn apply(&self, limits: &Limits, io_devices: &[DeviceNumber]) -> Result<(), CgroupError> {
        for c in &self.controllers {
            files(*c).apply(&self.dir, limits, io_devices)?;
        }
        Ok(())
    }

    fn populated(&self) -> Result<bool, CgroupError> {
        match fs::read_optional(&self.dir.join("cgroup.events"))? {
            Some(text) => Ok(parse::keyed(&text, "populated") != Some(0)),
            None => Ok(false),
        }
    }

    fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        let mut all = BTreeSet::new();
        collect_pids(&self.dir, &mut all)?;
        Ok(all.into_iter().collect())
    }

    pub(crate) fn kill_all(&self) -> Result<(), CgroupError> {
        if !self.dir.exists() {
            return Ok(());
        }
        if self.has_kill {
            // cgroup.kill SIGKILLs every process of the cgroup and its descendants,
            // including ones forking meanwhile.
            fs::write(&self.dir.join("cgroup.kill"), "1")?;
            if wait_for(KILL_TIMEOUT, || Ok(!self.populated()?))? {
                return Ok(());
            }
            return Err(CgroupError::KillIncomplete {
                path: self.dir.clone(),
                rounds: 1,
                remaining: self.pids()?,
            });
        }
        let freeze_file = self.dir.join("cgroup.freeze");
        let events = self.dir.join("cgroup.events");
        freeze_kill_loop(
            &self.dir,
            || self.pids(),
            |on| {
                if !self.has_freeze {
                    return Ok(());
                }
                fs::write(&freeze_file, if on { "1" } else { "0" })?;
                let want = u64::from(on);
                // A task stuck in the kernel may never freeze: go on after a while and
                // let the next round catch what forked meanwhile.
                wait_for(Duration::from_millis(500), || {
                    Ok(fs::read_optional(&events)?
                        .is_none_or(|t| parse::keyed(&t, "frozen") == Some(want)))
                })?;
                Ok(())
            },
        )
    }

    pub(crate) fn usage(&self) -> Result<ResourceUsage, CgroupError> {
        let mut u = ResourceUsage::default();
        Core.read_usage(&self.dir, &mut u)?;
        for c in &self.controllers {
            files(*c).read_usage(&self.dir, &mut u)?;
        }
        Ok(u)
    }

    pub(crate) fn oom_killed(&self) -> Result<bool, CgroupError> {
        Ok(fs::read_optional(&self.dir.join("memory.events"))?
            .and_then(|t| parse::keyed(&t, "oom_kill"))
            .is_some_and(|n| n > 0))
    }
}

/// The v2 files of controller `c` (v2 has no cpuacct or freezer controller: their
/// jobs are done by [`Core`] and `cgroup.freeze`).
fn files(c: Controller) -> &'static dyn ControllerFiles {
    match c {
        Controller::Cpu => &Cpu,
        Controller::Memory => &Memory,
        Controller::Io => &Io,
        Controller::Pids => &Pids,
        Controller::Cpuacct | Controller::Freezer => &Core,
    }
}

/// Files every v2 cgroup has: CPU time in `cpu.stat`.
#[derive(Debug)]
struct Core;

impl ControllerFiles for Core {
    fn apply(&self, _: &Path, _: &Limits, _: &[DeviceNumber]) -> Result<(), CgroupError> {
        Ok(())
    }

    fn read_usage(&self, d: &Path, u: &mut ResourceUsage) -> Result<(), CgroupError> {
        if let Some(stat) = fs::read_optional(&d.join("cpu.stat"))? {
            u.cpu_usec = parse::keyed(&stat, "usage_usec");
        }
        Ok(())
    }
}

/// `cpu`: bandwidth (`cpu.max` = quota period), throttled time.
#[derive(Debug)]
struct Cpu;

impl ControllerFiles for Cpu {
    fn apply(&self, d: &Path, limits: &Limits, _: &[DeviceNumber]) -> Result<(), CgroupError> {
        if let Some(m) = limits.cpu_millis {
            let quota = u64::from(m) * CPU_PERIOD_USEC / 1000;
            fs::write(&d.join("cpu.max"), &format!("{quota} {CPU_PERIOD_USEC}"))?;
        }
        Ok(())
    }

    fn read_usage(&self, d: &Path, u: &mut ResourceUsage) -> Result<(), CgroupError> {
        if let Some(stat) = fs::read_optional(&d.join("cpu.stat"))? {
            u.cpu_throttled_usec = parse::keyed(&stat, "throttled_usec");
        }
        Ok(())
    }
}

/// `memory`: `memory.max`, swap off, the whole job killed on OOM, peak use.
#[derive(Debug)]
struct Memory;

impl ControllerFiles for Memory {
    fn apply(&self, d: &Path, limits: &Limits, _: &[DeviceNumber]) -> Result<(), CgroupError> {
        // An OOM kills the whole job, not one process of it.
        fs::write(&d.join("memory.oom.group"), "1")?;
        if let Some(bytes) = limits.memory_bytes {
            fs::write(&d.join("memory.max"), &bytes.to_string())?;
            // Swap off; the file is absent when the kernel does no swap accounting
            // (then there is no swap to account either way).
            let swap = d.join("memory.swap.max");
            if swap.exists() {
                fs::write(&swap, "0")?;
            }
        }
        Ok(())
    }

    fn read_usage(&self, d: &Path, u: &mut ResourceUsage) -> Result<(), CgroupError> {
        if let Some(peak) = fs::read_optional(&d.join("memory.peak"))? {
            u.memory_peak_bytes = parse::single(&peak);
        }
        Ok(())
    }
}

/// `io`: `io.max` per device, bytes from `io.stat`.
#[derive(Debug)]
struct Io;

impl ControllerFiles for Io {
    fn apply(&self, d: &Path, limits: &Limits, devs: &[DeviceNumber]) -> Result<(), CgroupError> {
        let mut io = String::new();
        for (key, v) in [
            ("rbps", limits.io_read_bps),
            ("wbps", limits.io_write_bps),
            ("riops", limits.io_read_iops),
            ("wiops", limits.io_write_iops),
        ] {
            if let Some(v) = v {
                io.push_str(&format!(" {key}={v}"));
            }
        }
        if !io.is_empty() {
            for dev in devs {
                fs::write(&d.join("io.max"), &format!("{dev}{io}"))?;
            }
        }
        Ok(())
    }

    fn read_usage(&self, d: &Path, u: &mut ResourceUsage) -> Result<(), CgroupError> {
        if let Some(stat) = fs::read_optional(&d.join("io.stat"))? {
            let io = parse::io_stat(&stat);
            u.io_read_bytes = Some(io.read);
            u.io_write_bytes = Some(io.write);
        }
        Ok(())
    }
}

/// `pids`: `pids.max`.
#[derive(Debug)]
struct Pids;

impl ControllerFiles for Pids {
    fn apply(&self, d: &Path, limits: &Limits, _: &[DeviceNumber]) -> Result<(), CgroupError> {
        if let Some(p) = limits.pids {
            fs::write(&d.join("pids.max"), &p.to_string())?;
        }
        Ok(())
    }
}
