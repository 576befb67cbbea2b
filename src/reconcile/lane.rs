//! One lane, top to bottom ([`reconcile`]): hash → decide (pure, `plan.rs`)
//! → act (`exec.rs`) → probe → compose the status (pure, `report.rs`) →
//! write it once. Two explicit pending writes come before the long steps
//! (before a new container is made, and while it is probed) so that readers
//! see the lane is changing. Nothing here mutates Podman itself.

use std::path::PathBuf;
use std::time::SystemTime;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::report::{self, Ended, Facts, Probed};
use super::world::LaneView;
use super::{Ctx, Hooks, Mode, Outcome};
use crate::container::{Now, Observed};
use crate::desired::Desired;
use crate::error;
use crate::exec;
use crate::hash::{self, LaneHash};
use crate::lanespec::LaneSpec;
use crate::manifest::DesiredState;
use crate::plan::{self, Action, Plan, Step};
use crate::probe;
use crate::status::{self, Phase, Status};

/// Reconciles one lane: decide, and in `Apply` mode act, probe and write
/// its status. The daemon's `hooks.cancel` interrupts the probe, the one
/// long wait; container changes and status writes are never cut in half.
pub async fn reconcile(ctx: &Ctx, mut view: LaneView, mode: Mode, hooks: Hooks<'_>) -> Outcome {
    let previous = status::read(&ctx.dir, &view.lane);
    match view.desired.take() {
        None => {
            let has_status = previous.is_some() || status::exists(&ctx.dir, &view.lane);
            gone(ctx, view, has_status, mode).await
        }
        Some(Desired::Invalid {
            problems,
            manifest_sha256,
        }) => {
            // An invalid lane answers to its manifest and defaults alone.
            let inputs = manifest_sha256
                .as_deref()
                .map(|m| hash::inputs_digest(m, view.defaults_sha256.as_deref(), None, ""));
            let facts = Facts {
                lane: &view.lane,
                inputs,
                manifest_sha256,
                restarts: previous.as_ref().map_or(0, |p| p.restarts),
                last_endpoint: previous.as_ref().and_then(last_endpoint),
            };
            let ended = Ended::Halted {
                phase: Phase::Invalid,
                container: view.containers.first().map(Now::from),
                message: report::problems_text(&problems),
            };
            finish(ctx, mode, None, &facts, ended)
        }
        Some(Desired::Valid {
            spec,
            manifest_sha256,
        }) => converge(ctx, &spec, manifest_sha256, view, previous, mode, hooks).await,
    }
}

/// A lane whose manifest is gone (or that `down` takes down): its
/// containers and status file go.
async fn gone(ctx: &Ctx, view: LaneView, has_status: bool, mode: Mode) -> Outcome {
    let plan = plan::decide_gone(view.containers, has_status);
    let mut outcome = Outcome::new(&view.lane, Some(plan.action.clone()), Phase::Stopped, "");
    outcome.has_manifest = false;
    outcome.message = match &view.elsewhere {
        Some(host) => format!("runs on host {host}"),
        None => "no manifest".into(),
    };
    outcome.elsewhere = view.elsewhere;
    if let (Some(keep), Step::Remove(_)) = (view.keep, &plan.step) {
        warn!("{keep}");
        outcome.phase = Phase::Failed;
        outcome.message = keep;
        return outcome;
    }
    let Step::Remove(containers) = &plan.step else {
        return outcome;
    };
    if mode == Mode::Plan || plan.action == Action::Nothing {
        return outcome;
    }
    let _acting = ctx.acting.acquire().await;
    let _held = match ctx.hold_changes().await {
        Ok(held) => held,
        Err(e) => {
            outcome.phase = Phase::Failed;
            outcome.message = error::chain(&e);
            return outcome;
        }
    };
    let removed = ctx.exec().remove(containers).await;
    outcome.removed = match &removed {
        Ok(()) => containers.iter().map(|c| c.name.clone()).collect(),
        Err(f) => containers
            .iter()
            .map(|c| c.name.clone())
            .take_while(|n| f.left.as_ref().is_none_or(|l| l.name != *n))
            .collect(),
    };
    let removed = removed.map_err(|f| {
        let name = f.left.map(|c| c.name).unwrap_or_default();
        format!("removing container {name}: {}", f.error)
    });
    let result =
        removed.and_then(|()| status::remove(&ctx.dir, &view.lane).map_err(|e| error::chain(&e)));
    match result {
        Ok(()) => outcome.message = "removed".into(),
        Err(message) => {
            outcome.phase = Phase::Failed;
            outcome.message = message;
        }
    }
    outcome
}

