//! Output log file I/O (parent side): positioned reads into a buffer's spare
//! capacity, and starting the writeback of what was written.
//!
//! `FileExt::read_exact_at` needs an initialised buffer, so every read would first
//! zero it (a `memset` per byte read). These wrappers let the kernel fill the
//! buffer's uninitialised spare room and then mark the bytes it wrote as the
//! buffer's contents.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use bytes::BytesMut;

/// How [`pread_into`] may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadWait {
    /// Read only what the page cache holds now (`RWF_NOWAIT`): `WouldBlock` instead
    /// of waiting for the disk, so the read can run on an async runtime thread.
    /// File systems without `RWF_NOWAIT` answer `Unsupported`.
    CachedOnly,
    /// An ordinary `pread`, which may wait for the disk.
    Block,
}

/// Reads up to `len` bytes of `file` at `pos`, appending them to `buf` (which grows
/// to hold them). Returns how many bytes were read, 0 at the end of the file.
pub(crate) fn pread_into(
    file: &File,
    buf: &mut BytesMut,
    len: usize,
    pos: u64,
    wait: ReadWait,
) -> io::Result<usize> {
    buf.reserve(len);
    let spare = buf.spare_capacity_mut();
    let len = len.min(spare.len());
    let offset = libc::off_t::try_from(pos).map_err(io::Error::other)?;
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: len,
    };
    let flags = match wait {
        ReadWait::CachedOnly => libc::RWF_NOWAIT,
        ReadWait::Block => 0,
    };
    // SAFETY: `iov` describes `len` bytes of `buf`'s spare capacity, which `buf` owns
    // and which nothing else references while this call runs; the kernel writes at
    // most `len` bytes there. `file` is an open fd for the whole call.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, flags) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) => io::ErrorKind::Unsupported.into(),
            _ => e,
        });
    }
    // `n` >= 0 here and at most `len`.
    let n = n as usize;
    // SAFETY: the kernel initialised the first `n` (<= `len` <= spare capacity) bytes
    // of the spare capacity, which directly follow the buffer's current contents.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// Starts the writeback of the dirty pages of `file` in `[pos, pos + len)` and
/// returns without waiting for it (`sync_file_range(SYNC_FILE_RANGE_WRITE)`: no
/// `fsync`, no metadata, no durability promise). A writer that calls this behind
/// itself keeps its dirty pages few, so the kernel neither throttles it
/// (`balance_dirty_pages`) nor later writes gigabytes back in one burst.
pub(crate) fn start_writeback(file: &File, pos: u64, len: u64) -> io::Result<()> {
    let offset = libc::off64_t::try_from(pos).map_err(io::Error::other)?;
    let nbytes = libc::off64_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: plain system call on an fd `file` keeps open for the whole call; no
    // memory is passed.
    let r = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset,
            nbytes,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn reads_at_a_position_into_spare_room() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"0123456789").unwrap();
        for wait in [ReadWait::Block, ReadWait::CachedOnly] {
            let mut buf = BytesMut::from(&b"ab"[..]);
            let n = match pread_into(&f, &mut buf, 4, 3, wait) {
                Err(e) if e.kind() == io::ErrorKind::Unsupported => continue,
                other => other.unwrap(),
            };
            assert_eq!(n, 4);
            assert_eq!(&buf[..], b"ab3456");
            assert_eq!(pread_into(&f, &mut buf, 4, 10, wait).unwrap(), 0);
            assert_eq!(&buf[..], b"ab3456");
        }
    }

    #[test]
    fn writeback_of_a_written_range_starts() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[7; 8192]).unwrap();
        start_writeback(&f, 0, 8192).unwrap();
        // A range past the end is not an error either: nothing is dirty there.
        start_writeback(&f, 8192, 4096).unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(
            pread_into(&f, &mut buf, 8192, 0, ReadWait::Block).unwrap(),
            8192
        );
        assert!(buf.iter().all(|&b| b == 7));
    }
}
