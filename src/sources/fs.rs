//! File-system events as triggers: the lanes directory (manifests, the
//! defaults) and every lane's codex and `track_content` sources.
//!
//! The notify callback only converts and `try_send`s (a full channel drops
//! the event: the resync catches up). Debouncing is one loop: after the first
//! event, paths are collected until the tree has been quiet for a while (so
//! an editor's save or a `git checkout` of 50 files is one batch), then each
//! path becomes
//! lane names: `<lane>.yaml` that lane, `_defaults.yaml` every lane, a path
//! under a source the lanes that read it. Status files, hidden files and
//! editor leftovers (`*~`, `.*.swp`, `4913`, `.#*`) never trigger anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{Notify, mpsc};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace, warn};

use super::SharedIndex;
use crate::lane::{self, Kind};
use crate::lock::lock;
use crate::queue::Queue;

/// A batch ends after this long without events once every file in it is
/// complete: its write closed, or renamed into place, removed, chmod-ed.
pub const QUIET: Duration = Duration::from_millis(30);
/// A batch never waits longer than this: not for a file rewritten without
/// pause, nor for one left open for writing (a batch with an open file
/// waits for its close, so a slow writer's half-written manifest is not
/// read; a change that never closes, truncate(2), waits this long).
const MAX_BATCH: Duration = Duration::from_secs(2);
/// How often the watches are checked against the files: a lanes directory or
/// a source directory replaced by a rename (a deploy that swaps a symlink or
/// a directory) is watched again, and every lane is looked at.
const RECHECK: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(
        "cannot watch {}: the limit of inotify watches is reached \
         (raise it: sysctl fs.inotify.max_user_watches=524288)", path.display()
    )]
    Limit { path: PathBuf },
    #[error("cannot watch {}", path.display())]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("the file-system watcher stopped: {0}")]
    Crashed(String),
}

fn watch_error(path: &Path, e: notify::Error) -> FsError {
    match e.kind {
        notify::ErrorKind::MaxFilesWatch => FsError::Limit {
            path: path.to_path_buf(),
        },
        _ => FsError::Watch {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// Watches until `shutdown`. `refresh` reloads the index from the lanes
/// directory (after manifests changed); an error here is fatal only when the
/// lanes directory itself cannot be watched at start.
pub async fn run<F, Fut>(
    dir: PathBuf,
    index: SharedIndex,
    queue: Queue,
    refresh: F,
    shutdown: CancellationToken,
) -> Result<(), FsError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (inbox, mut rx, lost) = Inbox::new(CHANNEL);
    let mut watcher = notify::recommended_watcher(move |res| inbox.take(res))
        .map_err(|e| watch_error(&dir, e))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| watch_error(&dir, e))?;
    let mut dir_id = file_id(&dir);
    let mut watched = BTreeMap::new();
    let _ = update_watches(&mut watcher, &index, &mut watched);
    let mut recheck = tokio::time::interval(RECHECK);
    recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = recheck.tick() => {
                if file_id(&dir) != dir_id {
                    debug!(dir = %dir.display(), "the lanes directory was replaced: watching it again");
                    (dir.clone(), false)
                } else {
                    let renewed = update_watches(&mut watcher, &index, &mut watched);
                    for lane in lanes_under(&index, &renewed) {
                        queue.trigger(&lane, "source replaced");
                    }
                    continue;
                }
            }
            path = rx.recv() => match path {
                Some(p) => p,
                None => return Ok(()),
            },
            () = lost.wake.notified() => {
                if !lost.flag.load(Ordering::SeqCst) {
                    continue; // already handled by the batch that took the flag
                }
                (PathBuf::new(), false) // no path: the flag says what happened
            }
        };
        let started = Instant::now();
        let mut paths = BTreeSet::new();
        let mut open = BTreeSet::new();
        let mut next = Some(first);
        while let Some((path, opened)) = next.take() {
            if opened {
                open.insert(path.clone());
            } else {
                open.remove(&path);
            }
            paths.insert(path);
            let deadline = if open.is_empty() {
                (Instant::now() + QUIET).min(started + MAX_BATCH)
            } else {
                started + MAX_BATCH
            };
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = sleep_until(deadline) => {}
                path = rx.recv() => next = path,
            }
        }
        trace!(count = paths.len(), "file-system batch");
        if !open.is_empty() {
            // Read as they stand: the next close reads them again.
            let files: Vec<String> = open.iter().map(|p| p.display().to_string()).collect();
            warn!(
                files = %files.join(", "),
                "still open for writing after {MAX_BATCH:?}: read as they stand, and again once closed \
                 (write elsewhere and rename into place to be read once, whole)"
            );
        }
        // Events were lost (the kernel's queue overflowed, or ours was
        // full): anything may have changed, and the recursive watches of
        // directories made meanwhile may be missing: set every watch anew.
        let rescan = lost.flag.swap(false, Ordering::SeqCst);
        if rescan {
            warn!(
                "file-system events were lost: watching every source anew and looking at every lane"
            );
            for path in std::mem::take(&mut watched).into_keys() {
                let _ = watcher.unwatch(&path);
            }
        }
        let paths = as_spelled(&dir, paths);
        // An event about the lanes directory itself: removed, renamed, replaced.
        let dir_event = paths.contains(&dir);
        let (lanes, defaults, manifests_changed) = classify(&dir, &paths, &index);
        lock(&index).generation += 1;
        let all = defaults || dir_event || rescan;
        // New defaults or a new directory void the reason lanes failed; lost
        // events only say "look again" (and may come often: keep back-offs).
        let backoffs = if defaults || dir_event {
            super::Backoffs::Forget
        } else {
            super::Backoffs::Keep
        };
        if dir_event || rescan {
            let _ = watcher.unwatch(&dir);
            if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
                warn!(error = %crate::error::Chain(&watch_error(&dir, e)), "the lanes directory is not watched; the resync still sees its changes");
            }
            dir_id = file_id(&dir);
        }
        if manifests_changed || all {
            refresh().await;
            let renewed = update_watches(&mut watcher, &index, &mut watched);
            for lane in lanes_under(&index, &renewed) {
                queue.trigger(&lane, "source replaced");
            }
        }
        if all {
            super::trigger_all(&index, &queue, "every lane may have changed", backoffs);
        }
        // A changed manifest or source makes a running probe moot.
        for lane in lanes {
            queue.interrupt(&lane, "file changed");
        }
    }
}

