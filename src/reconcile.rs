//! The one function that takes a lane from what its manifest says to what
//! Podman runs and what its status file reports: [`reconcile`]. `apply`,
//! `plan` and (later) the daemon call it; [`pass`] runs it over a whole
//! directory with bounded parallelism.
//!
//! Per lane: resolve the image ID (never pulled), fingerprint the codex and
//! tracked content, hash, decide (`plan.rs`), carry out (`exec.rs`), probe,
//! write the status. Every failure is that lane's `failed` or `invalid`
//! status with the reason; the other lanes go on. The reconcile re-reads
//! everything it needs each time: it is level-triggered.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{OnceCell, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::container::{Observed, PublishedPort, State};
use crate::desired::{self, Desired, LoadOptions};
use crate::error;
use crate::exec::{self, ExecError};
use crate::hash::{self, LaneHash};
use crate::labels;
use crate::lane::ListError;
use crate::manifest::DesiredState;
use crate::observe;
use crate::plan::{self, Action};
use crate::podman::{Podman, PodmanError};
use crate::probe;
use crate::spec::LaneSpec;
use crate::status::{self, Phase, Status};

/// Image IDs by reference as the daemon's resync looked them up (`None`:
/// absent), handed to the lanes that resync schedules.
pub type KnownImages = Arc<HashMap<String, Option<String>>>;

/// Whether a pass only decides or also acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plan,
    Apply,
}

/// An image reference's local ID (`None`: absent), looked up at most once.
type ImageCell = OnceCell<Result<Option<String>, String>>;

/// What is shared by the lanes of one pass.
pub struct Ctx {
    pub podman: Podman,
    pub dir: PathBuf,
    pub instance: String,
    /// One image lookup per distinct image per pass; `None` in the daemon,
    /// which looks an image up on every reconcile (a rebuilt or newly built
    /// image must be seen, and a lookup that failed once must not stick).
    images: Option<Mutex<HashMap<String, Arc<ImageCell>>>>,
    /// Codex fingerprints and tracked content of unchanged sources.
    fingerprints: Arc<hash::FingerprintCache>,
    /// Whose files the codex and tracked content may be (checked on each read).
    policy: hash::Policy,
    /// The container each lane is probing now (the daemon interrupts a probe
    /// only for events about that container, not about the one it replaced).
    pub probing: Mutex<HashMap<String, String>>,
    /// The daemon's crash-loop back-off per lane (rule 4); none for a
    /// one-shot `apply`, which restarts at once.
    restarts: RestartBook,
    /// Lanes whose container answered its probe while the pass waited for
    /// Podman's list: lane -> (container id, host port) that answered.
    early_ready: Mutex<HashMap<String, (String, SocketAddr)>>,
    /// `--jobs`: lanes that change a container (and then probe it) at once.
    /// Lanes with nothing to do only hash and probe, many more at once.
    acting: Semaphore,
}

/// What the daemon remembers of a lane's crashes.
#[derive(Debug, Default, Clone)]
struct RestartState {
    /// Restarts in the current back-off (restart n waits min(2^(n-1) s, 5 min)).
    count: u32,
    /// When the exit that waits for its restart was first seen.
    exited_seen: Option<Instant>,
    /// Since when the lane has been ready without a break.
    ready_since: Option<Instant>,
}

/// Longest wait before a crashed container is restarted.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(300);
/// A lane ready this long forgets its crash back-off.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// When crashed containers may be restarted (rule 4): at once for a one-shot
/// `apply`; in the daemon, restart n of a lane waits min(2^(n-1) s, 5 min)
/// after the exit was first seen, and the count is forgotten after
/// FORGET_AFTER of readiness or with a new container. Kept apart from [`Ctx`]
/// so that its clock can be tested alone.
#[derive(Debug, Default)]
struct RestartBook {
    /// `None`: restarts at once.
    lanes: Option<Mutex<HashMap<String, RestartState>>>,
}

impl RestartBook {
    /// The daemon's book, which delays restarts.
    fn backing_off() -> Self {
        RestartBook {
            lanes: Some(Mutex::new(HashMap::new())),
        }
    }

    /// For a crashed lane about to be restarted: `Err(at)` while its back-off
    /// lasts; `Ok` counts the restart.
    fn gate(&self, lane: &str) -> Result<(), Instant> {
        let Some(book) = &self.lanes else {
            return Ok(());
        };
        let Ok(mut book) = book.lock() else {
            return Ok(());
        };
        let st = book.entry(lane.to_string()).or_default();
        let now = Instant::now();
        // Ready long enough before this exit: the back-off is forgotten.
        if st
            .ready_since
            .is_some_and(|since| now.duration_since(since) >= FORGET_AFTER)
        {
            *st = RestartState::default();
        }
        let seen = *st.exited_seen.get_or_insert(now);
        let delay = Duration::from_secs(1u64 << st.count.min(16)).min(MAX_RESTART_DELAY);
        if now < seen + delay {
            return Err(seen + delay);
        }
        st.count += 1;
        st.exited_seen = None;
        st.ready_since = None;
        Ok(())
    }

    /// A new container starts with no back-off.
    fn forget(&self, lane: &str) {
        if let Some(Ok(mut book)) = self.lanes.as_ref().map(Mutex::lock) {
            book.remove(lane);
        }
    }

