//! CPU time of processes from `/proc/<pid>/stat` (utime + stime, and the same of
//! reaped children), for the CPU-seconds-per-GiB columns of section 3.

use std::fs;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// CPU seconds of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct CpuTimes {
    /// utime + stime of the process itself (all its threads).
    pub(crate) own: f64,
    /// cutime + cstime: its children that it waited for.
    pub(crate) children: f64,
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that cannot be run).
fn ticks_per_second() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The fields of `/proc/<pid>/stat` after the command name, and the state letter.
fn stat_fields(pid: u32) -> anyhow::Result<Vec<String>> {
    let path = format!("/proc/{pid}/stat");
    let stat = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The command name is in parentheses and may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("unexpected {path}: {stat}"))?;
    Ok(rest.split_whitespace().map(str::to_owned).collect())
}

/// CPU times of `pid` now.
pub(crate) fn cpu_times(pid: u32) -> anyhow::Result<CpuTimes> {
    let f = stat_fields(pid)?;
    // After ")": state(3) ppid … utime(14) stime(15) cutime(16) cstime(17), i.e.
    // indices 11..=14 here.
    let tick = |i: usize| -> anyhow::Result<f64> {
        let v: f64 = f
            .get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no field {} in /proc/{pid}/stat", i + 3))?;
        Ok(v / ticks_per_second())
    };
    Ok(CpuTimes {
        own: tick(11)? + tick(12)?,
        children: tick(13)? + tick(14)?,
    })
}

/// Waits (bounded) until the child `pid` has exited but is not reaped yet (a
/// zombie keeps its final CPU times readable), then returns its own CPU seconds.
/// Call after its output reached end of file and before waiting for it.
pub(crate) fn final_cpu_of_child(pid: u32) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let f = stat_fields(pid)?;
        if f.first().is_some_and(|s| s == "Z") {
            return Ok(cpu_times(pid)?.own);
        }
        if Instant::now() > deadline {
            bail!("process {pid} did not exit within 10 s of closing its stdout");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Waits (bounded) until `pid` has no children left (e.g. sshd reaped the session
/// processes of a finished connection), so its `children` time includes them.
pub(crate) fn wait_no_children(pid: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let dir = format!("/proc/{pid}/task");
        let mut any = false;
        for task in fs::read_dir(&dir).with_context(|| format!("cannot read {dir}"))? {
            let children = task?.path().join("children");
            if !fs::read_to_string(children)
                .unwrap_or_default()
                .trim()
                .is_empty()
            {
                any = true;
            }
        }
        if !any {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("process {pid} still has children 10 s after its client finished");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// CPU seconds per GiB moved.
pub(crate) fn per_gib(cpu_s: f64, bytes: u64) -> f64 {
    cpu_s * (1u64 << 30) as f64 / bytes as f64
}