/// A lane with a valid manifest, in the order the module doc gives.
async fn converge(
    ctx: &Ctx,
    spec: &LaneSpec,
    manifest_sha256: String,
    view: LaneView,
    previous: Option<Status>,
    mode: Mode,
    hooks: Hooks<'_>,
) -> Outcome {
    let lane = spec.lane.as_str();
    let mut facts = Facts {
        lane,
        inputs: None,
        manifest_sha256: Some(manifest_sha256),
        restarts: previous.as_ref().map_or(0, |p| p.restarts),
        last_endpoint: previous.as_ref().and_then(last_endpoint),
    };

    // The status names a container this Podman has no trace of, and that
    // container still answers the lane's probe at its endpoint: the lanes
    // run in another Podman (a git hook from a shell without
    // CONTAINER_HOST asks a private one). Acting here would fail on a
    // missing image, or start a second copy of the lane; the status file
    // still describes the lane truly, so it is left as it is.
    if view.containers.is_empty()
        && let Some(message) = elsewhere(ctx, spec, previous.as_ref()).await
    {
        warn!(lane, "{message}");
        return Outcome::new(lane, None, Phase::Failed, message);
    }

    // Hash, then decide. Stopping needs no hash (rule 5: whatever its hash).
    let hashed = {
        let _checking = ctx.checks.acquire().await.ok();
        hash_lane(ctx, spec, &view).await
    };
    let plan = match hashed {
        Ok(hash) => {
            facts.inputs = facts.manifest_sha256.as_deref().map(|m| {
                let defaults = view.defaults_sha256.as_deref();
                hash::inputs_digest(m, defaults, hash.codex.as_deref(), &hash.tracked)
            });
            let desired = plan::Desired {
                state: spec.state,
                hash: &hash,
                container_name: &spec.container_name,
                order: spec.update.order,
            };
            let containers = older_but_same(ctx, spec, &hash, view.containers).await;
            plan::decide(desired, containers)
        }
        Err(_) if spec.state == DesiredState::Stopped => plan::decide_stopped(view.containers),
        // Podman went away during this run (the list answered, the image
        // lookup did not): an outage of Podman, not of the lane.
        Err((Phase::Failed, message)) if ctx.podman.ping().await.is_err() => {
            let desired = Desired::Valid {
                spec: Box::new(spec.clone()),
                manifest_sha256: facts.manifest_sha256.clone().unwrap_or_default(),
            };
            let answers = still_answers(Some(&desired), previous.as_ref()).await;
            let st = report::unreachable(lane, previous, Some(&desired), message, answers);
            let mut outcome = Outcome::new(lane, None, Phase::Failed, "podman unreachable");
            if let Some(st) = st {
                outcome.message.clone_from(&st.message);
                outcome.status_error = write_status(ctx, st);
            }
            return outcome;
        }
        Err((phase, message)) => {
            let container = view.containers.first().map(Now::from);
            let ended = Ended::Halted {
                phase,
                container,
                message,
            };
            return finish(ctx, mode, None, &facts, ended);
        }
    };
    debug!(action = %plan.action, extras = plan.extras.len(), "decided");
    if mode == Mode::Plan {
        // What apply would meet, plan shows: a name another container holds.
        if let Step::Make { replacing, .. } = &plan.step {
            let freed: Vec<&str> = replacing
                .iter()
                .chain(&plan.extras)
                .map(|c| c.id.as_str())
                .collect();
            let clash = ctx
                .exec()
                .name_clash(&spec.container_name, lane, &freed)
                .await;
            if let Some(clash) = clash {
                let message = format!("{} would fail: {}", plan.action, error::chain(&clash));
                return Outcome::new(lane, None, Phase::Failed, message);
            }
        }
        let mut outcome = Outcome::new(lane, Some(plan.action.clone()), Phase::Pending, "");
        outcome.extras = plan.extras.len();
        let why = match &plan.action {
            Action::Recreate(why) | Action::Roll(why) => Some(*why),
            _ => None,
        };
        let hash = match &plan.step {
            Step::Make { hash, .. } | Step::Roll { hash, .. } => Some(hash),
            _ => None,
        };
        if let (Some(why), Some(hash), Some(old)) = (why, hash, plan.step.current()) {
            outcome.changes = match why {
                plan::Why::SpecChanged => spec_changes(ctx, old, spec).await,
                plan::Why::CodexChanged => codex_changes(ctx, old, spec).await,
                plan::Why::TrackedContentChanged => tracked_changes(ctx, old, hash).await,
                _ => Vec::new(),
            };
        }
        return outcome;
    }

    // Act. The permit is held while containers change, never through the
    // probe: a lane failing its probe must not hold up another lane's change.
    let changes = plan.action.changes_something() || !plan.extras.is_empty();
    let acting = if changes {
        ctx.acting.acquire().await.ok()
    } else {
        None
    };
    // And one lanectl at a time per directory (a daemon and a hook).
    let held = if changes {
        ctx.hold_changes().await
    } else {
        Ok(None)
    };
    let held = match held {
        Ok(held) => held,
        Err(e) => {
            let ended = Ended::Halted {
                phase: Phase::Failed,
                container: plan.step.current().map(Now::from),
                message: format!("{}: {}", plan.action, error::chain(&e)),
            };
            return finish(ctx, mode, Some(&plan), &facts, ended);
        }
    };
    ctx.exec().remove_strays(&plan.extras).await;
    if matches!(plan.step, Step::Roll { .. } | Step::FinishRoll { .. }) {
        ctx.step(lane, &plan.action.to_string());
        return super::rollout::run(ctx, spec, &plan, &facts, hooks, (held, acting)).await;
    }
    // Restarts: counted per container; a crashed one may have to wait.
    facts.restarts = restarts_of(&plan, previous.as_ref());
    if let Step::Start(c) = &plan.step
        && crashed(c, previous.as_ref(), booted_at())
    {
        if let Some(book) = hooks.restarts
            && let Err(at) = book.gate(lane)
        {
            book.note_ready(lane, false);
            return restart_later(ctx, &plan, &facts, c, at);
        }
        facts.restarts += 1;
    }

    if let Step::Make { replacing, .. } = &plan.step {
        let making = Ended::Making {
            container: replacing.as_ref().map(Now::from),
            message: plan.action.to_string(),
        };
        write_status(ctx, report::compose(&facts, making));
        facts.restarts = 0;
        if let Some(book) = hooks.restarts {
            book.forget(lane);
        }
    }
    if plan.action.changes_something() {
        ctx.step(lane, &plan.action.to_string());
    }
    let acted = ctx.exec().act(spec, &plan.step).await;
    drop((held, acting));
    if plan.action.changes_something() {
        info!(action = %plan.action, ok = acted.is_ok(), "acted");
    }
    let now = match acted {
        Ok(now) => now,
        Err(exec::Failed { error, left }) => {
            let ended = Ended::Halted {
                phase: Phase::Failed,
                container: left,
                message: format!("{}: {}", plan.action, error::chain(&error)),
            };
            return finish(ctx, mode, Some(&plan), &facts, ended);
        }
    };

    // Probe what runs, then say how it ended.
    let probed = match now.as_ref().filter(|n| n.running) {
        Some(now) if spec.state == DesiredState::Running => {
            match probe(ctx, spec, &plan, now, view.answered, &facts, hooks).await {
                Some(probed) => probed,
                None if plan.action == Action::Nothing
                    && let Some(kept) = previous.as_ref().filter(|p| !p.says_probing()) =>
                {
                    // A shutdown while re-checking a lane that nothing
                    // changed: its status (ready, failed, …) is as true as
                    // before the re-check began; only one that says
                    // "probing" must not stay.
                    let mut outcome = Outcome::new(lane, Some(plan.action), kept.phase, "");
                    outcome.interrupted = true;
                    return outcome;
                }
                None => {
                    // Stopped (a shutdown) or interrupted (the container went):
                    // the status must not go on saying "probing".
                    let ended = Ended::Halted {
                        phase: Phase::Pending,
                        container: Some(now.clone()),
                        message: "not probed: lanectl stopped or was interrupted before \
                                  the probe answered; the next pass probes again"
                            .into(),
                    };
                    let mut outcome = finish(ctx, mode, Some(&plan), &facts, ended);
                    outcome.interrupted = true;
                    return outcome;
                }
            }
        }
        _ => Probed::Unasked,
    };
    let ended = Ended::Settled {
        now: now.as_ref(),
        spec,
        probed,
    };
    let outcome = finish(ctx, mode, Some(&plan), &facts, ended);
    if let Some(book) = hooks.restarts {
        book.note_ready(lane, outcome.phase == Phase::Ready);
    }
    outcome
}

