//! What Podman shows of a container and its events, in lanectl's own terms.
//! The adapter (`podman`) converts its models into these, so that the pure
//! core (`plan`, `reconcile`'s composition of a status, the sources) never
//! sees podman-api. Pure data: no I/O.

use std::collections::BTreeMap;

/// A container's state as lanectl cares about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Created,
    Running,
    /// Exited, or stopped but not yet cleaned up.
    Exited,
    /// Frozen by `podman pause`: its processes exist but get no CPU.
    Paused,
    /// Stopping, removing, unknown, …: as Podman spells it.
    Other(String),
}

impl State {
    pub fn parse(s: &str) -> State {
        match s {
            "created" | "configured" => State::Created,
            "running" => State::Running,
            "exited" | "stopped" => State::Exited,
            "paused" => State::Paused,
            other => State::Other(other.to_owned()),
        }
    }
}

/// A host port Podman published for a container port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedPort {
    pub container_port: u16,
    pub protocol: String,
    /// As Podman reports it: "" means every address.
    pub host_ip: String,
    pub host_port: u16,
}

/// One event about one of this instance's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEvent {
    /// The lane label, when the container has one.
    pub lane: Option<String>,
    /// Podman's action: `start`, `died`, `remove`, ...
    pub action: String,
    /// The container's ID.
    pub id: String,
    /// A start-first rollout's new container, before its swap (its role
    /// label says `next` and its name is still the temporary one).
    pub rollout: bool,
    /// When it happened, as Podman logged it.
    pub time: std::time::SystemTime,
}

/// What the event stream yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// Podman answered the request: from now on no event is missed.
    Connected,
    Event(ContainerEvent),
    /// The stream failed (the reason, for logs); it ends here.
    Failed(String),
}

/// One container as the list call shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub id: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub state: State,
    pub ever_started: bool,
    /// The exit code, only when the container has exited.
    pub exit_code: Option<i64>,
    /// When it exited (unix seconds), only when the container has exited.
    pub exited_at: Option<i64>,
    pub ports: Vec<PublishedPort>,
}

/// The container a lane has after its action: what its status names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Now {
    pub id: String,
    pub name: String,
    pub running: bool,
    pub ports: Vec<PublishedPort>,
    pub spec_hash: Option<String>,
    pub codex: Option<String>,
    /// The git commit it was made at ([`crate::provenance`]).
    pub git_commit: Option<String>,
}

impl From<&Observed> for Now {
    fn from(c: &Observed) -> Self {
        Now {
            id: c.id.clone(),
            name: c.name.clone(),
            running: c.state == State::Running,
            ports: c.ports.clone(),
            spec_hash: c.labels.get(crate::labels::SPEC_HASH).cloned(),
            codex: c.labels.get(crate::labels::CODEX_FINGERPRINT).cloned(),
            git_commit: c.labels.get(crate::labels::GIT_COMMIT).cloned(),
        }
    }
}

/// A container ID as people read it: its first 12 characters.
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
