//! The manifest file format: what a user may write in `lanes.d/<lane>.yaml`.
//!
//! These types are the single source of the JSON Schema (`lanectl schema`)
//! and are parsed leniently (everything optional, as written); `spec.rs`
//! resolves them into a validated `LaneSpec`. Loading merges `_defaults.yaml`
//! under the lane at the YAML level (maps key by key, the lane wins; lists and
//! scalars replaced whole), keeps the merged node tree so that later problems
//! can be pointed at `file:line:col`, and reports every problem of a file at
//! once: each top-level key is typed on its own, so one bad key does not hide
//! the next.
//!
//! `env` and `labels` may also be written as docker compose's list of
//! `NAME=value`; loading turns that list into the map it means before the
//! merge (so it merges with a map in the defaults key by key), and the rest
//! of lanectl only ever sees the map. No problem reported here quotes a value
//! of either (see `yaml.rs` for how type errors avoid quoting).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::yaml::{self, Node, Position, Value};

/// A manifest larger than this is refused unread.
pub const MAX_MANIFEST_BYTES: u64 = 256 * 1024;

/// One lane's manifest, as written (after `_defaults.yaml` is merged under it).
#[derive(Debug, Default, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "lanectl lane manifest")]
pub struct RawManifest {
    /// Local image reference; never pulled, it must exist locally.
    pub image: Option<String>,
    /// Container name; default `lane-<lane>`.
    pub container_name: Option<String>,
    /// User (name or uid[:gid]) the container runs as.
    pub user: Option<String>,
    /// A list, or a string split by shell rules (no expansion).
    pub entrypoint: Option<Words>,
    /// A list, or a string split by shell rules (no expansion).
    pub command: Option<Words>,
    /// Working directory inside the container (absolute).
    pub workdir: Option<String>,
    /// Environment; numbers and booleans are taken as written. A map, or a
    /// list of `NAME=value` as in docker compose.
    #[serde(default, deserialize_with = "name_values")]
    #[schemars(with = "Option<NameValues>")]
    pub env: Option<BTreeMap<String, String>>,
    /// Extra container labels (`io.lanectl.*` is reserved). A map, or a list
    /// of `NAME=value` as in docker compose.
    #[serde(default, deserialize_with = "name_values")]
    #[schemars(with = "Option<NameValues>")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Bind mounts; relative sources resolve against the manifest's directory.
    pub mounts: Option<Vec<RawMount>>,
    /// Published ports.
    pub ports: Option<Vec<RawPort>>,
    /// A directory copied (never mounted) into the container before its first start.
    pub codex: Option<RawCodex>,
    /// Readiness: HTTP GET until a 2xx answer.
    pub probe: Option<RawProbe>,
    /// Optional resource limits.
    pub resources: Option<RawResources>,
    /// SIGTERM, then SIGKILL after this long (default 10s).
    pub stop_timeout: Option<DurationText>,
    /// Whether the lane should run (default `running`).
    pub state: Option<DesiredState>,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawMount {
    /// Host path; relative to the manifest's directory unless absolute.
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    /// Default false.
    #[serde(default)]
    pub read_only: bool,
    /// SELinux relabelling; default `shared`.
    #[serde(default)]
    pub relabel: Relabel,
    /// When true, the source's content is part of the lane's hash.
    #[serde(default)]
    pub track_content: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Relabel {
    /// `:z`, the default.
    #[default]
    Shared,
    /// `:Z`.
    Private,
    /// No relabelling.
    None,
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPort {
    /// Port inside the container.
    pub container: u16,
    /// Default 127.0.0.1.
    pub host_ip: Option<String>,
    /// Default 0: any free port.
    pub host_port: Option<u16>,
    /// Default tcp.
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        })
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCodex {
    /// Host directory; its contents appear under `target`.
    pub source: String,
    /// Absolute path inside the container.
    pub target: String,
    /// Env var set to the fingerprint, if given.
    pub fingerprint_env: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    /// Container port to probe; default the first port.
    pub port: Option<u16>,
    /// Default `/`.
    pub path: Option<String>,
    /// Default 30s.
    pub timeout: Option<DurationText>,
    /// Default 250ms.
    pub interval: Option<DurationText>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    /// Bytes, or a number with b, k, m or g (powers of 1024): `512m`.
    #[schemars(with = "Option<EnvScalar>")]
    pub memory: Option<String>,
    /// CPUs, may be fractional: `1.5`.
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    pub pids: Option<u32>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DesiredState {
    #[default]
    Running,
    Stopped,
}

/// A duration as text with a unit: `250ms`, `30s`, `1m30s`.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(transparent)]
#[schemars(with = "String")]
pub struct DurationText(pub String);

/// A scalar taken as its text (schema only).
#[derive(JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code)] // only its schema is used
enum EnvScalar {
    String(String),
    Number(f64),
    Bool(bool),
}

/// `env` or `labels`: a map of `NAME: value`, or docker compose's list of
/// `NAME=value` (which [`load`] has already turned into the map).
pub struct NameValues(pub BTreeMap<String, String>);

impl JsonSchema for NameValues {
    fn schema_name() -> Cow<'static, str> {
        "NameValues".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let scalar = generator.subschema_for::<EnvScalar>();
        schemars::json_schema!({
            "description": "A map of NAME: value, or a list of NAME=value as in docker compose.",
            "oneOf": [
                { "type": "object", "additionalProperties": scalar },
                { "type": "array", "items": { "type": "string", "pattern": "^[^=]+=" } }
            ]
        })
    }
}

impl<'de> Deserialize<'de> for NameValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NameValuesVisitor;
        impl<'de> Visitor<'de> for NameValuesVisitor {
            type Value = NameValues;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of NAME: value or a list of NAME=value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NameValues, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, String>()? {
                    out.insert(k, v);
                }
                Ok(NameValues(out))
            }
            // Only for a tree that did not go through `load`: the first
            // problem, by the same rules and without quoting the item.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NameValues, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(item) = seq.next_element::<String>()? {
                    match item.split_once('=') {
                        Some((name, value)) if !name.is_empty() && !out.contains_key(name) => {
                            out.insert(name.to_string(), value.to_string());
                        }
                        _ => return Err(de::Error::custom("expected distinct items NAME=value")),
                    }
                }
                Ok(NameValues(out))
            }
        }
        d.deserialize_any(NameValuesVisitor)
    }
}

