//! What the farm keeps under `--out`: for each finding, `crashes/<id>-<kind>` (the
//! input), `crashes/<id>-<kind>.out` (the first `--keep-output` bytes of its output,
//! stdout and stderr in order) and `crashes/<id>-<kind>.json` (its metadata,
//! [`FindingMeta`]); `<id>` is the first 16 hex digits of the input's SHA-256. The same
//! input with the same kind is kept once: a second time (in this run, or already under
//! `--out` from an earlier run) it is reported as known, and nothing is rewritten.
//!
//! Each file is written under a temporary name and renamed into place, the metadata
//! last: an entry whose `.json` exists is complete, even after a Ctrl-C or a crash.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::FarmError;

/// Directory under `--out` that holds the findings.
pub(super) const CRASHES_DIR: &str = "crashes";

/// Hex digits of the SHA-256 in an entry's name.
const ID_HEX_DIGITS: usize = 16;

/// The metadata file of a finding (`crashes/<id>-<kind>.json`), and the `finding` line
/// of `--json` (which adds `"event": "finding"` and `new`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct FindingMeta {
    /// `crash`, `oom` or `timeout`.
    pub(super) kind: String,
    /// The signal that killed the target, for a crash: `SIGSEGV`, `SIGABRT` …
    pub(super) signal: Option<String>,
    /// The input file, as found under `--corpus` (UTF-8, lossy).
    pub(super) input: String,
    /// The input file's path as hex, only when it is not UTF-8.
    pub(super) input_hex: Option<String>,
    /// The SHA-256 of the input, 64 hex digits.
    pub(super) sha256: String,
    /// The input's size in bytes.
    pub(super) size: u64,
    /// The stored copy of the input (`<out>/crashes/<id>-<kind>`).
    pub(super) entry: String,
    /// The worker that ran it.
    pub(super) worker: Option<String>,
    /// The job id on that worker.
    pub(super) job: Option<String>,
    /// Milliseconds from placement to the end of the job.
    pub(super) elapsed_ms: u64,
    /// Bytes of output kept in the `.out` file.
    pub(super) output_kept: u64,
    /// True when the job wrote more than was kept.
    pub(super) output_truncated: bool,
}

/// The SHA-256 of `data` as 64 lowercase hex digits.
pub(super) fn sha256_hex(data: &[u8]) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    crate::render::hex(digest.as_ref())
}

/// The findings directory of one farm run.
#[derive(Debug)]
pub(super) struct Store {
    dir: PathBuf,
}

/// Whether [`Store::keep`] wrote a new entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kept {
    /// A new entry.
    New,
    /// The same input with the same kind was already kept.
    Known,
}

impl Store {
    /// Creates `<out>/crashes` (and `<out>`) if missing.
    pub(super) fn open(out: &Path) -> Result<Self, FarmError> {
        let dir = out.join(CRASHES_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| FarmError::Store {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// The entry's path (its input file) for an input's SHA-256 and a kind.
    pub(super) fn entry_path(&self, sha256: &str, kind: &str) -> PathBuf {
        let id = &sha256[..ID_HEX_DIGITS.min(sha256.len())];
        self.dir.join(format!("{id}-{kind}"))
    }

    /// Keeps a finding: the input, its output and `meta` (whose `entry` must be
    /// [`Store::entry_path`] of its `sha256` and `kind`); nothing when it is known.
    pub(super) fn keep(
        &self,
        meta: &FindingMeta,
        input: &[u8],
        output: &[u8],
    ) -> Result<Kept, FarmError> {
        let entry = self.entry_path(&meta.sha256, &meta.kind);
        let json = with_suffix(&entry, ".json");
        if json.exists() {
            return Ok(Kept::Known);
        }
        write_atomic(&entry, input)?;
        write_atomic(&with_suffix(&entry, ".out"), output)?;
        let mut text = crate::render::json_pretty(meta);
        if !text.ends_with('\n') {
            text.push('\n');
        }
        write_atomic(&json, text.as_bytes())?;
        Ok(Kept::New)
    }
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes `data` to a temporary file next to `path`, then renames it to `path`.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), FarmError> {
    let tmp = with_suffix(path, ".tmp");
    let io = |source| FarmError::Store {
        path: path.to_owned(),
        source,
    };
    std::fs::write(&tmp, data).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(store: &Store, input: &[u8], kind: &str) -> FindingMeta {
        let sha256 = sha256_hex(input);
        FindingMeta {
            kind: kind.into(),
            signal: Some("SIGSEGV".into()),
            input: "corpus/a".into(),
            input_hex: None,
            entry: store.entry_path(&sha256, kind).display().to_string(),
            sha256,
            size: input.len() as u64,
            worker: Some("w1".into()),
            job: Some("0123".into()),
            elapsed_ms: 5,
            output_kept: 3,
            output_truncated: false,
        }
    }

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn an_entry_is_three_files_and_kept_once() {
        let out = tempfile::tempdir().unwrap();
        let store = Store::open(out.path()).unwrap();
        let input = b"CRASH\0\n";
        let m = meta(&store, input, "crash");
        assert_eq!(store.keep(&m, input, b"out").unwrap(), Kept::New);
        let entry = out
            .path()
            .join("crashes")
            .join(format!("{}-crash", &m.sha256[..16]));
        assert_eq!(std::fs::read(&entry).unwrap(), input);
        assert_eq!(std::fs::read(with_suffix(&entry, ".out")).unwrap(), b"out");
        let back: FindingMeta =
            serde_json::from_slice(&std::fs::read(with_suffix(&entry, ".json")).unwrap()).unwrap();
        assert_eq!(back, m);
        // The same input again (another path, other output): one entry, unchanged.
        let mut again = m.clone();
        again.input = "corpus/b".into();
        assert_eq!(store.keep(&again, input, b"other").unwrap(), Kept::Known);
        assert_eq!(std::fs::read(with_suffix(&entry, ".out")).unwrap(), b"out");
        // The same input with another kind is another entry; a new store on the same
        // directory (a later run) knows the old ones.
        let t = meta(&store, input, "timeout");
        assert_eq!(store.keep(&t, input, b"").unwrap(), Kept::New);
        let later = Store::open(out.path()).unwrap();
        assert_eq!(later.keep(&m, input, b"").unwrap(), Kept::Known);
        let mut names: Vec<String> = std::fs::read_dir(out.path().join("crashes"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let id = &m.sha256[..16];
        assert_eq!(
            names,
            [
                format!("{id}-crash"),
                format!("{id}-crash.json"),
                format!("{id}-crash.out"),
                format!("{id}-timeout"),
                format!("{id}-timeout.json"),
                format!("{id}-timeout.out"),
            ]
        );
    }
}
