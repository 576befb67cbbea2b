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
//!
//! The parts, by job: this module holds the types and the schema; `load`
//! reads a file ([`read_source`], [`parse_source`]), turns the list forms into
//! maps, merges the defaults and types the result ([`load()`], [`Loaded`]);
//! `problem` is [`Problem`] and [`Seg`], the path to a field it points at.

mod load;
mod problem;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

pub use load::{Loaded, Source, load, parse_source, read_source};
pub use problem::{Problem, Seg};

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
    /// How a recreate replaces the running container (not in the hash).
    pub update: Option<RawUpdate>,
    /// The host that runs this lane: only the lanectl whose `--host`
    /// (default: the machine's hostname) is this name; on every other host
    /// the lane is skipped, and a container of it left from before removed.
    /// Not in the hash.
    pub host: Option<String>,
    /// Only in `_defaults.yaml`: the instance id of the whole lanes directory
    /// (what `--instance` sets; letters, digits, `_ . -`). It travels with
    /// the directory, so that a move or a symlink-swap deploy
    /// (`lanes.d -> releases/N/lanes.d`) keeps owning the same containers.
    pub instance: Option<String>,
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
    #[serde(deserialize_with = "port")]
    #[schemars(range(min = 1))]
    pub container: u16,
    /// Default 127.0.0.1.
    pub host_ip: Option<String>,
    /// Default 0: any free port.
    #[serde(default, deserialize_with = "host_port")]
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
    #[serde(default, deserialize_with = "probe_port")]
    #[schemars(range(min = 1))]
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

/// How a recreate replaces the running container.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawUpdate {
    /// `stop-first` (default): the old container goes, then the new one
    /// comes. `start-first`: the new one is started and probed beside the
    /// old one, which keeps serving until the new one is ready (and keeps
    /// serving if it never is).
    pub order: Option<UpdateOrder>,
    /// start-first: how long the old container keeps serving after the
    /// status file points at the new one (default 2s).
    pub drain: Option<DurationText>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum UpdateOrder {
    #[default]
    StopFirst,
    StartFirst,
}

impl fmt::Display for UpdateOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpdateOrder::StopFirst => "stop-first",
            UpdateOrder::StartFirst => "start-first",
        })
    }
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
/// `NAME=value` (which [`load()`] has already turned into the map).
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
                while let Some(k) = map.next_key::<String>()? {
                    let v = map.next_value_seed(NotNull { key: &k })?;
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

/// A value of `env` or `labels`: any scalar, taken as written, but never a
/// YAML null (`A:`, `A: ~`, `A: null`), which would otherwise become the text
/// `null`, `~` or nothing without a word. Under a key that is no name at all
/// (`{API_TOKEN=sk-…}`, a value typed into the key) the null is let through
/// as empty: the name's own check then says what is wrong, at the key.
struct NotNull<'k> {
    key: &'k str,
}

impl<'de> de::DeserializeSeed<'de> for NotNull<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for NotNull<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a value")
    }
    fn visit_none<E: de::Error>(self) -> Result<String, E> {
        let not_a_name = self.key.is_empty()
            || self
                .key
                .chars()
                .any(|c| matches!(c, '=' | ':' | '\0') || c.is_whitespace() || c.is_control());
        if not_a_name {
            return Ok(String::new());
        }
        Err(E::custom(
            "no value (YAML null): write \"\" for an empty value, \
             or quote the text (\"null\", \"~\")",
        ))
    }
    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        self.visit_none()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        String::deserialize(d)
    }
}

/// A port number, at least `LOWEST`: said in a port's words when it is out
/// of range (`port 99999 is out of range (1-65535)`), not in serde's.
struct PortNumber<const LOWEST: u16>(u16);

impl<'de, const LOWEST: u16> Deserialize<'de> for PortNumber<LOWEST> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Number<const LOWEST: u16>;
        impl<const LOWEST: u16> Visitor<'_> for Number<LOWEST> {
            type Value = PortNumber<LOWEST>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a port number ({LOWEST}-65535)")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                match u16::try_from(v) {
                    Ok(port) if port >= LOWEST => Ok(PortNumber(port)),
                    _ => Err(E::custom(format!(
                        "port {v} is out of range ({LOWEST}-65535)"
                    ))),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!(
                        "port {v} is out of range ({LOWEST}-65535)"
                    ))),
                }
            }
        }
        d.deserialize_u16(Number::<LOWEST>)
    }
}

/// A container port: 1-65535.
fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    PortNumber::<1>::deserialize(d).map(|p| p.0)
}

/// A host port: 0 (any free one) to 65535.
fn host_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    Option::<PortNumber<0>>::deserialize(d).map(|p| p.map(|p| p.0))
}

/// The probe's port: 1-65535.
fn probe_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    Option::<PortNumber<1>>::deserialize(d).map(|p| p.map(|p| p.0))
}

fn name_values<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    Option::<NameValues>::deserialize(d).map(|o| o.map(|n| n.0))
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

#[cfg(test)]
mod tests {
    //! Tests of the types and the schema, and the helper the tests of every
    //! part share.

    use super::*;
    use std::path::PathBuf;

    pub(super) fn source(name: &str, text: &str) -> Source {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let mut s = read_source(&path).unwrap();
        s.path = PathBuf::from(name);
        s
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
    fn the_schema_is_draft_07_and_closed() {
        let schema: serde_json::Value = serde_json::from_str(&schema_json()).unwrap();
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
        assert_eq!(schema["additionalProperties"], false);
    }
}
