//! The v1 hierarchies: `<mount>/<subtree>/<job>` in each controller's mount
//! (controllers co-mounted, e.g. `cpu,cpuacct`, share one directory).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use qexec_protocol::{Limits, ResourceUsage};

use super::common::{CPU_PERIOD_USEC, ControllerFiles, collect_pids, freeze_kill_loop, wait_for};
use super::device_number::DeviceNumber;
use super::error::CgroupError;
use super::report::{Controller, ControllerStatus, KillMethod};
use super::{fs, parse};

/// qexec's subtree in each v1 hierarchy.
#[derive(Debug)]
pub(crate) struct Tree {
    /// Controller → `<mount>/<subtree>`, usable controllers only.
    bases: BTreeMap<Controller, PathBuf>,
}

impl Tree {
    /// Creates `<mount>/<subtree>` for every mounted controller qexec uses.
    /// Err: why cgroups are unusable (no controller could be prepared).
    pub(crate) fn prepare(
        mounts: &[(Controller, PathBuf)],
        subtree: &str,
    ) -> Result<(Self, Vec<ControllerStatus>), String> {
        let mut bases = BTreeMap::new();
        let mut statuses = Vec::new();
        let mut first_error = None;
        for c in Controller::V1 {
            let unusable = match mounts.iter().find(|(m, _)| *m == c) {
                None => Some(format!("no v1 {} hierarchy is mounted", c.v1_name())),
                Some((_, mount)) => {
                    let base = mount.join(subtree);
                    match fs::prepare_subtree(&base) {
                        Ok(()) => {
                            bases.insert(c, base);
                            None
                        }
                        Err(e) => {
                            let e = e.to_string();
                            first_error.get_or_insert_with(|| e.clone());
                            Some(e)
                        }
                    }
                }
            };
            statuses.push(ControllerStatus {
                controller: c,
                unusable,
            });
        }
        if bases.is_empty() {
            return Err(first_error.unwrap_or_else(|| "no v1 controller is mounted".to_owned()));
        }
        Ok((Self { bases }, statuses))
    }

    /// The distinct subtree directories.
    pub(crate) fn bases(&self) -> Vec<PathBuf> {
        let set: BTreeSet<&PathBuf> = self.bases.values().collect();
        set.into_iter().cloned().collect()
    }

    pub(crate) fn kill_method(&self) -> KillMethod {
        if self.bases.contains_key(&Controller::Freezer) {
            KillMethod::FreezeAndKill
        } else {
            KillMethod::KillLoop
        }
    }

    pub(crate) fn job_names(&self) -> Result<BTreeSet<String>, CgroupError> {
        let mut names = BTreeSet::new();
        for base in self.bases() {
            for p in fs::child_dirs(&base)? {
                if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                    names.insert(n.to_owned());
                }
            }
        }
        Ok(names)
    }

    pub(crate) fn open(&self, name: &str) -> Job {
        Job {
            dirs: self.bases.iter().map(|(c, b)| (*c, b.join(name))).collect(),
        }
    }

    pub(crate) fn create(
        &self,
        name: &str,
        limits: &Limits,
        io_devices: &[DeviceNumber],
    ) -> Result<Job, CgroupError> {
        let job = self.open(name);
        let mut made = Vec::new();
        let result = (|| {
            for dir in job.dirs() {
                fs::mkdir(&dir, false)?;
                made.push(dir);
            }
            job.apply(limits, io_devices)
        })();
        if let Err(e) = result {
            for dir in made {
                if let Err(e2) = fs::rmdir(&dir) {
                    tracing::warn!(error = %e2, "removing a half-created job cgroup");
                }
            }
            return Err(e);
        }
        Ok(job)
    }
}

/// One job's v1 cgroups.
#[derive(Debug)]
pub(crate) struct Job {
    dirs: BTreeMap<Controller, PathBuf>,
}

impl Job {
    /// The distinct directories.
    pub(crate) fn dirs(&self) -> Vec<PathBuf> {
        let set: BTreeSet<&PathBuf> = self.dirs.values().collect();
        set.into_iter().cloned().collect()
    }

    pub(crate) fn dir_of(&self, c: Controller) -> Option<PathBuf> {
        self.dirs.get(&c).cloned()
    }

    fn apply(&self, limits: &Limits, io_devices: &[DeviceNumber]) -> Result<(), CgroupError> {
        for (c, d) in &self.dirs {
            files(*c).apply(d, limits, io_devices)?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<u32>, CgroupError> {
        // Every process of the job is in every hierarchy; the union also covers a
        // process some other agent moved out of one of them.
        let mut all = BTreeSet::new();
        for d in self.dirs() {
            collect_pids(&d, &mut all)?;
        }
        Ok(all.into_iter().collect())
    }

    pub(crate) fn kill_all(&self) -> Result<(), CgroupError> {
        let path = self
            .dirs
            .get(&Controller::Freezer)
            .or_else(|| self.dirs.values().next())
            .cloned()
            .unwrap_or_default();
        let freezer = self.dirs.get(&Controller::Freezer).filter(|d| d.exists());
        freeze_kill_loop(
            &path,
            || self.pids(),
            |on| {
                let Some(d) = freezer else { return Ok(()) };
                let state = d.join("freezer.state");
                let want = if on { "FROZEN" } else { "THAWED" };
                fs::write(&state, want)?;
                // FREEZING until every task stopped; a task stuck in the kernel may
                // never get there: go on and let the next round catch stragglers.
                wait_for(Duration::from_millis(500), || {
                    Ok(fs::read(&state)?.trim() == want)
                })?;
                Ok(())
            },
        )
    }

    pub(crate) fn usage(&self) -> Result<ResourceUsage, CgroupError> {
        let mut u = ResourceUsage::default();
        for (c, d) in &self.dirs {
            files(*c).read_usage(d, &mut u)?;
        }
        Ok(u)
    }

    pub(crate) fn oom_killed(&self) -> Result<bool, CgroupError> {
        match self.dirs.get(&Controller::Memory) {
            Some(d) => Memory::oom_killed(d),
            None => Ok(false),
        }
    }
}

/// The v1 files of controller `c`.
fn files(c: Controller) -> &'static dyn ControllerFiles {
    match c {
        Controller::Cpu => &Cpu,
        Controller::Cpuacct => &Cpuacct,
        Controller::Memory => &Memory,
        Controller::Io => &Blkio,
        Controller::Pids => &Pids,
        Controller::Freezer => &Freezer,
    }
}

/// `cpu`: CFS bandwidth (`cpu.cfs_quota_us` per `cpu.cfs_period_us`), throttled time.
#[derive(Debug)]
struct Cpu;

impl ControllerFiles for Cpu {
    fn apply(&self, d: &Path, limits: &Limits, _: &[DeviceNumber]) -> Result<(), CgroupError> {
        if let Some(m) = limits.cpu_millis {
            let quota = u64::from(m) * CPU_PERIOD_USEC / 1000;
            fs::write(&d.join("cpu.cfs_period_us"), &CPU_PERIOD_USEC.to_string())?;
            fs::write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
        }
        Ok(())
    }

