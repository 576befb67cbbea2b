//! What a check of a source found: the first few problems and how many more
//! (filled while walking, so that a tree of thousands of bad entries is counted,
//! not listed).

use std::path::PathBuf;

use super::ContentError;

/// One problem that [`check_source`](super::check_source) found: where, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: PathBuf,
    pub message: String,
}

/// What [`check_source`](super::check_source) found: the first [`Findings::LIMIT`] problems, and how many
/// more there were.
#[derive(Debug, Default)]
pub struct Findings {
    pub found: Vec<Finding>,
    pub more: usize,
}

impl Findings {
    /// Problems kept per source; a tree of thousands of FIFOs is counted, not listed.
    pub const LIMIT: usize = 20;

    pub(super) fn push(&mut self, err: ContentError) {
        if self.found.len() < Self::LIMIT {
            let (path, message) = err.into_parts();
            self.found.push(Finding { path, message });
        } else {
            self.more += 1;
        }
    }
}
