//! A lanes directory that is full or read-only while lanectl writes status:
//! the error is reported and retried, reconciling goes on, and nothing
//! half-written stays behind. The directory is a small tmpfs mounted for the
//! test (CI runs as root), unmounted by a guard whatever happens.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{Daemon, Lanes, podman, wait_for};

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path) -> Mount {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs"])
            .arg(at)
            .status()
            .expect("mount");
        assert!(
            ok.success(),
            "mounting a tmpfs needs root (CI runs as root)"
        );
        Mount(at.to_path_buf())
    }

    fn remount(&self, mode: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.0)
            .status()
            .expect("mount");
        assert!(ok.success());
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("--lazy").arg(&self.0).status();
    }
}

/// Fills the file system at `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join(".filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 4096];
    while f.write_all(&chunk).is_ok() {}
    path
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn a_full_lanes_dir_fails_apply_cleanly_and_the_next_apply_catches_up() {
    let lanes = Lanes::new("disk-full");
    let mount = Mount::tmpfs(&lanes.dir());
    lanes.write("a", &lanes.worker_lane(""));
    lanes.apply_ok();
    let old = lanes.container_id("a");

    let filler = fill(&lanes.dir());
    podman(&["rm", "--force", "--time", "0", &old]);
    let run = lanes.lanectl(&["apply"]);
    assert_eq!(
        run.code, 1,
        "a status that cannot be written is not converged: {run:?}"
    );
    assert!(run.stdout.contains("status not written"), "{run:?}");
    assert_eq!(
        lanes.containers().len(),
        1,
        "reconciling went on: the lane has its container"
    );
    assert!(
        leftovers(&lanes.dir()).is_empty(),
        "temp files left: {:?}",
        leftovers(&lanes.dir())
    );

    std::fs::remove_file(filler).unwrap();
    lanes.apply_ok();
    let status = lanes.status("a").unwrap();
    assert_eq!(
        status["container_id"],
        lanes.containers()[0].as_str(),
        "the status caught up"
    );
    drop(mount);
}

#[test]
fn a_read_only_lanes_dir_under_the_daemon_is_retried_until_writable() {
    let lanes = Lanes::new("read-only");
    let mount = Mount::tmpfs(&lanes.dir());
    lanes.write("a", &lanes.worker_lane(""));
    let daemon = Daemon::start(&lanes, &[]);
    let old = wait_for(Duration::from_secs(20), || lanes.ready_id("a")).expect("a ready");

    mount.remount("ro");
    podman(&["rm", "--force", "--time", "0", &old]);
    // The container comes back although its status cannot be written.
    let new = wait_for(Duration::from_secs(20), || {
        let ids = lanes.containers();
        (ids.len() == 1 && ids[0] != old).then(|| ids[0].clone())
    })
    .unwrap_or_else(|| panic!("not recreated\n{}", daemon.log()));
    assert!(
        daemon.log().contains("could not write status"),
        "{}",
        daemon.log()
    );
    mount.remount("rw");
    wait_for(Duration::from_secs(20), || {
        lanes.ready_id("a").filter(|id| *id == new)
    })
    .unwrap_or_else(|| panic!("status not written after the remount\n{}", daemon.log()));
    assert!(leftovers(&lanes.dir()).is_empty());
    drop(daemon);
    drop(mount);
}
