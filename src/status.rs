//! The status file `lanes.d/<lane>.status.yaml`: its type, how it is read,
//! and how it is written.
//!
//! Writes are atomic (a temporary file in the same directory, fsync, rename
//! over the old one), so a reader never sees a partial file, and a symlink
//! planted at the path is replaced, never followed. A status is rewritten only
//! when something besides `since` changed, so a no-op pass touches no file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::lane;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Pending,
    Ready,
    /// A start-first rollout failed: the old container keeps serving.
    Degraded,
    Stopped,
    Failed,
    Invalid,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Pending => "pending",
            Phase::Ready => "ready",
            Phase::Degraded => "degraded",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
            Phase::Invalid => "invalid",
        })
    }
}

/// One lane's status, field for field as SPEC.md shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Status {
    pub lane: String,
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub endpoints: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,
    /// `degraded`: the hash whose rollout failed (`spec_hash` is the
    /// serving container's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codex_fingerprint: Option<String>,
    /// The git commit the container was made at, when the lanes directory
    /// is in a git work tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest_sha256: Option<String>,
    /// Every input this status answers to (the manifest, `_defaults.yaml`,
    /// the codex, tracked content): what `lanectl wait` compares.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs_sha256: Option<String>,
    #[serde(default)]
    pub restarts: u32,
    #[serde(default)]
    pub message: String,
    /// The last [`HISTORY`] phase changes, oldest first; written only when
    /// the phase changes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Transition>,
    /// Written last: a file cut short lacks it.
    pub since: String,
}

/// One phase change of a lane.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    /// RFC 3339, UTC.
    pub at: String,
    /// `None` for the lane's first status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Phase>,
    pub to: Phase,
    /// The new status's message, bounded.
    #[serde(default)]
    pub reason: String,
}

/// Phase changes a status file keeps.
pub const HISTORY: usize = 10;

/// Bytes of a transition's reason.
const MAX_REASON_BYTES: usize = 300;

/// The message of a lane whose new container is being probed now.
pub const PROBING: &str = "probing";

impl Status {
    /// Whether it says its lane's container is being probed now (a status
    /// that must not outlive the probe).
    pub fn says_probing(&self) -> bool {
        self.phase == Phase::Pending && self.message == PROBING
    }

    /// A status with nothing known but the lane and its phase.
    pub fn new(lane: &str, phase: Phase) -> Self {
        Status {
            lane: lane.to_string(),
            phase,
            endpoint: None,
            endpoints: BTreeMap::new(),
            container: None,
            container_id: None,
            spec_hash: None,
            desired_hash: None,
            codex_fingerprint: None,
            git_commit: None,
            manifest_sha256: None,
            inputs_sha256: None,
            restarts: 0,
            message: String::new(),
            history: Vec::new(),
            since: now_rfc3339(),
        }
    }

    /// The address this status says a container port answers at (from
    /// `endpoints`, `<port>/tcp`).
    pub fn endpoint_addr(&self, port: u16) -> Option<std::net::SocketAddr> {
        self.endpoints
            .get(&format!("{port}/tcp"))?
            .strip_prefix("http://")?
            .parse()
            .ok()
    }

    /// True when the two differ in anything but `since`.
    pub fn differs_from(&self, other: &Status) -> bool {
        let mut a = self.clone();
        a.since.clone_from(&other.since);
        a != *other
    }
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("cannot write status file {}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot serialize status of lane {lane}: {message}")]
    Serialize { lane: String, message: String },
    #[error("cannot remove status file {}", path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The largest status file read back; larger ones are not lanectl's.
const MAX_STATUS_BYTES: u64 = 64 * 1024;

/// The longest `message` written, in bytes: far below [`MAX_STATUS_BYTES`],
/// so that a status is always read back (a longer one would be rewritten on
/// every pass, and unreadable for the tools that read it).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Cuts a message to [`MAX_MESSAGE_BYTES`] at a character boundary, saying
/// how much was left out.
fn bound_message(message: &mut String) {
    bound(message, MAX_MESSAGE_BYTES);
}

