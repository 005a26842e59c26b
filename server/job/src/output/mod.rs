//! The per-job output log and its readers (followers).
//!
//! # File format
//! One append-only file per job (`<state_dir>/jobs/<id>/output`) holding records
//! `[stream: u8][len: u32 LE][len payload bytes]`, stream 1 = stdout, 2 = stderr, in
//! the order the server captured them. The *combined offset* of a byte is the number
//! of payload bytes before it (headers do not count), so it is the same offset a
//! client sees in `Data` frames. Order within a stream is exact; between the two
//! streams it is the order of the server's reads (stdout and stderr are two pipes, so
//! bytes written to both close together may be captured in either order).
//!
//! # Writer and followers
//! Exactly one [`LogWriter`] (owned by the job's output pump thread, `pump`, or
//! for a terminal job by its supervisor) appends whole records
//! with positioned writes, then publishes the committed `(payload length, file length)`
//! through a [`tokio::sync::watch`] channel. Readers ([`LogReader`]) never poll: they
//! wait on that channel when they have read everything committed. A reader has its
//! own position and reads with `pread` on a read handle all readers of the log share
//! (one fd per log, not per reader: kept while the writer lives, afterwards only
//! while a reader is reading; a reader holds none between events).
//! It reads on the runtime thread what the page cache holds (`RWF_NOWAIT`, no thread
//! hop: the bytes were usually written just before) and only on a miss in
//! `spawn_blocking`, so a slow disk never stalls the runtime. A read fills
//! uninitialised buffer room (no zeroing). A reader never blocks the writer or another
//! reader, and dropping it releases everything it held.
//!
//! A reader reads at most `READ_CHUNK` = 64 KiB (one `Data` frame) at a time, and only
//! when its consumer asks for the next event, i.e. when the previous chunk was handed
//! on: a follower whose peer stopped reading holds at most one chunk beyond what its
//! stream window accepted (spec: QX-SEC-4), and no fd while it waits for new output.
//!
//! # Memory
//! The writer keeps no output in memory beyond its pipe buffer. A sparse index maps
//! payload offsets to record starts (one entry about every `INDEX_INTERVAL` of
//! payload; when it grows past `INDEX_MAX_ENTRIES` every other entry is dropped and
//! the interval doubles), so a reader can start at any offset after reading at most a
//! few MiB, and the index stays below 16 KiB whatever the output volume.

use std::fs::File;
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use bytes::{Buf, Bytes, BytesMut};
use qexec_protocol::OutputStream;
use tokio::sync::watch;

use crate::sys::{ReadWait, pread_into, start_writeback};

/// Bytes of a record header: stream tag and payload length.
pub(crate) const HEADER_LEN: usize = 5;
/// Payload bytes between two index entries at first.
const INDEX_INTERVAL: u64 = 1 << 20;
/// Index entries kept at most (16 bytes each).
const INDEX_MAX_ENTRIES: usize = 1024;
/// Largest single read of a reader: one `Data` frame (QX-LIMIT-11), so what a
/// stalled follower holds is bounded by it.
const READ_CHUNK: usize = qexec_protocol::limits::MAX_OUTPUT_CHUNK;
/// Bytes of log written between two starts of their writeback (see
/// [`LogWriter::write_back_behind`]).
const WRITEBACK_STEP: u64 = 8 << 20;

const TAG_STDOUT: u8 = 1;
const TAG_STDERR: u8 = 2;

fn tag(stream: OutputStream) -> u8 {
    match stream {
        OutputStream::Stdout => TAG_STDOUT,
        OutputStream::Stderr => TAG_STDERR,
    }
}

/// What the writer has made durable-for-readers so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Committed {
    /// Combined payload bytes committed.
    pub(crate) payload: u64,
    /// File length covering exactly those whole records.
    pub(crate) file_len: u64,
    /// Payload bytes from stdout.
    pub(crate) stdout: u64,
    /// Payload bytes from stderr.
    pub(crate) stderr: u64,
    /// Output bytes the job wrote that were not kept (output cap or log error).
    pub(crate) discarded: u64,
    /// No record will ever follow.
    pub(crate) ended: bool,
}

