//! What the host offers: layout, controllers, kill method — for the start-up log and
//! the library's capabilities query.

use std::fmt;
use std::path::PathBuf;

/// What the host mounts at `/sys/fs/cgroup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostLayout {
    /// cgroup2 only.
    Unified,
    /// v1 controller hierarchies plus a cgroup2 mount (usually `/sys/fs/cgroup/unified`).
    Hybrid,
    /// v1 controller hierarchies only.
    Legacy,
    /// Nothing usable is mounted.
    None,
}

impl fmt::Display for HostLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unified => "unified (cgroup v2)",
            Self::Hybrid => "hybrid (cgroup v1 + v2)",
            Self::Legacy => "legacy (cgroup v1)",
            Self::None => "none",
        })
    }
}

/// Which cgroup interface qexec drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Per-controller v1 hierarchies.
    V1,
    /// The unified v2 hierarchy.
    V2,
}

/// A controller qexec uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Controller {
    /// CPU bandwidth (`cpu`).
    Cpu,
    /// CPU accounting (`cpuacct`, v1 only; v2 accounts CPU in every cgroup).
    Cpuacct,
    /// Memory (`memory`).
    Memory,
    /// Block IO (`io` on v2, `blkio` on v1).
    Io,
    /// Number of tasks (`pids`).
    Pids,
    /// Freezing (`freezer`, v1 only; v2 has `cgroup.freeze` in every cgroup).
    Freezer,
}

impl Controller {
    /// The controllers qexec uses on v1.
    pub const V1: [Self; 6] = [
        Self::Cpu,
        Self::Cpuacct,
        Self::Memory,
        Self::Io,
        Self::Pids,
        Self::Freezer,
    ];
    /// The controllers qexec enables on v2.
    pub const V2: [Self; 4] = [Self::Cpu, Self::Memory, Self::Io, Self::Pids];

    /// Its name in a v1 mount's options.
    pub fn v1_name(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cpuacct => "cpuacct",
            Self::Memory => "memory",
            Self::Io => "blkio",
            Self::Pids => "pids",
            Self::Freezer => "freezer",
        }
    }

    /// Its name in v2 `cgroup.controllers`.
    pub fn v2_name(self) -> &'static str {
        match self {
            Self::Io => "io",
            other => other.v1_name(),
        }
    }
}

impl fmt::Display for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.v1_name())
    }
}

/// Whether one controller can be used, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerStatus {
    /// The controller.
    pub controller: Controller,
    /// `None` when usable, else why not.
    pub unusable: Option<String>,
}

/// How [`JobCgroup::kill_all`](super::JobCgroup::kill_all) empties a cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KillMethod {
    /// v2 `cgroup.kill`.
    CgroupKill,
    /// Freeze, SIGKILL every pid, thaw, until empty (v2 `cgroup.freeze`, v1 freezer).
    FreezeAndKill,
    /// SIGKILL every pid until empty (no freezer: a racing fork may need more rounds).
    KillLoop,
}

/// What cgroup support the host offers qexec; printed in the start-up log and
/// returned by the library's capabilities query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupCapabilities {
    /// What is mounted.
    pub host: HostLayout,
    /// The interface qexec uses, `None` when cgroups are unavailable.
    pub version: Option<CgroupVersion>,
    /// Why cgroups are unavailable, when they are.
    pub unavailable: Option<String>,
    /// Where qexec's job cgroups live (one directory per hierarchy).
    pub subtree: Vec<PathBuf>,
    /// Each controller qexec would use.
    pub controllers: Vec<ControllerStatus>,
    /// How jobs are killed.
    pub kill: Option<KillMethod>,
}

impl CgroupCapabilities {
    /// True when `controller` can be used.
    pub fn usable(&self, controller: Controller) -> bool {
        self.controllers
            .iter()
            .any(|c| c.controller == controller && c.unusable.is_none())
    }

    pub(super) fn reason(&self, controller: Controller) -> String {
        if let Some(r) = &self.unavailable {
            return format!("cgroups are unavailable: {r}");
        }
        self.controllers
            .iter()
            .find(|c| c.controller == controller)
            .and_then(|c| c.unusable.clone())
            .unwrap_or_else(|| format!("the {controller} controller is not mounted"))
    }
}

impl fmt::Display for CgroupCapabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cgroup layout {}", self.host)?;
        if let Some(r) = &self.unavailable {
            return write!(f, "; unavailable: {r}");
        }
        match self.version {
            Some(CgroupVersion::V1) => f.write_str(", using v1")?,
            Some(CgroupVersion::V2) => f.write_str(", using v2")?,
            None => {}
        }
        for c in &self.controllers {
            let name = match self.version {
                Some(CgroupVersion::V2) => c.controller.v2_name(),
                _ => c.controller.v1_name(),
            };
            match &c.unusable {
                None => write!(f, "; {name} yes")?,
                Some(r) => write!(f, "; {name} no ({r})")?,
            }
        }
        if let Some(k) = self.kill {
            write!(f, "; kill by {k:?}")?;
        }
        Ok(())
    }
}
