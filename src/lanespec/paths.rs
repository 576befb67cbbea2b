//! Host and container paths: what a source is, sources made absolute, targets
//! normalized, and whether two targets overlap. Lexical, except
//! [`source_kind`], which looks at the host.

use std::path::{Component, Path, PathBuf};

/// What a host path is, following symlinks.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SourceKind {
    Dir,
    File,
    Special(&'static str),
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceKind::Dir => f.write_str("a directory"),
            SourceKind::File => f.write_str("a file"),
            SourceKind::Special(what) => f.write_str(what),
        }
    }
}

/// Resolves a source path; a dangling link or a loop is an error that says so.
pub(super) fn source_kind(path: &Path) -> Result<SourceKind, String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound if path.symlink_metadata().is_ok() => {
            "is a dangling symlink".to_string()
        }
        std::io::ErrorKind::NotFound => "does not exist".to_string(),
        _ if e.raw_os_error() == Some(libc::ELOOP) => "is a symlink loop".to_string(),
        _ => format!("cannot be read: {e}"),
    })?;
    let t = meta.file_type();
    Ok(if t.is_dir() {
        SourceKind::Dir
    } else if t.is_file() {
        SourceKind::File
    } else if t.is_fifo() {
        SourceKind::Special("a FIFO")
    } else if t.is_socket() {
        SourceKind::Special("a socket")
    } else {
        SourceKind::Special("a device")
    })
}

/// `source` against `dir` when relative, with `.` and `..` folded lexically;
/// a relative `dir` (`--dir lanes.d`) is taken from the working directory.
pub fn absolute(dir: &Path, source: &str) -> PathBuf {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let joined = dir.join(source);
    let mut out = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// A container path without `.`/`..`/double slashes or a trailing slash.
pub(super) fn normalize_target(target: &str) -> String {
    let s = absolute(Path::new("/"), target.trim_start_matches('/'));
    s.to_string_lossy().into_owned()
}

/// True when one path is the other or lies inside it.
pub fn overlaps(a: &str, b: &str) -> bool {
    let inside = |x: &str, y: &str| x == y || y == "/" || x.starts_with(&format!("{y}/"));
    inside(a, b) || inside(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_paths() {
        assert!(overlaps("/root", "/root/.codex"));
        assert!(overlaps("/root/.codex/x", "/root/.codex"));
        assert!(overlaps("/", "/root/.codex"));
        assert!(!overlaps("/root/.codexx", "/root/.codex"));
    }
}
