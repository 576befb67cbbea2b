//! The daemon under changes that replace things rather than edit them: an
//! image built after start, a lanes directory or codex directory swapped in
//! by a rename. Each runs with the resync turned off (`--resync 1h`), so only
//! the daemon's own watching can get it right.

use std::time::Duration;

use crate::common::{Daemon, Lanes, podman, podman_output, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

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
    // The back-off retry (or the resync) finds it: the lookup is not cached.
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
    let daemon = Daemon::start(&lanes, &["--resync", "1h"]);
    wait_for(LIMIT, || lanes.ready_id("a"))
        .unwrap_or_else(|| panic!("a not ready\n{}", daemon.log()));
    // A deploy that builds the new directory aside and renames it into place.
    let new = lanes.path("lanes.new");
    std::fs::create_dir(&new).unwrap();
    std::fs::copy(lanes.dir().join("a.yaml"), new.join("a.yaml")).unwrap();
    std::fs::copy(lanes.dir().join("a.status.yaml"), new.join("a.status.yaml")).unwrap();
    std::fs::rename(lanes.dir(), lanes.path("lanes.old")).unwrap();
    std::fs::rename(&new, lanes.dir()).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    lanes.write("b", &lanes.worker_lane(""));
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
    let daemon = Daemon::start(&lanes, &["--resync", "1h"]);
    let first = wait_for(LIMIT, || lanes.ready_id("a"))
        .unwrap_or_else(|| panic!("a not ready\n{}", daemon.log()));
    // Swap: a new directory renamed over the old one's name.
    lanes.file("codex/a.new/token", "two\n");
    std::fs::rename(lanes.path("codex/a"), lanes.path("codex/a.old")).unwrap();
    std::fs::rename(lanes.path("codex/a.new"), lanes.path("codex/a")).unwrap();
    let second = wait_for(LIMIT, || lanes.ready_id("a").filter(|id| *id != first))
        .unwrap_or_else(|| panic!("swap not seen\n{}", daemon.log()));
    // And a later edit inside the new directory is seen too.
    std::thread::sleep(Duration::from_millis(300));
    lanes.file("codex/a/token", "three\n");
    wait_for(LIMIT, || lanes.ready_id("a").filter(|id| *id != second))
        .unwrap_or_else(|| panic!("edit in the new dir not seen\n{}", daemon.log()));
}