/// While Podman cannot be reached: does a `ready` lane's endpoint still
/// answer its probe? (The probe needs no Podman.) `None`: the lane has no
/// probe, or was not ready.
pub async fn still_answers(desired: Option<&Desired>, previous: Option<&Status>) -> Option<bool> {
    let Some(Desired::Valid { spec, .. }) = desired else {
        return None;
    };
    let previous = previous.filter(|p| p.phase == Phase::Ready)?;
    let probe = spec.probe.as_ref()?;
    Some(match previous.endpoint_addr(probe.port) {
        Some(addr) => crate::probe::once(addr, &probe.path).await,
        None => false,
    })
}

/// Why the lane's container seems to run in another Podman: its status
/// names a container that still answers the lane's probe at its endpoint
/// (asked only when this Podman has no container of the lane). `None`: it
/// does not answer (it is gone, and the lane is made anew), or the lane
/// has no probe to tell.
async fn elsewhere(ctx: &Ctx, spec: &LaneSpec, previous: Option<&Status>) -> Option<String> {
    let previous = previous?;
    let id = previous.container_id.as_deref()?;
    let probe = spec.probe.as_ref()?;
    let addr = previous.endpoint_addr(probe.port)?;
    if !crate::probe::once(addr, &probe.path).await {
        return None;
    }
    Some(format!(
        "its status names container {} that answers at {addr}, but the Podman at {} has no \
         container of this lane: the lanes run in another Podman (set CONTAINER_HOST or \
         --podman to it); nothing done, status file left as it is",
        crate::container::short(id),
        ctx.podman.url()
    ))
}

