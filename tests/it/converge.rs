//! apply against a real Podman: what lands on the container, what changes
//! and what does not.

use std::time::Duration;

use crate::common::{Lanes, inspect, podman};

#[test]
fn every_manifest_field_lands_on_the_container() {
    let lanes = Lanes::new("fields");
    lanes.file("codex/full/config.toml", "model = \"x\"\n");
    lanes.file("codex/full/sub/auth.json", "{\"token\": \"t\"}\n");
    lanes.file("work/full/README", "hello\n");
    // A name of this test's own: tests run in parallel on one Podman.
    let name = format!("{}-full-named", lanes.instance);
    let extra = format!(
        "container_name: {name}\n\
                 workdir: /workspace\n\
                 env: {{LANE_NAME: full, RATIO: 1.50, FLAG: true}}\n\
                 labels: {{team: infra}}\n\
                 codex: {{source: ../codex/full, target: /root/.codex, fingerprint_env: INBOX_RUNTIME_CODEX_SHA}}\n\
                 resources: {{memory: 64m, cpus: 0.5, pids: 64}}\n"
    );
    let mut yaml = lanes.worker_lane(&extra);
    yaml = yaml.replace(
        "read_only: true}\n",
        "read_only: true}\n  - {source: ../work/full, target: /workspace, relabel: private}\n",
    );
    yaml = yaml.replace("stop_timeout: 2s", "stop_timeout: 3s");
    lanes.write("full", &yaml);
    lanes.write("plain", &lanes.worker_lane(""));

    let run = lanes.apply_ok();
    assert!(run.stdout.contains("create"), "{run:?}");
    let status = lanes.status("full").unwrap();
    assert_eq!(status["phase"], "ready");
    assert_eq!(status["container"], name.as_str());
    let c = inspect(&lanes.container_id("full"));
    let config = &c["Config"];
    assert_eq!(config["User"], "root");
    assert_eq!(config["WorkingDir"], "/workspace");
    assert_eq!(config["Entrypoint"], "/usr/local/bin/lane-worker");
    assert_eq!(config["Cmd"], serde_json::json!(["serve"]));
    assert_eq!(config["StopTimeout"], 3);
    let env: Vec<&str> = config["Env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for want in ["LANE_NAME=full", "RATIO=1.50", "FLAG=true"] {
        assert!(env.contains(&want), "{want} not in {env:?}");
    }
    let fingerprint = status["codex_fingerprint"].as_str().unwrap();
    assert!(env.contains(&format!("INBOX_RUNTIME_CODEX_SHA={fingerprint}").as_str()));
    let labels = &config["Labels"];
    assert_eq!(labels["team"], "infra");
    assert_eq!(labels["io.lanectl.managed-by"], "lanectl");
    assert_eq!(labels["io.lanectl.instance"], lanes.instance.as_str());
    assert_eq!(labels["io.lanectl.lane"], "full");
    assert_eq!(labels["io.lanectl.spec-hash"], status["spec_hash"]);
    assert_eq!(labels["io.lanectl.codex-fingerprint"], fingerprint);
    let mounts = c["Mounts"].as_array().unwrap();
    let mount = |dest: &str| {
        mounts
            .iter()
            .find(|m| m["Destination"] == dest)
            .cloned()
            .unwrap()
    };
    assert_eq!(mount("/usr/local/bin/lane-worker")["RW"], false);
    assert_eq!(mount("/workspace")["RW"], true);
    assert_eq!(
        mount("/workspace")["Source"],
        lanes.path("work/full").to_str().unwrap()
    );
    let host = &c["HostConfig"];
    assert_eq!(host["Memory"], 64 << 20);
    assert_eq!(host["CpuQuota"], 50_000);
    assert_eq!(host["PidsLimit"], 64);
    let binding = &c["NetworkSettings"]["Ports"]["31417/tcp"][0];
    assert_eq!(binding["HostIp"], "127.0.0.1");
    let endpoint = format!("http://127.0.0.1:{}", binding["HostPort"].as_str().unwrap());
    assert_eq!(status["endpoint"], endpoint.as_str());

    // The codex arrived, byte for byte, readable by the container's user.
    let report = lanes.worker_report("full");
    let files = report["codex_files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["config.toml", "sub/auth.json"]);
    assert_eq!(files[0]["sha256"], sha256_hex(b"model = \"x\"\n"));
    assert_eq!(lanes.status("plain").unwrap()["phase"], "ready");
}

#[test]
fn a_second_apply_changes_nothing() {
    let lanes = Lanes::new("noop");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.write("b", &lanes.worker_lane(""));
    lanes.apply_ok();
    let ids = lanes.containers();
    let (ma, mb) = (lanes.status_mtime("a"), lanes.status_mtime("b"));
    std::thread::sleep(Duration::from_millis(1100));
    let run = lanes.apply_ok();
    assert_eq!(run.stdout.matches("(nothing to do)").count(), 2, "{run:?}");
    assert_eq!(lanes.containers(), ids);
    assert_eq!((lanes.status_mtime("a"), lanes.status_mtime("b")), (ma, mb));
}

#[test]
fn jobs_bounds_how_many_lanes_change_containers_at_once() {
    // --jobs 1: each lane is created, started and probed before the next
    // lane's create begins (lanes with nothing to do are not bound by it).
    let lanes = Lanes::new("jobs");
    for lane in ["a", "b", "c"] {
        lanes.write(lane, &lanes.worker_lane(""));
    }
    let run = lanes.lanectl(&["--jobs", "1", "apply"]);
    assert_eq!(run.code, 0, "{run:?}");
    let time = |v: &serde_json::Value| {
        let s = v.as_str().expect("a timestamp");
        humantime::parse_rfc3339(s).expect(s)
    };
    let mut spans: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|lane| {
            let c = inspect(&lanes.container_id(lane));
            (time(&c["Created"]), time(&c["State"]["StartedAt"]))
        })
        .collect();
    spans.sort();
    for pair in spans.windows(2) {
        assert!(
            pair[1].0 >= pair[0].1,
            "a create began before the previous lane had started: {spans:?}"
        );
    }
}