/// Sparse map from payload offsets to record starts.
#[derive(Debug)]
struct SparseIndex {
    interval: u64,
    /// `(payload offset, file position)` of record starts, increasing.
    entries: Vec<(u64, u64)>,
}

impl SparseIndex {
    fn new() -> Self {
        Self {
            interval: INDEX_INTERVAL,
            entries: Vec::new(),
        }
    }

    /// Notes that a record starts at `file_pos` with payload offset `payload`.
    fn record_start(&mut self, payload: u64, file_pos: u64) {
        let last = self.entries.last().map_or(0, |e| e.0);
        if payload < last + self.interval {
            return;
        }
        self.entries.push((payload, file_pos));
        if self.entries.len() > INDEX_MAX_ENTRIES {
            let mut keep = 0;
            self.entries.retain(|_| {
                keep += 1;
                keep % 2 == 0
            });
            self.interval *= 2;
        }
    }

    /// The last record start at or before `offset`.
    fn lookup(&self, offset: u64) -> (u64, u64) {
        let i = self.entries.partition_point(|e| e.0 <= offset);
        if i == 0 { (0, 0) } else { self.entries[i - 1] }
    }
}

/// The read handle of a log: kept open while the writer lives (once a reader
/// opened it), afterwards only while a reader holds it.
#[derive(Debug, Default)]
struct ReadHandle {
    kept: Option<Arc<File>>,
    shared: Weak<File>,
    ended: bool,
}

/// State shared by the writer and every reader of one log.
#[derive(Debug)]
pub(crate) struct LogShared {
    path: PathBuf,
    committed: watch::Sender<Committed>,
    index: Mutex<SparseIndex>,
    /// The read handle the readers share.
    read_handle: Mutex<ReadHandle>,
}

impl LogShared {
    /// What is committed now.
    pub(crate) fn committed(&self) -> Committed {
        *self.committed.borrow()
    }

    /// The log file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The shared read handle of the log: the one a reader holds now, or a new one.
    fn read_handle(&self) -> io::Result<Arc<File>> {
        let mut slot = self
            .read_handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = slot.shared.upgrade() {
            return Ok(file);
        }
        let file = Arc::new(
            File::options()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&self.path)?,
        );
        slot.shared = Arc::downgrade(&file);
        if !slot.ended {
            slot.kept = Some(Arc::clone(&file));
        }
        Ok(file)
    }

    /// Waits until the log has ended (the writer finished or was dropped).
    pub(crate) async fn wait_ended(&self) {
        let mut rx = self.committed.subscribe();
        // The sender lives in `self`, so `wait_for` can only fail if it is closed,
        // which it never is while we hold `self`.
        let _ = rx.wait_for(|c| c.ended).await;
    }
}

/// Failure of [`LogWriter::splice_from`].
#[derive(Debug)]
pub(crate) enum SpliceError {
    /// The file system (or this pair of files) does not support splicing, or the
    /// log has no room left: use the read-and-append path.
    Unsupported,
    /// Reading the pipe failed (`WouldBlock`: it is empty).
    Io(io::Error),
    /// Writing the log failed; from now on output is discarded (and counted).
    Log(io::Error),
}

/// Outcome of one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Every byte was kept.
    All,
    /// The cap was reached: some or all bytes were discarded.
    CapReached,
}

/// The single writer of a job's output log.
#[derive(Debug)]
pub(crate) struct LogWriter {
    /// `None` only inside `drop`.
    file: Option<File>,
    shared: Arc<LogShared>,
    state: Committed,
    cap: u64,
    failed: bool,
    /// File position up to which writeback was started.
    written_back: u64,
}

