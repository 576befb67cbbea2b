//! What the files alone show about codex and `track_content` sources: a
//! symlink leading out of the codex directory, a symlink to a directory, a
//! FIFO, a codex target of `/`, and (as root) a source that others can write or
//! that another user owns, unless `--allow-insecure-permissions`.
//! `validate` finds each, with its path, before a deploy; `apply` marks the
//! lane `invalid` and creates nothing for it.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::PathBuf;

use crate::common::{Lanes, free_port, image, wait_for};

/// Writes five lanes, each with one kind of problem; every manifest starts
/// with `image: <image>`. Returns each lane with the paths its problems name
/// (the manifest itself for a problem of the manifest's own text).
fn bad_sources(lanes: &Lanes, image: &str) -> Vec<(&'static str, Vec<PathBuf>)> {
    let codex = |lane: &str, target: &str| {
        format!("image: {image}\ncodex: {{source: ../codex/{lane}, target: {target}}}\n")
    };

    lanes.file("codex/escape/ok.txt", "ok\n");
    let stolen = lanes.path("codex/escape/stolen");
    symlink("/etc/hostname", &stolen).expect("symlink");
    lanes.write("escape", &codex("escape", "/root/.codex"));

    // Every problem of a tree is named, not only the first.
    let pipes = vec![
        lanes.fifo("codex/fifo/a.pipe"),
        lanes.fifo("codex/fifo/sub/b.pipe"),
    ];
    lanes.file("codex/fifo/ok.txt", "ok\n");
    lanes.write("fifo", &codex("fifo", "/root/.codex"));

    lanes.file("codex/dirlink/sub/x", "x\n");
    let dirlink = lanes.path("codex/dirlink/sub-link");
    symlink("sub", &dirlink).expect("symlink");
    lanes.write("dirlink", &codex("dirlink", "/root/.codex"));

    lanes.file("codex/rootdir/x", "x\n");
    lanes.write("rootdir", &codex("rootdir", "/"));

    lanes.file("work/tracked/ok.txt", "ok\n");
    let pipe = lanes.fifo("work/tracked/pipe");
    lanes.write(
        "tracked",
        &format!(
            "image: {image}\nmounts: [{{source: ../work/tracked, target: /data, track_content: true}}]\n"
        ),
    );

    vec![
        ("escape", vec![stolen]),
        ("fifo", pipes),
        ("dirlink", vec![dirlink]),
        ("rootdir", vec![lanes.dir().join("rootdir.yaml")]),
        ("tracked", vec![pipe]),
    ]
}

#[test]
fn validate_names_every_bad_codex_or_tracked_entry_with_its_path() {
    let lanes = Lanes::new("validate-sources");
    let expected = bad_sources(&lanes, "x");
    let run = lanes.lanectl_offline(&["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    for (lane, paths) in &expected {
        for path in paths {
            let line = run
                .stdout
                .lines()
                .find(|l| l.starts_with(&format!("{}:", path.display())));
            assert!(
                line.is_some(),
                "{lane}: {} not named: {run:?}",
                path.display()
            );
        }
    }
    assert!(
        run.stdout.contains("codex target"),
        "rootdir's problem says what is wrong: {run:?}"
    );
    // One line per problem, nothing else.
    assert_eq!(run.stdout.lines().count(), 6, "{run:?}");
}

#[test]
fn apply_marks_each_lane_with_a_bad_codex_or_tracked_entry_invalid() {
    let lanes = Lanes::new("apply-sources");
    let expected = bad_sources(&lanes, &image());
    let run = lanes.lanectl(&["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    for (lane, paths) in &expected {
        let status = lanes.status(lane).expect("status file");
        assert_eq!(status["phase"], "invalid", "{lane}: {status}");
        let message = status["message"].as_str().expect("message");
        for path in paths {
            assert!(
                message.contains(&path.display().to_string()),
                "{lane}: {} not named: {message}",
                path.display()
            );
        }
    }
    assert!(lanes.containers().is_empty(), "nothing was created");
}

/// Fails the test unless it runs as root: the permission rule applies only
/// to root, and only root can give a file to another user.
fn needs_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root: the permission rule applies only to root (CI runs as root)"
    );
}

/// The line of `validate`'s output about `path`, if any.
fn line_about<'a>(stdout: &'a str, path: &std::path::Path) -> Option<&'a str> {
    let head = format!("{}: ", path.display());
    stdout.lines().find(|l| l.starts_with(&head))
}