#[test]
fn an_env_edit_recreates_only_that_lane() {
    let lanes = Lanes::new("env-edit");
    lanes.write("a", &lanes.worker_lane("env: {V: '1'}\n"));
    lanes.write("b", &lanes.worker_lane("env: {V: '1'}\n"));
    lanes.apply_ok();
    let (a1, b1) = (lanes.container_id("a"), lanes.container_id("b"));
    lanes.write("a", &lanes.worker_lane("env: {V: '2'}\n"));
    let plan = lanes.lanectl(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 2, "{plan:?}");
    assert!(
        plan.stdout.contains("a  recreate: spec changed"),
        "{plan:?}"
    );
    assert!(plan.stdout.contains("b  nothing"), "{plan:?}");
    lanes.apply_ok();
    assert_ne!(lanes.container_id("a"), a1);
    assert_eq!(lanes.container_id("b"), b1);
    assert_eq!(lanes.containers().len(), 2, "the old container is gone");
}

#[test]
fn a_codex_edit_recreates_the_lane_with_the_new_bytes_inside() {
    let lanes = Lanes::new("codex-edit");
    lanes.file("codex/a/config.toml", "v = 1\n");
    lanes.write(
        "a",
        &lanes.worker_lane("codex: {source: ../codex/a, target: /root/.codex}\n"),
    );
    lanes.apply_ok();
    let first = lanes.container_id("a");
    lanes.file("codex/a/config.toml", "v = 2\n");
    let plan = lanes.lanectl(&["plan"]);
    assert!(plan.stdout.contains("recreate: codex changed"), "{plan:?}");
    lanes.apply_ok();
    assert_ne!(lanes.container_id("a"), first);
    let report = lanes.worker_report("a");
    assert_eq!(report["codex_files"][0]["sha256"], sha256_hex(b"v = 2\n"));
}

#[test]
fn a_rebuilt_image_tag_recreates_the_lane() {
    let lanes = Lanes::new("image");
    let tag = format!("localhost/lane-worker:{}", lanes.instance);
    podman(&["tag", &crate::common::image(), &tag]);
    let yaml = lanes.worker_lane("").replace(&crate::common::image(), &tag);
    lanes.write("a", &yaml);
    lanes.apply_ok();
    let first = lanes.container_id("a");
    // A new image ID under the same tag.
    podman(&["commit", "--quiet", &first, &tag]);
    let plan = lanes.lanectl(&["plan"]);
    assert!(plan.stdout.contains("recreate: image rebuilt"), "{plan:?}");
    lanes.apply_ok();
    let second = lanes.container_id("a");
    assert_ne!(second, first);
    let new_image = podman(&["image", "inspect", "--format", "{{.Id}}", &tag]);
    assert_eq!(inspect(&second)["Image"], new_image.trim());
    let _ = crate::common::podman_output(&["rmi", "--force", &tag]);
}