/// Containers made by a lanectl that canonicalized differently (another
/// `io.lanectl.hash-version`) carry a hash this one cannot remake: one whose
/// stored spec, image ID, codex fingerprint and tracked content are what
/// the lane wants now is taken as having the desired hash (its labels are
/// refreshed at its next recreate, never by a recreate of their own). An
/// upgrade of lanectl never restarts a fleet.
async fn older_but_same(
    ctx: &Ctx,
    spec: &LaneSpec,
    hash: &LaneHash,
    mut containers: Vec<Observed>,
) -> Vec<Observed> {
    let current = hash::CANONICAL_VERSION.to_string();
    for c in &mut containers {
        let label = |key: &str| c.labels.get(key).map(String::as_str);
        // No version label: made before lanectl wrote one, by version 1.
        let version = label(crate::labels::HASH_VERSION).unwrap_or("1");
        if version == current || label(crate::labels::SPEC_HASH) == Some(hash.full.as_str()) {
            continue;
        }
        let same_parts = label(crate::labels::IMAGE_ID) == Some(hash.image_id.as_str())
            && label(crate::labels::CODEX_FINGERPRINT) == hash.codex.as_deref()
            && label(crate::labels::TRACKED_HASH).unwrap_or_default() == hash.tracked;
        if !same_parts {
            continue;
        }
        let stored: Option<serde_json::Value> =
            kept(ctx, &c.id, crate::labels::SPEC_ANNOTATION).await;
        if stored.as_ref() == Some(&hash::stored_spec(spec)) {
            info!(container = %c.name, version, "made by a lanectl that hashed differently, for this very spec: kept");
            c.labels
                .insert(crate::labels::SPEC_HASH.to_string(), hash.full.clone());
        }
    }
    containers
}

