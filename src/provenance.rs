//! Provenance: the git commit checked out where the lanes directory lives
//! (SPEC.md "Explaining and waiting"), read from `.git` itself, without
//! spawning `git` per lane: HEAD, the ref it names (loose, else in
//! `packed-refs`), a `.git` file pointing elsewhere (a worktree, a
//! submodule) followed. It is recorded on a container when it is made and
//! shown in the status; it never decides anything.

use std::path::{Path, PathBuf};

/// The commit (40 or 64 hex digits) checked out in the git work tree that
/// holds `dir`, if any; `None` outside a work tree or when it cannot be
/// read (an unborn branch, a damaged repository).
pub fn git_commit(dir: &Path) -> Option<String> {
    let start = std::fs::canonicalize(dir).ok()?;
    let git_dir = start
        .ancestors()
        .find_map(|d| git_dir_of(&d.join(".git")))?;
    let head = std::fs::read_to_string(git_dir.join("HEAD")).ok()?;
    let head = head.trim();
    let Some(name) = head.strip_prefix("ref: ") else {
        return is_commit(head).then(|| head.to_string());
    };
    // A worktree keeps its HEAD, the repository its refs (`commondir`).
    let common = match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(rel) => git_dir.join(rel.trim()),
        Err(_) => git_dir.clone(),
    };
    for base in [&git_dir, &common] {
        if let Ok(text) = std::fs::read_to_string(base.join(name)) {
            let commit = text.trim();
            if is_commit(commit) {
                return Some(commit.to_string());
            }
        }
    }
    let packed = std::fs::read_to_string(common.join("packed-refs")).ok()?;
    packed.lines().find_map(|line| {
        let (commit, r) = line.split_once(' ')?;
        (r == name && is_commit(commit)).then(|| commit.to_string())
    })
}

/// The git directory a `.git` entry stands for: the directory itself, or
/// where a `.git` file (`gitdir: …`) points.
fn git_dir_of(dot_git: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(dot_git).ok()?;
    if meta.is_dir() {
        return Some(dot_git.to_path_buf());
    }
    let text = std::fs::read_to_string(dot_git).ok()?;
    let target = text.trim().strip_prefix("gitdir: ")?;
    let base = dot_git.parent()?;
    Some(base.join(target))
}

fn is_commit(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A commit as people read it: its first 7 characters.
pub fn short(commit: &str) -> &str {
    commit.get(..7).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_loose_refs_packed_refs_detached_heads_and_git_files_are_read() {
        let root = tempfile::tempdir().unwrap();
        let git = root.path().join(".git");
        std::fs::create_dir_all(git.join("refs/heads")).unwrap();
        let lanes = root.path().join("deploy/lanes.d");
        std::fs::create_dir_all(&lanes).unwrap();
        let (a, b) = ("a".repeat(40), "b".repeat(40));

        std::fs::write(git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        assert_eq!(git_commit(&lanes), None, "an unborn branch has no commit");
        std::fs::write(
            git.join("packed-refs"),
            format!("# pack-refs\n{b} refs/heads/main\n"),
        )
        .unwrap();
        assert_eq!(git_commit(&lanes), Some(b.clone()), "packed");
        std::fs::write(git.join("refs/heads/main"), format!("{a}\n")).unwrap();
        assert_eq!(git_commit(&lanes), Some(a.clone()), "a loose ref wins");
        std::fs::write(git.join("HEAD"), format!("{b}\n")).unwrap();
        assert_eq!(git_commit(&lanes), Some(b.clone()), "detached");

        // A worktree: `.git` is a file naming its git dir, refs in commondir.
        let wt = root.path().join("wt");
        let wt_git = git.join("worktrees/wt");
        std::fs::create_dir_all(&wt_git).unwrap();
        std::fs::create_dir_all(wt.join("lanes.d")).unwrap();
        std::fs::write(wt.join(".git"), format!("gitdir: {}\n", wt_git.display())).unwrap();
        std::fs::write(wt_git.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        std::fs::write(wt_git.join("commondir"), "../..\n").unwrap();
        assert_eq!(git_commit(&wt.join("lanes.d")), Some(a.clone()));

        let outside = tempfile::tempdir().unwrap();
        assert_eq!(git_commit(outside.path()), None);
        assert_eq!(short(&a), "aaaaaaa");
    }
}
