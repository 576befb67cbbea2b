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

/// 64 hex digits -> HEX, a port after `127.0.0.1:` -> PORT, an RFC 3339
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
        if hex >= 64 {
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
    let _cleanup = Containers(&["lane-hello", "lane-gamma"]);
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
            Part::File(path, body) => std::fs::write(scene.join(path), body).unwrap(),
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
