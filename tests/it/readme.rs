//! The README, run as written. Every block after a `<!-- readme-test: … -->`
//! marker is part of one scene, in the README's order: `file PATH` writes
//! the block to PATH in the scene's directory, `run` runs each `$ ` line of
//! the block with bash there and compares what it prints with the lines
//! below it (host ports, ids, hashes and times aside; the scene's directory
//! is shown as `/tmp/demo`). The scene's directory stands for both places
//! the README works in (`/tmp/demo` and the checkout, whose `examples/` it
//! links to). Every command must exit 0: where the README shows another
//! exit code it says `echo "exit $?"`.
//!
//! Also here: the git hooks through real pulls, and every row of the
//! README's exit-code table.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Lanes, host, podman_quietly};

/// What a README marker asks for, with its block.
#[derive(Debug)]
enum Part {
    File(String, String),
    Run(String),
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md")
}

/// The marked blocks of the README, in order.
fn parts(readme: &str) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(marker) = line
            .strip_prefix("<!-- readme-test: ")
            .and_then(|m| m.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().expect("a fenced block after the marker");
        assert!(
            fence.starts_with("```"),
            "marker {marker:?} is not followed by a block"
        );
        let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
        let body = body.join("\n") + "\n";
        parts.push(match marker.split_once(' ') {
            Some(("file", path)) => Part::File(path.to_string(), body),
            None if marker == "run" => Part::Run(body),
            _ => panic!("unknown marker {marker:?}"),
        });
    }
    parts
}

