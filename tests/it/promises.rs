//! Promises of SPEC's "Command line" that had no test: `run`'s signals and
//! exit codes, `apply` and `down` failures, commands that need no Podman, a
//! resync that changes nothing, `--jobs` and `track_content` under the
//! daemon. Each test decides by what happened (exit codes, status files,
//! container ids, Podman's own event log), not by how fast it happened.

use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::common::{Daemon, Lanes, host, image, inspect, podman, try_inspect, wait_for};

/// A lane whose container's PID 1 is `sleep` (which ignores SIGTERM, as PID 1
/// without a handler does): stopping it takes the whole `stop_timeout`, so a
/// recreate stays in flight that long. No probe: running means ready.
fn slow_stop_lane(lanes: &Lanes, lane: &str, v: u64, stop_timeout: &str) -> String {
    format!(
        "image: {image}\nentrypoint: [/bin/sleep]\ncommand: ['100000']\n\
         stop_timeout: {stop_timeout}\nenv: {{LANE_V: '{v}'}}\ncontainer_name: {}-{lane}\n",
        lanes.instance,
        image = image(),
    )
}

fn running_with(id: &str, v: u64) -> bool {
    try_inspect(id).is_some_and(|c| {
        c["State"]["Running"] == true
            && c["Config"]["Env"]
                .as_array()
                .is_some_and(|env| env.iter().any(|e| *e == format!("LANE_V={v}")))
    })
}

/// The lane's container id once its status says ready and that container
/// runs with `LANE_V=<v>`.
fn ready_on(lanes: &Lanes, lane: &str, v: u64) -> Option<String> {
    let id = lanes.ready_id(lane)?;
    running_with(&id, v).then_some(id)
}

/// Waits until the daemon's log (from byte `from`) has a line with all of
/// `words`; panics with the log otherwise.
fn wait_log(daemon: &Daemon, from: usize, words: &[&str], limit: Duration) {
    wait_for(limit, || {
        daemon
            .log_since(from)
            .lines()
            .any(|l| words.iter().all(|w| l.contains(w)))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no log line with {words:?}\n{}", daemon.log()));
}

#[test]
fn sigint_exits_0_and_leaves_the_lanes_running() {
    let lanes = Lanes::new("sigint");
    lanes.write("a", &lanes.worker_lane(""));
    let mut daemon = Daemon::start(&lanes, &["--resync", "1h"]);
    let id = wait_for(Duration::from_secs(60), || lanes.ready_id("a"))
        .unwrap_or_else(|| panic!("a not ready\n{}", daemon.log()));
    daemon.signal("INT");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        daemon.log()
    );
    assert_eq!(
        inspect(&id)["State"]["Running"],
        true,
        "the lane was stopped"
    );
    assert_eq!(lanes.containers(), vec![id.clone()]);
    // Also when the signal comes while the daemon re-checks the unchanged
    // lane (its container's start event): that probe's interruption says
    // nothing new about a lane that was ready.
    assert_eq!(
        lanes.ready_id("a"),
        Some(id),
        "status left as it was: {:?}",
        lanes.status("a")
    );
}

#[test]
fn a_shutdown_during_a_probe_leaves_a_status_that_is_true() {
    let lanes = Lanes::new("shutdown-probe");
    // Never answers 2xx, and would be probed for a minute.
    let yaml = lanes
        .failing_probe_lane("")
        .replace("timeout: 1s", "timeout: 60s");
    lanes.write("a", &yaml);
    let mut daemon = Daemon::start(&lanes, &["--resync", "1h"]);
    wait_for(Duration::from_secs(60), || {
        let s = lanes.status("a")?;
        (s["message"] == "probing").then_some(())
    })
    .unwrap_or_else(|| panic!("a is not being probed\n{}", daemon.log()));
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(30)),
        Some(0),
        "{}",
        daemon.log()
    );
    let status = lanes.status("a").expect("a status");
    assert_eq!(status["phase"], "pending", "{status}");
    let message = status["message"].as_str().unwrap();
    assert_ne!(message, "probing", "nothing probes any more: {status}");
    assert!(message.contains("not probed"), "{status}");
}

