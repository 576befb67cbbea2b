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

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{self, File, FileType, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

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

impl HashError {
    /// The path the error concerns, and what is wrong there (without the path).
    pub fn into_parts(self) -> (PathBuf, String) {
        match self {
            HashError::Io { path, source } => (path, format!("cannot read: {source}")),
            HashError::NotADirectory { path } => (path, "not a directory".into()),
            HashError::Unsupported { path, reason } => {
                (path, format!("unsupported file: {reason}"))
            }
            HashError::Refused { path, message } => (path, message),
            HashError::Changed { path } => (path, "changed while being read".into()),
            HashError::Target { target, reason } => (
                PathBuf::from(&target),
                format!("invalid codex target: {reason}"),
            ),
            HashError::Archive { path, source } => {
                (path, format!("cannot write to the codex archive: {source}"))
            }
        }
    }
}

/// The usual fix of a refused permission.
const FIX: &str = "(fix with chmod go-w / chown root, or pass --allow-insecure-permissions)";

/// Who may have written what lanectl trusts (SPEC.md "Safety"): a manifest can mount
/// any host path into a root container, and a codex or `track_content` source puts
/// files into one. Running as root, such a file or directory must be owned by root or
/// by lanectl's own user and writable by neither group nor others, and a directory
/// above it that others can write needs the sticky bit. Passed in rather than looked
/// up, so that tests can apply it without root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Whether to check at all: as root, without `--allow-insecure-permissions`.
    pub check: bool,
    /// The user lanectl runs as: what it owns is trusted like what root owns.
    pub euid: u32,
}

impl Policy {
    /// Checks nothing.
    #[cfg(test)]
    pub const OFF: Policy = Policy {
        check: false,
        euid: 0,
    };

    /// This process's policy: checks when it runs as root, unless `allow_insecure`.
    pub fn of_process(allow_insecure: bool) -> Policy {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Policy::for_user(unsafe { libc::geteuid() }, allow_insecure)
    }

    /// The policy of lanectl running as `euid`: checks as root (0), unless
    /// `allow_insecure` (`--allow-insecure-permissions`).
    pub fn for_user(euid: u32, allow_insecure: bool) -> Policy {
        Policy {
            check: euid == 0 && !allow_insecure,
            euid,
        }
    }

    /// A file or directory whose content is trusted.
    pub fn content(&self, meta: &Metadata) -> Result<(), String> {
        self.owner(meta)?;
        let mode = meta.mode();
        if self.check && mode & 0o022 != 0 {
            return Err(format!(
                "writable by group or others (mode {:o}): refused because lanectl runs as root {FIX}",
                mode & 0o7777
            ));
        }
        Ok(())
    }

    /// A directory above one whose content is trusted: whoever may write it can
    /// rename what lies below, unless the sticky bit keeps them to their own entries.
    pub fn parent(&self, meta: &Metadata) -> Result<(), String> {
        self.owner(meta)?;
        let mode = meta.mode();
        if self.check && mode & 0o002 != 0 && mode & 0o1000 == 0 {
            return Err(format!(
                "writable by others without the sticky bit (mode {:o}): anyone could swap what lies below it {FIX}",
                mode & 0o7777
            ));
        }
        Ok(())
    }

    /// Who owns it; all that counts for a symlink, whose mode means nothing.
    pub fn owner(&self, meta: &Metadata) -> Result<(), String> {
        if self.check && meta.uid() != 0 && meta.uid() != self.euid {
            return Err(format!(
                "owned by uid {}, not root: refused because a manifest can mount any host path into a root container {FIX}",
                meta.uid()
            ));
        }
        Ok(())
    }
}

/// The Go runtime's codex fingerprint of `dir`: lower-hex sha256.
pub fn codex_fingerprint(dir: &Path, policy: Policy) -> Result<String, HashError> {
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
) -> Result<String, HashError> {
    let prefix = archive_prefix(target)?;
    let mut builder = tar::Builder::new(out);
    let fingerprint = hash_tree(dir, Some((&mut builder, &prefix, owner)), policy)?;
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
pub fn tracked_content(path: &Path, policy: Policy) -> Result<String, HashError> {
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

/// What a source must be: a codex is a directory, a `track_content` mount either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Dir,
    DirOrFile,
}

/// One problem that [`check_source`] found: where, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: PathBuf,
    pub message: String,
}

/// What [`check_source`] found: the first [`Findings::LIMIT`] problems, and how many
/// more there were.
#[derive(Debug, Default)]
pub struct Findings {
    pub found: Vec<Finding>,
    pub more: usize,
}

