//! `lanectl run` against a real Podman: it converges at start, then reacts to
//! manifests, Podman events, source changes and a restarted Podman. The
//! harness's daemon resyncs only hourly, so each change here is seen through
//! the source meant for it; events.rs has a test of each Podman event alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::common::{Daemon, Lanes, OwnPodman, inspect, podman, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

fn wait_ready(lanes: &Lanes, daemon: &Daemon, lane: &str) -> String {
    wait_for(LIMIT, || lanes.ready_id(lane)).unwrap_or_else(|| {
        panic!(
            "lane {lane} not ready; status {:?}\nlog:\n{}",
            lanes.status(lane),
            daemon.log()
        )
    })
}

fn wait_ready_other_than(lanes: &Lanes, daemon: &Daemon, lane: &str, old: &str) -> String {
    wait_for(LIMIT, || lanes.ready_id(lane).filter(|id| id != old)).unwrap_or_else(|| {
        panic!(
            "lane {lane} not recreated; status {:?}\nlog:\n{}",
            lanes.status(lane),
            daemon.log()
        )
    })
}

#[test]
fn the_daemon_follows_manifests_and_podman() {
    let lanes = Lanes::new("daemon");
    lanes.write("a", &lanes.worker_lane(""));
    let daemon = Daemon::start(&lanes, &[]);
    let a = wait_ready(&lanes, &daemon, "a");
    daemon.wait_watching(&lanes.dir(), LIMIT);

    // A new manifest dropped in becomes ready.
    lanes.write("b", &lanes.worker_lane(""));
    let b = wait_ready(&lanes, &daemon, "b");

    // An edit recreates only that lane.
    lanes.write("a", &lanes.worker_lane("env: {V: '2'}\n"));
    let a2 = wait_ready_other_than(&lanes, &daemon, "a", &a);
    assert_eq!(lanes.ready_id("b").as_deref(), Some(b.as_str()));

    // `podman rm -f` is recreated; `podman stop` is started again (both
    // through their Podman events).
    podman(&["rm", "--force", "--time", "0", &a2]);
    let a3 = wait_ready_other_than(&lanes, &daemon, "a", &a2);
    podman(&["stop", "--time", "1", &b]);
    wait_for(LIMIT, || {
        (inspect(&b)["State"]["Running"] == true).then_some(())
    })
    .unwrap_or_else(|| panic!("b not started again\n{}", daemon.log()));
    wait_for(LIMIT, || {
        (lanes.status("b")?["restarts"] == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("restart not counted: {:?}", lanes.status("b")));
    assert_eq!(
        lanes.ready_id("b").as_deref(),
        Some(b.as_str()),
        "the same container"
    );

    // A broken manifest is invalid while the old container keeps running.
    lanes.write("a", "image: [\n");
    wait_for(LIMIT, || {
        (lanes.status("a")?["phase"] == "invalid").then_some(())
    })
    .unwrap_or_else(|| panic!("a not invalid: {:?}", lanes.status("a")));
    assert_eq!(inspect(&a3)["State"]["Running"], true);
    // Fixed, it is ready again (the same spec: the same container).
    lanes.write("a", &lanes.worker_lane("env: {V: '2'}\n"));
    let a4 = wait_ready(&lanes, &daemon, "a");
    assert_eq!(a4, a3);

    // A deleted manifest's container and status file go away.
    std::fs::remove_file(lanes.dir().join("b.yaml")).unwrap();
    wait_for(LIMIT, || {
        (lanes.status("b").is_none() && lanes.containers().len() == 1).then_some(())
    })
    .unwrap_or_else(|| panic!("b not removed\n{}", daemon.log()));
}

#[test]
fn a_manifest_written_slowly_is_read_only_once_closed() {
    // A writer that pauses mid-file keeps it open: the daemon waits for the
    // close, so the half-written (and valid) manifest is never applied. (The
    // harness's resync is an hour: a resync reads whatever is on disk.)
    use std::io::Write;
    let lanes = Lanes::new("slow-writer");
    let daemon = Daemon::start(&lanes, &[]);
    daemon.wait_watching(&lanes.dir(), LIMIT);
    let full = lanes.worker_lane(&format!(
        "container_name: {}-slow\nlabels: {{stage: full}}\n",
        lanes.instance
    ));
    let (head, tail) = full.split_at(full.find("labels:").unwrap());
    let mut file = std::fs::File::create(lanes.dir().join("slow.yaml")).unwrap();
    file.write_all(head.as_bytes()).unwrap();
    // The slow writer itself: the pause is what this test is about (longer
    // than the 30 ms of quiet that would end a batch of a closed file).
    std::thread::sleep(Duration::from_millis(600));
    file.write_all(tail.as_bytes()).unwrap();
    drop(file);
    let id = wait_ready(&lanes, &daemon, "slow");
    assert_eq!(inspect(&id)["Config"]["Labels"]["stage"], "full");
    let log = daemon.log();
    let acted: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lane=slow") && l.contains("acted action="))
        .collect();
    assert_eq!(acted.len(), 1, "one create, no recreate: {acted:?}\n{log}");
    assert!(acted[0].contains("action=create"), "{log}");
}

#[test]
fn a_codex_file_rewritten_under_the_daemon_recreates_its_lane() {
    let lanes = Lanes::new("daemon-codex");
    lanes.file("codex/a/token", "one\n");
    lanes.write(
        "a",
        &lanes.worker_lane("codex: {source: ../codex/a, target: /root/.codex}\n"),
    );
    let daemon = Daemon::start(&lanes, &[]);
    let a = wait_ready(&lanes, &daemon, "a");
    daemon.wait_watching(&lanes.path("codex/a"), LIMIT);
    lanes.file("codex/a/token", "two\n");
    wait_ready_other_than(&lanes, &daemon, "a", &a);
    let report = lanes.worker_report("a");
    assert_eq!(
        report["codex_files"][0]["sha256"],
        crate::converge::sha256_hex(b"two\n")
    );
}

#[test]
fn a_burst_of_manifests_creates_each_container_once_and_no_reader_sees_a_partial_status() {
    let lanes = Lanes::new("burst");
    let daemon = Daemon::start(&lanes, &[]);
    daemon.wait_watching(&lanes.dir(), LIMIT);

    // A reader polls every status file throughout.
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let reader = {
        let (stop, reads, dir) = (stop.clone(), reads.clone(), lanes.dir());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    return;
                };
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if !name.ends_with(".status.yaml") {
                        continue;
                    }
                    let Ok(text) = std::fs::read_to_string(entry.path()) else {
                        continue;
                    };
                    let parsed: Result<serde_json::Value, _> = serde_saphyr::from_str(&text);
                    let value =
                        parsed.unwrap_or_else(|e| panic!("partial status {name}: {e}\n{text}"));
                    assert!(value["phase"].is_string(), "{name}: {text}");
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    let names: Vec<String> = (0..20).map(|i| format!("l{i:02}")).collect();
    for name in &names {
        lanes.write(name, &lanes.worker_lane(""));
    }
    for name in &names {
        wait_for(Duration::from_secs(60), || lanes.ready_id(name)).unwrap_or_else(|| {
            panic!(
                "{name} not ready: {:?}\n{}",
                lanes.status(name),
                daemon.log()
            )
        });
    }
    stop.store(true, Ordering::Relaxed);
    reader
        .join()
        .expect("the reader saw only whole status files");
    assert!(reads.load(Ordering::Relaxed) > 20, "the reader read");
    assert_eq!(lanes.containers().len(), 20);
    let creates = daemon.log().matches("acted action=create").count();
    assert_eq!(
        creates,
        20,
        "each container created exactly once\n{}",
        daemon.log()
    );
}

#[test]
fn sigterm_exits_0_and_leaves_the_lanes_running() {
    let lanes = Lanes::new("sigterm");
    lanes.write("a", &lanes.worker_lane(""));
    let mut daemon = Daemon::start(&lanes, &[]);
    let a = wait_ready(&lanes, &daemon, "a");
    assert_eq!(
        daemon.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        daemon.log()
    );
    assert_eq!(inspect(&a)["State"]["Running"], true);
    assert_eq!(lanes.status("a").unwrap()["phase"], "ready");
}

#[test]
fn the_daemon_recovers_when_podman_restarts_under_it() {
    let lanes = Lanes::new("podman-restart");
    let mut own = OwnPodman::new(&lanes);
    own.load_test_image(&lanes);

    lanes.write("a", &lanes.worker_lane(""));
    let mut daemon = Daemon::start_with(&lanes, &own.url(), &[]);
    let a = wait_ready(&lanes, &daemon, "a");

    // Podman goes away; an edit made meanwhile cannot be carried out. The
    // lane still answers, so it stays ready (an outage of Podman is not one
    // of the lane), and its message says both.
    own.kill();
    lanes.write("a", &lanes.worker_lane("env: {V: after}\n"));
    wait_for(LIMIT, || {
        let s = lanes.status("a")?;
        let m = s["message"].as_str()?;
        (s["phase"] == "ready"
            && m.contains("podman unreachable since")
            && m.contains("the manifest changed"))
        .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "outage not reported: {:?}\n{}",
            lanes.status("a"),
            daemon.log()
        )
    });
    assert!(
        daemon.is_running(),
        "the daemon keeps running without podman"
    );

    // Podman is back: the lane converges without restarting the daemon.
    own.start();
    let a2 = wait_for(Duration::from_secs(60), || {
        lanes.ready_id("a").filter(|id| *id != a)
    })
    .unwrap_or_else(|| panic!("not recovered: {:?}\n{}", lanes.status("a"), daemon.log()));
    let env = own.remote(&["inspect", "--format", "{{.Config.Env}}", &a2]);
    assert!(env.contains("V=after"), "{env}");
    assert!(daemon.is_running());
}

#[test]
fn failing_probes_never_hold_up_another_lanes_edit() {
    const JOBS: usize = 8;
    let lanes = Lanes::new("probes-hold");
    // As many lanes as --jobs whose probes fail for 60 s at a time.
    let failing = lanes
        .failing_probe_lane("")
        .replace("timeout: 1s", "timeout: 60s");
    for i in 0..JOBS {
        lanes.write(&format!("f{i}"), &failing);
    }
    lanes.write("c", &lanes.worker_lane(""));
    let jobs = JOBS.to_string();
    let daemon = Daemon::start(&lanes, &["--jobs", &jobs]);
    let c = wait_ready(&lanes, &daemon, "c");
    daemon.wait_watching(&lanes.dir(), LIMIT);
    // Every failing lane is in its long probe now.
    wait_for(LIMIT, || {
        (0..JOBS)
            .all(|i| {
                lanes
                    .status(&format!("f{i}"))
                    .is_some_and(|s| s["message"] == "probing")
            })
            .then_some(())
    })
    .unwrap_or_else(|| panic!("the failing lanes are not probing\n{}", daemon.log()));

    let edited = std::time::Instant::now();
    lanes.write("c", &lanes.worker_lane("env: {V: '2'}\n"));
    let took = wait_for(Duration::from_secs(15), || {
        lanes
            .ready_id("c")
            .filter(|id| *id != c)
            .map(|_| edited.elapsed())
    })
    .unwrap_or_else(|| {
        panic!(
            "c's edit waited for the failing probes; status {:?}\n{}",
            lanes.status("c"),
            daemon.log()
        )
    });
    println!("edit → ready with {JOBS} lanes failing their probes: {took:?}");
}

#[test]
fn a_lane_falling_into_trouble_is_logged_at_warn_and_its_recovery_at_info() {
    let lanes = Lanes::new("daemon-transitions");
    lanes.write("a", &lanes.worker_lane(""));
    let daemon = Daemon::start(&lanes, &[]);
    wait_ready(&lanes, &daemon, "a");
    daemon.wait_watching(&lanes.dir(), LIMIT);
    let from = daemon.log().len();
    lanes.write("a", &lanes.worker_lane("imgae: typo\n"));
    let line = |words: &str| {
        daemon
            .log_since(from)
            .lines()
            .find(|l| l.contains(words))
            .map(str::to_string)
    };
    let warned = wait_for(LIMIT, || line("lane is invalid"))
        .unwrap_or_else(|| panic!("no transition logged\n{}", daemon.log()));
    assert!(
        warned.contains("WARN") && warned.contains("imgae"),
        "{warned}"
    );
    lanes.write("a", &lanes.worker_lane(""));
    let back = wait_for(LIMIT, || line("lane is ready again"))
        .unwrap_or_else(|| panic!("no recovery logged\n{}", daemon.log()));
    assert!(back.contains("INFO"), "{back}");
}

#[test]
fn a_manifest_held_open_past_the_wait_is_named_in_a_warning() {
    use std::io::Write;
    let lanes = Lanes::new("daemon-slow-writer");
    lanes.write("a", &lanes.worker_lane(""));
    let daemon = Daemon::start(&lanes, &[]);
    wait_ready(&lanes, &daemon, "a");
    daemon.wait_watching(&lanes.dir(), LIMIT);
    let from = daemon.log().len();
    let path = lanes.dir().join("slow.yaml");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(b"image: ").unwrap();
    std::thread::sleep(Duration::from_secs(3));
    file.write_all(crate::common::image().as_bytes()).unwrap();
    drop(file);
    let warned = wait_for(LIMIT, || {
        daemon
            .log_since(from)
            .lines()
            .find(|l| l.contains("still open for writing"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no warning\n{}", daemon.log()));
    assert!(
        warned.contains("WARN") && warned.contains("slow.yaml"),
        "{warned}"
    );
}
