//! Env values and codex bytes never appear in logs (at any level), status
//! files, `plan` output or error messages; names and fingerprints may.

use std::time::Duration;

use crate::common::{Daemon, Lanes, wait_for};

const ENV_SECRET: &str = "envS3cr3tValue-7f1c";
const CODEX_SECRET: &str = "codexS3cr3tBytes-9a2e";

fn assert_clean(what: &str, text: &str) {
    for secret in [ENV_SECRET, CODEX_SECRET] {
        assert!(!text.contains(secret), "{what} shows a secret:\n{text}");
    }
}

#[test]
fn secrets_never_reach_logs_status_plan_or_errors() {
    let lanes = Lanes::new("secrets");
    lanes.file(
        "codex/a/auth.json",
        &format!("{{\"token\": \"{CODEX_SECRET}\"}}\n"),
    );
    let env = format!("env: {{API_TOKEN: {ENV_SECRET}}}\n");
    let codex = "codex: {source: ../codex/a, target: /root/.codex, fingerprint_env: CODEX_SHA}\n";
    lanes.write("a", &lanes.worker_lane(&format!("{env}{codex}")));
    // A lane that fails its probe, and one whose image is missing.
    lanes.write("b", &lanes.failing_probe_lane(&env));
    lanes.write(
        "c",
        &lanes
            .worker_lane(&env)
            .replace(&crate::common::image(), "localhost/lanectl-none:1"),
    );

    let mut outputs = Vec::new();
    for args in [
        &["-vv", "plan"][..],
        &["-vv", "apply"],
        &["-vv", "apply"],
        &["status", "--json"],
        &["status"],
    ] {
        let run = lanes.lanectl(args);
        outputs.push((
            format!("{args:?}"),
            format!("{}\n{}", run.stdout, run.stderr),
        ));
    }
    // A secret changed: plan names the cause, not the value.
    lanes.write(
        "a",
        &lanes.worker_lane(&format!(
            "{}{codex}",
            env.replace(ENV_SECRET, "other-value")
        )),
    );
    let plan = lanes.lanectl(&["-vv", "plan"]);
    assert!(plan.stdout.contains("recreate: spec changed"), "{plan:?}");
    outputs.push((
        "plan after edit".into(),
        format!("{}\n{}", plan.stdout, plan.stderr),
    ));
    // Broken manifests around a secret: the errors name keys and positions.
    lanes.write(
        "d",
        &format!(
            "image: x\nenv: {{API_TOKEN: {ENV_SECRET}, OTHER: [{ENV_SECRET}]}}\nstate: {{}}\n"
        ),
    );
    lanes.write(
        "e",
        &format!("image: x\nenv:\n  API_TOKEN: \"{ENV_SECRET}\n"),
    );
    let validate = lanes.lanectl(&["validate"]);
    assert_eq!(validate.code, 1, "{validate:?}");
    outputs.push((
        "validate".into(),
        format!("{}\n{}", validate.stdout, validate.stderr),
    ));

    // The daemon at trace level, through a create and a recreate.
    std::fs::remove_file(lanes.dir().join("d.yaml")).unwrap();
    std::fs::remove_file(lanes.dir().join("e.yaml")).unwrap();
    let before = lanes.status("a").unwrap()["spec_hash"].clone();
    let daemon = Daemon::start(&lanes, &["-v"]);
    let recreated = |from: &serde_json::Value| {
        let s = lanes.status("a")?;
        (s["phase"] == "ready" && s["spec_hash"] != *from).then(|| s["spec_hash"].clone())
    };
    // The daemon carries out the edit made above, then one back to the secret.
    let middle = wait_for(Duration::from_secs(20), || recreated(&before))
        .unwrap_or_else(|| panic!("a not recreated: {:?}\n{}", lanes.status("a"), daemon.log()));
    lanes.write("a", &lanes.worker_lane(&format!("{env}{codex}")));
    wait_for(Duration::from_secs(20), || recreated(&middle))
        .unwrap_or_else(|| panic!("a not recreated: {:?}\n{}", lanes.status("a"), daemon.log()));
    outputs.push(("daemon log".into(), daemon.log()));

    for (what, text) in &outputs {
        assert_clean(what, text);
    }
    for entry in std::fs::read_dir(lanes.dir()).unwrap().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(".status.yaml")
        {
            assert_clean(&entry.path().display().to_string(), &text);
        }
    }
    // The fingerprint (not the bytes) is what may be shown.
    let status = lanes.status("a").unwrap();
    assert!(
        status["codex_fingerprint"]
            .as_str()
            .is_some_and(|f| f.len() == 64)
    );
    println!(
        "checked {} outputs and every status file for 2 planted secrets",
        outputs.len()
    );
}