/// Masks what differs from run to run, and the layout of table columns.
fn normalized(text: &str, scene: &Path) -> Vec<String> {
    let text = text.replace(&scene.display().to_string(), "/tmp/demo");
    text.lines()
        .map(|line| {
            let masked = mask(line);
            masked.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// 12 or more hex digits (ids, hashes, short ones too) -> HEX, a port after `127.0.0.1:` -> PORT, an RFC 3339
/// time -> TIME.
fn mask(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let rest: String = chars[i..].iter().collect();
        let hex = chars[i..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            .count();
        if hex >= 12 {
            out.push_str("HEX");
            i += hex;
        } else if let Some(after) = rest.strip_prefix("127.0.0.1:") {
            let digits = after.chars().take_while(char::is_ascii_digit).count();
            out.push_str("127.0.0.1:PORT");
            i += "127.0.0.1:".len() + digits;
        } else if is_time(&chars[i..]) {
            out.push_str("TIME");
            i += 20;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// `2026-12-02T04:16:04Z` at the start of `c`.
fn is_time(c: &[char]) -> bool {
    let shape = "dddd-dd-ddTdd:dd:ddZ";
    c.len() >= shape.len()
        && shape.chars().zip(c).all(|(s, c)| {
            if s == 'd' {
                c.is_ascii_digit()
            } else {
                s == *c
            }
        })
}

/// Removes the README's containers however the test ends.
struct Containers(&'static [&'static str]);

impl Drop for Containers {
    fn drop(&mut self) {
        for name in self.0 {
            podman_quietly(&["rm", "-f", "-t", "0", name]);
        }
    }
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_lanectl"))
        .parent()
        .expect("the binary's directory")
        .to_path_buf()
}

/// PATH with the lanectl under test first.
fn path_with_lanectl() -> String {
    format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn the_readme_runs_as_written() {
    let _cleanup = Containers(&["lane-hello", "lane-gamma", "lane-web", "lane-web.next"]);
    let scene = tempfile::Builder::new()
        .prefix("lanectl-readme-")
        .tempdir()
        .expect("tempdir");
    let scene = scene.path();
    std::fs::create_dir(scene.join("lanes.d")).unwrap();
    std::os::unix::fs::symlink(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples"),
        scene.join("examples"),
    )
    .unwrap();

    let parts = parts(&readme());
    let runs = parts.iter().filter(|p| matches!(p, Part::Run(_))).count();
    assert!(
        runs >= 3,
        "the README lost its tested transcripts: {parts:?}"
    );
    for part in parts {
        match part {
            Part::File(path, body) => {
                let path = scene.join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, body).unwrap();
            }
            Part::Run(body) => run_transcript(scene, &body),
        }
    }
}

/// Runs each `$ ` line of a transcript and compares its output.
fn run_transcript(scene: &Path, body: &str) {
    let mut steps: Vec<(String, String)> = Vec::new();
    for line in body.lines() {
        match line.strip_prefix("$ ") {
            Some(cmd) => steps.push((cmd.to_string(), String::new())),
            None => {
                let (_, expected) = steps.last_mut().expect("a transcript starts with `$ `");
                expected.push_str(line);
                expected.push('\n');
            }
        }
    }
    for (cmd, expected) in steps {
        let out = Command::new("bash")
            .args(["-c", &cmd])
            .current_dir(scene)
            .env("PATH", path_with_lanectl())
            .env("CONTAINER_HOST", host())
            .env_remove("LANECTL_LOG")
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "$ {cmd}\nexit {:?}\n{stdout}\n{stderr}",
            out.status.code()
        );
        assert_eq!(
            normalized(&stdout, scene),
            normalized(&expected, scene),
            "$ {cmd}\nstderr:\n{stderr}"
        );
    }
}

#[test]
fn masking_keeps_what_matters() {
    let scene = Path::new("/tmp/x");
    assert_eq!(
        normalized(
            " hello  ready  http://127.0.0.1:45811  lane-hello  0   2026-12-02T04:16:04Z  \n",
            scene
        ),
        ["hello ready http://127.0.0.1:PORT lane-hello 0 TIME"]
    );
    assert_eq!(
        normalized(&format!("spec_hash: sha256:{}\n", "ab".repeat(32)), scene),
        ["spec_hash: sha256:HEX"]
    );
    assert_ne!(
        normalized("hello  nothing\n", scene),
        normalized("hello  create\n", scene)
    );
}

/// Runs git in `dir` with a fixed identity and lanectl on PATH; `env`
/// overrides (e.g. `CONTAINER_HOST`).
pub(crate) fn git(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new("git");
    cmd.arg("-C")
        .arg(dir)
        .args(["-c", "init.defaultBranch=main", "-c", "pull.rebase=false"])
        .args(args)
        .env("PATH", path_with_lanectl())
        .env("CONTAINER_HOST", host())
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("git")
}

pub(crate) fn git_ok(dir: &Path, args: &[&str]) -> String {
    let out = git(dir, args, &[]);
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_git_hooks_apply_on_a_pull_and_a_failing_one_fails_no_pull() {
    let lanes = Lanes::new("hooks");
    let name = format!("{}-a", lanes.instance);
    let _cleanup = ContainerNamed(name.clone());
    let (origin, clone) = (lanes.path("origin"), lanes.path("clone"));
    let manifest =
        |v: &str| lanes.worker_lane(&format!("container_name: {name}\nenv: {{V: '{v}'}}\n"));
    std::fs::create_dir_all(origin.join("lanes.d")).unwrap();
    std::fs::write(origin.join("lanes.d/a.yaml"), manifest("1")).unwrap();
    std::fs::write(origin.join("lanes.d/.gitignore"), "*.status.yaml\n").unwrap();
    git_ok(&origin, &["init", "-q"]);
    git_ok(&origin, &["add", "-A"]);
    git_ok(&origin, &["commit", "-qm", "one lane"]);
    git_ok(&lanes.path(""), &["clone", "-q", "origin", "clone"]);
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/git-hooks");
    for hook in ["post-merge", "post-rewrite"] {
        std::fs::copy(hooks.join(hook), clone.join(".git/hooks").join(hook)).unwrap();
    }
    // A new repository: the first apply is by hand (no hook ran yet).
    let status = || read_status(&clone.join("lanes.d/a.status.yaml"));
    assert!(status().is_none());
    let first = Command::new(env!("CARGO_BIN_EXE_lanectl"))
        .args(["--dir", "lanes.d", "apply"])
        .current_dir(&clone)
        .env("CONTAINER_HOST", host())
        .output()
        .unwrap();
    assert!(first.status.success(), "{first:?}");
    let id =
        |s: Option<serde_json::Value>| s.and_then(|s| s["container_id"].as_str().map(String::from));
    let one = id(status()).expect("ready after the first apply");
    // The status files stay out of git.
    assert_eq!(git_ok(&clone, &["status", "--porcelain"]), "");

    // A merging pull applies the change.
    let commit = |v: &str| {
        std::fs::write(origin.join("lanes.d/a.yaml"), manifest(v)).unwrap();
        git_ok(&origin, &["commit", "-qam", v]);
    };
    commit("2");
    git_ok(&clone, &["pull", "-q"]);
    let two = id(status()).unwrap();
    assert_ne!(two, one, "post-merge applied the pull");
    assert_eq!(status().unwrap()["phase"], "ready");

    // A rebasing pull over a local commit applies it too.
    std::fs::write(clone.join("NOTES"), "local\n").unwrap();
    git_ok(&clone, &["add", "NOTES"]);
    git_ok(&clone, &["commit", "-qm", "local"]);
    commit("3");
    git_ok(&clone, &["pull", "-q", "--rebase"]);
    let three = id(status()).unwrap();
    assert_ne!(three, two, "post-rewrite applied the rebase");

    // A hook that fails (its Podman cannot be reached) fails no pull.
    commit("4");
    let pull = git(
        &clone,
        &["pull", "-q"],
        &[("CONTAINER_HOST", "unix:///nonexistent/podman.sock")],
    );
    assert!(pull.status.success(), "{pull:?}");
    let said = String::from_utf8_lossy(&pull.stderr) + String::from_utf8_lossy(&pull.stdout);
    assert!(said.contains("nonexistent"), "the hook said why: {said}");
    let pulled = std::fs::read_to_string(clone.join("lanes.d/a.yaml")).unwrap();
    assert!(pulled.contains("V: '4'"), "the pull went through: {pulled}");
    assert_eq!(
        id(status()).unwrap(),
        three,
        "the running lane is untouched"
    );
}

/// Removes a container by name however the test ends.
struct ContainerNamed(String);

impl Drop for ContainerNamed {
    fn drop(&mut self) {
        podman_quietly(&["rm", "-f", "-t", "0", &self.0]);
    }
}

fn read_status(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(serde_saphyr::from_str(&text).expect("status file parses"))
}

/// A lanectl run on `dir` (not necessarily the test's lanes directory).
fn lanectl_on(lanes: &Lanes, dir: &Path, args: &[&str]) -> i32 {
    lanes.lanectl_in(dir, &lanes.instance, args).code
}

/// One assertion per row (and per case a row names) of the README's
/// exit-code table, in its order.
#[test]
fn every_row_of_the_exit_code_table() {
    let lanes = Lanes::new("exit-codes");
    let missing = lanes.path("no-such-dir");
    let unreachable = "unix:///nonexistent/podman.sock";
    let code = |args: &[&str]| lanes.lanectl(args).code;

    // run: 1 when the lanes dir is missing at start; 0 after SIGTERM.
    assert_eq!(
        lanectl_on(&lanes, &missing, &["run"]),
        1,
        "run, missing dir"
    );
    lanes.write("a", &lanes.worker_lane(""));
    let mut daemon = crate::common::Daemon::start(&lanes, &[]);
    crate::common::wait_for(std::time::Duration::from_secs(30), || lanes.ready_id("a"))
        .unwrap_or_else(|| panic!("a never ready: {}", daemon.log()));
    assert_eq!(
        daemon.terminate(std::time::Duration::from_secs(20)),
        Some(0),
        "run, SIGTERM"
    );

    // apply: 0 all ready (or declared stopped); 1 for a named lane without a
    // manifest, an unreachable Podman, a missing lanes dir, a lane not ready.
    assert_eq!(code(&["apply"]), 0, "apply, all ready");
    lanes.write("s", &lanes.worker_lane("state: stopped\n"));
    assert_eq!(code(&["apply"]), 0, "apply, declared stopped");
    assert_eq!(
        code(&["apply", "nope"]),
        1,
        "apply, named lane without manifest"
    );
    lanes.write("far", "image: i\nhost: far-away\n");
    assert_eq!(
        code(&["apply", "far"]),
        1,
        "apply, named lane of another host"
    );
    assert_eq!(
        code(&["plan", "far"]),
        1,
        "plan, named lane of another host"
    );
    std::fs::remove_file(lanes.dir().join("far.yaml")).unwrap();
    assert_eq!(
        lanes
            .lanectl_without_podman(Some(unreachable), &["apply"])
            .code,
        1,
        "apply, Podman unreachable"
    );
    assert_eq!(
        lanectl_on(&lanes, &missing, &["apply"]),
        1,
        "apply, missing dir"
    );

    // plan: 0 whatever it would change; 2 with --detailed-exitcode when it
    // would change something, 0 when not.
    assert_eq!(
        code(&["plan", "--detailed-exitcode"]),
        0,
        "plan -d, no changes"
    );
    lanes.write("b", &lanes.worker_lane(""));
    assert_eq!(code(&["plan"]), 0, "plan, changes");
    assert_eq!(
        code(&["plan", "--detailed-exitcode"]),
        2,
        "plan -d, changes"
    );
    std::fs::remove_file(lanes.dir().join("b.yaml")).unwrap();
    // plan: 1 for a named lane without manifest, an unreachable Podman.
    assert_eq!(
        code(&["plan", "nope"]),
        1,
        "plan, named lane without manifest"
    );
    assert_eq!(
        lanes
            .lanectl_without_podman(Some(unreachable), &["plan"])
            .code,
        1,
        "plan, Podman unreachable"
    );
    // plan: 1 for an invalid lane, a missing image, a name another
    // container holds (with or without --detailed-exitcode).
    let foreign = format!("{}-foreign", lanes.instance);
    crate::common::podman(&[
        "create",
        "--name",
        &foreign,
        &crate::common::image(),
        "/bin/sh",
    ]);
    let _foreign = ContainerNamed(foreign.clone());
    for (lane, yaml, row) in [
        ("bad", "imgae: x\n".to_string(), "invalid lane"),
        (
            "noimage",
            lanes
                .worker_lane("")
                .replace(&crate::common::image(), "localhost/no-such-image:1"),
            "missing image",
        ),
        (
            "held",
            lanes.worker_lane(&format!("container_name: {foreign}\n")),
            "name held by another container",
        ),
    ] {
        lanes.write(lane, &yaml);
        assert_eq!(code(&["plan"]), 1, "plan, {row}");
        assert_eq!(code(&["plan", "--detailed-exitcode"]), 1, "plan -d, {row}");
        std::fs::remove_file(lanes.dir().join(format!("{lane}.yaml"))).unwrap();
    }
    // plan: 1 for a refused prune-all (with or without the flag).
    let empty = lanes.path("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_eq!(
        lanectl_on(&lanes, &empty, &["plan"]),
        1,
        "plan, prune-all refused"
    );
    assert_eq!(
        lanectl_on(&lanes, &empty, &["plan", "--detailed-exitcode"]),
        1,
        "plan -d, prune-all refused"
    );

    // status: 0; 1 when the lanes dir is missing.
    assert_eq!(code(&["status"]), 0, "status");
    assert_eq!(code(&["status", "a"]), 0, "status, a named lane");
    assert_eq!(code(&["status", "nope"]), 1, "status, an unknown lane");
    // completions: 0; another shell is a usage error.
    assert_eq!(code(&["completions", "bash"]), 0, "completions");
    assert_eq!(code(&["completions", "tcsh"]), 64, "completions, tcsh");
    assert_eq!(
        lanectl_on(&lanes, &missing, &["status"]),
        1,
        "status, missing dir"
    );
    // validate: 0 valid, 1 any problem.
    assert_eq!(code(&["validate"]), 0, "validate, valid");
    lanes.write("bad", "imgae: x\n");
    assert_eq!(code(&["validate"]), 1, "validate, a problem");
    std::fs::remove_file(lanes.dir().join("bad.yaml")).unwrap();
    // schema: 0.
    assert_eq!(code(&["schema"]), 0, "schema");
    // A usage error: 64.
    assert_eq!(code(&["plan", "--no-such-flag"]), 64, "usage error");
    assert_eq!(
        code(&["apply", "--jobs", "many"]),
        64,
        "usage error, bad value"
    );
    // wait: 0 all there; 1 at the timeout, for an invalid lane, a named lane
    // without a manifest, a missing lanes dir.
    assert_eq!(
        code(&["wait", "a", "--timeout", "5s"]),
        0,
        "wait, all there"
    );
    lanes.write("b", &lanes.worker_lane(""));
    assert_eq!(
        code(&["wait", "b", "--timeout", "200ms"]),
        1,
        "wait, timeout"
    );
    std::fs::remove_file(lanes.dir().join("b.yaml")).unwrap();
    lanes.write("bad", "imgae: x\n");
    assert_eq!(code(&["wait", "bad"]), 1, "wait, invalid lane");
    std::fs::remove_file(lanes.dir().join("bad.yaml")).unwrap();
    assert_eq!(
        code(&["wait", "nope"]),
        1,
        "wait, named lane without manifest"
    );
    assert_eq!(
        lanectl_on(&lanes, &missing, &["wait"]),
        1,
        "wait, missing dir"
    );
    // render kube: 0 all rendered; 1 for an invalid lane, a warning under
    // --strict, two lanes mapping to one name, no lane without
    // --allow-prune-all, a missing lanes dir.
    assert_eq!(code(&["render", "kube"]), 0, "render");
    lanes.write("bad", "imgae: x\n");
    assert_eq!(code(&["render", "kube"]), 1, "render, invalid lane");
    std::fs::remove_file(lanes.dir().join("bad.yaml")).unwrap();
    assert_eq!(
        code(&["render", "kube", "--strict"]),
        1,
        "render, a warning under --strict"
    );
    lanes.write("x_y", "image: i\nstate: stopped\n");
    lanes.write("x.y", "image: i\nstate: stopped\n");
    assert_eq!(code(&["render", "kube"]), 1, "render, names collide");
    std::fs::remove_file(lanes.dir().join("x_y.yaml")).unwrap();
    std::fs::remove_file(lanes.dir().join("x.y.yaml")).unwrap();
    assert_eq!(
        lanectl_on(&lanes, &empty, &["render", "kube"]),
        1,
        "render, no lane"
    );
    assert_eq!(
        lanectl_on(&lanes, &empty, &["render", "kube", "--allow-prune-all"]),
        0,
        "render, no lane, allowed"
    );
    assert_eq!(
        lanectl_on(&lanes, &missing, &["render", "kube"]),
        1,
        "render, missing dir"
    );
    // down: 1 for a missing lanes dir (removing nothing); 0 otherwise.
    assert_eq!(
        lanectl_on(&lanes, &missing, &["down"]),
        1,
        "down, missing dir"
    );
    assert!(
        lanes.ready_id("a").is_some(),
        "a missing dir removed nothing"
    );
    assert_eq!(code(&["down"]), 0, "down");
    assert!(crate::common::containers_of(&lanes.instance).is_empty());
}
