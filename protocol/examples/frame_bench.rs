//! Throughput of framing the hot path: output `Data` frames of 64 KiB, encoded with
//! `encode_into` and decoded with `Decoder` in 16 KiB pieces (as QUIC delivers them).
//!
//! Baseline, measured in the same run: the same frames with the payload encoded as a
//! plain `Vec<u8>` sequence (serde's default, one call per byte), which is what the
//! protocol crate did before payloads were marked as byte strings. The wire bytes are
//! identical; only the CPU cost differs.
//!
//! `cargo run --release -p qexec-protocol --example frame_bench`

use std::hint::black_box;
use std::time::Instant;

use qexec_protocol::{Decoder, OutputFrame, OutputStream, encode_into};
use serde::{Deserialize, Serialize};

const CHUNK: usize = 64 * 1024;
const FRAMES: usize = 256; // 16 MiB per round
const ROUNDS: usize = 15;

/// `OutputFrame` with the payload as a plain sequence: the baseline.
#[derive(Serialize, Deserialize)]
enum SeqFrame {
    Header,
    Data {
        stream: OutputStream,
        offset: u64,
        data: Vec<u8>,
    },
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median MiB/s of encoding and decoding `FRAMES` frames built by `make`.
fn measure<T, F>(make: F) -> (f64, f64)
where
    T: Serialize + for<'de> Deserialize<'de>,
    F: Fn(u64, Vec<u8>) -> T,
{
    let payload: Vec<u8> = (0..CHUNK).map(|i| (i * 31) as u8).collect();
    let frames: Vec<T> = (0..FRAMES)
        .map(|i| make((i * CHUNK) as u64, payload.clone()))
        .collect();
    let mib = (FRAMES * CHUNK) as f64 / (1024.0 * 1024.0);
    let (mut enc, mut dec) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let mut wire = Vec::with_capacity(FRAMES * (CHUNK + 32));
        let t = Instant::now();
        for f in &frames {
            encode_into(f, &mut wire).expect("frame fits");
        }
        enc.push(mib / t.elapsed().as_secs_f64());

        let t = Instant::now();
        let mut d = Decoder::new();
        let mut n = 0;
        for piece in wire.chunks(16 * 1024) {
            d.push(piece);
            while let Some(m) = d.next::<T>().expect("valid frames") {
                black_box(&m);
                n += 1;
            }
        }
        dec.push(mib / t.elapsed().as_secs_f64());
        assert_eq!(n, FRAMES);
    }
    (median(enc), median(dec))
}

fn main() {
    let (enc, dec) = measure(|offset, data| OutputFrame::Data {
        stream: OutputStream::Stdout,
        offset,
        data,
    });
    let (base_enc, base_dec) = measure(|offset, data| SeqFrame::Data {
        stream: OutputStream::Stdout,
        offset,
        data,
    });
    black_box(SeqFrame::Header);
    println!("64 KiB output Data frames, median of {ROUNDS} rounds of {FRAMES} frames");
    println!(
        "encode: {enc:8.0} MiB/s   baseline (per-byte sequence) {base_enc:8.0} MiB/s   ratio {:.1}x",
        enc / base_enc
    );
    println!(
        "decode: {dec:8.0} MiB/s   baseline (per-byte sequence) {base_dec:8.0} MiB/s   ratio {:.1}x",
        dec / base_dec
    );
}
