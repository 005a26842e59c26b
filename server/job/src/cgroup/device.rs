//! The block device behind a path, as the whole disk the IO controllers throttle.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::device_number::DeviceNumber;
use super::error::CgroupError;

/// The whole disk backing `path`: the device itself when `path` is a block device,
/// else the device of the filesystem holding it; a partition is replaced by its disk
/// (the IO controllers only throttle whole disks).
pub fn block_device_of(path: &Path) -> Result<DeviceNumber, CgroupError> {
    block_device_of_in(path, Path::new("/sys"))
}

/// [`block_device_of`] with sysfs at `sys` (tests use a fixture tree).
pub(crate) fn block_device_of_in(path: &Path, sys: &Path) -> Result<DeviceNumber, CgroupError> {
    let meta = std::fs::metadata(path).map_err(|source| CgroupError::Io {
        action: "stat",
        path: path.to_owned(),
        source,
    })?;
    let dev = if meta.file_type().is_block_device() {
        DeviceNumber::from_dev(meta.rdev())
    } else {
        DeviceNumber::from_dev(meta.dev())
    };
    whole_disk(dev, sys).ok_or_else(|| CgroupError::NoBlockDevice {
        path: path.to_owned(),
        device: dev,
    })
}

/// Resolves a partition to its disk through `/sys/dev/block/M:m`: a partition's
/// directory has a `partition` file and sits inside its disk's directory.
pub(crate) fn whole_disk(dev: DeviceNumber, sys: &Path) -> Option<DeviceNumber> {
    let node: PathBuf = sys.join("dev/block").join(dev.to_string());
    let real = std::fs::canonicalize(&node).ok()?;
    if !real.join("partition").exists() {
        return Some(dev);
    }
    let parent = real.parent()?;
    let text = std::fs::read_to_string(parent.join("dev")).ok()?;
    DeviceNumber::parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds `sys/devices/.../vda{,/vda1}` and the `sys/dev/block` links to them.
    fn fixture() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let disk = t.path().join("devices/pci0000:00/virtio1/block/vda");
        let part = disk.join("vda1");
        std::fs::create_dir_all(&part).unwrap();
        std::fs::write(disk.join("dev"), "254:0\n").unwrap();
        std::fs::write(part.join("dev"), "254:1\n").unwrap();
        std::fs::write(part.join("partition"), "1\n").unwrap();
        let links = t.path().join("dev/block");
        std::fs::create_dir_all(&links).unwrap();
        std::os::unix::fs::symlink(&disk, links.join("254:0")).unwrap();
        std::os::unix::fs::symlink(&part, links.join("254:1")).unwrap();
        t
    }

    #[test]
    fn partition_resolves_to_disk() {
        let t = fixture();
        let part = DeviceNumber {
            major: 254,
            minor: 1,
        };
        let disk = DeviceNumber {
            major: 254,
            minor: 0,
        };
        assert_eq!(whole_disk(part, t.path()), Some(disk));
        assert_eq!(whole_disk(disk, t.path()), Some(disk));
        // no such block device (e.g. tmpfs, major 0)
        assert_eq!(
            whole_disk(
                DeviceNumber {
                    major: 0,
                    minor: 40
                },
                t.path()
            ),
            None
        );
    }

    #[test]
    fn parse_and_display() {
        let d = DeviceNumber::parse("8:16\n").unwrap();
        assert_eq!(d.to_string(), "8:16");
        assert_eq!(DeviceNumber::parse("8"), None);
    }
}
