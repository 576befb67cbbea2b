//! `lanectl wait` (SPEC.md "Explaining and waiting"): only a status for the
//! lane's current inputs counts; no Podman needed.

use std::time::{Duration, Instant};

use crate::common::{Daemon, Lanes};

/// `lanectl wait …` on the test's lanes, without any Podman.
fn wait(lanes: &Lanes, args: &[&str]) -> (crate::common::Run, Duration) {
    let clock = Instant::now();
    let mut all = vec!["wait"];
    all.extend_from_slice(args);
    let run = lanes.lanectl_offline(&all);
    (run, clock.elapsed())
}

#[test]
fn wait_returns_only_once_the_new_container_is_ready_never_on_the_old_status() {
    let lanes = Lanes::new("wait-new");
    lanes.write("a", &lanes.worker_lane("env: {V: '0'}\n"));
    lanes.apply_ok();
    let mut daemon = Daemon::start(&lanes, &[]);
    daemon.wait_watching(&lanes.dir(), Duration::from_secs(10));
    // Timeouts on the way to ready are generous: the shared test Podman was
    // seen to answer nothing for up to 30 s while other tests worked.
    let (run, _) = wait(&lanes, &["--timeout", "90s"]);
    assert_eq!(run.code, 0, "{run:?}\n{:?}", lanes.status("a"));

    for v in 1..=5 {
        let old = lanes.ready_id("a").unwrap();
        // Written, and waited for at once: the old status (ready, for the
        // old manifest) must never be taken.
        lanes.write("a", &lanes.worker_lane(&format!("env: {{V: '{v}'}}\n")));
        let (run, _) = wait(&lanes, &["a", "--timeout", "90s"]);
        assert_eq!(run.code, 0, "{run:?}\n{}", daemon.log());
        assert_eq!(run.stdout.trim(), "a  ready", "{run:?}");
        let st = lanes.status("a").unwrap();
        assert_eq!(st["phase"], "ready", "{st}");
        let id = st["container_id"].as_str().unwrap();
        assert_ne!(id, old, "wait returned on the old container");
        let c = crate::common::inspect(id);
        let env = c["Config"]["Env"].to_string();
        assert!(env.contains(&format!("V={v}")), "{env}");
    }
    daemon.terminate(Duration::from_secs(10));
}

#[test]
fn wait_times_out_naming_the_lane_fails_at_once_when_invalid_and_waits_for_deleted() {
    let lanes = Lanes::new("wait-fail");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.write("slow", &lanes.failing_probe_lane(""));
    lanes.lanectl(&["apply"]);

    // A lane that never gets ready: 1 at the timeout, with its phase and why.
    let (run, took) = wait(&lanes, &["--timeout", "1s"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(
        run.stderr.contains("timed out after 1s waiting for ready"),
        "{run:?}"
    );
    assert!(run.stderr.contains("slow  failed: probe"), "{run:?}");
    assert!(!run.stderr.contains("a  "), "a is ready: {run:?}");
    // The ready one alone is there at once.
    let (run, _) = wait(&lanes, &["a", "--timeout", "5s"]);
    assert_eq!(run.code, 0, "{run:?}");

    // An edit nobody applies: the ready status is for earlier inputs.
    lanes.write("a", &lanes.worker_lane("env: {V: 'x'}\n"));
    let (run, _) = wait(&lanes, &["a", "--timeout", "1s"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("for earlier inputs"), "{run:?}");

    // Invalid for its current manifest: 1 at once, whatever the timeout.
    lanes.write("a", "imgae: typo\n");
    let (run, took) = wait(&lanes, &["a", "--timeout", "60s"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        run.stderr.contains("a  invalid: ") && run.stderr.contains("imgae"),
        "{run:?}"
    );
    // A named lane without a manifest: 1 at once.
    let (run, _) = wait(&lanes, &["nope"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("nope  no manifest"), "{run:?}");
    // A usage error: 64.
    assert_eq!(wait(&lanes, &["--for", "gone"]).0.code, 64);

    // --for deleted: until the removed manifest's status file is gone.
    std::fs::remove_file(lanes.dir().join("slow.yaml")).unwrap();
    let (run, _) = wait(&lanes, &["slow", "--for", "deleted", "--timeout", "1s"]);
    assert_eq!(run.code, 1, "the status file is still there: {run:?}");
    let mut daemon = Daemon::start(&lanes, &[]);
    daemon.wait_watching(&lanes.dir(), Duration::from_secs(10));
    let (run, _) = wait(&lanes, &["slow", "--for", "deleted", "--timeout", "90s"]);
    assert_eq!(run.code, 0, "{run:?}\n{}", daemon.log());
    assert!(run.stdout.contains("slow  deleted"), "{run:?}");
    assert!(lanes.status("slow").is_none());
    daemon.terminate(Duration::from_secs(10));
}