#[test]
fn stopped_stops_and_running_starts_the_same_container() {
    let lanes = Lanes::new("state");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.apply_ok();
    let id = lanes.container_id("a");
    lanes.write("a", &lanes.worker_lane("state: stopped\n"));
    assert!(lanes.lanectl(&["plan"]).stdout.contains("a  stop"));
    lanes.apply_ok();
    let status = lanes.status("a").unwrap();
    assert_eq!(status["phase"], "stopped");
    assert!(status.get("endpoint").is_none(), "{status}");
    assert_eq!(status["container_id"], id.as_str());
    assert_eq!(inspect(&id)["State"]["Running"], false);

    lanes.write("a", &lanes.worker_lane(""));
    assert!(lanes.lanectl(&["plan"]).stdout.contains("a  start"));
    lanes.apply_ok();
    let status = lanes.status("a").unwrap();
    assert_eq!(status["phase"], "ready");
    assert_eq!(lanes.container_id("a"), id);
    assert_eq!(
        status["restarts"], 0,
        "a start after lanectl's own stop is no restart"
    );
}

#[test]
fn a_container_that_exited_on_its_own_is_restarted_and_counted() {
    let lanes = Lanes::new("restart");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.apply_ok();
    let id = lanes.container_id("a");
    podman(&["stop", "--time", "1", &id]);
    let run = lanes.apply_ok();
    assert!(run.stdout.contains("(start)"), "{run:?}");
    assert_eq!(lanes.container_id("a"), id);
    assert_eq!(lanes.status("a").unwrap()["restarts"], 1);
}

#[test]
fn a_deleted_manifest_removes_its_container_and_status_file() {
    let lanes = Lanes::new("delete");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.write("b", &lanes.worker_lane(""));
    lanes.apply_ok();
    let b = lanes.container_id("b");
    std::fs::remove_file(lanes.dir().join("a.yaml")).unwrap();
    let plan = lanes.lanectl(&["plan"]);
    assert!(
        plan.stdout.contains("a  remove: manifest deleted"),
        "{plan:?}"
    );
    lanes.apply_ok();
    assert_eq!(lanes.containers(), vec![b.clone()]);
    assert!(lanes.status("a").is_none());
    assert_eq!(lanes.container_id("b"), b);
}

