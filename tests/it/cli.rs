//! Commands that need no Podman: validate, schema, status, usage errors.

use crate::common::Lanes;

#[test]
fn validate_reports_an_unknown_key_with_file_line_and_column() {
    let lanes = Lanes::new("validate-unknown");
    lanes.write("alpha", "image: x\nimgae: y\n");
    let run = lanes.lanectl(&["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    let expected = format!(
        "{}:2:1: unknown field `imgae`: did you mean `image`?",
        lanes.dir().join("alpha.yaml").display()
    );
    assert!(run.stdout.contains(&expected), "{run:?}");
}

#[test]
fn validate_reports_every_problem_of_a_file_at_once() {
    let lanes = Lanes::new("validate-all");
    // Typing problems (several under one key, at any depth) and value
    // problems (a missing mount source, a bad duration, a relative target)
    // of one file: all in one run, in the file's order, like a compiler.
    lanes.write(
        "alpha",
        "image: x\n\
         state: sleeping\n\
         env: {TOKEN: [x], OTHER: {k: v}}\n\
         ports: [{container: 80, protocl: tcp}, {container: 99999}]\n\
         mounts: [{source: nowhere, target: /x}, {source: /, target: rel, read_only: maybe}]\n\
         stop_timeout: soon\n",
    );
    let run = lanes.lanectl(&["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    let file = lanes.dir().join("alpha.yaml");
    let said: Vec<String> = run
        .stdout
        .lines()
        .map(|l| l.replace(&file.display().to_string(), "F"))
        .collect();
    let expected = [
        "F:2:8: state: unknown variant `sleeping`, expected `running` or `stopped`",
        "F:3:14: env.TOKEN: expected a string, found a list",
        "F:3:26: env.OTHER: expected a string, found a map",
        "F:4:25: ports[0]: unknown field `protocl`: did you mean `protocol`?",
        "F:4:52: ports[1].container: port 99999 is out of range (1-65535)",
        "F:5:19: mount source",
        "F:5:61: mount target \"rel\" must be an absolute path",
        "F:5:77: mounts[1].read_only: expected a boolean, found a string",
        "F:6:15: duration \"soon\"",
    ];
    assert_eq!(said.len(), expected.len(), "{said:#?}");
    for (said, expected) in said.iter().zip(expected) {
        assert!(said.starts_with(expected), "{said}\nexpected {expected}");
    }
}

#[test]
fn validate_accepts_a_good_directory_and_checks_lane_names() {
    let lanes = Lanes::new("validate-ok");
    lanes.write("alpha", "image: x\n");
    let run = lanes.lanectl(&["validate"]);
    assert_eq!(run.code, 0, "{run:?}");
    lanes.write("Bad_Name", "image: x\n");
    let run = lanes.lanectl(&["validate"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.contains("lane name \"Bad_Name\""), "{run:?}");
}

#[test]
fn validate_takes_a_relative_dir_from_the_working_directory() {
    // `--dir lanes.d` with sources given relative to it, as the README has it.
    let lanes = Lanes::new("validate-relative");
    lanes.file("codex/alpha/config.toml", "x = 1\n");
    lanes.write(
        "alpha",
        "image: x\ncodex: {source: ../codex/alpha, target: /root/.codex}\n",
    );
    lanes.write("beta", "image: x\nenvv: {}\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lanectl"))
        .current_dir(lanes.path(""))
        .args(["--dir", "lanes.d", "validate", "lanes.d/alpha.yaml"])
        .output()
        .expect("run lanectl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lanectl"))
        .current_dir(lanes.path(""))
        .args(["--dir", "lanes.d", "validate"])
        .output()
        .expect("run lanectl");
    let stdout = format!("{stdout}{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    // Only beta's problem, named by the path as the user gave it.
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("lanes.d/beta.yaml:2:1: "), "{stdout}");
}

#[test]
fn the_example_lanes_validate() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let lanes = Lanes::new("validate-examples");
    let dir = std::path::Path::new(repo).join("lanes.d");
    let run = lanes.lanectl_in(
        &dir,
        &lanes.instance,
        &["--allow-insecure-permissions", "validate"],
    );
    assert_eq!(run.code, 0, "{run:?}");
}

#[test]
fn the_checked_in_schema_is_what_lanectl_schema_prints() {
    let lanes = Lanes::new("schema");
    let run = lanes.lanectl(&["schema"]);
    assert_eq!(run.code, 0);
    let checked_in = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/lane.schema.json"
    ))
    .expect("schema/lane.schema.json");
    assert!(
        run.stdout == checked_in,
        "schema/lane.schema.json is stale: run `cargo run -- schema > schema/lane.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
}

#[test]
fn usage_errors_exit_64_never_2() {
    let lanes = Lanes::new("usage");
    assert_eq!(lanes.lanectl(&["apply", "--bogus"]).code, 64);
    assert_eq!(lanes.lanectl(&["--jobs", "zero", "plan"]).code, 64);
    assert_eq!(lanes.lanectl(&["frobnicate"]).code, 64);
    // A lane name that tries to leave the directory is a usage error.
    std::fs::write(lanes.path("victim.status.yaml"), "keep").unwrap();
    assert_eq!(lanes.lanectl(&["down", "../victim"]).code, 64);
    assert_eq!(lanes.lanectl(&["apply", "../victim"]).code, 64);
    assert!(lanes.path("victim.status.yaml").exists());
}