/// Cuts `text` to at most `max` bytes (on a character boundary), saying how
/// much was left out.
fn bound(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max.saturating_sub(64);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let left = text.len() - cut;
    text.truncate(cut);
    text.push_str(&format!(" … ({left} more bytes left out)"));
}

/// Reads a lane's status file; `None` when absent or unreadable (a status
/// file is lanectl's own cache of what it last saw, never an input that can
/// stop a reconcile).
pub fn read(dir: &Path, lane: &str) -> Option<Status> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let path = lane::status_path(dir, lane);
    // The handle is checked, not the path: a symlink is refused by the open
    // itself (O_NOFOLLOW), and a FIFO swapped in does not block it.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_STATUS_BYTES {
        return None;
    }
    let mut text = String::new();
    file.take(MAX_STATUS_BYTES).read_to_string(&mut text).ok()?;
    crate::yaml::from_str(&text, &std::sync::Arc::from(path.as_path())).ok()
}

/// A status file rewritten, and the phase it said before (`None`: there was
/// no readable status).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrote {
    pub was: Option<Phase>,
}

/// Writes `new` unless the file already says the same apart from `since`;
/// keeps the old `since` when the phase did not change. Returns what it
/// rewrote, `None` when it did not need to write.
pub fn write_if_changed(dir: &Path, mut new: Status) -> Result<Option<Rewrote>, StatusError> {
    bound_message(&mut new.message);
    let old = read(dir, &new.lane);
    // The history goes on from the file's, one entry per phase change.
    new.history = old.as_ref().map(|o| o.history.clone()).unwrap_or_default();
    if old.as_ref().is_none_or(|o| o.phase != new.phase) {
        let mut reason = new.message.clone();
        bound(&mut reason, MAX_REASON_BYTES);
        new.history.push(Transition {
            at: new.since.clone(),
            from: old.as_ref().map(|o| o.phase),
            to: new.phase,
            reason,
        });
        let extra = new.history.len().saturating_sub(HISTORY);
        new.history.drain(..extra);
    }
    if let Some(old) = &old {
        if old.phase == new.phase {
            new.since.clone_from(&old.since);
        }
        if !new.differs_from(old) {
            return Ok(None);
        }
    }
    write(dir, &new)?;
    Ok(Some(Rewrote {
        was: old.map(|o| o.phase),
    }))
}

/// Writes atomically: temp file in the same directory, fsync, rename.
pub fn write(dir: &Path, status: &Status) -> Result<(), StatusError> {
    let path = lane::status_path(dir, &status.lane);
    let mut status = std::borrow::Cow::Borrowed(status);
    if status.message.len() > MAX_MESSAGE_BYTES {
        bound_message(&mut status.to_mut().message);
    }
    let status = status.as_ref();
    let text = crate::yaml::to_string(status).map_err(|e| StatusError::Serialize {
        lane: status.lane.clone(),
        message: e.to_string(),
    })?;
    // Readable by all, like the manifests beside it; it holds no secrets.
    // The temporary name carries the writer's pid (see remove_stale_temps).
    let prefix = format!(".{}.status.{}.", status.lane, std::process::id());
    crate::atomic::write(&path, &prefix, text.as_bytes(), 0o644)
        .map_err(|source| StatusError::Write { path, source })
}

/// Removes temporary status files left by a lanectl that was killed between
/// creating and renaming one (their names carry the writer's pid; a file
/// whose writer still runs is left alone). Returns how many were removed.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = temp_writer(name) else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// The writer's pid of a temporary status file name
/// (`.<lane>.status.<pid>.<random>.tmp`).
fn temp_writer(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (_, after) = rest.split_once(".status.")?;
    after.split('.').next()?.parse().ok()
}

/// Whether anything stands at the lane's status path, readable or not (a
/// corrupt file, or a directory of that name, is still the lane's to remove).
pub fn exists(dir: &Path, lane: &str) -> bool {
    std::fs::symlink_metadata(lane::status_path(dir, lane)).is_ok()
}

