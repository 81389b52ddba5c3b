//! Errors of the composer: one line each, naming the file or setting at fault.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// Something the user gave is not usable as it is.
    #[error("{0}")]
    Input(String),
    /// An external tool is missing, too old or failed.
    #[error("{0}")]
    Tool(String),
    /// The composed state does not validate.
    #[error("{0}")]
    State(#[from] pvstate::Error),
}

impl ComposeError {
    pub fn io(path: impl AsRef<Path>, source: io::Error) -> Self {
        ComposeError::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn input(message: impl Into<String>) -> Self {
        ComposeError::Input(message.into())
    }
}

pub type Result<T, E = ComposeError> = std::result::Result<T, E>;
