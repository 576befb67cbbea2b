//! How an error is shown: its message and each of its causes, once.
//!
//! Every error type of lanectl says what failed in its own message and keeps
//! the cause as its `source`, never both (`{source}` interpolated into the
//! message and the same source chained would print the cause twice). Whoever
//! shows an error to a user (a status message, a log line, `main`) shows the
//! whole chain with [`chain`] or [`Chain`].

use std::fmt;

/// `err` and its sources, joined with ": ".
pub fn chain(err: &dyn std::error::Error) -> String {
    Chain(err).to_string()
}

/// Displays an error with its sources, joined with ": " (for log fields:
/// `warn!(error = %Chain(&e), …)`).
pub struct Chain<'a>(pub &'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::PathBuf;

    use super::*;

    /// Every error type that carries an `io::Error` (or another error) as its
    /// source shows that cause exactly once in its chain.
    #[test]
    fn every_cause_is_shown_once() {
        let io = || io::Error::from(io::ErrorKind::NotFound);
        let cause = io().to_string();
        let path = PathBuf::from("/x");
        let errors: Vec<Box<dyn std::error::Error>> = vec![
            Box::new(crate::lane::ListError::Read {
                path: path.clone(),
                source: io(),
            }),
            Box::new(crate::status::StatusError::Write {
                path: path.clone(),
                source: io(),
            }),
            Box::new(crate::status::StatusError::Remove {
                path: path.clone(),
                source: io(),
            }),
            Box::new(crate::content::ContentError::Io {
                path: path.clone(),
                source: io(),
            }),
            Box::new(crate::exec::ExecError::Codex(
                crate::content::ContentError::Io {
                    path: path.clone(),
                    source: io(),
                },
            )),
            Box::new(crate::sources::fs::FsError::Watch {
                path: path.clone(),
                source: notify::Error::io(io()),
            }),
        ];
        for e in &errors {
            let text = chain(e.as_ref());
            assert_eq!(text.matches(&cause).count(), 1, "{text}");
        }
    }
}
