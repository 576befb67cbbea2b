//! Text to node tree: serde-saphyr's event parser, bounded (depth, nodes,
//! text) while the tree is built.

use std::path::Path;
use std::sync::Arc;

use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle};

use super::{Error, MAX_DEPTH, MAX_NODES, MAX_TEXT_BYTES, Node, Position, Value, shown_key};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml::from_str;
    use crate::yaml::tests::{SECRET, file};
    use std::collections::BTreeMap;

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
}
