//! The corpus: every regular file under a directory, recursively, in a stable order.

use std::path::{Path, PathBuf};

use super::FarmError;

/// The input files under `dir`: regular files (or symbolic links to them) at any
/// depth, sorted by path (byte order) so every run submits them in the same order.
/// Directories are entered; symbolic links to directories are not (no loops); sockets,
/// FIFOs and devices are skipped (reading a FIFO would block the farm).
pub(super) fn walk(dir: &Path) -> Result<Vec<PathBuf>, FarmError> {
    let meta = std::fs::metadata(dir).map_err(|source| FarmError::Corpus {
        path: dir.to_owned(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(FarmError::Corpus {
            path: dir.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(d) = dirs.pop() {
        let io = |source| FarmError::Corpus {
            path: d.clone(),
            source,
        };
        for entry in std::fs::read_dir(&d).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|source| FarmError::Corpus {
                path: path.clone(),
                source,
            })?;
            if kind.is_dir() {
                dirs.push(path);
            } else if kind.is_file() {
                files.push(path);
            } else if kind.is_symlink() {
                // Followed to a regular file; a dangling link is skipped like any
                // other non-file.
                if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                    files.push(path);
                }
            }
        }
    }
    files.sort_by(|a, b| {
        use std::os::unix::ffi::OsStrExt;
        a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes())
    });
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_recursively_sorted_and_skips_non_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/deep")).unwrap();
        std::fs::create_dir_all(root.join("a")).unwrap();
        for f in ["z", "a/2", "a/10", "b/deep/x", "b/1"] {
            std::fs::write(root.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink(root.join("z"), root.join("link-to-file")).unwrap();
        std::os::unix::fs::symlink(root.join("b"), root.join("link-to-dir")).unwrap();
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(root.join("fifo"))
            .status()
            .unwrap();
        assert!(made.success());
        let got: Vec<String> = walk(root)
            .unwrap()
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(got, ["a/10", "a/2", "b/1", "b/deep/x", "link-to-file", "z"]);
    }

    #[test]
    fn a_missing_or_non_directory_corpus_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = walk(&dir.path().join("none")).unwrap_err();
        assert!(e.to_string().contains("none"), "{e}");
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let e = walk(&dir.path().join("f")).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }
}