impl LogWriter {
    /// Creates the log file (it must not exist) with a payload cap of `cap` bytes.
    pub(crate) fn create(path: PathBuf, cap: u64) -> io::Result<Self> {
        let file = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)?;
        let (committed, _) = watch::channel(Committed::default());
        Ok(Self {
            file: Some(file),
            shared: Arc::new(LogShared {
                path,
                committed,
                index: Mutex::new(SparseIndex::new()),
                read_handle: Mutex::new(ReadHandle::default()),
            }),
            state: Committed::default(),
            cap,
            failed: false,
            written_back: 0,
        })
    }

    /// The state readers need.
    pub(crate) fn shared(&self) -> &Arc<LogShared> {
        &self.shared
    }

    /// Appends one record whose payload is `buf[HEADER_LEN..HEADER_LEN + len]`; the
    /// first [`HEADER_LEN`] bytes of `buf` are scratch space for the header, so the
    /// whole record goes out in one write without copying the payload.
    ///
    /// Past the cap, bytes are counted as discarded and [`Appended::CapReached`] is
    /// returned. A write error is returned once; from then on output is discarded
    /// (and counted), the log keeps every record committed before.
    pub(crate) fn append_framed(
        &mut self,
        stream: OutputStream,
        buf: &mut [u8],
        len: usize,
    ) -> io::Result<Appended> {
        let room = self.cap.saturating_sub(self.state.payload);
        let keep = if self.failed {
            0
        } else {
            len.min(usize::try_from(room).unwrap_or(usize::MAX))
        };
        let mut result = Ok(if keep < len {
            Appended::CapReached
        } else {
            Appended::All
        });
        if keep > 0 {
            buf[0] = tag(stream);
            // `keep` <= `len` <= the caller's buffer, far below 4 GiB.
            let keep32 = u32::try_from(keep).map_err(io::Error::other)?;
            buf[1..HEADER_LEN].copy_from_slice(&keep32.to_le_bytes());
            // Positioned write: after a failed write, nothing past `file_len` is
            // committed, so a partial record is never visible.
            let written = match &self.file {
                Some(file) => file.write_all_at(&buf[..HEADER_LEN + keep], self.state.file_len),
                None => Err(io::Error::other("output log already closed")),
            };
            match written {
                Ok(()) => self.commit(stream, keep),
                Err(e) => {
                    self.failed = true;
                    self.state.discarded += keep as u64;
                    result = Err(e);
                }
            }
        }
        self.state.discarded += (len - keep) as u64;
        self.shared.committed.send_replace(self.state);
        result
    }

    /// Payload bytes that may still be kept (0 past the cap or after a write error).
    pub(crate) fn room(&self) -> u64 {
        if self.failed {
            0
        } else {
            self.cap.saturating_sub(self.state.payload)
        }
    }

    /// Moves up to `max` bytes waiting in `pipe` into a new record with `splice(2)`:
    /// the kernel copies them from the pipe into the file's pages, nothing goes
    /// through user space. The payload is placed after room for the header, then the
    /// header is written; readers see the record once both are done.
    ///
    /// Returns the bytes moved, 0 at end of file. Never keeps more than
    /// [`LogWriter::room`] (the caller reads and discards past the cap).
    /// Errors: `WouldBlock` when the pipe is empty; [`SpliceError::Unsupported`]
    /// when this file system cannot splice (use [`LogWriter::append_framed`]).
    pub(crate) fn splice_from(
        &mut self,
        stream: OutputStream,
        pipe: BorrowedFd<'_>,
        max: usize,
    ) -> Result<usize, SpliceError> {
        let max = max.min(usize::try_from(self.room()).unwrap_or(usize::MAX));
        let file = self.file.as_ref().ok_or(SpliceError::Unsupported)?;
        if max == 0 {
            return Err(SpliceError::Unsupported);
        }
        let mut at = i64::try_from(self.state.file_len + HEADER_LEN as u64)
            .map_err(|_| SpliceError::Unsupported)?;
        let moved = nix::fcntl::splice(
            pipe,
            None,
            file,
            Some(&mut at),
            max,
            nix::fcntl::SpliceFFlags::SPLICE_F_NONBLOCK,
        );
        let n = match moved {
            Ok(n) => n,
            Err(nix::errno::Errno::EAGAIN) => {
                return Err(SpliceError::Io(io::ErrorKind::WouldBlock.into()));
            }
            Err(nix::errno::Errno::EINVAL) => return Err(SpliceError::Unsupported),
            Err(e) => return Err(SpliceError::Io(e.into())),
        };
        if n == 0 {
            return Ok(0);
        }
        let mut header = [0u8; HEADER_LEN];
        header[0] = tag(stream);
        // `n` <= `max`, far below 4 GiB (the pipe holds at most its size).
        let n32 = u32::try_from(n).map_err(|e| SpliceError::Io(io::Error::other(e)))?;
        header[1..].copy_from_slice(&n32.to_le_bytes());
        if let Err(e) = file.write_all_at(&header, self.state.file_len) {
            self.failed = true;
            self.state.discarded += n as u64;
            self.shared.committed.send_replace(self.state);
            return Err(SpliceError::Log(e));
        }
        self.commit(stream, n);
        Ok(n)
    }

    /// Starts the writeback of what was written since the last call, once that is
    /// [`WRITEBACK_STEP`] or more, without waiting for it: the log's pages stay
    /// cached for followers (clean instead of dirty), and a job writing gigabytes
    /// does not leave them dirty until the kernel throttles every writer and
    /// writes them back in one burst. Not an `fsync`: nothing is promised about
    /// durability. May wait while the device's queue is full, so it is called by
    /// the output pump's thread, never on the runtime.
    pub(crate) fn write_back_behind(&mut self) {
        let len = self.state.file_len - self.written_back;
        if len < WRITEBACK_STEP {
            return;
        }
        let Some(file) = &self.file else {
            return;
        };
        if let Err(e) = start_writeback(file, self.written_back, len) {
            // Only a hint: the kernel writes the pages back in its own time.
            tracing::debug!(path = %self.shared.path.display(), error = %e, "cannot start the output log's writeback");
        }
        self.written_back = self.state.file_len;
    }

    /// Publishes a record of `n` payload bytes written at `file_len`.
    fn commit(&mut self, stream: OutputStream, n: usize) {
        self.shared
            .index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record_start(self.state.payload, self.state.file_len);
        self.state.payload += n as u64;
        self.state.file_len += (HEADER_LEN + n) as u64;
        match stream {
            OutputStream::Stdout => self.state.stdout += n as u64,
            OutputStream::Stderr => self.state.stderr += n as u64,
        }
        self.shared.committed.send_replace(self.state);
    }

    /// Appends `data` (copies it; [`LogWriter::append_framed`] avoids the copy).
    #[cfg(test)]
    pub(crate) fn append(&mut self, stream: OutputStream, data: &[u8]) -> io::Result<Appended> {
        let mut buf = vec![0; HEADER_LEN + data.len()];
        buf[HEADER_LEN..].copy_from_slice(data);
        self.append_framed(stream, &mut buf, data.len())
    }

    /// What is committed so far.
    #[cfg(test)]
    pub(crate) fn committed(&self) -> Committed {
        self.state
    }
}

