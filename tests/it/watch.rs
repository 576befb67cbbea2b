//! The daemon under changes that replace things rather than edit them: an
//! image built after start, a lanes directory or codex directory swapped in
//! by a rename. Each runs with the harness's resync of an hour, so only the
//! daemon's own watching (or its back-off retries) can get it right.
//!
//! A swapped-in directory is also found by the watcher's periodic re-check
//! (every 5 s, `RECHECK` in src/sources/fs.rs), which looks at every lane
//! concerned. So the swap tests wait until the daemon watches the new
//! directory's inode (read from /proc), then change something inside it and
//! require that change seen within [`NEW_WATCH`], less than the re-check's
//! period: only the new watch can see it that soon.

use std::time::Duration;

use crate::common::{Daemon, Lanes, podman, podman_output, wait_for};

const LIMIT: Duration = Duration::from_secs(20);
/// How soon a change inside a swapped-in directory must be seen: less than
/// the re-check's 5 s.
const NEW_WATCH: Duration = Duration::from_secs(3);

/// Waits until the daemon's log, after `mark`, has a reconcile of `lane`
/// with `cause`, for at most `limit`.
fn reconciled(daemon: &Daemon, mark: usize, lane: &str, cause: &str, limit: Duration) -> bool {
    let needle = format!("reconcile{{lane={lane} cause=\"{cause}\"}}");
    wait_for(limit, || {
        daemon.log_since(mark).contains(&needle).then_some(())
    })
    .is_some()
}

#[test]
fn an_image_built_after_the_daemon_started_is_picked_up() {
    let lanes = Lanes::new("late-image");
    let tag = format!("localhost/lanectl-late:{}", lanes.instance);
    lanes.write(
        "a",
        &lanes.worker_lane("").replace(&crate::common::image(), &tag),
    );
    let daemon = Daemon::start(&lanes, &[]);
    wait_for(LIMIT, || {
        (lanes.status("a")?["phase"] == "failed").then_some(())
    })
    .unwrap_or_else(|| panic!("missing image not reported: {:?}", lanes.status("a")));
    podman(&["tag", &crate::common::image(), &tag]);
    // The back-off retry finds it (the resync is an hour away): the lookup
    // is not cached.
    let found = wait_for(Duration::from_secs(30), || lanes.ready_id("a"));
    let _ = podman_output(&["rmi", "--force", &tag]);
    found.unwrap_or_else(|| {
        panic!(
            "image not picked up: {:?}\n{}",
            lanes.status("a"),
            daemon.log()
        )
    });
}

#[test]
fn a_lanes_dir_swapped_in_by_rename_is_watched_again() {
    let lanes = Lanes::new("swap-dir");
    lanes.write("a", &lanes.worker_lane(""));
    let daemon = Daemon::start(&lanes, &[]);
    wait_for(LIMIT, || lanes.ready_id("a"))
        .unwrap_or_else(|| panic!("a not ready\n{}", daemon.log()));
    // A deploy that builds the new directory aside and renames it into place.
    let new = lanes.path("lanes.new");
    std::fs::create_dir(&new).unwrap();
    std::fs::copy(lanes.dir().join("a.yaml"), new.join("a.yaml")).unwrap();
    std::fs::copy(lanes.dir().join("a.status.yaml"), new.join("a.status.yaml")).unwrap();
    std::fs::rename(lanes.dir(), lanes.path("lanes.old")).unwrap();
    std::fs::rename(&new, lanes.dir()).unwrap();
    // The swap is noticed: the new directory's inode is watched.
    daemon.wait_watching(&lanes.dir(), LIMIT);
    // A new manifest in it is seen through the new watch: sooner than a
    // re-check could, which only looks at lanes it already knows.
    let mark = daemon.log().len();
    lanes.write("b", &lanes.worker_lane(""));
    assert!(
        reconciled(&daemon, mark, "b", "file changed", NEW_WATCH),
        "b in the swapped-in dir not seen within {NEW_WATCH:?}\n{}",
        daemon.log()
    );
    wait_for(LIMIT, || lanes.ready_id("b"))
        .unwrap_or_else(|| panic!("b in the swapped-in dir not reconciled\n{}", daemon.log()));
}

#[test]
fn a_codex_dir_swapped_in_by_rename_keeps_being_watched() {
    let lanes = Lanes::new("swap-codex");
    lanes.file("codex/a/token", "one\n");
    lanes.write(
        "a",
        &lanes.worker_lane("codex: {source: ../codex/a, target: /root/.codex}\n"),
    );
    let daemon = Daemon::start(&lanes, &[]);
    let first = wait_for(LIMIT, || lanes.ready_id("a"))
        .unwrap_or_else(|| panic!("a not ready\n{}", daemon.log()));
    // Swap: a new directory renamed over the old one's name.
    lanes.file("codex/a.new/token", "two\n");
    std::fs::rename(lanes.path("codex/a"), lanes.path("codex/a.old")).unwrap();
    std::fs::rename(lanes.path("codex/a.new"), lanes.path("codex/a")).unwrap();
    let second = wait_for(LIMIT, || lanes.ready_id("a").filter(|id| *id != first))
        .unwrap_or_else(|| panic!("swap not seen\n{}", daemon.log()));
    // The new directory is watched (at the latest by the next re-check),
    // and the watch's renewal has looked at the lane once ("source
    // replaced"): wait for that look to end, so that it cannot be the one
    // that sees the edit below.
    daemon.wait_watching(&lanes.path("codex/a"), LIMIT);
    let renewal_done = "reconcile{lane=a cause=\"source replaced\"}: lanectl::daemon: reconciled";
    wait_for(LIMIT, || daemon.log().contains(renewal_done).then_some(()))
        .unwrap_or_else(|| panic!("the renewed watch did not look at a\n{}", daemon.log()));
    // That watch fires: an edit inside is seen ("file changed", a cause the
    // re-check never gives) sooner than a re-check could come.
    let mark = daemon.log().len();
    lanes.file("codex/a/token", "three\n");
    assert!(
        reconciled(&daemon, mark, "a", "file changed", NEW_WATCH),
        "edit in the new dir not seen within {NEW_WATCH:?}\n{}",
        daemon.log()
    );
    wait_for(LIMIT, || lanes.ready_id("a").filter(|id| *id != second))
        .unwrap_or_else(|| panic!("edit in the new dir not seen\n{}", daemon.log()));
}
