//! Replacing a file whole or not at all: a temporary file beside it, synced,
//! renamed over it, and the directory synced, so that a reader (or a crash)
//! sees the old bytes or the new, never a part.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `bytes` to `path` atomically with `mode`. The temporary file is
/// named `<temp_prefix>…​.tmp` in the same directory (callers that tidy up
/// after a killed writer find theirs by it). rename(2) replaces a symlink
/// at `path` itself, never its target.
pub fn write(path: &Path, temp_prefix: &str, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(temp_prefix)
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename is durable only once the directory is on disk too.
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}
