//! `lanectl run`: the always-on reconciler.
//!
//! The daemon adds only event sources and a work queue to the one per-lane
//! reconcile of `reconcile/lane.rs`. At start it waits for the first full list of
//! this instance's containers, then schedules every lane; after that the
//! sources (`sources/`: file-system events, Podman events, the periodic
//! resync) schedule lanes on the queue (`queue.rs`), and each due lane runs
//! in a task of its own, one run at a time per lane; `--jobs` bounds the
//! lanes that change containers at once, never the lanes being probed. A failed reconcile is retried with
//! per-lane exponential back-off (1 s doubling to 5 min, reset by a success);
//! an invalid manifest waits for its file to change. Shutdown is injected: on
//! cancel no new work starts, in-flight reconciles finish, and lanes keep
//! running.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::backoff::Backoff;
use crate::desired::{self, LoadOptions};
use crate::lock::lock;
use crate::queue::Queue;
use crate::reconcile::restarts::RestartBook;
use crate::reconcile::world::{self, LaneView, Look, World, WorldError};
use crate::reconcile::{Ctx, Hooks, Mode, Probing, Requeue, lane, report};
use crate::sources::{self, Index, SharedIndex};
use crate::status;

/// Retry n of a failed lane waits min(2^(n-1) s, 5 min).
const RETRY: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
/// The waits for the first full list of the containers.
const FIRST_LIST: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));

#[derive(Debug, Clone)]
pub struct Options {
    pub resync: Duration,
    pub allow_prune_all: bool,
    pub load: LoadOptions,
    /// Where `/metrics` and `/healthz` are served (bound already).
    pub metrics: Option<Arc<std::net::TcpListener>>,
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
    /// The crash-loop back-off of every lane (rule 4).
    restarts: RestartBook,
    /// Which container each lane is probing (for the event source).
    probing: Arc<Probing>,
    /// The lanes directory as last read, with the index generation it was
    /// read at: lanes reuse it until a file-system batch or a resync makes it
    /// old (so a resync over N lanes reads the directory once, not N times).
    snapshot: Mutex<Option<(u64, Arc<desired::DirState>)>>,
    /// systemd's notifications (no-ops outside systemd).
    notifier: crate::systemd::Notifier,
}

