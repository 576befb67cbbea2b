//! One lanectl at a time changes a lanes directory's containers.
//!
//! `lanectl run` and a git hook's `lanectl apply` on the same directory are
//! two processes with no other tie between them. An advisory lock
//! (`flock(2)` on the directory itself: no file is made in it) is held by a
//! process while any of its lanes creates, copies, starts, stops or removes;
//! the other waits for it, saying so once, for at most `--lock-wait`.
//! Deciding, hashing and probing take no lock.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::info;

use crate::lock::{FlockError, lock};

/// Why the lock could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ChangeLockError {
    #[error("cannot open {} to lock it", dir.display())]
    Open {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another lanectl has been changing the containers of {} for {waited:?}: \
         gave up (wait longer with --lock-wait)",
        dir.display()
    )]
    TimedOut { dir: PathBuf, waited: Duration },
    #[error("cannot lock {}", dir.display())]
    Lock {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// The process's share of the lock: taken by the first lane that changes
/// containers, given back when the last one is done.
pub struct ChangeLock {
    dir: PathBuf,
    wait: Duration,
    held: Mutex<Holder>,
    taking: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Holder {
    lanes: usize,
    file: Option<File>,
}

/// One lane's hold; the lock goes when the last hold of the process does.
pub struct Held(Arc<ChangeLock>);

impl Drop for Held {
    fn drop(&mut self) {
        let mut holder = lock(&self.0.held);
        holder.lanes = holder.lanes.saturating_sub(1);
        if holder.lanes == 0 {
            holder.file = None; // closing the descriptor releases the flock
        }
    }
}

impl ChangeLock {
    pub fn new(dir: &Path, wait: Duration) -> Arc<Self> {
        Arc::new(ChangeLock {
            dir: dir.to_path_buf(),
            wait,
            held: Mutex::new(Holder::default()),
            taking: tokio::sync::Mutex::new(()),
        })
    }

    /// Holds the lock for one lane's change, waiting for another process
    /// that holds it (at most `--lock-wait`).
    pub async fn hold(self: &Arc<Self>) -> Result<Held, ChangeLockError> {
        let _taking = self.taking.lock().await;
        {
            let mut holder = lock(&self.held);
            if holder.file.is_some() {
                holder.lanes += 1;
                return Ok(Held(self.clone()));
            }
        }
        let (dir, wait) = (self.dir.clone(), self.wait);
        let file = tokio::task::spawn_blocking(move || take(&dir, wait))
            .await
            .map_err(|e| ChangeLockError::Lock {
                dir: self.dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })??;
        let mut holder = lock(&self.held);
        holder.file = Some(file);
        holder.lanes += 1;
        Ok(Held(self.clone()))
    }
}

/// Takes the flock, polling while another process holds it.
fn take(dir: &Path, wait: Duration) -> Result<File, ChangeLockError> {
    let file = File::open(dir).map_err(|source| ChangeLockError::Open {
        dir: dir.to_path_buf(),
        source,
    })?;
    let waiting = || info!(dir = %dir.display(), "another lanectl is changing this directory's containers: waiting for it");
    match crate::lock::flock(&file, wait, Duration::from_millis(50), waiting) {
        Ok(()) => Ok(file),
        Err(FlockError::Os(source)) => Err(ChangeLockError::Lock {
            dir: dir.to_path_buf(),
            source,
        }),
        Err(FlockError::TimedOut(waited)) => Err(ChangeLockError::TimedOut {
            dir: dir.to_path_buf(),
            waited,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_process_at_a_time_and_every_lane_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let ours = ChangeLock::new(dir.path(), Duration::from_secs(5));
        let a = ours.hold().await.unwrap();
        let b = ours.hold().await.unwrap();
        // Another process's view: a second open file description.
        let theirs = ChangeLock::new(dir.path(), Duration::from_millis(200));
        let refused = theirs.hold().await.err().expect("held by us");
        assert!(
            matches!(refused, ChangeLockError::TimedOut { .. }),
            "{refused}"
        );
        drop(a);
        assert!(theirs.hold().await.is_err(), "still held by lane b");
        drop(b);
        assert!(theirs.hold().await.is_ok(), "given back with the last lane");
    }
}
