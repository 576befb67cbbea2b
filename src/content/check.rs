//! The check of a codex or `track_content` source that reads none of its bytes
//! ([`check_source`]): every problem the fingerprint would stop at, and under the
//! policy who could have written the source and the directories above it.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use super::findings::Findings;
use super::walk::listing;
use super::{Policy, io_error, kind, refused, unsupported};

/// What a source must be: a codex is a directory, a `track_content` mount either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Dir,
    DirOrFile,
}

/// Everything the files alone show about a codex or `track_content` source, without
/// reading a byte of content: every entry the fingerprint would refuse (a symlink
/// leading outside, to a directory or nowhere, a FIFO, a socket, a device, a source of
/// the wrong shape or none), and under `policy` every file and directory another user
/// could have written, the source itself when it is a symlink, and the parents of both
/// the source as given and its real path.
pub fn check_source(source: &Path, shape: Shape, policy: Policy) -> Findings {
    let mut found = Findings::default();
    if policy.check {
        check_parents(source, policy, &mut found);
    }
    match fs::metadata(source) {
        Ok(meta) if shape == Shape::DirOrFile && meta.is_file() => {
            let real = fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
            if let Err(message) = policy.content(&meta, &real) {
                found.push(refused(&real, message));
            }
        }
        Ok(meta) if shape == Shape::DirOrFile && !meta.is_dir() => {
            found.push(unsupported(source, kind(meta.file_type())));
        }
        _ => {
            if let Err(err) = listing(source, policy, Some(&mut found)) {
                found.push(err);
            }
        }
    }
    found
}

/// The parents of a source as given and of its real path, and the source itself when
/// it is a symlink: whoever can swap one of them chooses what is read.
fn check_parents(source: &Path, policy: Policy, found: &mut Findings) {
    let mut seen = BTreeSet::new();
    let mut parents = |path: &Path, found: &mut Findings| {
        for parent in path.ancestors().skip(1) {
            if parent.as_os_str().is_empty() || !seen.insert(parent.to_path_buf()) {
                continue;
            }
            let checked = fs::metadata(parent)
                .map_err(io_error(parent))
                .and_then(|meta| policy.parent(&meta, parent).map_err(|m| refused(parent, m)));
            if let Err(err) = checked {
                found.push(err);
            }
        }
    };
    parents(source, found);
    if let Ok(meta) = fs::symlink_metadata(source)
        && meta.file_type().is_symlink()
        && let Err(message) = policy.link_owner(&meta, source)
    {
        found.push(refused(source, message));
    }
    if let Ok(real) = fs::canonicalize(source) {
        parents(&real, found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::tests::{set_mode, write};
    use crate::content::{ContentError, codex_fingerprint};
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;
    use tempfile::TempDir;

    #[test]
    fn the_check_names_every_entry_the_fingerprint_refuses_and_reads_none() {
        let (outside, dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        write(outside.path(), "secret", b"shadow");
        write(dir.path(), "sub/ok", b"ok");
        let bad = [
            ("escape", outside.path().join("secret")),
            ("sub/dirlink", dir.path().join("sub")),
            ("sub/dangling", dir.path().join("nowhere")),
        ];
        for (rel, target) in &bad {
            symlink(target, dir.path().join(rel)).unwrap();
        }
        let fifo = dir.path().join("sub/pipe");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Unreadable bytes are never read: the check passes over them.
        let locked = dir.path().join("sub/locked");
        write(dir.path(), "sub/locked", b"x");
        set_mode(&locked, 0o000);

        let found = check_source(dir.path(), Shape::Dir, Policy::OFF);
        fs::remove_file(&locked).unwrap();
        let mut paths: Vec<PathBuf> = found.found.iter().map(|f| f.path.clone()).collect();
        paths.sort();
        let mut want: Vec<PathBuf> = bad.iter().map(|(rel, _)| dir.path().join(rel)).collect();
        want.push(fifo.clone());
        want.sort();
        assert_eq!(paths, want, "{:?}", found.found);
        assert_eq!(found.more, 0);
        // The fingerprint refuses the same entries, one at a time.
        let mut refused = Vec::new();
        while let Err(err) = codex_fingerprint(dir.path(), Policy::OFF) {
            let ContentError::Unsupported { path, .. } = err else {
                panic!("{err:?}");
            };
            fs::remove_file(&path).unwrap();
            refused.push(path);
        }
        refused.sort();
        assert_eq!(refused, want);
        assert!(
            check_source(dir.path(), Shape::Dir, Policy::OFF)
                .found
                .is_empty()
        );
    }

    #[test]
    fn the_check_wants_a_codex_to_be_a_directory_and_a_tracked_source_to_exist() {
        let dir = TempDir::new().unwrap();
        write(dir.path(), "file", b"x");
        let file = dir.path().join("file");
        let found = check_source(&file, Shape::Dir, Policy::OFF).found;
        assert_eq!(found.len(), 1);
        assert!(
            found[0].path == file && found[0].message == "not a directory",
            "{found:?}"
        );
        assert!(
            check_source(&file, Shape::DirOrFile, Policy::OFF)
                .found
                .is_empty()
        );
        let missing = dir.path().join("missing");
        let found = check_source(&missing, Shape::DirOrFile, Policy::OFF).found;
        assert!(found.len() == 1 && found[0].path == missing, "{found:?}");
    }
}
