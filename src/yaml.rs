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

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

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
}

impl Error {
    fn new(message: impl Into<String>, pos: Option<Position>) -> Self {
        Error {
            message: message.into(),
            pos,
            field: None,
        }
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

/// What was found, by kind only: `Unexpected` carries the text of strings
/// (and numbers), which may be an env value typed in the wrong place.
fn found(unexp: de::Unexpected<'_>) -> &'static str {
    use de::Unexpected as U;
    match unexp {
        U::Bool(_) => "a boolean",
        U::Unsigned(_) | U::Signed(_) | U::Float(_) => "a number",
        U::Char(_) | U::Str(_) => "a string",
        U::Bytes(_) => "bytes",
        U::Unit => "nothing",
        U::Option => "an optional value",
        U::NewtypeStruct | U::NewtypeVariant => "a wrapped value",
        U::Seq => "a list",
        U::Map => "a map",
        U::Enum | U::UnitVariant | U::TupleVariant | U::StructVariant => "a variant",
        U::Other(_) => "something else",
    }
}

/// serde's "`a`", "`a` or `b`", "one of `a`, `b`, `c`".
fn one_of(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    match quoted.as_slice() {
        [] => "nothing".into(),
        [one] => one.clone(),
        [a, b] => format!("{a} or {b}"),
        all => format!("one of {}", all.join(", ")),
    }
}

/// Every serde error that could embed manifest content is overridden: none
/// of these quotes a scalar's text. (`custom` carries the messages of our
/// own visitors and of serde's derives, which quote none.)
impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error::new(msg.to_string(), None)
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Error::new(format!("expected {exp}, found {}", found(unexp)), None)
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Error::new(
            format!("expected {exp}, found {} that does not fit", found(unexp)),
            None,
        )
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        Error::new(format!("expected {exp}, found {len} items"), None)
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Error::new(
            format!(
                "unknown field `{}`, expected {}",
                shown_key(field),
                one_of(expected)
            ),
            None,
        )
    }

    // The written word is quoted: only enum fields (`state`, `relabel`,
    // `protocol`) reach this, never an env or label value (they are strings),
    // and `unknown variant `sleeping`` is what a user needs to see.
    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Error::new(
            format!(
                "unknown variant `{}`, expected {}",
                shown_key(variant),
                one_of(expected)
            ),
            None,
        )
    }

    fn missing_field(field: &'static str) -> Self {
        Error::new(format!("missing field `{field}`"), None)
    }

    fn duplicate_field(field: &'static str) -> Self {
        Error::new(format!("duplicate field `{field}`"), None)
    }
}

