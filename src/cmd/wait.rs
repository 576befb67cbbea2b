//! `wait`: until each named lane (default all) has reached a state for its
//! *current* inputs (SPEC.md "Explaining and waiting"). Needs no Podman: it
//! reads the lanes directory and the status files, and wakes on the
//! directory's file-system events (a status file is renamed into place),
//! never on a timer.
//!
//! A status counts only when its `inputs_sha256` is what the files say now
//! ([`hash::inputs_digest`]: the manifest's bytes, `_defaults.yaml`'s, the
//! codex fingerprint, tracked content): a status written for an older
//! manifest is never taken, however ready it says the lane is. A lane the
//! files alone show `invalid` ends the wait at once, as does a named lane
//! without a manifest (for `ready` and `stopped`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

use super::Exit;
use crate::cli::{Global, WaitFor};
use crate::content::{FingerprintCache, Policy};
use crate::desired::{self, Desired, LoadOptions};
use crate::hash;
use crate::lanespec::LaneSpec;
use crate::manifest::DesiredState;
use crate::status::{self, Phase};

/// Where one lane stands against what is waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stand {
    Reached,
    /// Not yet: what its status says now.
    Waiting(String),
    /// Never, as the files stand now (invalid, no manifest).
    Never(String),
}

pub fn run(
    global: &Global,
    lanes: Vec<String>,
    wait_for: WaitFor,
    timeout: Duration,
) -> anyhow::Result<Exit> {
    let dir = &global.dir;
    crate::lane::list_dir(dir)?; // a missing directory is an error at once
    let load = global.load_options();
    let policy = Policy::of_process(global.allow_insecure_permissions);

    // Watch first, then look: a status written in between wakes the loop.
    let (tx, events) = mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        if e.is_ok() {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;

    let deadline = Instant::now() + timeout;
    let cache = FingerprintCache::default();
    loop {
        let stands = look(dir, &lanes, wait_for, &load, &cache, policy)?;
        let never: Vec<_> = stands
            .iter()
            .filter_map(|(lane, s)| match s {
                Stand::Never(why) => Some((lane, why)),
                _ => None,
            })
            .collect();
        if !never.is_empty() {
            for (lane, why) in never {
                eprintln!("{lane}  {why}");
            }
            return Ok(Exit::Failed);
        }
        let waiting: Vec<_> = stands
            .iter()
            .filter_map(|(lane, s)| match s {
                Stand::Waiting(what) => Some((lane, what)),
                _ => None,
            })
            .collect();
        if waiting.is_empty() {
            for lane in stands.keys() {
                println!("{lane}  {wait_for}");
            }
            return Ok(Exit::Ok);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!(
                "timed out after {} waiting for {wait_for}:",
                humantime::format_duration(timeout)
            );
            for (lane, what) in waiting {
                eprintln!("{lane}  {what}");
            }
            return Ok(Exit::Failed);
        }
        match events.recv_timeout(left) {
            // A burst of events (a rename, its directory's) is one look.
            Ok(()) => while events.try_recv().is_ok() {},
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("the watch on {} ended", dir.display())
            }
        }
    }
}

