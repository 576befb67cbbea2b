//! File-system events as triggers: the lanes directory (manifests, the
//! defaults) and every lane's codex and `track_content` sources.
//!
//! The notify callback only converts and `try_send`s (a full channel drops
//! the event: the resync catches up). Debouncing is one loop: after the first
//! event, paths are collected until the tree has been quiet for [`QUIET`] (so
//! an editor's save or a `git checkout` of 50 files is one batch, and a
//! half-written file is read only once it settles), then each path becomes
//! lane names: `<lane>.yaml` that lane, `_defaults.yaml` every lane, a path
//! under a source the lanes that read it. Status files, hidden files and
//! editor leftovers (`*~`, `.*.swp`, `4913`, `.#*`) never trigger anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace, warn};

use super::SharedIndex;
use crate::lane::{self, Kind};
use crate::queue::Queue;

/// A batch ends after this long without events.
pub const QUIET: Duration = Duration::from_millis(150);
/// A batch never waits longer than this (a file rewritten without pause).
const MAX_BATCH: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(
        "cannot watch {}: the limit of inotify watches is reached \
         (raise it: sysctl fs.inotify.max_user_watches=524288)", path.display()
    )]
    Limit { path: PathBuf },
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
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
    let (tx, mut rx) = mpsc::channel::<PathBuf>(4096);
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if let Ok(event) = res
            && counts(&event.kind)
        {
            for path in event.paths {
                // Full: dropped; the periodic resync catches up.
                let _ = tx.try_send(path);
            }
        }
    })
    .map_err(|e| watch_error(&dir, e))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| watch_error(&dir, e))?;
    let mut watched = BTreeMap::new();
    update_watches(&mut watcher, &index, &mut watched);

    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            path = rx.recv() => match path {
                Some(p) => p,
                None => return Ok(()),
            },
        };
        let started = Instant::now();
        let mut paths = BTreeSet::from([first]);
        loop {
            let deadline = (Instant::now() + QUIET).min(started + MAX_BATCH);
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = sleep_until(deadline) => break,
                path = rx.recv() => match path {
                    Some(p) => { paths.insert(p); }
                    None => break,
                },
            }
        }
        trace!(count = paths.len(), "file-system batch");
        let (lanes, all, manifests_changed) = classify(&dir, &paths, &index);
        if manifests_changed {
            refresh().await;
            update_watches(&mut watcher, &index, &mut watched);
            // The lanes dir may have been replaced: watch it again.
            let _ = watcher.watch(&dir, RecursiveMode::NonRecursive);
        }
        if all {
            super::trigger_all(&index, &queue, "defaults changed");
        }
        // A changed manifest or source makes a running probe moot.
        for lane in lanes {
            queue.interrupt(&lane, "file changed");
        }
    }
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

/// Paths -> (lanes to trigger, whether every lane is concerned, whether a
/// manifest or the defaults changed).
fn classify(
    dir: &Path,
    paths: &BTreeSet<PathBuf>,
    index: &SharedIndex,
) -> (BTreeSet<String>, bool, bool) {
    let mut lanes = BTreeSet::new();
    let (mut all, mut manifests) = (false, false);
    let sources: Vec<(PathBuf, String)> =
        index.lock().map(|i| i.sources.clone()).unwrap_or_default();
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
fn update_watches(
    watcher: &mut notify::RecommendedWatcher,
    index: &SharedIndex,
    watched: &mut BTreeMap<PathBuf, RecursiveMode>,
) {
    let mut wanted = BTreeMap::new();
    if let Ok(index) = index.lock() {
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
    watched.retain(|path, mode| {
        let keep = wanted.get(path) == Some(mode);
        if !keep {
            let _ = watcher.unwatch(path);
        }
        keep
    });
    for (path, mode) in wanted {
        if watched.contains_key(&path) {
            continue;
        }
        match watcher.watch(&path, mode) {
            Ok(()) => {
                debug!(path = %path.display(), "watching");
                watched.insert(path, mode);
            }
            Err(e) => {
                warn!(error = %watch_error(&path, e), "a lane's source is not watched; the resync still sees its changes")
            }
        }
    }
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