/// Paths as `dir` spells the lanes directory. Sources are canonical paths;
/// one that lies in the lanes directory reached through a symlink is the same
/// inotify watch, and events then come under the canonical spelling.
fn as_spelled(dir: &Path, paths: BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
    let Ok(real) = std::fs::canonicalize(dir) else {
        return paths;
    };
    if real == dir {
        return paths;
    }
    paths
        .into_iter()
        .map(|p| match p.strip_prefix(&real) {
            Ok(rest) => dir.join(rest),
            Err(_) => p,
        })
        .collect()
}

/// Paths waiting between the notify callback and the loop.
const CHANNEL: usize = 4096;

/// The notify callback's side: it only converts and `try_send`s. A path
/// that does not fit (the channel is full) and the kernel's overflow marker
/// are never dropped silently: they set [`Lost::flag`], which nothing can
/// drop, and wake the loop.
struct Inbox {
    /// (path, whether the event leaves it open for writing)
    tx: mpsc::Sender<(PathBuf, bool)>,
    lost: Arc<Lost>,
}

/// Events were lost: the loop must look at everything.
#[derive(Default)]
struct Lost {
    flag: AtomicBool,
    wake: Notify,
}

impl Inbox {
    fn new(capacity: usize) -> (Inbox, mpsc::Receiver<(PathBuf, bool)>, Arc<Lost>) {
        let (tx, rx) = mpsc::channel(capacity);
        let lost = Arc::new(Lost::default());
        let inbox = Inbox {
            tx,
            lost: lost.clone(),
        };
        (inbox, rx, lost)
    }

    fn take(&self, res: notify::Result<notify::Event>) {
        let event = match res {
            Ok(event) => event,
            Err(e) => {
                debug!(error = %crate::error::Chain(&e), "file-system watcher error");
                return self.lose();
            }
        };
        if event.need_rescan() {
            return self.lose();
        }
        if counts(&event.kind) {
            let open = leaves_open(&event.kind);
            for path in event.paths {
                if self.tx.try_send((path, open)).is_err() {
                    self.lose();
                }
            }
        }
    }

