//! The adapter between lanectl and Podman's REST API, spoken only through the
//! `podman-api` crate. It owns the connection (resolving the socket URL and, when
//! nothing answers at the default, a private `podman system service` that lives as long
//! as the [`Podman`] value) and a handful of typed operations on containers and images.
//! podman-api's all-`Option` models never leave this module: callers see the small types
//! below, and HTTP statuses are mapped once, here: 404 to absent or [`PodmanError::NotFound`],
//! 304 to "already so", a name conflict to [`PodmanError::NameInUse`].
//!
//! The core's container types ([`Observed`](crate::container::Observed),
//! [`State`], [`PublishedPort`], the events) live in [`crate::container`]; the
//! adapter converts Podman's models into them. By job:
//! - `connect`: the socket URL, the `_ping`, the private service, [`Podman::connect`];
//! - `ops`: the operations on containers and images (list, inspect, create, copy,
//!   start, stop, remove);
//! - `events`: the event stream, followed over hyper directly;
//! - `convert`: podman-api's models to the core's types, and the create body;
//! - `fault`: timeouts on calls and HTTP statuses to [`PodmanError`].

mod connect;
mod convert;
mod events;
mod fault;
mod ops;

#[cfg(test)]
mod fake;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::container::{PublishedPort, State};

use connect::PrivateService;

/// Longest wait for an ordinary call: a hung Podman (a storage lock, say)
/// must not hold a lane's worker for ever.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Stop and remove wait for the container's own stop timeout first.
const STOP_TIMEOUT: Duration = Duration::from_secs(900);
/// A large codex takes a while to copy.
const COPY_TIMEOUT: Duration = Duration::from_secs(900);

/// Something Podman could not do, naming the call and the container or image.
#[derive(Debug, thiserror::Error)]
pub enum PodmanError {
    #[error("cannot reach podman at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("container name {name} is already in use")]
    NameInUse { name: String },
    #[error("podman {call}: {message}")]
    Api { call: String, message: String },
}

impl PodmanError {
    fn api(call: String, message: impl Into<String>) -> PodmanError {
        let message = message.into();
        PodmanError::Api { call, message }
    }

    /// A start that failed because the published host port is taken (a random port
    /// handed out twice): retryable by recreating the container.
    pub fn is_address_in_use(&self) -> bool {
        matches!(self, Self::Api { message, .. } if message.contains("address already in use"))
    }
}

/// One container as inspect shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub id: String,
    pub name: String,
    pub state: State,
    /// Started at least once (Podman keeps a start time from then on).
    pub ever_started: bool,
    pub ports: Vec<PublishedPort>,
    pub annotations: BTreeMap<String, String>,
}

/// SELinux relabelling of a bind mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relabel {
    /// `z`: shared between containers.
    Shared,
    /// `Z`: private to this container.
    Private,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRequest {
    pub source: PathBuf,
    pub target: String,
    pub read_only: bool,
    pub relabel: Relabel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRequest {
    pub container_port: u16,
    pub host_ip: String,
    /// 0: Podman picks a free port at create time (exec picks one itself
    /// before that: see `exec::with_free_ports`).
    pub host_port: u16,
    pub protocol: String,
}

/// Everything lanectl sets on a container it creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRequest {
    pub name: String,
    pub image: String,
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub mounts: Vec<MountRequest>,
    pub ports: Vec<PortRequest>,
    pub memory_bytes: Option<i64>,
    /// CPUs × 10⁹; sent as a CFS quota over a 100 ms period.
    pub nano_cpus: Option<u64>,
    pub pids: Option<i64>,
    pub stop_timeout_secs: u64,
}

/// A connection to Podman, possibly to a private service owned by this value.
pub struct Podman {
    api: podman_api::Podman,
    url: String,
    /// Held for its Drop only.
    _service: Option<PrivateService>,
}