/// Parses one YAML document into a node tree; `Ok(None)` for an empty file.
pub fn parse(text: &str, file: &Arc<Path>) -> Result<Option<Node>, Error> {
    let pos_of = |line: usize, col: usize| Position {
        file: file.clone(),
        line,
        column: col + 1,
    };
    let fail =
        |message: String, line: usize, col: usize| Error::new(message, Some(pos_of(line, col)));

    // Open collections: the node being built, its anchor id (0 for none) and,
    // for maps, a key waiting for its value. An anchor is registered when its
    // node is complete, so an alias inside its own anchor finds nothing.
    enum Open {
        Seq(Node, usize),
        Map(Node, usize, Option<Node>),
    }
    let mut stack: Vec<Open> = Vec::new();
    let mut anchors: Vec<(usize, Node)> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    let mut nodes = 0usize;
    let mut text_bytes = 0usize;

    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| {
            let m = e.marker();
            fail(e.info(), m.line(), m.col())
        })?;
        let (line, col) = (span.start.line(), span.start.col());
        let (node, anchor) = match event {
            Event::DocumentStart(..) => {
                documents += 1;
                if documents > 1 {
                    return Err(fail(
                        "a manifest holds one YAML document, found a second".into(),
                        line,
                        col,
                    ));
                }
                continue;
            }
            Event::Scalar(text, style, anchor, tag) => {
                let is_str_tag = tag.as_ref().is_some_and(|t| t.suffix() == "str");
                let plain = style == ScalarStyle::Plain && !is_str_tag;
                let node = Node {
                    value: Value::Scalar {
                        text: text.into_owned(),
                        plain,
                    },
                    pos: pos_of(line, col),
                };
                (node, anchor)
            }
            Event::SequenceStart(_, anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(fail(
                        format!("nesting deeper than {MAX_DEPTH} levels"),
                        line,
                        col,
                    ));
                }
                let node = Node {
                    value: Value::Seq(Vec::new()),
                    pos: pos_of(line, col),
                };
                stack.push(Open::Seq(node, anchor));
                continue;
            }
            Event::MappingStart(_, anchor, _) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(fail(
                        format!("nesting deeper than {MAX_DEPTH} levels"),
                        line,
                        col,
                    ));
                }
                let node = Node {
                    value: Value::Map(Vec::new()),
                    pos: pos_of(line, col),
                };
                stack.push(Open::Map(node, anchor, None));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Open::Seq(node, anchor)) | Some(Open::Map(node, anchor, _)) => (node, anchor),
                None => continue,
            },
            Event::Alias(id) => {
                let Some((_, target)) = anchors.iter().rev().find(|(a, _)| *a == id) else {
                    return Err(fail(
                        "alias to an unknown or enclosing anchor".into(),
                        line,
                        col,
                    ));
                };
                let (n, bytes) = count(target);
                nodes += n;
                text_bytes += bytes;
                let mut node = target.clone();
                node.pos = pos_of(line, col);
                (node, 0)
            }
            _ => continue,
        };
        nodes += 1;
        if let Value::Scalar { text, .. } = &node.value {
            text_bytes += text.len();
        }
        if text_bytes > MAX_TEXT_BYTES {
            return Err(fail(
                format!(
                    "more than {} KiB of text (counting alias expansion)",
                    MAX_TEXT_BYTES / 1024
                ),
                line,
                col,
            ));
        }
        if nodes > MAX_NODES {
            return Err(fail(
                format!("more than {MAX_NODES} nodes (counting alias expansion)"),
                line,
                col,
            ));
        }
        if anchor != 0 {
            anchors.push((anchor, node.clone()));
        }
        match stack.last_mut() {
            Some(Open::Seq(seq, _)) => {
                if let Value::Seq(items) = &mut seq.value {
                    items.push(node);
                }
            }
            Some(Open::Map(map, _, pending)) => match pending.take() {
                None => *pending = Some(node),
                Some(key) => {
                    if let Value::Map(entries) = &mut map.value {
                        if let Some(k) = key.as_str()
                            && entries.iter().any(|(e, _)| e.as_str() == Some(k))
                        {
                            return Err(Error::new(
                                format!("duplicate key `{}`", shown_key(k)),
                                Some(key.pos.clone()),
                            ));
                        }
                        entries.push((key, node));
                    }
                }
            },
            None => root = Some(node),
        }
    }
    Ok(root.filter(|n| !n.is_null()))
}

/// Nodes and scalar bytes in a subtree.
fn count(node: &Node) -> (usize, usize) {
    match &node.value {
        Value::Scalar { text, .. } => (1, text.len()),
        Value::Seq(items) => items.iter().map(count).fold((1, 0), add),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| add(count(k), count(v)))
            .fold((1, 0), add),
    }
}

fn add(a: (usize, usize), b: (usize, usize)) -> (usize, usize) {
    (a.0 + b.0, a.1 + b.1)
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

/// Deserializes a `T` from a node; the error carries the innermost position.
pub fn from_node<'de, T: de::Deserialize<'de>>(node: &'de Node) -> Result<T, Error> {
    T::deserialize(node)
}

/// Parses `text` and deserializes it; an empty document is an error.
pub fn from_str<T: de::DeserializeOwned>(text: &str, file: &Arc<Path>) -> Result<T, Error> {
    let node = parse(text, file)?.ok_or_else(|| Error::new("the file is empty", None))?;
    T::deserialize(&node)
}

/// Serializes a value as YAML (for files lanectl writes itself).
pub fn to_string<T: serde::Serialize>(value: &T) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(value)
}