fn name_values<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    Option::<NameValues>::deserialize(d).map(|o| o.map(|n| n.0))
}

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

/// A command line: a list of words, or a string split by shell rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[schemars(untagged)]
pub enum Words {
    /// Split by shell rules (quotes, escapes), without expansion.
    Line(String),
    List(Vec<String>),
}

impl Words {
    /// The words, or why a line cannot be split.
    pub fn split(&self) -> Result<Vec<String>, String> {
        match self {
            Words::List(words) => Ok(words.clone()),
            Words::Line(line) => {
                // Not the line itself: a command line may hold a token.
                shell_words::split(line)
                    .map_err(|e| format!("cannot split the line by shell rules: {e}"))
            }
        }
    }
}

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct WordsVisitor;
        impl<'de> Visitor<'de> for WordsVisitor {
            type Value = Words;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Words, E> {
                Ok(Words::Line(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Words, A::Error> {
                let mut words = Vec::new();
                while let Some(w) = seq.next_element::<String>()? {
                    words.push(w);
                }
                Ok(Words::List(words))
            }
        }
        d.deserialize_any(WordsVisitor)
    }
}

/// The JSON Schema (draft-07) of a manifest, as `lanectl schema` prints it.
pub fn schema_json() -> String {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<RawManifest>();
    // A schema is a JSON value with string keys: serializing it cannot fail,
    // and an empty schema printed as if it were the contract would be a lie.
    #[allow(clippy::expect_used)]
    let mut text = serde_json::to_string_pretty(&schema).expect("BUG: a JSON schema serializes");
    text.push('\n');
    text
}

/// A problem of a manifest, with a position where the YAML gives one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pos: Option<Position>,
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pos {
            Some(pos) => write!(f, "{pos}: {}", self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl Problem {
    pub fn in_file(file: &Path, message: impl Into<String>) -> Self {
        Problem {
            pos: None,
            file: file.to_path_buf(),
            message: message.into(),
        }
    }

    fn from_yaml(file: &Path, err: yaml::Error) -> Self {
        Problem {
            message: err.describe(),
            pos: err.pos,
            file: file.to_path_buf(),
        }
    }
}

/// One segment of a path to a field, for pointing at a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    Key(&'static str),
    Index(usize),
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
/// for positions.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub raw: RawManifest,
    pub tree: Option<Node>,
    pub path: PathBuf,
    /// sha256 of the lane file's bytes.
    pub sha256: String,
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

/// Merges the lane over the defaults and types the result, reporting every
/// top-level key's problem.
pub fn load(lane: Source, defaults: Option<&Source>) -> Result<Loaded, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut as_maps = |mut tree: Node| {
        problems.extend(lists_to_maps(&mut tree, &lane.path));
        tree
    };
    let base = defaults.and_then(|d| d.tree.clone()).map(&mut as_maps);
    let tree = match (lane.tree.map(&mut as_maps), base) {
        (Some(lane), Some(base)) => Some(lane.merged_over(&base)),
        (lane, base) => lane.or(base),
    };
    let raw = match &tree {
        None => Some(RawManifest::default()),
        Some(tree) => type_tree(tree, &lane.path)
            .map_err(|p| problems.extend(p))
            .ok(),
    };
    let raw = match raw {
        Some(raw) if problems.is_empty() => raw,
        _ => {
            problems.sort_by_key(|p| p.pos.as_ref().map(|p| (p.file.clone(), p.line, p.column)));
            return Err(problems);
        }
    };
    Ok(Loaded {
        raw,
        tree,
        path: lane.path,
        sha256: lane.sha256,
    })
}

/// Types each top-level entry on its own (so that all problems are found),
/// then the whole.
fn type_tree(tree: &Node, path: &Path) -> Result<RawManifest, Vec<Problem>> {
    let Value::Map(entries) = &tree.value else {
        return Err(vec![Problem::in_file(path, "a manifest is a mapping")]);
    };
    let problems: Vec<Problem> = entries
        .iter()
        .filter_map(|(k, v)| {
            let single = Node {
                value: Value::Map(vec![(k.clone(), v.clone())]),
                pos: tree.pos.clone(),
            };
            yaml::from_node::<RawManifest>(&single).err()
        })
        .map(|e| Problem::from_yaml(path, e))
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    yaml::from_node::<RawManifest>(tree).map_err(|e| vec![Problem::from_yaml(path, e)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(name: &str, text: &str) -> Source {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let mut s = read_source(&path).unwrap();
        s.path = PathBuf::from(name);
        s
    }

    #[test]
    fn every_bad_key_of_a_file_is_reported_at_once() {
        let s = source(
            "a.yaml",
            "image: x\nbogus: 1\nmounts: [{source: a, target: /a, sorce: b}]\nstate: sleeping\n",
        );
        let problems = load(s, None).unwrap_err();
        let lines: Vec<_> = problems
            .iter()
            .map(|p| p.pos.as_ref().unwrap().line)
            .collect();
        assert_eq!(lines, vec![2, 3, 4], "{problems:?}");
        assert!(problems[1].message.contains("sorce"));
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
        let problems = load(l, Some(&d)).unwrap_err();
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
        let problems = load(s, None).unwrap_err();
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
    fn the_schema_takes_a_map_or_a_list_for_env_and_labels() {
        let schema: serde_json::Value = serde_json::from_str(&schema_json()).unwrap();
        for key in ["env", "labels"] {
            let text = schema["properties"][key].to_string();
            let name = text
                .split("#/definitions/")
                .nth(1)
                .and_then(|t| t.split('"').next())
                .unwrap_or_else(|| panic!("{key} has no definition: {text}"));
            let forms = schema["definitions"][name]["oneOf"].as_array().unwrap();
            let types: Vec<&str> = forms.iter().map(|f| f["type"].as_str().unwrap()).collect();
            assert_eq!(types, ["object", "array"], "{key}");
            assert_eq!(forms[1]["items"]["type"], "string");
        }
    }

    #[test]
    fn words_are_a_list_or_a_shell_line() {
        let s = source(
            "a.yaml",
            "entrypoint: \"/bin/sh -c 'echo hi'\"\ncommand: [a, '1']\n",
        );
        let raw = load(s, None).unwrap().raw;
        assert_eq!(
            raw.entrypoint.unwrap().split().unwrap(),
            ["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(raw.command.unwrap().split().unwrap(), ["a", "1"]);
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

    #[test]
    fn the_schema_is_draft_07_and_closed() {
        let schema: serde_json::Value = serde_json::from_str(&schema_json()).unwrap();
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
        assert_eq!(schema["additionalProperties"], false);
    }
}
