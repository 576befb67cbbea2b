//! Loading a manifest: reading a file (bounded, parsed into a node tree),
//! turning the list forms of `env` and `labels` into maps, merging
//! `_defaults.yaml` under the lane and typing the result key by key.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::problem::{Problem, Seg};
use super::{MAX_MANIFEST_BYTES, RawManifest};
use crate::yaml::{self, ErrorKind, Node, Position, Value};

/// Turns docker compose's list form of `env` and `labels` into the map it
/// means, in place. Every item that is not `NAME=value` with a name not seen
/// before is a problem at the item, and no message quotes an item: a bare
/// item is a name in compose (taken from the host environment, which lanectl
/// never reads) but may as well be a value pasted without its name.
fn lists_to_maps(tree: &mut Node, file: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Value::Map(entries) = &mut tree.value else {
        return problems;
    };
    for (key, value) in entries.iter_mut() {
        let field = match key.as_str() {
            Some(f @ ("env" | "labels")) => f,
            _ => continue,
        };
        let Value::Seq(items) = &value.value else {
            continue;
        };
        let mut map: Vec<(Node, Node)> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let mut bad = |what: String| {
                problems.push(Problem {
                    pos: Some(item.pos.clone()),
                    file: file.to_path_buf(),
                    message: format!("{field}[{i}]: {what}"),
                })
            };
            let text = match &item.value {
                _ if item.is_null() => {
                    bad("expected NAME=value, found nothing".into());
                    continue;
                }
                Value::Scalar { text, .. } => text,
                Value::Seq(_) => {
                    bad("expected NAME=value, found a list".into());
                    continue;
                }
                Value::Map(_) => {
                    bad("expected NAME=value, found a map".into());
                    continue;
                }
            };
            let Some((name, text)) = text.split_once('=') else {
                bad(if field == "env" {
                    "no '=' in this item (not shown: it may be a value); docker compose \
                     would take a bare NAME from the host environment, lanectl never \
                     reads the host environment: write NAME=value"
                        .into()
                } else {
                    "no '=' in this item (not shown: it may be a value): write NAME=value".into()
                });
                continue;
            };
            if name.is_empty() {
                bad("empty name before '='".into());
                continue;
            }
            if map.iter().any(|(k, _)| k.as_str() == Some(name)) {
                bad(format!("name `{}` is listed twice", yaml::shown_key(name)));
                continue;
            }
            let scalar = |text: &str| Node {
                value: Value::Scalar {
                    text: text.to_string(),
                    plain: false,
                },
                pos: item.pos.clone(),
            };
            map.push((scalar(name), scalar(text)));
        }
        value.value = Value::Map(map);
    }
    problems
}

/// A file's bytes and its parsed tree (or why it has none).
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub sha256: String,
    pub tree: Option<Node>,
}

/// Reads a manifest-like file: bounded size, parsed into a node tree.
pub fn read_source(path: &Path) -> Result<Source, Vec<Problem>> {
    // O_NONBLOCK: a FIFO named like a manifest must not hang the pass; it is
    // refused by the type check below instead.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| vec![Problem::in_file(path, format!("cannot read: {e}"))])?;
    let meta = file
        .metadata()
        .map_err(|e| vec![Problem::in_file(path, format!("cannot read: {e}"))])?;
    if !meta.is_file() {
        return Err(vec![Problem::in_file(path, "not a regular file")]);
    }
    let mut bytes = Vec::new();
    file.take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| vec![Problem::in_file(path, format!("cannot read: {e}"))])?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(vec![Problem::in_file(
            path,
            format!(
                "larger than {} KiB: not a manifest",
                MAX_MANIFEST_BYTES / 1024
            ),
        )]);
    }
    parse_source(path, bytes)
}

