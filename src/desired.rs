//! The lanes directory as a whole -> what each lane wants.
//!
//! Lists the directory, checks who may command lanectl (SPEC.md "Safety"),
//! reads `_defaults.yaml` once, loads and resolves every lane, applies the
//! cross-lane rules, and checks each valid lane's codex and `track_content`
//! sources by the fingerprint's own rules and the permission policy
//! ([`hash::check_source`]), so that what `apply` would refuse at hash time
//! is already `invalid` here, and `validate` shows it. Each lane ends up either valid (a `LaneSpec`) or invalid
//! (every problem, with positions); a problem of one lane never stops another.
//! Nothing here talks to Podman.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::hash::{self, Policy, Shape};
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
    load(dir, Policy::of_process(opts.allow_insecure_permissions))
}

/// [`load_dir`] under a given permission policy.
fn load(dir: &Path, policy: Policy) -> Result<DirState, ListError> {
    let listing = lane::list_dir(dir)?;
    let check = policy.check;
    let dir_problem = if check {
        check_dir_chain(dir, policy).err()
    } else {
        None
    };

    let defaults = listing.defaults.as_ref().map(|path| {
        let perm = if check {
            check_file(path, policy).err()
        } else {
            None
        };
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
            problems.extend(check_file(&file.path, policy).err());
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
            None => {
                let problems = check_sources(&spec, policy);
                if problems.is_empty() {
                    Desired::Valid {
                        spec: Box::new(spec),
                        manifest_sha256,
                    }
                } else {
                    Desired::Invalid {
                        problems,
                        manifest_sha256: Some(manifest_sha256),
                    }
                }
            }
        };
        lanes.insert(name, desired);
    }
    Ok(DirState { lanes, listing })
}

/// A file that only root (or the user lanectl runs as) can write.
fn check_file(path: &Path, policy: Policy) -> Result<(), Problem> {
    let meta =
        std::fs::metadata(path).map_err(|e| Problem::in_file(path, format!("cannot stat: {e}")))?;
    policy.content(&meta).map_err(|m| Problem::in_file(path, m))
}

/// The lanes directory, and its parents up to `/`.
fn check_dir_chain(dir: &Path, policy: Policy) -> Result<(), Problem> {
    let abs = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    check_file(&abs, policy)?;
    for parent in abs.ancestors().skip(1) {
        let meta = std::fs::metadata(parent)
            .map_err(|e| Problem::in_file(parent, format!("cannot stat: {e}")))?;
        policy
            .parent(&meta)
            .map_err(|m| Problem::in_file(parent, m))?;
    }
    Ok(())
}

