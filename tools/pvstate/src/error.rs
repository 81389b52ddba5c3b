//! Errors of the `pvstate` library.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// One problem found in a state: the state key (or document field path) it
/// concerns and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// The state key, optionally followed by the field inside its document,
    /// e.g. `edge-app/run.json: status_goal`.
    pub key: String,
    /// What is wrong and, where it helps, what was expected.
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// A list of problems, displayed one per line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{what}: not valid JSON: {message}")]
    Json { what: String, message: String },
    #[error("invalid state:\n{0}")]
    Invalid(Problems),
    #[error(
        "object {expected}: content hashes to {actual}; the data is corrupt or not this object"
    )]
    HashMismatch { expected: String, actual: String },
    #[error("'{0}' is not an object id (64 lowercase hex characters)")]
    BadObjectId(String),
    #[error("object {0} is not in the store")]
    MissingObject(String),
    #[error("{}: not a pvroot (no trails/); compose one with `pvcompose pvroot`", .0.display())]
    NotPvroot(PathBuf),
    #[error("pvrexport {archive}: {message}")]
    Archive { archive: String, message: String },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn archive(archive: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Archive {
            archive: archive.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
