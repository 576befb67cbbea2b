//! `validate [PATH...]`: every problem of the manifests, `file:line:col:
//! message` each, exit 1 on any. A directory is checked whole (with the
//! cross-lane rules); a file is checked within its directory. Codex and
//! `track_content` sources are checked as `apply` would hash them, every bad
//! entry as `path: message` (none of their bytes are read). A lane whose
//! `host` names another host is skipped, and said so; with `--host` naming
//! another machine, mount sources are that machine's and not looked for
//! here. Needs no Podman.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::cli::Global;
use crate::desired::{self, Desired};

pub fn run(global: &Global, paths: &[PathBuf]) -> anyhow::Result<super::Exit> {
    let mut opts = global.load_options();
    // Checking as another host (`--host web-2` on web-1): that host's mount
    // sources are there, not here.
    if global.host.is_some()
        && !crate::lanespec::is_this_host(&global.host(), &crate::cli::this_host())
    {
        opts.mounts = crate::lanespec::MountsOn::Nodes;
    }
    let targets: Vec<(PathBuf, Option<String>, PathBuf)> = if paths.is_empty() {
        vec![(global.dir.clone(), None, global.dir.clone())]
    } else {
        paths
            .iter()
            .map(|p| {
                let (dir, only) = split(p);
                (dir, only, p.clone())
            })
            .collect()
    };
    let here = opts.host.clone().unwrap_or_default();
    let mut seen = HashSet::new();
    let mut count = 0usize;
    let mut lanes = 0usize;
    let mut skipped = 0usize;
    for (dir, only, given) in targets {
        if only.is_some() && std::fs::symlink_metadata(&given).is_err() {
            anyhow::bail!("{}: no such file", given.display());
        }
        let state = desired::load_dir(&dir, opts.clone())?;
        if let Some(name) = &only
            && !state.lanes.contains_key(name)
            && !state.elsewhere.contains_key(name)
        {
            anyhow::bail!(
                "{}: not a lane manifest (lanes are <name>.yaml or .yml)",
                given.display()
            );
        }
        // Another host's lanes are that host's to check: its mount and
        // codex sources are on that host.
        for (name, host) in &state.elsewhere {
            if only.as_ref().is_some_and(|o| o != name) {
                continue;
            }
            let file = state
                .listing
                .lanes
                .get(name)
                .map(|f| f.path.display().to_string());
            eprintln!(
                "{}: skipped: lane {name} runs on host {host}, this is {here} \
                 (--host {host} checks it as that host)",
                file.unwrap_or_else(|| name.clone())
            );
            skipped += 1;
        }
        for (name, d) in &state.lanes {
            if only.as_ref().is_some_and(|o| o != name) {
                continue;
            }
            lanes += 1;
            if let Desired::Invalid { problems, .. } = d {
                for p in problems {
                    let line = p.to_string();
                    if seen.insert(line.clone()) {
                        println!("{line}");
                        count += 1;
                    }
                }
            }
        }
    }
    let skipped = match skipped {
        0 => String::new(),
        n => format!(", {n} skipped (other hosts)"),
    };
    if count > 0 {
        eprintln!("{count} problem(s) in {lanes} lane(s){skipped}");
        return Ok(super::Exit::Failed);
    }
    eprintln!("{lanes} lane(s) valid{skipped}");
    Ok(super::Exit::Ok)
}

/// A directory stands for all its lanes; a file for its own lane (the
/// defaults file for all lanes of its directory).
fn split(path: &Path) -> (PathBuf, Option<String>) {
    if path.is_dir() {
        return (path.to_path_buf(), None);
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))
        .unwrap_or(name);
    if stem == "_defaults" {
        (dir, None)
    } else {
        (dir, Some(stem.to_string()))
    }
}