/// Parses a manifest-like file's bytes (already bounded in size).
pub fn parse_source(path: &Path, bytes: Vec<u8>) -> Result<Source, Vec<Problem>> {
    let sha256 = crate::digest::sha256_hex(&bytes);
    let text = String::from_utf8(bytes)
        .map_err(|e| vec![Problem::in_file(path, format!("not UTF-8: {e}"))])?;
    let name: Arc<Path> = Arc::from(path);
    let tree = yaml::parse(&text, &name).map_err(|e| vec![Problem::from_yaml(path, e)])?;
    if let Some(tree) = &tree
        && !matches!(tree.value, Value::Map(_))
    {
        return Err(vec![Problem {
            pos: Some(tree.pos.clone()),
            file: path.to_path_buf(),
            message: "a manifest is a mapping of keys to values".into(),
        }]);
    }
    Ok(Source {
        path: path.to_path_buf(),
        sha256,
        tree,
    })
}

/// A lane's manifest merged over the defaults and typed, with the tree kept
/// for positions. A manifest with typing problems still loads, as far as it
/// types: what did not type is left out of `raw` and `tree` (and its
/// top-level key named in `partial`), so that the value checks still run on
/// the rest and one look shows every problem, as a compiler's does.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub raw: RawManifest,
    pub tree: Option<Node>,
    pub path: PathBuf,
    /// sha256 of the lane file's bytes.
    pub sha256: String,
    /// Every problem found while loading and typing, by position.
    pub problems: Vec<Problem>,
    /// Top-level keys of which something did not type and was left out:
    /// checks that would read the absence as meaning skip them.
    pub partial: BTreeSet<String>,
}

