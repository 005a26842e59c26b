//! The output log round trips, bounds its index, caps, splices and wakes readers.

use super::*;

fn collect_until_end(
    rt: &tokio::runtime::Runtime,
    reader: &mut LogReader,
) -> Vec<(OutputStream, u64, Vec<u8>)> {
    rt.block_on(async {
        let mut out = Vec::new();
        loop {
            match reader.next().await.unwrap() {
                ReadEvent::Data {
                    stream,
                    offset,
                    data,
                } => out.push((stream, offset, data.to_vec())),
                ReadEvent::End => return out,
            }
        }
    })
}

/// Joins consecutive events of one stream (a record may come in several events:
/// a reader reads at most `READ_CHUNK` at a time).
fn merge_runs(events: Vec<(OutputStream, u64, Vec<u8>)>) -> Vec<(OutputStream, u64, Vec<u8>)> {
    let mut out: Vec<(OutputStream, u64, Vec<u8>)> = Vec::new();
    for (stream, offset, data) in events {
        match out.last_mut() {
            Some((s, o, d)) if *s == stream && *o + d.len() as u64 == offset => {
                d.extend_from_slice(&data);
            }
            _ => out.push((stream, offset, data)),
        }
    }
    out
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn flatten(events: &[(OutputStream, u64, Vec<u8>)]) -> Vec<u8> {
    let mut v = Vec::new();
    for (_, off, d) in events {
        assert_eq!(*off as usize, v.len(), "offsets are contiguous");
        v.extend_from_slice(d);
    }
    v
}

#[test]
fn records_round_trip_with_offsets_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path().join("output"), u64::MAX).unwrap();
    w.append(OutputStream::Stdout, b"hello ").unwrap();
    w.append(OutputStream::Stderr, b"oops").unwrap();
    w.append(OutputStream::Stdout, b"world").unwrap();
    let shared = Arc::clone(w.shared());
    let c = w.committed();
    assert_eq!((c.payload, c.stdout, c.stderr), (15, 11, 4));
    assert_eq!(c.file_len, 15 + 3 * HEADER_LEN as u64);
    drop(w);
    let rt = rt();
    let mut r = LogReader::open(&shared, 0).unwrap();
    let ev = collect_until_end(&rt, &mut r);
    assert_eq!(
        ev,
        vec![
            (OutputStream::Stdout, 0, b"hello ".to_vec()),
            (OutputStream::Stderr, 6, b"oops".to_vec()),
            (OutputStream::Stdout, 10, b"world".to_vec()),
        ]
    );
    // Starting inside a record yields its tail at the right offset.
    let mut r = LogReader::open(&shared, 8).unwrap();
    let ev = collect_until_end(&rt, &mut r);
    assert_eq!(
        ev,
        vec![
            (OutputStream::Stderr, 8, b"ps".to_vec()),
            (OutputStream::Stdout, 10, b"world".to_vec()),
        ]
    );
    // Past the end: only the end.
    let mut r = LogReader::open(&shared, 99).unwrap();
    assert!(collect_until_end(&rt, &mut r).is_empty());
}

#[test]
fn index_stays_bounded_and_lookups_land_on_record_starts() {
    // 10 GiB of payload in 64 KiB records (index only, no file).
    let mut idx = SparseIndex::new();
    let record = 64u64 << 10;
    let n = (10u64 << 30) / record;
    for i in 0..n {
        idx.record_start(i * record, i * (record + HEADER_LEN as u64));
    }
    assert!(idx.entries.len() <= INDEX_MAX_ENTRIES);
    assert!(idx.entries.len() > INDEX_MAX_ENTRIES / 4);
    assert!(idx.interval > INDEX_INTERVAL, "compaction happened");
    for &(payload, pos) in &idx.entries {
        assert_eq!(payload % record, 0, "entry at a record start");
        assert_eq!(pos, payload / record * (record + HEADER_LEN as u64));
    }
    for target in [0, 5, 3 << 30, (10u64 << 30) - 1] {
        let (p, _) = idx.lookup(target);
        assert!(p <= target && target - p <= 2 * idx.interval, "{target}");
    }
}

#[test]
fn big_log_reads_back_identically_from_any_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path().join("output"), u64::MAX).unwrap();
    let mut expected = Vec::new();
    let mut n = 0u32;
    // Records of varied sizes so headers straddle read chunks.
    for i in 0..400usize {
        let len = (i * 7919) % 70_000 + 1;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                n = n.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (n >> 16) as u8
            })
            .collect();
        let s = if i % 2 == 0 {
            OutputStream::Stdout
        } else {
            OutputStream::Stderr
        };
        w.append(s, &data).unwrap();
        expected.extend_from_slice(&data);
    }
    let shared = Arc::clone(w.shared());
    drop(w);
    let rt = rt();
    for from in [
        0,
        1,
        4_999_999,
        expected.len() as u64 / 2,
        expected.len() as u64 - 1,
    ] {
        let mut r = LogReader::open(&shared, from).unwrap();
        let ev = collect_until_end(&rt, &mut r);
        assert_eq!(ev.first().map(|e| e.1), Some(from));
        let got: Vec<u8> = ev.iter().flat_map(|e| e.2.iter().copied()).collect();
        assert!(got == expected[from as usize..], "from {from}");
    }
    let mut r = LogReader::open(&shared, 0).unwrap();
    assert_eq!(flatten(&collect_until_end(&rt, &mut r)), expected);
}