/// Where each lane waited for stands now.
fn look(
    dir: &Path,
    named: &[String],
    wait_for: WaitFor,
    load: &LoadOptions,
    cache: &FingerprintCache,
    policy: Policy,
) -> anyhow::Result<BTreeMap<String, Stand>> {
    let state = desired::load_dir(dir, load.clone())?;
    let lanes: Vec<String> = if !named.is_empty() {
        named.to_vec()
    } else if wait_for == WaitFor::Deleted {
        // Every lane whose manifest is gone and whose status file is not yet.
        state
            .listing
            .status_files
            .iter()
            .filter(|l| !state.lanes.contains_key(*l))
            .cloned()
            .collect()
    } else {
        state.lanes.keys().cloned().collect()
    };
    let mut out = BTreeMap::new();
    for lane in lanes {
        let status = status::read(dir, &lane);
        let stand = match (wait_for, state.lanes.get(&lane)) {
            (WaitFor::Deleted, desired) => {
                let present = status.is_some() || status::exists(dir, &lane);
                match (present, desired) {
                    (false, _) => Stand::Reached,
                    (true, Some(_)) => Stand::Waiting("its manifest is still there".into()),
                    (true, None) => Stand::Waiting("its status file is still there".into()),
                }
            }
            (_, None) => Stand::Never(match state.elsewhere.get(&lane) {
                Some(host) => format!("it runs on host {host}, not this one"),
                None => "no manifest".into(),
            }),
            (_, Some(Desired::Invalid { problems, .. })) => Stand::Never(format!(
                "invalid: {}",
                crate::reconcile::report::problems_text(problems)
            )),
            (
                _,
                Some(Desired::Valid {
                    spec,
                    manifest_sha256,
                }),
            ) => {
                let want = match (wait_for, spec.state) {
                    (WaitFor::Stopped, _) | (WaitFor::Ready, DesiredState::Stopped) => {
                        Phase::Stopped
                    }
                    _ => Phase::Ready,
                };
                match current_inputs(
                    spec,
                    manifest_sha256,
                    state.defaults_sha256.as_deref(),
                    cache,
                    policy,
                ) {
                    Err(why) => Stand::Waiting(format!("its inputs cannot be read: {why}")),
                    Ok(inputs) => stand_of(status.as_ref(), &inputs, want),
                }
            }
        };
        out.insert(lane, stand);
    }
    Ok(out)
}

/// A valid lane against its status: reached when the status is `want` for
/// these very inputs.
fn stand_of(status: Option<&status::Status>, inputs: &str, want: Phase) -> Stand {
    let Some(st) = status else {
        return Stand::Waiting("pending: no status file yet".into());
    };
    let current = st.inputs_sha256.as_deref() == Some(inputs);
    if current && st.phase == want {
        return Stand::Reached;
    }
    let said = if st.message.is_empty() {
        st.phase.to_string()
    } else {
        format!("{}: {}", st.phase, st.message)
    };
    if current {
        Stand::Waiting(said)
    } else {
        Stand::Waiting(format!(
            "{said} (for earlier inputs: the manifest, defaults, codex or tracked content changed since)"
        ))
    }
}

/// The lane's inputs digest as the files stand now: what a status written
/// for them carries. Read through the same cache as the lane hash, kept
/// across looks, so an unchanged codex is not hashed again at each event.
fn current_inputs(
    spec: &LaneSpec,
    manifest_sha256: &str,
    defaults_sha256: Option<&str>,
    cache: &FingerprintCache,
    policy: Policy,
) -> Result<String, String> {
    let tracked: Vec<(String, std::path::PathBuf)> = spec
        .mounts
        .iter()
        .filter(|m| m.track_content)
        .map(|m| (m.target.clone(), m.source.clone()))
        .collect();
    let codex = spec.codex.as_ref().map(|c| c.source.as_path());
    let (codex, tracked) = cache.lane_content(codex, &tracked, policy)?;
    Ok(hash::inputs_digest(
        manifest_sha256,
        defaults_sha256,
        codex.as_deref(),
        &hash::tracked_digest(&tracked),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: Phase, inputs: &str) -> status::Status {
        status::Status {
            inputs_sha256: Some(inputs.into()),
            ..status::Status::new("a", phase)
        }
    }

    #[test]
    fn only_a_status_for_the_current_inputs_counts() {
        assert_eq!(
            stand_of(Some(&status(Phase::Ready, "new")), "new", Phase::Ready),
            Stand::Reached
        );
        let old = stand_of(Some(&status(Phase::Ready, "old")), "new", Phase::Ready);
        assert!(
            matches!(&old, Stand::Waiting(w) if w.contains("earlier inputs")),
            "{old:?}"
        );
        assert!(matches!(
            stand_of(Some(&status(Phase::Pending, "new")), "new", Phase::Ready),
            Stand::Waiting(_)
        ));
        assert!(matches!(
            stand_of(None, "new", Phase::Ready),
            Stand::Waiting(_)
        ));
        assert_eq!(
            stand_of(Some(&status(Phase::Stopped, "new")), "new", Phase::Stopped),
            Stand::Reached
        );
    }
}