/// Runs until `shutdown` is cancelled (then returns Ok once in-flight
/// reconciles finished) or a source cannot start.
pub async fn run(
    ctx: Arc<Ctx>,
    opts: Options,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    let queue = Queue::with_root(shutdown.clone());
    // Before the first list, so that it counts for /healthz.
    let metrics = opts.metrics.as_ref().map(|_| crate::metrics::enable());
    let index: SharedIndex = Arc::new(Mutex::new(Index::default()));
    let probing = Arc::new(Probing::default());
    let shared = Arc::new(Shared {
        ctx: ctx.clone(),
        opts: opts.clone(),
        index: index.clone(),
        restarts: RestartBook::backing_off(),
        probing: probing.clone(),
        snapshot: Mutex::new(None),
        notifier: crate::systemd::Notifier::default(),
    });

    // Never plan against a partial view: the first full list comes first.
    for wait in FIRST_LIST.iter() {
        if refresh(&shared, true).await {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
    }
    sources::trigger_all(&index, &queue, "startup", sources::Backoffs::Keep);
    info!(lanes = lock(&index).lanes.len(), dir = %ctx.dir.display(), "converging");
    if queue.is_idle() {
        shared.notifier.ready(); // no lane to converge
    }

    let tracker = TaskTracker::new();
    if let (Some(listener), Some(metrics)) = (&opts.metrics, metrics) {
        let depth: Arc<dyn Fn() -> i64 + Send + Sync> = {
            let queue = queue.clone();
            Arc::new(move || i64::try_from(queue.waiting()).unwrap_or(i64::MAX))
        };
        let (listener, stop) = (listener.clone(), shutdown.clone());
        tracker.spawn(async move {
            let listener = match listener.try_clone() {
                Ok(l) => l,
                Err(e) => return warn!(error = %e, "cannot serve metrics"),
            };
            if let Err(e) = crate::metrics::serve(listener, metrics, depth, stop).await {
                warn!(error = %e, "the metrics server stopped");
            }
        });
    }
    if let Some(every) = crate::systemd::watchdog_interval() {
        let (shared, shutdown) = (shared.clone(), shutdown.clone());
        tracker.spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = shutdown.cancelled() => break,
                }
                if shared.notifier.is_ready() {
                    crate::systemd::watchdog();
                }
            }
        });
    }
    tracker.spawn(dispatch(shared.clone(), queue.clone(), tracker.clone()));
    let fs = tokio::spawn(sources::fs::run(
        ctx.dir.clone(),
        index.clone(),
        queue.clone(),
        refresher(&shared, false),
        shutdown.clone(),
    ));
    tracker.spawn(sources::events::run(
        sources::events::Live {
            ctx: ctx.clone(),
            probing,
        },
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
    shared.notifier.stopping();
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
/// look at the world (the containers and the images too). Returns false
/// when a needed source could not be read (then the index is left as it was).
async fn refresh(shared: &Shared, list: bool) -> bool {
    let ctx = &shared.ctx;
    // Read anew (a resync also catches what the watcher missed), and kept as
    // the snapshot the lanes' reconciles use.
    let generation = lock(&shared.index).generation;
    let epoch = if list {
        lock(&shared.index).begin_listing()
    } else {
        0
    };
    let seen = if list {
        let look = Look {
            load: shared.opts.load.clone(),
            probe_early: None,
            tidy: true,
        };
        World::look(ctx, &look)
            .await
            .map(|w| (w.dir.clone(), Some(w)))
    } else {
        world::read_dir(ctx, shared.opts.load.clone())
            .await
            .map(|d| (Arc::new(d), None))
    };
    if list {
        crate::metrics::full_list(seen.as_ref().map(drop).map_err(ToString::to_string));
    }
    let (state, world) = match seen {
        Ok(seen) => seen,
        Err(e) => {
            if matches!(e, WorldError::Podman(_)) {
                warn!(error = %e, "cannot list containers");
            } else {
                *lock(&shared.snapshot) = None;
                warn!(error = %crate::error::Chain(&e), "cannot read the lanes directory; nothing is pruned until it is back");
            }
            if list {
                lock(&shared.index).listing_dirty = None; // no listing comes of it
            }
            return false;
        }
    };
    *lock(&shared.snapshot) = Some((generation, state.clone()));
    let mut index = lock(&shared.index);
    let lanes = match &world {
        Some(world) => world.lanes(),
        None => {
            let mut lanes: BTreeSet<String> = state.lanes.keys().cloned().collect();
            // Keep lanes that had containers: their manifest may just be gone.
            lanes.extend(index.lanes.iter().cloned());
            lanes.extend(state.listing.status_files.iter().cloned());
            lanes
        }
    };
    if let Some(mut world) = world {
        let images = world.images().clone();
        let lanes = lanes
            .iter()
            .map(|l| (l.clone(), world.take(l).containers))
            .collect();
        index.store_listing(sources::Listing {
            taken: Instant::now(),
            epoch,
            lanes,
            images,
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

/// Hands each due lane to a task of its own. The queue runs a lane once at
/// a time; `--jobs` bounds the lanes that change containers (`Ctx::acting`)
/// and hashing is bounded too (`Ctx::checks`), but nothing bounds the lanes
/// waiting for a probe: a probe is a socket, and a lane failing its probe
/// for 30 s must not hold up another lane's change.
async fn dispatch(shared: Arc<Shared>, queue: Queue, tracker: TaskTracker) {
    while let Some((lane, cause, cancel)) = queue.next().await {
        tracker.spawn(run_one(shared.clone(), queue.clone(), lane, cause, cancel));
    }
}

/// One run of one lane, and what the queue is told after it.
async fn run_one(
    shared: Arc<Shared>,
    queue: Queue,
    lane: String,
    cause: &'static str,
    cancel: CancellationToken,
) {
    let span = info_span!("reconcile", lane = %lane, cause);
    let started = Instant::now();
    // In a task of its own: a panic fails this run, never the dispatcher or
    // the lane's place in the queue.
    let run = tokio::spawn({
        let (shared, lane) = (shared.clone(), lane.clone());
        async move { reconcile_lane(&shared, &lane, &cancel).await }.instrument(span.clone())
    });
    let next = match run.await {
        Ok(next) => next,
        Err(e) => {
            tracing::error!(parent: &span, error = %e, "reconcile ended abnormally; retrying with back-off");
            Requeue::Failed
        }
    };
    queue.done(&lane);
    crate::metrics::reconciled(started.elapsed(), matches!(next, Requeue::Failed));
    let retry_at = match next {
        Requeue::Done => {
            queue.succeeded(&lane);
            None
        }
        Requeue::Later => None,
        Requeue::At(at) => Some(at),
        Requeue::Failed => {
            Some(Instant::now() + RETRY.delay(queue.failed(&lane).saturating_sub(1)))
        }
    };
    if let Some(at) = retry_at {
        queue.retry(&lane, at);
    }
    debug!(parent: &span, took_ms = started.elapsed().as_millis() as u64, retry_in_ms = retry_at.map(|t| t.saturating_duration_since(Instant::now()).as_millis() as u64), "reconciled");
    if queue.is_idle() {
        release_free_memory();
        // Every lane has been converged once: the daemon is up.
        shared.notifier.ready();
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

/// The lanes directory: the snapshot when no file changed since it was
/// taken, else read anew (and kept).
async fn dir_state(shared: &Shared) -> Result<Arc<desired::DirState>, WorldError> {
    let generation = lock(&shared.index).generation;
    if let Some((taken, state)) = lock(&shared.snapshot).as_ref()
        && *taken == generation
    {
        return Ok(state.clone());
    }
    let state = Arc::new(world::read_dir(&shared.ctx, shared.opts.load.clone()).await?);
    *lock(&shared.snapshot) = Some((generation, state.clone()));
    Ok(state)
}

/// Why a lane's container was recreated, in the metrics' words.
fn recreated(outcome: &crate::reconcile::Outcome) -> Option<&'static str> {
    use crate::plan::{Action, Why};
    match (&outcome.action, outcome.phase) {
        (Some(Action::Roll(_)), crate::status::Phase::Degraded) => Some("rollout-failed"),
        (Some(Action::Recreate(why) | Action::Roll(why)), _) => Some(match why {
            Why::SpecChanged => "spec",
            Why::ImageRebuilt => "image",
            Why::CodexChanged => "codex",
            Why::TrackedContentChanged => "tracked",
            Why::HalfMade => "half-made",
        }),
        _ => None,
    }
}

/// One lane, fresh from the files and Podman; says when it wants to be
/// looked at again.
async fn reconcile_lane(shared: &Shared, lane: &str, cancel: &CancellationToken) -> Requeue {
    let ctx = &shared.ctx;
    let state = match dir_state(shared).await {
        Ok(s) => s,
        Err(e) => {
            warn!(error = %crate::error::Chain(&e), "cannot read the lanes directory; nothing is pruned");
            return Requeue::Failed;
        }
    };
    let desired = state.lanes.get(lane).cloned();
    if desired.is_none() && world::refuses_to_prune(&state, shared.opts.allow_prune_all) {
        warn!(
            "the lanes directory holds no manifest: not removing this lane's container \
             (a bad checkout must not wipe a host; pass --allow-prune-all)"
        );
        return Requeue::Done;
    }
    // The resync's look at the world, while it still counts; else this
    // lane's own list call.
    let listed = lock(&shared.index).take_listed(lane);
    let (containers, images) = match listed {
        Some(listed) => listed,
        None => match ctx.podman.list_lane(&ctx.instance, lane).await {
            Ok(containers) => (containers, Default::default()),
            Err(e) => {
                let previous = status::read(&ctx.dir, lane);
                let answers = lane::still_answers(desired.as_ref(), previous.as_ref()).await;
                if let Some(st) =
                    report::unreachable(lane, previous, desired.as_ref(), e.to_string(), answers)
                {
                    lane::write_status(ctx, st);
                }
                return Requeue::Failed;
            }
        },
    };
    let view = LaneView {
        lane: lane.to_string(),
        desired,
        containers,
        images,
        answered: None,
        defaults_sha256: state.defaults_sha256.clone(),
        elsewhere: state.elsewhere.get(lane).cloned(),
        keep: world::keeps_moved_lane(&state, lane, shared.opts.allow_prune_all),
    };
    let hooks = Hooks {
        cancel: Some(cancel),
        restarts: Some(&shared.restarts),
        probing: Some(&shared.probing),
    };
    let outcome = lane::reconcile(ctx, view, Mode::Apply, hooks).await;
    if !outcome.interrupted {
        let phase = outcome.has_manifest.then_some(outcome.phase);
        shared.notifier.lane(lane, phase);
        crate::metrics::lane(&crate::metrics::LaneEnd {
            lane,
            phase,
            restarts: outcome.restarts,
            recreated: recreated(&outcome),
        });
    }
    outcome.requeue()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_from_one_second_to_five_minutes() {
        let delays: Vec<u64> = (1..=11)
            .map(|n: u32| RETRY.delay(n - 1).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(RETRY.delay(40), RETRY.max);
    }
}
