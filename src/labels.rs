//! The contract with Podman in one place: label keys and the instance id.
//!
//! Every container lanectl creates carries these labels; lanectl finds its
//! containers by `io.lanectl.instance` alone and never touches one without it.
//! Besides SPEC.md's labels, lanectl records the parts of the hash
//! (`config-hash`, `image-id`, `tracked-hash`) so that `plan` can say *why* a
//! lane would be recreated.

use std::path::Path;

pub const PREFIX: &str = "io.lanectl.";
pub const MANAGED_BY: &str = "io.lanectl.managed-by";
pub const INSTANCE: &str = "io.lanectl.instance";
pub const LANE: &str = "io.lanectl.lane";
pub const SPEC_HASH: &str = "io.lanectl.spec-hash";
pub const CODEX_FINGERPRINT: &str = "io.lanectl.codex-fingerprint";
pub const CONFIG_HASH: &str = "io.lanectl.config-hash";
pub const IMAGE_ID: &str = "io.lanectl.image-id";
pub const TRACKED_HASH: &str = "io.lanectl.tracked-hash";
/// The version of the canonical serialization the hash was made with: a
/// later lanectl that canonicalizes differently compares field by field
/// ([`SPEC_ANNOTATION`]) instead of trusting a hash it cannot remake.
pub const HASH_VERSION: &str = "io.lanectl.hash-version";
/// The git commit checked out where the lanes directory lives, when the
/// container was made (never a reason to recreate).
pub const GIT_COMMIT: &str = "io.lanectl.git-commit";
/// An annotation (inspect shows it, the list call does not carry it): the
/// resolved spec in canonical JSON, env and label values as their sha256,
/// so that `plan` can name the fields that changed.
pub const SPEC_ANNOTATION: &str = "io.lanectl.spec";
/// An annotation: the sha256 of each codex file by path (never the bytes).
pub const CODEX_FILES_ANNOTATION: &str = "io.lanectl.codex-files";
/// An annotation: each `track_content` mount's content hash by target.
pub const TRACKED_ANNOTATION: &str = "io.lanectl.tracked";
/// On a start-first rollout's new container, made under [`next_name`]:
/// `next`. A label is fixed at create, so the name, not this, tells whether
/// the container still awaits its swap.
pub const ROLE: &str = "io.lanectl.role";

/// The temporary name of a start-first rollout's new container: the lane's
/// container name and `.next`, until the swap renames it.
pub fn next_name(container_name: &str) -> String {
    format!("{container_name}.next")
}

/// An instance id goes into a Podman label filter (`label=KEY=VALUE`, and
/// filters are joined with `,` in places): an empty value would match every
/// instance, and `=`, `,`, whitespace or other punctuation could be read as
/// filter syntax. Only `[A-Za-z0-9_.-]`, 1 to 63 characters, is accepted
/// (from `--instance` and from `_defaults.yaml`'s `instance:` alike).
pub fn instance_id(id: &str) -> Result<String, String> {
    const RULE: &str = "letters, digits, '_', '.' and '-' only, 1 to 63 characters";
    if id.is_empty() {
        return Err(format!(
            "must not be empty (an empty instance would match every lanes directory's containers; {RULE})"
        ));
    }
    if id.len() > 63 {
        return Err(format!("is {} characters long ({RULE})", id.len()));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!("contains {bad:?} ({RULE})"));
    }
    Ok(id.to_string())
}

/// The default instance id: the first 12 hex of sha256 of the directory's
/// canonical absolute path.
pub fn default_instance(dir: &Path) -> std::io::Result<String> {
    let canonical = std::fs::canonicalize(dir)?;
    let hex = crate::digest::sha256_hex(canonical.as_os_str().as_encoded_bytes());
    Ok(hex[..12].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_id_is_twelve_hex_of_the_canonical_path() {
        let dir = tempfile::tempdir().unwrap();
        let id = default_instance(dir.path()).unwrap();
        assert_eq!(id.len(), 12);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
        let dotted = dir.path().join(".");
        assert_eq!(default_instance(&dotted).unwrap(), id);
    }
}
