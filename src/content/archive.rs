//! The codex archive's entries: where they go ([`archive_prefix`], the rule that
//! `spec` applies to a manifest's codex target too), under which owner, and with
//! which tar header.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::ContentError;

/// Where archive entries go, under which prefix, with which owner.
pub(super) type TarOut<'a, W> = (&'a mut tar::Builder<W>, &'a Path, (u64, u64));

/// A tar header with the source's permission bits (plus `min_mode`), mtime and `owner`.
pub(super) fn header(
    entry_type: tar::EntryType,
    meta: &Metadata,
    min_mode: u32,
    owner: (u64, u64),
) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode((meta.mode() & 0o777) | min_mode);
    header.set_uid(owner.0);
    header.set_gid(owner.1);
    header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
    header.set_size(0);
    header
}

/// `target` made relative (`/root/.codex` -> `root/.codex`), checked to be a directory
/// below `/` named by plain components. `spec` applies the same rule to a manifest's
/// codex target, so that a target the archive would refuse is an invalid lane.
pub fn archive_prefix(target: &str) -> Result<PathBuf, ContentError> {
    let invalid = |reason: &str| ContentError::Target {
        target: target.to_owned(),
        reason: reason.to_owned(),
    };
    let mut prefix = PathBuf::new();
    for component in Path::new(target).components() {
        match component {
            Component::RootDir => {}
            Component::Normal(part) => prefix.push(part),
            _ => return Err(invalid("must be an absolute path without `.` or `..`")),
        }
    }
    if !target.starts_with('/') {
        return Err(invalid("must be an absolute path without `.` or `..`"));
    }
    if prefix.as_os_str().is_empty() {
        return Err(invalid(
            "the container's root cannot be a codex target: name a directory below it",
        ));
    }
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content::tests::{set_mode, write};
    use crate::content::{Policy, codex_archive, codex_fingerprint};
    use std::fs;
    use std::io::{self, Read};
    use std::os::unix::fs::{PermissionsExt, symlink};
    use tempfile::TempDir;

    #[test]
    fn archive_holds_exactly_the_fingerprinted_files() {
        let dir = TempDir::new().unwrap();
        let long = format!("sessions/{}/deep.txt", "x".repeat(150));
        let files = [
            ("config.toml", 0o200),
            ("sessions/2026/a.jsonl", 0o640),
            (&long, 0o444),
        ];
        for (rel, mode) in files {
            write(dir.path(), rel, rel.as_bytes());
            fs::set_permissions(dir.path().join(rel), fs::Permissions::from_mode(mode)).unwrap();
        }
        let long_dir = long.trim_end_matches("/deep.txt");
        for (rel, mode) in [
            ("", 0o755),
            ("sessions/2026", 0o750),
            (long_dir, 0o755),
            ("sessions", 0o500),
        ] {
            fs::set_permissions(dir.path().join(rel), fs::Permissions::from_mode(mode)).unwrap();
        }
        symlink("config.toml", dir.path().join("link")).unwrap();

        let mut tar = Vec::new();
        let fingerprint = codex_archive(
            dir.path(),
            "/root/.codex/",
            (1000, 1001),
            &mut tar,
            Policy::OFF,
        )
        .unwrap();
        fs::set_permissions(
            dir.path().join("sessions"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_eq!(
            fingerprint,
            codex_fingerprint(dir.path(), Policy::OFF).unwrap()
        );

        let mut got = Vec::new();
        for entry in tar::Archive::new(tar.as_slice()).entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header();
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (1000, 1001));
            let (mode, is_dir) = (header.mode().unwrap(), header.entry_type().is_dir());
            let name = entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_owned();
            let mut body = String::new();
            entry.read_to_string(&mut body).unwrap();
            got.push((name, mode, is_dir, body));
        }
        let want = [
            ("", 0o755, true, ""),
            ("/sessions", 0o700, true, ""),
            ("/sessions/2026", 0o750, true, ""),
            (&format!("/{long_dir}"), 0o755, true, ""),
            ("/config.toml", 0o600, false, "config.toml"),
            ("/link", 0o600, false, "config.toml"),
            (
                "/sessions/2026/a.jsonl",
                0o640,
                false,
                "sessions/2026/a.jsonl",
            ),
            (&format!("/{long}"), 0o444, false, &long),
        ];
        let want: Vec<_> = want
            .iter()
            .map(|(rel, mode, is_dir, body)| {
                (
                    format!("root/.codex{rel}"),
                    *mode,
                    *is_dir,
                    body.to_string(),
                )
            })
            .collect();
        assert_eq!(got, want);

        let unpacked = TempDir::new().unwrap();
        tar::Archive::new(tar.as_slice())
            .unpack(unpacked.path())
            .unwrap();
        assert_eq!(
            codex_fingerprint(&unpacked.path().join("root/.codex"), Policy::OFF).unwrap(),
            fingerprint
        );
    }

    #[test]
    fn archive_target_must_be_absolute_and_plain() {
        let dir = TempDir::new().unwrap();
        for target in ["root/.codex", "/", "/root/../etc", ""] {
            let err =
                codex_archive(dir.path(), target, (0, 0), io::sink(), Policy::OFF).unwrap_err();
            assert!(
                matches!(err, ContentError::Target { .. }),
                "{target}: {err:?}"
            );
        }
    }

    #[test]
    fn archived_files_gain_owner_read_and_lose_setuid_setgid_and_sticky_bits() {
        let dir = TempDir::new().unwrap();
        for (rel, mode) in [("tool", 0o4750), ("shared", 0o2640), ("wo", 0o200)] {
            write(dir.path(), &format!("d/{rel}"), b"x");
            set_mode(&dir.path().join("d").join(rel), mode);
        }
        set_mode(&dir.path().join("d"), 0o1577);
        let mut tar = Vec::new();
        codex_archive(dir.path(), "/c", (0, 0), &mut tar, Policy::OFF).unwrap();
        set_mode(&dir.path().join("d"), 0o755);
        let modes: Vec<(String, u32)> = tar::Archive::new(tar.as_slice())
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                (name, e.header().mode().unwrap())
            })
            .collect();
        let want = [
            ("c/d", 0o777),
            ("c/d/shared", 0o640),
            ("c/d/tool", 0o750),
            ("c/d/wo", 0o600),
        ];
        for (name, mode) in want {
            assert!(
                modes.contains(&(name.into(), mode)),
                "{name} {mode:o}: {modes:?}"
            );
        }
    }
}