    /// Notes whether a lane ended ready, to forget its back-off after
    /// FORGET_AFTER of readiness (a container that dies again keeps it).
    fn note_ready(&self, lane: &str, ready: bool) {
        let Some(book) = &self.lanes else { return };
        let Ok(mut book) = book.lock() else { return };
        let Some(st) = book.get_mut(lane) else { return };
        let now = Instant::now();
        if !ready {
            st.ready_since = None;
        } else if now.duration_since(*st.ready_since.get_or_insert(now)) >= FORGET_AFTER {
            book.remove(lane);
        }
    }
}

impl Ctx {
    pub fn new(podman: Podman, dir: PathBuf, instance: String) -> Self {
        Ctx {
            podman,
            dir,
            instance,
            images: Some(Mutex::new(HashMap::new())),
            probing: Mutex::new(HashMap::new()),
            fingerprints: Arc::default(),
            policy: hash::Policy::of_process(false),
            restarts: RestartBook::default(),
            early_ready: Mutex::new(HashMap::new()),
            acting: Semaphore::new(Semaphore::MAX_PERMITS),
        }
    }

    /// At most `jobs` lanes change containers at once (`--jobs`).
    pub fn with_jobs(mut self, jobs: usize) -> Self {
        self.acting = Semaphore::new(jobs.clamp(1, Semaphore::MAX_PERMITS));
        self
    }

