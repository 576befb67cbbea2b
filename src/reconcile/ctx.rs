//! What the lanes of a pass (and of the daemon's whole life) share: the
//! Podman handle, the lanes directory, the instance, whose files may be read,
//! the fingerprint cache and the `--jobs` bound on lanes that change
//! containers. Nothing here is per pass (that is the [`World`](super::world::World))
//! or daemon-only (that is [`Hooks`](super::Hooks)).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::changes::{ChangeLock, ChangeLockError, Held};
use crate::container::Observed;
use crate::content;
use crate::exec::Exec;
use crate::observe;
use crate::podman::{Podman, PodmanError};

pub struct Ctx {
    pub podman: Podman,
    pub dir: PathBuf,
    pub instance: String,
    /// Whose files the codex and tracked content may be (checked on each read).
    pub policy: content::Policy,
    /// Codex fingerprints and tracked content of unchanged sources.
    pub fingerprints: Arc<content::FingerprintCache>,
    /// `--jobs`: lanes that change a container at once. Lanes with nothing
    /// to do only hash and probe, many more at once.
    pub acting: Semaphore,
    /// Lanes hashed at once (the CPU-bound part of a reconcile); a probe
    /// holds neither this nor `acting`.
    pub checks: Semaphore,
    /// One lanectl at a time changes this directory's containers (`apply`,
    /// `down`, `run`); `None` for what changes nothing (`plan`).
    pub changes: Option<Arc<ChangeLock>>,
    /// Log a lane's fall into `invalid`/`failed` (WARN) and its recovery
    /// (INFO): the daemon's journal. A one-shot command prints its lanes.
    pub log_transitions: bool,
    /// The lanes last logged as `invalid` or `failed` (with
    /// `log_transitions`): their recovery is logged once they are ready,
    /// whatever `pending` came between.
    pub troubled: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Told each step a lane takes (`apply --progress`).
    pub progress: Option<Progress>,
}

/// A sink for a lane's steps: (lane, step, the outcome when it is done).
pub type Progress = Arc<dyn Fn(&str, &str, Option<&super::Outcome>) + Send + Sync>;

/// How many lanes are hashed at once.
pub const CHECKS_AT_ONCE: usize = 32;

impl Ctx {
    pub fn new(podman: Podman, dir: PathBuf, instance: String) -> Self {
        Ctx {
            podman,
            dir,
            instance,
            policy: content::Policy::of_process(false),
            fingerprints: Arc::default(),
            acting: Semaphore::new(Semaphore::MAX_PERMITS),
            checks: Semaphore::new(CHECKS_AT_ONCE),
            changes: None,
            log_transitions: false,
            troubled: Default::default(),
            progress: None,
        }
    }

    /// Tells `progress` each step a lane takes.
    pub fn with_progress(mut self, progress: Progress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// A lane takes a step (`apply --progress`).
    pub fn step(&self, lane: &str, step: &str) {
        if let Some(progress) = &self.progress {
            progress(lane, step, None);
        }
    }

    /// At most `jobs` lanes change containers at once (`--jobs`).
    pub fn with_jobs(mut self, jobs: usize) -> Self {
        self.acting = Semaphore::new(jobs.clamp(1, Semaphore::MAX_PERMITS));
        self
    }

    /// Changes take the directory's lock, waiting for another lanectl for
    /// at most `wait`.
    pub fn with_change_lock(mut self, wait: std::time::Duration) -> Self {
        self.changes = Some(ChangeLock::new(&self.dir, wait));
        self
    }

    /// Log each lane's fall into trouble and its recovery (`run`).
    pub fn logging_transitions(mut self) -> Self {
        self.log_transitions = true;
        self
    }

    /// Whose files may be read into a container (`--allow-insecure-permissions`
    /// relaxes the default, which checks when running as root).
    pub fn with_policy(mut self, policy: content::Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Holds the directory's change lock for one lane's change (none
    /// without a lock: `plan`).
    pub async fn hold_changes(&self) -> Result<Option<Held>, ChangeLockError> {
        match &self.changes {
            Some(changes) => changes.hold().await.map(Some),
            None => Ok(None),
        }
    }

    /// The hands that change Podman for this instance (`exec.rs`).
    pub fn exec(&self) -> Exec<'_> {
        Exec {
            podman: &self.podman,
            instance: &self.instance,
            policy: self.policy,
            lanes_dir: &self.dir,
        }
    }

    /// This instance's containers by lane: one list call (`observe.rs`).
    pub async fn observe(&self) -> Result<BTreeMap<String, Vec<Observed>>, PodmanError> {
        observe::observe(&self.podman, &self.instance).await
    }
}
