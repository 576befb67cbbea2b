//! Locks that a panic elsewhere does not make unusable, and the one `flock`
//! that lanectl processes use among themselves.
//!
//! Every mutex of lanectl guards a map or a counter whose critical sections
//! are single inserts, removes or reads: a thread that panicked while holding
//! one cannot have left it half-changed. So a poisoned lock is taken over (and
//! said once in the log) rather than turned into an error at every site or
//! silently skipped, which hid work before.

use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Locks `m`, taking over a lock poisoned by a panic elsewhere.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
        .unwrap_or_else(|poisoned: PoisonError<MutexGuard<'_, T>>| {
            tracing::warn!("a lock was held by a task that panicked; taking it over");
            m.clear_poison();
            poisoned.into_inner()
        })
}

/// Why [`flock`] did not take the lock.
#[derive(Debug)]
pub enum FlockError {
    /// The call failed for another reason than another holder.
    Os(std::io::Error),
    /// Another process held it for all of this long.
    TimedOut(Duration),
}

/// Takes an exclusive `flock(2)` on `file`, polling every `poll` while
/// another process holds it, for at most `wait`; `waiting` is called once,
/// when the first attempt finds it held. Closing `file` releases it.
pub fn flock(
    file: &std::fs::File,
    wait: Duration,
    poll: Duration,
    mut waiting: impl FnMut(),
) -> Result<(), FlockError> {
    let started = Instant::now();
    let mut said = false;
    loop {
        // SAFETY: flock on a descriptor the caller keeps open for the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(FlockError::Os(e));
        }
        if started.elapsed() >= wait {
            return Err(FlockError::TimedOut(started.elapsed()));
        }
        if !said {
            waiting();
            said = true;
        }
        std::thread::sleep(poll);
    }
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

    #[test]
    fn a_flock_held_elsewhere_is_waited_for_then_given_up() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lock");
        let one = std::fs::File::create(&path).expect("create");
        let other = std::fs::File::open(&path).expect("open");
        let quick = Duration::from_millis(1);
        flock(&one, Duration::ZERO, quick, || {}).expect("free at first");
        let mut waited = 0;
        let held = flock(&other, Duration::from_millis(30), quick, || waited += 1);
        assert!(matches!(held, Err(FlockError::TimedOut(_))), "{held:?}");
        assert_eq!(waited, 1, "said once");
        drop(one);
        flock(&other, Duration::ZERO, quick, || {}).expect("free once closed");
    }
}
