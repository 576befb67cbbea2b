//! The lanes directory as a whole -> what each lane wants.
//!
//! Lists the directory, checks who may command lanectl (SPEC.md "Safety"),
//! reads `_defaults.yaml` once, loads and resolves every lane, and applies the
//! cross-lane rules. Each lane ends up either valid (a `LaneSpec`) or invalid
//! (every problem, with positions); a problem of one lane never stops another.
//! Nothing here talks to Podman.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::lane::{self, DirListing, ListError};
use crate::manifest::{self, Loaded, Problem, Source};
use crate::spec::{self, LaneSpec};

/// What one lane wants, or why it cannot be known.
#[derive(Debug, Clone)]
pub enum Desired {
    Valid {
        spec: Box<LaneSpec>,
        manifest_sha256: String,
    },
    Invalid {
        problems: Vec<Problem>,
        manifest_sha256: Option<String>,
    },
}

/// Every lane of a directory.
#[derive(Debug)]
pub struct DirState {
    pub lanes: BTreeMap<String, Desired>,
    pub listing: DirListing,
}

impl DirState {
    /// The distinct images of the valid lanes.
    pub fn images(&self) -> BTreeSet<&str> {
        self.lanes
            .values()
            .filter_map(|d| match d {
                Desired::Valid { spec, .. } => Some(spec.image.as_str()),
                Desired::Invalid { .. } => None,
            })
            .collect()
    }
}

/// Options that relax checks.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    pub allow_insecure_permissions: bool,
}

/// Reads the whole directory. Only a directory that cannot be listed is an
/// error; everything else is a lane's problem.
pub fn load_dir(dir: &Path, opts: LoadOptions) -> Result<DirState, ListError> {
    let listing = lane::list_dir(dir)?;
    let check = !opts.allow_insecure_permissions && is_root();
    let dir_problem = if check {
        check_dir_chain(dir).err()
    } else {
        None
    };

    let defaults = listing.defaults.as_ref().map(|path| {
        let perm = if check { check_file(path).err() } else { None };
        match perm {
            Some(p) => Err(vec![p]),
            None => manifest::read_source(path),
        }
    });

    let mut lanes = BTreeMap::new();
    let mut loaded: BTreeMap<String, Loaded> = BTreeMap::new();
    for (name, file) in &listing.lanes {
        let mut problems = Vec::new();
        if let Some(p) = &file.problem {
            problems.push(Problem::in_file(&file.path, p.clone()));
        }
        if let Some(p) = &dir_problem {
            problems.push(p.clone());
        }
        if check {
            problems.extend(check_file(&file.path).err());
        }
        if let Some(Err(defaults_problems)) = &defaults {
            problems.extend(defaults_problems.iter().cloned());
        }
        let source = manifest::read_source(&file.path);
        let sha = source.as_ref().ok().map(|s| s.sha256.clone());
        let invalid = |problems| Desired::Invalid {
            problems,
            manifest_sha256: sha.clone(),
        };
        let source = match source {
            Ok(s) if problems.is_empty() => s,
            Ok(_) => {
                lanes.insert(name.clone(), invalid(problems));
                continue;
            }
            Err(p) => {
                problems.extend(p);
                lanes.insert(name.clone(), invalid(problems));
                continue;
            }
        };
        let defaults_source: Option<&Source> = defaults.as_ref().and_then(|d| d.as_ref().ok());
        match manifest::load(source, defaults_source) {
            Ok(l) => {
                loaded.insert(name.clone(), l);
            }
            Err(p) => {
                lanes.insert(name.clone(), invalid(p));
            }
        }
    }

    // Relative sources resolve against the directory's canonical path, so
    // that the hash does not depend on how `--dir` was spelled (a daemon
    // started through a symlink and a git hook given the physical path must
    // agree). Problems keep naming the files as the user spelled them.
    let base = std::fs::canonicalize(dir)
        .or_else(|_| std::path::absolute(dir))
        .unwrap_or_else(|_| dir.to_path_buf());
    let mut specs: BTreeMap<String, (LaneSpec, &Loaded)> = BTreeMap::new();
    for (name, l) in &loaded {
        match spec::resolve(name, l, &base) {
            Ok(s) => {
                specs.insert(name.clone(), (s, l));
            }
            Err(problems) => {
                lanes.insert(
                    name.clone(),
                    Desired::Invalid {
                        problems,
                        manifest_sha256: Some(l.sha256.clone()),
                    },
                );
            }
        }
    }
    let across = spec::check_across(&specs);
    for (name, (spec, l)) in specs {
        let manifest_sha256 = l.sha256.clone();
        let desired = match across.get(&name) {
            Some(problem) => Desired::Invalid {
                problems: vec![problem.clone()],
                manifest_sha256: Some(manifest_sha256),
            },
            None => match check_sources(&spec, check) {
                Err(problem) => Desired::Invalid {
                    problems: vec![problem],
                    manifest_sha256: Some(manifest_sha256),
                },
                Ok(()) => Desired::Valid {
                    spec: Box::new(spec),
                    manifest_sha256,
                },
            },
        };
        lanes.insert(name, desired);
    }
    Ok(DirState { lanes, listing })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A file that only root (or the user lanectl runs as) can write.
fn check_file(path: &Path) -> Result<(), Problem> {
    check_owner_and_mode(path, false).map_err(|m| Problem::in_file(path, m))
}

/// The lanes directory, and its parents up to `/`.
fn check_dir_chain(dir: &Path) -> Result<(), Problem> {
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    check_owner_and_mode(&abs, false).map_err(|m| Problem::in_file(&abs, m))?;
    for parent in abs.ancestors().skip(1) {
        check_owner_and_mode(parent, true).map_err(|m| Problem::in_file(parent, m))?;
    }
    Ok(())
}

/// Codex and `track_content` sources: whoever can write there can put files
/// into a root container.
fn check_sources(spec: &LaneSpec, check: bool) -> Result<(), Problem> {
    if !check {
        return Ok(());
    }
    let sources: Vec<&PathBuf> = spec
        .codex
        .iter()
        .map(|c| &c.source)
        .chain(
            spec.mounts
                .iter()
                .filter(|m| m.track_content)
                .map(|m| &m.source),
        )
        .collect();
    for source in sources {
        check_tree(source)?;
        for parent in source.ancestors().skip(1) {
            check_owner_and_mode(parent, true).map_err(|m| Problem::in_file(parent, m))?;
        }
    }
    Ok(())
}

/// A source and everything under it (not following symlinks: a link's target
/// is checked by the fingerprint's own rules).
fn check_tree(root: &Path) -> Result<(), Problem> {
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(|e| Problem::in_file(root, format!("cannot read: {e}")))?;
        if entry.path_is_symlink() {
            continue;
        }
        check_owner_and_mode(entry.path(), false).map_err(|m| Problem::in_file(entry.path(), m))?;
    }
    Ok(())
}

