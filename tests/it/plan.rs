//! plan: one line per lane naming the cause, nothing changed, exit codes.

use crate::common::{Lanes, inspect, podman};

#[test]
fn plan_changes_nothing_and_its_exit_code_tells_changes_from_errors() {
    let lanes = Lanes::new("plan-codes");
    lanes.write("a", &lanes.worker_lane(""));
    let run = lanes.lanectl(&["plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(run.stdout.trim(), "a  create");
    assert!(lanes.containers().is_empty(), "plan created nothing");
    assert!(lanes.status("a").is_none(), "plan wrote no status");
    assert_eq!(
        lanes.lanectl(&["plan"]).code,
        0,
        "without the flag, changes exit 0"
    );

    lanes.apply_ok();
    let run = lanes.lanectl(&["plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.trim(), "a  nothing");

    lanes.write("b", "image: [\n");
    let run = lanes.lanectl(&["plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("b  invalid: "), "{run:?}");
    assert_eq!(
        lanes.lanectl(&["plan"]).code,
        1,
        "an invalid lane fails plain plan too (README's table)"
    );
}

#[test]
fn plan_exits_1_when_podman_cannot_be_reached() {
    let lanes = Lanes::new("plan-unreachable");
    lanes.write("a", &lanes.worker_lane(""));
    let sock = lanes.path("nothing.sock");
    let url = format!("unix://{}", sock.display());
    let run = lanes.lanectl(&["--podman", &url, "plan", "--detailed-exitcode"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("cannot reach podman"), "{run:?}");
}

#[test]
fn a_half_made_container_is_recreated_never_started() {
    let lanes = Lanes::new("half-made");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.apply_ok();
    let id = lanes.container_id("a");
    // Replace it by a never-started twin with the same labels: what a crash
    // between create and start leaves.
    let container = inspect(&id);
    let labels = container["Config"]["Labels"].clone();
    let name = container["Name"].as_str().unwrap().to_string();
    podman(&["rm", "--force", "--time", "0", &id]);
    let mut args = vec!["create".to_string(), "--name".into(), name];
    for (k, v) in labels.as_object().unwrap() {
        args.push("--label".into());
        args.push(format!("{k}={}", v.as_str().unwrap()));
    }
    args.push(crate::common::image());
    args.push("/bin/sh".into());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let half = podman(&args).trim().to_string();
    let plan = lanes.lanectl(&["plan"]);
    assert!(plan.stdout.contains("a  recreate: half-made"), "{plan:?}");
    lanes.apply_ok();
    assert_ne!(lanes.container_id("a"), half);
    assert_eq!(lanes.containers().len(), 1);
}

#[test]
fn plan_names_tracked_content_changes() {
    let lanes = Lanes::new("plan-tracked");
    lanes.file("work/secret.txt", "one\n");
    let yaml = lanes.worker_lane("").replace(
        "read_only: true}\n",
        "read_only: true}\n  - {source: ../work/secret.txt, target: /run/secret.txt, read_only: true, track_content: true}\n",
    );
    lanes.write("a", &yaml);
    lanes.apply_ok();
    lanes.file("work/secret.txt", "two\n");
    let plan = lanes.lanectl(&["plan"]);
    assert_eq!(
        plan.stdout, "a  recreate: tracked content changed (/run/secret.txt)\n",
        "{plan:?}"
    );
}

#[test]
fn plan_names_the_codex_files_that_changed_were_added_or_removed() {
    let lanes = Lanes::new("plan-codex");
    lanes.file("codex/a/config.toml", "model = 1\n");
    lanes.file("codex/a/old.md", "old\n");
    lanes.file("codex/a/same.md", "same\n");
    lanes.write(
        "a",
        &lanes.worker_lane("codex: {source: ../codex/a, target: /root/.codex}\n"),
    );
    lanes.apply_ok();
    lanes.file("codex/a/config.toml", "model = 2\n");
    lanes.file("codex/a/prompts/new.md", "new\n");
    std::fs::remove_file(lanes.path("codex/a/old.md")).unwrap();
    let plan = lanes.lanectl(&["plan"]);
    assert_eq!(
        plan.stdout, "a  recreate: codex changed (config.toml, old.md, prompts/new.md)\n",
        "{plan:?}"
    );
    let diff = lanes.lanectl(&["plan", "--diff"]);
    assert_eq!(
        diff.stdout,
        "a  recreate: codex changed (config.toml, old.md, prompts/new.md)\n\
         \x20    config.toml: (changed) -> (changed)\n\
         \x20    old.md: (removed) -> (none)\n\
         \x20    prompts/new.md: (none) -> (added)\n",
        "{diff:?}"
    );
    assert!(!diff.stdout.contains("model"), "never a file's bytes");
}

#[test]
fn without_a_podman_url_lanectl_starts_a_private_service_and_stops_it() {
    let lanes = Lanes::new("private-service");
    lanes.write("a", &lanes.worker_lane(""));
    // Private storage for the service lanectl starts: never the system's.
    let storage = lanes.file(
        "storage.conf",
        &format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/graph\"\nrunroot = \"{0}/run\"\n",
            lanes.path("podman").display()
        ),
    );
    let conf = lanes.file(
        "containers.conf",
        &format!(
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
             [engine]\nruntime = \"runc\"\ntmp_dir = \"{}/tmp\"\n",
            lanes.path("podman").display()
        ),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lanectl"))
        .args([
            "--dir",
            lanes.dir().to_str().unwrap(),
            "--instance",
            &lanes.instance,
            "-v",
            "plan",
        ])
        .env_remove("CONTAINER_HOST")
        .env("CONTAINERS_STORAGE_CONF", &storage)
        .env("CONTAINERS_CONF", &conf)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("started a private podman service"),
        "a Podman answered at the default socket, or none could be started:\n{stderr}"
    );
    // Said at every command's default level (WARN), not only with -v.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("WARN") && l.contains("started a private podman service")),
        "{stderr}"
    );
    // Its storage is empty: the image is missing there, which plan reports,
    // naming the Podman it asked.
    assert!(stdout.contains("a  failed: image"), "{stdout}\n{stderr}");
    assert!(stdout.contains("in the Podman at unix://"), "{stdout}");
    // This run's own service, by its socket (other tests run lanectl in
    // parallel, and may have private services of their own right now).
    let socket = stderr
        .split("url=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|url| {
            url.trim_matches('"')
                .trim_start_matches("unix://")
                .to_string()
        })
        .unwrap_or_else(|| panic!("the log names the private service's URL:\n{stderr}"));
    assert!(socket.contains("lanectl-podman-"), "{socket}");
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let leftover = String::from_utf8_lossy(&ps.stdout)
        .lines()
        .any(|l| l.contains("system service") && l.contains(&socket));
    assert!(
        !leftover,
        "the private service at {socket} outlived lanectl"
    );
}

#[test]
fn under_systemd_lanectl_never_starts_a_private_podman_service() {
    let lanes = Lanes::new("systemd");
    lanes.write("a", &lanes.worker_lane(""));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lanectl"))
        .args([
            "--dir",
            lanes.dir().to_str().unwrap(),
            "--instance",
            &lanes.instance,
            "plan",
        ])
        .env_remove("CONTAINER_HOST")
        .env("INVOCATION_ID", "0123456789abcdef")
        .env("XDG_RUNTIME_DIR", lanes.path("run"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("under systemd: enable podman.socket"),
        "{stderr}"
    );
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let lanes = Lanes::new("json-logs");
    lanes.write("a", &lanes.worker_lane(""));
    let run = lanes.lanectl(&["--log-format", "json", "-v", "plan"]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(!lines.is_empty(), "-v logs decisions: {run:?}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}

#[test]
fn plan_leaves_even_a_killed_lanectls_temporary_status_file_alone() {
    let lanes = Lanes::new("plan-temps");
    lanes.write("a", &lanes.worker_lane(""));
    lanes.apply_ok();
    // A pid that surely runs no lanectl: a child that has exited.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let temp = lanes.file(&format!("lanes.d/.a.status.{dead}.x1y2.tmp"), "phase: pen");

    let run = lanes.lanectl(&["plan"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(temp.exists(), "plan changes nothing, not even a stale temp");

    lanes.apply_ok();
    assert!(!temp.exists(), "apply tidies what a killed lanectl left");
}

#[test]
fn plan_names_the_fields_a_spec_change_touches_and_never_an_env_value() {
    let lanes = Lanes::new("plan-fields");
    let base = |extra: &str| {
        lanes.worker_lane(&format!(
            "env: {{A: secret-a}}\nresources: {{memory: 256m}}\n{extra}"
        ))
    };
    lanes.write("a", &base(""));
    lanes.apply_ok();
    podman(&[
        "tag",
        &crate::common::image(),
        "localhost/lanectl-plan-fields:alt",
    ]);

    let edits: Vec<(String, &str)> = vec![
        (base("").replace("secret-a", "secret-b"), "env.A"),
        (
            base("").replace("{A: secret-a}", "{A: secret-a, B: secret-c}"),
            "env.B",
        ),
        (
            base("").replace("read_only: true", "read_only: false"),
            "mounts[0].read_only",
        ),
        (
            base("").replace(
                "ports: [{container: 31417}]",
                "ports: [{container: 31417, host_ip: 127.0.0.2}]",
            ),
            "ports[0].host_ip",
        ),
        (
            base("").replace("memory: 256m", "memory: 512m"),
            "resources.memory_bytes",
        ),
        (
            base("").replace(&crate::common::image(), "localhost/lanectl-plan-fields:alt"),
            "image",
        ),
        (
            base("").replace(
                "entrypoint: [/usr/local/bin/lane-worker]",
                "entrypoint: [/usr/local/bin/lane-worker, --verbose]",
            ),
            "entrypoint[1]",
        ),
    ];
    for (yaml, field) in edits {
        lanes.write("a", &yaml);
        let run = lanes.lanectl(&["plan"]);
        assert_eq!(run.code, 0, "{run:?}");
        assert_eq!(
            run.stdout.trim(),
            format!("a  recreate: spec changed ({field})"),
            "{run:?}"
        );
        let diff = lanes.lanectl(&["plan", "--diff"]);
        let json = lanes.lanectl(&["plan", "--json"]);
        for out in [&run, &diff, &json] {
            assert!(
                !out.stdout.contains("secret-") && !out.stderr.contains("secret-"),
                "an env value was printed: {out:?}"
            );
        }
        assert!(diff.stdout.contains(&format!("    {field}: ")), "{diff:?}");
        let planned: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
        assert_eq!(planned[0]["fields"][0], field, "{planned}");
    }

    // The exact shapes, for one edit.
    lanes.write(
        "a",
        &base("")
            .replace("memory: 256m", "memory: 512m")
            .replace("secret-a", "secret-b"),
    );
    let diff = lanes.lanectl(&["plan", "--diff"]);
    assert_eq!(
        diff.stdout,
        "a  recreate: spec changed (env.A, resources.memory_bytes)\n\
         \x20    env.A: (changed) -> (changed)\n\
         \x20    resources.memory_bytes: 268435456 -> 536870912\n",
        "{diff:?}"
    );
    let json = lanes.lanectl(&["plan", "--json"]);
    assert_eq!(
        json.stdout,
        "[\n  {\n    \"lane\": \"a\",\n    \"action\": \"recreate\",\n    \"reason\": \"spec changed\",\n    \
         \"fields\": [\n      \"env.A\",\n      \"resources.memory_bytes\"\n    ],\n    \"extras\": 0\n  }\n]\n",
        "{json:?}"
    );
    podman(&["rmi", "localhost/lanectl-plan-fields:alt"]);
}

/// Remakes lane `lane`'s container as an older lanectl, hashing differently,
/// would have made it for the very same spec: same create body, labels and
/// stored spec, but another spec hash and `io.lanectl.hash-version: 0`.
/// Returns the new container's id.
fn remake_as_an_older_lanectl(lanes: &Lanes, lane: &str) -> String {
    let id = lanes.ready_id(lane).expect("ready");
    let c = inspect(&id);
    let name = c["Name"]
        .as_str()
        .unwrap()
        .trim_start_matches('/')
        .to_string();
    let mut args: Vec<String> = vec![
        "create".into(),
        "--name".into(),
        name,
        "--user".into(),
        "root".into(),
        "--entrypoint".into(),
        "/usr/local/bin/lane-worker".into(),
        "-v".into(),
        format!(
            "{}:/usr/local/bin/lane-worker:ro,z",
            crate::common::worker().display()
        ),
        "-p".into(),
        "127.0.0.1::31417".into(),
        "--stop-timeout".into(),
        "2".into(),
        "-e".into(),
        "A=x".into(),
    ];
    let labels = c["Config"]["Labels"].as_object().unwrap();
    for (k, v) in labels {
        let v = match k.as_str() {
            "io.lanectl.spec-hash" => format!("sha256:{}", "0".repeat(64)),
            "io.lanectl.config-hash" => "0".repeat(64),
            "io.lanectl.hash-version" => "0".into(),
            _ => v.as_str().unwrap().to_string(),
        };
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    let stored = c["Config"]["Annotations"]["io.lanectl.spec"]
        .as_str()
        .expect("the stored spec")
        .to_string();
    // The CLI reads the flag as CSV: quoted whole, its quotes doubled.
    args.push("--annotation".into());
    let value = format!("io.lanectl.spec={stored}").replace('"', "\"\"");
    args.push(format!("\"{value}\""));
    args.push(labels["io.lanectl.image-id"].as_str().unwrap().to_string());
    args.push("serve".into());
    podman(&["rm", "-f", "-t", "0", &id]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let made = podman(&args).trim().to_string();
    podman(&["start", &made]);
    made
}

#[test]
fn an_upgrade_of_lanectl_that_hashes_differently_recreates_nothing_but_real_changes() {
    let lanes = Lanes::new("plan-upgrade");
    for lane in ["a", "b"] {
        lanes.write(lane, &lanes.worker_lane("env: {A: x}\n"));
    }
    lanes.apply_ok();
    let a = remake_as_an_older_lanectl(&lanes, "a");
    let b = remake_as_an_older_lanectl(&lanes, "b");
    assert_eq!(
        inspect(&a)["Config"]["Labels"]["io.lanectl.hash-version"],
        "0"
    );

    let plan = lanes.lanectl(&["plan", "--detailed-exitcode"]);
    assert_eq!(plan.code, 0, "{plan:?}");
    assert_eq!(plan.stdout, "a  nothing\nb  nothing\n", "{plan:?}");
    lanes.apply_ok();
    assert_eq!(lanes.ready_id("a").as_deref(), Some(a.as_str()), "a kept");
    assert_eq!(lanes.ready_id("b").as_deref(), Some(b.as_str()), "b kept");

    // A real change still recreates, and names its field.
    lanes.write("a", &lanes.worker_lane("env: {A: y}\n"));
    let plan = lanes.lanectl(&["plan"]);
    assert_eq!(
        plan.stdout, "a  recreate: spec changed (env.A)\nb  nothing\n",
        "{plan:?}"
    );
    lanes.apply_ok();
    assert_ne!(lanes.ready_id("a").as_deref(), Some(a.as_str()));
    assert_eq!(lanes.ready_id("b").as_deref(), Some(b.as_str()));
    let now = inspect(&lanes.ready_id("a").unwrap());
    assert_eq!(now["Config"]["Labels"]["io.lanectl.hash-version"], "1");
}

#[test]
fn a_lane_in_a_git_work_tree_records_its_commit_and_a_new_commit_alone_recreates_nothing() {
    use crate::readme::git_ok;
    let lanes = Lanes::new("plan-git");
    let root = lanes.path("");
    std::fs::write(root.join(".gitignore"), "*.status.yaml\n").unwrap();
    lanes.write("a", &lanes.worker_lane("env: {A: '1'}\n"));
    git_ok(&root, &["init", "-q"]);
    git_ok(&root, &["add", "-A"]);
    git_ok(&root, &["commit", "-qm", "one"]);
    git_ok(&root, &["pack-refs", "--all"]); // the ref is read from packed-refs
    let head = || git_ok(&root, &["rev-parse", "HEAD"]).trim().to_string();
    let one = head();

    lanes.apply_ok();
    let st = lanes.status("a").unwrap();
    assert_eq!(st["git_commit"], one.as_str(), "{st}");
    let id = lanes.ready_id("a").unwrap();
    assert_eq!(
        inspect(&id)["Config"]["Labels"]["io.lanectl.git-commit"],
        one.as_str()
    );
    let table = lanes.lanectl(&["status"]);
    assert!(table.stdout.contains("COMMIT"), "{table:?}");
    assert!(
        table.stdout.contains(&format!(" {} ", &one[..7])),
        "{table:?}"
    );

    // A commit that changes no manifest: nothing to do, the status keeps
    // the commit the container was made at.
    std::fs::write(root.join("NOTES"), "unrelated\n").unwrap();
    git_ok(&root, &["add", "NOTES"]);
    git_ok(&root, &["commit", "-qm", "notes"]);
    let plan = lanes.lanectl(&["plan", "--detailed-exitcode"]);
    assert_eq!(
        (plan.code, plan.stdout.as_str()),
        (0, "a  nothing\n"),
        "{plan:?}"
    );
    lanes.apply_ok();
    assert_eq!(lanes.ready_id("a").as_deref(), Some(id.as_str()));
    assert_eq!(lanes.status("a").unwrap()["git_commit"], one.as_str());

    // A manifest change committed: the new container carries the new commit.
    lanes.write("a", &lanes.worker_lane("env: {A: '2'}\n"));
    git_ok(&root, &["commit", "-qam", "two"]);
    let two = head();
    lanes.apply_ok();
    assert_ne!(lanes.ready_id("a").as_deref(), Some(id.as_str()));
    assert_eq!(lanes.status("a").unwrap()["git_commit"], two.as_str());
}
