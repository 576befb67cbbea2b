//! The one pass that reads a listed tree: each file opened once, its bytes hashed
//! into the fingerprint and, for the archive, written to the tar in the same pass,
//! so the fingerprint covers exactly the bytes that are copied; and [`Exact`], the
//! reader that holds a file to the size it had when it was opened.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::archive::{TarOut, header};
use super::walk::{Listed, listing};
use super::{ContentError, Policy};

/// The one pass behind [`codex_fingerprint`](super::codex_fingerprint) and
/// [`codex_archive`](super::codex_archive).
pub(super) fn hash_tree<W: Write>(
    dir: &Path,
    tar: Option<TarOut<'_, W>>,
    policy: Policy,
) -> Result<String, ContentError> {
    let (dirs, files) = listing(dir, policy, None)?;
    hash_listing(dir, dirs, files, tar, policy)
}

pub(super) fn hash_listing<W: Write>(
    dir: &Path,
    dirs: Vec<(Vec<u8>, Metadata)>,
    files: Vec<Listed>,
    mut tar: Option<TarOut<'_, W>>,
    policy: Policy,
) -> Result<String, ContentError> {
    if let Some((builder, prefix, owner)) = tar.as_mut() {
        for (rel, meta) in &dirs {
            let mut header = header(tar::EntryType::Directory, meta, 0o700, *owner);
            let name = prefix.join(OsStr::from_bytes(rel));
            builder
                .append_data(&mut header, name, io::empty())
                .map_err(|source| ContentError::Archive {
                    path: dir.join(OsStr::from_bytes(rel)),
                    source,
                })?;
        }
    }
    let mut sum = Sha256::new();
    for file in &files {
        let (handle, meta) = file.open(policy)?;
        sum.update(&file.rel);
        sum.update([0]);
        let mut reader = Exact::new(&file.path, handle, meta.len(), &mut sum);
        let drained = match tar.as_mut() {
            None => io::copy(&mut reader, &mut io::sink()).map(drop),
            Some((builder, prefix, owner)) => {
                let mut header = header(tar::EntryType::Regular, &meta, 0o400, *owner);
                header.set_size(meta.len());
                let name = prefix.join(OsStr::from_bytes(&file.rel));
                builder.append_data(&mut header, name, &mut reader)
            }
        };
        reader.finish(drained)?;
        sum.update([0]);
    }
    Ok(hex::encode(sum.finalize()))
}

/// Reads a file that must hold exactly `left` more bytes (the size in its tar header),
/// hashing what passes; a shorter or longer file is [`ContentError::Changed`]. The error
/// itself is kept in `error`, because it has to cross the tar crate as an `io::Error`.
pub(super) struct Exact<'a> {
    path: &'a Path,
    file: File,
    left: u64,
    sum: &'a mut Sha256,
    error: Option<ContentError>,
}

impl<'a> Exact<'a> {
    pub(super) fn new(path: &'a Path, file: File, left: u64, sum: &'a mut Sha256) -> Self {
        Self {
            path,
            file,
            left,
            sum,
            error: None,
        }
    }

    /// The outcome of draining the reader: its own error if it failed, else the writer's.
    pub(super) fn finish(mut self, drained: io::Result<()>) -> Result<(), ContentError> {
        drained.map_err(|source| {
            let path = self.path.into();
            self.error
                .take()
                .unwrap_or(ContentError::Archive { path, source })
        })
    }

    fn fail(&mut self, error: ContentError) -> io::Error {
        let err = io::Error::other(error.to_string());
        self.error = Some(error);
        err
    }
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Past the promised end, one byte more is asked for: getting it means the file grew.
        let want = usize::try_from(self.left.max(1)).map_or(buf.len(), |w| w.min(buf.len()));
        let n = match self.file.read(&mut buf[..want]) {
            Err(err) if err.kind() != io::ErrorKind::Interrupted => {
                let path = self.path.into();
                return Err(self.fail(ContentError::Io { path, source: err }));
            }
            read => read?,
        };
        if want > 0 && (n == 0) != (self.left == 0) {
            let path = self.path.into();
            return Err(self.fail(ContentError::Changed { path }));
        }
        self.sum.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::tests::{is_refused, safe_dir, set_mode, strict, write};
    use crate::content::{
        FingerprintCache, Shape, check_source, codex_archive, codex_fingerprint, tracked_content,
    };
    use std::fs;
    use tempfile::TempDir;

    #[test]
    fn a_file_that_shrinks_or_grows_while_read_is_an_error() {
        let dir = TempDir::new().unwrap();
        write(dir.path(), "file", b"12345");
        let path = dir.path().join("file");
        let drain = |len| {
            let mut sum = Sha256::new();
            let mut reader = Exact::new(&path, File::open(&path).unwrap(), len, &mut sum);
            let drained = io::copy(&mut reader, &mut io::sink()).map(drop);
            reader.finish(drained)
        };
        for len in [3, 10] {
            let err = drain(len).unwrap_err();
            assert!(
                matches!(err, ContentError::Changed { .. }),
                "{len}: {err:?}"
            );
        }
        drain(5).unwrap();
    }

    #[test]
    fn a_file_swapped_for_a_group_writable_one_after_the_check_is_refused_when_read() {
        let dir = safe_dir();
        let found = check_source(dir.path(), Shape::Dir, strict());
        assert!(found.found.is_empty(), "{:?}", found.found);
        // The swap: a new file, group-writable, renamed over the checked one.
        let (a, new) = (dir.path().join("a"), dir.path().join(".new"));
        fs::write(&new, b"two").unwrap();
        set_mode(&new, 0o664);
        fs::rename(&new, &a).unwrap();
        assert!(is_refused(codex_fingerprint(dir.path(), strict()), &a));
        let archived = codex_archive(dir.path(), "/c", (0, 0), io::sink(), strict());
        assert!(is_refused(archived, &a));
        assert!(is_refused(
            FingerprintCache::default().fingerprint(dir.path(), strict()),
            &a
        ));
        assert!(is_refused(tracked_content(&a, strict()), &a));
        assert!(codex_fingerprint(dir.path(), Policy::OFF).is_ok());
    }

    #[test]
    fn a_fifo_swapped_in_between_listing_and_reading_fails_without_blocking() {
        let dir = safe_dir();
        let (dirs, files) = listing(dir.path(), strict(), None).unwrap();
        let a = dir.path().join("a");
        fs::remove_file(&a).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(&a)
            .status()
            .unwrap();
        assert!(made.success());
        let (tx, rx) = std::sync::mpsc::channel();
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let read = hash_listing::<io::Sink>(&root, dirs, files, None, strict());
            let _ = tx.send(read.is_err());
        });
        let failed = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(failed, Ok(true), "the open of a FIFO blocked or succeeded");
    }

    #[test]
    fn a_file_made_group_writable_between_listing_and_reading_is_refused() {
        let dir = safe_dir();
        let (dirs, files) = listing(dir.path(), strict(), None).unwrap();
        let a = dir.path().join("a");
        set_mode(&a, 0o620);
        let read = hash_listing::<io::Sink>(dir.path(), dirs, files, None, strict());
        assert!(is_refused(read, &a));
    }
}
