//! Errors of the daemon, each naming what failed and on what.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys { what: String, source: nix::Error },
    #[error("container {name}: {message}")]
    Container { name: String, message: String },
    #[error("{0}")]
    State(#[from] pvstate::Error),
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
    pub fn sys(what: impl Into<String>, source: nix::Error) -> Self {
        Error::Sys {
            what: what.into(),
            source,
        }
    }
    pub fn container(name: &str, message: impl Into<String>) -> Self {
        Error::Container {
            name: name.to_string(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why the daemon refuses a request: the domain's answer, which the
/// control API maps to a status code in one table (`api::status`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request is malformed or names something impossible.
    #[error("{0}")]
    Invalid(String),
    /// The remote API's bearer token is missing or wrong.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this.
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    NotFound(String),
    /// The method does not apply to this endpoint.
    #[error("{0}")]
    NotAllowed(String),
    /// Something else is under way (an update, a shutdown) or the target
    /// is not in the needed state.
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    TooLarge(String),
    /// The revision will not be run (Pantavisor's WONTGO).
    #[error("WONTGO: {0}")]
    WontGo(String),
    /// Data does not match its id or its promise.
    #[error("{0}")]
    Corrupt(String),
    /// Not enough space on storage.
    #[error("{0}")]
    NoSpace(String),
    /// The daemon failed (I/O and the like).
    #[error("{0}")]
    Failed(String),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::Failed(e.to_string())
    }
}

impl Refusal {
    /// An I/O failure, as NoSpace when the device is full.
    pub fn io(what: impl std::fmt::Display, e: &std::io::Error) -> Self {
        if e.raw_os_error() == Some(libc::ENOSPC) {
            Refusal::NoSpace(format!("{what}: {e}"))
        } else {
            Refusal::Failed(format!("{what}: {e}"))
        }
    }
}
