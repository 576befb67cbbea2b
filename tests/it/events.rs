//! The daemon's Podman-event source, one test per event that only that
//! source can pass: the harness runs the daemon with a resync of an hour, so
//! a change made through Podman (`rm -f`, `stop`, `kill`, a crash) is seen
//! through its event or not at all. The tests also find the event's cause
//! (`cause="container exited"`, `removed`, `stopped` or `killed`, given only
//! by the events source) or its
//! effect (`probe interrupted`) in the daemon's log. A Podman restart under
//! the daemon is in hardening.rs.
//!
//! Mutation check: with `sources::events::run` returning at once, every test
//! here fails.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use crate::common::{Daemon, Lanes, inspect, podman, wait_for};

/// Generous: the machine running the tests may be busy. Without the events
/// source the awaited thing would take an hour (the resync), so the limit
/// tells nothing about speed, only about which source acted.
const LIMIT: Duration = Duration::from_secs(30);

/// The log's mark of a reconcile that a Podman event of lane `lane` caused
/// (its container exited, was removed, stopped or killed).
fn caused_by_event(lane: &str) -> String {
    format!("reconcile{{lane={lane} cause=\"container ")
}

/// One worker lane `a`, the daemon on it, and `a`'s ready container.
fn ready_lane(test: &str) -> (Lanes, Daemon, String) {
    let lanes = Lanes::new(test);
    lanes.write("a", &lanes.worker_lane(""));
    let daemon = Daemon::start(&lanes, &[]);
    let id = wait_for(LIMIT, || lanes.ready_id("a"))
        .unwrap_or_else(|| panic!("a not ready: {:?}\n{}", lanes.status("a"), daemon.log()));
    // The container's own start event has the lane looked at once more
    // ("podman event"): wait for that look to end, so that the next run is
    // the one the test's change causes (and logs that change's cause: a
    // rerun keeps the cause of its earliest trigger).
    let start_seen = "reconcile{lane=a cause=\"podman event\"}: lanectl::daemon: reconciled";
    wait_for(LIMIT, || daemon.log().contains(start_seen).then_some(()))
        .unwrap_or_else(|| panic!("a's start event not seen\n{}", daemon.log()));
    (lanes, daemon, id)
}

#[test]
fn a_container_removed_with_podman_rm_comes_back() {
    let (lanes, daemon, old) = ready_lane("ev-rm");
    let mark = daemon.log().len();
    podman(&["rm", "--force", "--time", "0", &old]);
    let new = wait_for(LIMIT, || lanes.ready_id("a").filter(|id| *id != old))
        .unwrap_or_else(|| panic!("not recreated: {:?}\n{}", lanes.status("a"), daemon.log()));
    assert_eq!(lanes.containers(), [new], "one container, the new one");
    let log = daemon.log_since(mark);
    assert!(log.contains(&caused_by_event("a")), "{log}");
}

/// A `podman stop` or `podman kill` is an exit lanectl did not cause: the
/// same container is started again (after the 1 s of the first restart's
/// back-off) and the restart is counted.
fn exit_is_restarted(test: &str, exit: &[&str]) {
    let (lanes, daemon, id) = ready_lane(test);
    let mark = daemon.log().len();
    let mut args = exit.to_vec();
    args.push(&id);
    podman(&args);
    wait_for(LIMIT, || {
        let status = lanes.status("a")?;
        (status["restarts"] == 1
            && lanes.ready_id("a")? == id
            && inspect(&id)["State"]["Running"] == true)
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "not started again, or not counted: {:?}\n{}",
            lanes.status("a"),
            daemon.log()
        )
    });
    assert_eq!(lanes.containers(), [id], "restarted, not recreated");
    let log = daemon.log_since(mark);
    assert!(log.contains(&caused_by_event("a")), "{log}");
    assert!(log.contains("acted action=start"), "{log}");
}

#[test]
fn a_container_stopped_with_podman_stop_is_started_again_and_counted() {
    exit_is_restarted("ev-stop", &["stop", "--time", "1"]);
}

#[test]
fn a_container_killed_with_podman_kill_is_started_again_and_counted() {
    exit_is_restarted("ev-kill", &["kill", "--signal", "KILL"]);
}