impl Findings {
    /// Problems kept per source; a tree of thousands of FIFOs is counted, not listed.
    pub const LIMIT: usize = 20;

    fn push(&mut self, err: HashError) {
        if self.found.len() < Self::LIMIT {
            let (path, message) = err.into_parts();
            self.found.push(Finding { path, message });
        } else {
            self.more += 1;
        }
    }
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
            if let Err(message) = policy.content(&meta) {
                let real = fs::canonicalize(source).unwrap_or_else(|_| source.to_path_buf());
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
                .and_then(|meta| policy.parent(&meta).map_err(|m| refused(parent, m)));
            if let Err(err) = checked {
                found.push(err);
            }
        }
    };
    parents(source, found);
    if let Ok(meta) = fs::symlink_metadata(source)
        && meta.file_type().is_symlink()
        && let Err(message) = policy.owner(&meta)
    {
        found.push(refused(source, message));
    }
    if let Ok(real) = fs::canonicalize(source) {
        parents(&real, found);
    }
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
    /// so a file swapped for a symlink or directory after listing is caught, and that
    /// what was opened passes `policy` (its `fstat`, not the path's: a file swapped
    /// in after the check is judged itself). `O_NONBLOCK`: a FIFO swapped in after
    /// the listing must not block the open (and with it a lane, its `--jobs` permit
    /// and a graceful shutdown); it fails the regular-file check instead.
    fn open(&self, policy: Policy) -> Result<(File, Metadata), HashError> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.open)
            .map_err(io_error(&self.path))?;
        let meta = file.metadata().map_err(io_error(&self.path))?;
        if !meta.is_file() || (meta.dev(), meta.ino()) != (self.meta.dev(), self.meta.ino()) {
            return Err(HashError::Changed {
                path: self.path.clone(),
            });
        }
        policy
            .content(&meta)
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
    fn problem(&mut self, err: HashError) -> Result<(), HashError> {
        match self.found.as_deref_mut() {
            Some(found) => {
                found.push(err);
                Ok(())
            }
            None => Err(err),
        }
    }

    /// Applies the policy to what `meta` shows of `path`.
    fn permit(&mut self, path: &Path, meta: &Metadata) -> Result<(), HashError> {
        match self.policy.content(meta) {
            Ok(()) => Ok(()),
            Err(message) => self.problem(refused(path, message)),
        }
    }
}

