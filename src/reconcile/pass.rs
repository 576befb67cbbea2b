//! A pass over the lanes directory, for `apply`, `plan` and `down`: one look
//! at the world, then every lane (or the named ones) reconciled with bounded
//! parallelism; outcomes in lane-name order.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tokio::sync::Semaphore;
use tracing::{Instrument, info_span, warn};

use super::world::{LaneView, Look, World, WorldError};
use super::{Ctx, Hooks, Mode, Outcome};
use crate::desired::LoadOptions;
use crate::status::Phase;

/// Options of one pass.
#[derive(Debug, Clone, Default)]
pub struct PassOptions {
    /// Only these lanes (all when empty).
    pub only: Vec<String>,
    pub jobs: usize,
    pub allow_prune_all: bool,
    pub load: LoadOptions,
}

/// How many lanes of a pass are hashed and probed at once; at most `--jobs`
/// of them change containers (`Ctx::acting`). A no-op pass is bound by probe
/// round trips, not by CPU.
const CHECKS_AT_ONCE: usize = 32;

/// One pass over the directory: every lane (or the named ones).
pub async fn pass(
    ctx: Arc<Ctx>,
    mode: Mode,
    opts: &PassOptions,
) -> Result<Vec<Outcome>, WorldError> {
    let look = Look {
        load: opts.load.clone(),
        probe_early: (mode == Mode::Apply).then(|| opts.only.clone()),
        tidy: mode == Mode::Apply,
    };
    let mut world = World::look(&ctx, &look).await?;
    world.guard_prune_all(&ctx.dir, opts.allow_prune_all)?;
    let names = if opts.only.is_empty() {
        // Another host's lanes too: each says it is skipped, and a
        // container of it left from before goes.
        let mut names = world.lanes();
        names.extend(world.dir.elsewhere.keys().cloned());
        names
    } else {
        opts.only.iter().cloned().collect()
    };

    // Lanes whose manifest is gone go first: a renamed manifest frees its
    // container name before the new lane's create needs it.
    let (gone, present): (Vec<String>, Vec<String>) = names
        .into_iter()
        .partition(|n| !world.dir.lanes.contains_key(n));
    let mut outcomes = Vec::new();
    for batch in [gone, present] {
        let views = batch
            .iter()
            .map(|name| LaneView {
                keep: super::world::keeps_moved_lane(&world.dir, name, opts.allow_prune_all),
                ..world.take(name)
            })
            .collect();
        let at_once = opts.jobs.max(CHECKS_AT_ONCE);
        outcomes.extend(run_bounded(&ctx, mode, at_once, views).await);
    }
    outcomes.sort_by(|a, b| a.lane.cmp(&b.lane));
    Ok(outcomes)
}

/// `down`: the named lanes (all this instance has, when none are named)
/// reconciled as if they had no manifest: their containers and status files
/// go, one lane after another.
pub async fn down(ctx: Arc<Ctx>, only: Vec<String>) -> Result<Vec<Outcome>, WorldError> {
    let mut world = World::look_without_manifests(&ctx).await?;
    let names: BTreeSet<String> = if only.is_empty() {
        world.lanes()
    } else {
        only.into_iter().collect()
    };
    let views = names
        .iter()
        .map(|name| world.take_without_manifest(name))
        .collect();
    let mut outcomes = run_bounded(&ctx, Mode::Apply, 1, views).await;
    outcomes.sort_by(|a, b| a.lane.cmp(&b.lane));
    Ok(outcomes)
}

/// Reconciles lanes at most `jobs` at once. A lane whose task panicked is
/// reported failed, never dropped.
async fn run_bounded(
    ctx: &Arc<Ctx>,
    mode: Mode,
    jobs: usize,
    views: Vec<LaneView>,
) -> Vec<Outcome> {
    let jobs = Arc::new(Semaphore::new(jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut names = HashMap::new();
    for view in views {
        let (ctx, jobs) = (ctx.clone(), jobs.clone());
        let span = info_span!("reconcile", lane = %view.lane);
        let name = view.lane.clone();
        let handle = tasks.spawn(
            async move {
                let _permit = jobs.acquire_owned().await;
                super::lane::reconcile(&ctx, view, mode, Hooks::default()).await
            }
            .instrument(span),
        );
        names.insert(handle.id(), name);
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next_with_id().await {
        match joined {
            Ok((_, outcome)) => {
                if let Some(progress) = &ctx.progress {
                    progress(&outcome.lane, "done", Some(&outcome));
                }
                outcomes.push(outcome);
            }
            Err(e) => {
                let lane = names.get(&e.id()).cloned().unwrap_or_default();
                warn!(lane = %lane, error = %e, "a lane's reconcile task ended abnormally");
                let message = format!("internal error: {e}");
                outcomes.push(Outcome::new(&lane, None, Phase::Failed, message));
            }
        }
    }
    outcomes
}