    fn lose(&self) {
        self.lost.flag.store(true, Ordering::SeqCst);
        self.lost.wake.notify_one();
    }
}

/// What is watched: path -> (mode, device and inode when the watch was set).
type Watched = BTreeMap<PathBuf, (RecursiveMode, Option<(u64, u64)>)>;

/// Device and inode of a path, to see it replaced.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Event kinds that can mean new content: not reads, opens or closes without
/// a write.
fn counts(kind: &EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// Event kinds after which a file may be half-written: created or written,
/// and not yet closed. Its close (or a rename, removal) completes it.
fn leaves_open(kind: &EventKind) -> bool {
    use notify::event::{CreateKind, ModifyKind};
    matches!(
        kind,
        EventKind::Create(CreateKind::File | CreateKind::Any)
            | EventKind::Modify(ModifyKind::Data(_) | ModifyKind::Any)
    )
}

/// Paths -> (lanes to trigger, whether every lane is concerned, whether a
/// manifest or the defaults changed).
fn classify(
    dir: &Path,
    paths: &BTreeSet<PathBuf>,
    index: &SharedIndex,
) -> (BTreeSet<String>, bool, bool) {
    let mut lanes = BTreeSet::new();
    let (mut all, mut manifests) = (false, false);
    let sources: Vec<(PathBuf, String)> = lock(index).sources.clone();
    for path in paths {
        if path.parent() == Some(dir) {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            match lane::classify(name) {
                Kind::Lane(lane) => {
                    lanes.insert(lane.to_string());
                    manifests = true;
                }
                Kind::Defaults => {
                    all = true;
                    manifests = true;
                }
                Kind::Status(_) | Kind::NotALane => {}
            }
        }
        for (source, lane) in &sources {
            if path.starts_with(source) {
                lanes.insert(lane.clone());
            }
        }
    }
    (lanes, all, manifests)
}

/// Makes the watched set equal to the index's sources: a directory is
/// watched recursively, a file through its parent directory (editors and
/// `git` replace files by renaming over them).
/// Returns the paths whose watch was renewed (they may hold new content).
fn update_watches(
    watcher: &mut notify::RecommendedWatcher,
    index: &SharedIndex,
    watched: &mut Watched,
) -> Vec<PathBuf> {
    let mut wanted = BTreeMap::new();
    {
        let index = lock(index);
        for (source, _) in &index.sources {
            if source.is_dir() {
                wanted.insert(source.clone(), RecursiveMode::Recursive);
            } else if let Some(parent) = source.parent() {
                wanted
                    .entry(parent.to_path_buf())
                    .or_insert(RecursiveMode::NonRecursive);
            }
        }
    }
    // A watch is renewed when its path now names another directory (one
    // renamed into place) or nothing at all.
    let mut renewed = Vec::new();
    watched.retain(|path, (mode, id)| {
        let keep = wanted.get(path) == Some(mode) && *id == file_id(path) && id.is_some();
        if !keep {
            let _ = watcher.unwatch(path);
            renewed.push(path.clone());
        }
        keep
    });
    for (path, mode) in wanted {
        if watched.contains_key(&path) {
            continue;
        }
        let id = file_id(&path);
        if id.is_none() {
            continue; // not there (yet): tried again at the next check
        }
        match watcher.watch(&path, mode) {
            Ok(()) => {
                debug!(path = %path.display(), "watching");
                watched.insert(path, (mode, id));
            }
            Err(e) => {
                warn!(error = %crate::error::Chain(&watch_error(&path, e)), "a lane's source is not watched; the resync still sees its changes")
            }
        }
    }
    renewed
}

/// Lanes reading anything under `paths`.
fn lanes_under(index: &SharedIndex, paths: &[PathBuf]) -> BTreeSet<String> {
    let index = lock(index);
    index
        .sources
        .iter()
        .filter(|(source, _)| {
            paths
                .iter()
                .any(|p| source.starts_with(p) || p.starts_with(source))
        })
        .map(|(_, lane)| lane.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn index(sources: &[(&str, &str)]) -> SharedIndex {
        let sources = sources
            .iter()
            .map(|(p, l)| (PathBuf::from(p), l.to_string()))
            .collect();
        Arc::new(Mutex::new(super::super::Index {
            sources,
            ..Default::default()
        }))
    }

    #[test]
    fn paths_become_lanes_and_leftovers_nothing() {
        let dir = Path::new("/l");
        let paths: BTreeSet<PathBuf> = [
            "/l/alpha.yaml",
            "/l/alpha.status.yaml",
            "/l/.alpha.status.x.tmp",
            "/l/.alpha.yaml.swp",
            "/l/alpha.yaml~",
            "/l/4913",
            "/l/.#alpha.yaml",
            "/c/beta/config.toml",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let (lanes, all, manifests) = classify(
            dir,
            &paths,
            &index(&[("/c/beta", "beta"), ("/c/gamma", "gamma")]),
        );
        assert_eq!(lanes.into_iter().collect::<Vec<_>>(), ["alpha", "beta"]);
        assert!(!all);
        assert!(manifests);
    }

    #[test]
    fn a_file_is_open_from_its_create_or_write_until_its_close_or_rename() {
        use notify::event::{
            AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind,
            RenameMode,
        };
        assert!(leaves_open(&EventKind::Create(CreateKind::File)));
        assert!(leaves_open(&EventKind::Modify(ModifyKind::Data(
            DataChange::Any
        ))));
        assert!(!leaves_open(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(!leaves_open(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(!leaves_open(&EventKind::Modify(ModifyKind::Metadata(
            MetadataKind::Permissions
        ))));
        assert!(!leaves_open(&EventKind::Remove(RemoveKind::File)));
        assert!(!leaves_open(&EventKind::Create(CreateKind::Folder)));
    }

    #[test]
    fn an_overflow_or_a_full_channel_is_never_dropped_silently() {
        use notify::event::{CreateKind, Flag};
        let (inbox, mut rx, lost) = Inbox::new(1);
        let create = |p: &str| {
            notify::Event::new(EventKind::Create(CreateKind::File)).add_path(PathBuf::from(p))
        };
        inbox.take(Ok(create("/l/a.yaml")));
        assert!(!lost.flag.load(Ordering::SeqCst));
        inbox.take(Ok(create("/l/b.yaml"))); // the channel is full
        assert!(
            lost.flag.swap(false, Ordering::SeqCst),
            "a dropped path is a loss"
        );
        assert_eq!(
            rx.try_recv().map(|(p, _)| p),
            Ok(PathBuf::from("/l/a.yaml"))
        );
        // The kernel's overflow marker, even with room in the channel.
        inbox.take(Ok(
            notify::Event::new(EventKind::Other).set_flag(Flag::Rescan)
        ));
        assert!(
            lost.flag.swap(false, Ordering::SeqCst),
            "an overflow is a loss"
        );
        inbox.take(Err(notify::Error::generic("gone")));
        assert!(
            lost.flag.load(Ordering::SeqCst),
            "a watcher error is a loss"
        );
    }

    #[test]
    fn events_under_the_real_path_of_the_lanes_directory_count_as_its_own() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let real = std::fs::canonicalize(&real).unwrap();
        let paths = BTreeSet::from([real.join("a.yaml"), PathBuf::from("/elsewhere/x")]);
        let spelled = as_spelled(&link, paths);
        assert!(spelled.contains(&link.join("a.yaml")), "{spelled:?}");
        assert!(spelled.contains(Path::new("/elsewhere/x")));
        let (lanes, _, manifests) = classify(&link, &spelled, &index(&[]));
        assert!(manifests && lanes.contains("a"));
    }

    #[test]
    fn the_defaults_concern_every_lane() {
        let paths = BTreeSet::from([PathBuf::from("/l/_defaults.yaml")]);
        let (lanes, all, manifests) = classify(Path::new("/l"), &paths, &index(&[]));
        assert!(lanes.is_empty() && all && manifests);
    }

    #[test]
    fn status_files_never_trigger() {
        let paths = BTreeSet::from([
            PathBuf::from("/l/a.status.yaml"),
            PathBuf::from("/l/.a.status.yaml.tmp"),
        ]);
        let (lanes, all, manifests) = classify(Path::new("/l"), &paths, &index(&[]));
        assert!(lanes.is_empty() && !all && !manifests);
    }
}
