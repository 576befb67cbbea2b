//! Takes lanes from what their manifests say to what Podman runs and what
//! their status files report.
//!
//! - [`world`]: one look at the world per pass: the lanes directory, this
//!   instance's containers by lane, image IDs, early probe answers. `apply`,
//!   `plan`, `down`, the daemon's start and each resync build it with one
//!   function.
//! - [`lane`]: [`lane::reconcile`] for one lane, top to bottom: hash, decide
//!   (`plan.rs`, pure), act (`exec.rs`, the only mutator), probe, compose the
//!   status, write it once.
//! - [`report`]: the status composed from how the lane ended (pure).
//! - [`pass`]: a whole directory (or the named lanes), bounded by `--jobs`.
//! - [`ctx`]: what the lanes of a pass share.
//! - [`restarts`]: the crash-loop back-off (rule 4), whose book the daemon
//!   owns.
//! - [`rollout`]: a start-first recreate, step by step (keep-last-good).
//!
//! Every failure is that lane's `failed` or `invalid` status with the reason;
//! the other lanes go on. The reconcile re-reads everything it needs each
//! time: it is level-triggered.

pub mod changes;
pub mod ctx;
pub mod lane;
pub mod pass;
pub mod report;
pub mod restarts;
pub mod rollout;
pub mod world;

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use ctx::Ctx;

use crate::lock::lock;
use crate::plan::Action;
use crate::status::Phase;
use restarts::RestartBook;

/// Whether a pass only decides or also acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plan,
    Apply,
}

/// What the daemon adds to a lane's reconcile; a one-shot pass has none of
/// it (`Hooks::default()`): its probe is not interrupted, a crashed
/// container restarts at once, and no one asks what it probes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hooks<'a> {
    /// Interrupts the probe, the one long wait.
    pub cancel: Option<&'a CancellationToken>,
    /// The crash-loop back-off; none restarts at once.
    pub restarts: Option<&'a RestartBook>,
    /// Where the lane says which container it probes.
    pub probing: Option<&'a Probing>,
}

/// The container each lane is probing now: the daemon interrupts a probe
/// only for events about that container, not about the one it replaced.
#[derive(Debug, Default)]
pub struct Probing(Mutex<HashMap<String, String>>);

impl Probing {
    /// Whether `lane` is probing the container `id` now.
    pub fn is_probing(&self, lane: &str, id: &str) -> bool {
        lock(&self.0).get(lane).map(String::as_str) == Some(id)
    }

    fn start(&self, lane: &str, id: &str) {
        lock(&self.0).insert(lane.to_string(), id.to_string());
    }

    fn stop(&self, lane: &str) {
        lock(&self.0).remove(lane);
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
    /// The containers removed (by name), for a lane whose manifest is gone.
    pub removed: Vec<String>,
    /// When the lane wants another look (a delayed restart), if it does.
    pub retry_at: Option<Instant>,
    /// The run was cancelled at a safe point (the probe); nothing was written.
    pub interrupted: bool,
    /// The status file could not be written (disk full, read-only dir).
    pub status_error: Option<String>,
    /// `plan`, a spec change: the fields that differ, with their values.
    pub changes: Vec<FieldChange>,
    /// The restarts its status counts.
    pub restarts: u32,
    /// The lane's manifest names another host (it is not a lane here).
    pub elsewhere: Option<String>,
}

/// One field of the spec that a recreate changes, as `plan` shows it. The
/// values of env vars and labels are never known here (the container keeps
/// only their sha256): those say `(changed)`, `(added)` or `(removed)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FieldChange {
    pub field: String,
    pub old: String,
    pub new: String,
}

impl Outcome {
    pub fn new(
        lane: &str,
        action: Option<Action>,
        phase: Phase,
        message: impl Into<String>,
    ) -> Self {
        Outcome {
            lane: lane.to_string(),
            action,
            phase,
            endpoint: None,
            message: message.into(),
            has_manifest: true,
            extras: 0,
            removed: Vec::new(),
            retry_at: None,
            interrupted: false,
            status_error: None,
            changes: Vec::new(),
            restarts: 0,
            elsewhere: None,
        }
    }

    /// True when this lane is where its manifest wants it, and says so.
    pub fn converged(&self) -> bool {
        self.has_manifest
            && matches!(self.phase, Phase::Ready | Phase::Stopped)
            && self.status_error.is_none()
    }

    /// When the lane wants to be looked at again: the requeue decision,
    /// returned rather than threaded through (kube-runtime's `Action`).
    pub fn requeue(&self) -> Requeue {
        if self.interrupted {
            return Requeue::Later;
        }
        if let Some(at) = self.retry_at {
            return Requeue::At(at);
        }
        if self.status_error.is_some() {
            return Requeue::Failed; // logged; retried until it is written
        }
        match self.phase {
            Phase::Ready | Phase::Stopped | Phase::Invalid => Requeue::Done,
            Phase::Pending | Phase::Failed | Phase::Degraded => Requeue::Failed,
        }
    }
}

/// What a lane's run asks of the daemon's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requeue {
    /// Converged (or invalid until its file changes): forget its failures.
    Done,
    /// Nothing to schedule (interrupted: the interrupt queued the rerun).
    Later,
    /// Look again at this time (a delayed restart).
    At(Instant),
    /// Failed: retry with back-off.
    Failed,
}
