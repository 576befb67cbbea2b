//! Failures that are one lane's own: the others converge regardless.

use crate::common::{Lanes, image, inspect, podman};

#[test]
fn a_missing_image_a_failing_probe_and_a_foreign_name_fail_only_their_own_lane() {
    let lanes = Lanes::new("isolation");
    let foreign_name = format!("{}-foreign", lanes.instance);
    let foreign = podman(&["create", "--name", &foreign_name, &image(), "/bin/sh"]);
    let foreign = foreign.trim().to_string();
    let _cleanup = RemoveOnDrop(foreign.clone());

    lanes.write("good", &lanes.worker_lane(""));
    lanes.write(
        "noimage",
        &lanes
            .worker_lane("")
            .replace(&image(), "localhost/lanectl-no-such-image:1"),
    );
    // 5 s, not 1: a worker that is slow to listen on a busy machine would
    // give "no answer in time" rather than the 404 this test reads.
    lanes.write("badprobe", &lanes.failing_probe_lane_after("5s", ""));
    lanes.write(
        "taken",
        &lanes.worker_lane(&format!("container_name: {foreign_name}\n")),
    );

    let run = lanes.lanectl(&["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(lanes.status("good").unwrap()["phase"], "ready");

    let noimage = lanes.status("noimage").unwrap();
    assert_eq!(noimage["phase"], "failed");
    let message = noimage["message"].as_str().unwrap();
    assert!(
        message.contains("localhost/lanectl-no-such-image:1") && message.contains("never pulls"),
        "{message}"
    );

    let badprobe = lanes.status("badprobe").unwrap();
    assert_eq!(badprobe["phase"], "failed");
    assert!(
        badprobe["message"]
            .as_str()
            .unwrap()
            .contains("answered 404"),
        "{badprobe}"
    );
    // A lane whose probe fails stays up: its container runs, and it is the
    // one the status names.
    let id = badprobe["container_id"]
        .as_str()
        .expect("a failed probe keeps its container_id");
    let c = inspect(id);
    assert_eq!(c["State"]["Running"], true, "{badprobe}\n{}", c["State"]);
    assert_eq!(
        c["Config"]["Labels"]["io.lanectl.lane"], "badprobe",
        "{badprobe}"
    );

    let taken = lanes.status("taken").unwrap();
    assert_eq!(taken["phase"], "failed");
    let message = taken["message"].as_str().unwrap();
    assert!(
        message.contains(&foreign_name) && message.contains("without a lanectl instance label"),
        "{message}"
    );
    // The foreign container is untouched.
    let still = podman(&[
        "ps",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &format!("name=^{foreign_name}$"),
    ]);
    assert_eq!(still.trim(), foreign);

    // And a plan says so too, with exit 1.
    let plan = lanes.lanectl(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 1, "{plan:?}");
    let line = plan
        .stdout
        .lines()
        .find(|l| l.starts_with("noimage "))
        .unwrap_or_default();
    assert!(line.contains(" failed: image"), "{plan:?}");
}

#[test]
fn a_probe_that_fails_is_retried_on_the_next_pass() {
    let lanes = Lanes::new("reprobe");
    lanes.write("a", &lanes.failing_probe_lane(""));
    assert_eq!(lanes.lanectl(&["apply"]).code, 1);
    let id = lanes.container_id("a");
    // Probe settings are not in the hash: fixing them reuses the container.
    lanes.write("a", &lanes.worker_lane(""));
    let run = lanes.apply_ok();
    assert!(run.stdout.contains("a  ready"), "{run:?}");
    assert_eq!(lanes.container_id("a"), id);
}

#[test]
fn an_answer_at_the_port_a_status_file_names_counts_only_for_that_container() {
    // apply probes each lane at the port its status file names while Podman
    // lists the containers; the answer counts only if the list shows the same
    // container on the same port. Here the status file points at a stranger.
    use std::io::{Read, Write};
    let lanes = Lanes::new("early-probe");
    lanes.write("a", &lanes.failing_probe_lane(""));
    assert_eq!(lanes.lanectl(&["apply"]).code, 1);
    let stranger = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = stranger.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in stranger.incoming().flatten() {
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nok\n");
        }
    });
    let path = lanes.dir().join("a.status.yaml");
    let real = lanes.status("a").unwrap()["endpoint"]
        .as_str()
        .unwrap()
        .to_string();
    let text = std::fs::read_to_string(&path).unwrap();
    let fake = text.replace(&real, &format!("http://127.0.0.1:{port}"));
    assert_ne!(text, fake);
    std::fs::write(&path, fake).unwrap();
    let run = lanes.lanectl(&["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    let status = lanes.status("a").unwrap();
    assert_eq!(status["phase"], "failed", "{status}");
    assert_eq!(status["endpoint"], real.as_str(), "{status}");
}

#[test]
fn a_codex_symlink_leading_out_of_the_directory_makes_the_lane_invalid() {
    let lanes = Lanes::new("codex-escape");
    lanes.file("codex/a/ok.txt", "ok\n");
    std::os::unix::fs::symlink("/etc/hostname", lanes.path("codex/a/stolen")).unwrap();
    lanes.write(
        "a",
        &lanes.worker_lane("codex: {source: ../codex/a, target: /root/.codex}\n"),
    );
    let run = lanes.lanectl(&["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    let status = lanes.status("a").unwrap();
    assert_eq!(status["phase"], "invalid");
    assert!(
        status["message"].as_str().unwrap().contains("stolen"),
        "{status}"
    );
    assert!(lanes.containers().is_empty(), "nothing was created");
}

struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        // Never panics (a Drop during a panic would abort the test binary).
        let _ = crate::common::podman_quietly(&["rm", "--force", &self.0]);
    }
}

#[test]
fn plan_shows_the_name_clash_apply_would_meet() {
    let lanes = Lanes::new("plan-clash");
    let foreign_name = format!("{}-foreign", lanes.instance);
    let foreign = podman(&["create", "--name", &foreign_name, &image(), "/bin/sh"]);
    let _cleanup = RemoveOnDrop(foreign.trim().to_string());
    lanes.write("ok", &lanes.worker_lane(""));
    lanes.write(
        "taken",
        &lanes.worker_lane(&format!("container_name: {foreign_name}\n")),
    );
    let run = lanes.lanectl(&["plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 1, "{run:?}");
    let taken = run
        .stdout
        .lines()
        .find(|l| l.starts_with("taken"))
        .unwrap_or_default();
    assert!(
        taken.contains("create would fail") && taken.contains("without a lanectl instance label"),
        "{run:?}"
    );
    assert!(run.stdout.contains("ok     create"), "{run:?}");
}

#[test]
fn a_lane_running_in_another_podman_keeps_its_status_and_gets_no_second_copy() {
    let lanes = Lanes::new("other-podman");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.apply_ok();
    let path = lanes.path("lanes.d/a.status.yaml");
    let before = std::fs::read(&path).unwrap();

    // A hook from a shell without CONTAINER_HOST asks a Podman of its own,
    // which has neither the lanes' containers nor their image.
    let own = crate::common::OwnPodman::new(&lanes);
    for args in [&["plan"][..], &["apply"][..]] {
        let run = lanes.lanectl_without_podman(Some(&own.url()), args);
        assert_eq!(run.code, 1, "{args:?}: {run:?}");
        assert!(
            run.stdout.contains("the lanes run in another Podman"),
            "{args:?}: {run:?}"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "{args:?}: the ready status is left as it is"
        );
    }
    // Even where the image is at hand, no second copy of the lane starts.
    own.load_test_image(&lanes);
    let run = lanes.lanectl_without_podman(Some(&own.url()), &["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(own.containers_of(&lanes.instance).is_empty(), "{run:?}");
    assert_eq!(std::fs::read(&path).unwrap(), before);

    // The lane's own Podman still converges it; and once its container is
    // really gone (its endpoint silent), the other Podman may make it.
    assert_eq!(lanes.lanectl(&["apply"]).code, 0);
    podman(&["rm", "-f", "-t", "0", &lanes.container_id("a")]);
    let run = lanes.lanectl_without_podman(Some(&own.url()), &["apply"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(own.containers_of(&lanes.instance).len(), 1, "{run:?}");
}
