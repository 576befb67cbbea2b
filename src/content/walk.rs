//! The one walk of a tree that the fingerprint, the archive and the check share:
//! [`listing`] lists it in fingerprint order, [`classify`] judges each entry (the
//! one rule of what a fingerprint reads), and [`Listed::open`] opens a listed file
//! and checks that it is still the file that was listed.

use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::findings::Findings;
use super::{ContentError, Policy, io_error, kind, refused, unsupported};

/// A regular file to hash: its relative path, the path it was listed under, the path
/// to open (the resolved target of a symlink) and the `lstat` of that path.
pub(super) struct Listed {
    pub(super) rel: Vec<u8>,
    pub(super) path: PathBuf,
    open: PathBuf,
    pub(super) meta: Metadata,
}

impl Listed {
    pub(super) fn new(rel: Vec<u8>, path: PathBuf, open: PathBuf, meta: Metadata) -> Self {
        Self {
            rel,
            path,
            open,
            meta,
        }
    }

    /// Opens the file and checks that the handle is the regular file that was listed,
    /// so a file swapped for a symlink or directory after listing is caught, and that
    /// what was opened passes `policy` (its `fstat`, not the path's: a file swapped
    /// in after the check is judged itself). `O_NONBLOCK`: a FIFO swapped in after
    /// the listing must not block the open (and with it a lane, its `--jobs` permit
    /// and a graceful shutdown); it fails the regular-file check instead.
    pub(super) fn open(&self, policy: Policy) -> Result<(File, Metadata), ContentError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.open)
            .map_err(io_error(&self.path))?;
        let meta = file.metadata().map_err(io_error(&self.path))?;
        if !meta.is_file() || (meta.dev(), meta.ino()) != (self.meta.dev(), self.meta.ino()) {
            return Err(ContentError::Changed {
                path: self.path.clone(),
            });
        }
        policy
            .content(&meta, &self.open)
            .map_err(|message| refused(&self.open, message))?;
        Ok((file, meta))
    }
}

/// A directory's listing: its directories and files, in fingerprint order.
type Listing = (Vec<(Vec<u8>, Metadata)>, Vec<Listed>);

/// One walk of a tree: its canonical root (a symlink must resolve inside it), the
/// policy, and what becomes of a problem: the fingerprint stops at the first
/// (`found` is `None`), the check collects them all and goes on.
struct Walk<'a> {
    root: PathBuf,
    policy: Policy,
    found: Option<&'a mut Findings>,
}

impl Walk<'_> {
    fn problem(&mut self, err: ContentError) -> Result<(), ContentError> {
        match self.found.as_deref_mut() {
            Some(found) => {
                found.push(err);
                Ok(())
            }
            None => Err(err),
        }
    }

    /// Applies the policy to what `meta` shows of `path`.
    fn permit(&mut self, path: &Path, meta: &Metadata) -> Result<(), ContentError> {
        match self.policy.content(meta, path) {
            Ok(()) => Ok(()),
            Err(message) => self.problem(refused(path, message)),
        }
    }
}

/// Lists `dir` for fingerprinting (`found` is `None`: the first problem is the error)
/// or for the check (problems go to `found`), judging every entry.
pub(super) fn listing(
    dir: &Path,
    policy: Policy,
    found: Option<&mut Findings>,
) -> Result<Listing, ContentError> {
    let meta = fs::metadata(dir).map_err(io_error(dir))?;
    if !meta.is_dir() {
        return Err(ContentError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let root = fs::canonicalize(dir).map_err(io_error(dir))?;
    let mut walk = Walk {
        root: root.clone(),
        policy,
        found,
    };
    walk.permit(&root, &meta)?;
    let (mut dirs, mut files) = (vec![(Vec::new(), meta)], Vec::new());
    list(&mut walk, dir, &[], &mut dirs, &mut files)?;
    // Byte order of the whole relative path, not the order of a sorted walk.
    dirs.sort_by(|a, b| a.0.cmp(&b.0));
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((dirs, files))
}

/// What the walk makes of an entry: a directory to descend into, or a regular file to
/// read (at `open`, the resolved target when the entry is a symlink).
enum Entry {
    Dir(Metadata),
    File { open: PathBuf, meta: Metadata },
}

/// Judges one entry of a tree rooted at `root` (canonical), given its `lstat`: the one
/// rule of what a fingerprint reads, shared by the fingerprint, the archive and the
/// check. A directory or a regular file is itself; a symlink must resolve to a regular
/// file inside `root`; anything else is refused.
fn classify(root: &Path, path: &Path, meta: Metadata) -> Result<Entry, ContentError> {
    let file_type = meta.file_type();
    if file_type.is_dir() {
        Ok(Entry::Dir(meta))
    } else if file_type.is_file() {
        Ok(Entry::File {
            open: path.to_path_buf(),
            meta,
        })
    } else if file_type.is_symlink() {
        let (open, meta) = resolve(root, path)?;
        Ok(Entry::File { open, meta })
    } else {
        Err(unsupported(path, kind(file_type)))
    }
}

/// Collects, below `dir` (listed as `rel`), every directory and every regular file or
/// symlink to one, and judges each entry (see [`Walk`] for what becomes of a problem).
/// Only real directories are descended into, so symlinks cannot make the walk loop.
/// Directories are held to the policy here; files are held to it here by the check,
/// which never opens them, and by the fingerprint on open, where it judges what it
/// opened. (A symlink's target is an entry of the tree, judged as itself.)
fn list(
    walk: &mut Walk<'_>,
    dir: &Path,
    rel: &[u8],
    dirs: &mut Vec<(Vec<u8>, Metadata)>,
    files: &mut Vec<Listed>,
) -> Result<(), ContentError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => return walk.problem(io_error(dir)(err)),
    };
    for entry in entries {
        let path = match entry {
            Ok(entry) => entry.path(),
            Err(err) => {
                walk.problem(io_error(dir)(err))?;
                continue;
            }
        };
        let mut child = rel.to_vec();
        if !child.is_empty() {
            child.push(b'/');
        }
        child.extend_from_slice(path.file_name().unwrap_or_default().as_bytes());
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(err) => {
                walk.problem(io_error(&path)(err))?;
                continue;
            }
        };
        let is_link = meta.file_type().is_symlink();
        match classify(&walk.root, &path, meta) {
            Ok(Entry::Dir(meta)) => {
                walk.permit(&path, &meta)?;
                list(walk, &path, &child, dirs, files)?;
                dirs.push((child, meta));
            }
            Ok(Entry::File { open, meta }) => {
                if walk.found.is_some() && !is_link {
                    walk.permit(&path, &meta)?;
                }
                files.push(Listed::new(child, path, open, meta));
            }
            Err(err) => walk.problem(err)?,
        }
    }
    Ok(())
}