/// What differs between the spec `old` was made with (its annotation) and
/// `spec`, field by field; nothing when the container has none (made by a
/// lanectl before it kept one) or it cannot be read.
async fn spec_changes(
    ctx: &Ctx,
    old: &Observed,
    spec: &LaneSpec,
) -> Vec<crate::reconcile::FieldChange> {
    let Some(stored) =
        kept::<serde_json::Value>(ctx, &old.id, crate::labels::SPEC_ANNOTATION).await
    else {
        return Vec::new();
    };
    let wanted = hash::stored_spec(spec);
    hash::changed_fields(&stored, &wanted)
        .into_iter()
        .map(|c| {
            let secret = c.field.starts_with("env.") || c.field.starts_with("labels.");
            let (old, new) = match (c.old, c.new) {
                (None, _) if secret => ("(none)".into(), "(added)".into()),
                (_, None) if secret => ("(removed)".into(), "(none)".into()),
                _ if secret => ("(changed)".into(), "(changed)".into()),
                (a, b) => (show(a), show(b)),
            };
            crate::reconcile::FieldChange {
                field: c.field,
                old,
                new,
            }
        })
        .collect()
}

/// What container `id` keeps under the annotation `key`, parsed; `None`
/// when it keeps none (made before lanectl kept it) or it cannot be read.
async fn kept<T: serde::de::DeserializeOwned>(ctx: &Ctx, id: &str, key: &str) -> Option<T> {
    let inspected = ctx.podman.inspect(id).await.ok()??;
    serde_json::from_str(inspected.annotations.get(key)?).ok()
}

/// The entries of two digest maps that differ: changed, added, removed.
fn map_changes(
    old: &std::collections::BTreeMap<String, String>,
    new: &std::collections::BTreeMap<String, String>,
) -> Vec<crate::reconcile::FieldChange> {
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (old, new) = match (old.get(k), new.get(k)) {
                (Some(a), Some(b)) if a == b => return None,
                (Some(_), Some(_)) => ("(changed)", "(changed)"),
                (None, _) => ("(none)", "(added)"),
                (_, None) => ("(removed)", "(none)"),
            };
            Some(crate::reconcile::FieldChange {
                field: k.clone(),
                old: old.into(),
                new: new.into(),
            })
        })
        .collect()
}

/// The codex files that changed, were added or removed since `old` was
/// made (from the digests it keeps, never the bytes).
async fn codex_changes(
    ctx: &Ctx,
    old: &Observed,
    spec: &LaneSpec,
) -> Vec<crate::reconcile::FieldChange> {
    let Some(codex) = &spec.codex else {
        return Vec::new();
    };
    let Some(kept) = kept(ctx, &old.id, crate::labels::CODEX_FILES_ANNOTATION).await else {
        return Vec::new();
    };
    let (source, policy) = (codex.source.clone(), ctx.policy);
    let now =
        tokio::task::spawn_blocking(move || crate::content::codex_file_digests(&source, policy))
            .await;
    match now {
        Ok(Ok(now)) => map_changes(&kept, &now),
        _ => Vec::new(),
    }
}

/// The `track_content` mounts whose content changed since `old` was made.
async fn tracked_changes(
    ctx: &Ctx,
    old: &Observed,
    hash: &LaneHash,
) -> Vec<crate::reconcile::FieldChange> {
    let Some(kept) = kept::<std::collections::BTreeMap<String, String>>(
        ctx,
        &old.id,
        crate::labels::TRACKED_ANNOTATION,
    )
    .await
    else {
        return Vec::new();
    };
    let now = hash.tracked_parts.iter().cloned().collect();
    map_changes(&kept, &now)
}

