//! Whole lines of one host's stream, each behind the host's prefix (`build-01 | `),
//! so the output of several hosts never mixes inside a line.
//!
//! The job's bytes pass unchanged (no escaping, no UTF-8 check): only the prefix is
//! added before each line. A line is held until its newline arrives, at most
//! [`MAX_LINE`] bytes: a longer one is cut there and goes out as a line of its own
//! (memory per host stays bounded whatever the job writes).

/// Longest part of a line held back waiting for its newline.
pub(super) const MAX_LINE: usize = 64 * 1024;

/// Splits one host's stream (stdout or stderr) into prefixed lines.
#[derive(Debug)]
pub(super) struct Lines {
    prefix: Vec<u8>,
    partial: Vec<u8>,
}

impl Lines {
    /// Lines behind `prefix` (written as given, e.g. `b"build-01 | "`).
    pub(super) fn new(prefix: &[u8]) -> Self {
        Self {
            prefix: prefix.to_vec(),
            partial: Vec::new(),
        }
    }

    /// Appends to `out` every line `data` completes, each prefixed; keeps the rest.
    pub(super) fn push(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() {
            let room = MAX_LINE - self.partial.len();
            match data[..data.len().min(room)]
                .iter()
                .position(|&b| b == b'\n')
            {
                Some(i) => {
                    self.emit(&data[..=i], out);
                    data = &data[i + 1..];
                }
                None if data.len() >= room => {
                    // A line at the cap: it goes out now, cut, as a line of its own.
                    self.emit(&data[..room], out);
                    out.push(b'\n');
                    data = &data[room..];
                }
                None => {
                    self.partial.extend_from_slice(data);
                    return;
                }
            }
        }
    }

    /// Appends the held part of a line (if any) to `out`, ended by a newline: the
    /// stream is over.
    pub(super) fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.partial.is_empty() {
            self.emit(&[], out);
            out.push(b'\n');
        }
    }

    /// The prefix, the held part and `rest` (which ends the line, or is cut).
    fn emit(&mut self, rest: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&self.prefix);
        out.append(&mut self.partial);
        out.extend_from_slice(rest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(chunks: &[&[u8]]) -> Vec<u8> {
        let mut lines = Lines::new(b"h | ");
        let mut out = Vec::new();
        for c in chunks {
            lines.push(c, &mut out);
        }
        lines.finish(&mut out);
        out
    }

    #[test]
    fn lines_are_prefixed_whole_across_chunks() {
        assert_eq!(
            feed(&[b"one\ntw", b"o\nthr", b"ee"]),
            b"h | one\nh | two\nh | three\n"
        );
        assert_eq!(feed(&[b"\n\n"]), b"h | \nh | \n");
        assert_eq!(feed(&[]), b"");
        // Not held back: a complete line goes out with the chunk that ends it.
        let mut lines = Lines::new(b"h | ");
        let mut out = Vec::new();
        lines.push(b"a\nb", &mut out);
        assert_eq!(out, b"h | a\n");
        lines.push(b"c\n", &mut out);
        assert_eq!(out, b"h | a\nh | bc\n");
    }

    #[test]
    fn bytes_pass_unchanged() {
        assert_eq!(
            feed(&[b"\xff\x00\x1b[31m\r\n"]),
            b"h | \xff\x00\x1b[31m\r\n".to_vec()
        );
    }

    #[test]
    fn a_line_at_the_cap_is_cut_there() {
        assert_eq!(
            MAX_LINE, 65_536,
            "documented as 64 KiB in CLI.md and --help"
        );
        let exactly = vec![b'x'; MAX_LINE - 1];
        let mut line = exactly.clone();
        line.push(b'\n');
        // MAX_LINE bytes with its newline: one line, uncut.
        let out = feed(&[&line]);
        assert_eq!(out.len(), 4 + MAX_LINE);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        // One byte more: cut after MAX_LINE bytes, the rest its own line.
        let long = vec![b'y'; MAX_LINE + 1];
        let out = feed(&[&long[..10], &long[10..]]);
        let mut want = b"h | ".to_vec();
        want.extend_from_slice(&long[..MAX_LINE]);
        want.extend_from_slice(b"\nh | y\n");
        assert_eq!(out, want);
    }
}
