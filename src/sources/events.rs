//! Podman's container events for this instance, as triggers. Every event is
//! only a hint that a lane may need work (Podman does not always send the
//! same ones: `stop?timeout=0` gives `died` but no `stop`).
//!
//! The stream counts as followed (`Index::events_live`) only from the moment
//! Podman has answered the request. While it is quiet, Podman is pinged every
//! few seconds: a Podman that stops answering (hung, killed, restarting) ends
//! the stream at once, even when the connection itself stays open. A stream
//! quiet for minutes while Podman answers pings is renewed, replaying from the
//! last event seen, so that a stream that died silently cannot go unnoticed.
//! While Podman does not answer it is pinged every second; when it answers
//! again after an outage every lane is scheduled at once with its back-off
//! forgotten (the outage was why they failed), so lanes converge within
//! seconds of Podman's return, whatever the outage's length.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::{Backoffs, SharedIndex};
use crate::podman::{ContainerEvent, StreamItem};
use crate::queue::Queue;
use crate::reconcile::Ctx;

/// While Podman does not answer, it is pinged this often.
const PING_WHILE_DOWN: Duration = Duration::from_secs(1);
/// Longest wait before following a stream again that failed while Podman
/// answered pings.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A connection that lasted this long resets the back-off.
const HEALTHY: Duration = Duration::from_secs(10);
/// A quiet stream: Podman is pinged after this long without events.
const QUIET_PING: Duration = Duration::from_secs(5);
/// A stream quiet this long is renewed (replaying from the last event seen).
const QUIET_RENEW: Duration = Duration::from_secs(300);

/// Actions that can change what a lane needs.
fn concerns_lane(action: &str) -> bool {
    matches!(
        action,
        "start" | "died" | "stop" | "remove" | "kill" | "pause" | "unpause" | "restart"
    )
}

/// How one following of the stream ended.
enum Ended {
    Shutdown,
    /// Quiet for QUIET_RENEW while Podman answered: renew from this time.
    Quiet(SystemTime),
    /// The stream failed or ended, or Podman stopped answering pings.
    Lost {
        healthy: bool,
    },
}

pub async fn run(ctx: Arc<Ctx>, index: SharedIndex, queue: Queue, shutdown: CancellationToken) {
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    let mut outage = false;
    let mut resume: Option<SystemTime> = None;
    loop {
        if ctx.podman.ping().await.is_err() {
            if !outage {
                warn!(
                    url = ctx.podman.url(),
                    "podman does not answer; pinging it every second"
                );
            }
            outage = true;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = sleep(PING_WHILE_DOWN) => {}
            }
            continue;
        }
        if outage {
            // The outage was why lanes failed: every lane now, afresh.
            info!("podman answers again: converging every lane");
            super::trigger_all(&index, &queue, "podman back", Backoffs::Forget);
        } else if !first && resume.is_none() {
            // Events may have been missed while the stream was down.
            info!("following podman events again: resyncing every lane");
            super::trigger_all(&index, &queue, "events resumed", Backoffs::Keep);
        }
        outage = false;
        first = false;
        let ended = follow(&ctx, &index, &queue, &shutdown, resume.take()).await;
        if let Ok(mut index) = index.lock() {
            index.set_events_live(false);
        }
        match ended {
            Ended::Shutdown => return,
            Ended::Quiet(last_seen) => {
                debug!("the event stream was quiet for long: renewing it");
                resume = Some(last_seen);
                continue;
            }
            // Podman itself is gone: no back-off, ping it every second.
            Ended::Lost { .. } if ctx.podman.ping().await.is_err() => continue,
            Ended::Lost { healthy } if healthy => backoff = Duration::from_secs(1),
            Ended::Lost { .. } => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Follows the stream (from `since` when renewing) until it ends.
async fn follow(
    ctx: &Ctx,
    index: &SharedIndex,
    queue: &Queue,
    shutdown: &CancellationToken,
    since: Option<SystemTime>,
) -> Ended {
    let started = Instant::now();
    let lost = || Ended::Lost {
        healthy: started.elapsed() >= HEALTHY,
    };
    let mut events = ctx.podman.events(&ctx.instance, since);
    let mut last_seen = since.unwrap_or_else(SystemTime::now);
    let mut last_event = Instant::now();
    let mut next_ping = Instant::now() + QUIET_PING;
    loop {
        let item = tokio::select! {
            () = shutdown.cancelled() => return Ended::Shutdown,
            item = events.recv() => item,
            () = sleep_until(next_ping) => {
                // Twice: one slow answer from a busy Podman is not an outage.
                if ctx.podman.ping().await.is_err()
                    && let Err(e) = ctx.podman.ping().await
                {
                    debug!(error = %e, "podman stopped answering while the event stream was quiet");
                    return lost();
                }
                if last_event.elapsed() >= QUIET_RENEW {
                    return Ended::Quiet(last_seen);
                }
                next_ping = Instant::now() + QUIET_PING;
                continue;
            }
        };
        match item {
            Some(Ok(StreamItem::Connected)) => {
                if since.is_none() {
                    last_seen = SystemTime::now();
                }
                if let Ok(mut index) = index.lock() {
                    index.set_events_live(true);
                }
            }
            Some(Ok(StreamItem::Event(e))) => {
                last_event = Instant::now();
                next_ping = last_event + QUIET_PING;
                // A renewed stream replays from the last event seen: not again.
                if since.is_some_and(|s| e.time <= s) {
                    continue;
                }
                last_seen = last_seen.max(e.time);
                handle(ctx, index, queue, e);
            }
            Some(Err(e)) => {
                debug!(error = %e, "podman event stream failed");
                return lost();
            }
            None => return lost(),
        }
    }
}

/// One event as a trigger of its lane.
fn handle(ctx: &Ctx, index: &SharedIndex, queue: &Queue, e: ContainerEvent) {
    trace!(action = %e.action, lane = ?e.lane, "podman event");
    if let (Some(lane), Ok(mut index)) = (&e.lane, index.lock()) {
        index.forget_listed(lane);
    }
    match (e.lane, e.action.as_str()) {
        // The container being probed is gone or going: no use finishing the
        // probe. (Events about the container a recreate just replaced do not
        // count.)
        (Some(lane), "died" | "remove" | "stop" | "kill") if ctx.is_probing(&lane, &e.id) => {
            queue.interrupt(&lane, "container exited")
        }
        (Some(lane), "died" | "remove" | "stop" | "kill") => {
            queue.trigger(&lane, "container exited")
        }
        (Some(lane), action) if concerns_lane(action) => queue.trigger(&lane, "podman event"),
        _ => {}
    }
}
