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
//! While Podman does not answer it is pinged every second; once it answers
//! again after an outage and the new stream is connected, every lane is
//! scheduled at once with its back-off forgotten (the outage was why they
//! failed), so lanes converge within seconds of Podman's return, whatever the
//! outage's length.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::Receiver;
use tokio::time::{Instant, sleep, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, trace, warn};

use super::{Backoffs, SharedIndex};
use crate::backoff::Backoff;
use crate::container::{ContainerEvent, StreamItem};
use crate::lock::lock;
use crate::queue::Queue;
use crate::reconcile::{Ctx, Probing};

/// While Podman does not answer, it is pinged this often.
const PING_WHILE_DOWN: Duration = Duration::from_secs(1);
/// The waits before following a stream again that failed while Podman
/// answered pings.
const REFOLLOW: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
/// A connection that lasted this long resets the back-off.
const HEALTHY: Duration = Duration::from_secs(10);
/// A quiet stream: Podman is pinged after this long without events.
const QUIET_PING: Duration = Duration::from_secs(5);
/// A stream quiet this long is renewed (replaying from the last event seen).
const QUIET_RENEW: Duration = Duration::from_secs(300);
/// How far back a renewed stream replays before the moment it was last known
/// connected (clocks of one host, events logged a moment late).
const REPLAY_MARGIN: Duration = Duration::from_secs(2);

/// What this source needs of Podman: the event stream and a ping (a trait,
/// so that the tests can play Podman).
pub trait Api: Send + Sync + 'static {
    fn events(&self, since: Option<SystemTime>) -> Receiver<StreamItem>;
    fn ping(&self) -> impl std::future::Future<Output = bool> + Send;
    /// Whether `lane` is probing the container `id` now.
    fn is_probing(&self, lane: &str, id: &str) -> bool;
}

/// The daemon's Podman and probes.
pub struct Live {
    pub ctx: Arc<Ctx>,
    /// Which container each lane is probing (the daemon's registry).
    pub probing: Arc<Probing>,
}

impl Api for Live {
    fn events(&self, since: Option<SystemTime>) -> Receiver<StreamItem> {
        self.ctx.podman.events(&self.ctx.instance, since)
    }
    async fn ping(&self) -> bool {
        self.ctx.podman.ping().await.is_ok()
    }
    fn is_probing(&self, lane: &str, id: &str) -> bool {
        self.probing.is_probing(lane, id)
    }
}

/// Actions that can change what a lane needs.
fn concerns_lane(action: &str) -> bool {
    matches!(
        action,
        "start" | "died" | "stop" | "remove" | "kill" | "pause" | "unpause" | "restart"
    )
}

/// How one following of the stream ended.
#[derive(Debug)]
enum Ended {
    Shutdown,
    /// Quiet for QUIET_RENEW while Podman answered: renew from this time.
    Quiet(SystemTime),
    /// The stream failed or ended, or Podman stopped answering pings.
    Lost {
        healthy: bool,
    },
}

pub async fn run(api: impl Api, index: SharedIndex, queue: Queue, shutdown: CancellationToken) {
    let mut failures = 0;
    let mut first = true;
    let mut outage = false;
    let mut resume: Option<SystemTime> = None;
    loop {
        if !api.ping().await {
            if !outage {
                warn!("podman does not answer; pinging it every second");
            }
            outage = true;
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = sleep(PING_WHILE_DOWN) => {}
            }
            continue;
        }
        // What to schedule once the new stream is connected (not before: an
        // event in between would be missed by a lane that already listed).
        let on_connect = if outage {
            // The outage was why lanes failed: every lane now, afresh.
            Some(("podman back", Backoffs::Forget))
        } else if !first && resume.is_none() {
            // Events may have been missed while the stream was down.
            Some(("events resumed", Backoffs::Keep))
        } else {
            None
        };
        outage = false;
        first = false;
        let ended = follow(&api, &index, &queue, &shutdown, resume.take(), on_connect).await;
        lock(&index).set_events_live(false);
        let healthy = match ended {
            Ended::Shutdown => return,
            Ended::Quiet(last_seen) => {
                debug!("the event stream was quiet for long: renewing it");
                resume = Some(last_seen);
                continue;
            }
            Ended::Lost { healthy } => healthy,
        };
        if healthy {
            failures = 0;
        }
        // Waiting to follow again, Podman is still pinged every second: an
        // outage that begins and ends meanwhile is an outage.
        let until = Instant::now() + REFOLLOW.delay(failures);
        while Instant::now() < until && !outage {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = sleep(PING_WHILE_DOWN.min(until - Instant::now())) => {}
            }
            outage = !api.ping().await;
        }
        if !outage {
            failures += 1;
        }
    }
}

