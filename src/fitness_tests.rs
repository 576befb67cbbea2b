//! The layout's rules, checked: the pure core never imports the async
//! runtime, the file watcher, podman-api or the modules at the edges. A
//! module added to the core belongs in [`CORE`]; a new edge module in
//! [`EDGES`].

use std::path::{Path, PathBuf};

/// The pure core: files -> spec -> hash -> plan -> status, and the small
/// leaves they share. A folder stands for every file below it; every entry
/// must exist (a module that moves is moved here too, not silently dropped).
const CORE: &[&str] = &[
    "lane.rs",
    "yaml",
    "manifest",
    "lanespec",
    "desired.rs",
    "digest.rs",
    "hash.rs",
    "content",
    "labels.rs",
    "container.rs",
    "plan.rs",
    "status.rs",
    "backoff.rs",
    "error.rs",
    "lock.rs",
    "reconcile/report.rs",
];

/// Crates the core must not use.
const CRATES: &[&str] = &[
    "tokio",
    "tokio_util",
    "notify",
    "podman_api",
    "hyper",
    "hyperlocal",
];

/// Modules at the edges (the adapter, the acting and looping parts, the
/// face) that the core must not import.
const EDGES: &[&str] = &[
    "podman",
    "observe",
    "exec",
    "probe",
    "reconcile",
    "daemon",
    "queue",
    "sources",
    "cmd",
    "cli",
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let p = entry.path();
        if p.is_dir() {
            files.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            files.push(p);
        }
    }
    files
}

/// The first edge module a line's `crate::` paths name, if any.
fn edge_in(code: &str) -> Option<&'static str> {
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let names: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group
                .split('}')
                .next()
                .unwrap_or("")
                .split(',')
                .map(|s| s.trim().split("::").next().unwrap_or(""))
                .collect(),
            None => vec![
                rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()
                    .unwrap_or(""),
            ],
        };
        if let Some(m) = EDGES.iter().find(|m| names.contains(m)) {
            return Some(m);
        }
    }
    None
}

/// Each use of a forbidden crate or edge module in `text`, by line; comments
/// and the module's own tests are left out (tests may use anything). In a
/// core file inside an edge folder (`reconcile/report.rs`), `super::` is
/// that edge too.
fn violations(text: &str, inside_edge: bool) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        // The tests module comes last in every file; a test-only item
        // elsewhere (`#[cfg(test)] const …`) does not end the scan.
        let next = lines.get(n + 1).map_or("", |l| l.trim_start());
        if line.trim_start().starts_with("#[cfg(test)]")
            && (next.starts_with("mod ") || next.starts_with("pub(crate) mod "))
        {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        let bad_crate = CRATES.iter().copied().find(|c| {
            code.contains(&format!("{c}::")) || code.trim_start().starts_with(&format!("use {c}"))
        });
        let bad_super = (inside_edge && code.contains("super::")).then_some("super");
        if let Some(what) = bad_crate.or(edge_in(code)).or(bad_super) {
            found.push((n + 1, format!("{what}: {}", line.trim())));
        }
    }
    found
}

#[test]
fn the_pure_core_imports_no_runtime_no_watcher_no_podman_and_no_edge() {
    let mut seen = 0;
    let mut broken = Vec::new();
    for module in CORE {
        assert!(
            src().join(module).exists(),
            "src/{module} is in CORE but gone"
        );
        for file in rust_files(&src().join(module)) {
            seen += 1;
            let text = match std::fs::read_to_string(&file) {
                Ok(text) => text,
                Err(e) => {
                    broken.push(format!("{}: unreadable: {e}", file.display()));
                    continue;
                }
            };
            for (line, what) in violations(&text, module.contains('/')) {
                broken.push(format!(
                    "src/{}:{line}: {what}",
                    file.strip_prefix(src()).unwrap_or(&file).display()
                ));
            }
        }
    }
    assert!(seen >= 12, "the core's files were found ({seen})");
    assert!(
        broken.is_empty(),
        "the core imports an edge:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_check_sees_an_import_of_an_edge() {
    let seen = |text: &str| violations(text, false).len();
    assert_eq!(seen("use crate::podman::Podman;\n"), 1);
    assert_eq!(seen("use crate::{spec, podman::Podman};\n"), 1);
    assert_eq!(seen("    let t = tokio::spawn(f);\n"), 1);
    assert_eq!(seen("use notify::Watcher;\n"), 1);
    assert_eq!(seen("let x = crate::reconcile::Ctx::new();\n"), 1);
    assert_eq!(
        seen("use crate::lanespec::LaneSpec; // not crate::podman::X\n"),
        0
    );
    assert_eq!(
        seen("use crate::cmdline::X;\n"),
        0,
        "a name that only starts like an edge"
    );
    assert_eq!(
        seen("#[cfg(test)]\nmod tests { use crate::podman::X; }\n"),
        0
    );
    assert_eq!(
        seen("#[cfg(test)]\nconst OFF: u8 = 0;\nuse crate::podman::X;\n"),
        1,
        "a test-only item is not the end of the file's code"
    );
    assert_eq!(violations("use super::Ctx;\n", true).len(), 1);
}
