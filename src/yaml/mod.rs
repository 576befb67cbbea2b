//! The only module that knows the YAML crate.
//!
//! A manifest is parsed into a small tree of [`Node`]s that remember where they
//! came from (file, line, column) and how each scalar was written. The tree is
//! bounded while it is built (nesting depth, node count including alias
//! expansion) so that no input can exhaust memory, and it is then turned into
//! typed values through serde with errors that carry the position of the node
//! they are about. Typing is lazy: a plain scalar `1.50` stays the text
//! `1.50` when a string is asked for (an env value) and is a number only when a
//! number is asked for, which avoids YAML's "Norway problem" for lane env.
//!
//! The parser is serde-saphyr's own (granit-parser), used at the event level:
//! serde-saphyr's deserializer stops at the first error, while `validate` must
//! report every problem of a file at once.
//!
//! No message made here quotes a scalar's text: an env value typed in the
//! wrong place (`env: "API_TOKEN=sk-…"`) would otherwise reach stdout, logs
//! and the world-readable status file. Type errors name the field and the
//! kind of node found; keys are names and may be shown, but only up to a
//! first `=` (see [`shown_key`]), because `NAME=value` typed as a key is the
//! usual way a value ends up in one.
//!
//! This file holds the node tree and its error type; `parse.rs` builds the
//! tree from text (bounded as it is built) and `de.rs` types it through serde.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

mod de;
mod parse;

pub use de::{from_node, from_str, to_string};
pub use parse::parse;

/// Nesting deeper than this is refused (a manifest needs about 4 levels).
pub const MAX_DEPTH: usize = 32;
/// Nodes in one document, counting every node an alias expands to.
pub const MAX_NODES: usize = 20_000;
/// Bytes of scalar text in one document, counting every alias expansion (a
/// long string repeated through aliases is an alias bomb too).
pub const MAX_TEXT_BYTES: usize = 1024 * 1024;

/// A place in a file: 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub file: Arc<Path>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.column)
    }
}

/// One YAML node with its position.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub pos: Position,
}

#[derive(Debug, Clone)]
pub enum Value {
    /// A scalar as written; `plain` is false for quoted and block scalars
    /// (and for an explicit `!!str` tag), which are always strings.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The value under `key` when this node is a mapping with that string key.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The text of a scalar node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// True for a plain `null`, `~` or empty scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if is_null(text))
    }

    /// Merges `self` (the lane) over `base` (the defaults): mappings merge key
    /// by key, recursively, and the lane's value wins; everything else is
    /// replaced whole.
    pub fn merged_over(self, base: &Node) -> Node {
        match (self.value, &base.value) {
            (Value::Map(lane), Value::Map(defaults)) => {
                let mut out: Vec<(Node, Node)> = Vec::with_capacity(lane.len() + defaults.len());
                for (k, v) in defaults {
                    if !lane.iter().any(|(lk, _)| lk.as_str() == k.as_str()) {
                        out.push((k.clone(), v.clone()));
                    }
                }
                for (k, v) in lane {
                    let merged = match base.get(k.as_str().unwrap_or_default()) {
                        Some(d) if k.as_str().is_some() => v.merged_over(d),
                        _ => v,
                    };
                    out.push((k, merged));
                }
                Node {
                    value: Value::Map(out),
                    pos: self.pos,
                }
            }
            (value, _) => Node {
                value,
                pos: self.pos,
            },
        }
    }
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// A key as it may appear in a message: its leading name characters
/// (letters, digits, `_ . - /`), then the character that ended them and `…`.
/// A key is a name, but a value typed into one (`API_TOKEN=sk-…`,
/// `{API_TOKEN:sk-…}` without the space, `{API_TOKEN sk-…}`) follows the
/// name after such a character.
pub fn shown_key(key: &str) -> String {
    let is_name = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/');
    match key.char_indices().find(|&(_, c)| !is_name(c)) {
        Some((at, c)) => format!("{}{}…", &key[..at], c.escape_debug()),
        None => key.to_string(),
    }
}

/// A problem found while parsing or typing, at a position when one is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub message: String,
    pub pos: Option<Position>,
    /// The field the problem is about (`mounts[0].relabel`), when typing.
    pub field: Option<String>,
    pub kind: ErrorKind,
}

/// What kind of typing problem an [`Error`] is: a map with a key its type
/// does not know, or without one it needs, or anything else.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ErrorKind {
    #[default]
    Other,
    /// The map at `field` has a key its type does not know.
    UnknownField,
    /// The map at `field` lacks the key `name`.
    MissingField(&'static str),
}

impl Error {
    fn new(message: impl Into<String>, pos: Option<Position>) -> Self {
        Error {
            message: message.into(),
            pos,
            field: None,
            kind: ErrorKind::Other,
        }
    }

    fn of_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    fn at(mut self, node: &Node) -> Self {
        if self.pos.is_none() {
            self.pos = Some(node.pos.clone());
        }
        self
    }

    /// Puts the error under the map key `key` (shown as [`shown_key`]).
    fn under_key(mut self, key: &Node) -> Self {
        let key = match key.as_str() {
            Some(k) => shown_key(k),
            None => "?".into(),
        };
        self.field = Some(match self.field.take() {
            None => key,
            Some(f) if f.starts_with('[') => format!("{key}{f}"),
            Some(f) => format!("{key}.{f}"),
        });
        self
    }

    /// Puts the error under the list item `index`.
    fn under_index(mut self, index: usize) -> Self {
        self.field = Some(match self.field.take() {
            None => format!("[{index}]"),
            Some(f) if f.starts_with('[') => format!("[{index}]{f}"),
            Some(f) => format!("[{index}].{f}"),
        });
        self
    }

    /// The message with the field it is about in front.
    pub fn describe(&self) -> String {
        match &self.field {
            Some(field) => format!("{field}: {}", self.message),
            None => self.message.clone(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pos {
            Some(pos) => write!(f, "{pos}: {}", self.describe()),
            None => f.write_str(&self.describe()),
        }
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    pub(super) fn file() -> Arc<Path> {
        Arc::from(Path::new("x.yaml"))
    }

    /// A planted value that no message may quote.
    pub(super) const SECRET: &str = "sk-S3CR3T";

    #[test]
    fn merge_keeps_lane_values_and_merges_maps() {
        let lane = parse("env: {A: lane}\nimage: l\n", &file())
            .unwrap()
            .unwrap();
        let defaults = parse("env: {A: d, B: d}\nimage: d\nuser: root\n", &file())
            .unwrap()
            .unwrap();
        let merged = lane.merged_over(&defaults);
        let map: BTreeMap<String, serde_json::Value> = from_node(&merged).unwrap();
        assert_eq!(map["image"], "l");
        assert_eq!(map["user"], "root");
        assert_eq!(map["env"]["A"], "lane");
        assert_eq!(map["env"]["B"], "d");
    }
}
