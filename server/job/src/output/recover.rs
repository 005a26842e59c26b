//! Reopening the log of a job a previous manager wrote (spec: QX-DUR-2, QX-DUR-6).
//!
//! The file format is self-describing (records of `[stream][len][payload]`), so a log
//! is recovered by walking its record headers: every whole record counts; a record cut
//! short (the server died while writing it) or a byte that is no stream tag ends the
//! log there. The file itself is never modified.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{Committed, HEADER_LEN, LogShared, ReadHandle, SparseIndex, TAG_STDERR, TAG_STDOUT};

/// A log reopened read-only, its end already published.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// Shared state for readers: committed up to the last whole record, ended.
    pub(crate) shared: Arc<LogShared>,
    /// Why the walk stopped before the end of the file, if it did.
    pub(crate) damage: Option<String>,
}

impl LogShared {
    /// Recovers the log at `path` (see the module docs). `discarded` is carried into
    /// the committed state (the original writer's count of bytes not kept). A missing
    /// file is an error; a damaged one is recovered up to the damage.
    pub(crate) fn recover(path: PathBuf, discarded: u64) -> io::Result<Recovered> {
        let file = File::options().read(true).open(&path)?;
        let len = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(64 << 10, file);
        let mut index = SparseIndex::new();
        let mut state = Committed {
            discarded,
            ended: true,
            ..Committed::default()
        };
        let mut damage = None;
        let mut header = [0u8; HEADER_LEN];
        while state.file_len < len {
            if len - state.file_len < HEADER_LEN as u64 {
                damage = Some(format!(
                    "a record header is cut short at byte {}",
                    state.file_len
                ));
                break;
            }
            reader.read_exact(&mut header)?;
            let payload = u64::from(u32::from_le_bytes([
                header[1], header[2], header[3], header[4],
            ]));
            let end = state.file_len + HEADER_LEN as u64 + payload;
            if header[0] != TAG_STDOUT && header[0] != TAG_STDERR {
                damage = Some(format!(
                    "byte {} is no stream tag ({})",
                    state.file_len, header[0]
                ));
                break;
            }
            if end > len {
                damage = Some(format!(
                    "the record at byte {} is cut short ({} of {payload} payload bytes)",
                    state.file_len,
                    len - state.file_len - HEADER_LEN as u64
                ));
                break;
            }
            reader.seek_relative(i64::try_from(payload).map_err(io::Error::other)?)?;
            index.record_start(state.payload, state.file_len);
            state.payload += payload;
            state.file_len = end;
            if header[0] == TAG_STDOUT {
                state.stdout += payload;
            } else {
                state.stderr += payload;
            }
        }
        let (committed, _) = watch::channel(state);
        Ok(Recovered {
            shared: Arc::new(LogShared {
                path,
                committed,
                index: Mutex::new(index),
                read_handle: Mutex::new(ReadHandle::default()),
            }),
            damage,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use qexec_protocol::OutputStream;

    use super::super::{LogReader, LogWriter, ReadEvent};
    use super::*;

    async fn read_all(shared: &Arc<LogShared>) -> Vec<(OutputStream, Vec<u8>)> {
        let mut r = LogReader::open(shared, 0).unwrap();
        let mut out = Vec::new();
        loop {
            match r.next().await.unwrap() {
                ReadEvent::Data { stream, data, .. } => out.push((stream, data.to_vec())),
                ReadEvent::End => return out,
            }
        }
    }

    #[tokio::test]
    async fn a_whole_log_comes_back_as_written_and_a_cut_one_up_to_the_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output");
        let mut w = LogWriter::create(path.clone(), u64::MAX).unwrap();
        w.append(OutputStream::Stdout, b"hello ").unwrap();
        w.append(OutputStream::Stderr, b"oops").unwrap();
        w.append(OutputStream::Stdout, b"world").unwrap();
        let written = w.committed();
        drop(w);

        let r = LogShared::recover(path.clone(), 0).unwrap();
        assert_eq!(r.damage, None);
        let c = r.shared.committed();
        assert_eq!(
            (c.payload, c.file_len, c.stdout, c.stderr),
            (written.payload, written.file_len, 11, 4)
        );
        assert!(c.ended);
        assert_eq!(
            read_all(&r.shared).await,
            vec![
                (OutputStream::Stdout, b"hello ".to_vec()),
                (OutputStream::Stderr, b"oops".to_vec()),
                (OutputStream::Stdout, b"world".to_vec()),
            ]
        );

        // Cut inside the last record: the first two survive.
        let f = File::options().write(true).open(&path).unwrap();
        f.set_len(written.file_len - 2).unwrap();
        let r = LogShared::recover(path.clone(), 0).unwrap();
        assert!(
            r.damage.as_deref().unwrap().contains("cut short"),
            "{:?}",
            r.damage
        );
        assert_eq!(r.shared.committed().payload, 10);
        assert_eq!(read_all(&r.shared).await.len(), 2);

        // Garbage after whole records: the whole records survive.
        f.set_len(written.file_len - (HEADER_LEN as u64 + 5))
            .unwrap();
        let mut f = File::options().append(true).open(&path).unwrap();
        f.write_all(&[9, 9, 9, 9, 9, 9, 9]).unwrap();
        let r = LogShared::recover(path.clone(), 3).unwrap();
        assert!(r.damage.is_some());
        assert_eq!(r.shared.committed().payload, 10);
        assert_eq!(r.shared.committed().discarded, 3);

        assert!(LogShared::recover(dir.path().join("missing"), 0).is_err());
    }
}
