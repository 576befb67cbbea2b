//! Content hashes of host files: the codex fingerprint, the codex tar that is copied
//! into a container, and the content of `track_content` mounts; and the check of those
//! sources that reads none of their bytes.
//!
//! The fingerprint keeps the algorithm of the Go runtime that lanectl replaces
//! (`runtimeCodexFingerprint`): sha256 over every file of the directory, in byte order
//! of the whole relative path (`/` separators, so `a-b` sorts before `a/b`), each
//! contributing its path, a 0 byte, its bytes and a 0 byte. A symlink to a regular
//! file inside the directory is read through; anything else that is not a regular
//! file or a directory (a symlink leading outside, to a directory or nowhere, a FIFO,
//! a socket, a device) is an error naming its path. The archive is written in the
//! same pass as the fingerprint, from one open of each file, so the hash covers
//! exactly the bytes that are copied.
//!
//! One walk (`list`, which judges each entry with `classify`) serves the fingerprint,
//! the archive and [`check_source`], the check that every load of the lanes directory
//! (and so `validate`) makes: the check collects every problem where the fingerprint
//! stops at the first, so the two cannot disagree, and it only `lstat`s, so a large
//! codex stays cheap. Running as root, a [`Policy`] refuses what another user could
//! have written (SPEC.md "Safety"): the check judges paths, and the fingerprint and
//! the archive judge what they opened (`fstat`), so a file swapped in between the
//! check and the read is caught.
//!
//! The parts, by job: `walk` lists a tree and judges each entry, `check` is
//! [`check_source`], `read` is the one pass that reads each listed file into the
//! fingerprint (and the archive), `archive` names and heads the tar's entries,
//! `cache` is the [`FingerprintCache`], and `policy` is the [`Policy`].

mod archive;
mod cache;
mod check;
mod findings;
mod policy;
mod read;
mod walk;

use std::fs::{self, FileType};
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use archive::archive_prefix;
pub use cache::FingerprintCache;
pub use check::{Shape, check_source};
pub use findings::{Finding, Findings};
pub use policy::Policy;

use read::{Exact, hash_tree};
use walk::Listed;

