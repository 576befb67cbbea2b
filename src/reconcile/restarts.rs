//! The crash-loop back-off (rule 4 of SPEC.md): when a container that
//! exited without lanectl's doing may be started again. The daemon owns the
//! book; a one-shot `apply` has none and restarts at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::lock::lock;

/// What the daemon remembers of a lane's crashes.
#[derive(Debug, Default, Clone)]
struct RestartState {
    /// Restarts in the current back-off (restart n waits min(2^(n-1) s, 5 min)).
    count: u32,
    /// When the exit that waits for its restart was first seen.
    exited_seen: Option<Instant>,
    /// Since when the lane has been ready without a break.
    ready_since: Option<Instant>,
}

/// Restart n of a lane waits min(2^(n-1) s, 5 min).
const RESTART: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
/// A lane ready this long forgets its crash back-off.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// When crashed containers may be restarted (rule 4): at once for a one-shot
/// `apply`; in the daemon, restart n of a lane waits min(2^(n-1) s, 5 min)
/// after the exit was first seen, and the count is forgotten after
/// FORGET_AFTER of readiness or with a new container. The daemon owns one
/// and lends it to each reconcile ([`super::Hooks`]).
#[derive(Debug, Default)]
pub struct RestartBook {
    /// `None`: restarts at once.
    lanes: Option<Mutex<HashMap<String, RestartState>>>,
}

impl RestartBook {
    /// The daemon's book, which delays restarts.
    pub fn backing_off() -> Self {
        RestartBook {
            lanes: Some(Mutex::new(HashMap::new())),
        }
    }

    /// For a crashed lane about to be restarted: `Err(at)` while its back-off
    /// lasts; `Ok` counts the restart.
    pub fn gate(&self, lane: &str) -> Result<(), Instant> {
        let Some(book) = &self.lanes else {
            return Ok(());
        };
        let mut book = lock(book);
        let st = book.entry(lane.to_string()).or_default();
        let now = Instant::now();
        // Ready long enough before this exit: the back-off is forgotten.
        if st
            .ready_since
            .is_some_and(|since| now.duration_since(since) >= FORGET_AFTER)
        {
            *st = RestartState::default();
        }
        let seen = *st.exited_seen.get_or_insert(now);
        let delay = RESTART.delay(st.count);
        if now < seen + delay {
            return Err(seen + delay);
        }
        st.count += 1;
        st.exited_seen = None;
        st.ready_since = None;
        Ok(())
    }

    /// A new container starts with no back-off.
    pub fn forget(&self, lane: &str) {
        if let Some(book) = &self.lanes {
            lock(book).remove(lane);
        }
    }

    /// Notes whether a lane ended ready, to forget its back-off after
    /// FORGET_AFTER of readiness (a container that dies again keeps it).
    pub fn note_ready(&self, lane: &str, ready: bool) {
        let Some(book) = &self.lanes else { return };
        let mut book = lock(book);
        let Some(st) = book.get_mut(lane) else { return };
        let now = Instant::now();
        if !ready {
            st.ready_since = None;
        } else if now.duration_since(*st.ready_since.get_or_insert(now)) >= FORGET_AFTER {
            book.remove(lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The waits before each restart of a lane that crashes as soon as it is
    /// restarted, in whole seconds, `n` restarts long.
    async fn delays(book: &RestartBook, lane: &str, n: usize) -> Vec<u64> {
        let mut waited = Vec::new();
        for _ in 0..n {
            let exited = Instant::now();
            let mut at = exited;
            while let Err(until) = book.gate(lane) {
                assert!(until > Instant::now(), "a back-off ends in the future");
                // As `wait_for_restart` does: a crashed lane is not ready.
                book.note_ready(lane, false);
                tokio::time::sleep_until(until).await;
                at = until;
            }
            waited.push(at.duration_since(exited).as_secs());
        }
        waited
    }

    #[tokio::test(start_paused = true)]
    async fn restart_n_waits_two_to_the_n_minus_one_seconds_up_to_five_minutes() {
        let book = RestartBook::backing_off();
        assert_eq!(
            delays(&book, "a", 12).await,
            [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]
        );
        assert_eq!(delays(&book, "b", 3).await, [1, 2, 4], "per lane");
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_waits_from_when_the_exit_was_first_seen() {
        let book = RestartBook::backing_off();
        delays(&book, "a", 2).await;
        let seen = Instant::now();
        assert_eq!(book.gate("a"), Err(seen + Duration::from_secs(4)));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(
            book.gate("a"),
            Err(seen + Duration::from_secs(4)),
            "not moved"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(book.gate("a"), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn ten_minutes_ready_forgets_the_back_off_and_less_keeps_it() {
        let book = RestartBook::backing_off();
        assert_eq!(delays(&book, "a", 4).await, [1, 2, 4, 8]);
        // Ready 9 min 59 s, then it crashes: the back-off goes on.
        book.note_ready("a", true);
        tokio::time::advance(FORGET_AFTER - Duration::from_secs(1)).await;
        book.note_ready("a", true);
        assert_eq!(delays(&book, "a", 1).await, [16]);
        book.note_ready("a", false);
        // Ready 10 min, seen by a later pass: forgotten.
        book.note_ready("a", true);
        tokio::time::advance(FORGET_AFTER).await;
        book.note_ready("a", true);
        assert_eq!(delays(&book, "a", 2).await, [1, 2]);
        // Ready 10 min with no pass in between, then the crash: forgotten too.
        book.note_ready("a", true);
        tokio::time::advance(FORGET_AFTER).await;
        assert_eq!(delays(&book, "a", 1).await, [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_container_starts_with_no_back_off() {
        let book = RestartBook::backing_off();
        assert_eq!(delays(&book, "a", 5).await, [1, 2, 4, 8, 16]);
        book.forget("a");
        assert_eq!(delays(&book, "a", 1).await, [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_one_shot_apply_restarts_at_once() {
        let book = RestartBook::default();
        for _ in 0..20 {
            assert_eq!(book.gate("a"), Ok(()));
        }
        book.note_ready("a", false);
        assert_eq!(book.gate("a"), Ok(()));
    }
}
