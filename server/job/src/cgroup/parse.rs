//! Pure parsers for the text files of cgroupfs and procfs. No I/O: every function takes
//! the file's content, so all of them are unit-tested on fixtures.

use std::path::PathBuf;

/// One line of `/proc/self/mountinfo` (only the fields qexec needs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    /// Root of the mount inside its filesystem (field 4).
    pub(crate) root: String,
    /// Where it is mounted (field 5), octal escapes decoded.
    pub(crate) mount_point: PathBuf,
    /// Filesystem type (first field after the ` - ` separator).
    pub(crate) fs_type: String,
    /// Super-block options (third field after the separator), comma separated.
    pub(crate) super_options: Vec<String>,
}

/// Parses `/proc/<pid>/mountinfo`; malformed lines are skipped (the kernel writes this
/// file, a line we cannot read is one we do not need).
pub(crate) fn mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(mountinfo_line).collect()
}

fn mountinfo_line(line: &str) -> Option<MountEntry> {
    // 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
    let (left, right) = line.split_once(" - ")?;
    let mut left = left.split(' ');
    let _id = left.next()?;
    let _parent = left.next()?;
    let _dev = left.next()?;
    let root = unescape_octal(left.next()?);
    let mount_point = PathBuf::from(unescape_octal(left.next()?));
    let mut right = right.split(' ');
    let fs_type = right.next()?.to_owned();
    let _source = right.next()?;
    let super_options = right
        .next()
        .unwrap_or("")
        .split(',')
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    Some(MountEntry {
        root,
        mount_point,
        fs_type,
        super_options,
    })
}

/// Decodes the `\ooo` escapes the kernel uses for space, tab, newline and backslash.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Value of `key` in a flat-keyed file (`key value` per line: `cpu.stat`,
/// `memory.events`, `pids.events`, v1 `memory.oom_control`, ...).
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut it = line.split_ascii_whitespace();
        (it.next()? == key).then(|| it.next()?.parse().ok())?
    })
}

/// A single-number file (`memory.peak`, `pids.current`, `cpuacct.usage`, ...).
pub(crate) fn single(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Bytes read and written, summed over devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct IoBytes {
    pub(crate) read: u64,
    pub(crate) write: u64,
}

/// Parses v2 `io.stat`: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N`.
pub(crate) fn io_stat(text: &str) -> IoBytes {
    let mut total = IoBytes::default();
    for line in text.lines() {
        for field in line.split_ascii_whitespace().skip(1) {
            let Some((k, v)) = field.split_once('=') else {
                continue;
            };
            let Ok(v) = v.parse::<u64>() else { continue };
            match k {
                "rbytes" => total.read = total.read.saturating_add(v),
                "wbytes" => total.write = total.write.saturating_add(v),
                _ => {}
            }
        }
    }
    total
}

/// Parses v1 `blkio.throttle.io_service_bytes`: `MAJ:MIN Read N` / `MAJ:MIN Write N`
/// lines per device and a final `Total N` line (ignored).
pub(crate) fn blkio_service_bytes(text: &str) -> IoBytes {
    let mut total = IoBytes::default();
    for line in text.lines() {
        let mut it = line.split_ascii_whitespace();
        let (Some(dev), Some(op), Some(v)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        if !dev.contains(':') {
            continue;
        }
        let Ok(v) = v.parse::<u64>() else { continue };
        match op {
            "Read" => total.read = total.read.saturating_add(v),
            "Write" => total.write = total.write.saturating_add(v),
            _ => {}
        }
    }
    total
}

/// Pids listed in a `cgroup.procs` file.
pub(crate) fn pids(text: &str) -> Vec<u32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real lines from a hybrid host (kernel 6.18) and a v2-only host.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 31 0:40 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:7 - cgroup cgroup rw,cpu,cpuacct
51 23 0:41 / /mnt/with\\040space rw - ext4 /dev/sda1 rw
garbage line without separator
";

    #[test]
    fn mountinfo_reads_cgroup_mounts() {
        let m = mountinfo(HYBRID);
        assert_eq!(m.len(), 8);
        assert_eq!(m[0].fs_type, "tmpfs");
        assert_eq!(m[1].mount_point, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(m[1].fs_type, "cgroup");
        assert_eq!(m[1].super_options, vec!["rw", "cpu"]);
        assert_eq!(m[1].root, "/");
        assert_eq!(m[5].fs_type, "cgroup2");
        // optional fields ("shared:7") before the separator do not shift anything
        assert_eq!(m[6].super_options, vec!["rw", "cpu", "cpuacct"]);
        assert_eq!(m[7].mount_point, PathBuf::from("/mnt/with space"));
    }

    #[test]
    fn keyed_files() {
        let events = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n";
        assert_eq!(keyed(events, "oom_kill"), Some(1));
        assert_eq!(keyed(events, "max"), Some(12));
        assert_eq!(keyed(events, "oom_kill_disable"), None);
        let oom_control = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(oom_control, "oom_kill"), Some(3));
        let cpu_stat = "usage_usec 4015\nuser_usec 2000\nsystem_usec 2015\nnr_periods 3\n\
                        nr_throttled 2\nthrottled_usec 1200\n";
        assert_eq!(keyed(cpu_stat, "usage_usec"), Some(4015));
        assert_eq!(keyed(cpu_stat, "throttled_usec"), Some(1200));
        let v1_cpu_stat = "nr_periods 10\nnr_throttled 8\nthrottled_time 640000000\n";
        assert_eq!(keyed(v1_cpu_stat, "throttled_time"), Some(640_000_000));
    }

    #[test]
    fn single_number() {
        assert_eq!(single("67108864\n"), Some(67_108_864));
        assert_eq!(single("x"), None);
    }

    #[test]
    fn io_stat_sums_devices() {
        let text = "254:0 rbytes=4096 wbytes=10485760 rios=1 wios=10 dbytes=0 dios=0\n\
                    1:0 rbytes=0 wbytes=1048576 rios=0 wios=1 dbytes=0 dios=0\n";
        assert_eq!(
            io_stat(text),
            IoBytes {
                read: 4096,
                write: 11_534_336
            }
        );
        assert_eq!(io_stat(""), IoBytes::default());
    }

    #[test]
    fn blkio_sums_read_write() {
        let text = "254:0 Read 8192\n254:0 Write 5242880\n254:0 Sync 5242880\n\
                    254:0 Async 8192\n254:0 Discard 0\n254:0 Total 5251072\n\
                    1:0 Write 100\nTotal 5251172\n";
        assert_eq!(
            blkio_service_bytes(text),
            IoBytes {
                read: 8192,
                write: 5_242_980
            }
        );
    }

    #[test]
    fn procs_list() {
        assert_eq!(pids("12\n345\n\n"), vec![12, 345]);
    }
}