/// Removes a lane's status file; absent is fine.
pub fn remove(dir: &Path, lane: &str) -> Result<(), StatusError> {
    let path = lane::status_path(dir, lane);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(StatusError::Remove { path, source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_path_that_is_a_symlink_or_a_fifo_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample()).unwrap();
        let real = dir.path().join("real.yaml");
        std::fs::rename(lane::status_path(dir.path(), "alpha"), &real).unwrap();
        std::os::unix::fs::symlink(&real, lane::status_path(dir.path(), "alpha")).unwrap();
        assert_eq!(read(dir.path(), "alpha"), None, "a symlink is not followed");
        std::fs::remove_file(lane::status_path(dir.path(), "alpha")).unwrap();
        let fifo = lane::status_path(dir.path(), "alpha");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert_eq!(
            read(dir.path(), "alpha"),
            None,
            "a FIFO neither blocks nor reads"
        );
    }

    #[test]
    fn a_long_message_is_cut_at_a_character_and_says_how_much_is_left_out() {
        let mut message = "é".repeat(MAX_MESSAGE_BYTES);
        bound_message(&mut message);
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{}", message.len());
        assert!(message.ends_with("more bytes left out)"), "{message}");
        let mut short = "fine".to_string();
        bound_message(&mut short);
        assert_eq!(short, "fine");
    }

    fn sample() -> Status {
        let mut s = Status::new("alpha", Phase::Ready);
        s.endpoint = Some("http://127.0.0.1:41234".into());
        s.endpoints
            .insert("31417/tcp".into(), "http://127.0.0.1:41234".into());
        s.container = Some("lane-alpha".into());
        s.container_id = Some("4f3c".into());
        s.spec_hash = Some("sha256:ab".into());
        s
    }

    #[test]
    fn a_status_round_trips_through_its_file() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample()).unwrap();
        assert_eq!(read(dir.path(), "alpha").unwrap(), sample());
        let text = std::fs::read_to_string(dir.path().join("alpha.status.yaml")).unwrap();
        assert!(text.contains("phase: ready"), "{text}");
        assert!(!text.contains("codex_fingerprint"), "{text}");
    }

    #[test]
    fn an_unchanged_status_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_if_changed(dir.path(), sample()).unwrap().is_some());
        let mut later = sample();
        later.since = "2030-01-01T00:00:00Z".into();
        assert!(write_if_changed(dir.path(), later).unwrap().is_none());
        let mut changed = sample();
        changed.restarts = 1;
        assert!(write_if_changed(dir.path(), changed).unwrap().is_some());
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("alpha.status.yaml")).unwrap();
        write(dir.path(), &sample()).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let meta = std::fs::symlink_metadata(dir.path().join("alpha.status.yaml")).unwrap();
        assert!(meta.is_file());
    }

    #[test]
    fn a_failed_write_leaves_nothing_half_written() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the status file should go: the rename fails.
        std::fs::create_dir(dir.path().join("alpha.status.yaml")).unwrap();
        std::fs::write(dir.path().join("alpha.status.yaml/keep"), "x").unwrap();
        assert!(write(dir.path(), &sample()).is_err());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["alpha.status.yaml"], "no temporary file left");
        assert!(dir.path().join("alpha.status.yaml/keep").exists());
    }

    #[test]
    fn temporary_files_of_dead_writers_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(".alpha.status.999999999.AbC123.tmp");
        let live = dir
            .path()
            .join(format!(".beta.status.{}.XyZ.tmp", std::process::id()));
        let other = dir.path().join(".alpha.yaml.swp");
        for f in [&dead, &live, &other] {
            std::fs::write(f, "x").unwrap();
        }
        assert_eq!(remove_stale_temps(dir.path()), 1);
        assert!(!dead.exists() && live.exists() && other.exists());
        assert_eq!(temp_writer(".a.b.status.42.r.tmp"), Some(42));
        assert_eq!(temp_writer("a.status.yaml"), None);
    }

    #[test]
    fn no_temporary_file_stays_behind() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &sample()).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["alpha.status.yaml"]);
    }
}
