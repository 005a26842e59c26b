//! A block device number (`major:minor`), the unit IO limits name disks by.

use std::fmt;

/// A block device number (`major:minor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceNumber {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl fmt::Display for DeviceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl DeviceNumber {
    pub(super) fn from_dev(dev: u64) -> Self {
        // Major and minor numbers are at most 12 and 20 bits: the casts cannot truncate.
        Self {
            major: nix::sys::stat::major(dev) as u32,
            minor: nix::sys::stat::minor(dev) as u32,
        }
    }

    pub(super) fn parse(text: &str) -> Option<Self> {
        let (ma, mi) = text.trim().split_once(':')?;
        Some(Self {
            major: ma.parse().ok()?,
            minor: mi.parse().ok()?,
        })
    }
}
