//! The lane hash ([`lane_hash`]): what decides whether a lane's container is still
//! the one its manifest asks for. It covers the resolved spec, the image ID, the
//! codex fingerprint and the content of the `track_content` mounts (both made by
//! [`content`](crate::content)), each part kept on the container's labels so that
//! `plan` can name what changed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::digest::sha256_hex;
use crate::labels::{
    CODEX_FINGERPRINT, CONFIG_HASH, HASH_VERSION, IMAGE_ID, INSTANCE, LANE, MANAGED_BY, SPEC_HASH,
    TRACKED_HASH,
};
use crate::lanespec::LaneSpec;

/// The lane hash and the parts it is made of (the parts go on labels so that
/// `plan` can name what changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneHash {
    /// `sha256:<hex>` over everything below.
    pub full: String,
    /// sha256 of the canonical resolved spec alone.
    pub config: String,
    pub image_id: String,
    pub codex: Option<String>,
    /// sha256 over the `track_content` mounts' content hashes ("" when none).
    pub tracked: String,
    /// Those content hashes by mount target (kept on the container so that
    /// `plan` can name the mount whose content changed).
    pub tracked_parts: Vec<(String, String)>,
}

impl LaneHash {
    /// The labels lanectl puts on a lane's container, besides the user's own:
    /// the instance, the lane, and this hash with its parts.
    pub fn labels(&self, instance: &str, lane: &str) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            (MANAGED_BY.to_string(), "lanectl".to_string()),
            (INSTANCE.to_string(), instance.to_string()),
            (LANE.to_string(), lane.to_string()),
            (SPEC_HASH.to_string(), self.full.clone()),
            (CONFIG_HASH.to_string(), self.config.clone()),
            (IMAGE_ID.to_string(), self.image_id.clone()),
            (TRACKED_HASH.to_string(), self.tracked.clone()),
            (HASH_VERSION.to_string(), CANONICAL_VERSION.to_string()),
        ]);
        if let Some(fp) = &self.codex {
            labels.insert(CODEX_FINGERPRINT.to_string(), fp.clone());
        }
        labels
    }
}

/// Version of the canonical serialization. Changing anything that feeds
/// [`lane_hash`] recreates every lane of every user on upgrade: the golden
/// test below pins it.
pub const CANONICAL_VERSION: u32 = 1;

/// The lane hash: the canonical serialization is JSON (serde_json, struct
/// fields in declaration order, maps sorted by key) of the resolved spec
/// (`state`, `probe`, `stop_timeout` and the codex source excluded), then of
/// that spec's hash with the image ID, codex fingerprint and tracked content.
pub fn lane_hash(
    spec: &LaneSpec,
    image_id: &str,
    codex: Option<&str>,
    tracked: &[(String, String)],
) -> LaneHash {
    #[derive(Serialize)]
    struct Config<'a> {
        v: u32,
        spec: &'a LaneSpec,
    }
    #[derive(Serialize)]
    struct Full<'a> {
        v: u32,
        config: &'a str,
        image_id: &'a str,
        codex: Option<&'a str>,
        tracked: &'a str,
    }
    let canonical = |value: &dyn erased::Json| sha256_hex(&value.json());
    let config = canonical(&Config {
        v: CANONICAL_VERSION,
        spec,
    });
    let tracked_parts = tracked.to_vec();
    let tracked = tracked_digest(tracked);
    let full = canonical(&Full {
        v: CANONICAL_VERSION,
        config: &config,
        image_id,
        codex,
        tracked: &tracked,
    });
    LaneHash {
        full: format!("sha256:{full}"),
        config,
        image_id: image_id.to_string(),
        codex: codex.map(str::to_string),
        tracked,
        tracked_parts,
    }
}

/// The resolved spec as it is kept on the container
/// ([`SPEC_ANNOTATION`](crate::labels::SPEC_ANNOTATION)): what the hash
/// covers of it, in canonical JSON, every env and label value replaced by
/// its sha256 (the container's inspect shows the values anyway; a label
/// listing need not).
pub fn stored_spec(spec: &LaneSpec) -> serde_json::Value {
    let mut value = serde_json::to_value(spec).unwrap_or(serde_json::Value::Null);
    for field in ["env", "labels"] {
        if let Some(serde_json::Value::Object(map)) = value.get_mut(field) {
            for v in map.values_mut() {
                let text = v.as_str().unwrap_or_default();
                *v = serde_json::Value::String(sha256_hex(text.as_bytes()));
            }
        }
    }
    value
}

