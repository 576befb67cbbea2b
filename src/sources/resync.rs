//! The periodic full resync: the level-triggered safety net. Every
//! `interval` it refreshes the index from the lanes directory and the one
//! list call of this instance's containers, and schedules every lane; a lane
//! that needs nothing costs a no-op reconcile (no container or status change).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::SharedIndex;
use crate::queue::Queue;

/// Calls `refresh` (which updates the index) then schedules every lane, every
/// `interval`, until `shutdown`.
pub async fn run<F, Fut>(
    interval: Duration,
    index: SharedIndex,
    queue: Queue,
    refresh: F,
    shutdown: CancellationToken,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await; // the first tick is at once: startup already scheduled everything
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        refresh().await;
        super::trigger_all(&index, &queue, "resync", super::Backoffs::Keep);
    }
}
