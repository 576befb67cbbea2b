//! `host:` selectors: one lanes directory for a fleet, each host's lanectl
//! (`--host`) running only its own lanes; a lane that moved to another host
//! is removed here as for a deleted manifest, under the same prune guard.

use std::time::Duration;

use crate::common::{Daemon, Lanes, wait_for};

#[test]
fn each_host_runs_only_its_lanes_and_a_lane_that_moves_away_is_removed_here() {
    let lanes = Lanes::new("hosts");
    lanes.write("a", &lanes.worker_lane("host: web-1\n"));
    lanes.write("b", &lanes.worker_lane("host: web-2\n"));
    lanes.write("c", &lanes.worker_lane(""));
    lanes.write("d", &lanes.worker_lane("host: web-1\nstate: stopped\n"));
    let on = |host: &str, args: &[&str]| {
        let mut all = vec!["--host", host];
        all.extend_from_slice(args);
        lanes.lanectl(&all)
    };

    // validate and plan say which lanes are skipped, and why.
    let validate = on("web-1", &["validate"]);
    assert_eq!(validate.code, 0, "{validate:?}");
    assert!(
        validate
            .stderr
            .contains("b.yaml: skipped: lane b runs on host web-2, this is web-1"),
        "{validate:?}"
    );
    assert!(
        validate
            .stderr
            .contains("3 lane(s) valid, 1 skipped (other hosts)"),
        "{validate:?}"
    );
    // Checking as another host: that host's mount sources are not looked
    // for here, while this host's are.
    let mount = "mounts: [{source: /srv/only-on-web-9, target: /d}]\n";
    lanes.write("m", &format!("image: i\nhost: web-9\n{mount}"));
    let as_web9 = lanes.lanectl_offline(&["--host", "web-9", "validate"]);
    assert_eq!(as_web9.code, 0, "{as_web9:?}");
    lanes.write("m", &format!("image: i\n{mount}"));
    let here = lanes.lanectl_offline(&["validate"]);
    assert_eq!(here.code, 1, "{here:?}");
    assert!(
        here.stdout
            .contains("mount source /srv/only-on-web-9: does not exist"),
        "{here:?}"
    );
    std::fs::remove_file(lanes.dir().join("m.yaml")).unwrap();
    let plan = on("web-1", &["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(plan.stdout.contains("a  create"), "{plan:?}");
    assert!(
        plan.stdout.contains("b  skip: runs on host web-2"),
        "{plan:?}"
    );
    let json = on("web-1", &["plan", "--json"]);
    let planned: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(planned[1]["lane"], "b", "{json:?}");
    assert_eq!(planned[1]["action"], "skip", "{json:?}");
    assert_eq!(planned[1]["reason"], "runs on host web-2", "{json:?}");

    // Only web-1's lanes (and the lanes for every host) run here.
    let apply = on("web-1", &["apply"]);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert!(
        apply.stdout.contains("b  skipped: runs on host web-2"),
        "{apply:?}"
    );
    assert!(lanes.ready_id("a").is_some() && lanes.ready_id("c").is_some());
    assert!(
        lanes.status("b").is_none(),
        "no status for another host's lane"
    );
    assert_eq!(lanes.containers().len(), 2);
    let listed = |host: &str| {
        let status = on(host, &["status", "--json"]);
        let lanes: Vec<serde_json::Value> = serde_json::from_str(&status.stdout).unwrap();
        lanes
            .iter()
            .map(|l| l["lane"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    // d is web-1's too (stopped); b is not listed, though it has a manifest.
    assert_eq!(listed("web-1"), ["a", "c", "d"]);
    // On web-2, a is not listed though its status file lies here: it is
    // web-1's lane.
    assert_eq!(listed("web-2"), ["b", "c"]);
    let named = on("web-1", &["status", "b"]);
    assert_eq!(named.code, 1, "{named:?}");
    assert!(
        named
            .stderr
            .contains("lane b runs on host web-2, not on web-1"),
        "{named:?}"
    );

    // Without --host, the machine's hostname decides.
    let hostname = String::from_utf8(
        std::process::Command::new("hostname")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    lanes.write(
        "h",
        &format!("image: i\nhost: {}\nstate: stopped\n", hostname.trim()),
    );
    let mine = lanes.lanectl_offline(&["validate"]);
    assert!(mine.stderr.contains("a.yaml: skipped"), "{mine:?}");
    assert!(!mine.stderr.contains("h.yaml: skipped"), "{mine:?}");
    std::fs::remove_file(lanes.dir().join("h.yaml")).unwrap();

    // Hostnames compare without case.
    let again = on("WEB-1", &["plan", "--detailed-exitcode"]);
    assert_eq!(again.code, 0, "{again:?}");
    // Naming another host's lane is an error, as naming one without a
    // manifest is.
    let named = on("web-1", &["plan", "b"]);
    assert_eq!(named.code, 1, "{named:?}");
    let named = on("web-1", &["apply", "b"]);
    assert_eq!(named.code, 1, "{named:?}");
    assert!(
        named.stdout.contains("b  skipped: runs on host web-2"),
        "{named:?}"
    );

    // This host's name changed (or --host is mistyped): no lane names it,
    // so the lanes pinned to the old name keep their containers, and the
    // lanes for every host converge.
    let a = lanes.container_id("a");
    for args in [&["plan"][..], &["apply"][..]] {
        let renamed = on("web-1.example.com", args);
        assert_eq!(renamed.code, 1, "{renamed:?}");
        assert!(
            renamed.stdout.contains(
                "a  failed: not removed: it runs on host web-1, but no lane names this host \
                 (web-1.example.com): if this host's name changed, pass --host with the name \
                 the manifests use; --allow-prune-all removes it"
            ),
            "{renamed:?}"
        );
    }
    assert!(lanes.containers().contains(&a));
    assert!(lanes.ready_id("c").is_some());

    // Lane a moves to web-2 (d still names web-1): on web-1 its container
    // and status file go.
    lanes.write("a", &lanes.worker_lane("host: web-2\n"));
    let plan = on("web-1", &["plan"]);
    assert!(
        plan.stdout.contains("a  remove: runs on host web-2"),
        "{plan:?}"
    );
    let apply = on("web-1", &["apply"]);
    assert_eq!(apply.code, 0, "{apply:?}");
    assert!(
        apply.stdout.contains("a  removed: runs on host web-2"),
        "{apply:?}"
    );
    assert!(!lanes.containers().contains(&a));
    assert!(lanes.status("a").is_none());

    // Every lane moved away: an empty set for web-1, which the prune guard
    // refuses to act on (a checkout that lost its host: lines must not wipe
    // a host).
    lanes.write("c", &lanes.worker_lane("host: web-3\n"));
    lanes.write("d", &lanes.worker_lane("host: web-3\nstate: stopped\n"));
    let refused = on("web-1", &["apply"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(refused.stderr.contains("--allow-prune-all"), "{refused:?}");
    assert_eq!(lanes.containers().len(), 1, "c is kept");
    let pruned = on("web-1", &["apply", "--allow-prune-all"]);
    assert_eq!(pruned.code, 0, "{pruned:?}");
    assert!(lanes.containers().is_empty());
}

#[test]
fn the_daemon_removes_a_lane_whose_manifest_moves_it_to_another_host() {
    const LIMIT: Duration = Duration::from_secs(20);
    let lanes = Lanes::new("hosts-daemon");
    lanes.write("a", &lanes.worker_lane("host: web-1\n"));
    lanes.write("b", &lanes.worker_lane(""));
    // Another lane names web-1: a lane moving away is no sign of a changed
    // hostname.
    lanes.write("d", &lanes.worker_lane("host: web-1\nstate: stopped\n"));
    let daemon = Daemon::start(&lanes, &["--host", "web-1"]);
    wait_for(LIMIT, || lanes.ready_id("a"))
        .unwrap_or_else(|| panic!("a not ready\n{}", daemon.log()));
    let b = wait_for(LIMIT, || lanes.ready_id("b"))
        .unwrap_or_else(|| panic!("b not ready\n{}", daemon.log()));
    daemon.wait_watching(&lanes.dir(), LIMIT);

    lanes.write("a", &lanes.worker_lane("host: web-2\n"));
    wait_for(LIMIT, || (lanes.containers() == [b.clone()]).then_some(()))
        .unwrap_or_else(|| panic!("a's container not removed\n{}", daemon.log()));
    wait_for(LIMIT, || lanes.status("a").is_none().then_some(()))
        .unwrap_or_else(|| panic!("a's status file not removed\n{}", daemon.log()));
    assert_eq!(lanes.ready_id("b").as_deref(), Some(b.as_str()));
}
