//! The [`FingerprintCache`]: fingerprints and tracked content of sources whose
//! files did not change since they were last read, told by their stat alone.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::read::hash_listing;

/// A lane's content inputs: the codex fingerprint, if it has a codex, and
/// each tracked source's hash by mount target.
pub type LaneContent = (Option<String>, Vec<(String, String)>);
use super::walk::listing;
use super::{ContentError, Policy, io_error, tracked_content};
use crate::lock::lock;

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
    /// [`codex_fingerprint`](super::codex_fingerprint), from the cache when nothing changed.
    pub fn fingerprint(&self, dir: &Path, policy: Policy) -> Result<String, ContentError> {
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
    /// A lane's content inputs: the codex fingerprint of `codex`, and each
    /// `track_content` source's hash by its target, with the reason (in the
    /// user's words) when one cannot be had. The one way both the lane hash
    /// and `lanectl wait` read them.
    pub fn lane_content(
        &self,
        codex: Option<&Path>,
        tracked: &[(String, PathBuf)],
        policy: Policy,
    ) -> Result<LaneContent, String> {
        let codex = codex
            .map(|s| self.fingerprint(s, policy))
            .transpose()
            .map_err(|e| format!("codex: {}", crate::error::chain(&e)))?;
        let tracked = tracked
            .iter()
            .map(|(target, source)| {
                self.tracked(source, policy)
                    .map(|h| (target.clone(), h))
                    .map_err(|e| format!("track_content: {}", crate::error::chain(&e)))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok((codex, tracked))
    }

    pub fn tracked(&self, path: &Path, policy: Policy) -> Result<String, ContentError> {
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
        read: impl FnOnce() -> Result<String, ContentError>,
    ) -> Result<String, ContentError> {
        let signature = signature.finalize().to_vec();
        if let Some((known, hash)) = lock(&self.entries).get(path)
            && *known == signature
        {
            return Ok(hash.clone());
        }
        self.reads.fetch_add(files, Ordering::Relaxed);
        let hash = read()?;
        let mut entries = lock(&self.entries);
        if racy {
            entries.remove(path);
        } else {
            entries.insert(path.to_path_buf(), (signature, hash.clone()));
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

#[cfg(test)]
impl FingerprintCache {
    /// A cache that counts files changed within `racy_window` as racily clean.
    fn with_racy_window(racy_window: Duration) -> Self {
        FingerprintCache {
            racy_window,
            ..FingerprintCache::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::codex_fingerprint;
    use crate::content::tests::write;
    use std::fs::File;
    use tempfile::TempDir;

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

    /// Prints figures, asserts nothing about time (run it with
    /// `cargo test --release --lib fingerprint_figures -- --ignored --nocapture`).
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
}