/// A daemon whose lane `slow` (its container taking `stop` to stop) is
/// being recreated now: returns the daemon, the old container's id and the
/// log's length before the edit.
fn recreate_in_flight(lanes: &Lanes, stop: &str) -> (Daemon, String, usize) {
    lanes.write("slow", &slow_stop_lane(lanes, "slow", 0, stop));
    let daemon = Daemon::start(lanes, &["--resync", "1h"]);
    let old = wait_for(Duration::from_secs(60), || ready_on(lanes, "slow", 0))
        .unwrap_or_else(|| panic!("slow not ready\n{}", daemon.log()));
    let from = daemon.log().len();
    lanes.write("slow", &slow_stop_lane(lanes, "slow", 1, stop));
    wait_log(
        &daemon,
        from,
        &["lane=slow", "decided action=recreate"],
        Duration::from_secs(30),
    );
    (daemon, old, from)
}

#[test]
fn the_first_signal_lets_an_in_flight_recreate_finish() {
    let lanes = Lanes::new("sigterm-inflight");
    let (mut daemon, old, from) = recreate_in_flight(&lanes, "4s");
    // The old container takes 4 s to stop: the recreate is in flight now.
    daemon.signal("TERM");
    let code = daemon.wait_exit(Duration::from_secs(60));
    let log = daemon.log();
    assert_eq!(code, Some(0), "{log}");
    assert!(
        log.get(from..)
            .unwrap_or("")
            .lines()
            .any(|l| l.contains("acted action=recreate") && l.contains("ok=true")),
        "the recreate was not finished\n{log}"
    );
    // Finished, not cut: one container, the new one, running, and a whole
    // status that names it.
    let status = lanes.status("slow").expect("a status file");
    assert_eq!(status["phase"], "ready", "{status}");
    let new = status["container_id"].as_str().expect("container_id");
    assert_ne!(new, old, "{status}");
    assert!(running_with(new, 1), "the new container does not run");
    assert_eq!(lanes.containers(), vec![new.to_string()], "{log}");
}

#[test]
fn a_second_signal_exits_at_once_even_with_work_in_flight() {
    let lanes = Lanes::new("second-signal");
    let (mut daemon, _, _) = recreate_in_flight(&lanes, "60s");
    daemon.signal("TERM");
    // The old container takes 60 s to stop: the first signal waits for it.
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(3)),
        None,
        "exited with the recreate in flight\n{}",
        daemon.log()
    );
    // 128 + the signal's number, as shells and supervisors read it:
    // 143 for a second SIGTERM (a second SIGINT gives 130).
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(15)),
        Some(143),
        "{}",
        daemon.log()
    );
    assert!(daemon.log().contains("second signal"), "{}", daemon.log());
}

