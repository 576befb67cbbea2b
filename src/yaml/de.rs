//! Node tree to typed values through serde: the `Deserializer` for `&Node`,
//! lazy typing of plain scalars, and serde errors that quote no scalar.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::parse::parse;
use super::{Error, ErrorKind, Node, Value, is_null, shown_key};

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

/// What serde expects, in a user's words: `u16` is a whole number.
fn in_words(exp: &dyn de::Expected) -> String {
    let said = exp.to_string();
    match said.as_str() {
        "u8" | "u16" | "u32" | "u64" | "i8" | "i16" | "i32" | "i64" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        _ => said,
    }
}

/// The range of an integer type serde expects.
fn range(exp: &dyn de::Expected) -> Option<(i128, i128)> {
    Some(match exp.to_string().as_str() {
        "u8" => (0, u8::MAX.into()),
        "u16" => (0, u16::MAX.into()),
        "u32" => (0, u32::MAX.into()),
        "u64" => (0, u64::MAX.into()),
        _ => return None,
    })
}

/// serde's "`a`", "`a` or `b`", "one of `a`, `b`, `c`".
/// The known name a typo most likely meant: at most 2 edits away (and
/// fewer than half its letters), the closest first. Only our own names are
/// ever suggested, never anything of the file's.
fn nearest<'a>(typed: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edits(typed, k), *k))
        .filter(|(d, k)| *d <= 2 && *d * 2 < k.len())
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance, counting a swap of neighbours as one edit.
fn edits(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

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
        Error::new(
            format!("expected {}, found {}", in_words(exp), found(unexp)),
            None,
        )
    }

    // Not even a number is quoted (it may be a PIN typed in the wrong
    // place); the range it missed is said instead.
    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        use de::Unexpected as U;
        let message = match (unexp, range(exp)) {
            (U::Unsigned(_) | U::Signed(_), Some((lo, hi))) => {
                format!("a number out of range ({lo}-{hi})")
            }
            _ => format!(
                "expected {}, found {} that does not fit",
                in_words(exp),
                found(unexp)
            ),
        };
        Error::new(message, None)
    }

    fn invalid_length(len: usize, exp: &dyn de::Expected) -> Self {
        Error::new(format!("expected {exp}, found {len} items"), None)
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        let message = match nearest(field, expected) {
            Some(known) => format!(
                "unknown field `{}`: did you mean `{known}`?",
                shown_key(field)
            ),
            None => format!(
                "unknown field `{}`, expected {}",
                shown_key(field),
                one_of(expected)
            ),
        };
        Error::new(message, None).of_kind(ErrorKind::UnknownField)
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
        Error::new(format!("missing field `{field}`"), None).of_kind(ErrorKind::MissingField(field))
    }

    fn duplicate_field(field: &'static str) -> Self {
        Error::new(format!("duplicate field `{field}`"), None)
    }
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
    use crate::yaml::tests::{SECRET, file};
    use std::collections::BTreeMap;

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
    fn a_typo_of_a_known_field_is_answered_with_the_field() {
        assert_eq!(nearest("imgae", &["image", "user"]), Some("image"));
        assert_eq!(
            nearest("contianer_name", &["container_name"]),
            Some("container_name")
        );
        assert_eq!(nearest("bogus", &["image", "user"]), None);
        assert_eq!(
            nearest("x", &["y"]),
            None,
            "one letter is no typo of another"
        );
    }

    #[test]
    fn type_errors_are_reported_at_the_value() {
        let err = from_str::<BTreeMap<String, u16>>("a: 1\nb:   [x]\n", &file()).unwrap_err();
        assert_eq!(err.pos.as_ref().map(|p| (p.line, p.column)), Some((2, 6)));
    }

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
}
