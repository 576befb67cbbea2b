//! Exponential back-off, the one kind lanectl has: the first wait, doubled
//! at each further attempt, up to a ceiling. Used for failed reconciles, the
//! restarts of a crashed container, Podman's ping while it is away and the
//! daemon's first list. A leaf: it imports nothing from the crate.

use std::time::Duration;

/// Waits of `first`, `2 × first`, `4 × first` … never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max }
    }

    /// The wait before attempt `n` after the first failure (`n` = 0: `first`).
    pub fn delay(&self, n: u32) -> Duration {
        self.first.saturating_mul(1u32 << n.min(16)).min(self.max)
    }

    /// The waits one after another, for a loop that retries until it is
    /// told to stop.
    pub fn iter(self) -> impl Iterator<Item = Duration> {
        (0..).map(move |n| self.delay(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_from_the_first_up_to_the_ceiling() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let secs: Vec<u64> = b.iter().take(11).map(|d| d.as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(b.delay(u32::MAX), b.max, "never overflows");
        let ms = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
        assert_eq!(ms.delay(1), Duration::from_millis(500));
        assert_eq!(ms.delay(9), Duration::from_secs(1));
    }
}