impl<'de> de::Deserializer<'de> for &'de Node {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let result = match &self.value {
            Value::Scalar { text, plain: true } => {
                if is_null(text) {
                    visitor.visit_unit()
                } else if let Some(b) = parse_bool(text) {
                    visitor.visit_bool(b)
                } else if let Ok(i) = text.parse::<i64>() {
                    visitor.visit_i64(i)
                } else if let Ok(u) = text.parse::<u64>() {
                    visitor.visit_u64(u)
                } else if looks_like_float(text) {
                    match text.parse::<f64>() {
                        Ok(f) => visitor.visit_f64(f),
                        Err(_) => visitor.visit_str(text),
                    }
                } else {
                    visitor.visit_str(text)
                }
            }
            Value::Scalar { text, .. } => visitor.visit_str(text),
            Value::Seq(items) => visitor.visit_seq(Seq(items.iter().enumerate())),
            Value::Map(entries) => visitor.visit_map(Map {
                entries: entries.iter(),
                value: None,
            }),
        };
        result.map_err(|e| e.at(self))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.value {
            Value::Scalar { text, .. } => visitor.visit_str(text).map_err(|e: Error| e.at(self)),
            _ => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.value {
            Value::Scalar { text, .. } => visitor
                .visit_enum(text.as_str().into_deserializer())
                .map_err(|e: Error| e.at(self)),
            Value::Seq(_) => Err(Error::new(
                format!("expected {}, found a list", one_of(variants)),
                Some(self.pos.clone()),
            )),
            Value::Map(_) => Err(Error::new(
                format!("expected {}, found a map", one_of(variants)),
                Some(self.pos.clone()),
            )),
        }
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf
        unit unit_struct seq tuple tuple_struct map struct ignored_any
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// YAML 1.2 floats; rejects Rust-only spellings such as `inf` or `NaN`.
fn looks_like_float(text: &str) -> bool {
    let t = text.trim_start_matches(['+', '-']);
    !t.is_empty()
        && t.chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '.')
        && t.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
}

struct Seq<'a>(std::iter::Enumerate<std::slice::Iter<'a, Node>>);

impl<'de> SeqAccess<'de> for Seq<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.0.next() {
            Some((i, node)) => seed
                .deserialize(node)
                .map(Some)
                .map_err(|e| e.at(node).under_index(i)),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct Map<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    /// The entry whose key was just read.
    value: Option<&'a (Node, Node)>,
}