/// Resolves a symlink that must lead to a regular file inside `root` (canonical).
fn resolve(root: &Path, link: &Path) -> Result<(PathBuf, Metadata), ContentError> {
    let target = fs::canonicalize(link).map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => unsupported(link, "dangling symlink"),
        _ => unsupported(link, &format!("symlink cannot be resolved: {err}")),
    })?;
    if !target.starts_with(root) {
        let reason = format!(
            "symlink resolves to {}, outside {}",
            target.display(),
            root.display()
        );
        return Err(unsupported(link, &reason));
    }
    // The canonical path holds no symlinks, so `lstat` describes the file itself.
    let meta = fs::symlink_metadata(&target).map_err(io_error(link))?;
    match meta.file_type() {
        t if t.is_file() => Ok((target, meta)),
        t if t.is_dir() => Err(unsupported(link, "symlink to a directory")),
        t => Err(unsupported(link, &format!("symlink to {}", kind(t)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::codex_fingerprint;
    use crate::content::tests::{expected, write};
    use crate::content::tracked_content;
    use std::os::unix::fs::symlink;
    use tempfile::TempDir;

    fn rejected(dir: &Path, needle: &str, path: &Path) {
        let err = codex_fingerprint(dir, Policy::OFF).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, ContentError::Unsupported { .. }), "{err:?}");
        assert!(
            text.contains(needle) && text.contains(&path.display().to_string()),
            "{text}"
        );
    }

    #[test]
    fn files_are_ordered_by_whole_relative_path() {
        let dir = TempDir::new().unwrap();
        write(dir.path(), "a/b", b"slash");
        write(dir.path(), "a-b", b"dash");
        write(dir.path(), "a/a", b"");
        let want = expected(&[(b"a-b", b"dash"), (b"a/a", b""), (b"a/b", b"slash")]);
        assert_eq!(codex_fingerprint(dir.path(), Policy::OFF).unwrap(), want);
    }

    #[test]
    fn symlink_to_file_inside_is_read_through() {
        let dir = TempDir::new().unwrap();
        write(dir.path(), "sub/real", b"body");
        symlink("sub/real", dir.path().join("link")).unwrap();
        let want = expected(&[(b"link", b"body"), (b"sub/real", b"body")]);
        assert_eq!(codex_fingerprint(dir.path(), Policy::OFF).unwrap(), want);
    }

    #[test]
    fn symlink_leading_outside_is_rejected() {
        let (outside, dir) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        write(outside.path(), "secret", b"shadow");
        let link = dir.path().join("link");
        symlink(outside.path().join("secret"), &link).unwrap();
        rejected(dir.path(), "outside", &link);
    }

    #[test]
    fn symlink_to_directory_is_rejected() {
        let dir = TempDir::new().unwrap();
        write(dir.path(), "sub/file", b"");
        let link = dir.path().join("link");
        symlink("sub", &link).unwrap();
        rejected(dir.path(), "symlink to a directory", &link);
    }

    #[test]
    fn dangling_symlink_is_rejected() {
        let dir = TempDir::new().unwrap();
        let link = dir.path().join("link");
        symlink("nowhere", &link).unwrap();
        rejected(dir.path(), "dangling", &link);
    }

    #[test]
    fn symlink_loop_is_rejected() {
        let dir = TempDir::new().unwrap();
        let link = dir.path().join("self");
        symlink("self", &link).unwrap();
        rejected(dir.path(), "cannot be resolved", &link);
    }

    #[test]
    fn fifo_is_rejected_without_opening_it() {
        let dir = TempDir::new().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        rejected(dir.path(), "a FIFO", &fifo);
        assert!(matches!(
            tracked_content(&fifo, Policy::OFF),
            Err(ContentError::Unsupported { .. })
        ));
        let link = dir.path().join("link");
        symlink("pipe", &link).unwrap();
        let err = resolve(&fs::canonicalize(dir.path()).unwrap(), &link).unwrap_err();
        assert!(err.to_string().contains("symlink to a FIFO"), "{err}");
    }

    #[test]
    fn missing_directory_and_plain_file_are_errors() {
        let dir = TempDir::new().unwrap();
        let missing = dir.path().join("missing");
        assert!(
            matches!(codex_fingerprint(&missing, Policy::OFF), Err(ContentError::Io { path, .. }) if path == missing)
        );
        write(dir.path(), "file", b"");
        let file = dir.path().join("file");
        assert!(
            matches!(codex_fingerprint(&file, Policy::OFF), Err(ContentError::NotADirectory { path }) if path == file)
        );
    }
}