#[test]
fn a_crash_looping_container_is_restarted_with_back_off() {
    let lanes = Lanes::new("ev-crashloop");
    // Up for 2 s, then exit 3: the start itself succeeds (the lane is
    // `ready`, with no probe), so only the exit's event can bring the lane
    // back (a container already dead when inspected after its start would be
    // retried by the failure back-off instead, with no event needed).
    lanes.write(
        "a",
        &format!(
            "image: {image}\n\
             entrypoint: [/bin/sh]\n\
             command: ['-c', 'sleep 2; exit 3']\n\
             stop_timeout: 1s\n\
             container_name: {instance}-a\n",
            image = crate::common::image(),
            instance = lanes.instance,
        ),
    );
    let daemon = Daemon::start(&lanes, &[]);
    // Restart n -> the time it was announced for, read by polling the status:
    // announcement n stays 2^(n-1) s. The first one (1 s) may slip past a
    // test thread stalled on a busy machine, so restarts 2 to 4 are required.
    let mut announced: BTreeMap<u64, SystemTime> = BTreeMap::new();
    let mut order = Vec::new();
    wait_for(Duration::from_secs(120), || {
        let status = lanes.status("a")?;
        let message = status["message"].as_str()?;
        let (_, rest) = message.split_once("; restart ")?;
        let (n, at) = rest.split_once(" at ")?;
        let n: u64 = n.parse().ok()?;
        if !order.contains(&n) {
            assert!(message.starts_with("exited with code 3"), "{message}");
            assert_eq!(status["phase"], "failed", "{status:?}");
            assert_eq!(status["restarts"], n - 1, "restarts so far: {status:?}");
            let at = humantime::parse_rfc3339(at).expect("an RFC 3339 time");
            announced.insert(n, at);
            order.push(n);
        }
        announced.contains_key(&4).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "back-off not seen: announced {announced:?}; {:?}\n{}",
            lanes.status("a"),
            daemon.log()
        )
    });
    println!("restarts announced: {announced:?}");
    assert!(order.is_sorted(), "announced in order: {order:?}");
    for n in 2..=4 {
        assert!(
            announced.contains_key(&n),
            "restart {n} never announced: {order:?}"
        );
    }
    // Restart n+1 is due 2^n s after the exit that followed restart n, and
    // that exit comes 2 s after the start: the announced times lie at least
    // 2^n + 2 s apart; 1 s of that is left as slack for times in whole
    // seconds. Without the back-off the gaps would stay near 2 s. Lower
    // bounds only: a busy machine adds delay, never takes it away.
    for (n, at) in &announced {
        let Some(next) = announced.get(&(n + 1)) else {
            continue;
        };
        let gap = next
            .duration_since(*at)
            .unwrap_or_else(|_| panic!("restart {} due before {n}: {announced:?}", n + 1));
        let least = Duration::from_secs((1 << n) + 1);
        assert!(
            gap >= least,
            "restart {} due {gap:?} after restart {n}, want at least {least:?}: {announced:?}",
            n + 1
        );
    }
    assert_eq!(lanes.containers().len(), 1, "restarted, never recreated");
    assert!(
        daemon.log().contains(&caused_by_event("a")),
        "{}",
        daemon.log()
    );
}

#[test]
fn a_probe_is_interrupted_by_podman_rm() {
    const PROBE_TIMEOUT: u64 = 60;
    let lanes = Lanes::new("ev-probe-rm");
    // The probe's path answers 404: it would fail only after 60 s.
    lanes.write(
        "a",
        &lanes.worker_lane("").replace(
            "path: /healthz, timeout: 10s",
            &format!("path: /nope, timeout: {PROBE_TIMEOUT}s"),
        ),
    );
    let daemon = Daemon::start(&lanes, &[]);
    // `probing` is written just before the probe starts.
    let old = wait_for(LIMIT, || {
        let status = lanes.status("a")?;
        (status["phase"] == "pending" && status["message"] == "probing")
            .then(|| status["container_id"].as_str().map(str::to_string))?
    })
    .unwrap_or_else(|| panic!("a not probing: {:?}\n{}", lanes.status("a"), daemon.log()));
    let mark = daemon.log().len();
    let removed = Instant::now();
    podman(&["rm", "--force", "--time", "0", &old]);
    // Without the interrupt the recreate would wait for the probe's 60 s.
    let within = Duration::from_secs(PROBE_TIMEOUT / 3);
    let new = wait_for(within, || {
        lanes.containers().into_iter().find(|id| *id != old)
    })
    .unwrap_or_else(|| {
        panic!(
            "no new container {within:?} after the removal (the probe's timeout is \
             {PROBE_TIMEOUT} s): {:?}\n{}",
            lanes.status("a"),
            daemon.log()
        )
    });
    println!(
        "probe interrupted: new container {:?} after the removal",
        removed.elapsed()
    );
    assert_ne!(new, old);
    // Only a file change or a Podman event interrupts a probe; no file
    // changed. (The rerun's logged cause may be the container's earlier
    // start event, which came during the probe.)
    let log = daemon.log_since(mark);
    assert!(log.contains("probe interrupted"), "{log}");
}

#[test]
fn a_lane_that_dies_before_its_probe_answers_counts_its_restarts() {
    let lanes = Lanes::new("ev-dies-early");
    // A published port and a probe, but the container exits before it
    // ever answers: each start after that exit is a restart.
    lanes.write(
        "a",
        &format!(
            "image: {image}\n\
             entrypoint: [/bin/sh]\n\
             command: ['-c', 'sleep 1; exit 3']\n\
             ports: [{{container: 31417}}]\n\
             probe: {{path: /healthz, timeout: 30s, interval: 50ms}}\n\
             stop_timeout: 1s\n\
             container_name: {instance}-a\n",
            image = crate::common::image(),
            instance = lanes.instance,
        ),
    );
    let daemon = Daemon::start(&lanes, &[]);
    let mut seen = Vec::new();
    wait_for(Duration::from_secs(90), || {
        let status = lanes.status("a")?;
        let message = status["message"].as_str()?;
        let (_, rest) = message.split_once("; restart ")?;
        let n: u64 = rest.split_once(" at ")?.0.parse().ok()?;
        if !seen.contains(&n) {
            assert_eq!(status["restarts"], n - 1, "restarts so far: {status:?}");
            seen.push(n);
        }
        (n >= 3).then_some(())
    })
    .unwrap_or_else(|| panic!("no restart 3 announced: {seen:?}\n{}", daemon.log()));
}