impl Loaded {
    /// Where a field is, as precisely as the tree knows: the deepest existing
    /// node on the path (which may lie in `_defaults.yaml`).
    pub fn locate(&self, path: &[Seg]) -> Option<Position> {
        let mut node = self.tree.as_ref()?;
        for seg in path {
            let next = match (seg, &node.value) {
                (Seg::Key(k), Value::Map(_)) => node.get(k),
                (Seg::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        Some(node.pos.clone())
    }

    /// A problem about the field at `path`.
    pub fn problem(&self, path: &[Seg], message: impl Into<String>) -> Problem {
        Problem {
            pos: self.locate(path),
            file: self.path.clone(),
            message: message.into(),
        }
    }

    /// A problem about the key `key` of the map at `path`, at the key when
    /// the tree has it (else as [`Loaded::problem`]).
    pub fn key_problem(&self, path: &[Seg], key: &str, message: impl Into<String>) -> Problem {
        let mut problem = self.problem(path, message);
        let mut node = self.tree.as_ref();
        for seg in path {
            node = match (seg, node) {
                (Seg::Key(k), Some(n)) => n.get(k),
                (
                    Seg::Index(i),
                    Some(Node {
                        value: Value::Seq(items),
                        ..
                    }),
                ) => items.get(*i),
                _ => None,
            };
        }
        if let Some(Node {
            value: Value::Map(entries),
            ..
        }) = node
            && let Some((k, _)) = entries.iter().find(|(k, _)| k.as_str() == Some(key))
        {
            problem.pos = Some(k.pos.clone());
        }
        problem
    }
}

/// Merges the lane over the defaults and types the result as far as it
/// types ([`Loaded`]). `Err` only when nothing could be typed at all.
pub fn load(lane: Source, defaults: Option<&Source>) -> Result<Loaded, Vec<Problem>> {
    let mut problems = Vec::new();
    // `instance` names the whole directory: it belongs in the defaults.
    if let Some(key) = lane.tree.as_ref().and_then(instance_key) {
        problems.push(Problem {
            pos: Some(key.pos.clone()),
            file: lane.path.clone(),
            message: "`instance` names the whole lanes directory: it belongs in _defaults.yaml"
                .into(),
        });
    }
    let mut as_maps = |mut tree: Node| {
        problems.extend(lists_to_maps(&mut tree, &lane.path));
        tree
    };
    let base = defaults.and_then(|d| d.tree.clone()).map(&mut as_maps);
    let tree = match (lane.tree.map(&mut as_maps), base) {
        (Some(lane), Some(base)) => Some(lane.merged_over(&base)),
        (lane, base) => lane.or(base),
    };
    let (raw, tree, partial) = match tree {
        None => (Some(RawManifest::default()), None, BTreeSet::new()),
        Some(tree) => {
            let mut sifter = Sifter::default();
            let kept = sifter.top(&tree);
            let raw = yaml::from_node::<RawManifest>(&kept)
                .map_err(|e| sifter.errors.push(e))
                .ok();
            problems.extend(
                sifter
                    .errors
                    .into_iter()
                    .map(|e| Problem::from_yaml(&lane.path, e)),
            );
            (raw, Some(kept), sifter.partial)
        }
    };
    Problem::sort_by_position(&mut problems);
    let Some(raw) = raw else {
        return Err(problems);
    };
    Ok(Loaded {
        raw,
        tree,
        path: lane.path,
        sha256: lane.sha256,
        problems,
        partial,
    })
}

/// The `instance` key of a manifest's top-level mapping, if it has one.
fn instance_key(tree: &Node) -> Option<&Node> {
    match &tree.value {
        Value::Map(entries) => entries
            .iter()
            .map(|(k, _)| k)
            .find(|k| k.as_str() == Some("instance")),
        _ => None,
    }
}

/// One step from the top of a manifest down to a node.
#[derive(Debug, Clone)]
enum Step {
    Key(Node),
    Index(usize),
}

/// Types a manifest node by node, so that every typing problem of a file is
/// found in one run (serde stops at a map's first), and keeps what typed.
///
/// A node is typed alone, as the only entry or item on its path from the
/// top (`mounts: [{read_only: maybe}]` for the second mount's flag); a node
/// that does not type is either a map or list whose problem lies inside
/// (then each entry or item is typed alone, and the bad ones left out), or
/// is itself the problem (then it is reported and left out).
#[derive(Debug, Default)]
struct Sifter {
    errors: Vec<yaml::Error>,
    partial: BTreeSet<String>,
}

impl Sifter {
    /// Problems found before the sifter stops looking: a file of thousands
    /// of bad entries is not typed thousands of times over.
    const LIMIT: usize = 100;

    /// The manifest's top-level mapping, with what did not type left out.
    fn top(&mut self, tree: &Node) -> Node {
        let Value::Map(entries) = &tree.value else {
            return tree.clone();
        };
        let mut kept = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let before = self.errors.len();
            let mut path = vec![Step::Key(key.clone())];
            let value = self.sift(&mut path, value);
            if self.errors.len() > before
                && let Some(name) = key.as_str()
            {
                self.partial.insert(name.to_string());
            }
            if let Some(value) = value {
                kept.push((key.clone(), value));
            }
        }
        Node {
            value: Value::Map(kept),
            pos: tree.pos.clone(),
        }
    }

    /// `node` (at `path`) as far as it types; `None` when nothing of it does.
    fn sift(&mut self, path: &mut Vec<Step>, node: &Node) -> Option<Node> {
        let own = field(path, true);
        let Err(error) = self.check(path, node) else {
            return Some(node.clone());
        };
        if self.errors.len() >= Self::LIMIT {
            return None;
        }
        let inside = match (&error.field, &own) {
            (Some(f), Some(own)) => {
                f.strip_prefix(own.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
                    || (f == own && error.kind == ErrorKind::UnknownField)
            }
            (Some(_), None) => true,
            (None, _) => false,
        };
        let kept = match &node.value {
            Value::Map(entries) if inside => {
                let mut kept = Vec::with_capacity(entries.len());
                for (key, value) in entries {
                    path.push(Step::Key(key.clone()));
                    if let Some(value) = self.sift(path, value) {
                        kept.push((key.clone(), value));
                    }
                    path.pop();
                }
                Value::Map(kept)
            }
            Value::Seq(items) if inside => {
                let mut kept = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    path.push(Step::Index(i));
                    kept.extend(self.sift(path, item));
                    path.pop();
                }
                Value::Seq(kept)
            }
            _ => {
                self.errors.push(error);
                return None;
            }
        };
        let kept = Node {
            value: kept,
            pos: node.pos.clone(),
        };
        match self.check(path, &kept) {
            Ok(()) => Some(kept),
            Err(e) => {
                // A key it needs that was there but did not type was
                // reported already; one that was never there is news.
                let left_out = match e.kind {
                    ErrorKind::MissingField(name) => node.get(name).is_some(),
                    _ => false,
                };
                if !left_out {
                    self.errors.push(e);
                }
                None
            }
        }
    }

    /// Types `node` alone at `path`. A key missing from the map that holds
    /// `node` is no problem of `node`'s (its siblings were left out here).
    fn check(&self, path: &[Step], node: &Node) -> Result<(), yaml::Error> {
        let mut whole = node.clone();
        for step in path.iter().rev() {
            whole = match step {
                Step::Key(key) => Node {
                    pos: key.pos.clone(),
                    value: Value::Map(vec![(key.clone(), whole)]),
                },
                Step::Index(_) => Node {
                    pos: whole.pos.clone(),
                    value: Value::Seq(vec![whole]),
                },
            };
        }
        let Err(mut error) = yaml::from_node::<RawManifest>(&whole) else {
            return Ok(());
        };
        let holder = path
            .len()
            .checked_sub(1)
            .map(|up| field(&path[..up], false));
        if let (ErrorKind::MissingField(_), Some(holder)) = (error.kind, holder)
            && error.field == holder
        {
            return Ok(());
        }
        // Typed alone, every item stood at index 0: say where it stands.
        if let Some(f) = &error.field {
            let deepest = (1..=path.len()).rev().find_map(|n| {
                let alone = field(&path[..n], false)?;
                let rest = f.strip_prefix(alone.as_str())?;
                (rest.is_empty() || rest.starts_with(['.', '[']))
                    .then(|| format!("{}{rest}", field(&path[..n], true).unwrap_or_default()))
            });
            if let Some(real) = deepest {
                error.field = Some(real);
            }
        }
        Err(error)
    }
}

/// The field a path names, as typing errors name it (`mounts[1].target`);
/// with `real` false, every index as 0 (the path typed alone).
fn field(path: &[Step], real: bool) -> Option<String> {
    let mut out: Option<String> = None;
    for step in path {
        out = Some(match (step, out) {
            (Step::Key(k), None) => shown(k),
            (Step::Key(k), Some(f)) => format!("{f}.{}", shown(k)),
            (Step::Index(i), f) => {
                let i = if real { *i } else { 0 };
                format!("{}[{i}]", f.unwrap_or_default())
            }
        });
    }
    out
}

/// A key as typing errors show it.
fn shown(key: &Node) -> String {
    key.as_str().map_or_else(|| "?".into(), yaml::shown_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::source;
    use std::collections::BTreeMap;

    /// Every problem loading found, whether or not something typed.
    fn problems_of(loaded: Result<Loaded, Vec<Problem>>) -> Vec<Problem> {
        match loaded {
            Ok(l) => l.problems,
            Err(p) => p,
        }
    }

    #[test]
    fn every_bad_key_of_a_file_is_reported_at_once() {
        let s = source(
            "a.yaml",
            "image: x\nbogus: 1\nmounts: [{source: a, target: /a, sorce: b}]\nstate: sleeping\n",
        );
        let problems = problems_of(load(s, None));
        let lines: Vec<_> = problems
            .iter()
            .map(|p| p.pos.as_ref().unwrap().line)
            .collect();
        assert_eq!(lines, vec![2, 3, 4], "{problems:?}");
        assert!(problems[1].message.contains("sorce"));
    }

    #[test]
    fn every_typing_problem_is_found_however_deep_and_the_rest_still_loads() {
        let s = source(
            "a.yaml",
            "image: x\n\
             env: {TOKEN: [x], OTHER: {k: v}, GOOD: y}\n\
             ports: [{container: 99999}, {container: 80, host_port: -1}, {container: 81}]\n\
             mounts:\n  - {source: /a, target: /a, sorce: b}\n  - {source: /b, target: /b, read_only: maybe}\n\
             probe: {port: 81, timeout: 3s}\n",
        );
        let loaded = load(s, None).expect("what typed loads");
        let said: Vec<String> = loaded.problems.iter().map(ToString::to_string).collect();
        let lines: Vec<_> = loaded
            .problems
            .iter()
            .map(|p| p.pos.as_ref().unwrap().line)
            .collect();
        assert_eq!(lines, vec![2, 2, 3, 3, 5, 6], "{said:#?}");
        for (i, what) in [
            "env.TOKEN: expected a string, found a list",
            "env.OTHER: expected a string, found a map",
            "ports[0].container: port 99999 is out of range (1-65535)",
            "ports[1].host_port: port -1 is out of range (0-65535)",
            "mounts[0]: unknown field `sorce`: did you mean `source`?",
            "mounts[1].read_only: expected a boolean, found a string",
        ]
        .iter()
        .enumerate()
        {
            assert!(said[i].ends_with(what), "{i}: {}", said[i]);
        }
        // What typed is kept, index for index where items stand.
        let raw = &loaded.raw;
        assert_eq!(
            raw.env.as_ref().unwrap().keys().collect::<Vec<_>>(),
            ["GOOD"]
        );
        let ports: Vec<u16> = raw.ports.iter().flatten().map(|p| p.container).collect();
        assert_eq!(ports, [80, 81]);
        assert_eq!(
            raw.mounts.as_ref().unwrap().len(),
            2,
            "each less its bad key"
        );
        assert_eq!(raw.probe.as_ref().unwrap().port, Some(81));
        let partial: Vec<&str> = loaded.partial.iter().map(String::as_str).collect();
        assert_eq!(partial, ["env", "mounts", "ports"]);
    }

    #[test]
    fn a_null_env_or_label_value_is_refused_where_it_stands() {
        let s = source(
            "a.yaml",
            "image: x\nenv:\n  A: null\n  B: ~\n  C:\n  D: \"\"\n  E: \"null\"\nlabels: {team: }\n",
        );
        let problems = problems_of(load(s, None));
        let lines: Vec<_> = problems
            .iter()
            .map(|p| p.pos.as_ref().unwrap().line)
            .collect();
        assert_eq!(lines, vec![3, 4, 5, 8], "every one of them: {problems:?}");
        assert!(
            problems[0].message.contains("no value (YAML null)"),
            "{}",
            problems[0]
        );
        for null in ["~", "", "null", "NULL"] {
            let s = source("a.yaml", &format!("image: x\nenv:\n  B: {null}\n"));
            let problems = problems_of(load(s, None));
            assert!(
                problems[0].message.contains("no value"),
                "{null:?}: {problems:?}"
            );
        }

        let s = source("a.yaml", "image: x\nenv: {D: \"\", E: \"null\", F: 1.50}\n");
        let env = load(s, None).unwrap().raw.env.unwrap();
        assert_eq!(
            (env["D"].as_str(), env["E"].as_str(), env["F"].as_str()),
            ("", "null", "1.50")
        );
    }

    #[test]
    fn an_instance_in_a_lane_file_is_refused_and_in_the_defaults_taken() {
        let s = source("a.yaml", "image: x\ninstance: mine\n");
        let problems = problems_of(load(s, None));
        assert_eq!(problems[0].pos.as_ref().unwrap().line, 2, "{problems:?}");
        assert!(problems[0].message.contains("belongs in _defaults.yaml"));
        let d = source("_defaults.yaml", "image: base\ninstance: mine\n");
        let l = source("a.yaml", "env: {}\n");
        assert!(problems_of(load(l, Some(&d))).is_empty());
    }

    #[test]
    fn defaults_merge_under_the_lane() {
        let d = source(
            "_defaults.yaml",
            "image: base\nenv: {A: '1', B: '2'}\nports: [{container: 80}]\n",
        );
        let l = source("a.yaml", "env: {B: three}\nports: [{container: 81}]\n");
        let loaded = load(l, Some(&d)).unwrap();
        assert_eq!(loaded.raw.image.as_deref(), Some("base"));
        let env = loaded.raw.env.unwrap();
        assert_eq!(env["A"], "1");
        assert_eq!(env["B"], "three");
        assert_eq!(loaded.raw.ports.unwrap()[0].container, 81);
    }

    #[test]
    fn a_problem_in_the_defaults_points_into_the_defaults_file() {
        let d = source("_defaults.yaml", "image: base\nuser: [x]\n");
        let l = source("a.yaml", "env: {}\n");
        let problems = problems_of(load(l, Some(&d)));
        let pos = problems[0].pos.as_ref().unwrap();
        assert!(pos.file.ends_with("_defaults.yaml"), "{}", problems[0]);
        assert_eq!(pos.line, 2);
    }

    /// A planted value that no message may quote.
    const SECRET: &str = "sk-S3CR3T";

    #[test]
    fn the_list_form_of_env_and_labels_means_the_map_form() {
        let s = source(
            "a.yaml",
            "env: [A=1, 'B=x=y', C=, D=1.50, \"E=sk-S3CR3T\"]\nlabels:\n  - team=infra\n",
        );
        let raw = load(s, None).unwrap().raw;
        let env = raw.env.unwrap();
        let want: BTreeMap<String, String> = [
            ("A", "1"),
            ("B", "x=y"),
            ("C", ""),
            ("D", "1.50"),
            ("E", SECRET),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);
        assert_eq!(raw.labels.unwrap()["team"], "infra");
    }

    #[test]
    fn a_list_form_merges_with_the_defaults_key_by_key() {
        let d = source("_defaults.yaml", "env: {A: '1', B: '2'}\nlabels: [x=1]\n");
        let l = source("a.yaml", "env: [B=three]\nlabels: {y: '2'}\n");
        let raw = load(l, Some(&d)).unwrap().raw;
        let env = raw.env.unwrap();
        assert_eq!((env["A"].as_str(), env["B"].as_str()), ("1", "three"));
        let labels = raw.labels.unwrap();
        assert_eq!((labels["x"].as_str(), labels["y"].as_str()), ("1", "2"));
    }

    #[test]
    fn list_items_that_are_not_name_equals_value_are_problems_at_the_item() {
        let s = source(
            "a.yaml",
            "env:\n  - A=1\n  - sk-S3CR3T\n  - =sk-S3CR3T\n  - A=sk-S3CR3T\n  \
             - {B: sk-S3CR3T}\n  - [sk-S3CR3T]\n  - API_TOKEN\nlabels: [team, x=sk-S3CR3T, x=2]\n",
        );
        let problems = problems_of(load(s, None));
        let at: Vec<(usize, usize)> = problems
            .iter()
            .map(|p| p.pos.as_ref().map(|p| (p.line, p.column)).unwrap())
            .collect();
        assert_eq!(
            at,
            [
                (3, 5),
                (4, 5),
                (5, 5),
                (6, 5),
                (7, 5),
                (8, 5),
                (9, 10),
                (9, 29)
            ],
            "{problems:#?}"
        );
        for p in &problems {
            assert!(!p.to_string().contains(SECRET), "{p}");
        }
        assert!(
            problems[0].message.contains("host environment"),
            "{}",
            problems[0]
        );
        assert!(problems[2].message.contains("`A`"), "{}", problems[2]);
        assert!(
            problems[3].message.contains("found a map"),
            "{}",
            problems[3]
        );
        assert!(problems[7].message.contains("`x`"), "{}", problems[7]);
    }

    #[test]
    fn a_fifo_named_like_a_manifest_is_refused_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(made.success());
        let problems = read_source(&path).unwrap_err();
        assert!(problems[0].message.contains("not a regular file"));
    }

    #[test]
    fn a_large_file_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        std::fs::write(&path, "#".repeat(MAX_MANIFEST_BYTES as usize + 10)).unwrap();
        let problems = read_source(&path).unwrap_err();
        assert!(problems[0].message.contains("larger than"));
    }
}