impl<'de> MapAccess<'de> for Map<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.entries.next() {
            Some(entry) => {
                self.value = Some(entry);
                let key = &entry.0;
                seed.deserialize(key).map(Some).map_err(|e| e.at(key))
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.value.take() {
            Some((key, node)) => seed
                .deserialize(node)
                .map_err(|e| e.at(node).under_key(key)),
            None => Err(<Error as de::Error>::custom(
                "a value was asked for before its key",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn file() -> Arc<Path> {
        Arc::from(Path::new("x.yaml"))
    }

    #[test]
    fn strings_keep_their_text_when_a_string_is_asked_for() {
        let map: BTreeMap<String, String> =
            from_str("a: 1.50\nb: true\nc: 'q'\nd: 007\n", &file()).unwrap();
        assert_eq!(map["a"], "1.50");
        assert_eq!(map["b"], "true");
        assert_eq!(map["c"], "q");
        assert_eq!(map["d"], "007");
    }

    #[test]
    fn unknown_fields_are_reported_at_the_key() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)] // the field is only there to be known
        struct S {
            a: Option<u16>,
        }
        let err = from_str::<S>("a: 1\nbogus: 2\n", &file()).unwrap_err();
        assert_eq!(err.pos.as_ref().map(|p| (p.line, p.column)), Some((2, 1)));
        assert!(err.message.contains("unknown field `bogus`"), "{err}");
    }

    #[test]
    fn type_errors_are_reported_at_the_value() {
        let err = from_str::<BTreeMap<String, u16>>("a: 1\nb:   [x]\n", &file()).unwrap_err();
        assert_eq!(err.pos.as_ref().map(|p| (p.line, p.column)), Some((2, 6)));
    }

    /// A planted value that no message may quote.
    const SECRET: &str = "sk-S3CR3T";

    #[test]
    fn type_errors_never_quote_the_scalar_they_are_about() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)] // the fields are only there to be typed
        struct S {
            n: Option<u16>,
            b: Option<bool>,
            f: Option<f64>,
            m: Option<BTreeMap<String, String>>,
            l: Option<Vec<u16>>,
        }
        for (text, found) in [
            ("n: sk-S3CR3T\n", "found a string"),
            ("n: 'sk-S3CR3T'\n", "found a string"),
            ("b: \"sk-S3CR3T\"\n", "found a string"),
            ("f: sk-S3CR3T\n", "found a string"),
            ("m: sk-S3CR3T\n", "found a string"),
            ("m: |\n  sk-S3CR3T\n", "found a string"),
            ("l: [1, sk-S3CR3T]\n", "found a string"),
            ("n: 7000012345\n", "number"),
            ("n: -12345\n", "number"),
            ("b: 12345\n", "found a number"),
            ("m: {a: [sk-S3CR3T]}\n", "found a list"),
        ] {
            let err = from_str::<S>(text, &file()).unwrap_err();
            let shown = err.to_string();
            assert!(
                !shown.contains(SECRET) && !shown.contains("12345"),
                "{text:?} quoted: {shown}"
            );
            assert!(shown.contains(found), "{text:?}: {shown}");
            // A block scalar's position is its first line of text.
            let line = if text.contains('|') { 2 } else { 1 };
            assert_eq!(err.pos.as_ref().map(|p| p.line), Some(line), "{shown}");
        }
    }

    #[test]
    fn type_errors_name_the_field_they_are_about() {
        let err = from_str::<BTreeMap<String, Vec<BTreeMap<String, u16>>>>(
            "m: [{a: 1}, {a: x}]\n",
            &file(),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("x.yaml:1:17: m[1].a: "),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_field_with_an_equals_sign_is_shown_only_up_to_it() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)] // the field is only there to be known
        struct S {
            env: Option<u16>,
        }
        let err = from_str::<S>("API_TOKEN=sk-S3CR3T: 1\n", &file()).unwrap_err();
        assert!(!err.to_string().contains(SECRET), "{err}");
        assert!(err.message.contains("`API_TOKEN=…`"), "{err}");
        assert_eq!(err.pos.as_ref().map(|p| (p.line, p.column)), Some((1, 1)));
    }

    #[test]
    fn a_duplicate_key_with_an_equals_sign_is_shown_only_up_to_it() {
        let err = parse("env: {A=sk-S3CR3T: 1, A=sk-S3CR3T: 2}\n", &file()).unwrap_err();
        assert!(!err.to_string().contains(SECRET), "{err}");
        assert!(err.message.contains("`A=…`"), "{err}");
    }

    #[test]
    fn an_alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let err = parse(&text, &file()).unwrap_err();
        assert!(err.message.contains("alias"), "{err}");
    }

    #[test]
    fn a_long_string_repeated_through_aliases_is_refused() {
        let long = "x".repeat(200 * 1024);
        let text = format!("a: &a {long}\nb: [*a, *a, *a, *a, *a, *a]\n");
        let err = parse(&text, &file()).unwrap_err();
        assert!(err.message.contains("KiB of text"), "{err}");
    }

    #[test]
    fn aliases_within_the_budget_expand() {
        let map: BTreeMap<String, Vec<String>> =
            from_str("a: &x [p, q]\nb: *x\n", &file()).unwrap();
        assert_eq!(map["b"], vec!["p", "q"]);
    }

    #[test]
    fn more_nodes_than_the_limit_are_refused_without_any_alias() {
        // One sequence holding MAX_NODES scalars is MAX_NODES + 1 nodes.
        let list = |n: usize| format!("[{}]", vec!["x"; n].join(", "));
        assert!(parse(&list(MAX_NODES - 1), &file()).is_ok());
        match parse(&list(MAX_NODES), &file()) {
            Err(err) => assert!(err.message.contains("more than 20000 nodes"), "{err}"),
            Ok(_) => panic!("a document of {} nodes was accepted", MAX_NODES + 1),
        }
        assert!(
            list(MAX_NODES).len() < MAX_TEXT_BYTES / 8,
            "not the text limit"
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(MAX_DEPTH + 2) + &"]".repeat(MAX_DEPTH + 2);
        let err = parse(&text, &file()).unwrap_err();
        assert!(err.message.contains("nesting"), "{err}");
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = parse("a: 1\na: 2\n", &file()).unwrap_err();
        assert_eq!(err.pos.map(|p| p.line), Some(2));
    }

    #[test]
    fn a_second_document_is_refused() {
        assert!(parse("a: 1\n---\nb: 2\n", &file()).is_err());
    }

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