#[test]
fn cap_keeps_bytes_up_to_it_and_counts_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path().join("output"), 10).unwrap();
    assert_eq!(
        w.append(OutputStream::Stdout, b"12345678").unwrap(),
        Appended::All
    );
    assert_eq!(
        w.append(OutputStream::Stderr, b"abcdef").unwrap(),
        Appended::CapReached
    );
    assert_eq!(
        w.append(OutputStream::Stdout, b"xyz").unwrap(),
        Appended::CapReached
    );
    let c = w.committed();
    assert_eq!((c.payload, c.stdout, c.stderr, c.discarded), (10, 8, 2, 7));
    let shared = Arc::clone(w.shared());
    drop(w);
    let rt = rt();
    let mut r = LogReader::open(&shared, 0).unwrap();
    assert_eq!(flatten(&collect_until_end(&rt, &mut r)), b"12345678ab");
}

#[test]
fn splice_moves_pipe_bytes_into_records_and_respects_the_cap() {
    use std::os::fd::AsFd;
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path().join("output"), 100_010).unwrap();
    let (r, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
    let empty = w.splice_from(OutputStream::Stdout, r.as_fd(), 1 << 20);
    assert!(matches!(empty, Err(SpliceError::Io(ref e)) if e.kind() == io::ErrorKind::WouldBlock));
    let data: Vec<u8> = (0..60_000u32).map(|i| (i % 253) as u8).collect();
    assert_eq!(nix::unistd::write(&wr, &data).unwrap(), data.len());
    assert_eq!(
        w.splice_from(OutputStream::Stderr, r.as_fd(), 1 << 20)
            .unwrap(),
        60_000
    );
    assert_eq!(nix::unistd::write(&wr, &data).unwrap(), data.len());
    // Only 40,010 bytes of room are left under the cap.
    assert_eq!(
        w.splice_from(OutputStream::Stdout, r.as_fd(), 1 << 20)
            .unwrap(),
        40_010
    );
    assert_eq!(w.room(), 0);
    drop(wr);
    let c = w.committed();
    assert_eq!((c.stdout, c.stderr, c.payload), (40_010, 60_000, 100_010));
    let shared = Arc::clone(w.shared());
    drop(w);
    let rt = rt();
    let mut rd = LogReader::open(&shared, 0).unwrap();
    let ev = merge_runs(collect_until_end(&rt, &mut rd));
    assert_eq!(ev.len(), 2);
    assert_eq!((ev[0].0, ev[0].1), (OutputStream::Stderr, 0));
    assert_eq!((ev[1].0, ev[1].1), (OutputStream::Stdout, 60_000));
    assert!(ev[0].2 == data && ev[1].2 == data[..40_010]);
}

#[test]
fn live_reader_is_woken_by_commits_and_sees_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path().join("output"), u64::MAX).unwrap();
    let shared = Arc::clone(w.shared());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut r = LogReader::open(&shared, 0).unwrap();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                match r.next().await.unwrap() {
                    ReadEvent::Data { data, .. } => got.extend_from_slice(&data),
                    ReadEvent::End => return got,
                }
            }
        });
        let mut expected = Vec::new();
        for i in 0..200u32 {
            let d = i.to_le_bytes();
            w.append(OutputStream::Stdout, &d).unwrap();
            expected.extend_from_slice(&d);
            tokio::task::yield_now().await;
        }
        drop(w);
        let got = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
            .await
            .expect("reader ends after the writer is dropped")
            .unwrap();
        assert_eq!(got, expected);
    });
}

#[test]
fn stalled_reader_does_not_hold_back_another() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path().join("output"), u64::MAX).unwrap();
    let shared = Arc::clone(w.shared());
    let rt = rt();
    let mut stalled = LogReader::open(&shared, 0).unwrap();
    let mut active = LogReader::open(&shared, 0).unwrap();
    rt.block_on(async {
        // The stalled reader took one chunk and then stopped reading.
        w.append(OutputStream::Stdout, &[1; 1000]).unwrap();
        assert!(matches!(
            stalled.next().await.unwrap(),
            ReadEvent::Data { .. }
        ));
        for _ in 0..100 {
            w.append(OutputStream::Stdout, &[2; 100_000]).unwrap();
        }
        drop(w);
        let mut total = 0;
        while let ReadEvent::Data { data, .. } = active.next().await.unwrap() {
            total += data.len();
        }
        assert_eq!(total, 1000 + 100 * 100_000);
    });
    assert_eq!(stalled.offset, 1000);
}

#[test]
fn a_reader_hands_out_at_most_one_chunk_at_a_time_and_shares_one_handle() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = LogWriter::create(dir.path().join("output"), u64::MAX).unwrap();
    w.append(OutputStream::Stdout, &vec![7; 1 << 20]).unwrap();
    let shared = Arc::clone(w.shared());
    let rt = rt();
    let mut readers: Vec<LogReader> = (0..8)
        .map(|_| LogReader::open(&shared, 0).unwrap())
        .collect();
    rt.block_on(async {
        for r in &mut readers {
            match r.next().await.unwrap() {
                ReadEvent::Data { data, .. } => {
                    assert_eq!(data.len(), READ_CHUNK - HEADER_LEN, "one read of one chunk");
                }
                ReadEvent::End => panic!("the log has data"),
            }
            // Between events a reader holds no file handle.
            assert!(r.file.is_none());
        }
    });
    // While the writer lives, every reader shares the one kept read handle.
    let kept = shared.read_handle().unwrap();
    assert_eq!(Arc::strong_count(&kept), 2, "the kept handle and ours");
    drop(kept);
    drop(w);
    // After the end nothing keeps it.
    let handle = shared.read_handle.lock().unwrap();
    assert!(handle.kept.is_none() && handle.shared.upgrade().is_none());
}
