//! The per-lane work queue of `lanectl run`.
//!
//! Event sources only say "lane X may need work, not before time T"; the queue
//! turns that into reconciles that obey these rules (the same as kube-rs'
//! scheduler and runner):
//!
//! 1. **One run per lane at a time.** A lane being reconciled is never handed
//!    to a second worker.
//! 2. **Duplicates merge; the earliest deadline wins.** Scheduling a lane that
//!    is already waiting keeps one entry, due at the earlier of the two times.
//! 3. **A trigger during a run means exactly one rerun after it.** However
//!    many triggers arrive while a lane runs, it is queued once more when the
//!    run ends (at the earliest of their deadlines), so no change is missed and
//!    none is handled twice.
//! 4. **Bounded parallelism** is the caller's: as many workers as `--jobs`
//!    call [`Queue::next`].
//! 5. **An interrupt cancels the run at its next safe point.** Each run gets
//!    a cancellation token (a child of the queue's root, which is the
//!    daemon's shutdown); [`Queue::interrupt`] schedules the lane and cancels
//!    the token of its current run, so that a long probe of a container that
//!    was just removed does not delay the rerun that recreates it.
//!
//! 6. **A back-off holds against resyncs.** [`Queue::retry`] schedules a
//!    failed lane at its back-off time and holds it until then against
//!    [`Queue::resync`] triggers; any other trigger (a file changed, a Podman
//!    event) clears the hold, because something changed.
//! 7. **A change that voids every back-off starts afresh.** Podman answering
//!    again after an outage, or the defaults changing, invalidates the reason
//!    lanes failed: [`Queue::trigger_afresh`] clears the lane's hold and its
//!    count of consecutive failures ([`Queue::failed`]), so it runs now and,
//!    should it fail again, backs off from the first step.
//!
//! The back-off policy itself is not here: the daemon decides when a lane is
//! due again, from the count the queue keeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::lock::lock;

#[derive(Debug, Default)]
struct Entry {
    /// When the lane is due, if it is waiting.
    due: Option<Instant>,
    running: bool,
    /// Earliest deadline of the triggers that arrived while running.
    rerun: Option<Instant>,
    /// What asked first, for logs only (never for decisions).
    cause: &'static str,
    rerun_cause: &'static str,
    /// The current run's token.
    cancel: Option<CancellationToken>,
    /// Not before this time for resync triggers (a back-off).
    hold: Option<Instant>,
    /// Consecutive failed runs (reset by a success or a fresh start).
    failures: u32,
}

#[derive(Debug, Default)]
struct Inner {
    lanes: HashMap<String, Entry>,
    closed: bool,
    /// Parent of every run's token.
    root: CancellationToken,
}

/// A cheaply cloneable handle to one queue.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    inner: Arc<Mutex<Inner>>,
    wake: Arc<Notify>,
}

impl Queue {
    #[cfg(test)]
    pub fn new() -> Self {
        Self::default()
    }

    /// A queue whose runs are cancelled along with `root` (the shutdown).
    pub fn with_root(root: CancellationToken) -> Self {
        let q = Self::default();
        lock(&q.inner).root = root;
        q
    }

    /// Schedules `lane` now and cancels its current run, if any, at that
    /// run's next safe point.
    pub fn interrupt(&self, lane: &str, cause: &'static str) {
        self.cancel_run(lane);
        self.trigger(lane, cause);
    }

    /// Cancels `lane`'s current run, if any, at its next safe point, and
    /// schedules nothing: the run itself deals with why.
    pub fn cancel_run(&self, lane: &str) {
        if let Some(token) = lock(&self.inner)
            .lanes
            .get(lane)
            .and_then(|e| e.cancel.as_ref())
        {
            token.cancel();
        }
    }

