//! Samples → figures: median and spread of several runs, percentiles within a run.

use std::time::Duration;

/// The `p`-quantile (0.0–1.0) of `samples` by nearest rank; `NaN` when empty.
pub(crate) fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let idx = ((s.len() - 1) as f64 * p).round() as usize;
    s[idx.min(s.len() - 1)]
}

/// Median of `samples`; `NaN` when empty.
pub(crate) fn median(samples: &[f64]) -> f64 {
    percentile(samples, 0.5)
}

/// Durations as microseconds.
pub(crate) fn micros(samples: &[Duration]) -> Vec<f64> {
    samples.iter().map(|d| d.as_secs_f64() * 1e6).collect()
}

/// Durations as milliseconds.
pub(crate) fn millis(samples: &[Duration]) -> Vec<f64> {
    samples.iter().map(|d| d.as_secs_f64() * 1e3).collect()
}

/// Bytes moved in `elapsed`, in MB/s (10^6 bytes per second, as `dd` and `pv` print).
pub(crate) fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / elapsed.as_secs_f64() / 1e6
}

/// A streaming 64-bit checksum of a byte sequence, independent of how the bytes are
/// split into chunks (a follower sees other chunk boundaries than the writer). Not
/// cryptographic: it detects lost, repeated or reordered bytes, fast enough to run on
/// gigabytes inside the measurement.
#[derive(Debug, Clone)]
pub(crate) struct Checksum {
    state: u64,
    len: u64,
    tail: [u8; 8],
    tail_len: usize,
}

impl Default for Checksum {
    fn default() -> Self {
        Self {
            state: 0x9e37_79b9_7f4a_7c15,
            len: 0,
            tail: [0; 8],
            tail_len: 0,
        }
    }
}

impl Checksum {
    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word)
            .wrapping_mul(0xff51_afd7_ed55_8ccd)
            .rotate_left(29);
    }

    /// Adds `data` to the checksum.
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if self.tail_len > 0 {
            let take = (8 - self.tail_len).min(data.len());
            self.tail[self.tail_len..self.tail_len + take].copy_from_slice(&data[..take]);
            self.tail_len += take;
            data = &data[take..];
            if self.tail_len < 8 {
                return;
            }
            let w = u64::from_le_bytes(self.tail);
            self.mix(w);
            self.tail_len = 0;
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().expect("chunks of 8")));
        }
        let rest = words.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    /// The checksum of everything added, and the byte count.
    pub(crate) fn finish(mut self) -> (u64, u64) {
        if self.tail_len > 0 {
            let mut last = [0u8; 8];
            last[..self.tail_len].copy_from_slice(&self.tail[..self.tail_len]);
            self.mix(u64::from_le_bytes(last));
        }
        self.mix(self.len);
        (self.state, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(median(&v), 51.0);
        assert_eq!(percentile(&v, 0.99), 100.0);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn checksum_ignores_chunk_boundaries_but_not_content() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        let mut whole = Checksum::default();
        whole.update(&data);
        let whole = whole.finish();
        for split in [1, 3, 7, 8, 9, 4096, 9999] {
            let mut parts = Checksum::default();
            for c in data.chunks(split) {
                parts.update(c);
            }
            assert_eq!(parts.finish(), whole, "split {split}");
        }
        let mut changed = data.clone();
        changed[5000] ^= 1;
        let mut other = Checksum::default();
        other.update(&changed);
        assert_ne!(other.finish(), whole);
        let mut shorter = Checksum::default();
        shorter.update(&data[..9999]);
        assert_ne!(shorter.finish(), whole);
    }
}
