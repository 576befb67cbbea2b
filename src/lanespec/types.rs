//! What a resolved lane is: the [`LaneSpec`] and its parts, and the defaults
//! a manifest may leave out.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::manifest::{DesiredState, Protocol, Relabel, UpdateOrder};

/// A lane's desired container, resolved and valid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaneSpec {
    pub lane: String,
    pub image: String,
    pub container_name: String,
    pub user: Option<String>,
    pub entrypoint: Option<Vec<String>>,
    pub command: Option<Vec<String>>,
    pub workdir: Option<String>,
    pub env: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    pub ports: Vec<Port>,
    pub codex: Option<Codex>,
    pub resources: Resources,
    #[serde(skip)]
    pub probe: Option<Probe>,
    #[serde(skip)]
    pub stop_timeout: Duration,
    #[serde(skip)]
    pub state: DesiredState,
    #[serde(skip)]
    pub update: Update,
    /// The only host whose lanectl runs the lane (`None`: every host).
    #[serde(skip)]
    pub host: Option<String>,
}

/// How a recreate replaces the running container (never in the hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    pub order: UpdateOrder,
    /// start-first: how long the old container serves on after the switch.
    pub drain: Duration,
}

impl Default for Update {
    fn default() -> Self {
        Update {
            order: UpdateOrder::StopFirst,
            drain: DEFAULT_DRAIN,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mount {
    /// Absolute, made so lexically (symlinks are not resolved).
    pub source: PathBuf,
    /// The source as the manifest wrote it (`render` places a relative one
    /// under the lanes directory's path on the node); not in the hash.
    #[serde(skip)]
    pub written: String,
    pub target: String,
    pub read_only: bool,
    pub relabel: Relabel,
    pub track_content: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Port {
    pub container: u16,
    pub host_ip: String,
    pub host_port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Codex {
    #[serde(skip)]
    pub source: PathBuf,
    pub target: String,
    pub fingerprint_env: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Resources {
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The container port; always one of the lane's published tcp ports.
    pub port: u16,
    pub path: String,
    pub timeout: Duration,
    pub interval: Duration,
}

pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);
pub(super) const DEFAULT_DRAIN: Duration = Duration::from_secs(2);
pub(super) const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(30);
pub(super) const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(250);
pub(super) const MIN_PROBE_INTERVAL: Duration = Duration::from_millis(10);
