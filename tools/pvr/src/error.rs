//! pvr's errors: one line each.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
    #[error("device: {0}")]
    Remote(String),
    #[error("registry: {0}")]
    Registry(String),
    #[error("{0}")]
    State(#[from] pvstate::Error),
    #[error("{0}")]
    Compose(#[from] pvcompose::ComposeError),
    /// A followed step ended badly (or not in time): the exit code says how.
    #[error("{message}")]
    Outcome { code: u8, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