/// Follows the stream (from `since` when renewing) until it ends; once it
/// is connected, schedules every lane if `on_connect` says so.
async fn follow(
    api: &impl Api,
    index: &SharedIndex,
    queue: &Queue,
    shutdown: &CancellationToken,
    since: Option<SystemTime>,
    mut on_connect: Option<(&'static str, Backoffs)>,
) -> Ended {
    let started = Instant::now();
    let lost = || Ended::Lost {
        healthy: started.elapsed() >= HEALTHY,
    };
    let mut events = api.events(since);
    let mut last_seen = since.unwrap_or_else(SystemTime::now);
    let mut last_event = Instant::now();
    let mut next_ping = Instant::now() + QUIET_PING;
    loop {
        let item = tokio::select! {
            () = shutdown.cancelled() => return Ended::Shutdown,
            item = events.recv() => item,
            () = sleep_until(next_ping) => {
                // Twice: one slow answer from a busy Podman is not an outage.
                if !api.ping().await && !api.ping().await {
                    debug!("podman stopped answering while the event stream was quiet");
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
            Some(StreamItem::Connected) => {
                // From now on nothing is missed: a later renewal replays from
                // here, not from the first connection.
                let connected = SystemTime::now()
                    .checked_sub(REPLAY_MARGIN)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                last_seen = last_seen.max(connected);
                lock(index).set_events_live(true);
                if let Some((cause, backoffs)) = on_connect.take() {
                    info!(cause, "following podman events: converging every lane");
                    super::trigger_all(index, queue, cause, backoffs);
                }
            }
            Some(StreamItem::Event(e)) => {
                last_event = Instant::now();
                next_ping = last_event + QUIET_PING;
                // A renewed stream replays from the last event seen: not again.
                if since.is_some_and(|s| e.time <= s) {
                    continue;
                }
                last_seen = last_seen.max(e.time);
                handle(api, index, queue, e);
            }
            Some(StreamItem::Failed(e)) => {
                debug!(error = %e, "podman event stream failed");
                return lost();
            }
            None => return lost(),
        }
    }
}

/// One event as a trigger of its lane.
fn handle(api: &impl Api, index: &SharedIndex, queue: &Queue, e: ContainerEvent) {
    trace!(action = %e.action, lane = ?e.lane, "podman event");
    if let Some(lane) = &e.lane {
        lock(index).forget_listed(lane);
    }
    match (e.lane, e.action.as_str()) {
        // A rollout's new container gone or going while it is probed: the
        // rollout stops probing and keeps the old one (its own failure
        // back-off, not an immediate rerun, decides when it tries again).
        (Some(lane), "died" | "remove" | "stop" | "kill")
            if e.rollout && api.is_probing(&lane, &e.id) =>
        {
            queue.cancel_run(&lane)
        }
        // The container being probed is gone or going: no use finishing the
        // probe. (Events about the container a recreate just replaced do not
        // count.)
        (Some(lane), action @ ("died" | "remove" | "stop" | "kill"))
            if api.is_probing(&lane, &e.id) =>
        {
            queue.interrupt(&lane, gone_cause(action))
        }
        // Otherwise a rollout's new container comes and goes by the hand of
        // the rollout that made it (a failed one is removed: that must not
        // retry the rollout at once, past its back-off); one a killed
        // lanectl left is the next pass's.
        _ if e.rollout => {}
        (Some(lane), action @ ("died" | "remove" | "stop" | "kill")) => {
            queue.trigger(&lane, gone_cause(action))
        }
        (Some(lane), action) if concerns_lane(action) => queue.trigger(&lane, "podman event"),
        _ => {}
    }
}

/// What the log says a lane's run was for, after its container went: a
/// `podman rm -f` or a `down` is a removal, not an exit.
fn gone_cause(action: &str) -> &'static str {
    match action {
        "remove" => "container removed",
        "stop" => "container stopped",
        "kill" => "container killed",
        _ => "container exited",
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::sync::mpsc::Sender;

    use super::*;
    use crate::sources::Index;

    type Item = StreamItem;

    /// Plays Podman: records each request of the stream (its `since`) and
    /// keeps its sender, answers pings while `up`.
    #[derive(Default)]
    struct Fake {
        up: AtomicBool,
        requests: Mutex<Vec<(Option<SystemTime>, Sender<Item>)>>,
    }

    impl Api for Arc<Fake> {
        fn events(&self, since: Option<SystemTime>) -> Receiver<Item> {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            self.requests.lock().unwrap().push((since, tx));
            rx
        }
        async fn ping(&self) -> bool {
            self.up.load(Ordering::SeqCst)
        }
        fn is_probing(&self, _: &str, _: &str) -> bool {
            false
        }
    }

    impl Fake {
        fn requests(&self) -> usize {
            self.requests.lock().unwrap().len()
        }
        fn since(&self, n: usize) -> Option<SystemTime> {
            self.requests.lock().unwrap()[n].0
        }
        async fn send(&self, n: usize, item: Item) {
            let tx = self.requests.lock().unwrap()[n].1.clone();
            tx.send(item).await.unwrap();
            settle().await;
        }
    }

    /// Lets the spawned source run until it waits for time or input.
    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    struct Setup {
        fake: Arc<Fake>,
        index: SharedIndex,
        queue: Queue,
        _shutdown: tokio_util::sync::DropGuard,
    }

    async fn start() -> Setup {
        let fake = Arc::new(Fake::default());
        fake.up.store(true, Ordering::SeqCst);
        let index: SharedIndex = Arc::new(Mutex::new(Index::default()));
        index.lock().unwrap().lanes.insert("a".into());
        let queue = Queue::new();
        let shutdown = CancellationToken::new();
        tokio::spawn(run(
            fake.clone(),
            index.clone(),
            queue.clone(),
            shutdown.clone(),
        ));
        settle().await;
        Setup {
            fake,
            index,
            queue,
            _shutdown: shutdown.drop_guard(),
        }
    }

    fn live(index: &SharedIndex) -> bool {
        index.lock().unwrap().events_live
    }

    /// The lanes due now.
    fn due(queue: &Queue) -> usize {
        queue.waiting()
    }

    fn event(lane: &str, time: SystemTime) -> Item {
        StreamItem::Event(ContainerEvent {
            lane: Some(lane.into()),
            action: "died".into(),
            id: "c1".into(),
            rollout: false,
            time,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_removed_container_is_logged_as_removed_not_exited() {
        let s = start().await;
        s.fake.send(0, StreamItem::Connected).await;
        let removed = StreamItem::Event(ContainerEvent {
            lane: Some("a".into()),
            action: "remove".into(),
            id: "c1".into(),
            rollout: false,
            time: SystemTime::now(),
        });
        s.fake.send(0, removed).await;
        let next = tokio::time::timeout(Duration::from_millis(1), s.queue.next()).await;
        assert!(
            matches!(next, Ok(Some((ref lane, "container removed", _))) if lane == "a"),
            "{next:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_stream_is_followed_only_once_podman_answered_it() {
        let s = start().await;
        assert_eq!(s.fake.requests(), 1);
        assert!(!live(&s.index), "live before Podman answered");
        s.fake.send(0, StreamItem::Connected).await;
        assert!(live(&s.index));
        assert_eq!(due(&s.queue), 0, "the first connection schedules nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_stream_is_renewed_from_the_last_event_without_a_resync() {
        let s = start().await;
        s.fake.send(0, StreamItem::Connected).await;
        let seen = SystemTime::now();
        s.fake.send(0, event("a", seen)).await;
        assert_eq!(due(&s.queue), 1, "the event triggered its lane");
        let _ = s.queue.next().await;
        s.queue.done("a");
        tokio::time::sleep(QUIET_RENEW - Duration::from_secs(10)).await;
        assert_eq!(s.fake.requests(), 1, "renewed too early");
        tokio::time::sleep(Duration::from_secs(20)).await;
        assert_eq!(s.fake.requests(), 2, "a quiet stream is renewed");
        let since = s.fake.since(1).expect("renewed with a replay");
        assert!(since >= seen, "replays from the last event seen or later");
        // The replay repeats what was seen: no trigger for it, nor a resync.
        s.fake.send(1, StreamItem::Connected).await;
        s.fake.send(1, event("a", seen)).await;
        assert_eq!(due(&s.queue), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_outage_every_lane_runs_afresh_once_the_stream_is_back() {
        let s = start().await;
        s.fake.send(0, StreamItem::Connected).await;
        // Lane a failed three times: held 60 s against resyncs.
        for _ in 0..3 {
            s.queue.failed("a");
        }
        s.queue.retry("a", Instant::now() + Duration::from_secs(60));
        // Podman stops answering while the stream stays open.
        s.fake.up.store(false, Ordering::SeqCst);
        tokio::time::sleep(QUIET_PING + Duration::from_secs(1)).await;
        assert!(
            !live(&s.index),
            "a stream whose Podman is gone is not followed"
        );
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(s.fake.requests(), 1, "no request while Podman is down");
        s.fake.up.store(true, Ordering::SeqCst);
        tokio::time::sleep(PING_WHILE_DOWN + Duration::from_millis(10)).await;
        assert_eq!(s.fake.requests(), 2, "followed again within a second");
        let waiting = tokio::time::timeout(Duration::from_millis(1), s.queue.next()).await;
        assert!(
            waiting.is_err(),
            "scheduled before the stream was connected"
        );
        s.fake.send(1, StreamItem::Connected).await;
        let next = tokio::time::timeout(Duration::from_millis(1), s.queue.next()).await;
        assert!(matches!(next, Ok(Some((lane, "podman back", _))) if lane == "a"));
        s.queue.done("a");
        assert_eq!(s.queue.failed("a"), 1, "its failures were forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_stream_with_podman_up_resyncs_keeping_back_offs() {
        let s = start().await;
        s.fake.send(0, StreamItem::Connected).await;
        s.queue.failed("a");
        s.queue.retry("a", Instant::now() + Duration::from_secs(60));
        // The stream ends (its sender dropped) while Podman answers.
        s.fake.requests.lock().unwrap()[0].1 = tokio::sync::mpsc::channel(1).0;
        settle().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(s.fake.requests(), 2, "followed again after its back-off");
        s.fake.send(1, StreamItem::Connected).await;
        let next = tokio::time::timeout(Duration::from_millis(1), s.queue.next()).await;
        assert!(next.is_err(), "a held lane waits for its back-off");
    }
}