#[test]
fn an_emptied_lanes_dir_prunes_only_with_allow_prune_all() {
    let lanes = Lanes::new("prune-all");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.apply_ok();
    std::fs::remove_file(lanes.dir().join("a.yaml")).unwrap();
    let run = lanes.lanectl(&["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--allow-prune-all"), "{run:?}");
    assert_eq!(lanes.containers().len(), 1);
    let run = lanes.lanectl(&["apply", "--allow-prune-all"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(lanes.containers().is_empty());
}

#[test]
fn a_missing_lanes_dir_is_an_error_and_prunes_nothing() {
    let lanes = Lanes::new("missing-dir");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.apply_ok();
    let gone = lanes.path("gone.d");
    let run = lanes.lanectl_in(&gone, &lanes.instance, &["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("gone.d"), "{run:?}");
    assert_eq!(lanes.containers().len(), 1);
}

#[test]
fn a_broken_manifest_leaves_the_running_container_alone() {
    let lanes = Lanes::new("broken");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.apply_ok();
    let id = lanes.container_id("a");
    let broken = lanes
        .worker_lane("")
        .replace("user: root\n", "user: root\nstate: [\n");
    lanes.write("a", &broken);
    let run = lanes.lanectl(&["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    let status = lanes.status("a").unwrap();
    assert_eq!(status["phase"], "invalid");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("{}:", lanes.dir().join("a.yaml").display())),
        "{message}"
    );
    assert_eq!(
        status["container_id"],
        id.as_str(),
        "the container is still reported"
    );
    assert_eq!(lanes.containers(), vec![id.clone()]);
    assert_eq!(inspect(&id)["State"]["Running"], true);
}

#[test]
fn two_instances_never_touch_each_others_containers() {
    let one = Lanes::new("inst-one");
    let two = Lanes::new("inst-two");
    // Names of this test's own (tests run in parallel on one Podman).
    let named = |l: &Lanes, lane: &str| {
        l.worker_lane(&format!("container_name: {}-{lane}-n\n", l.instance))
    };
    one.write("a", &named(&one, "a"));
    one.write("b", &named(&one, "b"));
    two.write("a", &named(&two, "a"));
    one.apply_ok();
    two.apply_ok();
    let theirs = two.containers();
    std::fs::remove_file(one.dir().join("a.yaml")).unwrap();
    one.apply_ok();
    let run = one.lanectl(&["down"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(one.containers().is_empty());
    assert!(one.status("b").is_none(), "down removes status files");
    assert_eq!(two.containers(), theirs);
    assert_eq!(two.status("a").unwrap()["phase"], "ready");
}

#[test]
fn the_codex_fingerprint_matches_the_go_runtimes_fixture() {
    let lanes = Lanes::new("fixture");
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/codex-fixture");
    copy_dir(&fixture, &lanes.path("codex/fixture"));
    let expected = std::fs::read_to_string(fixture.with_extension("fingerprint")).unwrap();
    lanes.write(
        "a",
        &lanes.worker_lane("codex: {source: ../codex/fixture, target: /root/.codex}\n"),
    );
    lanes.apply_ok();
    assert_eq!(
        lanes.status("a").unwrap()["codex_fingerprint"],
        expected.trim()
    );
    let report = lanes.worker_report("a");
    assert_eq!(
        report["codex_files"].as_array().unwrap().len(),
        7,
        "{report}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn a_named_user_can_read_its_codex_files() {
    use std::os::unix::fs::PermissionsExt;
    let lanes = Lanes::new("named-user");
    let secret = lanes.file("codex/a/auth.json", "{\"token\": \"t\"}\n");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let yaml = lanes.worker_lane(
        "codex: {source: ../codex/a, target: /srv/codex}\nenv: {LANE_CODEX_DIR: /srv/codex}\n",
    );
    lanes.write("a", &yaml.replace("user: root", "user: nobody"));
    lanes.apply_ok();
    let report = lanes.worker_report("a");
    let file = &report["codex_files"][0];
    assert_eq!(file["path"], "auth.json", "{report}");
    assert_eq!(
        file["sha256"],
        sha256_hex(b"{\"token\": \"t\"}\n"),
        "readable by nobody: {report}"
    );
}

#[test]
fn a_lane_declared_stopped_is_stopped_even_when_its_image_is_gone() {
    let lanes = Lanes::new("stop-no-image");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.apply_ok();
    let id = lanes.container_id("a");
    let yaml = lanes
        .worker_lane("state: stopped\n")
        .replace(&crate::common::image(), "localhost/lanectl-gone:1");
    lanes.write("a", &yaml);
    lanes.apply_ok();
    assert_eq!(lanes.status("a").unwrap()["phase"], "stopped");
    assert_eq!(inspect(&id)["State"]["Running"], false);
}

#[test]
fn a_renamed_manifest_moves_its_container_name_in_one_apply() {
    let lanes = Lanes::new("rename");
    let name = format!("{}-shared", lanes.instance);
    lanes.write(
        "b",
        &lanes.worker_lane(&format!("container_name: {name}\n")),
    );
    lanes.write("keep", &lanes.worker_lane(""));
    lanes.apply_ok();
    std::fs::rename(lanes.dir().join("b.yaml"), lanes.dir().join("c.yaml")).unwrap();
    let run = lanes.apply_ok();
    assert!(run.stdout.contains("c     ready"), "{run:?}");
    assert_eq!(lanes.status("c").unwrap()["container"], name.as_str());
    assert!(lanes.status("b").is_none());
    assert_eq!(lanes.containers().len(), 2);
}

#[test]
fn a_paused_container_is_unpaused_under_running_and_stopped_under_stopped() {
    let lanes = Lanes::new("paused");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.apply_ok();
    let id = lanes.container_id("a");
    podman(&["pause", &id]);
    let plan = lanes.lanectl(&["plan"]);
    assert_eq!(plan.stdout.trim(), "a  unpause", "{plan:?}");
    lanes.apply_ok();
    assert_eq!(inspect(&id)["State"]["Status"], "running");
    assert_eq!(lanes.ready_id("a"), Some(id.clone()), "the same container");
    assert_eq!(lanes.status("a").unwrap()["restarts"], 0, "not a restart");

    podman(&["pause", &id]);
    lanes.write("a", &lanes.worker_lane("state: stopped\n"));
    lanes.apply_ok();
    assert_eq!(inspect(&id)["State"]["Status"], "exited");
    assert_eq!(lanes.status("a").unwrap()["phase"], "stopped");
}