impl Drop for LogWriter {
    /// Ends the log: readers deliver what is committed, then end.
    fn drop(&mut self) {
        // Close the file first: whoever sees the end sees no fd of this job left.
        drop(self.file.take());
        {
            let mut handle = self
                .shared
                .read_handle
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            handle.ended = true;
            handle.kept = None;
        }
        self.state.ended = true;
        self.shared.committed.send_replace(self.state);
    }
}

/// One event of a [`LogReader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReadEvent {
    /// Payload bytes of one record (or of its part at or after the start offset).
    Data {
        /// Which stream.
        stream: OutputStream,
        /// Combined offset of `data[0]`.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// The log ended and everything was delivered.
    End,
}

/// A reader of a log from a combined offset, at its own pace.
#[derive(Debug)]
pub(crate) struct LogReader {
    shared: Arc<LogShared>,
    /// The shared read handle, held while reading; let go whenever an event is
    /// handed out or the reader waits for more output.
    file: Option<Arc<File>>,
    rx: watch::Receiver<Committed>,
    /// File position of `chunk[0]` (the next unconsumed byte).
    pos: u64,
    /// Combined offset of the next payload byte.
    offset: u64,
    /// Bytes before this combined offset are not delivered.
    from: u64,
    /// The record being read and its payload bytes still to come.
    record: Option<(OutputStream, u64)>,
    /// Bytes read from the file at `pos`, not consumed yet.
    chunk: Bytes,
    /// Read buffer; its room is reused once the chunks handed out are dropped.
    buf: BytesMut,
}

impl LogReader {
    /// Opens a reader at combined offset `from`.
    pub(crate) fn open(shared: &Arc<LogShared>, from: u64) -> io::Result<Self> {
        let file = shared.read_handle()?;
        let (offset, pos) = shared
            .index
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lookup(from);
        Ok(Self {
            shared: Arc::clone(shared),
            file: Some(file),
            rx: shared.committed.subscribe(),
            pos,
            offset,
            from,
            record: None,
            chunk: Bytes::new(),
            buf: BytesMut::new(),
        })
    }