/// One field in which two stored specs differ: its path
/// (`env.INBOX_LANE_ID`, `mounts[0].read_only`, `image`) and its value on
/// each side (`None` where it is absent).
#[derive(Debug, PartialEq)]
pub struct Changed<'a> {
    pub field: String,
    pub old: Option<&'a serde_json::Value>,
    pub new: Option<&'a serde_json::Value>,
}

/// The fields in which two stored specs differ, in order.
pub fn changed_fields<'a>(
    old: &'a serde_json::Value,
    new: &'a serde_json::Value,
) -> Vec<Changed<'a>> {
    use serde_json::Value;
    fn walk<'a>(
        path: &str,
        old: Option<&'a Value>,
        new: Option<&'a Value>,
        out: &mut Vec<Changed<'a>>,
    ) {
        match (old, new) {
            (Some(Value::Object(a)), Some(Value::Object(b))) => {
                let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for k in keys {
                    let at = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(&at, a.get(k), b.get(k), out);
                }
            }
            (Some(Value::Array(a)), Some(Value::Array(b))) => {
                for i in 0..a.len().max(b.len()) {
                    walk(&format!("{path}[{i}]"), a.get(i), b.get(i), out);
                }
            }
            (a, b) if a == b => {}
            (old, new) => out.push(Changed {
                field: path.to_string(),
                old,
                new,
            }),
        }
    }
    let mut out = Vec::new();
    walk("", Some(old), Some(new), &mut out);
    out
}

/// The digest of a lane's `track_content` mounts (target, content hash),
/// as [`LaneHash::tracked`] holds it: `""` when there are none.
pub fn tracked_digest(tracked: &[(String, String)]) -> String {
    if tracked.is_empty() {
        return String::new();
    }
    sha256_hex(&erased::Json::json(&tracked))
}

/// What a lane's status answers to, besides Podman (SPEC.md "Explaining and
/// waiting"): the manifest's bytes, `_defaults.yaml`'s, the codex
/// fingerprint and the tracked content. `lanectl wait` computes it from the
/// files alone and accepts a status only when it carries the same.
pub fn inputs_digest(
    manifest_sha256: &str,
    defaults_sha256: Option<&str>,
    codex: Option<&str>,
    tracked: &str,
) -> String {
    #[derive(Serialize)]
    struct Inputs<'a> {
        manifest: &'a str,
        defaults: Option<&'a str>,
        codex: Option<&'a str>,
        tracked: &'a str,
    }
    sha256_hex(&erased::Json::json(&Inputs {
        manifest: manifest_sha256,
        defaults: defaults_sha256,
        codex,
        tracked,
    }))
}

mod erased {
    /// Serializes to canonical JSON bytes. The types fed here hold only
    /// strings, integers, finite floats, bools and string-keyed maps, which
    /// serde_json always serializes: a failure is a bug (an empty output
    /// would make different specs hash alike and hide it).
    pub trait Json {
        fn json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Vec<u8> {
            #[allow(clippy::expect_used)]
            serde_json::to_vec(self).expect("BUG: the lane hash's inputs serialize to JSON")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lane_hash_of_a_fixed_spec_and_image_never_changes() {
        // An accidental change here recreates every lane of every user on
        // upgrade: change CANONICAL_VERSION knowingly, never this value.
        let spec = crate::lanespec::tests::golden_spec();
        let h = lane_hash(
            &spec,
            "0123abcd",
            Some("51d2ba91"),
            &[("/data".into(), "e3b0".into())],
        );
        assert_eq!(
            h.full,
            "sha256:b2a630d65e639b45677d1d9a94ebcb6570d62710d99d28caa2eb0ff96cd9ba14"
        );
        let again = lane_hash(
            &spec,
            "0123abcd",
            Some("51d2ba91"),
            &[("/data".into(), "e3b0".into())],
        );
        assert_eq!(h, again);
        let other_image = lane_hash(
            &spec,
            "0123abce",
            Some("51d2ba91"),
            &[("/data".into(), "e3b0".into())],
        );
        assert_ne!(h.full, other_image.full);
        assert_eq!(h.config, other_image.config);
    }
}
