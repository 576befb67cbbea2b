//! Which files in a lanes directory are lanes, and what lanes are called.
//!
//! A lane is `<name>.yaml` or `<name>.yml`; the defaults file is
//! `_defaults.yaml`/`.yml`; status files are `<name>.status.yaml`. Everything
//! else (hidden files, editor back-ups, other `_` files) is never a lane. A stem
//! that breaks the name rule is still listed, as an invalid lane, so that the
//! user learns why their file is ignored.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// The rule a lane name follows: `^[a-z0-9][a-z0-9_.-]{0,62}$`.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && name.len() <= 63 {
        Ok(())
    } else {
        Err(format!(
            "lane name {name:?} must match ^[a-z0-9][a-z0-9_.-]{{0,62}}$ (the file name without .yaml)"
        ))
    }
}

/// One lane file found in the lanes directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneFile {
    pub name: String,
    pub path: PathBuf,
    /// Why this file cannot be a lane, when it cannot.
    pub problem: Option<String>,
}

/// What a lanes directory holds.
#[derive(Debug, Default)]
pub struct DirListing {
    /// Lanes by name (a name taken by both `.yaml` and `.yml` is one invalid lane).
    pub lanes: BTreeMap<String, LaneFile>,
    pub defaults: Option<PathBuf>,
    /// Why the defaults cannot be used (`_defaults.yaml` and `_defaults.yml`
    /// both exist): every lane is then invalid with this reason.
    pub defaults_problem: Option<String>,
    /// Names of lanes that have a status file (to find status files of deleted lanes).
    pub status_files: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("cannot read lanes directory {}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("lanes directory {} is not a directory", path.display())]
    NotADir { path: PathBuf },
}

/// Lists the lanes directory. A missing or unreadable directory is an error,
/// never an empty set: pruning must not follow from a directory that vanished.
pub fn list_dir(dir: &Path) -> Result<DirListing, ListError> {
    let read_err = |source| ListError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(dir).map_err(read_err)?;
    if !meta.is_dir() {
        return Err(ListError::NotADir {
            path: dir.to_path_buf(),
        });
    }
    let mut out = DirListing::default();
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue; // not UTF-8: cannot match the name rule, and cannot be shown
        };
        let path = entry.path();
        match classify(file_name) {
            Kind::NotALane => {}
            Kind::Status(name) => out.status_files.push(name.to_string()),
            Kind::Defaults => match &out.defaults {
                // Which one is meant cannot be guessed: like `x.yaml` beside
                // `x.yml`, but for every lane.
                Some(a) => {
                    let (a, b) = (a.display(), path.display());
                    out.defaults_problem = Some(format!("both {a} and {b} exist: keep one"));
                }
                None => out.defaults = Some(path),
            },
            Kind::Lane(name) => {
                let problem = check_name(name).err();
                let lane = LaneFile {
                    name: name.to_string(),
                    path,
                    problem,
                };
                if let Some(other) = out.lanes.get_mut(name) {
                    let (a, b) = (other.path.display(), lane.path.display());
                    other.problem = Some(format!("both {a} and {b} exist: keep one"));
                } else {
                    out.lanes.insert(name.to_string(), lane);
                }
            }
        }
    }
    out.status_files.sort();
    Ok(out)
}

/// What a file in the lanes directory is, by its name alone.
pub enum Kind<'a> {
    Lane(&'a str),
    Defaults,
    Status(&'a str),
    NotALane,
}

pub fn classify(file_name: &str) -> Kind<'_> {
    if let Some(name) = file_name.strip_suffix(".status.yaml") {
        return Kind::Status(name);
    }
    let stem = file_name
        .strip_suffix(".yaml")
        .or_else(|| file_name.strip_suffix(".yml"));
    match stem {
        Some("_defaults") => Kind::Defaults,
        Some(s) if s.starts_with('.') || s.starts_with('_') || s.is_empty() => Kind::NotALane,
        Some(s) => Kind::Lane(s),
        None => Kind::NotALane,
    }
}

/// Where a lane's status file lives.
pub fn status_path(dir: &Path, lane: &str) -> PathBuf {
    dir.join(format!("{lane}.status.yaml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_rule() {
        for ok in ["a", "alpha", "0", "a.b_c-d", &"a".repeat(63)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "A",
            "-a",
            ".a",
            "../x",
            "a/b",
            "а",
            &"a".repeat(64),
            "a b",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_yaml_files_that_are_not_hidden_are_lanes() {
        assert!(matches!(classify("alpha.yaml"), Kind::Lane("alpha")));
        assert!(matches!(classify("alpha.yml"), Kind::Lane("alpha")));
        assert!(matches!(
            classify("alpha.status.yaml"),
            Kind::Status("alpha")
        ));
        assert!(matches!(classify("_defaults.yml"), Kind::Defaults));
        for not in [
            ".alpha.yaml",
            "_x.yaml",
            "alpha.yaml~",
            "a.bak",
            ".a.yaml.swp",
            "4913",
        ] {
            assert!(matches!(classify(not), Kind::NotALane), "{not}");
        }
    }

    #[test]
    fn both_extensions_make_one_invalid_lane() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.yaml"), "").unwrap();
        std::fs::write(dir.path().join("x.yml"), "").unwrap();
        std::fs::write(dir.path().join("Bad.yaml"), "").unwrap();
        let listing = list_dir(dir.path()).unwrap();
        assert!(
            listing.lanes["x"]
                .problem
                .as_deref()
                .unwrap()
                .contains("keep one")
        );
        assert!(listing.lanes["Bad"].problem.is_some());
    }

    #[test]
    fn a_missing_directory_is_an_error_not_an_empty_set() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list_dir(&dir.path().join("gone")).is_err());
    }
}
