//! What the files alone show about codex and `track_content` sources: a
//! symlink leading out of the codex directory, a symlink to a directory, a
//! FIFO, a codex target of `/`, and (as root) a source that others can write.
//! `validate` finds each, with its path, before a deploy; `apply` marks the
//! lane `invalid` and creates nothing for it.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::PathBuf;

use crate::common::{Lanes, image};

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

#[test]
fn as_root_a_codex_source_given_as_a_symlink_to_a_world_writable_dir_is_refused() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root: the permission rule applies only to root (CI runs as root)"
    );
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
