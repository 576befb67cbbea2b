//! `lanectl run`: the always-on reconciler.
//!
//! The daemon adds only event sources and a work queue to the one per-lane
//! reconcile of `reconcile.rs`. At start it waits for the first full list of
//! this instance's containers, then schedules every lane; after that the
//! sources (`sources/`: file-system events, Podman events, the periodic
//! resync) schedule lanes on the queue (`queue.rs`), and `--jobs` workers
//! take them one at a time per lane. A failed reconcile is retried with
//! per-lane exponential back-off (1 s doubling to 5 min, reset by a success);
//! an invalid manifest waits for its file to change. Shutdown is injected: on
//! cancel no new work starts, in-flight reconciles finish, and lanes keep
//! running.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::desired::{self, LoadOptions};
use crate::queue::Queue;
use crate::reconcile::{self, Ctx, Mode};
use crate::sources::{self, Index, SharedIndex};
use crate::status::Phase;

const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct Options {
    pub resync: Duration,
    pub jobs: usize,
    pub allow_prune_all: bool,
    pub load: LoadOptions,
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Watch(#[from] sources::fs::FsError),
}

/// What the workers share.
struct Shared {
    ctx: Arc<Ctx>,
    opts: Options,
    index: SharedIndex,
    /// The lanes directory as last read, with the index generation it was
    /// read at: lanes reuse it until a file-system batch or a resync makes it
    /// old (so a resync over N lanes reads the directory once, not N times).
    snapshot: Mutex<Option<(u64, Arc<desired::DirState>)>>,
}

/// Runs until `shutdown` is cancelled (then returns Ok once in-flight
/// reconciles finished) or a source cannot start.
pub async fn run(
    ctx: Arc<Ctx>,
    opts: Options,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let queue = Queue::with_root(shutdown.clone());
    let index: SharedIndex = Arc::new(Mutex::new(Index::default()));
    let shared = Arc::new(Shared {
        ctx: ctx.clone(),
        opts: opts.clone(),
        index: index.clone(),
        snapshot: Mutex::new(None),
    });

    // Never plan against a partial view: the first full list comes first.
    let mut wait = Duration::from_secs(1);
    loop {
        if refresh(&shared, true).await {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
    sources::trigger_all(&index, &queue, "startup", sources::Backoffs::Keep);
    info!(lanes = index.lock().map(|i| i.lanes.len()).unwrap_or(0), dir = %ctx.dir.display(), "converging");

    let tracker = TaskTracker::new();
    for _ in 0..opts.jobs.max(1) {
        tracker.spawn(worker(shared.clone(), queue.clone()));
    }
    let fs = tokio::spawn(sources::fs::run(
        ctx.dir.clone(),
        index.clone(),
        queue.clone(),
        refresher(&shared, false),
        shutdown.clone(),
    ));
    tracker.spawn(sources::events::run(
        sources::events::Live(ctx.clone()),
        index.clone(),
        queue.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(sources::resync::run(
        opts.resync,
        index.clone(),
        queue.clone(),
        refresher(&shared, true),
        shutdown.clone(),
    ));

    let fatal = tokio::select! {
        () = shutdown.cancelled() => None,
        joined = fs => match joined {
            Ok(Err(e)) => Some(e),
            Ok(Ok(())) => None,
            Err(e) => Some(sources::fs::FsError::Crashed(e.to_string())),
        },
    };
    // Stop handing out work; let the workers finish what they hold.
    shutdown.cancel();
    queue.close();
    tracker.close();
    tracker.wait().await;
    match fatal {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// What the sources call to refresh the index (see [`refresh`]).
fn refresher(
    shared: &Arc<Shared>,
    list: bool,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + use<> {
    let shared = shared.clone();
    move || {
        let shared = shared.clone();
        Box::pin(async move {
            refresh(&shared, list).await;
        })
    }
}

/// Refreshes the index from the lanes directory and, with `list`, from one
/// list call of this instance's containers. Returns false when a needed
/// source could not be read (then the index is left as it was).
async fn refresh(shared: &Shared, list: bool) -> bool {
    let ctx = &shared.ctx;
    // Read anew (a resync also catches what the watcher missed), and kept as
    // the snapshot the lanes' reconciles use.
    let generation = shared
        .index
        .lock()
        .map(|i| i.generation)
        .unwrap_or(u64::MAX);
    let state = match load_dir(shared).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            if let Ok(mut snapshot) = shared.snapshot.lock() {
                *snapshot = None;
            }
            warn!(error = %crate::error::Chain(&e), "cannot read the lanes directory; nothing is pruned until it is back");
            return false;
        }
    };
    if let Ok(mut snapshot) = shared.snapshot.lock() {
        *snapshot = Some((generation, state.clone()));
    }
    if list {
        crate::status::remove_stale_temps(&ctx.dir);
    }
    let epoch = match shared.index.lock() {
        Ok(mut index) if list => index.begin_listing(),
        _ => 0,
    };
    let listed = if list {
        match ctx.observe().await {
            Ok(mut o) => {
                o.remove(""); // instance label without lane label: not ours to judge
                Some((o, look_up_images(ctx, &state).await))
            }
            Err(e) => {
                warn!(error = %e, "cannot list containers");
                if let Ok(mut index) = shared.index.lock() {
                    index.listing_dirty = None; // no listing comes of it
                }
                return false;
            }
        }
    } else {
        None
    };
    let Ok(mut index) = shared.index.lock() else {
        return false;
    };
    let mut lanes: BTreeSet<String> = state.lanes.keys().cloned().collect();
    match &listed {
        Some((c, _)) => lanes.extend(c.keys().cloned()),
        // Keep lanes that had containers: their manifest may just be gone.
        None => lanes.extend(index.lanes.iter().cloned()),
    }
    lanes.extend(state.listing.status_files.iter().cloned());
    if let Some((mut by_lane, images)) = listed {
        let lanes = lanes
            .iter()
            .map(|l| (l.clone(), by_lane.remove(l).unwrap_or_default()))
            .collect();
        index.store_listing(sources::Listing {
            taken: Instant::now(),
            epoch,
            lanes,
            images: Arc::new(images),
        });
    }
    index.lanes = lanes;
    index.sources = state
        .lanes
        .iter()
        .filter_map(|(lane, d)| match d {
            desired::Desired::Valid { spec, .. } => Some((lane, spec)),
            desired::Desired::Invalid { .. } => None,
        })
        .flat_map(|(lane, spec)| {
            let codex = spec.codex.iter().map(|c| c.source.clone());
            let tracked = spec
                .mounts
                .iter()
                .filter(|m| m.track_content)
                .map(|m| m.source.clone());
            codex
                .chain(tracked)
                .map(|p| (p, lane.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    true
}

/// Each distinct image of the valid lanes, looked up once (a failed lookup
/// is left out: that lane looks it up itself).
async fn look_up_images(ctx: &Ctx, state: &desired::DirState) -> HashMap<String, Option<String>> {
    let found = futures_util::future::join_all(
        state
            .images()
            .into_iter()
            .map(|image| async move { (image.to_string(), ctx.podman.image_id(image).await) }),
    )
    .await;
    found
        .into_iter()
        .filter_map(|(image, id)| Some((image, id.ok()?)))
        .collect()
}

async fn worker(shared: Arc<Shared>, queue: Queue) {
    while let Some((lane, cause, cancel)) = queue.next().await {
        let span = info_span!("reconcile", lane = %lane, cause);
        let started = Instant::now();
        // In a task of its own: a panic fails this run, never the worker or
        // the lane's place in the queue.
        let run = tokio::spawn({
            let (shared, lane) = (shared.clone(), lane.clone());
            async move { reconcile_lane(&shared, &lane, &cancel).await }.instrument(span.clone())
        });
        let next = match run.await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(parent: &span, error = %e, "reconcile ended abnormally; retrying with back-off");
                Next::Failed
            }
        };
        queue.done(&lane);
        let retry_at = match next {
            Next::Done => {
                queue.succeeded(&lane);
                None
            }
            Next::Later => None,
            Next::At(at) => Some(at),
            Next::Failed => Some(Instant::now() + retry_delay(queue.failed(&lane))),
        };
        if let Some(at) = retry_at {
            queue.retry(&lane, at);
        }
        debug!(parent: &span, took_ms = started.elapsed().as_millis() as u64, retry_in_ms = retry_at.map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64), "reconciled");
        if queue.is_idle() {
            release_free_memory();
        }
    }
}

/// Hands the heap's free pages back to the system once the daemon goes
/// quiet: a burst of work (a cold start of 100 lanes) would otherwise keep
/// its peak resident for good.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory that malloc holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Fewer malloc arenas than glibc's default of 8 per core: the daemon's
/// threads mostly wait, and each arena keeps its own free memory resident.
pub fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt with M_ARENA_MAX only caps arenas created from now on.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Why the lanes directory could not be read.
#[derive(Debug, thiserror::Error)]
enum DirError {
    #[error(transparent)]
    List(#[from] crate::lane::ListError),
    #[error("reading the lanes directory ended abnormally")]
    Task(#[from] tokio::task::JoinError),
}

/// Reads the lanes directory off the async threads: it parses every
/// manifest and walks every codex and tracked tree (a large one takes
/// a while), which must not stall the event sources and the probes.
async fn load_dir(shared: &Shared) -> Result<desired::DirState, DirError> {
    let (dir, opts) = (shared.ctx.dir.clone(), shared.opts.load);
    Ok(tokio::task::spawn_blocking(move || desired::load_dir(&dir, opts)).await??)
}

/// The lanes directory: the snapshot when no file changed since it was
/// taken, else read anew (and kept).
async fn dir_state(shared: &Shared) -> Result<Arc<desired::DirState>, DirError> {
    let generation = shared
        .index
        .lock()
        .map(|i| i.generation)
        .unwrap_or(u64::MAX);
    if let Ok(snapshot) = shared.snapshot.lock()
        && let Some((taken, state)) = snapshot.as_ref()
        && *taken == generation
    {
        return Ok(state.clone());
    }
    let state = Arc::new(load_dir(shared).await?);
    if let Ok(mut snapshot) = shared.snapshot.lock() {
        *snapshot = Some((generation, state.clone()));
    }
    Ok(state)
}

/// What a lane's run asks of the queue.
enum Next {
    /// Converged (or invalid until its file changes): forget its failures.
    Done,
    /// Nothing to schedule (interrupted: the interrupt queued the rerun).
    Later,
    /// Look again at this time (a delayed restart).
    At(Instant),
    /// Failed: retry with back-off.
    Failed,
}

/// One lane, fresh from the files and Podman; says when it wants to be
/// looked at again.
async fn reconcile_lane(shared: &Shared, lane: &str, cancel: &CancellationToken) -> Next {
    let ctx = &shared.ctx;
    let state = match dir_state(shared).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %crate::error::Chain(&e), "cannot read the lanes directory; nothing is pruned");
            return Next::Failed;
        }
    };
    let manifests = state.lanes.len();
    let desired = state.lanes.get(lane).cloned();
    if desired.is_none() && manifests == 0 && !shared.opts.allow_prune_all {
        warn!(
            "the lanes directory holds no manifest: not removing this lane's container \
             (a bad checkout must not wipe a host; pass --allow-prune-all)"
        );
        return Next::Done;
    }
    let listed = shared
        .index
        .lock()
        .ok()
        .and_then(|mut i| i.take_listed(lane));
    let (observed, known) = match listed {
        Some((o, images)) => (Ok(o), Some(images)),
        None => (ctx.podman.list_lane(&ctx.instance, lane).await, None),
    };
    let observed = match observed {
        Ok(o) => o,
        Err(e) => {
            reconcile::mark_unreachable(ctx, lane, desired.as_ref(), &e);
            return Next::Failed;
        }
    };
    let outcome = reconcile::reconcile(
        ctx,
        lane,
        desired,
        observed,
        Mode::Apply,
        Some(cancel),
        known,
    )
    .await;
    if outcome.interrupted {
        return Next::Later; // the interrupt queued the rerun (or this is shutdown)
    }
    if let Some(at) = outcome.retry_at {
        return Next::At(at);
    }
    if outcome.status_error.is_some() {
        return Next::Failed; // logged; retried until it is written
    }
    match outcome.phase {
        Phase::Ready | Phase::Stopped | Phase::Invalid => Next::Done,
        Phase::Pending | Phase::Failed => Next::Failed,
    }
}

/// Delay before retry `n` (1-based).
fn retry_delay(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(16)).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_one_second_to_five_minutes() {
        let delays: Vec<u64> = (1..=11).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay(40), MAX_BACKOFF);
    }
}