    /// Asks for `lane` to be reconciled at `at` (or now, if `at` has passed);
    /// `cause` is for logs.
    pub fn schedule(&self, lane: &str, at: Instant, cause: &'static str) {
        {
            let mut inner = lock(&self.inner);
            let entry = inner.lanes.entry(lane.to_string()).or_default();
            // The cause logged is the one that made the lane due soonest
            // (the first of equals).
            if entry.running {
                if entry.rerun.is_none_or(|r| at < r) {
                    entry.rerun_cause = cause;
                }
                entry.rerun = Some(entry.rerun.map_or(at, |r| r.min(at)));
            } else {
                if entry.due.is_none_or(|d| at < d) {
                    entry.cause = cause;
                }
                entry.due = Some(entry.due.map_or(at, |d| d.min(at)));
            }
        }
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    /// Asks for `lane` now; clears a back-off hold (something changed).
    pub fn trigger(&self, lane: &str, cause: &'static str) {
        if let Some(e) = lock(&self.inner).lanes.get_mut(lane) {
            e.hold = None;
        }
        self.schedule(lane, Instant::now(), cause);
    }

    /// Asks for `lane` now, forgetting its back-off and its failures: the
    /// reason it failed may be gone (Podman is back, the defaults changed).
    pub fn trigger_afresh(&self, lane: &str, cause: &'static str) {
        if let Some(e) = lock(&self.inner).lanes.get_mut(lane) {
            e.failures = 0;
        }
        self.trigger(lane, cause);
    }

    /// Counts a failed run of `lane`; returns how many failed in a row.
    pub fn failed(&self, lane: &str) -> u32 {
        let mut inner = lock(&self.inner);
        let e = inner.lanes.entry(lane.to_string()).or_default();
        e.failures = e.failures.saturating_add(1);
        e.failures
    }

    /// A run of `lane` succeeded: its failures are forgotten (and its entry,
    /// when nothing else is pending for it).
    pub fn succeeded(&self, lane: &str) {
        let mut inner = lock(&self.inner);
        if let Some(e) = inner.lanes.get_mut(lane) {
            e.failures = 0;
            if !e.running && e.due.is_none() && e.hold.is_none_or(|h| h <= Instant::now()) {
                inner.lanes.remove(lane);
            }
        }
    }

    /// Asks for `lane` now unless it is held by a back-off (then at the end
    /// of the hold, which is already scheduled).
    pub fn resync(&self, lane: &str, cause: &'static str) {
        let held = lock(&self.inner)
            .lanes
            .get(lane)
            .and_then(|e| e.hold)
            .is_some_and(|until| until > Instant::now());
        if !held {
            self.schedule(lane, Instant::now(), cause);
        }
    }

    /// Schedules a failed lane at `at` and holds it against resyncs until then.
    pub fn retry(&self, lane: &str, at: Instant) {
        lock(&self.inner)
            .lanes
            .entry(lane.to_string())
            .or_default()
            .hold = Some(at);
        self.schedule(lane, at, "retry");
    }

    /// Waits for the next due lane that is not running, marks it running and
    /// returns it with the cause of its first trigger and the run's
    /// cancellation token; `None` once the queue is closed.
    pub async fn next(&self) -> Option<(String, &'static str, CancellationToken)> {
        loop {
            let notified = self.wake.notified();
            let wait_until = {
                let mut inner = lock(&self.inner);
                if inner.closed || inner.root.is_cancelled() {
                    return None;
                }
                let now = Instant::now();
                let due = inner
                    .lanes
                    .iter()
                    .filter(|(_, e)| !e.running)
                    .filter_map(|(k, e)| e.due.map(|d| (d, k.clone())))
                    .min();
                match due {
                    Some((at, lane)) if at <= now => {
                        let token = inner.root.child_token();
                        let mut cause = "";
                        if let Some(e) = inner.lanes.get_mut(&lane) {
                            e.due = None;
                            e.running = true;
                            e.cancel = Some(token.clone());
                            cause = e.cause;
                        }
                        return Some((lane, cause, token));
                    }
                    Some((at, _)) => Some(at),
                    None => None,
                }
            };
            match wait_until {
                Some(at) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Marks `lane`'s run finished; a trigger that came during it queues the
    /// one rerun.
    pub fn done(&self, lane: &str) {
        {
            let mut inner = lock(&self.inner);
            let Some(entry) = inner.lanes.get_mut(lane) else {
                return;
            };
            entry.running = false;
            entry.cancel = None;
            if let Some(at) = entry.rerun.take() {
                entry.cause = entry.rerun_cause;
                entry.due = Some(entry.due.map_or(at, |d| d.min(at)));
            }
            if entry.due.is_none()
                && entry.hold.is_none_or(|h| h <= Instant::now())
                && entry.failures == 0
            {
                inner.lanes.remove(lane);
            }
        }
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    /// Nothing running and nothing due now (later retries may wait).
    pub fn is_idle(&self) -> bool {
        let now = Instant::now();
        lock(&self.inner)
            .lanes
            .values()
            .all(|e| !e.running && e.due.is_none_or(|d| d > now))
    }

    /// Stops handing out work; waiting `next` calls return `None`.
    pub fn close(&self) {
        lock(&self.inner).closed = true;
        self.wake.notify_waiters();
    }

    /// Lanes waiting (not running).
    pub fn waiting(&self) -> usize {
        lock(&self.inner)
            .lanes
            .values()
            .filter(|e| e.due.is_some())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn next_now(q: &Queue) -> Option<String> {
        tokio::time::timeout(Duration::from_millis(1), q.next())
            .await
            .ok()
            .flatten()
            .map(|(lane, _, _)| lane)
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_triggers_merge_into_one_run() {
        let q = Queue::new();
        q.trigger("a", "test");
        q.trigger("a", "test");
        q.trigger("a", "test");
        assert_eq!(next_now(&q).await.as_deref(), Some("a"));
        assert_eq!(next_now(&q).await, None);
        q.done("a");
        assert_eq!(next_now(&q).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_means_nothing_running_and_nothing_due_now() {
        let q = Queue::new();
        assert!(q.is_idle());
        q.trigger("a", "test");
        assert!(!q.is_idle(), "due now");
        assert_eq!(next_now(&q).await.as_deref(), Some("a"));
        assert!(!q.is_idle(), "running");
        q.done("a");
        assert!(q.is_idle());
        q.retry("a", Instant::now() + Duration::from_secs(5));
        assert!(q.is_idle(), "a retry later is not work now");
    }

    #[tokio::test(start_paused = true)]
    async fn the_earliest_deadline_wins() {
        let q = Queue::new();
        let now = Instant::now();
        q.schedule("a", now + Duration::from_secs(60), "test");
        q.schedule("a", now + Duration::from_secs(5), "test");
        q.schedule("a", now + Duration::from_secs(30), "test");
        let started = Instant::now();
        assert_eq!(q.next().await.map(|n| n.0).as_deref(), Some("a"));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lane_is_never_handed_out_twice_at_once() {
        let q = Queue::new();
        q.trigger("a", "test");
        assert_eq!(next_now(&q).await.as_deref(), Some("a"));
        q.trigger("a", "test");
        q.trigger("b", "test");
        assert_eq!(
            next_now(&q).await.as_deref(),
            Some("b"),
            "b goes, a waits for its run"
        );
        assert_eq!(next_now(&q).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn triggers_during_a_run_cause_exactly_one_rerun() {
        let q = Queue::new();
        q.trigger("a", "test");
        assert_eq!(next_now(&q).await.as_deref(), Some("a"));
        for _ in 0..5 {
            q.trigger("a", "test");
        }
        q.done("a");
        assert_eq!(next_now(&q).await.as_deref(), Some("a"));
        q.done("a");
        assert_eq!(next_now(&q).await, None, "one rerun, not five");
    }

    #[tokio::test(start_paused = true)]
    async fn a_rerun_keeps_the_earliest_deadline_of_its_triggers() {
        let q = Queue::new();
        q.trigger("a", "test");
        assert_eq!(next_now(&q).await.as_deref(), Some("a"));
        let now = Instant::now();
        q.schedule("a", now + Duration::from_secs(300), "test");
        q.schedule("a", now + Duration::from_secs(2), "test");
        q.done("a");
        let started = Instant::now();
        assert_eq!(q.next().await.map(|n| n.0).as_deref(), Some("a"));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_worker_wakes_for_a_new_trigger() {
        let q = Queue::new();
        let worker = tokio::spawn({
            let q = q.clone();
            async move { q.next().await.map(|n| n.0) }
        });
        tokio::time::sleep(Duration::from_secs(10)).await;
        q.trigger("late", "test");
        assert_eq!(worker.await.unwrap().as_deref(), Some("late"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_cause_of_the_first_trigger_is_kept_for_logs() {
        let q = Queue::new();
        q.trigger("a", "manifest");
        q.trigger("a", "resync");
        assert_eq!(
            q.next().await.map(|n| (n.0, n.1)),
            Some(("a".to_string(), "manifest"))
        );
        q.trigger("a", "podman event");
        q.done("a");
        assert_eq!(
            q.next().await.map(|n| (n.0, n.1)),
            Some(("a".to_string(), "podman event"))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_interrupt_cancels_the_current_run_and_queues_a_rerun() {
        let q = Queue::new();
        q.trigger("a", "test");
        let (_, _, token) = q.next().await.unwrap();
        q.trigger("a", "test");
        assert!(!token.is_cancelled(), "a plain trigger lets the run finish");
        q.interrupt("a", "gone");
        assert!(token.is_cancelled());
        q.done("a");
        assert_eq!(next_now(&q).await.as_deref(), Some("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_back_off_holds_against_resyncs_but_not_against_changes() {
        let q = Queue::new();
        q.trigger("a", "test");
        assert_eq!(next_now(&q).await.as_deref(), Some("a"));
        q.done("a");
        q.retry("a", Instant::now() + Duration::from_secs(300));
        q.resync("a", "resync");
        assert_eq!(
            next_now(&q).await,
            None,
            "the resync waits for the back-off"
        );
        q.trigger("a", "file changed");
        assert_eq!(
            next_now(&q).await.as_deref(),
            Some("a"),
            "a change goes through"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_trigger_clears_the_back_off_and_the_failure_count() {
        let q = Queue::new();
        q.trigger("a", "test");
        assert_eq!(next_now(&q).await.as_deref(), Some("a"));
        q.done("a");
        assert_eq!(q.failed("a"), 1);
        assert_eq!(q.failed("a"), 2, "counted across runs");
        q.retry("a", Instant::now() + Duration::from_secs(30));
        q.resync("a", "resync");
        assert_eq!(next_now(&q).await, None, "held against a resync");
        q.trigger_afresh("a", "podman back");
        assert_eq!(next_now(&q).await.as_deref(), Some("a"), "not held");
        q.done("a");
        assert_eq!(q.failed("a"), 1, "counts from the first step again");
        q.succeeded("a");
        assert_eq!(q.failed("a"), 1, "a success forgets");
        q.succeeded("a");
        assert!(q.inner.lock().unwrap().lanes.is_empty(), "no entry lingers");
    }

    #[tokio::test(start_paused = true)]
    async fn no_work_is_handed_out_after_shutdown() {
        let root = CancellationToken::new();
        let q = Queue::with_root(root.clone());
        q.trigger("a", "test");
        root.cancel();
        assert_eq!(next_now(&q).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_root_token_cancels_every_run() {
        let root = CancellationToken::new();
        let q = Queue::with_root(root.clone());
        q.trigger("a", "test");
        let (_, _, token) = q.next().await.unwrap();
        root.cancel();
        assert!(token.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn close_releases_waiting_workers() {
        let q = Queue::new();
        let worker = tokio::spawn({
            let q = q.clone();
            async move { q.next().await.map(|n| n.0) }
        });
        tokio::task::yield_now().await;
        q.close();
        assert_eq!(worker.await.unwrap(), None);
    }

    /// Six workers under paused time, each run lasting a few (virtual)
    /// milliseconds, and each lane triggered again during its first run: the
    /// set of lanes running at once is recorded, so a lane handed to a second
    /// worker while the first still runs it is seen, not deduplicated away.
    #[tokio::test(start_paused = true)]
    async fn many_workers_share_many_lanes_without_overlap() {
        use std::collections::HashSet;

        #[derive(Default)]
        struct Seen {
            running: HashSet<String>,
            most_at_once: usize,
            overlaps: Vec<String>,
            runs: HashMap<String, u32>,
        }
        let q = Queue::new();
        let seen = Arc::new(Mutex::new(Seen::default()));
        const LANES: u32 = 20;
        for i in 0..LANES {
            q.trigger(&format!("l{i}"), "test");
        }
        let mut workers = Vec::new();
        for w in 0..6u64 {
            let (q, seen) = (q.clone(), seen.clone());
            workers.push(tokio::spawn(async move {
                while let Some((lane, _, _)) = q.next().await {
                    let first = {
                        let mut s = seen.lock().unwrap();
                        if !s.running.insert(lane.clone()) {
                            s.overlaps.push(lane.clone());
                        }
                        s.most_at_once = s.most_at_once.max(s.running.len());
                        let runs = s.runs.entry(lane.clone()).or_default();
                        *runs += 1;
                        *runs == 1
                    };
                    if first {
                        // A trigger during the run: exactly one rerun, after it.
                        q.trigger(&lane, "test");
                    }
                    tokio::time::sleep(Duration::from_millis(3 + w * 2)).await;
                    seen.lock().unwrap().running.remove(&lane);
                    q.done(&lane);
                }
            }));
        }
        let all_ran_twice = || {
            let s = seen.lock().unwrap();
            s.runs.len() == LANES as usize && s.runs.values().all(|&n| n >= 2)
        };
        tokio::time::timeout(Duration::from_secs(60), async {
            while !(all_ran_twice() && q.is_idle()) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("every lane runs twice within a minute");
        q.close();
        for w in workers {
            w.await.unwrap();
        }
        let s = seen.lock().unwrap();
        assert_eq!(
            s.overlaps,
            Vec::<String>::new(),
            "lanes handed out twice at once"
        );
        assert!(
            s.most_at_once >= 6,
            "workers ran concurrently: {}",
            s.most_at_once
        );
        assert!(s.runs.values().all(|&n| n == 2), "{:?}", s.runs);
        assert_eq!(q.waiting(), 0);
    }
}