#[test]
fn run_exits_1_when_the_lanes_directory_cannot_be_watched() {
    // A user namespace of the daemon's own, whose inotify instance limit is
    // 0: the directory reads fine, but no watch can be made. (The limit is
    // the namespace's: other tests' daemons are not touched.)
    let lanes = Lanes::new("unwatchable");
    let dir = lanes.dir();
    let mut child = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c"])
        .arg("echo 0 > /proc/sys/user/max_inotify_instances && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_lanectl"))
        .arg("--dir")
        .arg(&dir)
        .args(["--instance", &lanes.instance, "--podman", &host()])
        .args(["run", "--resync", "1h"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) is needed for this test");
    let exited = wait_for(Duration::from_secs(30), || child.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(exited.is_some(), "still running after 30 s\n{stderr}");
    assert!(
        !stderr.contains("max_inotify_instances"),
        "cannot set up the user namespace (user namespaces disabled?)\n{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("converging"),
        "failed before the watch\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("lanectl: cannot watch {}", dir.display())),
        "{stderr}"
    );
}

#[test]
fn apply_fails_for_a_named_lane_that_has_no_manifest() {
    let lanes = Lanes::new("apply-noname");
    lanes.write("a", &lanes.worker_lane(""));
    let run = lanes.lanectl(&["apply", "a", "ghost"]);
    assert_eq!(run.code, 1, "{run:?}");
    let line = |lane: &str| {
        run.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{lane}  ")))
            .unwrap_or_else(|| panic!("no line for {lane}: {run:?}"))
            .to_string()
    };
    assert!(line("ghost").contains("no manifest"), "{run:?}");
    assert!(
        line("a").contains(" ready "),
        "the other lane converges: {run:?}"
    );
    assert!(lanes.status("ghost").is_none());
    // Without the missing lane, the same apply succeeds.
    assert_eq!(lanes.lanectl(&["apply", "a"]).code, 0);
}

#[test]
fn apply_and_down_fail_naming_the_url_when_podman_is_unreachable() {
    const NOWHERE: &str = "unix:///nonexistent.sock";
    let lanes = Lanes::new("apply-nopodman");
    lanes.write("a", &lanes.worker_lane(""));
    let run = lanes.lanectl(&["--podman", NOWHERE, "apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(NOWHERE), "{run:?}");
    assert!(
        lanes.status("a").is_none(),
        "a status written without Podman"
    );

    // `down` cannot remove anything without Podman: exit 1, nothing touched.
    lanes.apply_ok();
    let id = lanes.container_id("a");
    let run = lanes.lanectl(&["--podman", NOWHERE, "down"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains(NOWHERE), "{run:?}");
    assert_eq!(lanes.containers(), vec![id.clone()]);
    assert_eq!(lanes.ready_id("a"), Some(id));
}

#[test]
fn apply_fails_when_the_lanes_dir_is_not_a_readable_directory() {
    let lanes = Lanes::new("apply-baddir");
    let file = lanes.file("work/not-a-dir", "a file\n");
    let run = lanes.lanectl_in(&file, &lanes.instance, &["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("{} is not a directory", file.display())),
        "{run:?}"
    );
    let missing = lanes.path("work/missing");
    let run = lanes.lanectl_in(&missing, &lanes.instance, &["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&missing.display().to_string()),
        "{run:?}"
    );
    assert!(lanes.containers().is_empty());
}

#[test]
fn down_exits_1_when_a_status_file_cannot_be_removed_and_removes_the_rest() {
    // As root, permissions stop nothing: the status file that cannot be
    // removed is a non-empty directory of that name.
    let lanes = Lanes::new("down-fails");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.apply_ok();
    lanes.file("lanes.d/x.status.yaml/inside", "keeps the directory\n");
    let run = lanes.lanectl(&["down", "a", "x"]);
    assert_eq!(run.code, 1, "{run:?}");
    let x = run
        .stdout
        .lines()
        .find(|l| l.starts_with("x  "))
        .unwrap_or_else(|| panic!("no line for x: {run:?}"));
    assert!(x.contains("failed"), "{run:?}");
    assert!(run.stdout.contains("a  removed container"), "{run:?}");
    assert!(lanes.containers().is_empty(), "a was not removed");
    assert!(lanes.status("a").is_none(), "a's status file is left");
}

#[test]
fn validate_and_status_need_no_podman() {
    let lanes = Lanes::new("no-podman");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.write("b", &lanes.worker_lane(""));
    lanes.apply_ok();
    for url in [None, Some("unix:///nonexistent.sock")] {
        let run = lanes.lanectl_without_podman(url, &["validate"]);
        assert_eq!(run.code, 0, "{url:?}: {run:?}");
        let run = lanes.lanectl_without_podman(url, &["status"]);
        assert_eq!(run.code, 0, "{url:?}: {run:?}");
        for lane in ["a", "b"] {
            assert!(
                run.stdout
                    .lines()
                    .any(|l| l.trim_start().starts_with(lane) && l.contains(" ready ")),
                "{url:?}: {run:?}"
            );
        }
        let run = lanes.lanectl_without_podman(url, &["status", "--json"]);
        assert_eq!(run.code, 0, "{url:?}: {run:?}");
        let all: Value = serde_json::from_str(&run.stdout).expect("status JSON");
        let names: Vec<&str> = all
            .as_array()
            .expect("an array")
            .iter()
            .map(|s| s["lane"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(names, ["a", "b"], "{url:?}: {run:?}");
    }
    // And validate still finds problems, with no Podman.
    lanes.write("c", "image: x\nimgae: y\n");
    let run = lanes.lanectl_without_podman(None, &["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("c.yaml:2:1: unknown field"), "{run:?}");
}

/// Podman's own record of what happened to an instance's containers since
/// `since`: `status name` per event.
fn container_events(instance: &str, since: SystemTime) -> Vec<String> {
    let since = humantime::format_rfc3339_seconds(since).to_string();
    podman(&[
        "events",
        "--since",
        &since,
        "--stream=false",
        "--filter",
        "type=container",
        "--filter",
        &format!("label=io.lanectl.instance={instance}"),
        "--format",
        "{{.Status}} {{.Name}}",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn a_resync_changes_nothing_when_nothing_changed() {
    let lanes = Lanes::new("resync-noop");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.write("b", &lanes.worker_lane(""));
    let daemon = Daemon::start(&lanes, &["--resync", "1s"]);
    let ids = wait_for(Duration::from_secs(60), || {
        Some((lanes.ready_id("a")?, lanes.ready_id("b")?))
    })
    .unwrap_or_else(|| panic!("not ready\n{}", daemon.log()));
    // Podman's events have a resolution of a second: start the watch on a
    // fresh second, after the creates.
    std::thread::sleep(Duration::from_millis(2100));
    let since = SystemTime::now();
    let from = daemon.log().len();
    let mtimes = (lanes.status_mtime("a"), lanes.status_mtime("b"));
    // Three resyncs at least, each of which looked at both lanes.
    wait_for(Duration::from_secs(30), || {
        let log = daemon.log_since(from);
        ["a", "b"]
            .iter()
            .all(|lane| {
                log.lines()
                    .filter(|l| {
                        l.contains(&format!("reconcile{{lane={lane} cause=\"resync\"}}"))
                            && l.contains("decided action=nothing")
                    })
                    .count()
                    >= 3
            })
            .then_some(())
    })
    .unwrap_or_else(|| panic!("fewer than 3 resyncs\n{}", daemon.log()));
    let log = daemon.log_since(from);
    assert_eq!(
        (lanes.ready_id("a"), lanes.ready_id("b")),
        (Some(ids.0.clone()), Some(ids.1.clone()))
    );
    assert_eq!(lanes.containers().len(), 2);
    assert_eq!(
        (lanes.status_mtime("a"), lanes.status_mtime("b")),
        mtimes,
        "a status file was rewritten\n{log}"
    );
    assert!(!log.contains("acted"), "a resync acted\n{log}");
    let changes: Vec<String> = container_events(&lanes.instance, since)
        .into_iter()
        .filter(|e| {
            let status = e.split(' ').next().unwrap_or("");
            [
                "create", "init", "start", "restart", "stop", "kill", "died", "remove", "cleanup",
                "pause", "unpause", "rename", "copy", "mount",
            ]
            .contains(&status)
        })
        .collect();
    assert!(changes.is_empty(), "Podman saw changes: {changes:?}\n{log}");
    // The witness works: a change made now is seen by the same query.
    podman(&["restart", "--time", "0", &ids.0]);
    assert!(
        container_events(&lanes.instance, since)
            .iter()
            .any(|e| e.starts_with("restart ") || e.starts_with("start ")),
        "podman events saw nothing"
    );
}

#[test]
fn jobs_1_in_the_daemon_creates_one_lane_at_a_time() {
    let lanes = Lanes::new("daemon-jobs");
    for lane in ["a", "b", "c"] {
        lanes.write(lane, &lanes.worker_lane(""));
    }
    let daemon = Daemon::start(&lanes, &["--jobs", "1", "--resync", "1h"]);
    let ids = wait_for(Duration::from_secs(90), || {
        ["a", "b", "c"]
            .iter()
            .map(|lane| lanes.ready_id(lane))
            .collect::<Option<Vec<_>>>()
    })
    .unwrap_or_else(|| panic!("not ready\n{}", daemon.log()));
    let time = |v: &Value| {
        let s = v.as_str().expect("a timestamp");
        humantime::parse_rfc3339(s).expect(s)
    };
    let mut spans: Vec<_> = ids
        .iter()
        .map(|id| {
            let c = inspect(id);
            (time(&c["Created"]), time(&c["State"]["StartedAt"]))
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "a create began before the previous lane had started: {spans:?}\n{}",
            daemon.log()
        );
    }
    // The log agrees: no lane created a container while another was
    // between its create and the end of its start. (Lanes decide, hash and
    // probe side by side: only changes are bounded by --jobs.)
    let mut acting: Option<String> = None;
    for line in daemon.log().lines() {
        let lane = line
            .split("lane=")
            .nth(1)
            .and_then(|rest| rest.split(['}', ' ']).next())
            .unwrap_or("");
        if line.contains("lanectl::exec: created") {
            assert!(acting.is_none(), "{lane} created during {acting:?}");
            acting = Some(lane.to_string());
        } else if line.contains("acted action=create") && acting.as_deref() == Some(lane) {
            acting = None;
        }
    }
}

#[test]
fn a_tracked_file_changed_under_the_daemon_recreates_its_lane() {
    let lanes = Lanes::new("daemon-tracked");
    lanes.file("work/tracked.txt", "version 1\n");
    let tracked = lanes.worker_lane("").replace(
        "ports:",
        "  - {source: ../work/tracked.txt, target: /run/tracked.txt, read_only: true, \
         track_content: true}\nports:",
    );
    lanes.write("a", &tracked);
    lanes.write("b", &lanes.worker_lane(""));
    let daemon = Daemon::start(&lanes, &["--resync", "1h"]);
    let (a, b) = wait_for(Duration::from_secs(60), || {
        Some((lanes.ready_id("a")?, lanes.ready_id("b")?))
    })
    .unwrap_or_else(|| panic!("not ready\n{}", daemon.log()));
    lanes.file("work/tracked.txt", "version 2\n");
    let a2 = wait_for(Duration::from_secs(30), || {
        lanes.ready_id("a").filter(|id| *id != a)
    })
    .unwrap_or_else(|| panic!("a not recreated\n{}", daemon.log()));
    assert_ne!(a2, a);
    assert_eq!(lanes.ready_id("b"), Some(b), "b untouched");
    assert_eq!(lanes.containers().len(), 2);
}

#[test]
fn a_symlink_swap_deploy_keeps_its_containers_when_the_defaults_name_the_instance() {
    let lanes = Lanes::new("swap");
    let release = |n: u32| lanes.path(&format!("releases/{n}"));
    for n in [1, 2] {
        let dir = release(n).join("lanes.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("_defaults.yaml"),
            format!("instance: {}\n", lanes.instance),
        )
        .unwrap();
        let lane = format!(
            "{}container_name: {}-a\n",
            lanes.worker_lane(""),
            lanes.instance
        );
        std::fs::write(dir.join("a.yaml"), lane).unwrap();
    }
    let current = lanes.path("current");
    let point_current_at = |n: u32| {
        // As deploy tools swap: a new link renamed over the old one.
        let next = lanes.path("current.next");
        std::os::unix::fs::symlink(release(n), &next).unwrap();
        std::fs::rename(&next, &current).unwrap();
    };
    // No --instance: what a deploy hook runs.
    let apply = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lanectl"))
            .arg("--dir")
            .arg(current.join("lanes.d"))
            .arg("apply")
            .env("CONTAINER_HOST", host())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    point_current_at(1);
    let (code, out) = apply();
    assert_eq!(code, Some(0), "{out}");
    let id = lanes.containers();
    assert_eq!(id.len(), 1, "{out}");

    point_current_at(2);
    let (code, out) = apply();
    assert_eq!(code, Some(0), "after the swap: {out}");
    assert!(out.contains("a  ready"), "{out}");
    assert_eq!(lanes.containers(), id, "the same container, still owned");
}

#[test]
fn down_with_a_mistyped_dir_removes_nothing() {
    let lanes = Lanes::new("down-typo");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.apply_ok();
    let ids = lanes.containers();
    let typo = lanes.path("lanes.dd");
    let run = lanes.lanectl_in(&typo, &lanes.instance, &["down"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("does not exist"), "{run:?}");
    assert_eq!(lanes.containers(), ids, "the instance's containers stay");
}

#[test]
fn run_exits_1_when_the_lanes_directory_does_not_exist_at_start() {
    let lanes = Lanes::new("run-missing-dir");
    let missing = lanes.path("nope.d");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lanectl"))
        .arg("--dir")
        .arg(&missing)
        .args(["--instance", &lanes.instance, "run"])
        .env("CONTAINER_HOST", host())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_for(Duration::from_secs(20), || child.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(exited.and_then(|s| s.code()), Some(1), "{stderr}");
    assert!(stderr.contains("does not exist"), "{stderr}");
}
