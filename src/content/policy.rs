//! Who may have written what lanectl trusts (SPEC.md "Safety"): the [`Policy`]
//! that the check applies to paths and the reads apply to what they opened.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The fix of a refused permission: the exact command for `path`, or the
/// flag that accepts it.
fn fix(command: &str, path: &Path) -> String {
    let quoted = shell_words::quote(&path.to_string_lossy()).into_owned();
    format!("(fix: {command} {quoted}, or pass --allow-insecure-permissions)")
}

/// Who may have written what lanectl trusts (SPEC.md "Safety"): a manifest can mount
/// any host path into a root container, and a codex or `track_content` source puts
/// files into one. Running as root, such a file or directory must be owned by root or
/// by lanectl's own user and writable by neither group nor others, and a directory
/// above it that others can write needs the sticky bit. Passed in rather than looked
/// up, so that tests can apply it without root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Whether to check at all: as root, without `--allow-insecure-permissions`.
    pub check: bool,
    /// The user lanectl runs as: what it owns is trusted like what root owns.
    pub euid: u32,
}

impl Policy {
    /// This process's policy: checks when it runs as root, unless `allow_insecure`.
    pub fn of_process(allow_insecure: bool) -> Policy {
        // SAFETY: geteuid has no preconditions and cannot fail.
        Policy::for_user(unsafe { libc::geteuid() }, allow_insecure)
    }

    /// The policy of lanectl running as `euid`: checks as root (0), unless
    /// `allow_insecure` (`--allow-insecure-permissions`).
    pub fn for_user(euid: u32, allow_insecure: bool) -> Policy {
        Policy {
            check: euid == 0 && !allow_insecure,
            euid,
        }
    }

    /// A file or directory (`path`) whose content is trusted.
    pub fn content(&self, meta: &Metadata, path: &Path) -> Result<(), String> {
        self.owner(meta, path)?;
        let mode = meta.mode();
        if self.check && mode & 0o022 != 0 {
            return Err(format!(
                "writable by group or others (mode {:o}): refused because lanectl runs as root {}",
                mode & 0o7777,
                fix("chmod go-w", path)
            ));
        }
        Ok(())
    }

    /// A directory above one whose content is trusted: whoever may write it can
    /// rename what lies below, unless the sticky bit keeps them to their own entries.
    pub fn parent(&self, meta: &Metadata, path: &Path) -> Result<(), String> {
        self.owner(meta, path)?;
        let mode = meta.mode();
        if self.check && mode & 0o002 != 0 && mode & 0o1000 == 0 {
            return Err(format!(
                "writable by others without the sticky bit (mode {:o}): anyone could swap what lies below it {}",
                mode & 0o7777,
                fix("chmod o-w", path)
            ));
        }
        Ok(())
    }

    /// Who owns it; all that counts for a symlink, whose mode means nothing.
    pub fn owner(&self, meta: &Metadata, path: &Path) -> Result<(), String> {
        self.owned(meta, path, "chown root")
    }

    /// Who owns a symlink (`chown -h`: a plain chown would follow it).
    pub fn link_owner(&self, meta: &Metadata, path: &Path) -> Result<(), String> {
        self.owned(meta, path, "chown -h root")
    }

    fn owned(&self, meta: &Metadata, path: &Path, command: &str) -> Result<(), String> {
        if self.check && meta.uid() != 0 && meta.uid() != self.euid {
            return Err(format!(
                "owned by uid {}, not root: refused because a manifest can mount any host path into a root container {}",
                meta.uid(),
                fix(command, path)
            ));
        }
        Ok(())
    }

    /// Checks nothing.
    #[cfg(test)]
    pub const OFF: Policy = Policy {
        check: false,
        euid: 0,
    };
}