/// A value as `plan --diff` shows it.
fn show(v: Option<&serde_json::Value>) -> String {
    match v {
        None | Some(serde_json::Value::Null) => "(none)".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The endpoint a status named and the container it named it for.
fn last_endpoint(st: &Status) -> Option<(String, String)> {
    Some((st.container_id.clone()?, st.endpoint.clone()?))
}

/// Image ID, codex fingerprint and tracked content -> the lane hash; or the
/// phase and message of why it cannot be had.
async fn hash_lane(
    ctx: &Ctx,
    spec: &LaneSpec,
    view: &LaneView,
) -> Result<LaneHash, (Phase, String)> {
    let failed = |m: String| (Phase::Failed, m);
    let looked_up = match view.images.get(&spec.image) {
        Some(id) => Ok(id.clone()),
        None => ctx
            .podman
            .image_id(&spec.image)
            .await
            .map_err(|e| e.to_string()),
    };
    let image_id = match looked_up {
        Ok(Some(id)) => id,
        Ok(None) => {
            return Err(failed(format!(
                "image {image} is not present in the Podman at {url}; lanectl never pulls: build it \
                 there (`podman build -t {image} DIR`) or load it (`podman save {image} > image.tar` \
                 where it exists, then `podman load -i image.tar`)",
                image = spec.image,
                url = ctx.podman.url()
            )));
        }
        Err(e) => return Err(failed(e)),
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
        fingerprints.lane_content(codex_source.as_deref(), &tracked_sources, policy)
    })
    .await
    .map_err(|e| failed(format!("hashing task: {e}")))?;
    let (codex, tracked) = hashed.map_err(|m| (Phase::Invalid, m))?;
    Ok(hash::lane_hash(spec, &image_id, codex.as_deref(), &tracked))
}

/// The restarts the status counts: the previous status's, while it names
/// the same container.
fn restarts_of(plan: &Plan, previous: Option<&Status>) -> u32 {
    plan.step
        .current()
        .and_then(|c| previous.filter(|p| p.container_id.as_deref() == Some(c.id.as_str())))
        .map_or(0, |p| p.restarts)
}

/// A container that ran and exited without lanectl stopping it: starting it
/// again is a restart. One that exited before this boot went down with the
/// host (a shutdown, a power cut): starting it at boot is no restart, and
/// waits for no back-off.
fn crashed(c: &Observed, previous: Option<&Status>, booted_at: Option<i64>) -> bool {
    let lanectl_stopped = previous.is_some_and(|p| {
        p.container_id.as_deref() == Some(c.id.as_str()) && p.phase == Phase::Stopped
    });
    let with_the_host =
        matches!((c.exited_at, booted_at), (Some(exited), Some(boot)) if exited < boot);
    c.ever_started && !lanectl_stopped && !with_the_host
}

/// When this host booted (unix seconds), from `/proc/stat`'s `btime`.
fn booted_at() -> Option<i64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// A crashed container whose restart must wait: `failed` with the exit code
/// and the time of the next restart.
fn restart_later(ctx: &Ctx, plan: &Plan, facts: &Facts<'_>, c: &Observed, at: Instant) -> Outcome {
    let wall = SystemTime::now() + at.saturating_duration_since(Instant::now());
    let ended = Ended::RestartLater {
        container: Now::from(c),
        exit_code: c.exit_code,
        at: wall,
    };
    let mut outcome = finish(ctx, Mode::Apply, Some(plan), facts, ended);
    outcome.retry_at = Some(at);
    outcome
}

/// Probes the lane's running container: `None` when the daemon interrupted
/// the probe (nothing is written then). A new container is announced first.
async fn probe(
    ctx: &Ctx,
    spec: &LaneSpec,
    plan: &Plan,
    now: &Now,
    answered: Option<(String, std::net::SocketAddr)>,
    facts: &Facts<'_>,
    hooks: Hooks<'_>,
) -> Option<Probed> {
    let Some(p) = &spec.probe else {
        return Some(Probed::Unasked);
    };
    if matches!(plan.step, Step::Make { .. }) {
        write_status(ctx, report::compose(facts, Ended::Probing { now, spec }));
    }
    let Some(addr) = report::probe_addr_of(&now.ports, p.port) else {
        return Some(Probed::Failed(format!(
            "port {}/tcp is not published",
            p.port
        )));
    };
    // An answer while Podman listed counts only for the same container on the
    // same address, kept with nothing to do.
    if plan.action == Action::Nothing && answered == Some((now.id.clone(), addr)) {
        return Some(Probed::Ready);
    }
    if let Some(probing) = hooks.probing {
        probing.start(&spec.lane, &now.id);
    }
    ctx.step(&spec.lane, "probe");
    let waited = probe::wait_ready(addr, &p.path, p.timeout, p.interval);
    let result = match hooks.cancel {
        Some(cancel) => tokio::select! {
            r = waited => Some(r),
            () = cancel.cancelled() => {
                debug!("probe interrupted");
                None
            }
        },
        None => Some(waited.await),
    };
    if let Some(probing) = hooks.probing {
        probing.stop(&spec.lane);
    }
    Some(match result? {
        Ok(()) => Probed::Ready,
        Err(e) => Probed::Failed(e),
    })
}

/// Composes the lane's status, writes it (in `Apply` mode) and says how the
/// lane ended.
pub(super) fn finish(
    ctx: &Ctx,
    mode: Mode,
    plan: Option<&Plan>,
    facts: &Facts<'_>,
    ended: Ended<'_>,
) -> Outcome {
    let st = report::compose(facts, ended);
    let mut outcome = Outcome::new(
        facts.lane,
        plan.map(|p| p.action.clone()),
        st.phase,
        st.message.clone(),
    );
    outcome.endpoint.clone_from(&st.endpoint);
    outcome.restarts = st.restarts;
    outcome.extras = plan.map_or(0, |p| p.extras.len());
    if mode == Mode::Apply {
        outcome.status_error = write_status(ctx, st);
    }
    outcome
}

/// Writes a status if it changed; returns why it could not be written (the
/// lane then counts as not converged: `apply` fails, the daemon retries).
pub fn write_status(ctx: &Ctx, st: Status) -> Option<String> {
    let (lane, phase, message) = (st.lane.clone(), st.phase, st.message.clone());
    match status::write_if_changed(&ctx.dir, st) {
        Ok(Some(status::Rewrote { was })) => {
            debug!(lane = %lane, "status written");
            if ctx.log_transitions {
                log_transition(ctx, &lane, was, phase, &message);
            }
            None
        }
        Ok(None) => None,
        Err(e) => {
            let e = error::chain(&e);
            warn!(lane = %lane, error = %e, "could not write status");
            Some(e)
        }
    }
}

/// A lane that falls into trouble is said once at WARN, with the reason, and
/// its recovery at INFO once it is ready again (whatever `pending` came
/// between): at the default level a journal shows both.
fn log_transition(ctx: &Ctx, lane: &str, was: Option<Phase>, now: Phase, message: &str) {
    let mut troubled = crate::lock::lock(&ctx.troubled);
    match now {
        Phase::Invalid | Phase::Failed if was != Some(now) || !troubled.contains(lane) => {
            warn!(lane, phase = %now, reason = message, "lane is {now}");
            troubled.insert(lane.to_string());
        }
        Phase::Ready if troubled.remove(lane) => info!(lane, "lane is ready again"),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::State;

    fn exited_at(at: i64) -> Observed {
        Observed {
            id: "c1".into(),
            name: "lane-a".into(),
            labels: Default::default(),
            state: State::Exited,
            ever_started: true,
            exit_code: Some(137),
            exited_at: Some(at),
            ports: Vec::new(),
        }
    }

    #[test]
    fn a_container_that_went_down_with_the_host_did_not_crash() {
        let boot = 1_000_000;
        assert!(
            !crashed(&exited_at(boot - 60), None, Some(boot)),
            "exited before this boot"
        );
        assert!(
            crashed(&exited_at(boot + 60), None, Some(boot)),
            "exited since: a crash"
        );
        assert!(
            crashed(&exited_at(boot - 60), None, None),
            "boot time unknown: a crash"
        );
        assert!(
            booted_at().is_some_and(|b| b > 0),
            "this host's boot time is read"
        );
    }
}