#[test]
fn as_root_track_content_sources_others_can_write_are_refused_unless_allowed() {
    needs_root();
    let lanes = Lanes::new("tracked-writable");
    lanes.file("work/tree/sub/x.txt", "x\n");
    let tree = lanes.path("work/tree");
    std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let file = lanes.file("work/file.txt", "y\n");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).expect("chmod");
    lanes.write(
        "t",
        "image: x\nmounts: [{source: ../work/tree, target: /t, track_content: true}, \
         {source: ../work/file.txt, target: /f, track_content: true}]\n",
    );

    let run = lanes.lanectl_offline(&["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    for path in [&tree, &file] {
        let line = line_about(&run.stdout, path);
        assert!(
            line.is_some_and(|l| l.contains("writable by group or others") && l.contains("chmod")),
            "{}: {run:?}",
            path.display()
        );
    }
    let run = lanes.lanectl_offline(&["validate", "--allow-insecure-permissions"]);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn as_root_a_manifest_codex_or_tracked_file_owned_by_another_user_is_refused_unless_allowed() {
    needs_root();
    let lanes = Lanes::new("foreign-owner");
    lanes.write("m", "image: x\n");
    let manifest = lanes.dir().join("m.yaml");
    lanes.file("codex/c/config.toml", "x = 1\n");
    let deep = lanes.file("codex/c/sessions/auth.json", "{}\n");
    lanes.write(
        "c",
        "image: x\ncodex: {source: ../codex/c, target: /root/.codex}\n",
    );
    let tracked = lanes.file("work/t.txt", "t\n");
    lanes.write(
        "t",
        "image: x\nmounts: [{source: ../work/t.txt, target: /t, track_content: true}]\n",
    );
    for path in [&manifest, &deep, &tracked] {
        std::os::unix::fs::lchown(path, Some(1234), None).expect("chown");
    }

    let run = lanes.lanectl_offline(&["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    for path in [&manifest, &deep, &tracked] {
        let line = line_about(&run.stdout, path);
        assert!(
            line.is_some_and(|l| l.contains("owned by uid 1234")),
            "{}: {run:?}",
            path.display()
        );
    }
    assert_eq!(run.stdout.lines().count(), 3, "one line each: {run:?}");
    let run = lanes.lanectl_offline(&["validate", "--allow-insecure-permissions"]);
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn as_root_a_codex_source_given_as_a_symlink_to_a_world_writable_dir_is_refused() {
    needs_root();
    let lanes = Lanes::new("codex-link-writable");
    lanes.file("codex/shared/config.toml", "x = 1\n");
    let real = lanes.path("codex/shared");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    symlink("shared", lanes.path("codex/a")).expect("symlink");
    lanes.write(
        "a",
        &lanes.worker_lane("codex: {source: ../codex/a, target: /root/.codex}\n"),
    );
    let refused = |text: &str| text.contains(&real.display().to_string()) && text.contains("chmod");

    let run = lanes.lanectl_offline(&["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(refused(&run.stdout), "{run:?}");

    let run = lanes.lanectl(&["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    let status = lanes.status("a").expect("status file");
    assert_eq!(status["phase"], "invalid", "{status}");
    assert!(
        refused(status["message"].as_str().unwrap_or("")),
        "{status}"
    );
    assert!(lanes.containers().is_empty(), "nothing was created");
}

#[test]
fn a_manifest_with_thousands_of_problems_gets_a_status_that_can_be_read_back() {
    let lanes = Lanes::new("many-problems");
    let mut yaml = format!("image: {}\nlabels:\n", image());
    for i in 0..3000 {
        yaml.push_str(&format!("  io.lanectl.reserved-{i}: x\n"));
    }
    lanes.write("a", &yaml);
    lanes.lanectl(&["apply"]);
    let path = lanes.dir().join("a.status.yaml");
    let size = std::fs::metadata(&path).expect("a status file").len();
    assert!(
        size < 64 * 1024,
        "{size} bytes: lanectl cannot read it back"
    );
    let status = lanes.status("a").expect("a status");
    assert_eq!(status["phase"], "invalid", "{status}");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("and 2980 more (`lanectl validate` lists every one)"),
        "{message}"
    );
    // Read back, it is not rewritten by the next pass.
    let written = lanes.status_mtime("a");
    std::thread::sleep(std::time::Duration::from_millis(20));
    lanes.lanectl(&["apply"]);
    assert_eq!(
        lanes.status_mtime("a"),
        written,
        "rewritten though unchanged"
    );
}

#[test]
fn two_defaults_files_make_every_lane_invalid_and_leave_its_container_alone() {
    let lanes = Lanes::new("two-defaults");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.apply_ok();
    let id = lanes.ready_id("a").expect("a is ready");
    lanes.file("lanes.d/_defaults.yaml", "user: root\n");
    lanes.file("lanes.d/_defaults.yml", "user: root\n");

    let run = lanes.lanectl(&["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    let status = lanes.status("a").expect("a status");
    assert_eq!(status["phase"], "invalid", "{status}");
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("_defaults.yaml") && message.contains("keep one"),
        "{message}"
    );
    assert_eq!(
        lanes.containers(),
        vec![id],
        "the running container is kept"
    );
}

#[test]
fn validate_of_a_file_that_does_not_exist_says_so() {
    let lanes = Lanes::new("validate-missing");
    lanes.write("a", &lanes.worker_lane(""));
    let missing = lanes.dir().join("nonexist.yaml");
    let run = lanes.lanectl_offline(&["validate", missing.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("nonexist.yaml: no such file"),
        "{run:?}"
    );
    let other = lanes.file("lanes.d/notes.txt", "x");
    let run = lanes.lanectl_offline(&["validate", other.to_str().unwrap()]);
    assert!(
        run.stderr.contains("notes.txt: not a lane manifest"),
        "{run:?}"
    );
}

#[test]
fn an_invalid_lane_whose_container_runs_keeps_its_endpoint() {
    let lanes = Lanes::new("invalid-endpoint");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.apply_ok();
    let before = lanes.status("a").expect("a status");
    lanes.write("a", &lanes.worker_lane("imgae: typo\n"));
    let run = lanes.lanectl(&["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    let after = lanes.status("a").expect("a status");
    assert_eq!(after["phase"], "invalid", "{after}");
    assert_eq!(after["endpoint"], before["endpoint"], "{after}");
    assert_eq!(after["endpoints"], before["endpoints"], "{after}");
    assert_eq!(after["container_id"], before["container_id"], "{after}");
}

#[test]
fn a_new_manifest_copying_a_running_lanes_name_and_port_makes_only_itself_invalid() {
    let lanes = Lanes::new("clash-holder");
    let port = free_port();
    let a = lanes
        .worker_lane(&format!("container_name: {}-held\n", lanes.instance))
        .replace(
            "ports: [{container: 31417}]",
            &format!("ports: [{{container: 31417, host_port: {port}}}]"),
        );
    lanes.write("a", &a);
    lanes.apply_ok();
    let before = lanes.status("a").expect("a status");

    // The newcomer is a copy of a: same container name, same fixed port.
    lanes.write("b", &a);
    let run = lanes.lanectl(&["apply"]);
    assert_eq!(run.code, 1, "{run:?}");
    let after = lanes.status("a").expect("a status");
    assert_eq!(
        after["phase"], "ready",
        "the holder keeps its name: {after}"
    );
    assert_eq!(after["container_id"], before["container_id"], "{after}");
    let b = lanes.status("b").expect("b status");
    assert_eq!(b["phase"], "invalid", "{b}");
    let message = b["message"].as_str().unwrap();
    assert!(
        message.contains("is held by lane a") && message.contains(&format!("host port {port}")),
        "{message}"
    );
    let plan = lanes.lanectl(&["plan"]);
    assert!(plan.stdout.lines().any(|l| l == "a  nothing"), "{plan:?}");

    // validate has no Podman to ask who holds it: both are named.
    let check = lanes.lanectl_offline(&["validate"]);
    assert_eq!(check.code, 1, "{check:?}");
    assert!(check.stdout.contains("also used by lane b"), "{check:?}");

    // Under the daemon too: a's status stays ready while b is invalid.
    std::fs::remove_file(lanes.path("lanes.d/b.yaml")).unwrap();
    lanes.apply_ok();
    let mut daemon = crate::common::Daemon::start(&lanes, &[]);
    lanes.write("b", &a);
    let b = wait_for(std::time::Duration::from_secs(20), || {
        lanes.status("b").filter(|s| s["phase"] == "invalid")
    });
    assert!(b.is_some(), "{}", daemon.log());
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after = lanes.status("a").expect("a status");
    assert_eq!(after["phase"], "ready", "{after}\n{}", daemon.log());
    assert_eq!(after["container_id"], before["container_id"], "{after}");
    daemon.terminate(std::time::Duration::from_secs(10));
}
