//! Locks that a panic elsewhere does not make unusable.
//!
//! Every mutex of lanectl guards a map or a counter whose critical sections
//! are single inserts, removes or reads: a thread that panicked while holding
//! one cannot have left it half-changed. So a poisoned lock is taken over (and
//! said once in the log) rather than turned into an error at every site or
//! silently skipped, which hid work before.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, taking over a lock poisoned by a panic elsewhere.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
        .unwrap_or_else(|poisoned: PoisonError<MutexGuard<'_, T>>| {
            tracing::warn!("a lock was held by a task that panicked; taking it over");
            m.clear_poison();
            poisoned.into_inner()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_taken_over_with_its_value() {
        let m = std::sync::Arc::new(Mutex::new(vec![1]));
        let held = m.clone();
        let _ = std::thread::spawn(move || {
            let mut v = held.lock().expect("not poisoned yet");
            v.push(2);
            panic!("poison it");
        })
        .join();
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), [1, 2]);
        assert!(!m.is_poisoned());
    }
}