#[test]
fn status_json_is_an_array_even_for_no_lanes() {
    let lanes = Lanes::new("status-empty");
    let run = lanes.lanectl(&["status", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&run.stdout).unwrap(),
        serde_json::json!([])
    );
}

#[test]
fn a_lane_without_a_status_file_is_pending_in_the_table_and_the_json_alike() {
    let lanes = Lanes::new("status-none");
    lanes.write("alpha", "image: x\n");
    let json = lanes.lanectl_offline(&["status", "--json"]);
    assert_eq!(json.code, 0, "{json:?}");
    let all: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(all[0]["lane"], "alpha", "{all}");
    assert_eq!(all[0]["phase"], "pending", "{all}");
    assert!(
        all[0]["message"]
            .as_str()
            .unwrap()
            .contains("no status file yet")
    );
    let table = lanes.lanectl_offline(&["status"]);
    let row = table
        .stdout
        .lines()
        .find(|l| l.contains("alpha"))
        .unwrap_or_default();
    assert!(
        row.contains("pending") && row.contains("no status file yet"),
        "{table:?}"
    );
}

#[test]
fn an_instance_that_a_podman_label_filter_could_misread_is_a_usage_error() {
    // `label=io.lanectl.instance=` matches every instance: a daemon started
    // with an unset ${VAR} must not get to list (and prune) other
    // directories' containers.
    let lanes = Lanes::new("bad-instance");
    lanes.write("alpha", "image: x\n");
    for bad in ["", " ", "a=b", "a,b", "a b", &"x".repeat(64)] {
        for command in [&["run"][..], &["apply"], &["plan"], &["down"]] {
            let run = lanes.lanectl_in(&lanes.dir(), bad, command);
            assert_eq!(run.code, 64, "--instance {bad:?} {command:?}: {run:?}");
            assert!(run.stderr.contains("--instance"), "{run:?}");
        }
    }
}

#[test]
fn an_error_prints_each_cause_once() {
    let lanes = Lanes::new("cause-once");
    let missing = lanes.path("nowhere");
    for command in [&["status"][..], &["validate"]] {
        let run = lanes.lanectl_in(&missing, &lanes.instance, command);
        assert_eq!(run.code, 1, "{command:?}: {run:?}");
        assert!(run.stderr.contains("nowhere"), "{run:?}");
        assert_eq!(run.stderr.matches("os error 2").count(), 1, "{run:?}");
    }
}

#[test]
fn completions_for_bash_zsh_and_fish_and_a_man_page_that_does_not_drift() {
    let lanes = Lanes::new("completions");
    for (shell, marker) in [
        ("bash", "complete -F _lanectl"),
        ("zsh", "#compdef lanectl"),
        ("fish", "complete -c lanectl"),
    ] {
        let run = lanes.lanectl_offline(&["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {run:?}");
        assert!(run.stdout.contains(marker), "{shell}: {}", run.stdout);
        for sub in ["apply", "plan", "wait", "status", "validate"] {
            assert!(run.stdout.contains(sub), "{shell} lacks {sub}");
        }
    }
    assert_eq!(lanes.lanectl_offline(&["completions", "tcsh"]).code, 64);
    // docs/lanectl.1 is `lanectl man`: regenerate it when the CLI changes.
    let man = lanes.lanectl_offline(&["man"]);
    assert_eq!(man.code, 0, "{man:?}");
    let kept = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/lanectl.1"),
    )
    .unwrap();
    assert_eq!(
        man.stdout, kept,
        "docs/lanectl.1 drifted from the CLI: lanectl man > docs/lanectl.1"
    );
    assert!(kept.contains(".TH lanectl 1") && kept.contains("completions"));
}

#[test]
fn the_status_file_keeps_the_last_ten_phase_changes_and_status_lane_shows_them() {
    let lanes = Lanes::new("history");
    // Invalid and valid in turn: each apply is a phase change (no Podman
    // is needed to make an invalid lane; a valid one without an image fails).
    for i in 0..12 {
        let yaml = if i % 2 == 0 {
            "imgae: x\n".to_string()
        } else {
            "image: localhost/lanectl-no-such-image:1\n".to_string()
        };
        lanes.write("a", &yaml);
        lanes.lanectl(&["apply"]);
    }
    let st = lanes.status("a").unwrap();
    let history = st["history"].as_array().unwrap();
    assert_eq!(history.len(), 10, "{st}");
    assert_eq!(history[9]["to"], "failed", "{st}");
    assert_eq!(history[9]["from"], "invalid", "{st}");
    assert!(
        history[8]["reason"].as_str().unwrap().contains("imgae"),
        "{st}"
    );
    // An apply that changes no phase adds nothing.
    lanes.lanectl(&["apply"]);
    assert_eq!(lanes.status("a").unwrap()["history"], st["history"]);
    let full = lanes.lanectl_offline(&["status", "a"]);
    assert_eq!(full.code, 0, "{full:?}");
    assert!(full.stdout.starts_with("lane: a\n"), "{full:?}");
    assert_eq!(full.stdout.matches("\n- at: ").count(), 10, "{full:?}");
}