/// Why a directory or file could not be hashed or archived; every variant names a path.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// Reading a file, directory or link failed.
    #[error("cannot read {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The codex directory is not a directory.
    #[error("{} is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    /// An entry that may not be hashed: a FIFO, a socket, a device or a bad symlink.
    #[error("unsupported file {}: {reason}", path.display())]
    Unsupported { path: PathBuf, reason: String },
    /// Another user could have written it (see [`Policy`]).
    #[error("{}: {message}", path.display())]
    Refused { path: PathBuf, message: String },
    /// The file was replaced, or its length changed, while it was being read.
    #[error("{} changed while being read", path.display())]
    Changed { path: PathBuf },
    /// The archive target is not a directory below `/` named by plain components.
    #[error("invalid codex target {target:?}: {reason}")]
    Target { target: String, reason: String },
    /// Writing the archive failed.
    #[error("cannot write {} to the codex archive", path.display())]
    Archive {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl ContentError {
    /// The path the error concerns, and what is wrong there (without the path).
    pub fn into_parts(self) -> (PathBuf, String) {
        match self {
            ContentError::Io { path, source } => (path, format!("cannot read: {source}")),
            ContentError::NotADirectory { path } => (path, "not a directory".into()),
            ContentError::Unsupported { path, reason } => {
                (path, format!("unsupported file: {reason}"))
            }
            ContentError::Refused { path, message } => (path, message),
            ContentError::Changed { path } => (path, "changed while being read".into()),
            ContentError::Target { target, reason } => (
                PathBuf::from(&target),
                format!("invalid codex target: {reason}"),
            ),
            ContentError::Archive { path, source } => {
                (path, format!("cannot write to the codex archive: {source}"))
            }
        }
    }
}

/// The Go runtime's codex fingerprint of `dir`: lower-hex sha256.
pub fn codex_fingerprint(dir: &Path, policy: Policy) -> Result<String, ContentError> {
    hash_tree::<io::Sink>(dir, None, policy)
}

/// Fingerprints `dir` and, in the same pass, writes to `out` a tar of exactly the files
/// it read (same bytes, one open of each file), placed under `target`.
///
/// `target` is an absolute path inside the container (`/root/.codex`); entry names are
/// relative (`root/.codex/config.toml`), for extraction at `/`. There is an entry for
/// `target` and each sub-directory (source mode, at least `rwx` for the owner) and for
/// each file (source permission bits, at least readable by the owner), all owned by
/// `owner` (uid, gid). Returns the fingerprint, equal to [`codex_fingerprint`]; on error
/// whatever was written to `out` must be discarded.
pub fn codex_archive<W: Write>(
    dir: &Path,
    target: &str,
    owner: (u64, u64),
    out: W,
    policy: Policy,
) -> Result<String, ContentError> {
    let prefix = archive_prefix(target)?;
    let mut builder = tar::Builder::new(out);
    let fingerprint = hash_tree(dir, Some((&mut builder, &prefix, owner)), policy)?;
    builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(|source| ContentError::Archive {
            path: dir.to_path_buf(),
            source,
        })?;
    Ok(fingerprint)
}

/// The sha256 of each file of a codex directory, by relative path (`/`
/// separators, as the fingerprint names them): kept beside the fingerprint
/// so that `plan` can name the files a codex change touches, never their
/// bytes.
pub fn codex_file_digests(
    dir: &Path,
    policy: Policy,
) -> Result<std::collections::BTreeMap<String, String>, ContentError> {
    let (_, files) = walk::listing(dir, policy, None)?;
    let mut out = std::collections::BTreeMap::new();
    for file in &files {
        let (handle, meta) = file.open(policy)?;
        let mut sum = Sha256::new();
        let mut reader = Exact::new(&file.path, handle, meta.len(), &mut sum);
        let drained = io::copy(&mut reader, &mut io::sink()).map(drop);
        reader.finish(drained)?;
        out.insert(
            String::from_utf8_lossy(&file.rel).into_owned(),
            hex::encode(sum.finalize()),
        );
    }
    Ok(out)
}

/// Content hash of a `track_content` mount source: the fingerprint of a directory, the
/// lower-hex sha256 of the bytes of a regular file.
pub fn tracked_content(path: &Path, policy: Policy) -> Result<String, ContentError> {
    let meta = fs::metadata(path).map_err(io_error(path))?;
    if meta.is_dir() {
        return codex_fingerprint(path, policy);
    }
    if !meta.is_file() {
        return Err(unsupported(path, kind(meta.file_type())));
    }
    let (file, meta) = Listed::new(Vec::new(), path.into(), path.into(), meta).open(policy)?;
    let mut sum = Sha256::new();
    let mut reader = Exact::new(path, file, meta.len(), &mut sum);
    let drained = io::copy(&mut reader, &mut io::sink()).map(drop);
    reader.finish(drained)?;
    Ok(hex::encode(sum.finalize()))
}

fn kind(file_type: FileType) -> &'static str {
    if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

fn unsupported(path: &Path, reason: &str) -> ContentError {
    ContentError::Unsupported {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    }
}

fn refused(path: &Path, message: String) -> ContentError {
    ContentError::Refused {
        path: path.to_path_buf(),
        message,
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ContentError + '_ {
    move |source| ContentError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    //! Tests of the public functions, and the helpers the tests of every part share.

    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    use tempfile::TempDir;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// The sha256, by hand, of `(path, contents)` pairs in the order given.
    pub(super) fn expected(files: &[(&[u8], &[u8])]) -> String {
        let mut sum = Sha256::new();
        for (path, body) in files {
            sum.update(path);
            sum.update([0]);
            sum.update(body);
            sum.update([0]);
        }
        hex::encode(sum.finalize())
    }

    pub(super) fn write(dir: &Path, rel: &str, body: &[u8]) {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }

    /// Checks as lanectl does as root, whoever runs the test (files are owned by
    /// the user running it).
    pub(super) fn strict() -> Policy {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        Policy { check: true, euid }
    }

    pub(super) fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A directory of safe modes holding `a` (0644).
    pub(super) fn safe_dir() -> TempDir {
        let dir = TempDir::new().unwrap();
        set_mode(dir.path(), 0o755);
        write(dir.path(), "a", b"one");
        set_mode(&dir.path().join("a"), 0o644);
        dir
    }

    pub(super) fn is_refused(result: Result<String, ContentError>, path: &Path) -> bool {
        matches!(
            result,
            Err(ContentError::Refused { path: p, message })
                if p == path && message.contains("writable by group") && message.contains("chmod go-w")
        )
    }

    #[test]
    fn fixture_fingerprint_matches_the_go_runtime() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let want = fs::read_to_string(fixtures.join("codex-fixture.fingerprint")).unwrap();
        let got = codex_fingerprint(&fixtures.join("codex-fixture"), Policy::OFF).unwrap();
        assert_eq!(got, want.trim());
    }

    #[test]
    fn empty_directory_hashes_to_sha256_of_nothing() {
        let dir = TempDir::new().unwrap();
        fs::create_dir(dir.path().join("only-dirs")).unwrap();
        assert_eq!(
            codex_fingerprint(dir.path(), Policy::OFF).unwrap(),
            EMPTY_SHA256
        );
    }

    #[test]
    fn non_utf8_names_are_hashed_as_bytes() {
        let dir = TempDir::new().unwrap();
        fs::write(dir.path().join(OsStr::from_bytes(b"caf\xe9")), b"x").unwrap();
        assert_eq!(
            codex_fingerprint(dir.path(), Policy::OFF).unwrap(),
            expected(&[(b"caf\xe9", b"x")])
        );
    }

    #[test]
    fn tracked_file_is_sha256_of_its_bytes_and_directory_its_fingerprint() {
        let dir = TempDir::new().unwrap();
        write(dir.path(), "tree/file", b"hello");
        let file = dir.path().join("tree/file");
        assert_eq!(
            tracked_content(&file, Policy::OFF).unwrap(),
            hex::encode(Sha256::digest(b"hello"))
        );
        let tree = dir.path().join("tree");
        assert_eq!(
            tracked_content(&tree, Policy::OFF).unwrap(),
            expected(&[(b"file", b"hello")])
        );
    }
}