/// Lists `dir` for fingerprinting (`found` is `None`: the first problem is the error)
/// or for the check (problems go to `found`), judging every entry.
fn listing(dir: &Path, policy: Policy, found: Option<&mut Findings>) -> Result<Listing, HashError> {
    let meta = fs::metadata(dir).map_err(io_error(dir))?;
    if !meta.is_dir() {
        return Err(HashError::NotADirectory {
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

/// How long after a file's last change another change may still leave its stat
/// unchanged: file timestamps come from a coarse clock (a kernel tick, or a whole
/// second on some filesystems), so two same-size writes within one tick can keep
/// size, mtime and ctime alike. A conservative bound on that granularity.
const RACY_WINDOW: Duration = Duration::from_secs(1);

/// Fingerprints and tracked content of unchanged sources, for a daemon that looks at
/// the same ones again and again: a directory whose files all keep their path,
/// device, inode, size, mtime and ctime keeps its fingerprint, a file that keeps its
/// own keeps its hash, and only a changed one is read again. (Hash and tar at create
/// time always read the bytes.)
///
/// As git does with its index, an answer is kept only when every file it covers was
/// last changed (mtime or ctime) at least [`RACY_WINDOW`] before it was stat'ed: a
/// newer file is "racily clean", since a second write within the same timestamp tick
/// would leave its stat as it is, so its source is read again next time.
#[derive(Debug)]
pub struct FingerprintCache {
    entries: Mutex<HashMap<PathBuf, (Vec<u8>, String)>>,
    /// Files read to answer so far (an answer from the cache reads none).
    reads: AtomicUsize,
    /// [`RACY_WINDOW`]; tests narrow it.
    racy_window: Duration,
}

impl Default for FingerprintCache {
    fn default() -> Self {
        FingerprintCache {
            entries: Mutex::default(),
            reads: AtomicUsize::new(0),
            racy_window: RACY_WINDOW,
        }
    }
}

impl FingerprintCache {
    /// A cache that counts files changed within `racy_window` as racily clean.
    #[cfg(test)]
    fn with_racy_window(racy_window: Duration) -> Self {
        FingerprintCache {
            racy_window,
            ..FingerprintCache::default()
        }
    }

    /// [`codex_fingerprint`], from the cache when nothing changed.
    pub fn fingerprint(&self, dir: &Path, policy: Policy) -> Result<String, HashError> {
        let statted = SystemTime::now();
        let (dirs, files) = listing(dir, policy, None)?;
        let mut signature = stamp_policy(b'd', policy);
        let mut newest = SystemTime::UNIX_EPOCH;
        for f in &files {
            signature.update(&f.rel);
            signature.update([0]);
            stamp(&mut signature, &f.meta);
            newest = newest.max(changed_at(&f.meta));
        }
        let racy = self.is_racy(newest, statted);
        self.cached(dir, signature, racy, files.len(), || {
            hash_listing::<io::Sink>(dir, dirs, files, None, policy)
        })
    }

    /// [`tracked_content`], from the cache when nothing changed: a directory as
    /// [`FingerprintCache::fingerprint`], a file by its own stat.
    pub fn tracked(&self, path: &Path, policy: Policy) -> Result<String, HashError> {
        let statted = SystemTime::now();
        let meta = fs::metadata(path).map_err(io_error(path))?;
        if meta.is_dir() {
            return self.fingerprint(path, policy);
        }
        let mut signature = stamp_policy(b'f', policy);
        stamp(&mut signature, &meta);
        let racy = self.is_racy(changed_at(&meta), statted);
        self.cached(path, signature, racy, 1, || tracked_content(path, policy))
    }

    /// Whether a file last changed at `changed` may change again, stat unchanged,
    /// after it was stat'ed at `statted`.
    fn is_racy(&self, changed: SystemTime, statted: SystemTime) -> bool {
        statted
            .checked_sub(self.racy_window)
            .is_none_or(|safe| changed >= safe)
    }

    /// The answer kept for `path` when `signature` is the one it was kept with, else
    /// `read()` (which reads `files` files), kept unless `racy`.
    fn cached(
        &self,
        path: &Path,
        signature: Sha256,
        racy: bool,
        files: usize,
        read: impl FnOnce() -> Result<String, HashError>,
    ) -> Result<String, HashError> {
        let signature = signature.finalize().to_vec();
        if let Ok(entries) = self.entries.lock()
            && let Some((known, hash)) = entries.get(path)
            && *known == signature
        {
            return Ok(hash.clone());
        }
        self.reads.fetch_add(files, Ordering::Relaxed);
        let hash = read()?;
        if let Ok(mut entries) = self.entries.lock() {
            if racy {
                entries.remove(path);
            } else {
                entries.insert(path.to_path_buf(), (signature, hash.clone()));
            }
        }
        Ok(hash)
    }
}

/// When a file's content or inode last changed: the later of its mtime and ctime.
fn changed_at(m: &Metadata) -> SystemTime {
    let at = |secs: i64, nanos: i64| {
        let secs = u64::try_from(secs).unwrap_or(0);
        let nanos = u32::try_from(nanos).unwrap_or(0);
        SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
    };
    at(m.mtime(), m.mtime_nsec()).max(at(m.ctime(), m.ctime_nsec()))
}

/// The start of a cache signature: what is signed (`d`irectory, `f`ile) and under
/// which policy it was read.
fn stamp_policy(what: u8, policy: Policy) -> Sha256 {
    let mut signature = Sha256::new();
    signature.update([what, u8::from(policy.check)]);
    signature.update(policy.euid.to_le_bytes());
    signature
}

/// Adds what a stat shows of a file's identity and last change to a signature.
fn stamp(signature: &mut Sha256, m: &Metadata) {
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

/// The one pass behind [`codex_fingerprint`] and [`codex_archive`].
fn hash_tree<W: Write>(
    dir: &Path,
    tar: Option<TarOut<'_, W>>,
    policy: Policy,
) -> Result<String, HashError> {
    let (dirs, files) = listing(dir, policy, None)?;
    hash_listing(dir, dirs, files, tar, policy)
}

fn hash_listing<W: Write>(
    dir: &Path,
    dirs: Vec<(Vec<u8>, Metadata)>,
    files: Vec<Listed>,
    mut tar: Option<TarOut<'_, W>>,
    policy: Policy,
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
fn classify(root: &Path, path: &Path, meta: Metadata) -> Result<Entry, HashError> {
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
) -> Result<(), HashError> {
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

fn refused(path: &Path, message: String) -> HashError {
    HashError::Refused {
        path: path.to_path_buf(),
        message,
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
        let err = codex_fingerprint(dir, Policy::OFF).unwrap_err();
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
        let got = codex_fingerprint(&fixtures.join("codex-fixture"), Policy::OFF).unwrap();
        assert_eq!(got, want.trim());
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
            matches!(codex_fingerprint(&missing, Policy::OFF), Err(HashError::Io { path, .. }) if path == missing)
        );
        write(dir.path(), "file", b"");
        let file = dir.path().join("file");
        assert!(
            matches!(codex_fingerprint(&file, Policy::OFF), Err(HashError::NotADirectory { path }) if path == file)
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
        let fingerprint = codex_archive(
            dir.path(),
            "/root/.codex/",
            (1000, 1001),
            &mut tar,
            Policy::OFF,
        )
        .unwrap();
        fs::set_permissions(
            dir.path().join("sessions"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_eq!(
            fingerprint,
            codex_fingerprint(dir.path(), Policy::OFF).unwrap()
        );

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
            codex_fingerprint(&unpacked.path().join("root/.codex"), Policy::OFF).unwrap(),
            fingerprint
        );
    }

    #[test]
    fn archive_target_must_be_absolute_and_plain() {
        let dir = TempDir::new().unwrap();
        for target in ["root/.codex", "/", "/root/../etc", ""] {
            let err =
                codex_archive(dir.path(), target, (0, 0), io::sink(), Policy::OFF).unwrap_err();
            assert!(matches!(err, HashError::Target { .. }), "{target}: {err:?}");
        }
    }

    #[test]
    fn the_fingerprint_cache_answers_for_unchanged_files_and_rereads_changed_ones() {
        let dir = TempDir::new().unwrap();
        fs::write(dir.path().join("a"), "one").unwrap();
        let cache = FingerprintCache::default();
        let first = cache.fingerprint(dir.path(), Policy::OFF).unwrap();
        assert_eq!(first, codex_fingerprint(dir.path(), Policy::OFF).unwrap());
        assert_eq!(cache.fingerprint(dir.path(), Policy::OFF).unwrap(), first);
        fs::write(dir.path().join("a"), "two").unwrap();
        let second = cache.fingerprint(dir.path(), Policy::OFF).unwrap();
        assert_ne!(second, first);
        assert_eq!(second, codex_fingerprint(dir.path(), Policy::OFF).unwrap());
        fs::write(dir.path().join("b"), "").unwrap();
        assert_eq!(
            cache.fingerprint(dir.path(), Policy::OFF).unwrap(),
            codex_fingerprint(dir.path(), Policy::OFF).unwrap()
        );
    }

    /// Checks as lanectl does as root, whoever runs the test (files are owned by
    /// the user running it).
    fn strict() -> Policy {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        Policy { check: true, euid }
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A directory of safe modes holding `a` (0644).
    fn safe_dir() -> TempDir {
        let dir = TempDir::new().unwrap();
        set_mode(dir.path(), 0o755);
        write(dir.path(), "a", b"one");
        set_mode(&dir.path().join("a"), 0o644);
        dir
    }

    fn is_refused(result: Result<String, HashError>, path: &Path) -> bool {
        matches!(
            result,
            Err(HashError::Refused { path: p, message })
                if p == path && message.contains("writable by group") && message.contains("chmod go-w")
        )
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
            let HashError::Unsupported { path, .. } = err else {
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

    #[test]
    fn the_tracked_content_cache_reads_nothing_for_unchanged_sources_and_rereads_changed_ones() {
        let dir = TempDir::new().unwrap();
        write(dir.path(), "tree/a", b"one");
        write(dir.path(), "tree/sub/b", b"two");
        write(dir.path(), "file", b"three");
        let (tree, file) = (dir.path().join("tree"), dir.path().join("file"));
        // Every file here was written before it is stat'ed: with no racy window
        // the cache keeps what it read (the window has tests of its own).
        let cache = FingerprintCache::with_racy_window(Duration::ZERO);
        let reads = || cache.reads.load(Ordering::Relaxed);
        let fresh = |path: &Path| tracked_content(path, Policy::OFF).unwrap();

        assert_eq!(cache.tracked(&tree, Policy::OFF).unwrap(), fresh(&tree));
        assert_eq!(cache.tracked(&file, Policy::OFF).unwrap(), fresh(&file));
        assert_eq!(reads(), 3);
        assert_eq!(cache.tracked(&tree, Policy::OFF).unwrap(), fresh(&tree));
        assert_eq!(cache.tracked(&file, Policy::OFF).unwrap(), fresh(&file));
        assert_eq!(reads(), 3, "unchanged sources are not read again");

        fs::write(&file, b"changed").unwrap();
        assert_eq!(cache.tracked(&file, Policy::OFF).unwrap(), fresh(&file));
        assert_eq!(reads(), 4);
        fs::write(tree.join("sub/b"), b"changed").unwrap();
        assert_eq!(cache.tracked(&tree, Policy::OFF).unwrap(), fresh(&tree));
        assert_eq!(reads(), 6);
        // A file swapped in by a rename, same size and times aside, is a new inode.
        let new = dir.path().join("new");
        fs::write(&new, b"CHANGED").unwrap();
        fs::rename(&new, &file).unwrap();
        assert_eq!(cache.tracked(&file, Policy::OFF).unwrap(), fresh(&file));
        assert_eq!(reads(), 7);
    }

    #[test]
    fn a_source_changed_within_the_racy_window_is_read_again_next_time() {
        let dir = TempDir::new().unwrap();
        write(dir.path(), "tree/a", b"one");
        write(dir.path(), "file", b"two");
        let (tree, file) = (dir.path().join("tree"), dir.path().join("file"));
        // A window far longer than the test: every stat below is racily clean.
        let cache = FingerprintCache::with_racy_window(Duration::from_secs(3600));
        for _ in 0..3 {
            cache.tracked(&tree, Policy::OFF).unwrap();
            cache.tracked(&file, Policy::OFF).unwrap();
            cache.fingerprint(&tree, Policy::OFF).unwrap();
        }
        assert_eq!(cache.reads.load(Ordering::Relaxed), 9, "read every time");
        // Once the files are older than the window, what was read is kept.
        let cache = FingerprintCache::with_racy_window(Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(100));
        for _ in 0..3 {
            cache.tracked(&tree, Policy::OFF).unwrap();
            cache.tracked(&file, Policy::OFF).unwrap();
        }
        assert_eq!(cache.reads.load(Ordering::Relaxed), 2, "read once");
        assert_eq!(FingerprintCache::default().racy_window, RACY_WINDOW);
        assert!(RACY_WINDOW >= Duration::from_secs(1));
    }

    /// Two writes of the same size within one timestamp tick: the second keeps the
    /// mtime of the first (set back here, as a coarse clock would leave it). A
    /// kernel with fine-grained timestamps after a stat still moves the ctime, so
    /// there this passes even without the racy window; the test above is the one
    /// that only the window passes.
    #[test]
    fn a_same_size_rewrite_within_one_timestamp_tick_is_seen() {
        let dir = TempDir::new().unwrap();
        write(dir.path(), "tree/a", b"one");
        let (tree, a) = (dir.path().join("tree"), dir.path().join("tree/a"));
        let cache = FingerprintCache::default();
        let first = (
            cache.fingerprint(&tree, Policy::OFF).unwrap(),
            cache.tracked(&a, Policy::OFF).unwrap(),
        );
        let mtime = fs::metadata(&a).unwrap().modified().unwrap();
        fs::write(&a, b"two").unwrap();
        File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        assert_eq!(fs::metadata(&a).unwrap().modified().unwrap(), mtime);
        let second = (
            cache.fingerprint(&tree, Policy::OFF).unwrap(),
            cache.tracked(&a, Policy::OFF).unwrap(),
        );
        assert_ne!(second.0, first.0);
        assert_ne!(second.1, first.1);
        assert_eq!(second.0, codex_fingerprint(&tree, Policy::OFF).unwrap());
        assert_eq!(second.1, tracked_content(&a, Policy::OFF).unwrap());
    }

    #[test]
    fn archived_files_gain_owner_read_and_lose_setuid_setgid_and_sticky_bits() {
        let dir = TempDir::new().unwrap();
        for (rel, mode) in [("tool", 0o4750), ("shared", 0o2640), ("wo", 0o200)] {
            write(dir.path(), &format!("d/{rel}"), b"x");
            set_mode(&dir.path().join("d").join(rel), mode);
        }
        set_mode(&dir.path().join("d"), 0o1577);
        let mut tar = Vec::new();
        codex_archive(dir.path(), "/c", (0, 0), &mut tar, Policy::OFF).unwrap();
        set_mode(&dir.path().join("d"), 0o755);
        let modes: Vec<(String, u32)> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                (name, e.header().mode().unwrap())
            })
            .collect();
        let want = [
            ("c/d", 0o777),
            ("c/d/shared", 0o640),
            ("c/d/tool", 0o750),
            ("c/d/wo", 0o600),
        ];
        for (name, mode) in want {
            assert!(
                modes.contains(&(name.into(), mode)),
                "{name} {mode:o}: {modes:?}"
            );
        }
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
        cache.fingerprint(dir.path(), Policy::OFF).unwrap();
        let cold = t.elapsed();
        let t = std::time::Instant::now();
        for _ in 0..20 {
            cache.fingerprint(dir.path(), Policy::OFF).unwrap();
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