/// Codex and `track_content` sources: what the files alone show (see
/// [`hash::check_source`]: the fingerprint's own rules, and who could have
/// written there), every problem with its path, at most
/// [`Findings::LIMIT`](hash::Findings::LIMIT) per source.
fn check_sources(spec: &LaneSpec, policy: Policy) -> Vec<Problem> {
    let codex = spec.codex.iter().map(|c| (&c.source, Shape::Dir));
    let tracked = spec
        .mounts
        .iter()
        .filter(|m| m.track_content)
        .map(|m| (&m.source, Shape::DirOrFile));
    let mut problems = Vec::new();
    for (source, shape) in codex.chain(tracked) {
        let found = hash::check_source(source, shape, policy);
        problems.extend(
            found
                .found
                .into_iter()
                .map(|f| Problem::in_file(&f.path, f.message)),
        );
        if found.more > 0 {
            problems.push(Problem::in_file(
                source,
                format!("and {} more problems below", found.more),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};
    use std::path::PathBuf;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// Checks as lanectl does as root, whoever runs the test (files are owned
    /// by the user running it).
    fn strict() -> Policy {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        Policy { check: true, euid }
    }

    fn set_mode(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A root dir holding `lanes.d/a.yaml` (`yaml`), all in safe modes.
    fn lane_with(yaml: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        set_mode(root.path(), 0o755);
        let lanes = root.path().join("lanes.d");
        std::fs::create_dir(&lanes).unwrap();
        set_mode(&lanes, 0o755);
        std::fs::write(lanes.join("a.yaml"), yaml).unwrap();
        set_mode(&lanes.join("a.yaml"), 0o644);
        root
    }

    /// A file under `root` with `mode`, its directories made 0755.
    fn file_in(root: &Path, rel: &str, mode: u32) -> PathBuf {
        let path = root.join(rel);
        let parent = path.parent().unwrap();
        std::fs::create_dir_all(parent).unwrap();
        set_mode(parent, 0o755);
        std::fs::write(&path, "x").unwrap();
        set_mode(&path, mode);
        path
    }

    /// Lane `a`'s problems under `policy`, as `validate` prints them.
    fn problems_of(root: &Path, policy: Policy) -> Vec<String> {
        let state = load(&root.join("lanes.d"), policy).unwrap();
        match &state.lanes["a"] {
            Desired::Invalid { problems, .. } => problems.iter().map(|p| p.to_string()).collect(),
            Desired::Valid { .. } => Vec::new(),
        }
    }

    /// Whether some problem is about `path` and says `what`.
    fn names(problems: &[String], path: &Path, what: &str) -> bool {
        let head = format!("{}: ", path.display());
        problems
            .iter()
            .any(|p| p.starts_with(&head) && p.contains(what))
    }

    #[test]
    fn a_codex_source_given_as_a_symlink_to_a_group_writable_dir_is_refused() {
        let root = lane_with("image: i\ncodex: {source: ../link, target: /c}\n");
        file_in(root.path(), "real/config.toml", 0o644);
        let real = root.path().join("real");
        set_mode(&real, 0o775);
        symlink("real", root.path().join("link")).unwrap();
        let problems = problems_of(root.path(), strict());
        assert!(names(&problems, &real, "writable by group"), "{problems:?}");
        assert!(names(&problems, &real, "chmod go-w"), "{problems:?}");
        assert!(problems_of(root.path(), Policy::OFF).is_empty());
    }

    #[test]
    fn a_codex_source_whose_real_parent_others_can_write_without_the_sticky_bit_is_refused() {
        let root = lane_with("image: i\ncodex: {source: ../link, target: /c}\n");
        file_in(root.path(), "open/codex/config.toml", 0o644);
        let open = root.path().join("open");
        set_mode(&open, 0o777);
        symlink("open/codex", root.path().join("link")).unwrap();
        let problems = problems_of(root.path(), strict());
        assert!(
            names(&problems, &open, "without the sticky bit"),
            "{problems:?}"
        );
        set_mode(&open, 0o1777);
        assert_eq!(problems_of(root.path(), strict()), Vec::<String>::new());
    }

    #[test]
    fn a_track_content_source_given_as_a_symlink_to_a_group_writable_file_is_refused() {
        let root = lane_with(
            "image: i\nmounts: [{source: ../link.txt, target: /t, track_content: true}, \
             {source: ../tree, target: /u, track_content: true}]\n",
        );
        let real = file_in(root.path(), "real.txt", 0o664);
        symlink("real.txt", root.path().join("link.txt")).unwrap();
        let deep = file_in(root.path(), "tree/sub/deep.txt", 0o646);
        set_mode(&root.path().join("tree"), 0o755);
        let problems = problems_of(root.path(), strict());
        assert!(names(&problems, &real, "writable by group"), "{problems:?}");
        assert!(names(&problems, &deep, "writable by group"), "{problems:?}");
        assert_eq!(problems.len(), 2, "{problems:?}");
    }

    #[test]
    fn a_source_given_as_a_symlink_owned_by_another_user_is_refused() {
        let root = lane_with("image: i\ncodex: {source: ../link, target: /c}\n");
        file_in(root.path(), "real/config.toml", 0o644);
        let link = root.path().join("link");
        symlink("real", &link).unwrap();
        // Root trusts what root owns: then the link is given away; anyone else
        // tries the check as if lanectl ran as another user.
        let policy = if is_root() {
            std::os::unix::fs::lchown(&link, Some(1234), None).unwrap();
            strict()
        } else {
            Policy {
                check: true,
                euid: strict().euid + 1,
            }
        };
        let problems = problems_of(root.path(), policy);
        assert!(names(&problems, &link, "owned by uid"), "{problems:?}");
    }

    #[test]
    fn every_problem_of_a_codex_tree_is_reported_up_to_a_limit() {
        let root = lane_with("image: i\ncodex: {source: ../codex, target: /c}\n");
        file_in(root.path(), "codex/ok.txt", 0o644);
        let fifos = hash::Findings::LIMIT + 5;
        for i in 0..fifos {
            let fifo = root.path().join(format!("codex/pipe{i:02}"));
            let made = std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap();
            assert!(made.success());
        }
        let problems = problems_of(root.path(), Policy::OFF);
        assert_eq!(problems.len(), hash::Findings::LIMIT + 1, "{problems:?}");
        assert!(
            problems[..hash::Findings::LIMIT]
                .iter()
                .all(|p| p.contains("pipe") && p.contains("a FIFO"))
        );
        let codex = root.path().join("codex");
        assert!(
            names(&problems, &codex, "and 5 more problems"),
            "{problems:?}"
        );
    }

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
