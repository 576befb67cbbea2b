//! The daemon's event sources. Each is one worker function of the same shape
//! (`run(…, queue, shutdown)`): it translates what it sees into lane names at
//! the edge and schedules them on the queue; it never reconciles anything
//! itself. A source that falls behind may drop a trigger: the periodic resync
//! catches up.

pub mod events;
pub mod fs;
pub mod resync;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::queue::Queue;

/// What the sources need to know about the lanes to map an event to lanes:
/// which lanes exist, and which host paths each one reads (codex and
/// `track_content` sources). Refreshed from the lanes directory by the
/// daemon whenever manifests may have changed.
#[derive(Debug, Default)]
pub struct Index {
    pub lanes: BTreeSet<String>,
    /// (host path, lane): a change under the path concerns the lane.
    pub sources: Vec<(PathBuf, String)>,
    /// Bumped by every file-system batch: a parsed view of the lanes
    /// directory taken at an older generation may be stale.
    pub generation: u64,
}

pub type SharedIndex = Arc<Mutex<Index>>;

/// Schedules every known lane now (a lane held by a back-off waits for it).
pub fn trigger_all(index: &SharedIndex, queue: &Queue, cause: &'static str) {
    let lanes: Vec<String> = match index.lock() {
        Ok(index) => index.lanes.iter().cloned().collect(),
        Err(_) => return,
    };
    for lane in lanes {
        queue.resync(&lane, cause);
    }
}