    /// The next event. Waits (on the writer's notification) while everything
    /// committed was delivered and the log has not ended. Cancel-safe: dropping
    /// the future loses no data.
    ///
    /// spec: QX-STREAM-12 (contiguous offsets, one stream per event), QX-STREAM-13
    /// (the end only after every byte), QX-STREAM-14 (any start offset; past the
    /// written bytes the first event waits for them, or the end comes first).
    pub(crate) async fn next(&mut self) -> io::Result<ReadEvent> {
        loop {
            if let Some((stream, left)) = self.record {
                if !self.chunk.is_empty() {
                    let take = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(self.chunk.len());
                    let mut data = self.chunk.split_to(take);
                    let start = self.offset;
                    self.pos += take as u64;
                    self.offset += take as u64;
                    self.record = (left > take as u64).then_some((stream, left - take as u64));
                    if self.offset <= self.from {
                        continue;
                    }
                    // Whoever holds this chunk may wait long (a stalled peer): no fd
                    // is held meanwhile; the next read takes the shared handle again.
                    self.file = None;
                    let offset = if start < self.from {
                        // `from - start` < `take` here.
                        data.advance((self.from - start) as usize);
                        self.from
                    } else {
                        start
                    };
                    return Ok(ReadEvent::Data {
                        stream,
                        offset,
                        data,
                    });
                }
            } else if self.chunk.len() >= HEADER_LEN {
                let stream = match self.chunk[0] {
                    TAG_STDOUT => OutputStream::Stdout,
                    TAG_STDERR => OutputStream::Stderr,
                    other => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "corrupt output log: stream tag {other} at byte {}",
                                self.pos
                            ),
                        ));
                    }
                };
                let len = u32::from_le_bytes([
                    self.chunk[1],
                    self.chunk[2],
                    self.chunk[3],
                    self.chunk[4],
                ]);
                self.chunk.advance(HEADER_LEN);
                self.pos += HEADER_LEN as u64;
                self.record = (len > 0).then_some((stream, u64::from(len)));
                continue;
            } else {
                // A header cut by the end of the chunk: read again from `pos`.
                self.chunk.clear();
            }

            let committed = *self.rx.borrow_and_update();
            if self.pos < committed.file_len {
                let len = (committed.file_len - self.pos).min(READ_CHUNK as u64) as usize;
                self.chunk = self.read_chunk(len).await?;
                continue;
            }
            // Nothing to read now: no fd held while waiting (or after the end).
            self.file = None;
            if committed.ended {
                return Ok(ReadEvent::End);
            }
            if self.rx.changed().await.is_err() {
                // The sender is gone without an end mark; nothing more can come.
                return Ok(ReadEvent::End);
            }
        }
    }

    /// Reads up to `len` bytes at `pos` (all committed, so all present in the file):
    /// from the page cache on this thread, else on a blocking thread.
    async fn read_chunk(&mut self, len: usize) -> io::Result<Bytes> {
        let file = match &self.file {
            Some(file) => Arc::clone(file),
            None => {
                let file = self.shared.read_handle()?;
                self.file = Some(Arc::clone(&file));
                file
            }
        };
        let pos = self.pos;
        // Reuses the buffer's room when every chunk handed out of it was dropped.
        self.buf.clear();
        let n = match pread_into(&file, &mut self.buf, len, pos, ReadWait::CachedOnly) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Unsupported
                ) =>
            {
                let mut buf = std::mem::take(&mut self.buf);
                let (result, buf) = tokio::task::spawn_blocking(move || {
                    let r = pread_into(&file, &mut buf, len, pos, ReadWait::Block);
                    (r, buf)
                })
                .await
                .map_err(io::Error::other)?;
                self.buf = buf;
                result?
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "output log {} is shorter than its committed length (byte {pos})",
                    self.shared.path.display()
                ),
            ));
        }
        Ok(self.buf.split().freeze())
    }
}

mod pump;
mod recover;
#[cfg(test)]
mod tests;

pub(crate) use pump::{FINAL_DRAIN_READS, Pump, PumpEvent, READ_BUF};
