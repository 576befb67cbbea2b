//! The daemon's event sources. Each is one worker function of the same shape
//! (`run(…, queue, shutdown)`): it translates what it sees into lane names at
//! the edge and schedules them on the queue; it never reconciles anything
//! itself. A source that falls behind may drop a trigger: the periodic resync
//! catches up.

pub mod events;
pub mod fs;
pub mod resync;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::container::Observed;
use crate::queue::Queue;
use crate::reconcile::world::KnownImages;

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
    /// The resync's one list call, handed to the lanes it schedules so that
    /// a resync costs one list call, not one per lane.
    pub listed: Option<Listing>,
    /// Lanes with Podman events since a list call began (while one is in
    /// flight): their part of that list may already be out of date.
    pub listing_dirty: Option<HashSet<String>>,
    /// Whether the events source follows Podman's events now, and a count of
    /// its connects and disconnects: a listing counts only while the events
    /// that would make it stale are being seen.
    pub events_live: bool,
    pub events_epoch: u64,
}

/// Containers by lane from one list call. Each lane's entry is used at most
/// once, and only while fresh and no Podman event about the lane came since:
/// any other reconcile lists the lane itself.
#[derive(Debug)]
pub struct Listing {
    pub taken: Instant,
    /// `events_epoch` when the list call began.
    pub epoch: u64,
    pub lanes: HashMap<String, Vec<Observed>>,
    /// The lanes' images, looked up once each with the list call.
    pub images: KnownImages,
}

/// How long a listing may stand in for a lane's own list call.
const LISTING_FRESH: Duration = Duration::from_secs(10);

impl Index {
    /// The lane's containers from the resync's listing, with the images
    /// looked up then, if it still counts.
    pub fn take_listed(&mut self, lane: &str) -> Option<(Vec<Observed>, KnownImages)> {
        let listing = self.listed.as_mut()?;
        if listing.taken.elapsed() > LISTING_FRESH
            || !self.events_live
            || listing.epoch != self.events_epoch
        {
            self.listed = None;
            return None;
        }
        let containers = listing.lanes.remove(lane)?;
        Some((containers, listing.images.clone()))
    }

    /// Something happened to the lane's containers: list it anew.
    pub fn forget_listed(&mut self, lane: &str) {
        if let Some(listing) = self.listed.as_mut() {
            listing.lanes.remove(lane);
        }
        if let Some(dirty) = self.listing_dirty.as_mut() {
            dirty.insert(lane.to_string());
        }
    }

    /// The events source connected or lost Podman's events.
    pub fn set_events_live(&mut self, live: bool) {
        self.events_live = live;
        self.events_epoch += 1;
        self.listed = None; // events may have been missed in between
    }

    /// A list call begins: returns the epoch to hand to `store_listing`.
    pub fn begin_listing(&mut self) -> u64 {
        self.listing_dirty = Some(HashSet::new());
        self.events_epoch
    }

    /// Keeps a listing begun at `epoch`, without the lanes that had events
    /// since, if the events were followed all along.
    pub fn store_listing(&mut self, mut listing: Listing) {
        let dirty = self.listing_dirty.take().unwrap_or_default();
        if !self.events_live || listing.epoch != self.events_epoch {
            self.listed = None;
            return;
        }
        listing.lanes.retain(|lane, _| !dirty.contains(lane));
        self.listed = Some(listing);
    }
}

pub type SharedIndex = Arc<Mutex<Index>>;

/// How a full resync treats lanes held by a failure back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoffs {
    /// The periodic resync: a held lane waits for its back-off.
    Keep,
    /// A cause that voids the reason lanes failed (Podman answers again, the
    /// defaults or the whole directory changed): every lane now, its
    /// failures forgotten.
    Forget,
}

/// Schedules every known lane now.
pub fn trigger_all(index: &SharedIndex, queue: &Queue, cause: &'static str, backoffs: Backoffs) {
    let lanes: Vec<String> = crate::lock::lock(index).lanes.iter().cloned().collect();
    for lane in lanes {
        match backoffs {
            Backoffs::Keep => queue.resync(&lane, cause),
            Backoffs::Forget => queue.trigger_afresh(&lane, cause),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(epoch: u64, lanes: &[&str]) -> Listing {
        Listing {
            taken: Instant::now(),
            epoch,
            lanes: lanes.iter().map(|l| (l.to_string(), vec![])).collect(),
            images: Arc::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_listing_entry_serves_once_while_fresh_and_until_an_event() {
        let mut index = Index::default();
        index.set_events_live(true);
        let epoch = index.begin_listing();
        index.store_listing(listing(epoch, &["a", "b", "c"]));
        assert!(index.take_listed("a").is_some());
        assert!(index.take_listed("a").is_none(), "used once");
        index.forget_listed("b");
        assert!(index.take_listed("b").is_none(), "an event came");
        assert!(index.take_listed("x").is_none(), "not listed");
        tokio::time::advance(LISTING_FRESH + Duration::from_millis(1)).await;
        assert!(index.take_listed("c").is_none(), "too old");
        assert!(index.listed.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_listing_leaves_out_lanes_with_events_during_the_call() {
        let mut index = Index::default();
        index.set_events_live(true);
        let epoch = index.begin_listing();
        index.forget_listed("b"); // an event while the list call was in flight
        index.store_listing(listing(epoch, &["a", "b"]));
        assert!(index.take_listed("a").is_some());
        assert!(index.take_listed("b").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_listing_counts_only_while_events_are_followed() {
        let mut index = Index::default();
        let epoch = index.begin_listing();
        index.store_listing(listing(epoch, &["a"]));
        assert!(index.listed.is_none(), "no events followed: not kept");

        index.set_events_live(true);
        let epoch = index.begin_listing();
        index.store_listing(listing(epoch, &["a", "b"]));
        assert!(index.take_listed("a").is_some());
        index.set_events_live(false);
        index.set_events_live(true); // reconnected: events may have been missed
        assert!(index.take_listed("b").is_none());

        let epoch = index.begin_listing();
        index.set_events_live(false);
        index.set_events_live(true); // lost and back during the call
        index.store_listing(listing(epoch, &["a"]));
        assert!(index.listed.is_none());
    }
}
