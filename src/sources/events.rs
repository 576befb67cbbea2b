//! Podman's container events for this instance, as triggers. Every event is
//! only a hint that a lane may need work (Podman does not always send the
//! same ones: `stop?timeout=0` gives `died` but no `stop`). When the stream
//! ends (Podman restarted, socket gone) it reconnects with back-off, and when
//! Podman answers again after an outage every lane is scheduled: a full
//! resync.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::SharedIndex;
use crate::queue::Queue;
use crate::reconcile::Ctx;

const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A connection that lasted this long resets the back-off.
const HEALTHY: Duration = Duration::from_secs(10);

/// Actions that can change what a lane needs.
fn concerns_lane(action: &str) -> bool {
    matches!(
        action,
        "start" | "died" | "stop" | "remove" | "kill" | "pause" | "unpause" | "restart"
    )
}

pub async fn run(ctx: Arc<Ctx>, index: SharedIndex, queue: Queue, shutdown: CancellationToken) {
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    let mut warned = false;
    loop {
        if ctx.podman.ping().await.is_ok() {
            if !first {
                // Events may have been missed while disconnected.
                info!("following podman events again: resyncing every lane");
                super::trigger_all(&index, &queue, "podman back");
            }
            warned = false;
            let connected = Instant::now();
            let mut events = ctx.podman.events(&ctx.instance);
            if let Ok(mut index) = index.lock() {
                index.set_events_live(true);
            }
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = events.recv() => event,
                };
                match event {
                    Some(Ok(e)) => {
                        trace!(action = %e.action, lane = ?e.lane, "podman event");
                        if let (Some(lane), Ok(mut index)) = (&e.lane, index.lock()) {
                            index.forget_listed(lane);
                        }
                        match (e.lane, e.action.as_str()) {
                            // The container being probed is gone or going: no
                            // use finishing the probe. (Events about the
                            // container a recreate just replaced do not count.)
                            (Some(lane), "died" | "remove" | "stop" | "kill")
                                if ctx.is_probing(&lane, &e.id) =>
                            {
                                queue.interrupt(&lane, "container exited")
                            }
                            (Some(lane), "died" | "remove" | "stop" | "kill") => {
                                queue.trigger(&lane, "container exited")
                            }
                            (Some(lane), action) if concerns_lane(action) => {
                                queue.trigger(&lane, "podman event")
                            }
                            _ => {}
                        }
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, "podman event stream failed");
                        break;
                    }
                    None => break,
                }
            }
            if let Ok(mut index) = index.lock() {
                index.set_events_live(false);
            }
            if connected.elapsed() >= HEALTHY {
                backoff = Duration::from_secs(1);
            }
        } else if !warned {
            warn!(
                url = ctx.podman.url(),
                "podman does not answer; retrying with back-off"
            );
            warned = true;
        }
        first = false;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