const FIX: &str = "(fix with chmod go-w / chown root, or pass --allow-insecure-permissions)";

fn check_owner_and_mode(path: &Path, parent: bool) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot stat: {e}"))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != me {
        return Err(format!(
            "owned by uid {}, not root: refused because a manifest can mount any host path into a root container {FIX}",
            meta.uid()
        ));
    }
    let mode = meta.mode();
    let sticky = mode & 0o1000 != 0;
    if parent {
        if mode & 0o002 != 0 && !sticky {
            return Err(format!(
                "writable by others without the sticky bit (mode {:o}): anyone could swap the lanes directory {FIX}",
                mode & 0o7777
            ));
        }
    } else if mode & 0o022 != 0 {
        return Err(format!(
            "writable by group or others (mode {:o}): refused because lanectl runs as root {FIX}",
            mode & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn one_bad_lane_does_not_stop_the_others() {
        let dir = dir_with(&[("a.yaml", "image: i\n"), ("b.yaml", "image: [\n")]);
        let state = load_dir(dir.path(), LoadOptions::default()).unwrap();
        assert!(matches!(state.lanes["a"], Desired::Valid { .. }));
        assert!(matches!(state.lanes["b"], Desired::Invalid { .. }));
    }

    #[test]
    fn two_lanes_with_one_container_name_are_both_invalid() {
        let dir = dir_with(&[
            ("a.yaml", "image: i\ncontainer_name: same\n"),
            ("b.yaml", "image: i\ncontainer_name: same\n"),
        ]);
        let state = load_dir(dir.path(), LoadOptions::default()).unwrap();
        for lane in ["a", "b"] {
            let Desired::Invalid { problems, .. } = &state.lanes[lane] else {
                panic!("{lane} should be invalid");
            };
            assert!(problems[0].to_string().contains(":2:"), "{:?}", problems);
        }
    }

    #[test]
    fn a_world_writable_file_deep_in_a_codex_source_is_refused_as_root() {
        if !is_root() {
            return; // the rule applies only to root; CI runs as root
        }
        let dir = dir_with(&[(
            "a.yaml",
            "image: i\ncodex: {source: ../codex, target: /c}\n",
        )]);
        let lanes = dir.path().join("lanes.d");
        std::fs::create_dir(&lanes).unwrap();
        std::fs::rename(dir.path().join("a.yaml"), lanes.join("a.yaml")).unwrap();
        std::fs::create_dir_all(dir.path().join("codex/sub")).unwrap();
        let secret = dir.path().join("codex/sub/auth.json");
        std::fs::write(&secret, "{}").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o666)).unwrap();
        let state = load_dir(&lanes, LoadOptions::default()).unwrap();
        let Desired::Invalid { problems, .. } = &state.lanes["a"] else {
            panic!("should be refused");
        };
        assert!(
            problems[0].to_string().contains("auth.json"),
            "{problems:?}"
        );
    }

    /// The reason lane `a` of `dir` is invalid (as root).
    fn refusal(dir: &Path) -> String {
        let state = load_dir(dir, LoadOptions::default()).unwrap();
        match &state.lanes["a"] {
            Desired::Invalid { problems, .. } => problems[0].to_string(),
            Desired::Valid { .. } => panic!("lane a should be refused"),
        }
    }

    #[test]
    fn as_root_each_insecure_case_is_refused_with_its_reason() {
        if !is_root() {
            return; // the rule applies only to root; CI runs as root
        }
        let mode =
            |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        // A manifest owned by another (non-root) user.
        let dir = dir_with(&[("a.yaml", "image: i\n")]);
        std::os::unix::fs::chown(dir.path().join("a.yaml"), Some(1234), None).unwrap();
        assert!(refusal(dir.path()).contains("owned by uid 1234"));
        // A world-writable manifest.
        let dir = dir_with(&[("a.yaml", "image: i\n")]);
        mode(&dir.path().join("a.yaml"), 0o646);
        assert!(refusal(dir.path()).contains("writable by group or others"));
        // The lanes directory itself.
        let dir = dir_with(&[("a.yaml", "image: i\n")]);
        mode(dir.path(), 0o777);
        assert!(refusal(dir.path()).contains("writable by group or others"));
        // _defaults.yaml: every lane.
        let dir = dir_with(&[("a.yaml", "image: i\n"), ("_defaults.yaml", "user: root\n")]);
        mode(&dir.path().join("_defaults.yaml"), 0o664);
        assert!(refusal(dir.path()).contains("_defaults.yaml"));
        // A parent that others can write, without the sticky bit.
        let parent = tempfile::tempdir().unwrap();
        let lanes = parent.path().join("lanes.d");
        std::fs::create_dir(&lanes).unwrap();
        std::fs::write(lanes.join("a.yaml"), "image: i\n").unwrap();
        mode(&lanes.join("a.yaml"), 0o644);
        mode(parent.path(), 0o777);
        assert!(refusal(&lanes).contains("without the sticky bit"));
        mode(parent.path(), 0o1777);
        let state = load_dir(&lanes, LoadOptions::default()).unwrap();
        assert!(
            matches!(state.lanes["a"], Desired::Valid { .. }),
            "sticky is fine"
        );
    }

    #[test]
    fn a_group_writable_manifest_is_refused_as_root() {
        if !is_root() {
            return; // the rule applies only to root; CI runs as root
        }
        let dir = dir_with(&[("a.yaml", "image: i\n")]);
        let path = dir.path().join("a.yaml");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let state = load_dir(dir.path(), LoadOptions::default()).unwrap();
        let Desired::Invalid { problems, .. } = &state.lanes["a"] else {
            panic!("should be refused");
        };
        assert!(problems[0].message.contains("writable by group"));
        let relaxed = LoadOptions {
            allow_insecure_permissions: true,
        };
        let state = load_dir(dir.path(), relaxed).unwrap();
        assert!(matches!(state.lanes["a"], Desired::Valid { .. }));
    }
}
