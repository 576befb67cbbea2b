//! The generic digest: sha256 of bytes in lower hex, for whoever needs one (the
//! instance id, a manifest file's bytes, the lane hash and its parts). A leaf: it
//! imports no other module of the crate, so every module may use it without a loop.

use sha2::{Digest, Sha256};

/// sha256 of bytes in lower hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
