//! Content hashes of host files: the codex fingerprint, the codex tar that is copied
//! into a container, and the content of `track_content` mounts.
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

use std::ffi::OsStr;
use std::fs::{self, File, FileType, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::spec::LaneSpec;

/// Why a directory or file could not be hashed or archived; every variant names a path.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
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

/// The Go runtime's codex fingerprint of `dir`: lower-hex sha256.
pub fn codex_fingerprint(dir: &Path) -> Result<String, HashError> {
    hash_tree::<io::Sink>(dir, None)
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
) -> Result<String, HashError> {
    let prefix = archive_prefix(target)?;
    let mut builder = tar::Builder::new(out);
    let fingerprint = hash_tree(dir, Some((&mut builder, &prefix, owner)))?;
    builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(|source| HashError::Archive {
            path: dir.to_path_buf(),
            source,
        })?;
    Ok(fingerprint)
}

/// Content hash of a `track_content` mount source: the fingerprint of a directory, the
/// lower-hex sha256 of the bytes of a regular file.
pub fn tracked_content(path: &Path) -> Result<String, HashError> {
    let meta = fs::metadata(path).map_err(io_error(path))?;
    if meta.is_dir() {
        return codex_fingerprint(path);
    }
    if !meta.is_file() {
        return Err(unsupported(path, kind(meta.file_type())));
    }
    let (file, meta) = Listed::new(Vec::new(), path.into(), path.into(), meta).open()?;
    let mut sum = Sha256::new();
    let mut reader = Exact::new(path, file, meta.len(), &mut sum);
    let drained = io::copy(&mut reader, &mut io::sink()).map(drop);
    reader.finish(drained)?;
    Ok(hex::encode(sum.finalize()))
}

/// Where archive entries go, under which prefix, with which owner.
type TarOut<'a, W> = (&'a mut tar::Builder<W>, &'a Path, (u64, u64));

/// A regular file to hash: its relative path, the path it was listed under, the path
/// to open (the resolved target of a symlink) and the `lstat` of that path.
struct Listed {
    rel: Vec<u8>,
    path: PathBuf,
    open: PathBuf,
    meta: Metadata,
}

impl Listed {
    fn new(rel: Vec<u8>, path: PathBuf, open: PathBuf, meta: Metadata) -> Self {
        Self {
            rel,
            path,
            open,
            meta,
        }
    }

    /// Opens the file and checks that the handle is the regular file that was listed,
    /// so a file swapped for a symlink or directory after listing is caught. (A FIFO
    /// swapped in within that instant could still block the open: std has no
    /// `O_NONBLOCK`, and the type was checked before opening.)
    fn open(&self) -> Result<(File, Metadata), HashError> {
        let file = File::open(&self.open).map_err(io_error(&self.path))?;
        let meta = file.metadata().map_err(io_error(&self.path))?;
        if !meta.is_file() || (meta.dev(), meta.ino()) != (self.meta.dev(), self.meta.ino()) {
            return Err(HashError::Changed {
                path: self.path.clone(),
            });
        }
        Ok((file, meta))
    }
}

/// A directory's listing: its directories and files, in fingerprint order.
type Listing = (Vec<(Vec<u8>, Metadata)>, Vec<Listed>);

/// Lists `dir` for fingerprinting, checking every entry's type.
fn listing(dir: &Path) -> Result<Listing, HashError> {
    let meta = fs::metadata(dir).map_err(io_error(dir))?;
    if !meta.is_dir() {
        return Err(HashError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let root = fs::canonicalize(dir).map_err(io_error(dir))?;
    let (mut dirs, mut files) = (vec![(Vec::new(), meta)], Vec::new());
    list(&root, dir, &[], &mut dirs, &mut files)?;
    // Byte order of the whole relative path, not the order of a sorted walk.
    dirs.sort_by(|a, b| a.0.cmp(&b.0));
    files.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok((dirs, files))
}

/// Fingerprints of unchanged directories, for a daemon that looks at the same
/// codex again and again: a directory whose files all keep their path, device,
/// inode, size, mtime and ctime keeps its fingerprint, and only a changed one
/// is read again. (Hash and tar at create time always read the bytes.)
#[derive(Debug, Default)]
pub struct FingerprintCache {
    entries: std::sync::Mutex<std::collections::HashMap<PathBuf, (Vec<u8>, String)>>,
}

impl FingerprintCache {
    /// [`codex_fingerprint`], from the cache when nothing changed.
    pub fn fingerprint(&self, dir: &Path) -> Result<String, HashError> {
        let (dirs, files) = listing(dir)?;
        let mut signature = Sha256::new();
        for f in &files {
            let m = &f.meta;
            signature.update(&f.rel);
            signature.update([0]);
            for n in [
                m.dev(),
                m.ino(),
                m.len(),
                m.mtime() as u64,
                m.mtime_nsec() as u64,
                m.ctime() as u64,
                m.ctime_nsec() as u64,
            ] {
                signature.update(n.to_le_bytes());
            }
        }
        let signature = signature.finalize().to_vec();
        if let Ok(entries) = self.entries.lock()
            && let Some((known, fingerprint)) = entries.get(dir)
            && *known == signature
        {
            return Ok(fingerprint.clone());
        }
        let fingerprint = hash_listing::<io::Sink>(dir, dirs, files, None)?;
        if let Ok(mut entries) = self.entries.lock() {
            entries.insert(dir.to_path_buf(), (signature, fingerprint.clone()));
        }
        Ok(fingerprint)
    }
}

/// The one pass behind [`codex_fingerprint`] and [`codex_archive`].
fn hash_tree<W: Write>(dir: &Path, tar: Option<TarOut<'_, W>>) -> Result<String, HashError> {
    let (dirs, files) = listing(dir)?;
    hash_listing(dir, dirs, files, tar)
}

fn hash_listing<W: Write>(
    dir: &Path,
    dirs: Vec<(Vec<u8>, Metadata)>,
    files: Vec<Listed>,
    mut tar: Option<TarOut<'_, W>>,
) -> Result<String, HashError> {
    if let Some((builder, prefix, owner)) = tar.as_mut() {
        for (rel, meta) in &dirs {
            let mut header = header(tar::EntryType::Directory, meta, 0o700, *owner);
            let name = prefix.join(OsStr::from_bytes(rel));
            builder
                .append_data(&mut header, name, io::empty())
                .map_err(|source| HashError::Archive {
                    path: dir.join(OsStr::from_bytes(rel)),
                    source,
                })?;
        }
    }
    let mut sum = Sha256::new();
    for file in &files {
        let (handle, meta) = file.open()?;
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

/// Collects, below `dir` (listed as `rel`), every directory and every regular file or
/// symlink to one; rejects anything else. Only real directories are descended into, so
/// symlinks cannot make the walk loop.
fn list(
    root: &Path,
    dir: &Path,
    rel: &[u8],
    dirs: &mut Vec<(Vec<u8>, Metadata)>,
    files: &mut Vec<Listed>,
) -> Result<(), HashError> {
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let mut child = rel.to_vec();
        if !child.is_empty() {
            child.push(b'/');
        }
        child.extend_from_slice(entry.file_name().as_bytes());
        let meta = fs::symlink_metadata(&path).map_err(io_error(&path))?;
        let file_type = meta.file_type();
        if file_type.is_dir() {
            list(root, &path, &child, dirs, files)?;
            dirs.push((child, meta));
        } else if file_type.is_file() {
            files.push(Listed::new(child, path.clone(), path, meta));
        } else if file_type.is_symlink() {
            let (open, meta) = resolve(root, &path)?;
            files.push(Listed::new(child, path, open, meta));
        } else {
            return Err(unsupported(&path, kind(file_type)));
        }
    }
    Ok(())
}

/// Resolves a symlink that must lead to a regular file inside `root` (canonical).
fn resolve(root: &Path, link: &Path) -> Result<(PathBuf, Metadata), HashError> {
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

/// Reads a file that must hold exactly `left` more bytes (the size in its tar header),
/// hashing what passes; a shorter or longer file is [`HashError::Changed`]. The error
/// itself is kept in `error`, because it has to cross the tar crate as an `io::Error`.
struct Exact<'a> {
    path: &'a Path,
    file: File,
    left: u64,
    sum: &'a mut Sha256,
    error: Option<HashError>,
}

impl<'a> Exact<'a> {
    fn new(path: &'a Path, file: File, left: u64, sum: &'a mut Sha256) -> Self {
        Self {
            path,
            file,
            left,
            sum,
            error: None,
        }
    }

    /// The outcome of draining the reader: its own error if it failed, else the writer's.
    fn finish(mut self, drained: io::Result<()>) -> Result<(), HashError> {
        drained.map_err(|source| {
            let path = self.path.into();
            self.error
                .take()
                .unwrap_or(HashError::Archive { path, source })
        })
    }

    fn fail(&mut self, error: HashError) -> io::Error {
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
                return Err(self.fail(HashError::Io { path, source: err }));
            }
            read => read?,
        };
        if want > 0 && (n == 0) != (self.left == 0) {
            let path = self.path.into();
            return Err(self.fail(HashError::Changed { path }));
        }
        self.sum.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// A tar header with the source's permission bits (plus `min_mode`), mtime and `owner`.
fn header(
    entry_type: tar::EntryType,
    meta: &Metadata,
    min_mode: u32,
    owner: (u64, u64),
) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode((meta.mode() & 0o777) | min_mode);
    header.set_uid(owner.0);
    header.set_gid(owner.1);
    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    header.set_size(0);
    header
}

/// `target` made relative (`/root/.codex` -> `root/.codex`), checked to be a directory
/// below `/` named by plain components. `spec` applies the same rule to a manifest's
/// codex target, so that a target the archive would refuse is an invalid lane.
pub fn archive_prefix(target: &str) -> Result<PathBuf, HashError> {
    let invalid = |reason: &str| HashError::Target {
        target: target.to_owned(),
        reason: reason.to_owned(),
    };
    let mut prefix = PathBuf::new();
    for component in Path::new(target).components() {
        match component {
            Component::RootDir => {}
            Component::Normal(part) => prefix.push(part),
            _ => return Err(invalid("must be an absolute path without `.` or `..`")),
        }
    }
    if !target.starts_with('/') {
        return Err(invalid("must be an absolute path without `.` or `..`"));
    }
    if prefix.as_os_str().is_empty() {
        return Err(invalid(
            "the container's root cannot be a codex target: name a directory below it",
        ));
    }
    Ok(prefix)
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

fn unsupported(path: &Path, reason: &str) -> HashError {
    HashError::Unsupported {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> HashError + '_ {
    move |source| HashError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// sha256 of bytes in lower hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The lane hash and the parts it is made of (the parts go on labels so that
/// `plan` can name what changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneHash {
    /// `sha256:<hex>` over everything below.
    pub full: String,
    /// sha256 of the canonical resolved spec alone.
    pub config: String,
    pub image_id: String,
    pub codex: Option<String>,
    /// sha256 over the `track_content` mounts' content hashes ("" when none).
    pub tracked: String,
}

/// Version of the canonical serialization. Changing anything that feeds
/// [`lane_hash`] recreates every lane of every user on upgrade: the golden
/// test below pins it.
const CANONICAL_VERSION: u32 = 1;

/// The lane hash: the canonical serialization is JSON (serde_json, struct
/// fields in declaration order, maps sorted by key) of the resolved spec
/// (`state`, `probe`, `stop_timeout` and the codex source excluded), then of
/// that spec's hash with the image ID, codex fingerprint and tracked content.
pub fn lane_hash(
    spec: &LaneSpec,
    image_id: &str,
    codex: Option<&str>,
    tracked: &[(String, String)],
) -> LaneHash {
    #[derive(Serialize)]
    struct Config<'a> {
        v: u32,
        spec: &'a LaneSpec,
    }
    #[derive(Serialize)]
    struct Full<'a> {
        v: u32,
        config: &'a str,
        image_id: &'a str,
        codex: Option<&'a str>,
        tracked: &'a str,
    }
    let canonical = |value: &dyn erased::Json| sha256_hex(&value.json());
    let config = canonical(&Config {
        v: CANONICAL_VERSION,
        spec,
    });
    let tracked = if tracked.is_empty() {
        String::new()
    } else {
        canonical(&tracked)
    };
    let full = canonical(&Full {
        v: CANONICAL_VERSION,
        config: &config,
        image_id,
        codex,
        tracked: &tracked,
    });
    LaneHash {
        full: format!("sha256:{full}"),
        config,
        image_id: image_id.to_string(),
        codex: codex.map(str::to_string),
        tracked,
    }
}

mod erased {
    /// Serializes to canonical JSON bytes. The types fed here hold only
    /// strings, integers, finite floats, bools and string-keyed maps, which
    /// serde_json always serializes; an empty output would still be a stable,
    /// distinct input.
    pub trait Json {
        fn json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use tempfile::TempDir;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// The sha256, by hand, of `(path, contents)` pairs in the order given.
    fn expected(files: &[(&[u8], &[u8])]) -> String {
        let mut sum = Sha256::new();
        for (path, body) in files {
            sum.update(path);
            sum.update([0]);
            sum.update(body);
            sum.update([0]);
        }
        hex::encode(sum.finalize())
    }

    fn write(dir: &Path, rel: &str, body: &[u8]) {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }

    fn rejected(dir: &Path, needle: &str, path: &Path) {
        let err = codex_fingerprint(dir).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, HashError::Unsupported { .. }), "{err:?}");
        assert!(
            text.contains(needle) && text.contains(&path.display().to_string()),
            "{text}"
        );
    }

    #[test]
    fn fixture_fingerprint_matches_the_go_runtime() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let want = fs::read_to_string(fixtures.join("codex-fixture.fingerprint")).unwrap();
        let got = codex_fingerprint(&fixtures.join("codex-fixture")).unwrap();
        assert_eq!(got, want.trim());
    }

    #[test]
    fn files_are_ordered_by_whole_relative_path() {
        let dir = TempDir::new().unwrap();
        write(dir.path(), "a/b", b"slash");
        write(dir.path(), "a-b", b"dash");
        write(dir.path(), "a/a", b"");
        let want = expected(&[(b"a-b", b"dash"), (b"a/a", b""), (b"a/b", b"slash")]);
        assert_eq!(codex_fingerprint(dir.path()).unwrap(), want);
    }

    #[test]
    fn empty_directory_hashes_to_sha256_of_nothing() {
        let dir = TempDir::new().unwrap();
        fs::create_dir(dir.path().join("only-dirs")).unwrap();
        assert_eq!(codex_fingerprint(dir.path()).unwrap(), EMPTY_SHA256);
    }

    #[test]
    fn non_utf8_names_are_hashed_as_bytes() {
        let dir = TempDir::new().unwrap();
        fs::write(dir.path().join(OsStr::from_bytes(b"caf\xe9")), b"x").unwrap();
        assert_eq!(
            codex_fingerprint(dir.path()).unwrap(),
            expected(&[(b"caf\xe9", b"x")])
        );
    }

    #[test]
    fn symlink_to_file_inside_is_read_through() {
        let dir = TempDir::new().unwrap();
        write(dir.path(), "sub/real", b"body");
        symlink("sub/real", dir.path().join("link")).unwrap();
        let want = expected(&[(b"link", b"body"), (b"sub/real", b"body")]);
        assert_eq!(codex_fingerprint(dir.path()).unwrap(), want);
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
            tracked_content(&fifo),
            Err(HashError::Unsupported { .. })
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
            matches!(codex_fingerprint(&missing), Err(HashError::Io { path, .. }) if path == missing)
        );
        write(dir.path(), "file", b"");
        let file = dir.path().join("file");
        assert!(
            matches!(codex_fingerprint(&file), Err(HashError::NotADirectory { path }) if path == file)
        );
    }

    #[test]
    fn tracked_file_is_sha256_of_its_bytes_and_directory_its_fingerprint() {
        let dir = TempDir::new().unwrap();
        write(dir.path(), "tree/file", b"hello");
        let file = dir.path().join("tree/file");
        assert_eq!(
            tracked_content(&file).unwrap(),
            hex::encode(Sha256::digest(b"hello"))
        );
        let tree = dir.path().join("tree");
        assert_eq!(
            tracked_content(&tree).unwrap(),
            expected(&[(b"file", b"hello")])
        );
    }

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
            assert!(matches!(err, HashError::Changed { .. }), "{len}: {err:?}");
        }
        drain(5).unwrap();
    }

    #[test]
    fn archive_holds_exactly_the_fingerprinted_files() {
        let dir = TempDir::new().unwrap();
        let long = format!("sessions/{}/deep.txt", "x".repeat(150));
        let files = [
            ("config.toml", 0o200),
            ("sessions/2026/a.jsonl", 0o640),
            (&long, 0o444),
        ];
        for (rel, mode) in files {
            write(dir.path(), rel, rel.as_bytes());
            fs::set_permissions(dir.path().join(rel), fs::Permissions::from_mode(mode)).unwrap();
        }
        let long_dir = long.trim_end_matches("/deep.txt");
        for (rel, mode) in [
            ("", 0o755),
            ("sessions/2026", 0o750),
            (long_dir, 0o755),
            ("sessions", 0o500),
        ] {
            fs::set_permissions(dir.path().join(rel), fs::Permissions::from_mode(mode)).unwrap();
        }
        symlink("config.toml", dir.path().join("link")).unwrap();

        let mut tar = Vec::new();
        let fingerprint =
            codex_archive(dir.path(), "/root/.codex/", (1000, 1001), &mut tar).unwrap();
        fs::set_permissions(
            dir.path().join("sessions"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_eq!(fingerprint, codex_fingerprint(dir.path()).unwrap());

        let mut got = Vec::new();
        for entry in tar::Archive::new(tar.as_slice()).entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header();
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (1000, 1001));
            let (mode, is_dir) = (header.mode().unwrap(), header.entry_type().is_dir());
            let name = entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned();
            let mut body = String::new();
            entry.read_to_string(&mut body).unwrap();
            got.push((name, mode, is_dir, body));
        }
        let want = [
            ("", 0o755, true, ""),
            ("/sessions", 0o700, true, ""),
            ("/sessions/2026", 0o750, true, ""),
            (&format!("/{long_dir}"), 0o755, true, ""),
            ("/config.toml", 0o600, false, "config.toml"),
            ("/link", 0o600, false, "config.toml"),
            (
                "/sessions/2026/a.jsonl",
                0o640,
                false,
                "sessions/2026/a.jsonl",
            ),
            (&format!("/{long}"), 0o444, false, &long),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(rel, mode, is_dir, body)| {
                (
                    format!("root/.codex{rel}"),
                    *mode,
                    *is_dir,
                    body.to_string(),
                )
            })
            .collect();
        assert_eq!(got, want);

        let unpacked = TempDir::new().unwrap();
        tar::Archive::new(tar.as_slice())
            .unpack(unpacked.path())
            .unwrap();
        assert_eq!(
            codex_fingerprint(&unpacked.path().join("root/.codex")).unwrap(),
            fingerprint
        );
    }

    #[test]
    fn archive_target_must_be_absolute_and_plain() {
        let dir = TempDir::new().unwrap();
        for target in ["root/.codex", "/", "/root/../etc", ""] {
            let err = codex_archive(dir.path(), target, (0, 0), io::sink()).unwrap_err();
            assert!(matches!(err, HashError::Target { .. }), "{target}: {err:?}");
        }
    }

    #[test]
    fn the_fingerprint_cache_answers_for_unchanged_files_and_rereads_changed_ones() {
        let dir = TempDir::new().unwrap();
        fs::write(dir.path().join("a"), "one").unwrap();
        let cache = FingerprintCache::default();
        let first = cache.fingerprint(dir.path()).unwrap();
        assert_eq!(first, codex_fingerprint(dir.path()).unwrap());
        assert_eq!(cache.fingerprint(dir.path()).unwrap(), first);
        fs::write(dir.path().join("a"), "two").unwrap();
        let second = cache.fingerprint(dir.path()).unwrap();
        assert_ne!(second, first);
        assert_eq!(second, codex_fingerprint(dir.path()).unwrap());
        fs::write(dir.path().join("b"), "").unwrap();
        assert_eq!(
            cache.fingerprint(dir.path()).unwrap(),
            codex_fingerprint(dir.path()).unwrap()
        );
    }

    /// Prints figures, asserts nothing about time (run it with
    /// `cargo test --release --bin lanectl fingerprint_figures -- --ignored --nocapture`).
    #[test]
    #[ignore = "a benchmark: prints figures"]
    fn fingerprint_figures() {
        let dir = TempDir::new().unwrap();
        for i in 0..1000 {
            let sub = dir.path().join(format!("d{}", i % 10));
            fs::create_dir_all(&sub).unwrap();
            fs::write(sub.join(format!("f{i}")), vec![b'x'; 4096]).unwrap();
        }
        fs::write(dir.path().join("big"), vec![7u8; 256 << 20]).unwrap();
        let cache = FingerprintCache::default();
        let t = std::time::Instant::now();
        cache.fingerprint(dir.path()).unwrap();
        let cold = t.elapsed();
        let t = std::time::Instant::now();
        for _ in 0..20 {
            cache.fingerprint(dir.path()).unwrap();
        }
        let warm = t.elapsed() / 20;
        let mb = (256 + 4) as f64 / cold.as_secs_f64();
        println!(
            "1000 files + 256 MiB: cold {cold:?} ({mb:.0} MB/s); unchanged, from the stat cache: {warm:?}"
        );
    }

    #[test]
    fn the_lane_hash_of_a_fixed_spec_and_image_never_changes() {
        // An accidental change here recreates every lane of every user on
        // upgrade: change CANONICAL_VERSION knowingly, never this value.
        let spec = crate::spec::tests::golden_spec();
        let h = lane_hash(
            &spec,
            "0123abcd",
            Some("51d2ba91"),
            &[("/data".into(), "e3b0".into())],
        );
        assert_eq!(
            h.full,
            "sha256:b2a630d65e639b45677d1d9a94ebcb6570d62710d99d28caa2eb0ff96cd9ba14"
        );
        let again = lane_hash(
            &spec,
            "0123abcd",
            Some("51d2ba91"),
            &[("/data".into(), "e3b0".into())],
        );
        assert_eq!(h, again);
        let other_image = lane_hash(
            &spec,
            "0123abce",
            Some("51d2ba91"),
            &[("/data".into(), "e3b0".into())],
        );
        assert_ne!(h.full, other_image.full);
        assert_eq!(h.config, other_image.config);
    }
}
