//! `apply --progress`: JSON events, plain lines without control characters,
//! quiet, and colour only when asked for.

use crate::common::Lanes;

#[test]
fn progress_json_events_describe_a_cold_apply() {
    let lanes = Lanes::new("progress-json");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.write("bad", "imgae: x\n");
    let run = lanes.lanectl(&["apply", "--progress", "json"]);
    assert_eq!(run.code, 1, "bad is invalid: {run:?}");
    let events: Vec<serde_json::Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(
        events[0],
        serde_json::json!({"format": "lanectl-progress", "version": 1})
    );
    let steps = |lane: &str| -> Vec<String> {
        events[1..]
            .iter()
            .filter(|e| e["lane"] == lane)
            .map(|e| e["step"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(steps("a"), ["create", "probe", "done"], "{events:?}");
    assert_eq!(steps("bad"), ["done"], "{events:?}");
    let done = |lane: &str| {
        events
            .iter()
            .find(|e| e["lane"] == lane && e["step"] == "done")
            .unwrap()
            .clone()
    };
    assert_eq!(done("a")["result"], "ready");
    assert_eq!(done("bad")["result"], "invalid");
    let elapsed: Vec<f64> = events[1..]
        .iter()
        .filter(|e| e["lane"] == "a")
        .map(|e| e["elapsed"].as_f64().unwrap())
        .collect();
    assert!(elapsed.windows(2).all(|w| w[0] <= w[1]), "{elapsed:?}");
}

#[test]
fn progress_plain_has_no_control_characters_quiet_says_only_trouble_and_colour_is_asked_for() {
    let lanes = Lanes::new("progress-plain");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.write("bad", "imgae: x\n");
    let run = lanes.lanectl(&["apply", "--progress", "plain", "--color", "always"]);
    assert!(
        !run.stdout.chars().any(|c| c.is_control() && c != '\n'),
        "{:?}",
        run.stdout
    );
    assert!(run.stdout.contains("  a  create\n"), "{run:?}");
    assert!(run.stdout.contains("  a  done: ready\n"), "{run:?}");

    let quiet = lanes.lanectl(&["apply", "-q"]);
    assert_eq!(quiet.code, 1, "{quiet:?}");
    assert!(quiet.stdout.starts_with("bad  invalid: "), "{quiet:?}");
    assert_eq!(quiet.stdout.lines().count(), 1, "{quiet:?}");

    // Not a terminal: no colour unless asked, and never under NO_COLOR's auto.
    let plain = lanes.lanectl(&["apply"]);
    assert!(!plain.stdout.contains('\u{1b}'), "{plain:?}");
    let always = lanes.lanectl(&["apply", "--color", "always"]);
    assert!(
        always.stdout.contains("\u{1b}[32mready\u{1b}[0m"),
        "{always:?}"
    );
}