/// Typos that put an env or label value where lanectl would quote it (a key,
/// a string, a bare list item): every lane is invalid, and no output, log or
/// status file shows the value. The compose list form is accepted, reaches
/// the container, and has the hash of the map form.
#[test]
fn typos_around_a_secret_never_show_it() {
    let lanes = Lanes::new("secret-typos");
    let s = ENV_SECRET;
    let typos = [
        format!("env: {{API_TOKEN={s}}}\n"),
        format!("env:\n  API_TOKEN={s}:\n"),
        format!("env: \"API_TOKEN={s}\"\n"),
        format!("env: 'API_TOKEN={s}'\n"),
        format!("env: API_TOKEN={s}\n"),
        format!("env:\n  API_TOKEN={s}\n"),
        format!("env: |\n  API_TOKEN={s}\n"),
        format!("env: [{s}]\n"),
        format!("env:\n  - \"{s}\"\n"),
        format!("env: [={s}]\n"),
        format!("env: [A=1, A={s}]\n"),
        format!("env: [{{API_TOKEN: {s}}}]\n"),
        format!("env:\n  - API_TOKEN: {s}\n"),
        format!("env: [[{s}]]\n"),
        format!("env: {{A: [{s}]}}\n"),
        format!("env: {{A: {{x: {s}}}}}\n"),
        format!("env: {{API_TOKEN={s}: 1, API_TOKEN={s}: 2}}\n"),
        format!("labels: \"team={s}\"\n"),
        format!("labels: {{team={s}}}\n"),
        format!("labels: [{s}]\n"),
        format!("labels: [{{team: {s}}}]\n"),
        format!("API_TOKEN={s}: x\n"),
    ];
    let names: Vec<String> = (0..typos.len()).map(|i| format!("t{i:02}")).collect();
    for (name, typo) in names.iter().zip(&typos) {
        lanes.write(name, &lanes.worker_lane(typo));
    }
    let list = format!("env: [API_TOKEN={s}, B=2]\nlabels:\n  - team=infra\n");
    lanes.write("list", &lanes.worker_lane(&list));

    let mut outputs = Vec::new();
    let validate = lanes.lanectl(&["-vv", "validate"]);
    assert_eq!(validate.code, 1, "{validate:?}");
    for name in &names {
        assert!(
            validate.stdout.contains(&format!("{name}.yaml:")),
            "{name} is not reported: {validate:?}"
        );
    }
    assert!(!validate.stdout.contains("list.yaml"), "{validate:?}");
    outputs.push(("validate", validate));
    outputs.push(("plan", lanes.lanectl(&["-vv", "plan"])));
    let apply = lanes.lanectl(&["-vv", "apply"]);
    assert_eq!(apply.code, 1, "the typo lanes are invalid: {apply:?}");
    outputs.push(("apply", apply));
    outputs.push(("status --json", lanes.lanectl(&["status", "--json"])));
    for name in &names {
        let status = lanes
            .status(name)
            .unwrap_or_else(|| panic!("{name}: no status"));
        assert_eq!(status["phase"], "invalid", "{name}: {status}");
    }

    // The list form reached the container as NAME=value.
    let ready = lanes.ready_id("list").expect("the list-form lane is ready");
    let env = crate::common::inspect(&ready)["Config"]["Env"].to_string();
    assert!(env.contains(&format!("API_TOKEN={s}")), "{env}");
    assert!(env.contains("\"B=2\""), "{env}");
    // The same lane in the map form has the same hash: nothing to do.
    let map = format!("env: {{API_TOKEN: {s}, B: 2}}\nlabels: {{team: infra}}\n");
    lanes.write("list", &lanes.worker_lane(&map));
    let plan = lanes.lanectl(&["-vv", "plan", "list"]);
    assert_eq!(plan.stdout.trim(), "list  nothing", "{plan:?}");
    outputs.push(("plan after the map form", plan));

    for (what, run) in &outputs {
        assert_clean(what, &format!("{}\n{}", run.stdout, run.stderr));
    }
    let mut checked = 0;
    for entry in std::fs::read_dir(lanes.dir()).unwrap().flatten() {
        if entry
            .file_name()
            .to_string_lossy()
            .ends_with(".status.yaml")
        {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            assert_clean(&entry.path().display().to_string(), &text);
            checked += 1;
        }
    }
    assert_eq!(checked, names.len() + 1, "a status file per lane");
}
