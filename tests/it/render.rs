//! `render kube`: golden renders of the example lanes and of a lane using
//! every field; every rendered document checked against the Kubernetes
//! OpenAPI schemas of two versions (kubernetes-validate, strict); the errors
//! (invalid lane, colliding names, empty set, --strict, a codex over a
//! Secret's limit); and the rendered lane run by `podman kube play`.
//!
//! No cluster runs here: what only a cluster shows (the scheduler honouring
//! the nodeSelector, a RollingUpdate's surge, the Service's endpoints) is
//! not checked.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::{Value, json};

use crate::common::{Lanes, free_port, http_get, podman, wait_for, worker};

/// Kubernetes versions the renders are validated against: the oldest one
/// still commonly run, and the newest kubernetes-validate knows.
const KUBE_VERSIONS: [&str; 2] = ["1.33", "1.37"];

/// A repository path.
fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Compares every file of `dir` (and `stderr`) with `tests/golden/<name>/`;
/// `LANECTL_BLESS=1` writes them instead.
fn golden(name: &str, dir: &Path, stderr: &str) {
    let want_dir = repo(&format!("tests/golden/{name}"));
    let mut got: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            (file, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    got.push(("stderr.txt".into(), stderr.to_string()));
    got.sort();
    if std::env::var_os("LANECTL_BLESS").is_some() {
        let _ = std::fs::remove_dir_all(&want_dir);
        std::fs::create_dir_all(&want_dir).unwrap();
        for (file, text) in &got {
            std::fs::write(want_dir.join(file), text).unwrap();
        }
        return;
    }
    let mut want: Vec<String> = std::fs::read_dir(&want_dir)
        .unwrap_or_else(|e| panic!("{}: {e} (LANECTL_BLESS=1 writes it)", want_dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    want.sort();
    let got_names: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(got_names, want, "files of {name}");
    for (file, text) in &got {
        let expected = std::fs::read_to_string(want_dir.join(file)).unwrap();
        assert!(
            *text == expected,
            "{name}/{file} differs from the golden file (LANECTL_BLESS=1 rewrites it):\n--- got\n{text}\n--- want\n{expected}"
        );
    }
}

/// Validates every rendered document of `files` (strict: an unknown field
/// fails) against each of [`KUBE_VERSIONS`]; any line but a pass fails,
/// since the tool exits 0 for a kind it has no schema for.
fn kube_validate(files: &[PathBuf]) {
    let tool = std::env::var("LANECTL_KUBE_VALIDATE").expect(
        "LANECTL_KUBE_VALIDATE: the path of kubernetes-validate (PyPI); scripts/test installs it",
    );
    let mut cmd = Command::new(tool);
    cmd.arg("--strict");
    for v in KUBE_VERSIONS {
        cmd.args(["-k", v]);
    }
    let out = cmd.args(files).output().expect("run kubernetes-validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubernetes-validate:\n{stdout}\n{stderr}"
    );
    let passes = stdout.lines().filter(|l| l.starts_with("INFO ")).count();
    let others: Vec<&str> = stdout.lines().filter(|l| !l.starts_with("INFO ")).collect();
    assert!(
        others.is_empty(),
        "kubernetes-validate:\n{stdout}\n{stderr}"
    );
    assert!(passes >= files.len() * KUBE_VERSIONS.len(), "{stdout}");
}

/// The rendered files of `dir` but the kustomization (a kustomize kind, not
/// one of the API's).
fn objects_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    files
}

fn lanectl_at(cwd: &Path, args: &[&str]) -> crate::common::Run {
    let out = Command::new(env!("CARGO_BIN_EXE_lanectl"))
        .current_dir(cwd)
        .args(args)
        .env_remove("CONTAINER_HOST")
        .output()
        .expect("run lanectl");
    crate::common::Run::of(out)
}

#[test]
fn the_example_lanes_render_to_the_golden_objects_which_kubernetes_accepts() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("deploy");
    // The checkout's own lanes, as on any machine.
    let render_examples = |more: &[&str]| {
        let mut args = vec![
            "--dir",
            "lanes.d",
            "--allow-insecure-permissions",
            "render",
            "kube",
            "--instance",
            "demo",
            "--node-dir",
            "/srv/lanes/lanes.d",
        ];
        args.extend_from_slice(more);
        lanectl_at(&repo(""), &args)
    };
    let run = render_examples(&["-o", dir.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    golden("render-examples", &dir, &run.stderr);
    kube_validate(&objects_in(&dir));

    // The same lanes give the same bytes, on stdout too.
    let stream = render_examples(&[]);
    let files: String = ["alpha.yaml", "beta.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
        .collect();
    assert_eq!(stream.stdout, files);
}

/// A lanes directory with a lane using every field `render` maps, one
/// stopped lane with a user name, and one with fixed host ports.
fn full_lanes() -> Lanes {
    let lanes = Lanes::new("render-full");
    let copy = Command::new("cp")
        .arg("-r")
        .arg(repo("tests/fixtures/codex-fixture"))
        .arg(lanes.path("codex/full"))
        .status()
        .unwrap();
    assert!(copy.success());
    // The golden copy script names the modes: the same whatever the umask
    // the checkout was made with.
    Command::new("chmod")
        .args(["-R", "u=rwX,go=rX"])
        .arg(lanes.path("codex"))
        .status()
        .unwrap();
    lanes.file(
        "lanes.d/_defaults.yaml",
        "instance: fleet\nimage: localhost/lane-worker:dev\n",
    );
    lanes.write(
        "svc_a.b",
        "container_name: svc\n\
         user: \"1000:1000\"\n\
         entrypoint: /usr/local/bin/lane-worker serve\n\
         env: {A: \"1\", B: \"yes\", PRICE: \"$5 $(HOME)\", 1ST: x}\n\
         labels: {team: infra, \"Example.com/team\": x, tier: \"web app\"}\n\
         mounts:\n\
         \x20 - {source: /etc, target: /host-etc, read_only: true, relabel: private}\n\
         \x20 - {source: ../work, target: /data}\n\
         ports:\n\
         \x20 - {container: 8080}\n\
         \x20 - {container: 9090, protocol: udp}\n\
         codex: {source: ../codex/full, target: /home/app/.codex, fingerprint_env: CODEX_SHA}\n\
         probe: {port: 8080, path: /ready, timeout: 45s, interval: 1500ms}\n\
         resources: {memory: 512m, cpus: 1.5, pids: 256}\n\
         stop_timeout: 2500ms\n\
         update: {order: start-first, drain: 5s}\n\
         host: node-1\n",
    );
    lanes.write(
        "9lives",
        "user: worker\nstate: stopped\nresources: {memory: 2g, cpus: 2}\n",
    );
    lanes.write(
        "fixed",
        "user: root\n\
         ports:\n\
         \x20 - {container: 8080, host_ip: 127.0.0.1, host_port: 18080}\n\
         \x20 - {container: 53, host_ip: 0.0.0.0, host_port: 10053, protocol: udp}\n",
    );
    lanes
}

#[test]
fn every_field_renders_to_the_golden_objects_with_a_warning_for_what_cannot_map() {
    let lanes = full_lanes();
    let dir = lanes.path("deploy");
    let run = lanectl_at(
        lanes.root.path(),
        &[
            "--dir",
            "lanes.d",
            "render",
            "kube",
            "--node-dir",
            "/srv/lanes/lanes.d",
            "-o",
            "deploy",
        ],
    );
    assert_eq!(run.code, 0, "{run:?}");
    golden("render-full", &dir, &run.stderr);
    kube_validate(&objects_in(&dir));
    let svc = std::fs::read_to_string(dir.join("svc-a-b.yaml")).unwrap();
    // Kubernetes would expand `$(HOME)` and read `$$` as `$`.
    assert!(svc.contains("value: $$5 $$(HOME)"), "{svc}");
    // The codex target is the emptyDir itself: not the lane user's to chmod
    // (in a cluster it is root's), only what is below it.
    assert!(!svc.contains("chmod 755 /home/app/.codex\n"), "{svc}");
    assert!(
        svc.contains("chmod 755 /home/app/.codex/sessions\n"),
        "{svc}"
    );

    // --strict: each warning is an error, and those lanes are not rendered.
    let strict = lanectl_at(
        lanes.root.path(),
        &[
            "--dir",
            "lanes.d",
            "render",
            "kube",
            "--strict",
            "--node-dir",
            "/n",
        ],
    );
    assert_eq!(strict.code, 1, "{strict:?}");
    assert!(
        strict
            .stderr
            .contains("lanes.d/svc_a.b.yaml:14:44: error: resources.pids"),
        "{strict:?}"
    );
    assert!(
        strict.stderr.contains("lane svc_a.b: not rendered"),
        "{strict:?}"
    );
    assert!(
        strict.stderr.contains("lane 9lives: not rendered"),
        "{strict:?}"
    );
    assert!(!strict.stdout.contains("name: svc-a-b"), "{strict:?}");
    assert!(strict.stdout.contains("name: fixed"), "{strict:?}");
}

#[test]
fn an_invalid_lane_exits_1_and_is_left_out_while_its_file_from_before_is_kept() {
    let lanes = Lanes::new("render-invalid");
    lanes.file("lanes.d/_defaults.yaml", "instance: inv\nimage: i\n");
    lanes.write("a", "ports: [{container: 80}]\n");
    lanes.write("b", "ports: [{container: 81}]\n");
    lanes.write("c", "state: stopped\n");
    let render = |args: &[&str]| {
        let mut all = vec!["render", "kube"];
        all.extend_from_slice(args);
        lanes.lanectl_offline(&all)
    };
    let out = lanes.path("deploy");
    let out = out.to_str().unwrap();
    assert_eq!(render(&["-o", out]).code, 0);
    let kept = std::fs::read_to_string(lanes.path("deploy/b.yaml")).unwrap();
    // Rendered files may hold a codex: only their owner reads them.
    let mode = std::fs::metadata(lanes.path("deploy/b.yaml")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    // A file of the user's own in DIR is never touched.
    lanes.file("deploy/notes.yaml", "mine: true\n");

    // b breaks, c is deleted.
    lanes.write("b", "ports: [{container: 0}]\n");
    std::fs::remove_file(lanes.dir().join("c.yaml")).unwrap();
    let run = render(&[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("b.yaml:1:21: error: "), "{run:?}");
    assert!(run.stderr.contains("lane b: not rendered"), "{run:?}");
    assert!(run.stdout.contains("name: a\n"), "{run:?}");
    assert!(!run.stdout.contains("lane b"), "{run:?}");
    let run = render(&["-o", out]);
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        std::fs::read_to_string(lanes.path("deploy/b.yaml")).unwrap(),
        kept
    );
    assert!(
        !lanes.path("deploy/c.yaml").exists(),
        "c's file goes with c"
    );
    assert!(lanes.path("deploy/notes.yaml").exists());
    let kustomization = std::fs::read_to_string(lanes.path("deploy/kustomization.yaml")).unwrap();
    assert!(
        kustomization.ends_with("resources:\n- a.yaml\n- b.yaml\n"),
        "{kustomization}"
    );

    // Only named lanes into DIR: the others keep their files, listed.
    let run = render(&["a", "-o", out]);
    assert_eq!(run.code, 0, "{run:?}");
    let kustomization = std::fs::read_to_string(lanes.path("deploy/kustomization.yaml")).unwrap();
    assert!(
        kustomization.ends_with("resources:\n- a.yaml\n- b.yaml\n"),
        "{kustomization}"
    );
    // A file render did not write is never overwritten: nothing is written.
    let before = std::fs::read_to_string(lanes.path("deploy/a.yaml")).unwrap();
    lanes.file("deploy/kustomization.yaml", "resources: [mine.yaml]\n");
    let run = render(&["-o", out]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("kustomization.yaml: not written by lanectl render"),
        "{run:?}"
    );
    assert_eq!(
        std::fs::read_to_string(lanes.path("deploy/kustomization.yaml")).unwrap(),
        "resources: [mine.yaml]\n"
    );
    assert_eq!(
        std::fs::read_to_string(lanes.path("deploy/a.yaml")).unwrap(),
        before
    );
    std::fs::remove_file(lanes.path("deploy/kustomization.yaml")).unwrap();
    // A lane whose file would be the kustomization's.
    lanes.write("kustomization", "state: stopped\n");
    let run = render(&["-o", out]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("its file would be kustomization.yaml"),
        "{run:?}"
    );
    std::fs::remove_file(lanes.dir().join("kustomization.yaml")).unwrap();

    // Names that collide once mapped.
    lanes.write("b", "ports: [{container: 81}]\n");
    lanes.write("a_x", "state: stopped\n");
    lanes.write("a.x", "state: stopped\n");
    let run = render(&[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("lane a.x and lane a_x both become the Kubernetes name a-x"),
        "{run:?}"
    );
    assert!(!run.stdout.contains("name: a-x"), "{run:?}");
    // A file from before of the collided name is listed once.
    std::fs::remove_file(lanes.dir().join("a.x.yaml")).unwrap();
    assert_eq!(render(&["-o", out]).code, 0);
    lanes.write("a.x", "state: stopped\n");
    assert_eq!(render(&["-o", out]).code, 1);
    let kustomization = std::fs::read_to_string(lanes.path("deploy/kustomization.yaml")).unwrap();
    assert_eq!(
        kustomization.matches("a-x.yaml").count(),
        1,
        "{kustomization}"
    );

    // Only named lanes; an unknown one is an error.
    let run = render(&["b"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("name: b\n") && !run.stdout.contains("name: a\n"));
    assert_eq!(render(&["nope"]).code, 1);

    // An empty set is an error unless asked for.
    for f in ["a", "b", "a_x", "a.x"] {
        std::fs::remove_file(lanes.dir().join(format!("{f}.yaml"))).unwrap();
    }
    let run = render(&["-o", out]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("--allow-prune-all"), "{run:?}");
    assert!(lanes.path("deploy/a.yaml").exists(), "nothing written");
    let run = render(&["--allow-prune-all", "-o", out]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!lanes.path("deploy/a.yaml").exists());
}

#[test]
fn a_codex_over_a_secrets_limit_is_an_error_of_its_lane() {
    let lanes = Lanes::new("render-big");
    lanes.file("lanes.d/_defaults.yaml", "instance: big\nimage: i\n");
    lanes.file("codex/big/blob", &"x".repeat((1 << 20) + 1));
    lanes.file("codex/mid/blob", &"x".repeat(200 << 10));
    lanes.write("a", "codex: {source: ../codex/mid, target: /c}\n");
    let run = lanes.lanectl_offline(&["render", "kube"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("too large for a client-side `kubectl apply`"),
        "{run:?}"
    );
    // The init container finds the files at /.lanectl-codex-files.
    lanes.write(
        "a",
        "codex: {source: ../codex/mid, target: /.lanectl-codex-files/x}\n",
    );
    let run = lanes.lanectl_offline(&["render", "kube"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("choose another target"), "{run:?}");
    // An env name no Kubernetes takes.
    lanes.write("a", "env: {\"é\": x}\n");
    let run = lanes.lanectl_offline(&["render", "kube"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("Kubernetes refuses this name"),
        "{run:?}"
    );

    lanes.write("a", "codex: {source: ../codex/big, target: /c}\n");
    let run = lanes.lanectl_offline(&["render", "kube"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("a.yaml:1:17: error: the codex holds 1048577 bytes, more than a Kubernetes Secret's 1 MiB"),
        "{run:?}"
    );
    assert!(run.stdout.is_empty(), "{run:?}");

    // One far over the limit is refused before it is read whole.
    lanes.file("codex/huge/blob", &"x".repeat(20 << 20));
    lanes.write("a", "codex: {source: ../codex/huge, target: /c}\n");
    let run = lanes.lanectl_offline(&["render", "kube"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("1 MiB (1048576 bytes) by far"),
        "{run:?}"
    );
}

#[test]
fn a_mount_source_that_is_only_on_the_nodes_renders_where_apply_would_refuse_it() {
    let lanes = Lanes::new("render-nodes");
    lanes.file("lanes.d/_defaults.yaml", "instance: nodes\nimage: i\n");
    lanes.write(
        "a",
        "mounts: [{source: /srv/no-such-data, target: /data, track_content: true}]\n",
    );
    lanes.write("b", "mounts: [{source: ../work, target: /work}]\n");
    let validate = lanes.lanectl_offline(&["validate"]);
    assert_eq!(validate.code, 1, "{validate:?}");
    assert!(
        validate
            .stdout
            .contains("mount source /srv/no-such-data: does not exist"),
        "{validate:?}"
    );
    let run = lanes.lanectl_offline(&["render", "kube"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains(
            "a.yaml:1:10: warning: bind mount of /srv/no-such-data: node-local, rendered as \
             hostPath /srv/no-such-data (type Directory; not found here, so taken for a directory)"
        ),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("path: /srv/no-such-data\n          type: Directory"),
        "{run:?}"
    );
    // A relative source without --node-dir ties the render to this machine.
    assert!(
        run.stderr
            .contains("b.yaml:1:19: warning: mount source ../work is relative"),
        "{run:?}"
    );
    let run = lanes.lanectl_offline(&["render", "kube", "--node-dir", "/srv/lanes/lanes.d"]);
    assert!(!run.stderr.contains("is relative"), "{run:?}");
    assert!(run.stdout.contains("path: /srv/lanes/work\n"), "{run:?}");
}

#[test]
fn instance_namespace_and_host_promises_of_the_readme_hold() {
    let lanes = Lanes::new("render-promises");
    lanes.write("a", "image: i\nstate: stopped\n");
    // No instance declared: derived from this machine's path, a warning
    // (an error under --strict). lanectl_offline passes --instance, so
    // lanectl is run here without it.
    let bare = |args: &[&str]| {
        let mut all = vec!["--dir", "lanes.d", "render", "kube"];
        all.extend_from_slice(args);
        lanectl_at(lanes.root.path(), &all)
    };
    let run = bare(&[]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("warning: no instance declared"),
        "{run:?}"
    );
    let run = bare(&["--strict"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("error: no instance declared"),
        "{run:?}"
    );
    lanes.file("lanes.d/_defaults.yaml", "instance: declared\n");
    let run = bare(&["--strict"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("io.lanectl.instance: declared"),
        "{run:?}"
    );

    // --namespace on every object and on the kustomization; a bad one is a
    // usage error.
    let out = lanes.path("deploy");
    let run = bare(&["--namespace", "team-a", "-o", out.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    let deployment = std::fs::read_to_string(lanes.path("deploy/a.yaml")).unwrap();
    assert!(deployment.contains("  namespace: team-a\n"), "{deployment}");
    let kustomization = std::fs::read_to_string(lanes.path("deploy/kustomization.yaml")).unwrap();
    assert!(
        kustomization.contains("namespace: team-a\n"),
        "{kustomization}"
    );
    assert_eq!(bare(&["--namespace", "Team_A"]).code, 64);

    // A host no node label can hold.
    let long = format!("{}.example.com", "h".repeat(60));
    lanes.write("a", &format!("image: i\nhost: {long}\n"));
    let run = bare(&[]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("longer than a node label value (63)"),
        "{run:?}"
    );

    // A named lane colliding with one not named is an error too: its file
    // would overwrite the other's.
    lanes.write("a", "image: i\nstate: stopped\n");
    lanes.write("a_b", "image: i\nstate: stopped\n");
    lanes.write("a.b", "image: i\nstate: stopped\n");
    let run = bare(&["a.b", "-o", out.to_str().unwrap()]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("both become the Kubernetes name a-b"),
        "{run:?}"
    );
    assert!(!lanes.path("deploy/a-b.yaml").exists());
}

/// Podman 4.3.1's `kube play` differs from Kubernetes in ways this test
/// works around here, never in what lanectl renders:
/// - a Secret volume crashes it without `optional`, and its data is not
///   base64-decoded: the same files go in as a ConfigMap;
/// - a containerPort without hostPort is published on 0.0.0.0 at a random
///   port: an explicit hostIP and hostPort are added;
/// - init containers run again and again under restartPolicy Always: the
///   pod is played with OnFailure;
/// - `$$` is not read as `$` (nor `$(NAME)` expanded): the played lane
///   has no `$`, so that what it runs is what Kubernetes would run.
///
/// The Service is left out (kube play makes no Services).
fn playable(stream: &str, host_port: u16) -> String {
    let docs: Vec<Value> = serde_saphyr::from_multiple(stream).expect("rendered YAML parses");
    let engine = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::new();
    for mut doc in docs {
        match doc["kind"].as_str() {
            Some("Secret") => {
                let data: serde_json::Map<String, Value> = doc["data"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| {
                        let bytes = engine.decode(v.as_str().unwrap()).unwrap();
                        (k.clone(), Value::String(String::from_utf8(bytes).unwrap()))
                    })
                    .collect();
                out.push(json!({
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": doc["metadata"],
                    "data": data,
                }));
            }
            Some("Deployment") => {
                let pod = &mut doc["spec"]["template"]["spec"];
                pod["restartPolicy"] = json!("OnFailure");
                for v in pod["volumes"].as_array_mut().unwrap() {
                    if let Some(secret) = v.as_object_mut().unwrap().remove("secret") {
                        v["configMap"] = json!({"name": secret["secretName"]});
                    }
                }
                for p in pod["containers"][0]["ports"].as_array_mut().unwrap() {
                    p["hostIP"] = json!("127.0.0.1");
                    p["hostPort"] = json!(host_port);
                }
                out.push(doc);
            }
            _ => {}
        }
    }
    serde_saphyr::to_string_multiple(&out).unwrap()
}

#[test]
fn kube_play_runs_the_rendered_lane_with_its_codex_copied_and_a_stopped_lane_runs_nothing() {
    let lanes = Lanes::new("render-play");
    // Text files only: the ConfigMap that stands in for the Secret takes text.
    lanes.file("codex/w/config.toml", "model = \"x\"\n");
    lanes.file("codex/w/sub/notes.txt", "hello\n");
    lanes.file(
        "lanes.d/_defaults.yaml",
        &format!("instance: {}\n", lanes.instance),
    );
    // Not root: the copy must work for the lane's own user, as in a
    // cluster, where root could write anywhere.
    let lane = format!(
        "image: {image}\n\
         user: \"1000:1000\"\n\
         entrypoint: [/usr/local/bin/lane-worker]\n\
         command: [serve]\n\
         env: {{LANE_CODEX_DIR: /codex}}\n\
         mounts: [{{source: {worker}, target: /usr/local/bin/lane-worker, read_only: true}}]\n\
         ports: [{{container: 31417}}]\n\
         codex: {{source: ../codex/w, target: /codex, fingerprint_env: INBOX_RUNTIME_CODEX_SHA}}\n\
         probe: {{path: /healthz}}\n",
        image = crate::common::image(),
        worker = worker().display(),
    );
    let name = format!("{}-w", lanes.instance).replace('_', "-");
    lanes.write(&name, &lane);
    let fingerprint = {
        let run = lanes.lanectl_offline(&["render", "kube"]);
        assert_eq!(run.code, 0, "{run:?}");
        let at = run.stdout.find("io.lanectl.codex-fingerprint: ").unwrap();
        run.stdout[at + 30..at + 94].to_string()
    };

    let port = free_port();
    let play = |stream: &str, file: &str| {
        let path = lanes.path(file);
        std::fs::write(&path, playable(stream, port)).unwrap();
        podman(&["kube", "play", path.to_str().unwrap()]);
        path
    };
    let run = lanes.lanectl_offline(&["render", "kube"]);
    let played = play(&run.stdout, "play.yaml");
    let _down = Down(played.clone());

    // The endpoint answers its probe path.
    let base = format!("http://127.0.0.1:{port}");
    wait_for(std::time::Duration::from_secs(20), || {
        std::panic::catch_unwind(|| http_get(&base, "/healthz")).ok()
    })
    .expect("the played lane answers /healthz");
    // The codex files are there, byte for byte, under the fingerprint.
    let report: Value = serde_json::from_str(&http_get(&base, "/")).unwrap();
    assert_eq!(
        report["env"]["INBOX_RUNTIME_CODEX_SHA"],
        fingerprint.as_str()
    );
    let files: Vec<(String, String)> = report["codex_files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_string(),
                f["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let sha = |text: &str| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    };
    assert_eq!(
        files,
        [
            ("config.toml".to_string(), sha("model = \"x\"\n")),
            ("sub/notes.txt".to_string(), sha("hello\n")),
        ]
    );
    // A copy, writable, not a read-only mount.
    let container = format!("{name}-pod-0-{name}");
    podman(&[
        "exec",
        &container,
        "/bin/sh",
        "-c",
        "echo more >> /codex/config.toml",
    ]);
    let owner = podman(&[
        "exec",
        &container,
        "stat",
        "-c",
        "%u:%g",
        "/codex/config.toml",
    ]);
    assert_eq!(owner.trim(), "1000:1000");

    // state: stopped renders replicas 0, which runs nothing.
    podman(&["kube", "down", played.to_str().unwrap()]);
    lanes.write(&name, &format!("{lane}state: stopped\n"));
    let run = lanes.lanectl_offline(&["render", "kube"]);
    assert!(run.stdout.contains("replicas: 0"), "{run:?}");
    play(&run.stdout, "stopped.yaml");
    let filter = format!("name={name}");
    let listed = podman(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]);
    assert_eq!(listed.trim(), "", "a stopped lane runs nothing");
}

/// Takes a played lane down, whatever the test's outcome.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = crate::common::podman_quietly(&["kube", "down", self.0.to_str().unwrap_or("")]);
    }
}