    fn read_usage(&self, d: &Path, u: &mut ResourceUsage) -> Result<(), CgroupError> {
        if let Some(t) = fs::read_optional(&d.join("cpu.stat"))? {
            u.cpu_throttled_usec = parse::keyed(&t, "throttled_time").map(|ns| ns / 1000);
        }
        Ok(())
    }
}

/// `cpuacct`: CPU time used (`cpuacct.usage`, nanoseconds).
#[derive(Debug)]
struct Cpuacct;

impl ControllerFiles for Cpuacct {
    fn apply(&self, _: &Path, _: &Limits, _: &[DeviceNumber]) -> Result<(), CgroupError> {
        Ok(())
    }

    fn read_usage(&self, d: &Path, u: &mut ResourceUsage) -> Result<(), CgroupError> {
        if let Some(t) = fs::read_optional(&d.join("cpuacct.usage"))? {
            u.cpu_usec = parse::single(&t).map(|ns| ns / 1000);
        }
        Ok(())
    }
}

/// `memory`: limit with swap off, peak use, OOM kills.
#[derive(Debug)]
struct Memory;

impl Memory {
    fn oom_killed(d: &Path) -> Result<bool, CgroupError> {
        let Some(t) = fs::read_optional(&d.join("memory.oom_control"))? else {
            return Ok(false);
        };
        if let Some(n) = parse::keyed(&t, "oom_kill") {
            return Ok(n > 0);
        }
        // Kernels before 4.13 have no oom_kill count: the limit being hit is the
        // best sign left (it also counts hits that reclaim resolved).
        Ok(fs::read_optional(&d.join("memory.failcnt"))?
            .and_then(|t| parse::single(&t))
            .is_some_and(|n| n > 0))
    }
}

impl ControllerFiles for Memory {
    fn apply(&self, d: &Path, limits: &Limits, _: &[DeviceNumber]) -> Result<(), CgroupError> {
        let Some(bytes) = limits.memory_bytes else {
            return Ok(());
        };
        // The memory limit first: memsw may never be below it.
        fs::write(&d.join("memory.limit_in_bytes"), &bytes.to_string())?;
        let memsw = d.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            // memory + swap = memory: no swap.
            fs::write(&memsw, &bytes.to_string())?;
        } else {
            // No swap accounting: keep the job out of swap as far as v1 allows.
            fs::write(&d.join("memory.swappiness"), "0")?;
        }
        Ok(())
    }

    fn read_usage(&self, d: &Path, u: &mut ResourceUsage) -> Result<(), CgroupError> {
        if let Some(t) = fs::read_optional(&d.join("memory.max_usage_in_bytes"))? {
            u.memory_peak_bytes = parse::single(&t);
        }
        Ok(())
    }
}

/// `blkio`: throttling per device (v1 throttles direct IO only: buffered writes are
/// issued later by the kernel's writeback, outside the job's cgroup).
#[derive(Debug)]
struct Blkio;

impl ControllerFiles for Blkio {
    fn apply(&self, d: &Path, limits: &Limits, devs: &[DeviceNumber]) -> Result<(), CgroupError> {
        // Writing 0 would remove a rule: validation refuses 0.
        for (file, v) in [
            ("blkio.throttle.read_bps_device", limits.io_read_bps),
            ("blkio.throttle.write_bps_device", limits.io_write_bps),
            ("blkio.throttle.read_iops_device", limits.io_read_iops),
            ("blkio.throttle.write_iops_device", limits.io_write_iops),
        ] {
            let Some(v) = v else { continue };
            for dev in devs {
                fs::write(&d.join(file), &format!("{dev} {v}"))?;
            }
        }
        Ok(())
    }

    fn read_usage(&self, d: &Path, u: &mut ResourceUsage) -> Result<(), CgroupError> {
        if let Some(t) = fs::read_optional(&d.join("blkio.throttle.io_service_bytes"))? {
            let io = parse::blkio_service_bytes(&t);
            u.io_read_bytes = Some(io.read);
            u.io_write_bytes = Some(io.write);
        }
        Ok(())
    }
}

/// `pids`: task limit.
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

/// `freezer`: no limit; used by [`Job::kill_all`].
#[derive(Debug)]
struct Freezer;

impl ControllerFiles for Freezer {
    fn apply(&self, _: &Path, _: &Limits, _: &[DeviceNumber]) -> Result<(), CgroupError> {
        Ok(())
    }
}