    /// Whose files may be read into a container (`--allow-insecure-permissions`
    /// relaxes the default, which checks when running as root).
    pub fn with_policy(mut self, policy: hash::Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Delays restarts of crashed containers (the daemon's rule 4).
    pub fn with_restart_backoff(mut self) -> Self {
        self.restarts = RestartBook::backing_off();
        self.images = None;
        self
    }

    /// For a crashed lane about to be restarted: `Err(at)` while its back-off
    /// lasts; `Ok` counts the restart.
    fn restart_gate(&self, lane: &str) -> Result<(), Instant> {
        self.restarts.gate(lane)
    }

    fn stop_probing(&self, lane: &str) {
        if let Ok(mut probing) = self.probing.lock() {
            probing.remove(lane);
        }
    }

    /// Whether `lane` is probing the container `id` now.
    pub fn is_probing(&self, lane: &str, id: &str) -> bool {
        self.probing
            .lock()
            .is_ok_and(|p| p.get(lane).map(String::as_str) == Some(id))
    }

    /// A new container starts with no back-off.
    fn forget_restarts(&self, lane: &str) {
        self.restarts.forget(lane);
    }

    /// Notes whether a lane ended ready, to forget its back-off after
    /// FORGET_AFTER of readiness (a container that dies again keeps it).
    fn note_ready(&self, lane: &str, ready: bool) {
        self.restarts.note_ready(lane, ready);
    }

    /// This instance's containers by lane: one list call (`observe.rs`).
    pub async fn observe(&self) -> Result<BTreeMap<String, Vec<Observed>>, PodmanError> {
        observe::observe(&self.podman, &self.instance).await
    }

    /// Forgets what the last pass learnt (image IDs, early probes).
    pub fn new_pass(&self) {
        if let Some(Ok(mut images)) = self.images.as_ref().map(Mutex::lock) {
            images.clear();
        }
        if let Ok(mut early) = self.early_ready.lock() {
            early.clear();
        }
    }

    /// Whether this pass already saw container `id` answer on `host_port`.
    fn answered_early(&self, lane: &str, id: &str, addr: SocketAddr) -> bool {
        self.early_ready.lock().is_ok_and(|mut early| {
            early
                .remove(lane)
                .is_some_and(|(i, a)| i == id && a == addr)
        })
    }

    async fn image_id(&self, reference: &str) -> Result<Option<String>, String> {
        let cell = match self.images.as_ref().map(Mutex::lock) {
            Some(Ok(mut images)) => images.entry(reference.to_string()).or_default().clone(),
            _ => Arc::new(OnceCell::new()),
        };
        cell.get_or_init(|| async {
            self.podman
                .image_id(reference)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .clone()
    }
}

/// How one lane ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub lane: String,
    /// What was (or, for `plan`, would be) done; `None` when nothing could be
    /// planned (an invalid manifest, a missing image).
    pub action: Option<Action>,
    pub phase: Phase,
    pub endpoint: Option<String>,
    pub message: String,
    /// The lane has a manifest (a named lane without one is a failure).
    pub has_manifest: bool,
    /// Stray containers of the lane (left by a crash) removed before the action.
    pub extras: usize,
    /// When the lane wants another look (a delayed restart), if it does.
    pub retry_at: Option<Instant>,
    /// The run was cancelled at a safe point (the probe); nothing was written.
    pub interrupted: bool,
    /// The status file could not be written (disk full, read-only dir).
    pub status_error: Option<String>,
}

impl Outcome {
    fn new(lane: &str, action: Option<Action>, phase: Phase, message: impl Into<String>) -> Self {
        Outcome {
            lane: lane.to_string(),
            action,
            phase,
            endpoint: None,
            message: message.into(),
            has_manifest: true,
            extras: 0,
            retry_at: None,
            interrupted: false,
            status_error: None,
        }
    }

    /// True when this lane is where its manifest wants it, and says so.
    pub fn converged(&self) -> bool {
        self.has_manifest
            && matches!(self.phase, Phase::Ready | Phase::Stopped)
            && self.status_error.is_none()
    }
}

/// Why a whole pass could not run.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Dir(#[from] ListError),
    #[error(transparent)]
    Podman(#[from] PodmanError),
    #[error(
        "{dir} holds no manifest while this instance still has {count} container(s): \
         not pruning them (a bad checkout must not wipe a host); pass --allow-prune-all to remove them"
    )]
    RefusePruneAll { dir: String, count: usize },
    #[error("internal error: {0}")]
    Internal(String),
}

/// Options of one pass.
#[derive(Debug, Clone, Default)]
pub struct PassOptions {
    /// Only these lanes (all when empty).
    pub only: Vec<String>,
    pub jobs: usize,
    pub allow_prune_all: bool,
    pub load: LoadOptions,
}

/// One pass over the directory: every lane (or the named ones) reconciled,
/// at most `jobs` at once; outcomes in lane-name order.
pub async fn pass(
    ctx: Arc<Ctx>,
    mode: Mode,
    opts: &PassOptions,
) -> Result<Vec<Outcome>, PassError> {
    ctx.new_pass();
    // Podman's list call is the longest wait of a pass that has nothing to do:
    // the directory is read, the images looked up and the lanes probed meanwhile.
    let listed = CancellationToken::new();
    let (state, observed) =
        tokio::join!(read_dir_and_probe_early(&ctx, mode, opts, &listed), async {
            let observed = ctx.observe().await;
            listed.cancel();
            observed
        });
    let state = state?;
    let mut observed = observed?;
    let stale = status::remove_stale_temps(&ctx.dir);
    if stale > 0 {
        info!(
            count = stale,
            "removed temporary status files of a killed lanectl"
        );
    }
    observed.remove(""); // instance label without lane label: not ours to judge

    let count: usize = observed.values().map(Vec::len).sum();
    if state.lanes.is_empty() && count > 0 && !opts.allow_prune_all {
        return Err(PassError::RefusePruneAll {
            dir: ctx.dir.display().to_string(),
            count,
        });
    }

    let mut names: BTreeSet<String> = state.lanes.keys().cloned().collect();
    names.extend(observed.keys().cloned());
    names.extend(state.listing.status_files.iter().cloned());
    if !opts.only.is_empty() {
        names = opts.only.iter().cloned().collect();
    }

    // Lanes whose manifest is gone go first: a renamed manifest frees its
    // container name before the new lane's create needs it.
    let mut lanes = state.lanes;
    let (gone, present): (Vec<String>, Vec<String>) =
        names.into_iter().partition(|n| !lanes.contains_key(n));
    let mut outcomes = Vec::new();
    for batch in [gone, present] {
        let mut work = Vec::new();
        for name in batch {
            let desired = lanes.remove(&name);
            let containers = observed.remove(&name).unwrap_or_default();
            work.push((name, desired, containers));
        }
        let at_once = opts.jobs.max(CHECKS_AT_ONCE);
        outcomes.extend(run_bounded(&ctx, mode, at_once, work).await);
    }
    outcomes.sort_by(|a, b| a.lane.cmp(&b.lane));
    Ok(outcomes)
}

/// How many lanes of a pass are hashed and probed at once; at most `--jobs`
/// of them change containers (`Ctx::acting`). A no-op pass is bound by probe
/// round trips, not by CPU.
const CHECKS_AT_ONCE: usize = 32;

/// Early probes in flight at once (each holds a socket).
const EARLY_PROBES_AT_ONCE: usize = 64;

/// Reads the lanes directory (off the async threads) and looks up each
/// distinct image once, filling the pass's image cache. Then, until Podman's
/// list call returns (`listed`), probes each lane at the port its status file
/// names: an answer counts for this pass only if the list shows the same
/// container with the same port and nothing to do (`Ctx::answered_early`).
async fn read_dir_and_probe_early(
    ctx: &Ctx,
    mode: Mode,
    opts: &PassOptions,
    listed: &CancellationToken,
) -> Result<desired::DirState, PassError> {
    let (dir, load) = (ctx.dir.clone(), opts.load);
    let state = tokio::task::spawn_blocking(move || desired::load_dir(&dir, load))
        .await
        .map_err(|e| PassError::Internal(format!("reading the lanes directory: {e}")))??;
    let images = state.images().into_iter();
    futures_util::future::join_all(images.map(|image| ctx.image_id(image))).await;
    if mode == Mode::Apply {
        let named = |lane: &String| opts.only.is_empty() || opts.only.contains(lane);
        let probes = state.lanes.iter().filter_map(|(lane, d)| {
            let Desired::Valid { spec, .. } = d else {
                return None;
            };
            if !named(lane) {
                return None;
            }
            let probe = spec.probe.as_ref()?;
            let last = status::read(&ctx.dir, lane)?;
            let id = last.container_id?;
            let url = last.endpoints.get(&format!("{}/tcp", probe.port))?;
            let addr: SocketAddr = url.strip_prefix("http://")?.parse().ok()?;
            Some(async move {
                tokio::select! {
                    ok = probe::once(addr, &probe.path) => {
                        if ok && let Ok(mut early) = ctx.early_ready.lock() {
                            early.insert(lane.clone(), (id, addr));
                        }
                    }
                    () = listed.cancelled() => {}
                }
            })
        });
        let probes: Vec<_> = probes.collect();
        futures_util::stream::iter(probes)
            .for_each_concurrent(EARLY_PROBES_AT_ONCE, |probe| probe)
            .await;
        let answered = ctx.early_ready.lock().map_or(0, |e| e.len());
        debug!(answered, "probed early, while Podman listed the containers");
    }
    Ok(state)
}

/// Reconciles lanes at most `jobs` at once. A lane whose task panicked is
/// reported failed, never dropped.
async fn run_bounded(
    ctx: &Arc<Ctx>,
    mode: Mode,
    jobs: usize,
    work: Vec<(String, Option<Desired>, Vec<Observed>)>,
) -> Vec<Outcome> {
    let jobs = Arc::new(Semaphore::new(jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut names = HashMap::new();
    for (name, desired, containers) in work {
        let (ctx, jobs) = (ctx.clone(), jobs.clone());
        let span = info_span!("reconcile", lane = %name);
        let lane = name.clone();
        let handle = tasks.spawn(
            async move {
                let _permit = jobs.acquire_owned().await;
                reconcile(&ctx, &lane, desired, containers, mode, None, None).await
            }
            .instrument(span),
        );
        names.insert(handle.id(), name);
    }
    let mut outcomes = Vec::new();
    while let Some(joined) = tasks.join_next_with_id().await {
        match joined {
            Ok((_, outcome)) => outcomes.push(outcome),
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

/// Reconciles one lane: decide, and in `Apply` mode act, probe and write
/// status. `cancel` (the daemon's) interrupts the probe, the one long wait;
/// container changes and status writes are never cut in half.
pub async fn reconcile(
    ctx: &Ctx,
    lane: &str,
    desired: Option<Desired>,
    observed: Vec<Observed>,
    mode: Mode,
    cancel: Option<&CancellationToken>,
    known: Option<KnownImages>,
) -> Outcome {
    let previous = status::read(&ctx.dir, lane);
    match desired {
        None => remove_lane(ctx, lane, observed, previous.is_some(), mode).await,
        Some(Desired::Invalid {
            problems,
            manifest_sha256,
        }) => {
            let message = problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            let mut st = base_status(lane, Phase::Invalid, observed.first(), manifest_sha256);
            st.message.clone_from(&message);
            st.restarts = previous.map_or(0, |p| p.restarts);
            let mut outcome = Outcome::new(lane, None, Phase::Invalid, message);
            if mode == Mode::Apply {
                outcome.status_error = write_status(ctx, st);
            }
            outcome
        }
        Some(Desired::Valid {
            spec,
            manifest_sha256,
        }) => {
            let seen = Seen {
                containers: observed,
                images: known,
            };
            converge(ctx, &spec, manifest_sha256, seen, previous, mode, cancel).await
        }
    }
}

async fn remove_lane(
    ctx: &Ctx,
    lane: &str,
    observed: Vec<Observed>,
    has_status: bool,
    mode: Mode,
) -> Outcome {
    let action = if observed.is_empty() && !has_status {
        Action::Nothing
    } else {
        Action::Remove
    };
    let mut outcome = Outcome::new(lane, Some(action.clone()), Phase::Stopped, "");
    outcome.has_manifest = false;
    outcome.message = "no manifest".into();
    if mode == Mode::Plan || action == Action::Nothing {
        return outcome;
    }
    let _acting = ctx.acting.acquire().await;
    for c in &observed {
        if let Err(e) = ctx.podman.remove(&c.id).await {
            outcome.phase = Phase::Failed;
            outcome.message = format!("removing container {}: {e}", c.name);
            return outcome;
        }
        info!(container = %c.name, "removed the container of a deleted manifest");
    }
    if let Err(e) = status::remove(&ctx.dir, lane) {
        outcome.phase = Phase::Failed;
        outcome.message = error::chain(&e);
    } else {
        outcome.message = "removed".into();
    }
    outcome
}

/// Why a valid lane could not be hashed.
enum Unready {
    Invalid(String),
    Failed(String),
}

/// Image ID, codex fingerprint and tracked content -> the lane hash.
async fn hash_lane(
    ctx: &Ctx,
    spec: &LaneSpec,
    known: Option<KnownImages>,
) -> Result<LaneHash, Unready> {
    let looked_up = match known.as_ref().and_then(|k| k.get(&spec.image)) {
        Some(id) => Ok(id.clone()),
        None => ctx.image_id(&spec.image).await,
    };
    let image_id = match looked_up {
        Ok(Some(id)) => id,
        Ok(None) => {
            return Err(Unready::Failed(format!(
                "image {} is not present locally (lanectl never pulls: build or load it)",
                spec.image
            )));
        }
        Err(e) => return Err(Unready::Failed(e)),
    };
    let codex_source = spec.codex.as_ref().map(|c| c.source.clone());
    let tracked_sources: Vec<(String, PathBuf)> = spec
        .mounts
        .iter()
        .filter(|m| m.track_content)
        .map(|m| (m.target.clone(), m.source.clone()))
        .collect();
    let (fingerprints, policy) = (ctx.fingerprints.clone(), ctx.policy);
    let hashed = tokio::task::spawn_blocking(move || {
        let codex = codex_source
            .map(|s| fingerprints.fingerprint(&s, policy))
            .transpose()
            .map_err(|e| format!("codex: {}", error::chain(&e)))?;
        let tracked = tracked_sources
            .into_iter()
            .map(|(target, source)| {
                fingerprints
                    .tracked(&source, policy)
                    .map(|h| (target, h))
                    .map_err(|e| format!("track_content: {}", error::chain(&e)))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok::<_, String>((codex, tracked))
    })
    .await
    .map_err(|e| Unready::Failed(format!("hashing task: {e}")))?;
    let (codex, tracked) = hashed.map_err(Unready::Invalid)?;
    Ok(hash::lane_hash(spec, &image_id, codex.as_deref(), &tracked))
}

/// What Podman showed of a lane: its containers, and the images a resync
/// looked up with them.
struct Seen {
    containers: Vec<Observed>,
    images: Option<KnownImages>,
}

async fn converge(
    ctx: &Ctx,
    spec: &LaneSpec,
    manifest_sha256: String,
    seen: Seen,
    previous: Option<Status>,
    mode: Mode,
    cancel: Option<&CancellationToken>,
) -> Outcome {
    let lane = spec.lane.as_str();
    let sha = Some(manifest_sha256);
    let observed = seen.containers;
    let plan = match hash_lane(ctx, spec, seen.images).await {
        Ok(hash) => {
            let desired = plan::Desired {
                state: spec.state,
                hash: &hash,
            };
            (plan::decide(Some(desired), observed), Some(hash))
        }
        // Stopping needs no hash (rule 5: whatever its hash).
        Err(_) if spec.state == DesiredState::Stopped => (plan::decide_stopped(observed), None),
        Err(unready) => {
            let (phase, message) = match unready {
                Unready::Invalid(m) => (Phase::Invalid, m),
                Unready::Failed(m) => (Phase::Failed, m),
            };
            let mut outcome = Outcome::new(lane, None, phase, message.clone());
            if mode == Mode::Apply {
                let mut st = base_status(lane, phase, observed.first(), sha);
                st.message = message;
                st.restarts = previous.map_or(0, |p| p.restarts);
                outcome.status_error = write_status(ctx, st);
            }
            return outcome;
        }
    };
    let (plan, hash) = plan;
    debug!(action = %plan.action, extras = plan.extras.len(), "decided");
    let mut outcome = Outcome::new(lane, Some(plan.action.clone()), Phase::Pending, "");
    outcome.extras = plan.extras.len();
    if mode == Mode::Plan {
        return outcome;
    }
    // Held until the new or started container has been probed.
    let _acting = if plan.action.changes_something() || !plan.extras.is_empty() {
        ctx.acting.acquire().await.ok()
    } else {
        None
    };

    for extra in &plan.extras {
        match ctx.podman.remove(&extra.id).await {
            Ok(()) => info!(container = %extra.name, "removed a stray container of the lane"),
            Err(e) => {
                warn!(container = %extra.name, error = %e, "could not remove a stray container")
            }
        }
    }
    let same_container = |id: &str| {
        previous
            .as_ref()
            .filter(|p| p.container_id.as_deref() == Some(id))
    };
    let mut restarts = plan
        .current
        .as_ref()
        .and_then(|c| same_container(&c.id))
        .map_or(0, |p| p.restarts);
    if plan.action == Action::Start {
        // A start after an exit that lanectl did not cause is a restart.
        if let Some(c) = &plan.current {
            let lanectl_stopped = same_container(&c.id).is_some_and(|p| p.phase == Phase::Stopped);
            if c.ever_started && !lanectl_stopped {
                if let Err(at) = ctx.restart_gate(lane) {
                    return wait_for_restart(ctx, lane, c, sha, restarts, at, outcome);
                }
                restarts += 1;
            }
        }
    }
    if matches!(plan.action, Action::Create | Action::Recreate(_)) {
        let mut pending = base_status(lane, Phase::Pending, plan.current.as_ref(), sha.clone());
        pending.message = plan.action.to_string();
        pending.restarts = restarts;
        write_status(ctx, pending);
        restarts = 0;
        ctx.forget_restarts(lane);
    }
    let result = act(ctx, spec, &plan, hash.as_ref()).await;
    if plan.action.changes_something() {
        info!(action = %plan.action, ok = result.is_ok(), "acted");
    }

    let now = match result {
        Ok(now) => now,
        Err((e, left)) => {
            let message = format!("{}: {}", plan.action, error::chain(&e));
            let mut st = base_status(lane, Phase::Failed, left.as_ref(), sha);
            st.message.clone_from(&message);
            st.restarts = restarts;
            outcome.status_error = write_status(ctx, st);
            outcome.phase = Phase::Failed;
            outcome.message = message;
            return outcome;
        }
    };

    let mut st = base_status(lane, Phase::Ready, None, sha);
    st.restarts = restarts;
    if let Some(now) = &now {
        st.container = Some(now.name.clone());
        st.container_id = Some(now.id.clone());
        st.spec_hash = now.spec_hash.clone();
        st.codex_fingerprint = now.codex.clone();
    }
    let running = now.as_ref().is_some_and(|n| n.running);
    if spec.state == DesiredState::Stopped {
        st.phase = Phase::Stopped;
    } else if !running {
        st.phase = Phase::Failed;
        st.message = "the container is not running".into();
    } else if let Some(now) = &now {
        st.endpoints = endpoints(&now.ports);
        st.endpoint = endpoint(spec, &now.ports);
        if let Some(p) = &spec.probe {
            if matches!(plan.action, Action::Create | Action::Recreate(_)) {
                // Readers see the new container while it is probed.
                let mut pending = st.clone();
                pending.phase = Phase::Pending;
                pending.message = "probing".into();
                write_status(ctx, pending);
            }
            if let Ok(mut probing) = ctx.probing.lock() {
                probing.insert(lane.to_string(), now.id.clone());
            }
            let probed = match probe_addr_of(&now.ports, p.port) {
                Some(addr)
                    if plan.action == Action::Nothing
                        && ctx.answered_early(lane, &now.id, addr) =>
                {
                    Ok(())
                }
                Some(addr) => {
                    let probe = probe::wait_ready(addr, &p.path, p.timeout, p.interval);
                    match cancel {
                        Some(cancel) => tokio::select! {
                            r = probe => r,
                            () = cancel.cancelled() => {
                                debug!("probe interrupted");
                                ctx.stop_probing(lane);
                                outcome.interrupted = true;
                                return outcome;
                            }
                        },
                        None => probe.await,
                    }
                }
                None => Err(format!("port {}/tcp is not published", p.port)),
            };
            ctx.stop_probing(lane);
            if let Err(e) = probed {
                st.phase = Phase::Failed;
                st.message = e;
            }
        }
    }
    ctx.note_ready(lane, st.phase == Phase::Ready);
    outcome.phase = st.phase;
    outcome.endpoint.clone_from(&st.endpoint);
    outcome.message.clone_from(&st.message);
    outcome.status_error = write_status(ctx, st);
    outcome
}

/// A crashed container whose restart must wait: `failed` with the exit code
/// and the time of the next restart.
fn wait_for_restart(
    ctx: &Ctx,
    lane: &str,
    c: &Observed,
    sha: Option<String>,
    restarts: u32,
    at: Instant,
    mut outcome: Outcome,
) -> Outcome {
    let wall = std::time::SystemTime::now() + at.saturating_duration_since(Instant::now());
    let code = c
        .exit_code
        .map_or_else(|| "unknown".to_string(), |c| c.to_string());
    let message = format!(
        "exited with code {code}; restart {} at {}",
        restarts + 1,
        humantime::format_rfc3339_seconds(wall)
    );
    let mut st = base_status(lane, Phase::Failed, Some(c), sha);
    st.message.clone_from(&message);
    st.restarts = restarts;
    outcome.status_error = write_status(ctx, st);
    ctx.note_ready(lane, false);
    outcome.phase = Phase::Failed;
    outcome.message = message;
    outcome.retry_at = Some(at);
    outcome
}

/// Carries out the plan's action; returns the container the lane has now, or
/// the error with the container that is still there (if any).
async fn act(
    ctx: &Ctx,
    spec: &LaneSpec,
    plan: &plan::Plan,
    hash: Option<&LaneHash>,
) -> Result<Option<Now>, (ExecError, Option<Observed>)> {
    let current = plan.current.as_ref();
    let keep = |e: PodmanError| (ExecError::from(e), current.cloned());
    match (&plan.action, current) {
        (Action::Nothing, _) => Ok(current.map(Now::from)),
        (Action::Create | Action::Recreate(_), _) => {
            let Some(hash) = hash else {
                return Err((
                    ExecError::Other("BUG: create without a hash".into()),
                    current.cloned(),
                ));
            };
            if let Some(old) = current {
                ctx.podman.remove(&old.id).await.map_err(keep)?;
            }
            let mut created =
                exec::create_and_start(&ctx.podman, spec, hash, &ctx.instance, ctx.policy).await;
            // The name is taken, by a container of this very lane that the
            // list did not show: one whose create was still under way in
            // Podman when a previous lanectl was killed. It never started:
            // replace it. Podman may not list it for a moment yet, so look a
            // few times before calling the name foreign.
            for _ in 0..10 {
                let Err(ExecError::Podman(PodmanError::NameInUse { name })) = &created else {
                    break;
                };
                match ctx.podman.find_by_name(name).await {
                    Ok(Some(held)) => {
                        let ours = held.labels.get(labels::INSTANCE) == Some(&ctx.instance)
                            && held.labels.get(labels::LANE).map(String::as_str)
                                == Some(spec.lane.as_str());
                        if !ours || ctx.podman.remove(&held.id).await.is_err() {
                            break;
                        }
                        info!(container = %held.name, "replaced a container of this lane that the list missed");
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(300)).await,
                    Err(_) => break,
                }
                created =
                    exec::create_and_start(&ctx.podman, spec, hash, &ctx.instance, ctx.policy)
                        .await;
            }
            match created {
                Ok(c) => Ok(Some(Now::from_inspected(&c, hash))),
                Err(e) => Err((explain_name_conflict(ctx, e).await, None)),
            }
        }
        (Action::Start, Some(c)) => {
            ctx.podman.start(&c.id).await.map_err(keep)?;
            Ok(Some(Now::from(c).running()))
        }
        (Action::Stop, Some(c)) => {
            ctx.podman.stop(&c.id).await.map_err(keep)?;
            Ok(Some(Now::from(c).stopped()))
        }
        (Action::Start | Action::Stop | Action::Remove, _) => Ok(current.map(Now::from)),
    }
}

/// The container a lane has after its action.
struct Now {
    id: String,
    name: String,
    running: bool,
    ports: Vec<PublishedPort>,
    spec_hash: Option<String>,
    codex: Option<String>,
}

impl From<&Observed> for Now {
    fn from(c: &Observed) -> Self {
        Now {
            id: c.id.clone(),
            name: c.name.clone(),
            running: c.state == State::Running,
            ports: c.ports.clone(),
            spec_hash: c.labels.get(labels::SPEC_HASH).cloned(),
            codex: c.labels.get(labels::CODEX_FINGERPRINT).cloned(),
        }
    }
}

impl Now {
    fn from_inspected(c: &crate::podman::Inspected, hash: &LaneHash) -> Self {
        Now {
            id: c.id.clone(),
            name: c.name.clone(),
            running: c.state == State::Running,
            ports: c.ports.clone(),
            spec_hash: Some(hash.full.clone()),
            codex: hash.codex.clone(),
        }
    }
    fn running(mut self) -> Self {
        self.running = true;
        self
    }
    fn stopped(mut self) -> Self {
        self.running = false;
        self
    }
}

/// A status with the lane's container (if any) filled in.
fn base_status(
    lane: &str,
    phase: Phase,
    container: Option<&Observed>,
    manifest_sha256: Option<String>,
) -> Status {
    let mut st = Status::new(lane, phase);
    if let Some(c) = container {
        st.container = Some(c.name.clone());
        st.container_id = Some(c.id.clone());
        st.spec_hash = c.labels.get(labels::SPEC_HASH).cloned();
        st.codex_fingerprint = c.labels.get(labels::CODEX_FINGERPRINT).cloned();
    }
    st.manifest_sha256 = manifest_sha256;
    st
}

/// Writes a status if it changed; returns why it could not be written (the
/// lane then counts as not converged: `apply` fails, the daemon retries).
fn write_status(ctx: &Ctx, st: Status) -> Option<String> {
    let lane = st.lane.clone();
    match status::write_if_changed(&ctx.dir, st) {
        Ok(true) => {
            debug!(lane = %lane, "status written");
            None
        }
        Ok(false) => None,
        Err(e) => {
            let e = error::chain(&e);
            warn!(lane = %lane, error = %e, "could not write status");
            Some(e)
        }
    }
}

/// The URL of each published tcp port, `<port>/tcp` -> URL.
fn endpoints(ports: &[PublishedPort]) -> BTreeMap<String, String> {
    ports
        .iter()
        .filter(|p| p.protocol == "tcp" && p.host_port != 0)
        .map(|p| (format!("{}/tcp", p.container_port), url(p)))
        .collect()
}

/// The probe port's URL, else the first tcp port's.
fn endpoint(spec: &LaneSpec, ports: &[PublishedPort]) -> Option<String> {
    let wanted = spec.probe.as_ref().map(|p| p.port).or_else(|| {
        spec.ports
            .iter()
            .find(|p| p.protocol == crate::manifest::Protocol::Tcp)
            .map(|p| p.container)
    })?;
    ports
        .iter()
        .find(|p| p.container_port == wanted && p.protocol == "tcp" && p.host_port != 0)
        .map(url)
}

fn url(p: &PublishedPort) -> String {
    format!("http://{}", reach(p))
}

/// Where a published port answers on this host: the address it is published
/// on, 127.0.0.1 when that is every IPv4 address (or unknown), `::1` when it
/// is every IPv6 address. The probe and the endpoint agree on it.
fn reach(p: &PublishedPort) -> SocketAddr {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let ip = match p.host_ip.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() && ip.is_ipv6() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Ok(ip) if !ip.is_unspecified() => ip,
        _ => IpAddr::V4(Ipv4Addr::LOCALHOST),
    };
    SocketAddr::new(ip, p.host_port)
}

/// The address to probe a container port at, when it is published over tcp.
fn probe_addr_of(ports: &[PublishedPort], container_port: u16) -> Option<SocketAddr> {
    ports
        .iter()
        .find(|p| p.container_port == container_port && p.protocol == "tcp" && p.host_port != 0)
        .map(reach)
}

/// A name held by another container: say whose (its instance label), never
/// touch it.
async fn explain_name_conflict(ctx: &Ctx, e: ExecError) -> ExecError {
    let ExecError::Podman(PodmanError::NameInUse { name }) = &e else {
        return e;
    };
    let holder = match ctx.podman.find_by_name(name).await {
        Ok(Some(c)) => match c.labels.get(labels::INSTANCE) {
            Some(other) if *other == ctx.instance => {
                let lane = c.labels.get(labels::LANE).map_or("?", String::as_str);
                return ExecError::Other(format!(
                    "container name {name} is still held by container {} of lane {lane} of this instance; \
                     it is freed when that lane converges, and the next pass retries",
                    short(&c.id)
                ));
            }
            Some(other) => format!("container {} of lanectl instance {other}", short(&c.id)),
            None => format!(
                "container {} without a lanectl instance label",
                short(&c.id)
            ),
        },
        Ok(None) => "a container that is gone now".to_string(),
        Err(e) => format!("a container that could not be looked up ({e})"),
    };
    ExecError::Other(format!(
        "container name {name} is held by {holder}, not by this instance ({}); lanectl leaves it alone: \
         remove or rename it, or set another container_name",
        ctx.instance
    ))
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The daemon could not reach Podman for a lane: its status says so (or, for
/// an invalid manifest, still says why it is invalid), keeping what it knew of
/// the container. A lane whose manifest is gone is left as it is until Podman
/// is back.
pub fn mark_unreachable(ctx: &Ctx, lane: &str, desired: Option<&Desired>, err: &PodmanError) {
    let Some(desired) = desired else { return };
    let mut st = status::read(&ctx.dir, lane).unwrap_or_else(|| Status::new(lane, Phase::Failed));
    match desired {
        Desired::Invalid { problems, .. } => {
            st.phase = Phase::Invalid;
            st.message = problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
        }
        Desired::Valid { .. } => {
            st.phase = Phase::Failed;
            st.message = err.to_string();
        }
    }
    st.since = status::now_rfc3339();
    write_status(ctx, st);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_is_reached_at_the_address_it_is_published_on() {
        let at = |host_ip: &str| {
            let p = PublishedPort {
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: host_ip.into(),
                host_port: 41234,
            };
            (reach(&p).to_string(), url(&p))
        };
        assert_eq!(at("").0, "127.0.0.1:41234");
        assert_eq!(at("0.0.0.0").0, "127.0.0.1:41234");
        assert_eq!(at("127.0.0.2").0, "127.0.0.2:41234");
        assert_eq!(at("::").0, "[::1]:41234");
        assert_eq!(
            at("::1"),
            ("[::1]:41234".into(), "http://[::1]:41234".into())
        );
        assert_eq!(at("10.1.2.3").1, "http://10.1.2.3:41234");
    }

    /// The waits before each restart of a lane that crashes as soon as it is
    /// restarted, in whole seconds, `n` restarts long.
    async fn delays(book: &RestartBook, lane: &str, n: usize) -> Vec<u64> {
        let mut waited = Vec::new();
        for _ in 0..n {
            let exited = Instant::now();
            let mut at = exited;
            while let Err(until) = book.gate(lane) {
                assert!(until > Instant::now(), "a back-off ends in the future");
                // As `wait_for_restart` does: a crashed lane is not ready.
                book.note_ready(lane, false);
                tokio::time::sleep_until(until).await;
                at = until;
            }
            waited.push(at.duration_since(exited).as_secs());
        }
        waited
    }

    #[tokio::test(start_paused = true)]
    async fn restart_n_waits_two_to_the_n_minus_one_seconds_up_to_five_minutes() {
        let book = RestartBook::backing_off();
        assert_eq!(
            delays(&book, "a", 12).await,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
        );
        assert_eq!(delays(&book, "b", 3).await, [1, 2, 4], "per lane");
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_waits_from_when_the_exit_was_first_seen() {
        let book = RestartBook::backing_off();
        delays(&book, "a", 2).await;
        let seen = Instant::now();
        assert_eq!(book.gate("a"), Err(seen + Duration::from_secs(4)));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(
            book.gate("a"),
            Err(seen + Duration::from_secs(4)),
            "not moved"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(book.gate("a"), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn ten_minutes_ready_forgets_the_back_off_and_less_keeps_it() {
        let book = RestartBook::backing_off();
        assert_eq!(delays(&book, "a", 4).await, [1, 2, 4, 8]);
        // Ready 9 min 59 s, then it crashes: the back-off goes on.
        book.note_ready("a", true);
        tokio::time::advance(FORGET_AFTER - Duration::from_secs(1)).await;
        book.note_ready("a", true);
        assert_eq!(delays(&book, "a", 1).await, [16]);
        book.note_ready("a", false);
        // Ready 10 min, seen by a later pass: forgotten.
        book.note_ready("a", true);
        tokio::time::advance(FORGET_AFTER).await;
        book.note_ready("a", true);
        assert_eq!(delays(&book, "a", 2).await, [1, 2]);
        // Ready 10 min with no pass in between, then the crash: forgotten too.
        book.note_ready("a", true);
        tokio::time::advance(FORGET_AFTER).await;
        assert_eq!(delays(&book, "a", 1).await, [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_container_starts_with_no_back_off() {
        let book = RestartBook::backing_off();
        assert_eq!(delays(&book, "a", 5).await, [1, 2, 4, 8, 16]);
        book.forget("a");
        assert_eq!(delays(&book, "a", 1).await, [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_one_shot_apply_restarts_at_once() {
        let book = RestartBook::default();
        for _ in 0..20 {
            assert_eq!(book.gate("a"), Ok(()));
        }
        book.note_ready("a", false);
        assert_eq!(book.gate("a"), Ok(()));
    }
}
