//! A problem of a manifest (a message, and where: the file, and the position
//! when the YAML gives one), and [`Seg`], a step of the path to a field.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::yaml::{self, Position};

/// A problem of a manifest, with a position where the YAML gives one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pos: Option<Position>,
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pos {
            Some(pos) => write!(f, "{pos}: {}", self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl Problem {
    /// `file:line:col: LEVEL: message`, as a compiler says a warning or an
    /// error (the [`Display`](fmt::Display) form with its level).
    pub fn labelled(&self, level: &str) -> String {
        match &self.pos {
            Some(pos) => format!("{pos}: {level}: {}", self.message),
            None => format!("{}: {level}: {}", self.file.display(), self.message),
        }
    }

    /// Problems in the files' order, as a compiler says them (stable:
    /// problems at one place keep the order they were found in).
    pub fn sort_by_position(problems: &mut [Problem]) {
        problems.sort_by_key(|p| p.pos.as_ref().map(|p| (p.file.clone(), p.line, p.column)));
    }

    pub fn in_file(file: &Path, message: impl Into<String>) -> Self {
        Problem {
            pos: None,
            file: file.to_path_buf(),
            message: message.into(),
        }
    }

    pub(super) fn from_yaml(file: &Path, err: yaml::Error) -> Self {
        Problem {
            message: err.describe(),
            pos: err.pos,
            file: file.to_path_buf(),
        }
    }
}

/// One segment of a path to a field, for pointing at a problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    Key(&'static str),
    Index(usize),
}
